"""The treeified evaluator of a :class:`~faithlens.graph.LayerGraph`.

:func:`evaluate` (reached as ``LayerGraph.evaluate``) runs the module once per datum the plan
reads (caching the outputs of the modules it needs), then computes the mixed copies node by
node in topological order: the copies of one module are stacked in the batch, with each parent's
output patched to its assembled value (position splits combine several copies of a parent).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..errors import ShapeError
from ..interventions import Patch
from .evaluate import (
    CopyRef,
    DataFeed,
    EvalStats,
    MixedCopy,
    Plan,
    Uniform,
    cat_fields,
    phi_value,
)
from .nodes import PHI_PORT, LinearPart, PhiPart, ResidualPart
from .positions import PositionAtom

if TYPE_CHECKING:
    from .layers import LayerGraph


def _combine(
    graph: LayerGraph,
    pieces: Sequence[tuple[PositionAtom | None, Tensor]],
    base: Tensor | None,
    rows: Tensor,
) -> Tensor:
    out = base
    for atom, v in pieces:
        if atom is None:
            out = v
            continue
        if out is None:
            out = torch.zeros_like(v)
        if v.dim() < 2 or not graph.positions:
            raise ShapeError(
                "a position split needs [batch, position, ...] activations; build the graph "
                "with positions=True"
            )
        m = atom.mask(rows.cpu(), v.shape[1]).to(v.device)
        m = m.reshape(*m.shape, *([1] * (v.dim() - 2)))
        out = torch.where(m, v, out)
    assert out is not None
    return out


@torch.no_grad()
def uniform_values(
    graph: LayerGraph,
    refs: Sequence[Uniform],
    feed: DataFeed,
    rows: Tensor,
    out_positions: Tensor | None = None,
) -> list[Tensor]:
    """Values of uniform copies (module outputs or inputs on one datum, or their parts)."""
    store = _clean(graph, refs, feed, rows, None)
    return [_uniform(graph, r, store, feed, rows) for r in refs]


def _clean(
    graph: LayerGraph,
    refs: Iterable[Uniform],
    feed: DataFeed,
    rows: Tensor,
    stats: EvalStats | None,
) -> dict[int, dict[str, Tensor]]:
    want: dict[int, set[str]] = defaultdict(set)
    for r in refs:
        n = graph.node(r.node)
        if n.is_input or isinstance(n.part, PhiPart):
            want.setdefault(r.datum, set())
            continue
        want[r.datum].add("output" if n.is_output else graph.node_site(n.base or n.name))
    store: dict[int, dict[str, Tensor]] = {}
    for d, sites in sorted(want.items()):
        fields = feed.fields(d, rows)
        if not sites:
            store[d] = {}
            continue
        out = graph.model.run(
            graph.model_inputs(fields), cache=sorted(s for s in sites if s != "output")
        )
        got = dict(out.cache)
        if "output" in sites:
            assert out.logits is not None
            got["output"] = out.logits
        store[d] = got
        if stats is not None:
            stats.add(len(rows), 1, clean=True)
    return store


def _uniform(
    graph: LayerGraph,
    r: Uniform,
    store: Mapping[int, Mapping[str, Tensor]],
    feed: DataFeed,
    rows: Tensor,
) -> Tensor:
    n = graph.node(r.node)
    if n.is_input:
        return feed.fields(r.datum, rows)[n.name]
    if isinstance(n.part, PhiPart):
        return phi_value(graph, (n.part.fn,), (), r.datum, feed, rows, None)
    v = store[r.datum]["output" if n.is_output else graph.node_site(n.base or n.name)]
    if isinstance(n.part, LinearPart):
        return n.part.fn(v)
    if isinstance(n.part, ResidualPart):
        return n.part.apply(v, phi_value(graph, n.part.fns, (), r.datum, feed, rows, v))
    return v


@torch.no_grad()
def evaluate(
    graph: LayerGraph,
    plan: Plan,
    feed: DataFeed,
    rows: Tensor,
    *,
    out_positions: Tensor | None = None,
    stats: EvalStats | None = None,
) -> list[Tensor]:
    """The outputs (one per root of ``plan``) of the treeified LayerGraph at reference rows
    ``rows``; ``stats`` counts the runs. Reached as ``graph.evaluate(plan, ...)``."""
    refs = plan.uniform_refs()
    for c in plan.copies.values():
        node = graph.node(c.node)
        for p in node.ports:
            if p != PHI_PORT:
                refs.update(Uniform(s, c.base) for s in graph.senders(c.node, p))
    store = _clean(graph, refs, feed, rows, stats)
    values: dict[int, Tensor] = {}

    def val(ref: CopyRef) -> Tensor:
        return (
            _uniform(graph, ref, store, feed, rows) if isinstance(ref, Uniform) else values[ref.id]
        )

    by_node: dict[str, list[MixedCopy]] = defaultdict(list)
    for c in plan.copies.values():
        by_node[graph.node(c.node).base or c.node].append(c)
    for base in sorted(by_node, key=lambda b: (graph.order_of(b), b)):
        copies = by_node[base]
        if stats is not None:
            stats.mixed_copies += len(copies)
        phi_copies = [c for c in copies if isinstance(graph.node(c.node).part, PhiPart)]
        for c in phi_copies:
            part = graph.node(c.node).part
            assert isinstance(part, PhiPart)
            values[c.ref.id] = phi_value(
                graph,
                (part.fn,),
                [f for f in c.feeds if f.port == PHI_PORT],
                c.base,
                feed,
                rows,
                None,
            )
        rest = [c for c in copies if c not in phi_copies]
        if rest:
            values.update(_node_copies(graph, base, rest, val, feed, rows, stats))
    return [val(r) for r in plan.roots]


def _sender_values(
    graph: LayerGraph, c: MixedCopy, val: Callable[[CopyRef], Tensor], rows: Tensor
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(input field -> assembled input, module node -> assembled output) for one copy."""
    node = graph.node(c.node)
    pieces: dict[str, list[tuple[PositionAtom | None, Tensor]]] = defaultdict(list)
    for f in c.feeds:
        if f.port == PHI_PORT:
            continue
        pieces[f.sender].append((f.positions, val(f.child)))
    inputs: dict[str, Tensor] = {}
    modules: dict[str, Tensor] = {}
    part_sums: dict[str, Tensor] = {}
    for s in graph.senders(c.node, node.ports[0]):
        sn = graph.node(s)
        got = pieces.get(s)
        default = val(Uniform(s, c.base))
        v = _combine(graph, got, default, rows) if got else default
        if sn.is_input:
            inputs[s] = v
        elif sn.base is not None:
            part_sums[sn.base] = part_sums[sn.base] + v if sn.base in part_sums else v
        else:
            modules[s] = v
    modules.update(part_sums)
    return inputs, modules


