"""Figures for distributed alignment search (:mod:`faithlens.das`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..das.result import DASResult


def das_plot(res: DASResult, ax: Any = None) -> Figure:
    """Per epoch, one panel each: training IIA, the training loss (log scale) and the tracked
    EMD; the selected epoch is a dotted line named in the legend (always a new figure: ``ax``
    is ignored)."""
    from .plots import subplots

    h = res.history
    fig, axes = subplots(1, 3, figsize=(12, 3.4), layout="constrained")
    axes[0].plot(h["epoch"], h["iia"], color="tab:blue", label="training IIA")
    axes[0].set_ylabel("training IIA")
    axes[1].plot(h["epoch"], h["loss"], color="tab:gray", label=f"loss ({res.loss})")
    if (h["loss"] > 0).all():
        axes[1].set_yscale("log")
    axes[1].set_ylabel(f"training loss ({res.loss})")
    ev = h.dropna(subset=["emd_features"]) if "emd_features" in h else h.iloc[:0]
    if len(ev):
        axes[2].plot(
            ev["epoch"], ev["emd_features"], "o-", ms=2, color="tab:red", label="EMD (features)"
        )
        axes[2].set_ylabel("training EMD (feature dims)")
    else:
        axes[2].text(0.5, 0.5, "EMD not tracked\n(select='iia')", ha="center", va="center")
    for a in axes:
        a.set_xlabel("epoch")
        a.axvline(
            res.selected_epoch,
            color="k",
            ls=":",
            lw=1,
            label=f"selected epoch {res.selected_epoch}",
        )
        a.legend(fontsize=7, loc="best")
    fig.suptitle(f"{res.method} at {res.site} ({res.loss})")
    return fig
