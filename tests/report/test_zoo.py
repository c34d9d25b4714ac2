"""The paren replication figure (``faithlens.report.zoo``)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from tests.helpers import result_builders as B


def test_recovered_legend_covers_no_point():
    # the recovered.png: the legend sat on a point in the lower left
    import matplotlib.pyplot as plt

    res = B.paren()
    fig = res.plot()
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    points = [
        ax.transData.transform((x, y))
        for line in ax.get_lines()
        for x, y in zip(line.get_xdata(), line.get_ydata())
        if x == x  # a published NaN is not drawn
    ]
    assert points
    assert not any(legend.contains(px, py) for px, py in points)
    plt.close(fig)
