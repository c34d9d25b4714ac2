"""A circuit's causal-scrubbing score without a tree: the ``"global"`` mode as one DAG.

``circuit.to_hypothesis(unimportant="global")`` (:mod:`.hypothesis`) claims the circuit's edges
with ``Exact`` nodes (each sees the reference) and feeds every unimportant input one random
datum shared by the whole hypothesis. Every copy that treeification makes of a node then
computes the same value: the node on the reference inputs along the circuit's edges and on the
shared datum along every other edge. So the scrub is one evaluation of the circuit's DAG per
reference: every edge outside the circuit carries its writer's activation on the shared datum,
every edge in it the value its writer computes in this same evaluation (edge patching of the
off-circuit edges from a resampled example), and a node with no circuit edge into it is its
plain activation on the shared datum.

:func:`scrub` prepares the scrub exactly as ``fl.scrub`` does (the references, the shared datum
and the baselines drawn from the same seeded streams: it prepares ``Hypothesis.nothing(...,
unimportant="global")``, whose one datum is drawn as the circuit hypothesis' is), replaces the
hypothesis' plan by the circuit's DAG of copies (one per node the circuit reaches from the
logits, built as scrubbing's plan builder would merge the tree's copies) and runs scrubbing's
own evaluator and summary. The result is a :class:`~faithlens.scrubbing.ScrubResult` with the
same numbers as ``fl.scrub(model, hypothesis=circuit.to_hypothesis(model=model,
unimportant="global"), data=data)``, for circuits of any depth (the tree has one node per path
from the logits; the DAG one copy per node).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import Tensor

from .. import validate
from ..errors import InputError
from ..executor import Executor, on_executor
from ..graph import (
    ComponentGraph,
    CopyRef,
    Feed,
    Mixed,
    MixedCopy,
    Plan,
    TransformerGraph,
    Uniform,
)
from ..models.model import Model
from ..progress import Progress
from ..scrubbing import Hypothesis, Sampler, ScrubResult, prepare
from ..scrubbing.evaluate import finish
from ..scrubbing.metrics import ScrubBehaviour
from ..scrubbing.preparation import Prepared
from .common import circuit_names, edge_graph
from .hypothesis import graph_edges, heads_per_group
from .scores import Circuit

#: the reference datum of a prepared scrub (scrubbing's ``DataVectors``: id 0).
REFERENCE = 0


def circuit_plan(
    graph: ComponentGraph,
    edges: set[tuple[str, str | None, str]],
    other: int,
    first_id: int = 0,
) -> tuple[CopyRef, dict[int, MixedCopy]]:
    """The copies of the circuit's DAG in the ``"global"`` mode: (the output's copy, the mixed
    copies by id, numbered from ``first_id``). ``edges``: (reader, port, writer) of ``graph``
    (:func:`~.hypothesis.graph_edges`; port None: the reader's only port); ``other``: the
    datum of every edge outside the circuit. Built as scrubbing's plan builder merges the
    tree's copies: a copy's base is its most common uniform input datum, the inputs equal to it
    are not listed, and a copy of nothing but reference inputs is the plain reference
    activation."""
    claimed: set[tuple[str, str, str]] = set()
    for reader, port, writer in edges:
        ports = graph.ports(reader)
        p = port if port is not None else (ports[0] if len(ports) == 1 else "")
        if p not in ports or writer not in graph.senders(reader, p):
            raise InputError(
                f"the circuit's edge {writer} -> {reader} (port {port!r}) is not an edge of "
                f"the model's component graph; its ports are {list(ports)}"
            )
        claimed.add((reader, p, writer))
    into = {reader for reader, _, _ in claimed}
    copies: dict[int, MixedCopy] = {}
    memo: dict[str, CopyRef] = {}

    def copy(node: str) -> CopyRef:
        got = memo.get(node)
        if got is not None:
            return got
        if graph.node(node).is_input:
            ref: CopyRef = Uniform(node, REFERENCE)  # an Exact leaf: the reference
        elif node not in into:
            ref = Uniform(node, other)  # an open node without children: the shared datum
        else:
            feeds = [
                (p, s, copy(s) if (node, p, s) in claimed else Uniform(s, other))
                for p in graph.ports(node)
                for s in graph.senders(node, p)
            ]
            counts = Counter(c.datum for _, _, c in feeds if isinstance(c, Uniform))
            base = (
                max(counts, key=lambda d: (counts[d], d == REFERENCE, -d)) if counts else REFERENCE
            )
            kept = tuple(
                sorted(
                    (
                        Feed(p, s, c)
                        for p, s, c in feeds
                        if not (isinstance(c, Uniform) and c.datum == base)
                    ),
                    key=repr,
                )
            )
            if not kept and base == REFERENCE:
                ref = Uniform(node, REFERENCE)
            else:
                mixed = Mixed(first_id + len(copies), node)
                copies[mixed.id] = MixedCopy(mixed, base, kept, REFERENCE)
                ref = mixed
        memo[node] = ref
        return ref

    return copy(graph.output), copies


def _edges(model: Model, circuit: Circuit | Sequence[str]) -> list[str]:
    why = "a scrubbing hypothesis routes whole activations"
    return circuit_names(edge_graph(model), circuit, whole=why)


@on_executor
def scrub(
    model: Model,
    data: Any,
    circuit: Circuit | Sequence[str],
    n: int | None = None,
    *,
    unimportant: str = "global",
    other: Sampler | str | None = None,
    behaviour: ScrubBehaviour | None = None,
    baselines: Any = ("random",),
    name: str | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    max_memory: int | None = None,
    progress: Progress | None = None,
    executor: str | Executor | None = None,
) -> ScrubResult:
    """The causal-scrubbing score of ``circuit`` (a :class:`Circuit` or edge names) on
    ``data``: its edges important, every other path resampled from one random datum per
    reference (``unimportant="global"``), evaluated as the circuit's DAG without a tree (module
    docstring), so circuits of any size and depth can be scored. Equal to ``fl.scrub(model,
    hypothesis=circuit.to_hypothesis(model=model, unimportant="global"), data=data, n=n,
    ...)``: the same draws for the same ``seed``, and the same :class:`ScrubResult` (% loss
    recovered against each baseline with a bootstrap interval, KL, per-example values).
    ``other``: the sampler of the shared datum (default ``Random()``, any row of the data;
    ``SameFeature(field("positions"))`` a row whose answer is read at the reference's position,
    so right-padded prompts of different lengths are not mixed), conditioned on the reference;
    ``circuit.to_hypothesis(..., other=other)`` is the matching tree. ``n``, ``behaviour``,
    ``baselines``, ``n_boot``, ``level``, ``seed``, ``max_memory``,
    ``progress`` and ``executor`` as for :func:`faithlens.scrub`; ``name`` names the
    hypothesis in the result."""
    validate.choice("unimportant", unimportant, ("global",))
    if not isinstance(model, Model):
        raise validate.fail(
            "model", type(model).__name__, "must be a faithlens Model", "load it with fl.load"
        )
    edges = _edges(model, circuit)
    how = circuit.how if isinstance(circuit, Circuit) and circuit.how else f"{len(edges)} edges"
    label = name or f"circuit ({how})"
    stand_in = Hypothesis.nothing(label, unimportant="global", other=other)
    prep = prepare(model, stand_in, data, n, behaviour=behaviour, baselines=baselines, seed=seed)
    shared = prep.plan.roots[1]
    if not isinstance(shared, Uniform):  # pragma: no cover - nothing() claims no path
        raise AssertionError(f"the empty global hypothesis planned a mixed root: {shared}")
    claimed = graph_edges(edges, heads_per_group(model), prep.graph.output)
    first = max(prep.plan.copies, default=-1) + 1
    root, copies = circuit_plan(prep.graph, claimed, shared.datum, first)
    roots = [prep.plan.roots[0], root, *prep.plan.roots[2:]]
    plan = Plan(roots, {**prep.plan.copies, **copies})
    res = finish(
        dataclasses.replace(prep, plan=plan),
        n_boot=n_boot,
        level=level,
        progress=progress,
        seed=seed,
        max_memory=max_memory,
    )
    reached = {c.node for c in copies.values()}
    description = (
        f"circuit {label!r}: {len(edges)} edges of the edge graph, evaluated as one DAG\n"
        f"  unimportant inputs: global (one datum shared by every edge outside the circuit: "
        f"{stand_in.root.other.describe()})\n"
        f"  every node: the reference (Exact); {len(copies)} mixed copies "
        f"({len(reached)} nodes the circuit reaches from the output)"
    )
    stats = {**res.stats, "evaluation": "circuit DAG", "circuit_edges": len(edges)}
    warns = list(res.warnings)
    mixed = length_mixing(prep, shared.datum)
    if mixed:
        warns.append(
            f"VARIABLE LENGTHS: for {100 * mixed:.0f} % of the references the shared datum has "
            "another length (non-padding tokens); with right padding, the edges outside the "
            "circuit then carry another position's activations, or padding's, where the "
            "behaviour is read. Draw it among data of the reference's length, e.g. "
            "other=SameFeature(field('positions')), with a baseline drawn the same way."
        )
    stats["variable_lengths_share"] = mixed
    return dataclasses.replace(res, description=description, stats=stats, warnings=warns)


def length_mixing(prep: Prepared, datum: int) -> float:
    """The share of the references whose ``datum`` differs from them in length (non-padding
    tokens of the attention mask); 0 without a mask column."""
    g = prep.graph
    if not isinstance(g, TransformerGraph) or g.mask_field not in prep.table.data:
        return 0.0
    mask = prep.table.data[g.mask_field]
    if not isinstance(mask, Tensor):
        return 0.0
    lengths = (mask != 0).sum(-1).cpu().numpy()
    vec = prep.data.vectors
    return float(np.mean(lengths[vec[REFERENCE]] != lengths[vec[datum]]))


__all__ = ["circuit_plan", "length_mixing", "scrub"]
