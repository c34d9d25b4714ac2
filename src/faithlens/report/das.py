"""Figures for distributed alignment search (:mod:`faithlens.das`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..das.result import DASResult


def das_plot(res: DASResult, ax: Any = None) -> Figure:
    """Training IIA and loss (left) and the tracked EMD (right) per epoch, the selected epoch
    marked (always a new figure: ``ax`` is ignored)."""
    from .plots import subplots

    h = res.history
    fig, axes = subplots(1, 2, figsize=(10, 3.4), layout="constrained")
    axes[0].plot(h["epoch"], h["iia"], color="tab:blue")
    axes[0].set_ylabel("training IIA")
    axes[0].set_xlabel("epoch")
    ax1 = axes[0].twinx()
    ax1.plot(h["epoch"], h["loss"], color="tab:gray", alpha=0.6)
    ax1.set_yscale("log")
    ax1.set_ylabel("loss")
    ev = h.dropna(subset=["emd_features"])
    if len(ev):
        axes[1].plot(ev["epoch"], ev["emd_features"], "o-", ms=2, color="tab:red")
        axes[1].set_ylabel("training EMD (feature dims)")
    else:
        axes[1].text(0.5, 0.5, "EMD not tracked\n(select='iia')", ha="center", va="center")
    axes[1].set_xlabel("epoch")
    for a in axes:
        a.axvline(res.selected_epoch, color="k", ls=":", lw=1)
    fig.suptitle(f"{res.method} at {res.site} ({res.loss})")
    return fig
