"""Hypotheses: an interpretation graph whose nodes carry features and path-set correspondences.

A :class:`Hypothesis` has a root (the model's output) and interpretation nodes below it. Each
:class:`InterpNode` says:

- which paths of the model it corresponds to (``paths=to("head.1.0", direct=True)``, relative
  to its parent's point; see :mod:`faithlens.scrubbing.paths`);
- how its datum is drawn given its parent's datum (``feature=f``: any row that agrees on ``f``;
  ``sampler=Exact()`` / ``Random()`` / ``Kernel(...)`` / ``Generate(...)``);
- for a node with children, how the paths that no child claims (its *unimportant inputs*) are
  fed: by default all of them share one random datum (``other=Random()``), sampled afresh for
  every node; ``unimportant="per_input"`` gives each unclaimed input edge its own datum and
  ``"global"`` one datum for the whole hypothesis (appendix 4.1-4.2 of the causal scrubbing
  write-up: an explicit, printed choice);
- optional "sampled together" groups: nodes with the same ``group`` share random numbers (the
  same datum wherever their references agree), nodes with the same ``other_group`` share one
  datum for their unimportant inputs.

A node without children is a leaf: every path below its point gets its datum. Interpretation
DAGs (a node added under two parents) are treeified: the node and its subtree are copied once per
parent, and each copy is sampled on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError
from .data import Feature
from .paths import Paths, Route, as_paths
from .samplers import Exact, Random, SameFeature, Sampler, as_sampler

MODES = ("per_node", "per_input", "global")
MODE_TEXT = {
    "per_node": "one random datum per interpretation node, shared by all its unimportant inputs",
    "per_input": "a separate random datum for each unimportant input edge",
    "global": "one random datum shared by every unimportant input of the hypothesis",
}


class InterpNode:
    """A node of an interpretation graph. Create children with :meth:`add`."""

    def __init__(
        self,
        name: str,
        paths: Route | Paths | str | Sequence[Route] | None = None,
        sampler: Sampler | str | None = None,
        *,
        feature: Feature | Sequence[Feature] | None = None,
        exclude_self: bool = False,
        other: Sampler | str | None = None,
        group: str | None = None,
        other_group: str | None = None,
        unimportant: str | None = None,
        leaf: bool | None = None,
    ) -> None:
        if not isinstance(name, str) or not name or "/" in name:
            raise InputError(f"an interpretation node needs a name without '/', not {name!r}")
        self.name = name
        self.routes: tuple[Route, ...] = () if paths is None else as_paths(paths, f"node {name!r}")
        if feature is not None and sampler is not None:
            raise InputError(f"node {name!r}: give a feature or a sampler, not both")
        if feature is not None:
            feats = tuple(feature) if isinstance(feature, (list, tuple)) else (feature,)
            self.sampler: Sampler = SameFeature(*feats, exclude_self=exclude_self)
        elif sampler is not None:
            self.sampler = as_sampler(sampler, f"node {name!r}")
        else:
            self.sampler = Exact()
        self.other: Sampler = as_sampler(other, f"node {name!r}") if other is not None else Random()
        if unimportant is not None and unimportant not in MODES:
            raise InputError(
                f"node {name!r}: unimportant must be one of {MODES}, not {unimportant!r}"
            )
        self.unimportant = unimportant
        self.group = group
        self.other_group = other_group
        self.leaf = leaf
        self.children: list[InterpNode] = []

    def add(
        self,
        child: InterpNode | str,
        paths: Route | Paths | str | Sequence[Route] | None = None,
        sampler: Sampler | str | None = None,
        **kwargs: Any,
    ) -> InterpNode:
        """Add a child (an existing node, possibly shared with another parent, or a new one
        built from the arguments, as :class:`InterpNode`); returns the child."""
        if isinstance(child, InterpNode):
            if paths is not None or sampler is not None or kwargs:
                raise InputError("add(node): the node is already built; pass no other arguments")
            node = child
        else:
            node = InterpNode(child, paths, sampler, **kwargs)
        if not node.routes:
            raise InputError(f"node {node.name!r}: a child needs paths (e.g. paths=to('head.1.0'))")
        if node is self:
            raise InputError(f"node {self.name!r} cannot be its own child")
        self.children.append(node)
        return node

    def __repr__(self) -> str:
        return f"InterpNode({self.name!r}, {len(self.children)} children)"


@dataclass(frozen=True, eq=False)
class TNode:
    """A node of a treeified interpretation: ``id`` is its path from the root ("root/a/b")."""

    id: str
    name: str
    routes: tuple[Route, ...]
    sampler: Sampler
    other: Sampler
    group: str | None
    other_group: str | None
    unimportant: str
    children: tuple[TNode, ...]
    is_leaf: bool
    parent: str | None

    def walk(self) -> list[TNode]:
        out = [self]
        for c in self.children:
            out.extend(c.walk())
        return out


@dataclass(frozen=True, eq=False)
class Tree:
    """A treeified hypothesis: nodes by id, the root, and whether treeification copied nodes."""

    name: str
    root: TNode
    nodes: dict[str, TNode] = field(default_factory=dict)
    copied: tuple[str, ...] = ()


class Hypothesis:
    """A causal scrubbing hypothesis: a root (the model's output) and interpretation nodes.

    Args:
        name: printed in results.
        sampler: the root's sampler: ``Exact()`` (the reference; default) or ``Random()`` (the
            model sees an unrelated input and is scored against the reference: the randomised
            baseline).
        other: the sampler of the root's unimportant inputs (default ``Random()``).
        unimportant: ``"per_node"`` (default), ``"per_input"`` or ``"global"`` (see the module
            docstring).
        rewrites: extensionally equal rewrites of the model's graph to apply first (checked
            numerically before use), e.g. ``[project("head.0.0", v)]``.
        mixed_lengths: why the hypothesis means its position-specific claims to combine data
            of different lengths (a sentence, printed with the hypothesis and kept in the
            result's ``stats["variable_lengths"]``). Without it, a scrub that does so warns
            (VARIABLE LENGTHS: with right padding, position i holds different tokens in
            different data); with it, the mixing is a stated part of the claim, e.g. "the
            count heads read only position 1 (claim 2)". Must be a non-empty string or None.

    Add nodes with :meth:`add` (children of the root) or ``node.add(...)``.
    """

    def __init__(
        self,
        name: str = "hypothesis",
        *,
        sampler: Sampler | str | None = None,
        feature: Feature | Sequence[Feature] | None = None,
        other: Sampler | str | None = None,
        unimportant: str = "per_node",
        rewrites: Sequence[Any] = (),
        other_group: str | None = None,
        mixed_lengths: str | None = None,
    ) -> None:
        if unimportant not in MODES:
            raise InputError(f"unimportant must be one of {MODES}, not {unimportant!r}")
        if mixed_lengths is not None and (
            not isinstance(mixed_lengths, str) or not mixed_lengths.strip()
        ):
            raise InputError(
                f"mixed_lengths must be a sentence saying why the hypothesis combines data of "
                f"different lengths, or None; got {mixed_lengths!r}"
            )
        self.name = name
        self.mixed_lengths = mixed_lengths.strip() if mixed_lengths else None
        self.unimportant = unimportant
        self.root = InterpNode(
            "root", None, sampler, feature=feature, other=other, other_group=other_group
        )
        self.rewrites = tuple(rewrites)

    # -- building ------------------------------------------------------------------------------
    def add(
        self,
        child: InterpNode | str,
        paths: Route | Paths | str | Sequence[Route] | None = None,
        sampler: Sampler | str | None = None,
        **kwargs: Any,
    ) -> InterpNode:
        """Add a child of the root; see :meth:`InterpNode.add`."""
        return self.root.add(child, paths, sampler, **kwargs)

    @classmethod
    def identity(cls, name: str = "identity") -> Hypothesis:
        """Every path sees the reference: the scrubbed model is the model."""
        return cls(name, sampler=Exact())

    @classmethod
    def nothing(cls, name: str = "nothing matters", **kwargs: Any) -> Hypothesis:
        """Claims nothing: every path is an unimportant input of the root (one random datum by
        default; ``unimportant=`` / ``other=`` as for the constructor)."""
        h = cls(name, sampler=Exact(), **kwargs)
        h.root.leaf = False
        return h

    @classmethod
    def random(cls, name: str = "random input") -> Hypothesis:
        """The model sees an unrelated input, scored against the reference's labels (Redwood's
        'randomised labels' baseline, the fully resampled model)."""
        return cls(name, sampler=Random())

    # -- treeification -------------------------------------------------------------------------
    def treeify(self) -> Tree:
        """Copy every node once per path from the root; check names and acyclicity."""
        names: dict[str, InterpNode] = {}

        def collect(n: InterpNode, stack: tuple[InterpNode, ...]) -> None:
            if any(n is s for s in stack):
                cyc = " -> ".join(s.name for s in (*stack, n))
                raise InputError(f"hypothesis {self.name!r}: the interpretation has a cycle: {cyc}")
            other = names.get(n.name)
            if other is not None and other is not n:
                raise InputError(
                    f"hypothesis {self.name!r}: two different nodes are named {n.name!r}; names "
                    "must be unique"
                )
            names[n.name] = n
            for c in n.children:
                collect(c, (*stack, n))

        collect(self.root, ())
        seen: dict[int, int] = {}
        copied: set[str] = set()
        nodes: dict[str, TNode] = {}

        def build(n: InterpNode, prefix: str, parent: str | None, mode: str) -> TNode:
            nid = f"{prefix}/{n.name}" if prefix else n.name
            seen[id(n)] = seen.get(id(n), 0) + 1
            if seen[id(n)] > 1:
                copied.add(n.name)
            m = n.unimportant or mode
            kids = tuple(build(c, nid, nid, m) for c in n.children)
            leaf = not kids if n.leaf is None else bool(n.leaf)
            if leaf and kids:
                raise InputError(f"node {n.name!r} has children, so it cannot be a leaf")
            t = TNode(
                nid,
                n.name,
                n.routes,
                n.sampler,
                n.other,
                n.group,
                n.other_group,
                m,
                kids,
                leaf,
                parent,
            )
            nodes[nid] = t
            return t

        root = build(self.root, "", None, self.unimportant)
        return Tree(self.name, root, nodes, tuple(sorted(copied)))

    # -- description ---------------------------------------------------------------------------
    def describe(self) -> str:
        """The interpretation as an indented tree, with every choice that affects sampling."""
        tree = self.treeify()
        lines = [f"hypothesis {self.name!r}"]
        lines.append(f"  unimportant inputs: {self.unimportant} ({MODE_TEXT[self.unimportant]})")
        if self.mixed_lengths:
            lines.append(f"  mixed lengths (intended): {self.mixed_lengths}")
        for r in self.rewrites:
            desc = r.describe() if hasattr(r, "describe") else repr(r)
            lines.append(f"  rewrite: {desc}")
        if tree.copied:
            lines.append(f"  treeified: copied {list(tree.copied)} (one copy per parent)")

        def show(t: TNode, depth: int) -> None:
            pad = "  " * (depth + 1)
            where = "output" if t.parent is None else " | ".join(r.describe() for r in t.routes)
            bits = [f"datum: {t.sampler.describe()}"]
            if t.is_leaf:
                bits.append("leaf: every path below gets this datum")
            else:
                other = t.other.describe()
                bits.append(f"unimportant inputs: {other} ({t.unimportant})")
            if t.group:
                bits.append(f"group={t.group}")
            if t.other_group:
                bits.append(f"other_group={t.other_group}")
            lines.append(f"{pad}- {t.name} @ {where}: " + "; ".join(bits))
            for c in t.children:
                show(c, depth + 1)

        show(tree.root, 0)
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Hypothesis({self.name!r})"


class Joined(Hypothesis):
    """``join(h1, h2, ...)``: a hypothesis that permits a swap only where every member does.

    Built by :func:`join`; evaluated by running all members' path sets together (see
    :mod:`faithlens.scrubbing.plan`)."""

    members: list[Hypothesis]

    def __init__(self, members: Sequence[Hypothesis], name: str | None = None) -> None:
        flat: list[Hypothesis] = []
        for h in members:
            flat.extend(h.members if isinstance(h, Joined) else [h])
        if len(flat) < 2:
            raise InputError("join needs at least two hypotheses")
        rw = [tuple(getattr(r, "key", r) for r in h.rewrites) for h in flat]
        if any(r != rw[0] for r in rw[1:]):
            raise InputError(
                "join: the hypotheses rewrite the model's graph differently; their join is not "
                "defined (appendix 8 of the causal scrubbing write-up). Give them the same rewrites."
            )
        modes = [h.unimportant for h in flat]
        mode = (
            "global" if "global" in modes else ("per_node" if "per_node" in modes else "per_input")
        )
        # the join mixes lengths as its members do: intended only if every member says so
        reasons = [h.mixed_lengths for h in flat]
        mixed = "; ".join(dict.fromkeys(r for r in reasons if r)) if all(reasons) else None
        super().__init__(
            name or " ^ ".join(h.name for h in flat),
            unimportant=mode,
            rewrites=flat[0].rewrites,
            mixed_lengths=mixed,
        )
        self.members = flat

    def describe(self) -> str:
        lines = [
            f"join {self.name!r} of {len(self.members)} hypotheses (a swap is allowed iff "
            "every member allows it; unimportant inputs are sampled together if any member "
            "samples them together)"
        ]
        for h in self.members:
            lines.extend("  " + ln for ln in h.describe().splitlines())
        return "\n".join(lines)


def join(*hypotheses: Hypothesis, name: str | None = None) -> Joined:
    """The join of hypotheses on the same graph (appendix 8): a path is important if any member
    says so; a point conditioned by several members is sampled from data that agree on all their
    features; unimportant inputs are sampled together if any member samples them together."""
    return Joined(hypotheses, name)


def trees(h: Hypothesis) -> list[Tree]:
    """The treeified members of a hypothesis (one, or several for a join)."""
    if isinstance(h, Joined):
        out = []
        for m in h.members:
            t = m.treeify()
            out.append(t)
        return out
    return [h.treeify()]


def hypothesis_first(args: tuple[Any, ...]) -> bool:
    """Whether positional arguments ``(model, hypothesis, data, ...)`` are in the order that
    ``scrub`` and ``adversary`` took before the data became their second argument (one release:
    the old order still works, with a DeprecationWarning)."""
    return (
        len(args) > 1
        and isinstance(args[1], Hypothesis)
        and not (len(args) > 2 and isinstance(args[2], Hypothesis))
    )


__all__ = [
    "MODES",
    "Hypothesis",
    "InterpNode",
    "Joined",
    "TNode",
    "Tree",
    "hypothesis_first",
    "join",
    "trees",
]
