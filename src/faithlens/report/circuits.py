"""Figures for circuit discovery (:mod:`faithlens.circuits`): edge scores, a circuit's
faithfulness, the faithfulness curve over circuit sizes, and the circuit itself."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..circuits.curve import FaithfulnessCurve
    from ..circuits.faithfulness import CircuitFaithfulness
    from ..circuits.nodes import NodeScores
    from ..circuits.scores import EdgeScores


def edge_scores_plot(res: EdgeScores | NodeScores, ax: Any = None, k: int = 20) -> Figure:
    """The ``k`` edges (or nodes) with the largest ``|score|``, each with its confidence
    interval."""
    from .plots import subplots

    label = "node" if hasattr(res, "node") else "edge"
    what = res.metric
    if res.meta.get("objective") == "kl":
        what = "KL divergence when pruned"
    top = res.top(k)
    if ax is None:
        fig, ax = subplots(figsize=(6, 0.3 * max(len(top), 4) + 1))
    else:
        fig = ax.figure
    y = np.arange(len(top))[::-1]
    err = np.stack([top["score"] - top["score_ci_low"], top["score_ci_high"] - top["score"]]).clip(
        min=0
    )
    ax.errorbar(top["score"], y, xerr=err, fmt="o", ms=3, lw=1)
    ax.set_yticks(y, top[label], fontsize=7)
    ax.axvline(0, color="0.8", lw=1)
    ax.set_xlabel(f"score (change in {what}), {round(res.level * 100)}% CI")
    ax.set_title(f"{res.method} {label} scores: {res.model} on {res.task}", fontsize=9)
    return fig


def faithfulness_plot(res: CircuitFaithfulness, ax: Any = None) -> Figure:
    """The circuit's mean metric between the corrupted and the clean run, and its normalised
    faithfulness with its confidence interval in the title."""
    from .plots import subplots

    if ax is None:
        fig, ax = subplots(figsize=(5, 2.5))
    else:
        fig = ax.figure
    means = [float(res.corrupt.mean()), float(res.patched.mean()), float(res.clean.mean())]
    ax.barh([2, 1, 0], means, color=["0.7", "C0", "0.4"])
    ax.set_yticks([2, 1, 0], ["corrupted", f"circuit ({len(res.edges)} edges)", "clean"])
    ax.set_xlabel(f"mean {res.metric}")
    ax.set_title(
        f"faithfulness {res.faithfulness:+.2f} [{res.faithfulness_ci_low:+.2f}, "
        f"{res.faithfulness_ci_high:+.2f}]",
        fontsize=9,
    )
    return fig


def curve_plot(res: FaithfulnessCurve, ax: Any = None) -> Figure:
    """The normalised faithfulness at each circuit size (log-scaled fraction of the edges) with
    its confidence band; CPR and CMD with their intervals in the title."""
    from .plots import subplots

    if ax is None:
        fig, ax = subplots(figsize=(5, 3))
    else:
        fig = ax.figure
    ax.fill_between(res.size, res.faithfulness_ci_low, res.faithfulness_ci_high, alpha=0.25)
    ax.plot(res.size, res.faithfulness, "o-", ms=3, lw=1)
    ax.axhline(1, color="0.6", lw=1, ls="--")
    ax.axhline(0, color="0.8", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("circuit size (fraction of edges)")
    ax.set_ylabel(f"faithfulness, {round(res.level * 100)}% CI")
    ax.set_title(
        f"{res.method}: CPR {res.cpr:.3f} [{res.cpr_ci_low:.3f}, {res.cpr_ci_high:.3f}], "
        f"CMD {res.cmd:.3f} [{res.cmd_ci_low:.3f}, {res.cmd_ci_high:.3f}]",
        fontsize=8,
    )
    return fig


#: A head port's horizontal offset where its edges arrive (query left, key middle, value right).
PORT_OFFSET = {"q": -0.18, "k": 0.0, "v": 0.18}


def _row_key(node: str) -> tuple[float, int]:
    """Where a node of a circuit sits: ``(layer, 0)`` for a layer's heads, ``(layer, 1)`` for its
    MLP, below everything for the embedding, above everything for the logits."""
    if node == "input":
        return (-np.inf, 0)
    if node == "logits":
        return (np.inf, 0)
    if node.startswith("m"):
        return (float(node[1:]), 1)
    return (float(node[1:].split(".")[0]), 0)


def _order_in_row(node: str) -> tuple[int, int]:
    """Heads by index, then grouped key/value heads (``a1.kv0``) by index."""
    if ".h" in node:
        return (0, int(node.split(".h")[1]))
    if ".kv" in node:
        return (1, int(node.split(".kv")[1]))
    return (0, 0)


def circuit_layout(nodes: list[str]) -> dict[str, tuple[float, float]]:
    """``(x, y)`` of each node: one row per occupied (layer, heads-or-MLP), the embedding at the
    bottom (y = 0) and the logits at the top, nodes of a row centred on x = 0 in head order."""
    rows = sorted({_row_key(n) for n in nodes})
    y_of = {r: float(i) for i, r in enumerate(rows)}
    out: dict[str, tuple[float, float]] = {}
    for r in rows:
        members = sorted((n for n in nodes if _row_key(n) == r), key=_order_in_row)
        for i, n in enumerate(members):
            out[n] = (i - (len(members) - 1) / 2, y_of[r])
    return out


def circuit_plot(circuit: Any, ax: Any = None) -> Figure:
    """A circuit (:class:`faithlens.circuits.Circuit`) drawn layer by layer: every node a labelled
    box (``gid`` the node's name), every edge an arrow from its writer to its reader (``gid`` the
    edge's name) arriving at a head's left, middle or right for a query, key or value port, its
    width growing with ``|score|`` and coloured by sign (C0 positive, C3 negative; grey when the
    circuit has no scores)."""
    from matplotlib.patches import FancyArrowPatch

    from .plots import subplots

    nodes = circuit.nodes
    if "logits" not in nodes and circuit.edges:
        nodes = [*nodes, "logits"]
    pos = circuit_layout(nodes)
    xs = [p[0] for p in pos.values()] or [0.0]
    n_rows = len({p[1] for p in pos.values()}) or 1
    if ax is None:
        width = min(40.0, max(4.0, 1.0 * (max(xs) - min(xs) + 2)))
        fig, ax = subplots(figsize=(width, min(40.0, max(3.0, 0.9 * n_rows + 1))))
    else:
        fig = ax.figure
    scores = np.abs(np.nan_to_num(np.asarray(circuit.scores, dtype=float)))
    top = float(scores.max()) if scores.size and scores.max() > 0 else 1.0
    for i, edge in enumerate(circuit.edges):
        w, _, r = edge.partition("->")
        node, _, port = r.partition("@")[0].partition("<")  # a per-position edge: its edge
        (x0, y0), (x1, y1) = pos[w], pos[node]
        x1 += PORT_OFFSET.get(port.rstrip(">"), 0.0)
        if circuit.scores:
            s = float(circuit.scores[i])
            color, lw = ("C0" if s >= 0 else "C3"), 0.5 + 3.5 * scores[i] / top
        else:
            color, lw = "0.5", 1.0
        bend = 0.25 if (y1 - y0 > 1 and abs(x1 - x0) < 0.5) else 0.0
        arrow = FancyArrowPatch(
            (x0, y0 + 0.12),
            (x1, y1 - 0.12),
            arrowstyle="-|>",
            mutation_scale=8,
            lw=lw,
            color=color,
            alpha=0.8,
            connectionstyle=f"arc3,rad={bend}",
            gid=edge,
        )
        ax.add_patch(arrow)
    for n, (x, y) in pos.items():
        ax.text(
            x,
            y,
            n,
            ha="center",
            va="center",
            fontsize=7,
            gid=n,
            bbox={"boxstyle": "round,pad=0.25", "fc": "white", "ec": "0.3", "lw": 0.8},
        )
    ax.set_xlim(min(xs) - 0.8, max(xs) + 0.8)
    ax.set_ylim(-0.6, n_rows - 0.4)
    ax.set_axis_off()
    what = f"{circuit.how}, " if circuit.how else ""
    ax.set_title(
        f"circuit of {circuit.model or 'a model'} ({what}{len(circuit)} edges); "
        "head ports: q left, k middle, v right",
        fontsize=8,
    )
    return fig
