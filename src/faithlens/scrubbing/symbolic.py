"""The data of a symbolic plan (:mod:`faithlens.scrubbing.plan` computes it).

A route under way (:class:`Pending`) and a hypothesis' state at a copy (:class:`HState`); the
symbolic copies a plan computes (:class:`SymUniform`, :class:`SymMixed`, :class:`SymCopy`); the
nodes of the joined interpretation tree actually used (:class:`PairNode`); the union-find that
merges the unimportant data keys (:class:`UnionFind`); and the finished plan, :class:`SymPlan`.
All of it is symbolic: no tensor, no forward pass. Every name here is importable from
:mod:`faithlens.scrubbing.plan` too.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

from ..graph import ComponentGraph, PositionAtom
from .hypothesis import Tree
from .samplers import Sampler

# ---------------------------------------------------------------------------------------------
# States
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pending:
    """A route under way: interpretation node ``node``, its route ``r``, at ``stage``
    ("start": before its first edge; "mid": between nodes; "port": at the target, about to
    claim one of its input edges), with the ``through`` nodes visited so far."""

    node: str
    r: int
    stage: str
    visited: frozenset[str] = frozenset()


@dataclass(frozen=True)
class HState:
    """One hypothesis' state at a copy: the owning node, its routes under way, and (when none
    is) the datum key every slot below receives."""

    owner: str
    pending: frozenset[Pending]
    datum: tuple[Hashable, ...] | None


JState = tuple[HState, ...]

#: the datum marker of an open node without children under ``unimportant="per_input"``: its copy
#: is expanded once more, and each input edge gets its own unimportant datum
SPLIT: tuple[Hashable, ...] = ("split",)


@dataclass(frozen=True)
class SymUniform:
    node: str
    datum: tuple[Hashable, ...]


@dataclass(frozen=True)
class SymMixed:
    id: int
    node: str


SymRef = SymUniform | SymMixed


@dataclass
class SymCopy:
    ref: SymMixed
    owners: tuple[str, ...]
    feeds: list[tuple[str, str, PositionAtom | None, SymRef]]


@dataclass
class PairNode:
    """A node of the (joined) interpretation tree actually used: the tuple of owners."""

    owners: tuple[str, ...]
    parent: tuple[str, ...] | None
    moved: frozenset[int]
    depth: int
    constraints: list[Sampler] = field(default_factory=list)
    groups: set[str] = field(default_factory=set)

    def name(self, trees: Sequence[Tree]) -> str:
        if len(self.owners) == 1:
            return trees[0].nodes[self.owners[0]].name
        return " ^ ".join(trees[i].nodes[o].name for i, o in enumerate(self.owners))


class UnionFind:
    def __init__(self) -> None:
        self.parent: dict[Hashable, Hashable] = {}

    def find(self, x: Hashable) -> Hashable:
        self.parent.setdefault(x, x)
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: Hashable, b: Hashable) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            lo, hi = sorted((ra, rb), key=repr)
            self.parent[hi] = lo

    def groups(self) -> dict[Hashable, list[Hashable]]:
        out: dict[Hashable, list[Hashable]] = {}
        for k in list(self.parent):
            out.setdefault(self.find(k), []).append(k)
        return out


# ---------------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------------


@dataclass
class SymPlan:
    """The result of planning: symbolic copies, the joined interpretation tree, data keys."""

    trees: list[Tree]
    graph: ComponentGraph
    root: SymRef
    copies: dict[int, SymCopy]
    pairs: dict[tuple[str, ...], PairNode]
    uf: UnionFind
    other_samplers: dict[Hashable, tuple[Sampler, int, str]]
    rep: list[dict[str, tuple[str, ...]]]

    def other_reference(self, key: Hashable) -> tuple[str, ...]:
        """The joined-tree node whose datum conditions the unimportant inputs of ``key``."""
        _, i, owner = self.other_samplers[key]
        return self.rep[i][owner]

    def datum_keys(self) -> list[tuple[Hashable, ...]]:
        """Every datum key the copies read, once each, in first-use order (deterministic: datum
        ids follow this order, so it must not depend on string hashing)."""
        keys: dict[tuple[Hashable, ...], None] = {}
        if isinstance(self.root, SymUniform):
            keys[self.root.datum] = None
        for c in self.copies.values():
            keys[("ds", c.owners)] = None
            for _, _, _, ch in c.feeds:
                if isinstance(ch, SymUniform):
                    keys[ch.datum] = None
        return list(keys)

    def canonical(self, key: tuple[Hashable, ...]) -> tuple[Hashable, ...]:
        if key[0] == "other":
            return ("other", self.uf.find(key[1]))
        return key


__all__ = [
    "SPLIT",
    "HState",
    "JState",
    "PairNode",
    "Pending",
    "SymCopy",
    "SymMixed",
    "SymPlan",
    "SymRef",
    "SymUniform",
    "UnionFind",
]
