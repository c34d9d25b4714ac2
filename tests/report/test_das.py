"""The DAS figures (``faithlens.report.das``): training, controls and the sweep heat maps."""

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


def test_the_das_figure_shows_each_control_that_was_run():
    import matplotlib.pyplot as plt

    res = B.das()
    fig = res.plot()
    texts = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "control IIA (random_subspace); selectivity 0.50" in texts
    assert not any("task" in t for t in texts)  # not run, not drawn
    plt.close(fig)


def test_the_sweep_heat_maps_show_iia_control_iia_and_selectivity():
    import matplotlib.pyplot as plt
    import numpy as np

    res = B.das_sweep()
    fig = res.plot()
    maps = {ax.get_title(): ax for ax in fig.axes if ax.get_images()}
    assert sorted(maps) == sorted(
        [
            "IIA",
            "control IIA: task",
            "control IIA: random_subspace",
            "selectivity vs task",
            "selectivity vs random_subspace",
        ]
    )
    expected = {"IIA": (res.iia, res.iia_low, res.iia_high)}
    for k, c in enumerate(res.controls):
        expected[f"control IIA: {c}"] = (
            res.control_iia[k],
            res.control_iia_low[k],
            res.control_iia_high[k],
        )
        expected[f"selectivity vs {c}"] = (
            res.selectivity[k],
            res.selectivity_low[k],
            res.selectivity_high[k],
        )
    for title, (est, lo, hi) in expected.items():
        ax = maps[title]
        np.testing.assert_allclose(np.asarray(ax.get_images()[0].get_array()), est)
        cells = {t.get_text() for t in ax.texts}
        for i in range(est.shape[0]):
            for j in range(est.shape[1]):
                assert f"{est[i, j]:.2f}\n[{lo[i, j]:.2f}, {hi[i, j]:.2f}]" in cells, (title, i, j)
        assert [t.get_text() for t in ax.get_yticklabels()] == res.sites
        assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "last"]
    assert "IIA, control IIA and selectivity" in fig.get_suptitle()
    plt.close(fig)
