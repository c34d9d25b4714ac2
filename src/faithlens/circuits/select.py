"""Connected circuits: pruning the edges on no path from the input to the logits, and the greedy
selection that grows a circuit from the logits backwards (as EAP-IG's and MIB's code do).

Both work on edge names alone (MIB's ``writer->reader``), whole or per position
(``writer->reader@p``: connectivity is then that of the components, not of positions: an edge at
any position links its writer to its reader's component). A reader port feeds the component it
belongs to: ``a{L}.h{H}<q|k|v>`` the head ``a{L}.h{H}``, a grouped key/value port
``a{L}.kv{G}<k|v>`` every query head of group ``G``, ``m{L}`` the MLP ``m{L}``; ``logits`` is
the output. An edge lies on a path from the input to the logits when its writer is reached
from ``input`` through circuit edges and a component it feeds reaches the logits through
circuit edges.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import numpy as np


def _heads_per_group(all_edges: Sequence[str]) -> int:
    """Query heads per key/value group, from the port names of a whole edge graph."""
    readers = {e.partition("->")[2].partition("@")[0] for e in all_edges}
    q = sum(r.endswith("<q>") for r in readers)
    kv = sum(".kv" in r and r.endswith("<k>") for r in readers)
    return q // kv if kv else 1


def fed(reader: str, group: int) -> list[str]:
    """The writers a reader port feeds (``["logits"]`` for the output); a per-position port
    (``"m1@3"``) feeds what its port feeds."""
    reader = reader.partition("@")[0]
    if reader == "logits":
        return ["logits"]
    if "<" not in reader:
        return [reader]
    node = reader.split("<")[0]
    if ".kv" in node:
        layer, g = node[1:].split(".kv")
        return [f"a{layer}.h{h}" for h in range(int(g) * group, (int(g) + 1) * group)]
    return [node]


def connected(edges: Sequence[str], all_edges: Sequence[str]) -> list[str]:
    """The edges of ``edges`` on a path from the input to the logits through ``edges`` (in
    their given order); ``all_edges`` is the whole edge graph (for the key/value groups)."""
    group = _heads_per_group(all_edges)
    pairs = [(e, e.partition("->")[0], fed(e.partition("->")[2], group)) for e in edges]
    reached = {"input"}
    changed = True
    while changed:
        changed = False
        for _, w, to in pairs:
            if w in reached:
                new = [t for t in to if t not in reached]
                if new:
                    reached.update(new)
                    changed = True
    useful = {"logits"}
    changed = True
    while changed:
        changed = False
        for _, w, to in pairs:
            if w not in useful and any(t in useful for t in to):
                useful.add(w)
                changed = True
    return [e for e, w, to in pairs if w in reached and any(t in useful for t in to)]


def greedy(names: Sequence[str], key: np.ndarray, k: int) -> list[int]:
    """Indices of ``k`` edges chosen greedily from the logits backwards: start with the
    output; repeatedly add the edge with the largest ``key`` among the edges into a component
    already in the circuit (the logits first), and add its writer (ties: the earlier edge).

    A heap of the candidate edges (keyed by ``(-key, index)``) grows as components enter the
    circuit: each edge is pushed once, when the first component it feeds enters, so the
    selection takes ``O(E log E)`` rather than a scan of every edge per step. ``key`` must
    not hold NaN (map it to ``-inf``)."""
    group = _heads_per_group(names)
    into: dict[str, list[int]] = {}
    for i, e in enumerate(names):
        for t in fed(e.partition("->")[2], group):
            into.setdefault(t, []).append(i)
    writers = [e.partition("->")[0] for e in names]
    values = np.asarray(key, dtype=float).tolist()
    inside: set[str] = set()
    pushed = np.zeros(len(names), dtype=bool)
    heap: list[tuple[float, int]] = []

    def enter(component: str) -> None:
        if component in inside:
            return
        inside.add(component)
        for i in into.get(component, ()):
            if not pushed[i]:
                pushed[i] = True
                heapq.heappush(heap, (-values[i], i))

    enter("logits")
    chosen: list[int] = []
    while len(chosen) < k and heap:
        _, best = heapq.heappop(heap)
        chosen.append(best)
        enter(writers[best])
    return sorted(chosen)


__all__ = ["connected", "fed", "greedy"]
