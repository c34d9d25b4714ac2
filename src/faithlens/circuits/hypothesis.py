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
``circuit_hypothesis`` names the dropped edges in the hypothesis' name. Ports of grouped-query
key/value heads (``a{L}.kv{G}<k>``) are refused: scrubbing's graph has a port per query head.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from ..errors import InputError
from ..scrubbing import Hypothesis, InterpNode, to

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


def _reader(reader: str) -> tuple[str, str | None]:
    """(the MIB writer name of the reader's node, its port) for a MIB reader port name."""
    if reader == "logits":
        return "logits", None
    if "<" in reader:
        node, port = reader[:-1].split("<")
        if ".kv" in node:
            raise InputError(
                f"edge into {reader!r}: a grouped key/value port cannot be expressed as a "
                "causal-scrubbing path (scrubbing's graph has a key and value port per query "
                "head); score a model without grouped-query attention, or leave these edges out"
            )
        return node, port
    return reader, None


def circuit_hypothesis(edges: Sequence[str], name: str = "circuit") -> Hypothesis:
    """The causal-scrubbing hypothesis of a circuit given by its edge names (module
    docstring)."""
    into: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
    for e in edges:
        writer, sep, reader = e.partition("->")
        if not sep:
            raise InputError(f"{e!r} is not an edge name (writer->reader, e.g. 'a0.h1->logits')")
        if "@" in reader:
            raise InputError(
                f"{e!r} is a per-position edge (positions='each'): a scrubbing hypothesis "
                "routes whole activations; score the edges with positions='all' for it"
            )
        node, port = _reader(reader)
        _component(writer)  # a bad writer name raises here
        into[node].append((writer, port))
    used: set[tuple[str, str, str | None]] = set()
    count = 0
    h = Hypothesis(name)
    h.root.leaf = False  # an empty circuit claims nothing: everything is resampled

    def grow(parent: Hypothesis | InterpNode, node: str, path: str) -> None:
        nonlocal count
        for writer, port in into.get(node, []):
            count += 1
            if count > MAX_NODES:
                raise InputError(
                    f"the circuit has more than {MAX_NODES} paths from the logits; its "
                    "hypothesis tree would be too large: choose a smaller circuit"
                )
            used.add((writer, node, port))
            label = f"{path}/{writer}" if port is None else f"{path}/{writer}<{port}>"
            child = parent.add(
                label.replace("/", "<-"),
                to(_component(writer), direct=True, port=port),
                leaf=None if writer == "input" else False,
            )
            if writer != "input":
                grow(child, writer, label)

    grow(h, "logits", "logits")
    dropped = [
        e for e in edges if (e.partition("->")[0], *_reader(e.partition("->")[2])) not in used
    ]
    if dropped:
        h.name = f"{name} ({len(dropped)} edges on no path to the logits dropped)"
    return h


__all__ = ["MAX_NODES", "circuit_hypothesis"]
