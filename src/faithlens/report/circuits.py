"""Figures for circuit discovery (:mod:`faithlens.circuits`): edge scores, a circuit's
faithfulness, the faithfulness curve over circuit sizes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..circuits.curve import FaithfulnessCurve
    from ..circuits.faithfulness import CircuitFaithfulness
    from ..circuits.nodes import NodeScores
    from ..circuits.scores import EdgeScores


def edge_scores_plot(res: EdgeScores | NodeScores, ax: Any = None, k: int = 20) -> Figure:
    """The ``k`` edges (or nodes) with the largest ``|score|``, each with its confidence
    interval."""
    from .plots import subplots

    label = "node" if hasattr(res, "node") else "edge"
    what = res.metric
    if res.meta.get("objective") == "kl":
        what = "KL divergence when pruned"
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
    ax.set_yticks(y, top[label], fontsize=7)
    ax.axvline(0, color="0.8", lw=1)
    ax.set_xlabel(f"score (change in {what}), {round(res.level * 100)}% CI")
    ax.set_title(f"{res.method} {label} scores: {res.model} on {res.task}", fontsize=9)
    return fig


def faithfulness_plot(res: CircuitFaithfulness, ax: Any = None) -> Figure:
    """The circuit's mean metric between the corrupted and the clean run, and its normalised
    faithfulness with its confidence interval in the title."""
    from .plots import subplots

    if ax is None:
        fig, ax = subplots(figsize=(5, 2.5))
    else:
        fig = ax.figure
    means = [float(res.corrupt.mean()), float(res.patched.mean()), float(res.clean.mean())]
    ax.barh([2, 1, 0], means, color=["0.7", "C0", "0.4"])
    ax.set_yticks([2, 1, 0], ["corrupted", f"circuit ({len(res.edges)} edges)", "clean"])
    ax.set_xlabel(f"mean {res.metric}")
    ax.set_title(
        f"faithfulness {res.faithfulness:+.2f} [{res.faithfulness_ci_low:+.2f}, "
        f"{res.faithfulness_ci_high:+.2f}]",
        fontsize=9,
    )
    return fig


def curve_plot(res: FaithfulnessCurve, ax: Any = None) -> Figure:
    """The normalised faithfulness at each circuit size (log-scaled fraction of the edges) with
    its confidence band; CPR and CMD with their intervals in the title."""
    from .plots import subplots

    if ax is None:
        fig, ax = subplots(figsize=(5, 3))
    else:
        fig = ax.figure
    ax.fill_between(res.size, res.faithfulness_ci_low, res.faithfulness_ci_high, alpha=0.25)
    ax.plot(res.size, res.faithfulness, "o-", ms=3, lw=1)
    ax.axhline(1, color="0.6", lw=1, ls="--")
    ax.axhline(0, color="0.8", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("circuit size (fraction of edges)")
    ax.set_ylabel(f"faithfulness, {round(res.level * 100)}% CI")
    ax.set_title(
        f"{res.method}: CPR {res.cpr:.3f} [{res.cpr_ci_low:.3f}, {res.cpr_ci_high:.3f}], "
        f"CMD {res.cmd:.3f} [{res.cmd_ci_low:.3f}, {res.cmd_ci_high:.3f}]",
        fontsize=8,
    )
    return fig
