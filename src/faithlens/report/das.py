"""Figures for distributed alignment search (:mod:`faithlens.das`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..das.result import DASResult
    from ..das.selectivity import ControlledDAS
    from ..das.sweep import DASSweep


def das_plot(res: DASResult, ax: Any = None) -> Figure:
    """Per epoch, one panel each: training IIA, the training loss (log scale) and the tracked
    EMD; the selected epoch is a dotted line named in the legend; each control that was run is a
    dashed line at its IIA (band: its interval) on the IIA panel, its selectivity in the legend
    (always a new figure: ``ax`` is ignored)."""
    from .plots import subplots

    h = res.history
    fig, axes = subplots(1, 3, figsize=(12, 3.4), layout="constrained")
    axes[0].plot(h["epoch"], h["iia"], color="tab:blue", label="training IIA")
    colors = {"task": "tab:orange", "random_init": "tab:purple", "random_subspace": "tab:gray"}
    for name in res.controls:
        ctl, sel = res.control(name)
        axes[0].axhspan(float(ctl.ci_low), float(ctl.ci_high), color=colors[name], alpha=0.15)
        axes[0].axhline(
            float(ctl.estimate),
            color=colors[name],
            ls="--",
            lw=1,
            label=f"control IIA ({name}); selectivity {float(sel.estimate):.2f}",
        )
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


def controls_plot(res: ControlledDAS, ax: Any = None) -> Figure:
    """Held-out IIA, each control's IIA and each selectivity with their intervals (bars with
    error bars); the dotted line is each control's majority-label rate."""
    import numpy as np

    from .plots import subplots

    if ax is None:
        fig, ax = subplots(figsize=(2.2 + 1.6 * len(res.controls), 3.4), layout="constrained")
    else:
        fig = ax.figure
    x = np.arange(len(res.controls))
    ctl, sel = res.interval_of("control_iia"), res.interval_of("selectivity")
    for off, iv, label, color in (
        (-0.2, ctl, "control IIA", "tab:gray"),
        (0.2, sel, "selectivity", "tab:green"),
    ):
        est = np.asarray(iv.estimate, dtype=float)
        err = np.abs(np.stack([est - np.asarray(iv.ci_low), np.asarray(iv.ci_high) - est]))
        ax.bar(x + off, est, width=0.38, yerr=err, capsize=3, color=color, label=label)
    iia = res.interval_of("iia")
    ax.axhspan(float(iia.ci_low), float(iia.ci_high), color="tab:blue", alpha=0.15)
    ax.axhline(float(iia.estimate), color="tab:blue", label="IIA (held out)")
    for i, c in enumerate(res.chance):
        ax.hlines(float(c), i - 0.42, i + 0.42, colors="k", linestyles=":", lw=1)
    ax.set_xticks(x, list(res.controls))
    ax.set_ylabel(f"accuracy ({res.level:.0%} CI)")
    ax.set_title(f"{res.method} at {res.site}: selectivity (n={res.n})")
    ax.legend(fontsize=8, loc="best")
    return fig


def sweep_plot(res: DASSweep, ax: Any = None) -> Figure:
    """Heat maps over (site, position): held-out IIA (top left), then per control one column
    with its control IIA (top) and its selectivity (bottom); every cell shows its estimate and
    interval (always a new figure: ``ax`` is ignored)."""
    from .plots import subplots

    ctl, sel = res.interval_of("control_iia"), res.interval_of("selectivity")
    n_l, n_p = res.iia.shape
    n_c = len(res.controls)
    fig, axes = subplots(
        2,
        1 + n_c,
        figsize=(1.2 + (1 + n_c) * (1.0 + 1.1 * n_p), 2.0 + 1.4 * n_l),
        layout="constrained",
        squeeze=False,
    )
    _heat_map(fig, axes[0][0], res, "IIA", res.interval_of("iia"), "viridis", (0.0, 1.0))
    axes[1][0].axis("off")
    axes[1][0].text(
        0.5,
        0.5,
        "selectivity =\nIIA - control IIA\n(paired by pair)",
        ha="center",
        va="center",
        fontsize=8,
    )
    for k, c in enumerate(res.controls):
        _heat_map(fig, axes[0][1 + k], res, f"control IIA: {c}", ctl[k], "viridis", (0.0, 1.0))
        _heat_map(fig, axes[1][1 + k], res, f"selectivity vs {c}", sel[k], "RdBu", (-1.0, 1.0))
    fig.suptitle(
        f"{res.method}: IIA, control IIA and selectivity ({res.level:.0%} CI, n={res.n} held out)"
    )
    return fig


def _heat_map(
    fig: Figure, a: Any, res: DASSweep, title: str, iv: Any, cmap: str, lim: tuple[float, float]
) -> None:
    """One (site x position) heat map of ``iv`` in ``a``, each cell annotated with its estimate
    and interval."""
    import numpy as np

    lo, hi = lim
    est = np.asarray(iv.estimate, dtype=float)
    n_l, n_p = est.shape
    im = a.imshow(est, cmap=cmap, vmin=lo, vmax=hi, aspect="auto")
    for i in range(n_l):
        for j in range(n_p):
            frac = (est[i, j] - lo) / (hi - lo)
            dark = frac < 0.5 if cmap == "viridis" else abs(est[i, j]) > 0.6
            a.text(
                j,
                i,
                f"{est[i, j]:.2f}\n[{float(iv.ci_low[i, j]):.2f}, {float(iv.ci_high[i, j]):.2f}]",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if dark else "black",
            )
    a.set_xticks(range(n_p), ["all" if p is None else str(p) for p in res.positions])
    a.set_yticks(range(n_l), list(res.sites))
    a.set_xlabel("position")
    a.set_title(title, fontsize=9)
    fig.colorbar(im, ax=a, shrink=0.8)
