"""Figures for divergence audits (:mod:`faithlens.divergence`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from ..divergence.audit import AuditResult
    from ..divergence.compare import DivergenceResult
    from ..divergence.dormant import DormantReport


def plot_divergence_table(
    table: pd.DataFrame, *, title: str = "", group: str | None = None
) -> Figure:
    """One small panel per metric: intervened vs natural baseline (± SE), per group if given."""
    from .plots import subplots

    metrics = list(dict.fromkeys(table["metric"]))
    n = len(metrics)
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    groups = list(dict.fromkeys(table[group])) if group else [None]
    for k, m in enumerate(metrics):
        ax = axes[k // cols][k % cols]
        sub = table[table["metric"] == m]
        xs = np.arange(len(groups))
        iv = [
            float(sub[sub[group] == g]["intervened"].iloc[0])
            if g
            else float(sub["intervened"].iloc[0])
            for g in groups
        ]
        ie = [
            float(sub[sub[group] == g]["intervened_se"].iloc[0])
            if g
            else float(sub["intervened_se"].iloc[0])
            for g in groups
        ]
        bv = [
            float(sub[sub[group] == g]["baseline"].iloc[0]) if g else float(sub["baseline"].iloc[0])
            for g in groups
        ]
        be = [
            float(sub[sub[group] == g]["baseline_se"].iloc[0])
            if g
            else float(sub["baseline_se"].iloc[0])
            for g in groups
        ]
        ax.bar(xs - 0.2, iv, 0.4, yerr=ie, label="intervened", color="tab:red", capsize=2)
        ax.bar(xs + 0.2, bv, 0.4, yerr=be, label="natural", color="tab:gray", capsize=2)
        ax.set_title(m, fontsize=9)
        ax.set_xticks(xs)
        ax.set_xticklabels(
            [str(g) if g else "" for g in groups], fontsize=7, rotation=30, ha="right"
        )
        if k == 0:
            ax.legend(fontsize=7)
    for k in range(n, rows * cols):
        axes[k // cols][k % cols].axis("off")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def divergence_plot(res: DivergenceResult, ax: Any = None) -> Figure:
    """:func:`plot_divergence_table` of the result (always a new figure: ``ax`` is ignored)."""
    return plot_divergence_table(res.table, title=res.label or "divergence")


def audit_plot(res: AuditResult, ax: Any = None, metric: str = "emd") -> Figure:
    """Per condition, ``metric`` for the intervened set vs the natural baseline, in the full
    space, the row space and the null space; the ratio above each pair where the baseline is
    positive, and conditions that recruit dormant units flagged in red under their bars."""
    from .plots import subplots

    t = res.table[res.table["metric"] == metric]
    if t.empty:
        return plot_divergence_table(
            res.table[res.table["space"] == "full"], title=res.site, group="condition"
        )
    spaces = [s for s in ("full", "row", "null") if (t["space"] == s).any()]
    fig, axes = subplots(1, len(spaces), figsize=(3.6 * len(spaces) + 1, 3.4), squeeze=False)
    xs = np.arange(len(res.conditions))
    for k, space in enumerate(spaces):
        a = axes[0][k]
        sub = t[t["space"] == space].set_index("condition").reindex(list(res.conditions))
        a.bar(
            xs - 0.2,
            sub["intervened"],
            0.4,
            yerr=sub["intervened_se"],
            color="tab:red",
            capsize=2,
            label="intervened",
        )
        a.bar(
            xs + 0.2,
            sub["baseline"],
            0.4,
            yerr=sub["baseline_se"],
            color="tab:gray",
            capsize=2,
            label="natural",
        )
        # the ratio over each pair where it means something (a positive natural baseline)
        for x, (iv, bl, ratio) in enumerate(zip(sub["intervened"], sub["baseline"], sub["ratio"])):
            if np.isfinite(iv) and np.isfinite(bl) and bl > 0 and np.isfinite(ratio):
                a.annotate(
                    f"×{ratio:.2f}",
                    (x, max(iv, bl)),
                    textcoords="offset points",
                    xytext=(0, 6),
                    ha="center",
                    fontsize=7,
                )
        dim = int(sub["dim"].dropna().iloc[0]) if sub["dim"].notna().any() else 0
        a.set_title(f"{space} space (dim {dim})", fontsize=9)
        a.set_xticks(xs)
        a.set_xticklabels(
            [_condition_label(res, c) for c in res.conditions],
            rotation=25,
            ha="right",
            fontsize=7,
        )
        for tick, c in zip(a.get_xticklabels(), res.conditions):
            if res.flagged(c):
                tick.set_color("tab:red")
        a.margins(y=0.15)
        if k == 0:
            a.set_ylabel(metric)
            a.legend(fontsize=7)
    fig.suptitle(f"divergence audit at {res.site}")
    fig.tight_layout()
    return fig


def _condition_label(res: AuditResult, condition: str) -> str:
    """The condition's name, with a flag when it recruits dormant units downstream."""
    label = condition[:28]
    d = res.dormant[res.dormant["condition"] == condition]
    if len(d) and int(d["n_recruited"].iloc[0]) > 0:
        label += f"\nFLAG: recruits {int(d['n_recruited'].iloc[0])} dormant"
    return label


def dormant_plot(res: DormantReport, ax: Any = None) -> Figure:
    """The recruited dormant units: each one's fire rate on the intervened examples."""
    from .plots import subplots

    if ax is None:
        fig, ax = subplots(1, 1, figsize=(max(4.0, 0.3 * res.recruited.size + 2), 3.2))
    else:
        fig = ax.figure
    xs = np.arange(res.recruited.size)
    ax.bar(xs, res.fire_rate, color="tab:red")
    ax.set_xticks(xs)
    ax.set_xticklabels([str(int(u)) for u in res.recruited], rotation=90, fontsize=7)
    ax.set_xlabel("recruited unit")
    ax.set_ylabel("fire rate (intervened)")
    ax.set_ylim(0, 1)
    ax.set_title(
        f"{res.recruited.size} of {res.dormant.size} dormant units recruited (of {res.n_units})",
        fontsize=9,
    )
    return fig
