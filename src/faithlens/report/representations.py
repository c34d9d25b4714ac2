"""Figures for representation analysis: reading accuracy, steering effects, persistence, logit
lens, writers, generations and the faithfulness report."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np

from .plots import new_axes

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

    from ..representations.generation import Generations
    from ..representations.reading import ReadingResult
    from ..representations.results import (
        FaithfulnessReport,
        LogitLensResult,
        PersistenceResult,
        SteeringResult,
        WritersResult,
    )

_COLORS = {
    "steer": "tab:blue",
    "target": "tab:blue",
    "ablate": "tab:red",
    "random": "tab:gray",
    "random_ablate": "lightgray",
}


def steering_plot(res: SteeringResult, ax: Any = None) -> Figure:
    """Effect of each condition on the behaviour with its CI (horizontal bars)."""
    fig, ax = new_axes(ax, (6.0, max(2.5, 0.28 * len(res.conditions) + 1.2)))
    y = np.arange(len(res.conditions))
    err = np.nan_to_num(np.vstack([res.effect - res.effect_low, res.effect_high - res.effect]))
    colors = [_COLORS.get(k, "tab:purple") for k in res.kind]
    ax.barh(y, res.effect, xerr=err, color=colors, capsize=2)
    ax.set_yticks(y, res.conditions, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel(f"change in {res.metric} ({int(res.level * 100)}% CI)")
    ax.set_title(f"steering '{res.behaviour}' — {res.model}", fontsize=9)
    fig.tight_layout()
    return fig


def persistence_plot(res: PersistenceResult, ax: Any = None) -> Figure:
    """Per-token change in log p of the reference continuation, per injection schedule."""
    fig, ax = new_axes(ax, (5.5, 3.5))
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    t = np.arange(1, res.n_tokens + 1)
    for s, name in enumerate(res.schedules):
        if s == 0:
            continue
        ax.plot(t, res.mean[s], marker="o", ms=3, label=name)
        ax.fill_between(t, res.low[s], res.high[s], alpha=0.2)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("token of the continuation")
    ax.set_ylabel("change in log p (vs no injection)")
    ax.set_title(f"persistence — {res.behaviour}, {res.model}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def logit_lens_plot(res: LogitLensResult, ax: Any = None) -> Figure:
    """The direction's logit-lens entropy against the random-direction null."""
    fig, ax = new_axes(ax, (5.0, 3.2))
    if res.null.size:
        ax.hist(res.null, bins=30, color="tab:gray", alpha=0.7, label="random directions")
    ax.axvline(res.entropy, color="tab:red", lw=2, label=f"direction (p = {res.p_value:.3f})")
    ax.axvline(res.max_entropy, color="k", ls=":", lw=1, label="uniform")
    ax.set_xlabel("entropy of softmax(W_U norm(r)) [nats]")
    ax.set_ylabel("count")
    ax.set_title(f"logit lens — {res.label or 'direction'}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def writers_plot(res: WritersResult, ax: Any = None, k: int = 20) -> Figure:
    """The ``k`` largest writers of the direction with CIs."""
    top = res.top(k)
    fig, ax = new_axes(ax, (6.0, max(2.5, 0.25 * len(top) + 1.2)))
    y = np.arange(len(top))
    c = top["contribution"].to_numpy(float)
    err = np.nan_to_num(
        np.vstack(
            [
                c - top["contribution_ci_low"].to_numpy(float),
                top["contribution_ci_high"].to_numpy(float) - c,
            ]
        )
    )
    ax.barh(y, c, xerr=err, capsize=2, color="tab:green")
    ax.set_yticks(y, list(top["component"]), fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0, color="k", lw=0.5)
    ax.set_xlabel(f"contrast written along r (total {res.total:.2f}; 80% from {res.k80})")
    ax.set_title(f"who writes {res.label or 'the direction'} at {res.site}", fontsize=9)
    fig.tight_layout()
    return fig


def report_plot(rep: FaithfulnessReport, ax: Any = None) -> Figure:
    """A panel per kind of evidence: reading accuracy, steering effects, persistence, writers
    (always a new figure: ``ax`` is ignored)."""
    from .plots import subplots

    fig, axes = subplots(2, 2, figsize=(11, 7.5))
    ax = axes[0][0]
    # reports saved before the uniform interval columns name them accuracy_low, ci_low, ...
    rd = rep.reading.rename(columns=lambda c: re.sub(r"(?<!_ci)_(low|high)$", r"_ci_\1", str(c)))
    if not rd.empty:
        x = rd["layer"].to_numpy()
        ax.plot(x, rd["accuracy"], marker="o", ms=3, label="pair accuracy")
        ax.fill_between(x, rd["accuracy_ci_low"], rd["accuracy_ci_high"], alpha=0.2)
        ax.plot(x, rd["auroc"], marker="s", ms=3, label="AUROC")
        ax.fill_between(x, rd["auroc_ci_low"], rd["auroc_ci_high"], alpha=0.2)
        for L in rep.layers:
            ax.axvline(L, color="tab:orange", alpha=0.15, lw=4)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("layer")
        ax.legend(fontsize=7)
    ax.set_title(f"reading '{rep.concept}' (shaded: steered layers)", fontsize=9)
    ax = axes[0][1]
    st = _uniform(rep.steering, "effect")
    if not st.empty:
        keep = st[~st["kind"].isin(["random", "random_ablate"])]
        rnd = st[st["kind"] == "random"]
        rab = st[st["kind"] == "random_ablate"]
        labels = list(keep["condition"])
        vals = list(keep["effect"])
        lo = list(keep["effect_ci_low"])
        hi = list(keep["effect_ci_high"])
        y = np.arange(len(labels))
        ax.barh(
            y,
            vals,
            xerr=[np.subtract(vals, lo), np.subtract(hi, vals)],
            capsize=2,
            color=[_COLORS.get(k, "tab:purple") for k in keep["kind"]],
        )
        # each null next to the condition it is a null for
        kinds = list(keep["kind"])
        minus = [i for i, (k, c) in enumerate(zip(kinds, keep["coef"])) if k == "steer" and c < 0]
        abl = [i for i, k in enumerate(kinds) if k == "ablate"]
        if not rnd.empty and minus:
            ax.scatter(
                rnd["effect"],
                np.full(len(rnd), minus[0] + 0.3),
                color="k",
                s=10,
                zorder=3,
                label="random directions, same norm",
            )
        if not rab.empty and abl:
            ax.scatter(
                rab["effect"],
                np.full(len(rab), abl[0] + 0.3),
                color="k",
                s=12,
                marker="x",
                zorder=3,
                label="random directions, ablated",
            )
        ax.set_yticks(y, labels, fontsize=7)
        ax.invert_yaxis()
        ax.axvline(0, color="k", lw=0.5)
        ax.legend(fontsize=6)
        ax.set_xlabel(f"change in {rep.meta.get('metric', 'metric')}")
    ax.set_title(f"steering '{rep.behaviour}'", fontsize=9)
    ax = axes[1][0]
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    pr = _uniform(rep.persistence, "effect")
    if not pr.empty:
        for name, g in pr.groupby("schedule", sort=False):
            if name == "none":
                continue
            ax.plot(g["token"], g["effect"], marker="o", ms=3, label=str(name))
            ax.fill_between(g["token"], g["effect_ci_low"], g["effect_ci_high"], alpha=0.2)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_xlabel("token of the continuation")
        ax.set_ylabel("change in log p")
        ax.legend(fontsize=7)
    ax.set_title("persistence: one-shot vs continual injection", fontsize=9)
    ax = axes[1][1]
    wr = _uniform(rep.writers, "contribution")
    if not wr.empty:
        top = wr.reindex(wr["contribution"].abs().sort_values(ascending=False).index).head(12)
        y = np.arange(len(top))
        c = top["contribution"].to_numpy(float)
        ax.barh(
            y,
            c,
            xerr=np.nan_to_num(
                np.vstack(
                    [
                        c - top["contribution_ci_low"].to_numpy(float),
                        top["contribution_ci_high"].to_numpy(float) - c,
                    ]
                )
            ),
            capsize=2,
            color="tab:green",
        )
        ax.set_yticks(y, list(top["component"]), fontsize=7)
        ax.invert_yaxis()
        ax.axvline(0, color="k", lw=0.5)
    ax.set_title(f"who writes it (layer {rep.layer})", fontsize=9)
    verdict = ", ".join(
        f"{c}: {'yes' if p else 'no'}" for c, p in zip(rep.checks["check"], rep.checks["passed"])
    )
    fig.suptitle(f"{rep.model}: '{rep.concept}' representation\n{verdict}", fontsize=8)
    fig.tight_layout()
    return fig


def generations_plot(res: Generations, ax: Any = None) -> Figure:
    """Mean log-probability of the generated tokens (and of the tracked tokens) per step."""
    fig, ax = new_axes(ax, (5.0, 3.5))
    lp = np.where(res.tokens >= 0, res.logprobs, np.nan)
    with np.errstate(invalid="ignore"):
        m = np.nanmean(lp, 0)
    ax.plot(np.arange(1, len(m) + 1), m, marker="o", ms=3, label="generated token")
    for j, t in enumerate(res.track):
        with np.errstate(invalid="ignore"):
            ax.plot(
                np.arange(1, res.tracked.shape[1] + 1),
                np.nanmean(res.tracked[:, :, j], 0),
                ls="--",
                label=f"token {t}",
            )
    ax.set_xlabel("generated token")
    ax.set_ylabel("mean log-probability")
    ax.set_title(f"generation ({res.steering})", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def reading_plot(res: ReadingResult, ax: Any = None) -> Figure:
    """Held-out pair accuracy and AUROC (with CIs) and stability per layer."""
    fig, ax = new_axes(ax, (6.0, 3.6))
    x = np.asarray(res.layers)
    ax.plot(x, res.accuracy, marker="o", ms=3, label="pair accuracy")
    ax.fill_between(x, res.accuracy_low, res.accuracy_high, alpha=0.2)
    ax.plot(x, res.auroc, marker="s", ms=3, label="AUROC")
    ax.fill_between(x, res.auroc_low, res.auroc_high, alpha=0.2)
    if res.n_stability:
        ax.plot(x, res.stability, ls="--", label="stability (mean cos)")
    ax.axhline(0.5, color="k", lw=0.5, ls=":")
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel(f"layer ({res.site})")
    ax.set_ylabel("held-out score")
    ax.set_title(f"reading '{res.concept}' ({res.method}) — {res.model}", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def _uniform(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """A frame saved before the uniform interval columns (``se, ci_low, ci_high`` of one
    estimate ``name``) with the uniform names ``name_se, name_ci_low, name_ci_high``."""
    old = {k: f"{name}_{k}" for k in ("se", "ci_low", "ci_high")}
    return frame.rename(columns={k: v for k, v in old.items() if k in frame.columns})
