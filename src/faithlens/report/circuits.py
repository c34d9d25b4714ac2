"""Figures for circuit discovery (:mod:`faithlens.circuits`): edge scores."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..circuits.scores import EdgeScores


def edge_scores_plot(res: EdgeScores, ax: Any = None, k: int = 20) -> Figure:
    """The ``k`` edges with the largest ``|score|``, each with its confidence interval."""
    from .plots import subplots

    top = res.top(k)
    if ax is None:
        fig, ax = subplots(figsize=(6, 0.3 * max(len(top), 4) + 1))
    else:
        fig = ax.figure
    y = np.arange(len(top))[::-1]
    err = np.stack([top["score"] - top["score_ci_low"], top["score_ci_high"] - top["score"]]).clip(
        min=0
    )
    ax.errorbar(top["score"], y, xerr=err, fmt="o", ms=3, lw=1)
    ax.set_yticks(y, top["edge"], fontsize=7)
    ax.axvline(0, color="0.8", lw=1)
    ax.set_xlabel(f"score (change in {res.metric}), {round(res.level * 100)}% CI")
    ax.set_title(f"{res.method} edge scores: {res.model} on {res.task}", fontsize=9)
    return fig
