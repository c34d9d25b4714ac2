"""A circuit as a causal-scrubbing hypothesis (:mod:`faithlens.scrubbing`): its edges important,
every other path resampled.

Causal scrubbing claims paths of the computational graph, relative to a parent's point, so a
circuit's edges map onto it directly: the root is the model's output (the logits); an edge
``u->logits`` becomes a child of the root on the route ``to(u, direct=True)`` (the direct path
through the residual stream only); an edge ``u->a{L}.h{H}<p>`` becomes a child of head ``L.H``'s
node on ``to(u, direct=True, port=p)``; an edge ``u->m{L}`` a child of MLP ``L``'s node on
``to(u, direct=True)``. Every node but the embedding's is *open* (``leaf=False``): its inputs
that are not circuit edges are resampled even when it has none in the circuit (a childless node
would otherwise be a leaf, every path below it seeing the reference). Every node uses the ``Exact`` sampler (the reference datum: an important
path sees the input being explained), so a path of the model sees the reference exactly when
every edge along it is in the circuit, from the input embedding to the logits; every other
input of a circuit node is an *unimportant input* and is resampled (a random row of the data,
one per node: ``unimportant="per_node"``), and so is everything that no node claims.

The hypothesis is a tree: a writer the circuit reaches through several readers gets one node per
path from the logits (what scrubbing's treeification would do with a shared node, written out,
since a shared node would carry one route for all its parents). Edges that lie on no path from
the logits through the circuit's edges claim nothing and are dropped (MIB prunes them too);
``circuit_hypothesis`` names the dropped edges in the hypothesis' name.

With grouped-query attention an edge into a key/value port ``a{L}.kv{G}<k>`` (one key per group
of query heads) is the same edge into the key port of every query head of group ``G``
(``a{L}.h{G*g}`` .. ``a{L}.h{G*g+g-1}``, ``g`` query heads per group, from the model:
``to_hypothesis(model=...)``): scrubbing's graph gives each query head its own key and value
port, and they all read the group's projection of the same input.

With ``unimportant="global"`` every unimportant input shares one random datum, and every node
is sampled with ``Exact`` (the reference): every copy of a treeified node then computes the same
value, so the tree is the circuit's DAG, and :func:`faithlens.circuits.scrub` evaluates it
without treeifying (no ``MAX_NODES`` limit), with the same numbers.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from ..errors import InputError
from ..scrubbing import Hypothesis, InterpNode, Sampler, to
from ..scrubbing.hypothesis import MODES

#: the most interpretation nodes (paths of the circuit from the logits) a hypothesis may have.
MAX_NODES = 20_000


def _component(writer: str) -> str:
    """The component graph's node name of a MIB writer name."""
    if writer == "input":
        return "embed"
    if writer.startswith("a") and ".h" in writer:
        layer, head = writer[1:].split(".h")
        return f"head.{int(layer)}.{int(head)}"
    if writer.startswith("m"):
        return f"mlp.{int(writer[1:])}"
    raise InputError(f"{writer!r} is not a writer name (input, a{{L}}.h{{H}}, m{{L}})")


def _readers(reader: str, group: int | None) -> list[tuple[str, str | None]]:
    """The (MIB writer name of the reader's node, its port) pairs a MIB reader port name stands
    for: one, or a key/value port of a group, one per query head of the group (``group`` query
    heads per key/value head)."""
    if reader == "logits":
        return [("logits", None)]
    if "<" in reader:
        node, port = reader[:-1].split("<")
        if ".kv" in node:
            if group is None:
                raise InputError(
                    f"edge into {reader!r}: a grouped key/value port stands for the key/value "
                    "port of every query head of its group; pass the model, "
                    "circuit.to_hypothesis(model=model), so that the number of query heads per "
                    "group is known"
                )
            layer, g = node[1:].split(".kv")
            return [(f"a{int(layer)}.h{int(g) * group + i}", port) for i in range(group)]
        return [(node, port)]
    return [(reader, None)]


def heads_per_group(model: Any) -> int:
    """The query heads per key/value head of ``model`` (a faithlens ``Model``; 1 without
    grouped-query attention)."""
    a = getattr(model, "adapter", None)
    if a is None or not getattr(a, "n_heads", 0):
        raise InputError(
            f"model must be a faithlens Model of a transformer (fl.load / fl.wrap), not "
            f"{type(model).__name__}"
        )
    kv = int(a.n_kv_heads or a.n_heads)
    return int(a.n_heads) // kv


