"""Slow reference implementations of scrubbed evaluation, for tests and benchmarks.

Test-only code (moved out of the library from ``faithlens/scrubbing/reference.py``).

- :func:`naive_scrub`: the main post's recursion, one example at a time and one node copy at a
  time, with no memoisation (a copy reached along two paths is computed twice) and no batching;
  every receiver's input is rebuilt as the full sum of its senders' copies. It evaluates the
  same treeified copies as the engine, so it is the baseline of ``benchmarks/scrub.py``.
- :func:`path_reference`: an independent implementation of the semantics: it enumerates every
  input-to-output path of the (small) graph, decides each path's datum by matching the paths
  against the hypothesis' routes (deepest node wins; a leaf gives its datum, an open node its
  unimportant datum), and evaluates the treeified model copy by copy. It shares no planning code
  with the engine; tests compare the two. Limits: one hypothesis (no join), unimportant inputs
  per node or global, no position restrictions, graphs small enough to enumerate their paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from faithlens.errors import InputError
from faithlens.graph import (
    PHI_PORT,
    ComponentGraph,
    CopyRef,
    LayerGraph,
    TransformerGraph,
    Uniform,
)
from faithlens.scrubbing.evaluate import Prepared, TableFeed
from faithlens.scrubbing.hypothesis import TNode

Edge = tuple[str, str, str]  # (receiver, port, sender)


Rows = Tensor  # reference rows (a 1-D LongTensor)


def _fields(prep: Prepared, datum: int, rows: Rows) -> dict[str, Tensor]:
    feed = TableFeed(prep.table, prep.data, prep.graph.input_fields(), prep.model.device)
    return feed.fields(datum, rows)


def _rows(prep: Prepared, datum: int, rows: Rows) -> Any:
    return prep.table.data.take(prep.data.vectors[datum][rows.numpy()])


_CONST: dict[tuple[int, str, str, int], Tensor] = {}


def _const(prep: Prepared, node: str, port: str, datum: int, row: Rows) -> Tensor:
    """A transformer port's input minus its senders' outputs: the constant biases (they do not
    depend on the input, so they are computed once per graph, node, port and length)."""
    g = prep.graph
    assert isinstance(g, TransformerGraph)
    fields = _fields(prep, datum, row)
    key = (id(g), node, port, int(fields[g.ids_field].shape[-1]))
    got = _CONST.get(key)
    if got is not None:
        return got[:1]
    rows = _rows(prep, datum, row)
    total = g.port_input(node, fields).float()
    for s in g.senders(node, port):
        total = total - g.node_value(s, fields, rows).float()
    _CONST[key] = total[:1]
    return total[:1]


def _compute(
    prep: Prepared,
    node: str,
    children: dict[tuple[str, str], Tensor | int],
    run_datum: int,
    row: Rows,
    out_pos: Tensor | None,
) -> Tensor:
    """One copy of ``node`` from its senders' copy values (``(port, sender) -> tensor``; for a
    phi port, the datum id)."""
    g = prep.graph
    n = g.node(node)
    base_fields = _fields(prep, run_datum, row)
    phi_datum = children.get((PHI_PORT, g.inputs[0])) if PHI_PORT in n.ports else None
    phi_rows = _rows(prep, int(phi_datum), row) if isinstance(phi_datum, int) else None
    if isinstance(g, TransformerGraph):
        ports: dict[str, Tensor] = {}
        for p in n.ports:
            if p == PHI_PORT:
                continue
            x = _const(prep, node, p, run_datum, row)
            for s in g.senders(node, p):
                v = children[(p, s)]
                assert isinstance(v, Tensor)
                x = x + v.float()
            ports[p] = x
        return g.compute(node, ports, base_fields, out_positions=out_pos, phi_rows=phi_rows)
    assert isinstance(g, LayerGraph)
    senders: dict[str, Tensor] = {}
    for p in n.ports:
        if p == PHI_PORT:
            continue
        for s in g.senders(node, p):
            v = children[(p, s)]
            assert isinstance(v, Tensor)
            senders[s] = v
    return g.compute(node, senders, base_fields, out_positions=out_pos, phi_rows=phi_rows)


def _leaf_value(prep: Prepared, node: str, datum: int, row: Rows, out_pos: Tensor | None) -> Tensor:
    g = prep.graph
    n = g.node(node)
    if n.is_input and isinstance(g, LayerGraph):
        return _fields(prep, datum, row)[node]
    return g.node_value(
        node,
        _fields(prep, datum, row),
        _rows(prep, datum, row),
        out_positions=out_pos,
    )


def naive_scrub(prep: Prepared, rows: Sequence[int], root: int = 1) -> list[Tensor]:
    """Evaluate root ``root`` of a prepared plan example by example, copy by copy, without
    memoisation or batching."""
    g = prep.graph
    out = []
    for r in rows:
        row = torch.tensor([int(r)])
        ref_rows = prep.table.data.take(prep.ref[[int(r)]])
        pos = prep.behaviour.positions(ref_rows)

        def value(ref: CopyRef, row: Rows = row, pos: Tensor | None = pos) -> Tensor | int:
            if isinstance(ref, Uniform):
                return _leaf_value(prep, ref.node, ref.datum, row, pos)
            c = prep.plan.copies[ref.id]
            listed: dict[tuple[str, str], list[Any]] = {}
            for f in c.feeds:
                if f.positions is not None:
                    raise InputError("naive_scrub does not handle position restrictions")
                listed.setdefault((f.port, f.sender), []).append(f.child)
            children: dict[tuple[str, str], Tensor | int] = {}
            node = g.node(c.node)
            for p in node.ports:
                for s in g.senders(c.node, p):
                    child = listed.get((p, s), [Uniform(s, c.base)])[0]
                    if p == PHI_PORT:
                        assert isinstance(child, Uniform)
                        children[(p, s)] = child.datum
                    else:
                        children[(p, s)] = value(child)
            return _compute(prep, c.node, children, c.run_datum, row, pos)

        v = value(prep.plan.roots[root])
        assert isinstance(v, Tensor)
        out.append(v)
    return out


# ---------------------------------------------------------------------------------------------
# An independent implementation of the semantics, by path enumeration
# ---------------------------------------------------------------------------------------------


def _paths(g: ComponentGraph, node: str) -> list[list[Edge]]:
    n = g.node(node)
    if n.is_input:
        return [[]]
    out: list[list[Edge]] = []
    for p in n.ports:
        for s in g.senders(node, p):
            for rest in _paths(g, s):
                out.append([(node, p, s), *rest])
    return out


def _match(
    r: Any, path: list[Edge], k: int, level: str, g: ComponentGraph
) -> tuple[int, str] | None:
    """Where route ``r`` (a Resolved route) starting at point (k, level) of ``path`` ends, or
    None. A point (k, "node") is the k-th node of the path; (k, "edge") its k-th edge, taken."""
    if r.positions is not None or r.end_positions is not None:
        raise InputError("path_reference does not handle position restrictions")
    nodes = [path[0][0]] + [e[2] for e in path] if path else []
    if r.target is None:
        if k >= len(path):
            return None
        if r.end_port is not None and path[k][1] != r.end_port:
            return None
        return (k, "edge")
    if k >= len(path):
        return None
    if r.port is not None and path[k][1] != r.port:
        return None
    for j in range(k + 1, len(nodes)):
        if nodes[j] == r.target:
            between = set(nodes[k + 1 : j])
            if r.direct and j != k + 1:
                return None
            if between & r.excluding or not r.through <= between:
                return None
            if r.at_input:
                if j >= len(path):
                    return None
                if r.end_port is not None and path[j][1] != r.end_port:
                    return None
                return (j, "edge")
            return (j, "node")
    return None


def path_reference(prep: Prepared, rows: Sequence[int]) -> list[Tensor]:
    """The scrubbed output at reference ``rows`` by explicit path enumeration (see the module
    docstring); one batched evaluation of every copy (the datum of a path does not depend on
    the example), returned as a one-element list."""
    from faithlens.scrubbing.plan import Planner

    sym = prep.sampled.sym
    if len(sym.trees) != 1:
        raise InputError("path_reference handles one hypothesis, not a join")
    tree = sym.trees[0]
    g = prep.graph
    planner = Planner([tree], g, seq=None, n=None)  # only for the resolved routes
    for node in tree.nodes.values():
        if node.unimportant == "per_input":
            raise InputError("path_reference handles unimportant='per_node' or 'global' only")
    ids = prep.sampled.key_ids

    def owner_of(path: list[Edge], upto: int) -> tuple[TNode, int, str]:
        """The deepest node whose point the first ``upto`` edges of ``path`` reach."""
        cur = tree.root
        point = (0, "node")
        while True:
            nxt = None
            for c in cur.children:
                for r in planner.res[(0, c.id)]:
                    got = _match(r, path, point[0], point[1], g)
                    if got is not None and (got[0] < upto or (got[0] == upto and got[1] == "node")):
                        nxt = (c, got)
                        break
                if nxt:
                    break
            if nxt is None:
                return cur, point[0], point[1]
            cur, point = nxt

    def datum_of(path: list[Edge]) -> int:
        node, _, _ = owner_of(path, len(path) + 1)
        owners = (node.id,)
        if node.is_leaf:
            return prep.data.add(prep.sampled.vectors[owners], "ref")
        mode = node.unimportant
        key = (0, "*") if mode == "global" else (0, node.id)
        return ids[("other", key)]

    row = torch.as_tensor(list(rows), dtype=torch.long)
    ref_rows = prep.table.data.take(prep.ref[row.numpy()])
    pos = prep.behaviour.positions(ref_rows)
    below_cache: dict[str, list[list[Edge]]] = {}
    clean: dict[tuple[str, int], Tensor] = {}  # ordinary activations: computed once

    def value(prefix: list[Edge], node: str) -> Tensor:
        if node not in below_cache:
            below_cache[node] = _paths(g, node)
        data = {datum_of(prefix + p) for p in below_cache[node]}
        if len(data) == 1:
            d = data.pop()
            if (node, d) not in clean:
                clean[(node, d)] = _leaf_value(prep, node, d, row, pos)
            return clean[(node, d)]
        owner, _, _ = owner_of(prefix, len(prefix))
        run_datum = prep.data.add(prep.sampled.vectors[(owner.id,)], "ref")
        children: dict[tuple[str, str], Tensor | int] = {}
        n = g.node(node)
        for p in n.ports:
            for s in g.senders(node, p):
                e = (node, p, s)
                if p == PHI_PORT:
                    children[(p, s)] = datum_of([*prefix, e])
                else:
                    children[(p, s)] = value([*prefix, e], s)
        return _compute(prep, node, children, run_datum, row, pos)

    return [value([], g.output)]


def stack(values: Sequence[Tensor]) -> np.ndarray:
    return torch.cat([v.detach().float().cpu() for v in values], 0).numpy()


__all__ = ["naive_scrub", "path_reference", "stack"]
