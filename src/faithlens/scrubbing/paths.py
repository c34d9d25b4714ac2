"""Correspondences as typed path sets.

An interpretation node corresponds to a set of paths in the model's component graph: the paths
from its parent's point down to a *point* of the graph, which is either a node (all paths that
reach that node; the node's output) or a node's input (the paths entering that node through one
port, at some positions). Routes are relative to the parent, so a child's paths always extend
its parent's.

Build routes with :func:`to` and :func:`input_of`::

    to("head.1.0", direct=True)                 # head 1.0 straight into the parent's node
    to("embed", excluding=["head.0.0"])         # the embeddings, not through head 0.0
    to("embed", port="v", direct=True)          # the V input of the parent head, from embeddings
    to("head.0.0", positions=[1])               # head 0.0, read by the parent at position 1
    input_of(positions=[1])                     # the parent's own input at position 1
    to("head.2.0").input(port="q")              # the Q input of head 2.0
    to("head.1.0") | to("head.2.0")             # a union: both heads, sampled together

``port`` and ``positions`` restrict the *first* edge (the one entering the parent's point);
``through`` and ``excluding`` restrict the intermediate nodes; ``direct`` forbids any.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from ..errors import InputError, SiteError
from ..graph import ComponentGraph, PositionSet


@dataclass(frozen=True, eq=False)
class Route:
    """Paths from the parent's point down to a target point (see the module docstring)."""

    target: str | None
    port: str | None = None
    positions: Any = None
    direct: bool = False
    through: tuple[str, ...] = ()
    excluding: tuple[str, ...] = ()
    at_input: bool = False
    end_port: str | None = None
    end_positions: Any = None

    def input(self, port: str | None = None, positions: Any = None) -> Route:
        """The same paths, ending at the target's input (through ``port``, at ``positions``)
        instead of its output: the node's children then choose among its input edges."""
        if self.at_input:
            raise InputError(f"{self.describe()} already ends at an input")
        return replace(self, at_input=True, end_port=port, end_positions=positions)

    def __or__(self, other: Route | Paths) -> Paths:
        return Paths((self,)) | other

    def describe(self) -> str:
        bits = []
        if self.port is not None:
            bits.append(f"port={self.port}")
        if self.positions is not None:
            bits.append(f"positions={_pos_label(self.positions)}")
        if self.direct:
            bits.append("direct")
        if self.through:
            bits.append(f"through={list(self.through)}")
        if self.excluding:
            bits.append(f"excluding={list(self.excluding)}")
        head = f"to({self.target!r}" if self.target is not None else "input_of("
        if self.target is None:
            end = []
            if self.end_port is not None:
                end.append(f"port={self.end_port}")
            if self.end_positions is not None:
                end.append(f"positions={_pos_label(self.end_positions)}")
            return head + ", ".join(bits + end) + ")"
        out = head + "".join(", " + b for b in bits) + ")"
        if self.at_input:
            end = []
            if self.end_port is not None:
                end.append(f"port={self.end_port}")
            if self.end_positions is not None:
                end.append(f"positions={_pos_label(self.end_positions)}")
            out += f".input({', '.join(end)})"
        return out

    def __repr__(self) -> str:
        return self.describe()


@dataclass(frozen=True, eq=False)
class Paths:
    """A union of routes (an interpretation node may claim several points together)."""

    routes: tuple[Route, ...]

    def __or__(self, other: Route | Paths) -> Paths:
        more = (other,) if isinstance(other, Route) else other.routes
        return Paths(self.routes + more)

    def describe(self) -> str:
        return " | ".join(r.describe() for r in self.routes)

    def __repr__(self) -> str:
        return self.describe()


def _pos_label(p: Any) -> str:
    if isinstance(p, torch.Tensor):
        return f"per-example{tuple(p.shape)}"
    if isinstance(p, PositionSet):
        return p.label
    return repr(p)


def to(
    target: str,
    *,
    port: str | None = None,
    positions: Any = None,
    direct: bool = False,
    through: Iterable[str] | str = (),
    excluding: Iterable[str] | str = (),
) -> Route:
    """The paths from the parent's point to ``target`` (a node name of the component graph).

    Args:
        port: only paths that enter the parent's node through this port (``"q"``, ``"k"``,
            ``"v"`` for heads).
        positions: only the parent's input at these positions: an int, a list, a tensor of
            per-reference-example positions, or the name of a data column holding one position
            per example (read on the reference examples).
        direct: only the direct edge (no intermediate node).
        through: every path must visit all of these nodes.
        excluding: no path may visit any of these nodes.
    """
    if not isinstance(target, str) or not target:
        raise InputError(f"to(): the target must be a node name, not {target!r}")
    thr = (through,) if isinstance(through, str) else tuple(through)
    exc = (excluding,) if isinstance(excluding, str) else tuple(excluding)
    if direct and (thr or exc):
        raise InputError("to(): a direct route has no intermediate nodes to require or exclude")
    return Route(target, port, positions, direct, thr, exc)


