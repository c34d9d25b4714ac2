"""The edge graph of a transformer: every writer's direct edge into every reader port.

A **writer** adds its output to the residual stream: the embedding (``input``), each attention
head (``a{L}.h{H}``) and each MLP (``m{L}``). A **reader** port reads the residual stream: each
head's query, key and value inputs (``a{L}.h{H}<q>``), each MLP's input (``m{L}``) and the
unembedding (``logits``, the final residual). An edge ``u->v`` connects a writer to a reader
port that reads it, as the component graph (:class:`~faithlens.graph.TransformerGraph`) says:
every writer before the reader in the forward pass, except that in a parallel-block model
(GPT-NeoX) a layer's MLP does not read that layer's heads.

Names follow MIB's / EAP-IG's scheme (``"input->a0.h1<v>"``, ``"a0.h1->m1"``,
``"m1->logits"``), so scores can be exported. With grouped-query attention the key and value
inputs belong to the key/value head ``G`` that a group of query heads shares (the site
``k.L.G``: the layout computes one key per group, so one query head's key cannot be patched
alone); their ports are named ``a{L}.kv{G}<k>`` and ``a{L}.kv{G}<v>``. Without grouping
(``n_kv_heads == n_heads``) they are the usual ``a{L}.h{H}<k>``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import InputError
from ..graph import TransformerGraph
from ..models.model import Model

#: A head's input ports, in the order readers are listed.
HEAD_PORTS = ("q", "k", "v")


@dataclass(frozen=True)
class Writer:
    """A component that writes into the residual stream.

    ``name`` is MIB's (``input``, ``a1.h2``, ``m0``), ``node`` the component graph's
    (``embed``, ``head.1.2``, ``mlp.0``), ``site`` the site its output is read from
    (``resid_pre.0``, ``head.1.2``, ``mlp_out.0``).
    """

    name: str
    node: str
    kind: str
    site: str
    layer: int | None = None
    head: int | None = None


@dataclass(frozen=True)
class Reader:
    """A port that reads the residual stream.

    ``name`` is MIB's (``a1.h2<q>``, ``a1.kv0<k>``, ``m1``, ``logits``); ``node`` and ``port``
    the component graph's (``head.1.2`` / ``q``, ``mlp.1`` / ``in``, ``logits`` / ``in``);
    ``site`` the site that holds what the port computes from its input (``q.1.2``, ``k.1.0``,
    ``mlp_in.1``; ``None`` for the logits); ``residual`` the site of the (pre-norm) residual it
    reads on an unpatched run; ``head`` the query head of a ``q`` port and, with grouped-query
    attention, the key/value head of a ``k`` / ``v`` port.
    """

    name: str
    node: str
    port: str
    kind: str
    site: str | None
    residual: str
    layer: int | None = None
    head: int | None = None


@dataclass(frozen=True)
class Edge:
    """A writer's direct edge into a reader port: ``name`` is ``"{writer}->{reader}"``."""

    writer: Writer
    reader: Reader

    @property
    def name(self) -> str:
        return f"{self.writer.name}->{self.reader.name}"


def split_position(name: str) -> tuple[str, int | None]:
    """A circuit member's whole edge and token position: ``"a0.h1->m1@3"`` (a per-position edge,
    ``positions="each"``) is ``("a0.h1->m1", 3)``, a whole edge ``("a0.h1->m1", None)``."""
    edge, at, pos = name.rpartition("@")
    if not at:
        return name, None
    if not pos.isdigit():
        raise InputError(
            f"{name!r}: a per-position edge is named 'writer->reader@position' with a 0-based "
            "token position, e.g. 'a0.h1->m1@3'"
        )
    return edge, int(pos)


def writer_name(node: str) -> str:
    """MIB's name of a component-graph writer node (``head.1.2`` -> ``a1.h2``)."""
    kind, _, rest = node.partition(".")
    if node == "embed":
        return "input"
    if kind == "head":
        L, H = rest.split(".")
        return f"a{L}.h{H}"
    if kind == "mlp":
        return f"m{rest}"
    raise InputError(f"{node!r} is not a writer (the embedding, a head or an MLP)")