def _node_copies(
    graph: LayerGraph,
    base: str,
    copies: Sequence[MixedCopy],
    val: Callable[[CopyRef], Tensor],
    feed: DataFeed,
    rows: Tensor,
    stats: EvalStats | None,
) -> dict[int, Tensor]:
    r = len(rows)
    fields_list: list[dict[str, Tensor]] = []
    patches: dict[str, list[Tensor]] = defaultdict(list)
    for c in copies:
        inputs, modules = _sender_values(graph, c, val, rows)
        f = dict(feed.fields(c.base, rows))
        f.update(inputs)
        fields_list.append(f)
        for m, v in modules.items():
            patches[m].append(v)
    for m, vs in patches.items():
        if len(vs) != len(copies):
            raise AssertionError(f"every copy of {base} must patch {m}")
    fields = cat_fields(fields_list)
    ivs = [Patch(graph.node_site(m), source=torch.cat(vs, 0)) for m, vs in patches.items()]
    is_out = graph.is_output_node(base)
    out = graph.model.run(
        graph.model_inputs(fields),
        ivs,
        cache=[] if is_out else [graph.node_site(base)],
        stop_at=None if is_out else graph.node_site(base),
    )
    if stats is not None:
        stats.add(len(copies) * r, 1)
    full = out.logits if is_out else out.cache[graph.node_site(base)]
    assert full is not None
    res: dict[int, Tensor] = {}
    for j, c in enumerate(copies):
        v = full[j * r : (j + 1) * r]
        part = graph.node(c.node).part
        if isinstance(part, LinearPart):
            v = part.fn(v)
        elif isinstance(part, ResidualPart):
            v = part.apply(
                v,
                phi_value(
                    graph,
                    part.fns,
                    [f for f in c.feeds if f.port == PHI_PORT],
                    c.base,
                    feed,
                    rows,
                    v,
                ),
            )
        res[c.ref.id] = v
    return res


__all__ = ["evaluate", "uniform_values"]
