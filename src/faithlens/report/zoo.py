"""Figures for the model zoo (:mod:`faithlens.zoo`): training runs and the parenthesis
replication."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..scrubbing.paren import ParenReplication
    from ..zoo.training import TrainingRun


def training_plot(res: TrainingRun, ax: Any = None) -> Figure:
    """Training and validation loss per step (log scale)."""
    from .plots import subplots

    if ax is None:
        fig, ax = subplots(figsize=(6, 3.5))
    else:
        fig = ax.figure
    h = res.history
    if len(h):
        ax.plot(h["step"], h["loss"], lw=1, label="train loss")
        for col in h.columns:
            if col.startswith("val_") and "loss" in col:
                ok = h[col].notna()
                ax.plot(h["step"][ok], h[col][ok], marker="o", ms=3, lw=1, label=col)
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"zoo:{res.name} training")
    ax.legend(fontsize=8)
    return fig


def paren_replication_plot(res: ParenReplication, ax: Any = None) -> Any:
    """% loss recovered per hypothesis with its CI, next to the published numbers (a pyplot
    figure, as before the plotters moved here)."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(7, 3.5))
    else:
        fig = ax.figure
    t = res.table
    y = np.arange(len(t))[::-1]
    err = np.stack([t.recovered - t.recovered_low, t.recovered_high - t.recovered])
    ax.errorbar(t.recovered, y, xerr=err, fmt="o", label=res.model)
    pub = t.published.to_numpy(dtype=float)
    ax.plot(pub, y, "x", color="k", label="Redwood (published)")
    ax.set_yticks(y, t.hypothesis)
    ax.set_xlabel("% loss recovered")
    ax.axvline(100, color="0.8", lw=1)
    # above the axes, where it cannot cover a point
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False, fontsize=8)
    fig.tight_layout()
    return fig