class EdgeGraph:
    """Every edge from a writer to a reader port of ``model`` (see the module docstring).

    Args:
        model: a faithlens model whose residual stream is a sum of component outputs (pre-LN
            transformers: GPT-2, Llama, GPT-NeoX, the zoo; see
            :class:`~faithlens.graph.TransformerGraph`, which raises for others).
        graph: the model's component graph, if already built (with ``split_heads`` and
            ``split_qkv``).

    ``writers``, ``readers`` and ``edges`` are in forward order (edges grouped by reader);
    ``edge(name)`` and ``index(name)`` look an edge up by name; ``into(reader)`` lists the
    edges into a reader port.
    """

    def __init__(self, model: Model, graph: TransformerGraph | None = None) -> None:
        g = graph if graph is not None else TransformerGraph(model)
        if not (g.split_heads and g.split_qkv):
            raise InputError(
                "EdgeGraph needs a component graph with one node per head and separate q/k/v "
                "ports: build TransformerGraph(model) with split_heads=True, split_qkv=True"
            )
        self.model = model
        self.graph = g
        self.n_layers, self.n_heads, self.n_kv = g.n_layers, g.n_heads, g.n_kv
        self.grouped = self.n_kv != self.n_heads
        self.writers: list[Writer] = []
        for name in g.topo():
            node = g.node(name)
            if node.kind in ("input", "head", "mlp"):
                self.writers.append(
                    Writer(
                        writer_name(name),
                        name,
                        node.kind,
                        g.value_site(node),
                        node.layer,
                        node.head,
                    )
                )
        self._writer = {w.node: w for w in self.writers}
        self.readers = self._readers()
        self.edges: list[Edge] = []
        self._into: dict[str, list[Edge]] = {}
        for r in self.readers:
            senders = g.senders(r.node, r.port)
            into = [Edge(self._writer[s], r) for s in senders if s in self._writer]
            self._into[r.name] = into
            self.edges.extend(into)
        self._index = {e.name: i for i, e in enumerate(self.edges)}
        self._reader = {r.name: r for r in self.readers}

    def _readers(self) -> list[Reader]:
        g = self.graph
        out: list[Reader] = []
        group = self.n_heads // self.n_kv
        for L in range(self.n_layers):
            resid = f"resid_pre.{L}"
            for p in HEAD_PORTS:
                count = self.n_heads if (p == "q" or not self.grouped) else self.n_kv
                for i in range(count):
                    # a key/value port of a group is read through its first query head's node
                    head = i if (p == "q" or not self.grouped) else i * group
                    label = f"a{L}.h{i}" if (p == "q" or not self.grouped) else f"a{L}.kv{i}"
                    out.append(
                        Reader(
                            f"{label}<{p}>",
                            f"head.{L}.{head}",
                            p,
                            "head",
                            f"{p}.{L}.{i}",
                            resid,
                            L,
                            i,
                        )
                    )
            if g.has_mlp:
                node = f"mlp.{L}"
                out.append(
                    Reader(f"m{L}", node, "in", "mlp", f"mlp_in.{L}", g.port_site(g.node(node)), L)
                )
        out.append(Reader("logits", "logits", "in", "logits", None, g.port_site(g.node("logits"))))
        return out

    # -- queries -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.edges)

    def __iter__(self) -> Iterator[Edge]:
        return iter(self.edges)

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.edges]

    def index(self, name: str) -> int:
        """The position of edge ``name`` in ``edges``."""
        if name not in self._index:
            near = [n for n in self._index if n.split("->")[0] == name.split("->")[0]][:5]
            raise InputError(
                f"{name!r} is not an edge of {self.model.name}; edges are named "
                f"'writer->reader' as in MIB, e.g. {near or self.names[:3]}"
            )
        return self._index[name]

    def edge(self, name: str) -> Edge:
        return self.edges[self.index(name)]

    def reader(self, name: str) -> Reader:
        if name not in self._reader:
            raise InputError(
                f"{name!r} is not a reader port of {self.model.name}; e.g. "
                f"{[r.name for r in self.readers[:4]]}"
            )
        return self._reader[name]

    def into(self, reader: str | Reader) -> list[Edge]:
        """The edges into a reader port, in forward order of their writers."""
        name = reader.name if isinstance(reader, Reader) else reader
        self.reader(name)
        return list(self._into[name])

    def describe(self) -> str:
        kinds: dict[str, int] = {}
        for r in self.readers:
            kinds[r.kind] = kinds.get(r.kind, 0) + len(self._into[r.name])
        parts = ", ".join(f"{v} into {k} ports" for k, v in kinds.items())
        return (
            f"EdgeGraph of {self.model.name}: {len(self.writers)} writers, {len(self.readers)} "
            f"reader ports, {len(self.edges)} edges ({parts})"
        )


__all__ = [
    "HEAD_PORTS",
    "Edge",
    "EdgeGraph",
    "Reader",
    "Writer",
    "split_position",
    "writer_name",
]