def input_of(node: str | None = None, *, port: str | None = None, positions: Any = None) -> Route:
    """A node's input (by default the parent's own node) through ``port`` at ``positions``."""
    if node is None:
        if port is None and positions is None:
            raise InputError(
                "input_of() without a port or positions is the parent's own point; give a port "
                "or positions (or name an upstream node)"
            )
        return Route(None, at_input=True, end_port=port, end_positions=positions)
    return to(node).input(port=port, positions=positions)


def as_paths(spec: Route | Paths | str | Sequence[Route] | None, where: str) -> tuple[Route, ...]:
    if spec is None:
        raise InputError(f"{where}: give the paths this node corresponds to (paths=to(...))")
    if isinstance(spec, str):
        return (to(spec),)
    if isinstance(spec, Route):
        return (spec,)
    if isinstance(spec, Paths):
        return spec.routes
    if isinstance(spec, Sequence) and all(isinstance(r, Route) for r in spec):
        return tuple(r for r in spec if isinstance(r, Route))
    raise InputError(f"{where}: paths must be to(...), input_of(...) or a union of them")


@dataclass(frozen=True, eq=False)
class Resolved:
    """A route checked against a graph, with positions normalised."""

    route: Route
    target: str | None
    port: str | None
    positions: PositionSet | None
    direct: bool
    through: frozenset[str]
    excluding: frozenset[str]
    at_input: bool
    end_port: str | None
    end_positions: PositionSet | None

    def describe(self) -> str:
        return self.route.describe()


def _norm_positions(
    p: Any,
    graph: ComponentGraph,
    seq: int | None,
    n: int | None,
    where: str,
    columns: Callable[[str], Any] | None = None,
) -> PositionSet | None:
    if p is None:
        return None
    if isinstance(p, str):
        if columns is None:
            raise InputError(
                f"{where}: positions={p!r} names a data column; none is available here"
            )
        try:
            col = columns(p)
        except Exception as e:
            raise InputError(f"{where}: positions={p!r}: {e}") from None
        p = torch.as_tensor(col).long()
    if not graph.positions:
        raise InputError(
            f"{where}: this {graph.kind} graph has no position axis; position-restricted paths "
            "need [batch, position, width] activations (LayerGraph(..., positions=True))"
        )
    ps = PositionSet.of(p)
    if seq is None:
        return ps
    ps.check(seq, n, where)
    if ps.static is not None:
        vals = tuple(sorted({v % seq for v in ps.static}))
        return PositionSet(static=vals, label=",".join(map(str, vals)))
    return ps


def resolve(
    route: Route,
    graph: ComponentGraph,
    seq: int | None,
    n: int | None,
    where: str,
    columns: Callable[[str], Any] | None = None,
) -> Resolved:
    """Check a route's names against the graph and normalise its positions."""
    target = None
    if route.target is not None:
        try:
            node = graph.node(route.target)
        except SiteError as e:
            raise SiteError(f"{where}: {e}") from None
        target = node.name
        if node.is_output:
            raise InputError(f"{where}: the output is the root's point; a child cannot target it")
        if route.at_input and node.is_input:
            raise InputError(f"{where}: the input node {target!r} has no input of its own")
        if route.at_input and route.end_port is not None and route.end_port not in node.ports:
            raise InputError(
                f"{where}: {target!r} has no port {route.end_port!r}; its ports are {list(node.ports)}"
            )

    def names(xs: Sequence[str]) -> frozenset[str]:
        out: set[str] = set()
        for x in xs:
            try:
                out.update(graph.expand(x))
            except SiteError as e:
                raise SiteError(f"{where}: {e}") from None
        return frozenset(out)

    thr, exc = names(route.through), names(route.excluding)
    if target is not None and (target in thr or target in exc):
        raise InputError(f"{where}: the target {target!r} cannot also be in through/excluding")
    if thr & exc:
        raise InputError(f"{where}: {sorted(thr & exc)} are both required and excluded")
    return Resolved(
        route,
        target,
        route.port,
        _norm_positions(route.positions, graph, seq, n, where, columns),
        route.direct,
        thr,
        exc,
        route.at_input,
        route.end_port,
        _norm_positions(route.end_positions, graph, seq, n, where, columns),
    )


__all__ = ["Paths", "Resolved", "Route", "as_paths", "input_of", "resolve", "to"]
