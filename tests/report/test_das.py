"""The DAS training figure (``faithlens.report.das``)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from tests.helpers import result_builders as B


def test_one_quantity_per_axis_and_every_panel_has_a_legend():
    # the das.png: IIA and loss shared a panel on two y axes, and nothing said which
    import matplotlib.pyplot as plt

    res = B.das()
    fig = res.plot()
    assert len(fig.axes) == 3  # no twin axes
    for ax in fig.axes:
        leg = ax.get_legend()
        assert leg is not None
        texts = [t.get_text() for t in leg.get_texts()]
        assert f"selected epoch {res.selected_epoch}" in texts
    assert fig.axes[0].get_ylabel() == "training IIA"
    assert fig.axes[1].get_ylabel().startswith("training loss")
    plt.close(fig)
