"""The divergence audit figure (``faithlens.report.divergence``)."""

from __future__ import annotations

import dataclasses

import matplotlib
import numpy as np

matplotlib.use("Agg")

from tests.helpers import result_builders as B


def _texts(ax):
    return [t.get_text() for t in ax.texts]


def test_audit_plot_shows_the_ratio_and_flags_dormant_recruiting():
    import matplotlib.pyplot as plt

    res = B.audit()
    t = res.table
    fig = res.plot()
    for ax, space in zip(fig.axes, ("full", "row", "null")):
        row = t[(t["space"] == space) & (t["metric"] == "emd")].iloc[0]
        assert _texts(ax) == [f"×{row['ratio']:.2f}"]
        tick = ax.get_xticklabels()[0]
        assert "FLAG: recruits 1 dormant" in tick.get_text()
        assert tick.get_color() == "tab:red"
    plt.close(fig)


def test_no_ratio_over_a_nonpositive_baseline_and_no_flag_without_recruits():
    import matplotlib.pyplot as plt

    res = B.audit()
    table = res.table.copy()
    table["baseline"] = -0.1  # e.g. an MMD estimate below 0: a ratio would mean nothing
    dormant = res.dormant.copy()
    dormant["n_recruited"] = 0
    res = dataclasses.replace(res, table=table, dormant=dormant)
    fig = res.plot()
    for ax in fig.axes:
        assert _texts(ax) == []
        assert "FLAG" not in ax.get_xticklabels()[0].get_text()
    plt.close(fig)
    assert np.all(res.table["baseline"] < 0)
