"""Figures for the logit lens over layers and direct logit attribution."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .plots import new_axes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..representations.lens_results import DirectLogitAttribution, LayerLensResult


def layer_lens_plot(res: LayerLensResult, ax: Any = None) -> Figure:
    """The answer's logit difference read at each layer, with CIs, and the model's own."""
    fig, ax = new_axes(ax, (5.5, 3.2))
    x = np.asarray(res.layers)
    ax.plot(x, res.logit_diff, marker="o", ms=3, color="tab:blue", label="logit lens")
    ax.fill_between(x, res.logit_diff_low, res.logit_diff_high, alpha=0.2, color="tab:blue")
    ax.axhline(res.model_logit_diff, color="tab:red", ls="--", lw=1, label="model's output")
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel(f"layer ({res.site})")
    ax.set_ylabel("logit diff (correct - wrong)")
    ax.set_title(f"logit lens — {res.model} on {res.task}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def dla_plot(res: DirectLogitAttribution, ax: Any = None, k: int = 20) -> Figure:
    """The ``k`` components of largest direct contribution, with CIs."""
    top = res.top(k)
    fig, ax = new_axes(ax, (6.0, max(2.5, 0.25 * len(top) + 1.2)))
    y = np.arange(len(top))
    c = top["contribution"].to_numpy(float)
    lo = top["contribution_ci_low"].to_numpy(float)
    hi = top["contribution_ci_high"].to_numpy(float)
    err = np.nan_to_num(np.vstack([c - lo, hi - c]))
    ax.barh(y, c, xerr=err, capsize=2, color="tab:purple")
    ax.set_yticks(y, list(top["component"]), fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel(f"direct contribution to the logit diff (total {res.total:.2f})")
    ax.set_title(f"direct logit attribution — {res.model} on {res.task}", fontsize=9)
    fig.tight_layout()
    return fig