def graph_edges(
    edges: Sequence[str], group: int | None = None, output: str = "logits"
) -> set[tuple[str, str | None, str]]:
    """The circuit's edges as (reader node, reader port, writer node) of scrubbing's component
    graph (``head.L.H``, ``mlp.L``, ``embed``; ``output`` for the logits; port None for an MLP
    or the logits, whose only port is their input); a key/value port of a group is one edge
    per query head of the group (``group`` query heads per key/value head)."""
    out: set[tuple[str, str | None, str]] = set()
    for e in edges:
        writer, reader = _split(e)
        sender = _component(writer)
        for node, port in _readers(reader, group):
            out.add((output if node == "logits" else _component(node), port, sender))
    return out


def _split(e: str) -> tuple[str, str]:
    writer, sep, reader = e.partition("->")
    if not sep:
        raise InputError(f"{e!r} is not an edge name (writer->reader, e.g. 'a0.h1->logits')")
    if "@" in reader:
        raise InputError(
            f"{e!r} is a per-position edge (positions='each'): a scrubbing hypothesis "
            "routes whole activations; score the edges with positions='all' for it"
        )
    return writer, reader


def _into(edges: Sequence[str], group: int | None) -> dict[str, list[tuple[str, str | None]]]:
    """The circuit's edges by reader node: (writer, port) of each, key/value groups expanded."""
    into: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
    for e in edges:
        writer, reader = _split(e)
        _component(writer)  # a bad writer name raises here
        for node, port in _readers(reader, group):
            into[node].append((writer, port))
    return into


def tree_size(edges: Sequence[str], group: int | None = None) -> int:
    """The number of nodes of the circuit's hypothesis tree (below its root): one per path from
    the logits through the circuit's edges, counted without building the tree (``group`` as
    :func:`circuit_hypothesis`)."""
    into = _into(edges, group)
    memo: dict[str, int] = {}
    active: set[str] = set()

    def below(node: str) -> int:  # tree nodes under one copy of ``node``
        if node in memo:
            return memo[node]
        if node in active:
            raise InputError(f"the circuit's edges make a cycle through {node!r}")
        active.add(node)
        total = sum(1 + (0 if w == "input" else below(w)) for w, _ in into.get(node, []))
        active.discard(node)
        memo[node] = total
        return total

    return below("logits")


def circuit_hypothesis(
    edges: Sequence[str],
    name: str = "circuit",
    *,
    group: int | None = None,
    unimportant: str = "per_node",
    other: Sampler | str | None = None,
) -> Hypothesis:
    """The causal-scrubbing hypothesis of a circuit given by its edge names (module
    docstring). ``group``: query heads per key/value head (needed for edges into grouped
    key/value ports); ``unimportant``: how the unimportant inputs are sampled (scrubbing's
    modes: ``"per_node"``, ``"per_input"`` or ``"global"``); ``other``: the sampler of the
    unimportant inputs' data (default ``Random()``; e.g. ``SameFeature(field("positions"))``
    draws prompts whose answer is read at the reference's position), conditioned on the
    reference, which every node sees: given to every node, or in the ``"global"`` mode to the
    root, whose one datum every node shares."""
    if unimportant not in MODES:
        raise InputError(
            f"unimportant must be one of {MODES}, not {unimportant!r}: 'per_node' (a datum per "
            "node), 'per_input' (one per input edge) or 'global' (one for the whole circuit)"
        )
    if group is not None and (not isinstance(group, int) or group < 1):
        raise InputError(f"group must be a positive number of query heads, not {group!r}")
    into = _into(edges, group)
    size = tree_size(edges, group)
    if size > MAX_NODES:
        raise InputError(
            f"the circuit has {size:,} paths from the logits, more than {MAX_NODES:,}: its "
            "hypothesis tree (a node per path) would be too large; score it with "
            "fl.circuits.scrub(model, data, circuit) (unimportant='global', evaluated as one "
            "DAG without a tree), or choose a smaller circuit"
        )
    used: set[tuple[str, str, str | None]] = set()
    h = Hypothesis(name, unimportant=unimportant, other=other)
    per_node = {} if other is None or unimportant == "global" else {"other": other}
    h.root.leaf = False  # an empty circuit claims nothing: everything is resampled

    def grow(parent: Hypothesis | InterpNode, node: str, path: str) -> None:
        for writer, port in into.get(node, []):
            used.add((writer, node, port))
            label = f"{path}/{writer}" if port is None else f"{path}/{writer}<{port}>"
            child = parent.add(
                label.replace("/", "<-"),
                to(_component(writer), direct=True, port=port),
                leaf=None if writer == "input" else False,
                **({} if writer == "input" else per_node),
            )
            if writer != "input":
                grow(child, writer, label)

    grow(h, "logits", "logits")
    dropped = [
        e
        for e in edges
        if not any((_split(e)[0], *r) in used for r in _readers(_split(e)[1], group))
    ]
    if dropped:
        h.name = f"{name} ({len(dropped)} edges on no path to the logits dropped)"
    return h


__all__ = ["MAX_NODES", "circuit_hypothesis", "graph_edges", "heads_per_group", "tree_size"]
