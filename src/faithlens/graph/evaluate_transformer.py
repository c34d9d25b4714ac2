"""The treeified evaluator of a :class:`~faithlens.graph.TransformerGraph`.

:func:`evaluate` (reached as ``TransformerGraph.evaluate``) computes the mixed copies of a
:class:`~faithlens.graph.Plan` layer by layer: one clean run per datum caches the residuals and
component values the plan reads (:class:`_CleanCache`); the copies of one layer are stacked in
the batch and run from that layer on (resuming from the assembled residual), with a second run
patching q/k/v where a head's ports differ; output copies run the final layers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..interventions import Intervention, Patch
from ..runs import RunOutput
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

if TYPE_CHECKING:
    from .transformer import TransformerGraph


def _clean_run(
    graph: TransformerGraph,
    fields: Mapping[str, Tensor],
    sites: set[str],
    logits_at: Any,
    want_logits: bool,
    stats: EvalStats | None,
) -> RunOutput:
    inputs = graph.model_inputs(fields)
    stop = None if want_logits or not sites else graph.stop_site(sites)
    la = logits_at if want_logits else ([0] if stop is None else None)
    out = graph.model.run(inputs, cache=sorted(sites), stop_at=stop, logits_at=la)
    if stats is not None:
        layers = graph.n_layers if stop is None else int(graph.site_layer(stop)) + 1
        stats.add(int(inputs.batch_size), layers, clean=True)
    return out


@torch.no_grad()
def uniform_values(
    graph: TransformerGraph,
    refs: Sequence[Uniform],
    feed: DataFeed,
    rows: Tensor,
    out_positions: Tensor | None = None,
) -> list[Tensor]:
    """Values of uniform copies (clean activations, or their parts)."""
    cache = _CleanCache(graph, feed, rows, out_positions, None)
    for r in refs:
        cache.want_value(r)
    cache.run()
    return [cache.value(r) for r in refs]


@torch.no_grad()
def evaluate(
    graph: TransformerGraph,
    plan: Plan,
    feed: DataFeed,
    rows: Tensor,
    *,
    out_positions: Tensor | None = None,
    stats: EvalStats | None = None,
) -> list[Tensor]:
    """The outputs (one per root of ``plan``) of the treeified TransformerGraph at reference rows
    ``rows``; ``stats`` counts the runs. Reached as ``graph.evaluate(plan, ...)``."""
    cache = _CleanCache(graph, feed, rows, out_positions, stats)
    for root in plan.roots:
        if isinstance(root, Uniform):
            cache.want_value(root)
    for c in plan.copies.values():
        node = graph.node(c.node)
        for port in node.ports:
            if port == PHI_PORT:
                continue
            cache.want_site(c.base, graph.port_site(node))
        for f in c.feeds:
            if f.port == PHI_PORT:
                continue
            cache.want_value(Uniform(f.sender, c.base))
            if isinstance(f.child, Uniform):
                cache.want_value(f.child)
    cache.run()
    values: dict[int, Tensor] = {}
    # heads of a layer before its MLP (which may read them), layers in order
    by_stage: dict[tuple[int, int], list[MixedCopy]] = defaultdict(list)
    for c in plan.copies.values():
        node = graph.node(c.node)
        if node.is_output:
            stage = (graph.n_layers, 0)
        else:
            assert node.layer is not None
            stage = (node.layer, int(node.kind == "mlp" and not graph.parallel))
        by_stage[stage].append(c)
    for stage in sorted(by_stage):
        copies = by_stage[stage]
        if stats is not None:
            stats.mixed_copies += len(copies)
        if stage[0] == graph.n_layers:
            for c in copies:
                values[c.ref.id] = _output_copy(
                    graph, c, cache, values, feed, rows, out_positions, stats
                )
        else:
            values.update(_layer_copies(graph, stage[0], copies, cache, values, feed, rows, stats))
    return [cache.value(r) if isinstance(r, Uniform) else values[r.id] for r in plan.roots]


def _child_value(
    graph: TransformerGraph, ref: CopyRef, cache: _CleanCache, values: Mapping[int, Tensor]
) -> Tensor:
    return cache.value(ref) if isinstance(ref, Uniform) else values[ref.id]


def _assemble(
    graph: TransformerGraph,
    c: MixedCopy,
    port: str,
    cache: _CleanCache,
    values: Mapping[int, Tensor],
    rows: Tensor,
) -> Tensor:
    node = graph.node(c.node)
    x = cache.site(c.base, graph.port_site(node)).float()
    seq = x.shape[1]
    for f in c.feeds:
        if f.port != port:
            continue
        delta = (
            _child_value(graph, f.child, cache, values).float()
            - cache.value(Uniform(f.sender, c.base)).float()
        )
        if f.positions is not None:
            delta = delta * f.positions.mask(rows.cpu(), seq).to(delta.device)[..., None]
        x = x + delta
    return x


def _port_key(graph: TransformerGraph, c: MixedCopy, port: str) -> Hashable:
    node = graph.node(c.node)
    feeds = tuple(
        sorted(((f.sender, f.child, f.positions) for f in c.feeds if f.port == port), key=repr)
    )
    return (graph.port_site(node), c.base, c.run_datum, feeds)


def _finish_part(
    graph: TransformerGraph, c: MixedCopy, value: Tensor, feed: DataFeed, rows: Tensor
) -> Tensor:
    """Apply a part's transform to its base node's value on the copy's inputs."""
    node = graph.node(c.node)
    part = node.part
    if part is None:
        return value
    if isinstance(part, LinearPart):
        return part.fn(value)
    if isinstance(part, ResidualPart):
        phi_feeds = [f for f in c.feeds if f.port == PHI_PORT]
        return part.apply(value, phi_value(graph, part.fns, phi_feeds, c.base, feed, rows, value))
    raise AssertionError(part)


