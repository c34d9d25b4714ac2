"""Planning: treeify the model along a hypothesis' path sets, lazily, and validate it.

The planner walks the component graph from the output down. At every *copy* of a node (a node
reached along a path prefix) it keeps, for each hypothesis (one, or several for a join), which
interpretation node owns the prefix and which of that node's children's routes are still
under way. Crossing an edge advances the routes (a route can die, continue, or claim the edge
or the node it reaches). When no route is under way any more, every input slot below the copy
receives the same datum, so the copy is *uniform* and is not expanded further; otherwise it is
*mixed* and its inputs are assembled from its senders' copies. Copies are memoised by (node,
state), so each is computed once however many paths lead to it.

All of this is symbolic (no forward pass): path sets that match nothing, paths claimed by two
nodes, unknown names and ports are reported here, naming the interpretation node.

For a join, the planner runs every member's routes in lockstep; the tuple of owners at a copy
is a node of the joined interpretation tree (see :func:`faithlens.scrubbing.join`).

The planner's states and its output (:class:`SymPlan` and the copies it holds) are defined in
:mod:`faithlens.scrubbing.symbolic` and importable from here too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

from ..errors import InputError
from ..graph import ComponentGraph, PositionAtom, PositionSet
from .hypothesis import TNode, Tree
from .paths import Resolved, resolve
from .samplers import Exact, Random, Sampler, conjoin
from .symbolic import (  # the plan's data; re-exported, so that these import from here too
    SPLIT,
    HState,
    JState,
    PairNode,
    Pending,
    SymCopy,
    SymMixed,
    SymPlan,
    SymRef,
    SymUniform,
    UnionFind,
)

# ---------------------------------------------------------------------------------------------
# Positions
# ---------------------------------------------------------------------------------------------


def _canon(
    include: Iterable[PositionSet], exclude: Iterable[PositionSet], seq: int | None
) -> PositionAtom | bool | None:
    """Canonical atom; False when it is certainly empty; None for 'all positions'."""
    inc, exc = set(include), set(exclude)
    s_in = [s for s in inc if s.static is not None]
    s_ex = [s for s in exc if s.static is not None]
    d_in = {s for s in inc if s.static is None}
    d_ex = {s for s in exc if s.static is None}
    ex_vals: set[int] = set()
    for s in s_ex:
        ex_vals |= set(s.static or ())
    if s_in:
        vals = set(s_in[0].static or ())
        for s in s_in[1:]:
            vals &= set(s.static or ())
        vals -= ex_vals
        if not vals:
            return False
        t = tuple(sorted(vals))
        d_in.add(PositionSet(static=t, label=",".join(map(str, t))))
    elif ex_vals:
        if seq is not None and ex_vals >= set(range(seq)):
            return False
        t = tuple(sorted(ex_vals))
        d_ex.add(PositionSet(static=t, label=",".join(map(str, t))))
    if not d_in and not d_ex:
        return None
    return PositionAtom(frozenset(d_in), frozenset(d_ex))


def _refine(
    atom: PositionAtom | None, sets: Iterable[PositionSet], seq: int | None
) -> list[PositionAtom | None]:
    atoms: list[PositionAtom | None] = [atom]
    for s in sets:
        new: list[PositionAtom | None] = []
        for a in atoms:
            if a is not None and _inside(a, s, seq) is not None:
                new.append(a)
                continue
            inc = a.include if a is not None else frozenset()
            exc = a.exclude if a is not None else frozenset()
            for part in (_canon(inc | {s}, exc, seq), _canon(inc, exc | {s}, seq)):
                if part is not False:
                    new.append(part)  # type: ignore[arg-type]
        atoms = new
    return atoms


def _inside(a: PositionAtom | None, s: PositionSet, seq: int | None) -> bool | None:
    """Whether atom ``a`` lies inside ``s`` (True), outside it (False), or straddles (None)."""
    if a is None:
        return None
    if s in a.include:
        return True
    if s in a.exclude:
        return False
    if s.static is None:
        return None
    vals = set(s.static)
    for i in a.include:
        if i.static is not None:
            iv = set(i.static)
            if iv <= vals:
                return True
            if not iv & vals:
                return False
    for e in a.exclude:
        if e.static is not None and vals <= set(e.static):
            return False
    return None


def _alive(a: PositionAtom | None, s: PositionSet | None, seq: int | None) -> bool:
    if s is None:
        return True
    got = _inside(a, s, seq)
    if got is None:
        raise AssertionError("position atom straddles a constraint after refinement")
    return got


# ---------------------------------------------------------------------------------------------
# The planner
# ---------------------------------------------------------------------------------------------


class Planner:
    def __init__(
        self,
        trees: Sequence[Tree],
        graph: ComponentGraph,
        *,
        seq: int | None,
        n: int | None,
        columns: Callable[[str], Any] | None = None,
    ) -> None:
        self.trees = list(trees)
        self.g = graph
        self.seq = seq
        self.n = n
        self.res: dict[tuple[int, str], tuple[Resolved, ...]] = {}
        self.memo: dict[tuple[str, JState], SymRef] = {}
        self.copies: dict[int, SymCopy] = {}
        self.pairs: dict[tuple[str, ...], PairNode] = {}
        self.accepted: list[set[str]] = [{t.root.id} for t in self.trees]
        self.uf = UnionFind()
        self.other_samplers: dict[Hashable, tuple[Sampler, int, str]] = {}
        self.rep: list[dict[str, tuple[str, ...]]] = [{} for _ in self.trees]
        for i, t in enumerate(self.trees):
            for node in t.nodes.values():
                if node.parent is None:
                    continue
                where = f"hypothesis {t.name!r}, node {node.name!r}"
                rs = tuple(
                    resolve(r, graph, seq, n, f"{where}, paths {r.describe()}", columns)
                    for r in node.routes
                )
                for r in rs:
                    if r.target is not None and graph.node(r.target).is_input and node.children:
                        raise InputError(
                            f"{where}: it corresponds to the input {r.target!r} but has children; "
                            "an input has nothing upstream, so a node at an input must be a leaf"
                        )
                self.res[(i, node.id)] = rs

    # -- per-hypothesis stepping ---------------------------------------------------------------
    def _where(self, i: int, node: str) -> str:
        t = self.trees[i]
        return f"hypothesis {t.name!r}, node {t.nodes[node].name!r}"

    def _entries(self, i: int, node: TNode) -> frozenset[Pending]:
        out = set()
        for c in node.children:
            for k, r in enumerate(self.res[(i, c.id)]):
                out.add(Pending(c.id, k, "port" if r.target is None else "start"))
        return frozenset(out)

    def _other_key(self, i: int, owner: str, edge: tuple[str, str, str]) -> tuple[Hashable, ...]:
        node = self.trees[i].nodes[owner]
        if node.unimportant == "global":
            key: tuple[Hashable, ...] = (i, "*")
        elif node.unimportant == "per_input":
            key = (i, owner, *edge)
        else:
            key = (i, owner)
        self.uf.find(key)
        if node.other_group:
            self.uf.union(key, ("group", node.other_group))
        self.other_samplers.setdefault(key, (node.other, i, owner))
        return ("other", key)

    def _own_state(self, i: int, c: str, edge: tuple[str, str, str], at: str) -> HState:
        node = self.trees[i].nodes[c]
        entries = self._entries(i, node)
        if entries:
            return HState(c, entries, None)
        if node.is_leaf:
            return HState(c, frozenset(), ("ds", c))
        if node.unimportant == "per_input":
            # an open node without children: each of its input edges gets its own datum, so
            # the copy is expanded one more level
            return HState(c, frozenset(), SPLIT)
        return HState(c, frozenset(), self._other_key(i, c, edge))

    def _constraint(self, i: int, e: Pending, p: str) -> PositionSet | None:
        r = self.res[(i, e.node)][e.r]
        if e.stage == "start":
            return r.positions if (r.port is None or r.port == p) else None
        if e.stage == "port":
            return r.end_positions if (r.end_port is None or r.end_port == p) else None
        return None

    def _arrive(self, r: Resolved, s: str, visited: frozenset[str]) -> tuple[str, frozenset[str]]:
        if s == r.target:
            if not r.through <= visited:
                return ("dead", visited)
            return ("port" if r.at_input else "accept", visited)
        if r.direct or r.target is None or s in r.excluding:
            return ("dead", visited)
        if self.g.node(s).is_input:
            return ("dead", visited)
        if not self.g.reaches(s, r.target, r.excluding):
            return ("dead", visited)
        seen = visited | (frozenset({s}) & r.through)
        for t in r.through - seen:  # every node still to visit must lie between s and target
            if not (self.g.reaches(s, t, r.excluding) and self.g.reaches(t, r.target, r.excluding)):
                return ("dead", visited)
        return ("mid", seen)

    def _h_edge(
        self, i: int, hs: HState, rnode: str, p: str, s: str, atom: PositionAtom | None
    ) -> list[tuple[PositionAtom | None, HState]]:
        if not hs.pending:
            if hs.datum == SPLIT:
                return [
                    (
                        atom,
                        HState(hs.owner, frozenset(), self._other_key(i, hs.owner, (rnode, p, s))),
                    )
                ]
            return [(atom, hs)]
        cons = {c for e in hs.pending if (c := self._constraint(i, e, p)) is not None}
        out: list[tuple[PositionAtom | None, HState]] = []
        for a in _refine(atom, sorted(cons, key=repr), self.seq):
            out.extend(self._h_edge_atom(i, hs, rnode, p, s, a))
        return out

    def _h_edge_atom(
        self, i: int, hs: HState, rnode: str, p: str, s: str, a: PositionAtom | None
    ) -> list[tuple[PositionAtom | None, HState]]:
        acc_node: list[str] = []
        acc_edge: list[str] = []
        cont: list[Pending] = []
        ports = self.g.ports(rnode)
        for e in sorted(hs.pending, key=repr):
            r = self.res[(i, e.node)][e.r]
            if e.stage == "start":
                if r.port is not None and r.port not in ports:
                    raise InputError(
                        f"{self._where(i, e.node)}: paths {r.describe()} leave {rnode!r} through "
                        f"port {r.port!r}, but {rnode!r} has ports {list(ports)}"
                    )
                if r.port is not None and r.port != p:
                    continue
                if not _alive(a, r.positions, self.seq):
                    continue
                kind, vis = self._arrive(r, s, e.visited)
            elif e.stage == "mid":
                kind, vis = self._arrive(r, s, e.visited)
            else:  # port: claim this input edge of the target
                if r.end_port is not None and r.end_port not in ports:
                    raise InputError(
                        f"{self._where(i, e.node)}: {rnode!r} has no port {r.end_port!r}; its "
                        f"ports are {list(ports)}"
                    )
                if r.end_port is not None and r.end_port != p:
                    continue
                if not _alive(a, r.end_positions, self.seq):
                    continue
                kind, vis = "accept_edge", e.visited
            if kind == "accept":
                acc_node.append(e.node)
            elif kind == "accept_edge":
                acc_edge.append(e.node)
            elif kind in ("mid", "port"):
                cont.append(Pending(e.node, e.r, kind, vis))
        claims = sorted(set(acc_node) | set(acc_edge))
        point = f"the edge {rnode!r} <- {s!r} (port {p!r}{', positions ' + repr(a) if a else ''})"
        if len(claims) > 1:
            names = [self.trees[i].nodes[c].name for c in claims]
            raise InputError(
                f"hypothesis {self.trees[i].name!r}: paths through {point} are claimed by "
                f"{names}; a path may belong to one node only"
            )
        if claims and cont:
            names = sorted({self.trees[i].nodes[e.node].name for e in cont})
            raise InputError(
                f"hypothesis {self.trees[i].name!r}: node {self.trees[i].nodes[claims[0]].name!r} "
                f"claims every path below {point}, but the paths of {names} continue through it; "
                "a path may belong to one node only"
            )
        edge = (rnode, p, s)
        if acc_edge:
            c = acc_edge[0]
            self.accepted[i].add(c)
            st = self._own_state(i, c, edge, "edge")
            # the new owner's children start on this very edge
            return self._h_edge(i, st, rnode, p, s, a) if st.pending else [(a, st)]
        if acc_node:
            c = acc_node[0]
            self.accepted[i].add(c)
            return [(a, self._own_state(i, c, edge, "node"))]
        if cont:
            return [(a, HState(hs.owner, frozenset(cont), None))]
        owner = self.trees[i].nodes[hs.owner]
        if owner.is_leaf:  # pragma: no cover - a leaf has no routes under way
            return [(a, HState(hs.owner, frozenset(), ("ds", hs.owner)))]
        return [(a, HState(hs.owner, frozenset(), self._other_key(i, hs.owner, edge)))]

    # -- joint stepping ------------------------------------------------------------------------
    def _edge(
        self, js: JState, rnode: str, p: str, s: str
    ) -> list[tuple[PositionAtom | None, JState]]:
        results: list[tuple[PositionAtom | None, JState]] = [(None, ())]
        for i, hs in enumerate(js):
            new: list[tuple[PositionAtom | None, JState]] = []
            for atom, partial in results:
                for a2, hs2 in self._h_edge(i, hs, rnode, p, s, atom):
                    new.append((a2, (*partial, hs2)))
            results = new
        # the first hypotheses' atoms may have been refined by later ones
        fixed: list[tuple[PositionAtom | None, JState]] = []
        for atom, js2 in results:
            fixed.append((atom, js2))
            self._register(js, js2)
        return fixed

    def _register(self, js: JState, js2: JState) -> None:
        o1 = tuple(h.owner for h in js)
        o2 = tuple(h.owner for h in js2)
        if o1 == o2:
            return
        # A node that claims an input edge hands that very edge to its children, so one edge can
        # move an owner down several levels (e.g. input_of(positions=[1]) whose child claims
        # the embeddings). Register the skipped levels one by one, so that every node of the
        # interpretation has the same parent on every path.
        cur = o1
        for i in range(len(o1)):
            chain: list[str] = []
            x: str | None = self.trees[i].nodes[o2[i]].parent if o1[i] != o2[i] else None
            while x is not None and x != o1[i]:
                chain.append(x)
                x = self.trees[i].nodes[x].parent
            for step in reversed(chain):
                nxt = (*cur[:i], step, *cur[i + 1 :])
                self._register_step(cur, nxt)
                cur = nxt
        self._register_step(cur, o2)

    def _register_step(self, o1: tuple[str, ...], o2: tuple[str, ...]) -> None:
        moved = frozenset(i for i in range(len(o1)) if o1[i] != o2[i])
        got = self.pairs.get(o2)
        if got is None:
            self.pairs[o2] = PairNode(o2, o1, moved, self.pairs[o1].depth + 1)
            for i in moved:
                self.rep[i].setdefault(o2[i], o2)
        elif got.parent != o1:
            raise InputError(
                "join: the members' interpretation nodes nest in different orders along "
                f"different paths ({got.name(self.trees)}); their join is not a tree"
            )

    def _joint_datum(self, js: JState) -> tuple[Hashable, ...]:
        owners = tuple(h.owner for h in js)
        if any(h.datum is not None and h.datum[0] == "ds" for h in js):
            return ("ds", owners)
        keys = [h.datum[1] for h in js if h.datum is not None]
        for k in keys[1:]:
            self.uf.union(keys[0], k)
        return ("other", keys[0])

    def _expand(self, node: str, js: JState) -> SymRef:
        key = (node, js)
        got = self.memo.get(key)
        if got is not None:
            return got
        if all(not h.pending and h.datum != SPLIT for h in js):
            ref: SymRef = SymUniform(node, self._joint_datum(js))
            self.memo[key] = ref
            return ref
        mref = SymMixed(len(self.memo), node)
        self.memo[key] = mref
        feeds: list[tuple[str, str, PositionAtom | None, SymRef]] = []
        for p in self.g.ports(node):
            for s in self.g.senders(node, p):
                for atom, js2 in self._edge(js, node, p, s):
                    feeds.append((p, s, atom, self._expand(s, js2)))
        self.copies[mref.id] = SymCopy(mref, tuple(h.owner for h in js), feeds)
        return mref

    # -- the whole plan ------------------------------------------------------------------------
    def plan(self) -> SymPlan:
        out = self.g.output
        roots: list[HState] = []
        owners = tuple(t.root.id for t in self.trees)
        self.pairs[owners] = PairNode(owners, None, frozenset(range(len(self.trees))), 0)
        for i, t in enumerate(self.trees):
            self.rep[i][t.root.id] = owners
            entries = self._entries(i, t.root)
            if entries:
                roots.append(HState(t.root.id, entries, None))
            elif t.root.is_leaf:
                roots.append(HState(t.root.id, frozenset(), ("ds", t.root.id)))
            else:
                roots.append(self._own_state(i, t.root.id, (out, "", ""), "root"))
        root = self._expand(out, tuple(roots))
        self._check_accepted()
        self._constraints()
        return SymPlan(
            self.trees,
            self.g,
            root,
            self.copies,
            self.pairs,
            self.uf,
            self.other_samplers,
            self.rep,
        )

    def _check_accepted(self) -> None:
        for i, t in enumerate(self.trees):
            for node in t.root.walk():
                if node.parent is None or node.id in self.accepted[i]:
                    continue
                if node.parent not in self.accepted[i]:
                    continue  # reported at its ancestor
                raise InputError(
                    f"{self._where(i, node.id)}: its paths "
                    f"{' | '.join(r.describe() for r in node.routes)} match nothing. "
                    + self._hint(i, node)
                )

    def _points(self, i: int, node: TNode) -> list[str]:
        if node.parent is None:
            return [self.g.output]
        out = []
        for r in self.res[(i, node.id)]:
            out.append(r.target if r.target is not None else "?")
        return out

    def _hint(self, i: int, node: TNode) -> str:
        parent = self.trees[i].nodes[node.parent or ""]
        starts = [s for s in self._points(i, parent) if s != "?"]
        hints = []
        for r in self.res[(i, node.id)]:
            if r.target is None:
                hints.append("no input edge of the parent's point has that port / those positions")
                continue
            for st in starts:
                if not self.g.reaches(st, r.target):
                    hints.append(f"{r.target!r} is not upstream of {st!r}")
                elif r.direct and r.target not in {
                    x for p in self.g.ports(st) for x in self.g.senders(st, p)
                }:
                    hints.append(f"there is no direct edge {st!r} <- {r.target!r}")
                elif r.excluding and not self.g.reaches(st, r.target, r.excluding):
                    hints.append(f"every path {st!r} <- {r.target!r} visits an excluded node")
                elif r.port is not None:
                    hints.append(
                        f"check the port {r.port!r} of {st!r} (ports {list(self.g.ports(st))})"
                    )
                elif r.through:
                    hints.append(
                        f"no path {st!r} <- {r.target!r} visits all of {sorted(r.through)}"
                    )
        if not hints:
            hints.append("its parent's paths never reach a point from which these routes start")
        return "Why: " + "; ".join(dict.fromkeys(hints)) + "."

    def _constraints(self) -> None:
        """Each node of the joined tree: the samplers of the members that moved into it, Exact
        for members whose leaf region continues, and (joins) the features of nodes further down
        whose original parent sits higher up (agreement is transitive)."""
        trees = self.trees
        for pn in self.pairs.values():
            cons: list[Sampler] = []
            for i, o in enumerate(pn.owners):
                node = trees[i].nodes[o]
                if i in pn.moved:
                    cons.append(node.sampler)
                    if node.group:
                        pn.groups.add(node.group)
                elif node.is_leaf:
                    cons.append(Exact())
            pn.constraints = cons
        if len(trees) == 1:
            return
        for pn in self.pairs.values():
            if pn.parent is None:
                continue
            for i in pn.moved:
                node = trees[i].nodes[pn.owners[i]]
                if node.parent is None:
                    continue
                stop = self.rep[i][node.parent]
                x: tuple[str, ...] | None = pn.parent
                while x is not None and x != stop:
                    self.pairs[x].constraints.append(node.sampler)
                    x = self.pairs[x].parent

    @staticmethod
    def sampler_of(pn: PairNode, where: str) -> Sampler:
        try:
            return conjoin(pn.constraints) if pn.constraints else Random()
        except InputError as e:
            raise InputError(f"{where}: {e}") from None


def plan(
    trees: Sequence[Tree],
    graph: ComponentGraph,
    *,
    seq: int | None,
    n: int | None,
    columns: Callable[[str], Any] | None = None,
) -> SymPlan:
    """Plan the treeified evaluation of (the join of) ``trees`` on ``graph``. ``columns(name)``
    gives a data column on the reference examples (positions given by column name)."""
    return Planner(trees, graph, seq=seq, n=n, columns=columns).plan()


def count_slots(sym: SymPlan) -> Counter[str]:
    """How many distinct copies per node the plan computes (for diagnostics)."""
    return Counter(c.ref.node for c in sym.copies.values())


__all__ = [
    "HState",
    "PairNode",
    "Pending",
    "Planner",
    "SymPlan",
    "SymUniform",
    "SymMixed",
    "count_slots",
    "plan",
]
