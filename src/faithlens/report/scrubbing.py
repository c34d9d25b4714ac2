"""Figures for causal scrubbing results (:mod:`faithlens.scrubbing`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .plots import new_axes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..scrubbing.results import AdversaryResult, ScrubResult


def scrub_plot(res: ScrubResult, ax: Any = None) -> Figure:
    """Left: the mean behaviour of the model, the scrubbed model and each baseline (± SE).
    Right: the per-example changes (scrubbed - original), where cancellation shows up. With
    ``ax``, only the left panel is drawn there."""
    from .plots import subplots

    if ax is None:
        fig, axes = subplots(1, 2, figsize=(10, 3.6))
        left, right = axes[0], axes[1]
    else:
        fig, left, right = ax.figure, ax, None
    names = ["original", "scrubbed", *res.baseline_names]
    vals = [res.original, res.scrubbed, *res.baseline_values]
    means = [float(v.mean()) for v in vals]
    ses = [float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0 for v in vals]
    colors = ["#555555", "#1f77b4"] + ["#bbbbbb"] * len(res.baseline_names)
    left.bar(range(len(names)), means, yerr=ses, color=colors)
    left.set_xticks(range(len(names)), names, rotation=20)
    left.set_ylabel(res.behaviour)
    title = res.hypothesis
    if res.baseline_names:
        title += f": {res.recovered():.1f} % recovered vs {res.baseline_names[0]}"
    left.set_title(title)
    if right is not None:
        d = res.scrubbed - res.original
        right.hist(d, bins=40, color="#1f77b4")
        right.axvline(0, color="k", lw=0.8)
        right.set_xlabel("per-example change (scrubbed - original)")
        right.set_title("per-example changes")
    fig.tight_layout()
    return fig


def adversary_plot(res: AdversaryResult, ax: Any = None) -> Figure:
    """The refinements that moved the metric most, with their paired standard errors."""
    valid = res.candidates[res.candidates["valid"]]
    top = valid.sort_values("delta", key=lambda s: s.abs(), ascending=False).head(15)
    fig, ax = new_axes(ax, figsize=(8, 0.35 * max(len(top), 1) + 1.5))
    ax.barh(range(len(top)), top["delta"], xerr=top["se_delta"], color="#d62728")
    ax.set_yticks(range(len(top)), list(top["refinement"]))
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel(f"change in {res.behaviour}")
    ax.set_title(f"adversary vs {res.hypothesis}")
    fig.tight_layout()
    return fig


__all__ = ["adversary_plot", "scrub_plot"]