def _layer_copies(
    graph: TransformerGraph,
    L: int,
    copies: Sequence[MixedCopy],
    cache: _CleanCache,
    values: Mapping[int, Tensor],
    feed: DataFeed,
    rows: Tensor,
    stats: EvalStats | None,
) -> dict[int, Tensor]:
    """Compute every mixed copy of layer L: one run over stacked distinct port inputs (heads
    and MLPs), and a second run patching q/k/v where a head's ports differ."""
    out: dict[int, Tensor] = {}
    phi_only = [c for c in copies if isinstance(graph.node(c.node).part, PhiPart)]
    for c in phi_only:
        node = graph.node(c.node)
        assert isinstance(node.part, PhiPart)
        feeds = [f for f in c.feeds if f.port == PHI_PORT]
        out[c.ref.id] = phi_value(graph, (node.part.fn,), feeds, c.base, feed, rows, None)
    copies = [c for c in copies if c not in phi_only]
    if not copies:
        return out
    blocks: dict[Hashable, int] = {}  # port-input key -> block index
    block_x: list[Tensor] = []
    block_base: list[int] = []

    def block_for(key: Hashable, c: MixedCopy, port: str) -> int:
        if key not in blocks:
            blocks[key] = len(block_x)
            block_x.append(_assemble(graph, c, port, cache, values, rows))
            block_base.append(c.run_datum)
        return blocks[key]

    head_plain: list[tuple[MixedCopy, int]] = []
    head_split: list[tuple[MixedCopy, dict[str, int]]] = []
    mlp_copies: list[tuple[MixedCopy, Hashable]] = []
    for c in copies:
        node = graph.node(c.node)
        ports = [p for p in node.ports if p != PHI_PORT]
        if node.kind in ("head", "attn"):
            keys = {p: _port_key(graph, c, p) for p in ports}
            if len(set(keys.values())) == 1:
                head_plain.append((c, block_for(keys[ports[0]], c, ports[0])))
            else:
                head_split.append((c, {p: block_for(keys[p], c, p) for p in ports}))
        elif node.kind == "mlp":
            key = _port_key(graph, c, "in")
            if graph.parallel:
                block_for(key, c, "in")
            mlp_copies.append((c, key))
        else:
            raise AssertionError(node.kind)
    # sequential MLPs: patch the MLP's pre-norm input of some block with their own input
    mlp_patch: dict[int, Tensor] = {}
    mlp_block: dict[int, int] = {}
    if not graph.parallel:
        distinct: dict[Hashable, int] = {}
        for c, key in mlp_copies:
            if key in distinct:
                mlp_block[c.ref.id] = distinct[key]
                continue
            b = len(distinct)
            y = _assemble(graph, c, "in", cache, values, rows)
            if b >= len(block_x):
                block_x.append(y)
                block_base.append(c.run_datum)
            mlp_patch[b] = y
            distinct[key] = b
            mlp_block[c.ref.id] = b
    else:
        for c, key in mlp_copies:
            mlp_block[c.ref.id] = blocks[key]
    r = len(rows)
    hidden = torch.cat(block_x, 0)
    inputs = graph.model_inputs(cat_fields([feed.fields(b, rows) for b in block_base]))
    ivs: list[Intervention] = []
    if mlp_patch:
        idx = torch.cat([torch.arange(b * r, (b + 1) * r) for b in sorted(mlp_patch)])
        src = torch.cat([mlp_patch[b] for b in sorted(mlp_patch)], 0).to(graph.model.dtype)
        ivs.append(Patch(graph.mlp_norm_input[L], source=src, rows=idx))
    head_sites = {graph.value_site(graph.base_node(c.node)) for c, _ in head_plain}
    qkv_sites: set[str] = set()
    for c, _ in head_split:
        n = graph.base_node(c.node)
        assert n.head is not None
        g = n.head // (graph.n_heads // graph.n_kv)
        qkv_sites |= {f"q.{L}.{n.head}", f"k.{L}.{g}", f"v.{L}.{g}"}
    cache_sites = sorted(head_sites | qkv_sites | ({f"mlp_out.{L}"} if mlp_copies else set()))
    stop = (
        f"mlp_out.{L}" if mlp_copies else (f"head.{L}.0" if graph.split_heads else f"attn_out.{L}")
    )
    run_a = graph.run_from(L, hidden, inputs, ivs, cache_sites, stop, stats=stats)
    for c, b in head_plain:
        n = graph.base_node(c.node)
        raw = run_a.cache[graph.value_site(n)][b * r : (b + 1) * r]
        out[c.ref.id] = _finish_part(graph, c, graph.contribution_of(n, raw), feed, rows)
    for c, _key in mlp_copies:
        b = mlp_block[c.ref.id]
        raw = run_a.cache[f"mlp_out.{L}"][b * r : (b + 1) * r]
        out[c.ref.id] = _finish_part(graph, c, raw, feed, rows)
    if head_split:
        out.update(
            _split_heads_run(graph, L, head_split, run_a, block_x, block_base, feed, rows, stats)
        )
    return out


