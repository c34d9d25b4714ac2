"""Matplotlib figures for results."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..patching.result import PatchingResult


def subplots(
    nrows: int = 1,
    ncols: int = 1,
    *,
    figsize: tuple[float, float] = (5.0, 4.0),
    layout: Literal["constrained", "compressed", "tight"] | None = None,
    **kwargs: Any,
) -> tuple[Figure, Any]:
    """A new figure and its axes, like ``plt.subplots`` but outside pyplot's figure registry.

    The figure is an ordinary object: it is freed when the caller drops it (a script or a CLI
    making hundreds of plots leaks nothing), it draws on any backend (``fig.savefig``), and
    Jupyter displays it when it is a cell's value.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout=layout)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def new_axes(ax: Any = None, figsize: tuple[float, float] = (5.0, 4.0)) -> tuple[Figure, Any]:
    """A figure and axes (a new figure unless ``ax`` is given)."""
    if ax is None:
        return subplots(figsize=figsize)
    return ax.figure, ax


def fit_title(ax: Any, title: str, fontsize: float = 9.0, share: float = 0.8) -> None:
    """Set ``title`` on ``ax``, wrapped onto as many lines as it needs to fit ``share`` of the
    figure's width (a long title on a small figure is otherwise cut at both sides)."""
    import textwrap

    width_pt = ax.figure.get_figwidth() * 72 * share
    chars = max(16, int(width_pt / (0.6 * fontsize)))  # an average glyph is ~0.6 em wide
    ax.set_title(textwrap.fill(title, chars, break_on_hyphens=False), fontsize=fontsize)


def patching_title(res: PatchingResult) -> str:
    """What a patching plot shows: the method, the direction, the receivers of path patching
    (the senders' effect *through* them), the task and the model."""
    what = f"{res.method} patching ({res.direction})"
    if res.method == "path":
        receivers = [str(r) for r in res.meta.get("receivers", [])]
        if receivers:
            shown = ", ".join(receivers[:4]) + (
                f" + {len(receivers) - 4} more" if len(receivers) > 4 else ""
            )
            ports = "".join(str(p) for p in res.meta.get("receiver_ports", []))
            if receivers == ["logits"]:
                shown = "the logits (direct effect)"
            elif ports:
                shown += f" (ports {ports})"
            what = f"path patching ({res.direction}): senders into {shown}"
    return f"{what} — {res.task}, {res.model}"


def heatmap(
    grid: np.ndarray,
    significant: np.ndarray,
    row_labels: list[str],
    col_labels: list[str],
    *,
    xlabel: str,
    ylabel: str,
    title: str,
    cbar_label: str = "effect (hatched: CI contains 0)",
    ax: Any = None,
) -> Figure:
    """A diverging heatmap centred at 0; cells that are not significant are hatched."""
    from matplotlib.patches import Rectangle

    fig, ax = new_axes(
        ax, (max(4.0, 0.45 * len(col_labels) + 2), max(3.0, 0.28 * len(row_labels) + 1.5))
    )
    finite = np.isfinite(grid)
    lim = float(np.abs(grid[finite]).max()) if finite.any() else 1.0
    im = ax.imshow(grid, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto", interpolation="nearest")
    for i, j in zip(*np.nonzero(finite & ~significant)):
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", lw=0, alpha=0.25))
    long = max((len(c) for c in col_labels), default=0) > 4
    ax.set_xticks(
        range(len(col_labels)),
        col_labels,
        fontsize=7,
        rotation=45 if long else 0,
        ha="right" if long else "center",
    )
    ax.set_yticks(range(len(row_labels)), row_labels, fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fit_title(ax, title)
    fig.colorbar(im, ax=ax, label=cbar_label)
    fig.tight_layout()
    return fig


def patching_plot(res: PatchingResult, ax: Any = None) -> Figure:
    """Heatmap layer x head for heads, (layer.head or layer) x position for per-position sweeps,
    bars with error bars otherwise. Cells whose CI contains 0 are hatched."""
    title = patching_title(res)
    sig = ~((res.ci_low <= 0) & (res.ci_high >= 0))
    layers = res.layer
    heads = res.head
    pos = res.position
    has_layer = all(v is not None for v in layers)
    if has_layer and any(p is not None for p in pos):
        keys = sorted({(int(L), -1 if h is None else int(h)) for L, h in zip(layers, heads)})  # type: ignore[arg-type]
        labels = [f"{a}.{b}" if b >= 0 else str(a) for a, b in keys]
        cols = sorted({int(p) for p in pos if p is not None})
        grid = np.full((len(keys), len(cols)), np.nan)
        sgrid = np.zeros(grid.shape, dtype=bool)
        for k in range(len(res.site)):
            if pos[k] is None:
                continue
            i = keys.index((int(layers[k]), -1 if heads[k] is None else int(heads[k])))  # type: ignore[arg-type]
            j = cols.index(int(pos[k]))  # type: ignore[arg-type]
            grid[i, j], sgrid[i, j] = res.effect[k], sig[k]
        toks = res.meta.get("position_tokens") or {}
        col_labels = [f"{c} {toks[str(c)]!r}" if str(c) in toks else str(c) for c in cols]
        return heatmap(
            grid,
            sgrid,
            labels,
            col_labels,
            xlabel="position (token of example 0)" if toks else "position",
            ylabel="layer.head" if any(h is not None for h in heads) else "layer",
            title=title,
            ax=ax,
        )
    if has_layer and all(h is not None for h in heads) and len(res.site) > 1:
        rows = sorted({int(L) for L in layers if L is not None})
        cols = sorted({int(h) for h in heads if h is not None})
        grid = np.full((len(rows), len(cols)), np.nan)
        sgrid = np.zeros(grid.shape, dtype=bool)
        for k in range(len(res.site)):
            i, j = rows.index(int(layers[k])), cols.index(int(heads[k]))  # type: ignore[arg-type]
            grid[i, j], sgrid[i, j] = res.effect[k], sig[k]
        return heatmap(
            grid,
            sgrid,
            [str(r) for r in rows],
            [str(c) for c in cols],
            xlabel="head",
            ylabel="layer",
            title=title,
            ax=ax,
        )
    fig, ax = new_axes(ax, (max(4.0, 0.35 * len(res.site) + 2), 3.5))
    x = np.arange(len(res.site))
    err = np.nan_to_num(np.vstack([res.effect - res.ci_low, res.ci_high - res.effect]))
    ax.bar(x, res.effect, yerr=err, capsize=2, color=np.where(sig, "tab:blue", "tab:gray"))
    ax.set_xticks(x, res.site, rotation=90, fontsize=7)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylabel("effect (grey: CI contains 0)")
    fit_title(ax, title)
    fig.tight_layout()
    return fig
