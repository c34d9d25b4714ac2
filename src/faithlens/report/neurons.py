"""Figures for neuron explanations (:mod:`faithlens.neurons`): per-unit scores and stability,
the NeuronEval sanity checks and the validation of the bounds."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..neurons.result import NeuronExplanation
    from ..neurons.sanity import SanityCheck
    from ..neurons.simulate import BoundValidation


def explanation_plot(
    res: NeuronExplanation,
    ax: Any = None,
    *,
    metric: str | None = None,
    units: Any = None,
    top: int = 5,
) -> Figure:
    """Stability and faithfulness per unit: the ``top`` concepts' scores with their
    intervals (left) and bootstrap selection frequencies with the BE set highlighted
    (right)."""
    from .plots import subplots

    j = res.metric_index(metric)
    m = res.metrics[j]
    if units is None:
        idx = [u for u in range(len(res.units)) if u not in res.skipped][:6]
    else:
        idx = [res.unit_index(u) for u in (units if isinstance(units, list | tuple) else [units])]
    if not idx:
        raise InputError("no units to plot")
    fig, axes = subplots(len(idx), 2, figsize=(10, 1.6 + 1.5 * len(idx)), squeeze=False)
    cert = res.certified(m)
    be = res.be_set(m) if res.n_boot else None
    for row, u in enumerate(idx):
        s = np.nan_to_num(res.scores[j, u], nan=-np.inf)
        order = np.argsort(-s, kind="stable")[:top]
        names = [res.concepts[i] for i in order]
        ax0, ax1 = axes[row]
        y = np.arange(len(order))[::-1]
        lo, hi = res.lower[j, u, order], res.upper[j, u, order]
        ax0.hlines(y, lo, hi, color="tab:blue", lw=3, alpha=0.5)
        ax0.plot(res.scores[j, u, order], y, "o", color="tab:blue")
        ax0.set_yticks(y, names)
        best_lo = np.nanmax(np.where(np.isnan(res.scores[j, u]), np.nan, res.lower[j, u]))
        ax0.axvline(best_lo, color="tab:red", ls="--", lw=1)
        ax0.set_title(f"{res.units[u]}: {'certified' if cert[u] else 'not certified'}", fontsize=9)
        ax0.set_xlabel(f"{m} (interval at 1-δ={1 - res.delta:.2f})", fontsize=8)
        if res.n_boot:
            f = res.freq[j, u]
            forder = np.argsort(-f, kind="stable")[:top]
            colors = ["tab:green" if be is not None and be[u, i] else "tab:gray" for i in forder]
            ax1.barh(np.arange(len(forder))[::-1], f[forder], color=colors)
            ax1.set_yticks(np.arange(len(forder))[::-1], [res.concepts[i] for i in forder])
            ax1.set_xlim(0, 1)
            ax1.set_xlabel(f"bootstrap frequency (green: {res.level:.0%} BE set)", fontsize=8)
        else:
            ax1.axis("off")
    fig.tight_layout()
    return fig


def sanity_plot(res: SanityCheck, ax: Any = None) -> Figure:
    """Pass rates per metric and frequency for both checks (heat maps)."""
    from .plots import subplots

    fig, axes = subplots(1, 2, figsize=(10, 0.5 * len(res.metrics) + 1.8))
    for a, (col, title) in zip(
        axes, [("missing_rate", "missing labels"), ("extra_rate", "extra labels")]
    ):
        grid = res.table.pivot(index="metric", columns="frequency", values=col)
        grid = grid.loc[list(res.metrics), sorted(grid.columns, reverse=True)]
        im = a.imshow(grid.to_numpy(), vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
        a.set_yticks(range(len(grid.index)), list(grid.index))
        a.set_xticks(range(len(grid.columns)), [f"{f:g}" for f in grid.columns])
        a.set_xlabel("concept frequency")
        a.set_title(f"{title}: share of seeds where the score drops", fontsize=9)
    fig.colorbar(im, ax=axes, shrink=0.8)
    return fig


def bound_validation_plot(res: BoundValidation, ax: Any = None) -> Figure:
    """Coverage of the bounds (and BE sets) against ``n``, and deviation against bound."""
    from .plots import subplots

    n_panels = 3 if res.n_boot else 2
    fig, axes = subplots(1, n_panels, figsize=(4.2 * n_panels, 3.6))
    t = res.table
    for m in res.metrics:
        d = t[t["metric"] == m]
        axes[0].plot(d["n"], d["coverage"], "o-", label=m)
        line = axes[1].plot(d["n"], d["median_bound"], "o-", label=f"{m}: bound")
        axes[1].plot(
            d["n"], d["q95_sup_dev"], "x--", color=line[0].get_color(), label=f"{m}: q95 |dev|"
        )
        if res.n_boot:
            axes[2].plot(d["n"], d["be_covers_true"], "o-", label=f"{m}: true concept")
            axes[2].plot(d["n"], d["be_covers_fresh"], "x--", label=f"{m}: fresh winner")
    axes[0].axhline(1 - res.delta, color="k", ls=":", lw=1)
    axes[0].set_title("simultaneous coverage of the bounds", fontsize=9)
    axes[0].set_ylim(min(0.8, float(t["coverage"].min()) - 0.02), 1.005)
    axes[1].set_title("largest deviation vs bound", fontsize=9)
    axes[1].set_yscale("log")
    if res.n_boot:
        axes[2].axhline(res.level, color="k", ls=":", lw=1)
        axes[2].set_title("BE prediction-set coverage", fontsize=9)
    for a_ in axes:
        a_.set_xscale("log")
        a_.set_xlabel("probing-set size n")
        a_.legend(fontsize=7)
    fig.tight_layout()
    return fig