def _split_heads_run(
    graph: TransformerGraph,
    L: int,
    items: Sequence[tuple[MixedCopy, dict[str, int]]],
    run_a: RunOutput,
    block_x: Sequence[Tensor],
    block_base: Sequence[int],
    feed: DataFeed,
    rows: Tensor,
    stats: EvalStats | None,
) -> dict[int, Tensor]:
    """Heads whose q, k, v inputs differ: patch each head's q/k/v with the projections of
    its own port inputs (computed in run A). Heads sharing a key/value group in one block
    must agree on k and v, so copies are packed into blocks without conflicts."""
    r = len(rows)
    per_group = graph.n_heads // graph.n_kv
    packs: list[dict[str, Any]] = []
    for c, blk in items:
        n = graph.base_node(c.node)
        assert n.head is not None
        g = n.head // per_group
        for pack in packs:
            if n.head in pack["q"]:
                continue
            if pack["k"].get(g, blk["k"]) != blk["k"] or pack["v"].get(g, blk["v"]) != blk["v"]:
                continue
            break
        else:
            pack = {"q": {}, "k": {}, "v": {}, "items": []}
            packs.append(pack)
        pack["q"][n.head] = blk["q"]
        pack["k"][g] = blk["k"]
        pack["v"][g] = blk["v"]
        pack["items"].append((c, n))

    def rows_of(site: str, b: int) -> Tensor:
        return run_a.cache[site][b * r : (b + 1) * r]

    ivs: list[Intervention] = []
    hidden: list[Tensor] = []
    bases: list[int] = []
    for j, pack in enumerate(packs):
        idx = torch.arange(j * r, (j + 1) * r)
        for h, b in pack["q"].items():
            ivs.append(Patch(f"q.{L}.{h}", source=rows_of(f"q.{L}.{h}", b), rows=idx))
        for g, b in pack["k"].items():
            ivs.append(Patch(f"k.{L}.{g}", source=rows_of(f"k.{L}.{g}", b), rows=idx))
        for g, b in pack["v"].items():
            ivs.append(Patch(f"v.{L}.{g}", source=rows_of(f"v.{L}.{g}", b), rows=idx))
        first_q = next(iter(pack["q"].values()))
        hidden.append(block_x[first_q])
        bases.append(block_base[first_q])
    inputs = graph.model_inputs(cat_fields([feed.fields(b, rows) for b in bases]))
    sites = sorted({f"head.{L}.{n.head}" for p in packs for _, n in p["items"]})
    run_b = graph.run_from(L, torch.cat(hidden, 0), inputs, ivs, sites, f"head.{L}.0", stats=stats)
    out: dict[int, Tensor] = {}
    for j, pack in enumerate(packs):
        for c, n in pack["items"]:
            raw = run_b.cache[f"head.{L}.{n.head}"][j * r : (j + 1) * r]
            out[c.ref.id] = _finish_part(graph, c, graph.contribution_of(n, raw), feed, rows)
    return out


