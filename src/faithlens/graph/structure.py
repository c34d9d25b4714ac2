"""The base component graph: a model as a DAG of components with typed input ports.

:class:`ComponentGraph` holds the nodes and edges (which senders each port of each node reads),
answers queries about them, and rewrites a node into parts (:meth:`ComponentGraph.split`). The
subclasses build the structure of one kind of model (:mod:`.transformer`, :mod:`.layers`) and
evaluate treeified plans of it (:mod:`.evaluate`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..errors import InputError, SiteError, nearest
from ..models.model import Model
from .evaluate import DataFeed, EvalStats, Plan, Uniform
from .nodes import PHI_PORT, GraphNode, LinearPart, Part, PhiPart, ResidualPart


class ComponentGraph:
    """A model as a DAG of components with typed input ports.

    This class holds the structure, its queries (``node``, ``senders``, ``receivers``,
    ``ancestors``, ``reaches``, ``topo``) and rewrites (:meth:`split`). Subclasses
    (:class:`~faithlens.graph.TransformerGraph`, :class:`~faithlens.graph.LayerGraph`) build the
    structure and evaluate plans (:meth:`evaluate`, whose work lives in
    :mod:`faithlens.graph.evaluate_transformer` and :mod:`faithlens.graph.evaluate_layers`).
    """

    kind = "graph"

    def __init__(self, model: Model) -> None:
        self.model = model
        self._nodes: dict[str, GraphNode] = {}
        self._senders: dict[tuple[str, str], tuple[str, ...]] = {}
        self._receivers: dict[str, list[tuple[str, str]]] | None = None
        self._ancestors: dict[str, frozenset[str]] = {}
        self.inputs: tuple[str, ...] = ()
        self.output: str = ""
        self.positions = False  # whether activations have a position axis (axis 1)
        self.rewrites: tuple[str, ...] = ()

    # -- structure -----------------------------------------------------------------------------
    def _add(self, node: GraphNode, senders: Mapping[str, Sequence[str]]) -> None:
        self._nodes[node.name] = node
        for port in node.ports:
            self._senders[(node.name, port)] = tuple(senders.get(port, ()))

    @property
    def nodes(self) -> dict[str, GraphNode]:
        return self._nodes

    def node(self, name: str) -> GraphNode:
        n = self._nodes.get(name)
        if n is None:
            parts = [k for k, v in self._nodes.items() if v.base == name]
            if parts:
                raise SiteError(
                    f"node {name!r} was split by a rewrite into {parts}; name one of its parts"
                )
            raise SiteError(
                f"no node {name!r} in this {self.kind} graph. Nearest: "
                f"{nearest(name, self._nodes)}. Graph.nodes lists them all."
            )
        return n

    def expand(self, name: str) -> tuple[str, ...]:
        """A node name, or the parts a rewrite split it into (for 'through' / 'excluding')."""
        if name in self._nodes:
            return (name,)
        parts = tuple(k for k, v in self._nodes.items() if v.base == name)
        if parts:
            return parts
        self.node(name)  # raises with the nearest names
        return ()

    def ports(self, name: str) -> tuple[str, ...]:
        return self.node(name).ports

    def senders(self, name: str, port: str) -> tuple[str, ...]:
        return self._senders[(name, port)]

    def receivers(self, name: str) -> list[tuple[str, str]]:
        if self._receivers is None:
            rec: dict[str, list[tuple[str, str]]] = defaultdict(list)
            for (r, p), ss in self._senders.items():
                for s in ss:
                    rec[s].append((r, p))
            self._receivers = dict(rec)
        return self._receivers.get(name, [])

    def ancestors(self, name: str) -> frozenset[str]:
        """Every node upstream of ``name`` (its senders, their senders, ...)."""
        got = self._ancestors.get(name)
        if got is not None:
            return got
        out: set[str] = set()
        for p in self.node(name).ports:
            for s in self.senders(name, p):
                out.add(s)
                out |= self.ancestors(s)
        res = frozenset(out)
        self._ancestors[name] = res
        return res

    def reaches(self, src: str, target: str, avoid: frozenset[str] = frozenset()) -> bool:
        """Is there a path src <- ... <- target that visits no node of ``avoid`` in between?"""
        if src == target:
            return True
        if target not in self.ancestors(src):
            return False
        if not avoid:
            return True
        seen: set[str] = set()
        stack = [src]
        while stack:
            cur = stack.pop()
            for p in self.node(cur).ports:
                for s in self.senders(cur, p):
                    if s == target:
                        return True
                    if s in avoid or s in seen or target not in self.ancestors(s):
                        continue
                    seen.add(s)
                    stack.append(s)
        return False

    def topo(self) -> list[str]:
        return sorted(self._nodes, key=lambda n: (self._nodes[n].order, n))

    def describe(self) -> str:
        lines = [
            f"{self.kind} graph: {len(self._nodes)} nodes, inputs {list(self.inputs)}, "
            f"output {self.output!r}"
        ]
        if self.rewrites:
            lines.append("rewrites: " + "; ".join(self.rewrites))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.describe().splitlines()[0]

    # -- rewrites ------------------------------------------------------------------------------
    def _clone(self) -> ComponentGraph:
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new._nodes = dict(self._nodes)
        new._senders = dict(self._senders)
        new._receivers = None
        new._ancestors = {}
        return new

    def split(self, name: str, parts: Mapping[str, Part], *, note: str = "") -> ComponentGraph:
        """A new graph in which node ``name`` is replaced by ``name/<part>`` for each part: every
        receiver reads the parts instead of the node. The parts must sum to the node; check that
        with :meth:`check_split` (the scrubbing rewrites do it before use)."""
        node = self.node(name)
        if node.is_input or node.is_output:
            raise InputError(f"cannot split the {node.kind} node {name!r}; split a component")
        if node.base is not None:
            raise InputError(f"{name!r} is already a part of {node.base!r}; split the base node")
        if not parts:
            raise InputError(f"split of {name!r}: give at least one part")
        new = self._clone()
        del new._nodes[name]
        own = {p: self.senders(name, p) for p in node.ports}
        for p in node.ports:
            del new._senders[(name, p)]
        names = []
        for label, part in parts.items():
            pname = f"{name}/{label}"
            if pname in self._nodes:
                raise InputError(f"node {pname!r} already exists")
            names.append(pname)
            if isinstance(part, PhiPart):
                ports: tuple[str, ...] = (PHI_PORT,)
                senders: Mapping[str, Sequence[str]] = {PHI_PORT: self.inputs}
            elif isinstance(part, ResidualPart):
                ports = (*node.ports, PHI_PORT)
                senders = {**own, PHI_PORT: self.inputs}
            elif isinstance(part, LinearPart):
                ports, senders = node.ports, own
            else:
                raise InputError(f"unknown part type {type(part).__name__}")
            new._add(
                GraphNode(pname, node.kind, ports, node.order, node.layer, node.head, name, part),
                senders,
            )
        for key, ss in list(new._senders.items()):
            if name in ss:
                out: list[str] = []
                for s in ss:
                    out.extend(names if s == name else [s])
                new._senders[key] = tuple(out)
        desc = f"{name} = " + " + ".join(
            f"{n}[{p.describe()}]" for n, p in zip(names, parts.values())
        )
        new.rewrites = (*self.rewrites, note or desc)
        return new

    def parts_of(self, name: str) -> list[str]:
        return [k for k, v in self._nodes.items() if v.base == name]

    # -- evaluation (subclasses) ---------------------------------------------------------------
    def model_inputs(self, fields: Mapping[str, Tensor]) -> Any:
        raise NotImplementedError

    def input_fields(self) -> tuple[str, ...]:
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(
        self,
        plan: Plan,
        feed: DataFeed,
        rows: Tensor,
        *,
        out_positions: Tensor | None = None,
        stats: EvalStats | None = None,
    ) -> list[Tensor]:
        """The outputs (one per root) of the treeified model described by ``plan`` at
        reference rows ``rows``."""
        raise NotImplementedError

    @torch.no_grad()
    def compute(
        self,
        node: str,
        port_inputs: Mapping[str, Tensor],
        base_fields: Mapping[str, Tensor],
        *,
        out_positions: Tensor | None = None,
    ) -> Tensor:
        """One node evaluated on explicit port inputs (the slow path; for references and checks).

        For a transformer, ``port_inputs`` maps each port to its residual-stream input; for a
        layer graph, each *sender* name to its value. ``base_fields`` are the model inputs the
        run uses for everything else (attention masks, unpatched inputs)."""
        raise NotImplementedError

    @torch.no_grad()
    def uniform_values(
        self,
        refs: Sequence[Uniform],
        feed: DataFeed,
        rows: Tensor,
        out_positions: Tensor | None = None,
    ) -> list[Tensor]:
        """Values of uniform copies (ordinary activations on one datum, or their parts)."""
        raise NotImplementedError

    @torch.no_grad()
    def node_value(
        self,
        node: str,
        datum_fields: Mapping[str, Tensor],
        phi_rows: Any = None,
        out_positions: Tensor | None = None,
    ) -> Tensor:
        """A node's value on one datum's model inputs (slow path, for references and checks)."""
        raise NotImplementedError


__all__ = ["ComponentGraph"]