def _output_copy(
    graph: TransformerGraph,
    c: MixedCopy,
    cache: _CleanCache,
    values: Mapping[int, Tensor],
    feed: DataFeed,
    rows: Tensor,
    out_positions: Tensor | None,
    stats: EvalStats | None,
) -> Tensor:
    x = _assemble(graph, c, "in", cache, values, rows)
    inputs = graph.model_inputs(feed.fields(c.run_datum, rows))
    out = graph.run_from(
        graph.n_layers, x, inputs, [], [], None, logits_at=out_positions, stats=stats
    )
    assert out.logits is not None
    return out.logits


class _CleanCache:
    """Clean runs, one per datum, caching exactly the sites a plan reads."""

    def __init__(
        self,
        graph: TransformerGraph,
        feed: DataFeed,
        rows: Tensor,
        out_positions: Tensor | None,
        stats: EvalStats | None,
    ) -> None:
        self.graph = graph
        self.feed = feed
        self.rows = rows
        self.out_positions = out_positions
        self.stats = stats
        self.sites: dict[int, set[str]] = defaultdict(set)
        self.logits: set[int] = set()
        self.phi: set[Uniform] = set()
        self.store: dict[int, dict[str, Tensor]] = {}
        self.logit_store: dict[int, Tensor] = {}
        self.values: dict[Uniform, Tensor] = {}

    def want_site(self, datum: int, site: str) -> None:
        self.sites[datum].add(site)

    def want_value(self, ref: Uniform) -> None:
        n = self.graph.node(ref.node)
        if n.is_output:
            self.logits.add(ref.datum)
            return
        if isinstance(n.part, PhiPart):
            return
        base = self.graph.base_node(ref.node)
        self.sites[ref.datum].add(self.graph.value_site(base))

    def run(self) -> None:
        for d in sorted(set(self.sites) | self.logits):
            out = _clean_run(
                self.graph,
                self.feed.fields(d, self.rows),
                self.sites.get(d, set()),
                self.out_positions,
                d in self.logits,
                self.stats,
            )
            self.store[d] = out.cache
            if d in self.logits:
                assert out.logits is not None
                self.logit_store[d] = out.logits

    def site(self, datum: int, site: str) -> Tensor:
        return self.store[datum][site]

    def value(self, ref: Uniform) -> Tensor:
        got = self.values.get(ref)
        if got is not None:
            return got
        n = self.graph.node(ref.node)
        if n.is_output:
            v = self.logit_store[ref.datum]
        elif isinstance(n.part, PhiPart):
            v = phi_value(self.graph, (n.part.fn,), (), ref.datum, self.feed, self.rows, None)
        else:
            base = self.graph.base_node(ref.node)
            v = self.graph.contribution_of(base, self.store[ref.datum][self.graph.value_site(base)])
            if isinstance(n.part, LinearPart):
                v = n.part.fn(v)
            elif isinstance(n.part, ResidualPart):
                v = n.part.apply(
                    v, phi_value(self.graph, n.part.fns, (), ref.datum, self.feed, self.rows, v)
                )
        self.values[ref] = v
        return v


__all__ = ["evaluate", "uniform_values"]
