"""Exact scrubbed distributions on small discrete domains (appendix 5 of the write-up).

On a finite pool whose rows have probabilities ``probs`` (the data distribution D), the
sampling procedure of a hypothesis defines an exact joint distribution over its data: the
reference, the datum of every interpretation node, the datum of every group of unimportant
inputs. :func:`exact_scrub` computes it by chaining the samplers' transition matrices (no Monte
Carlo), and maps every input slot of the treeified model (every path) to its datum. Tests use it
to check Lemma 1, Theorem 2 and Fun Fact 3 by enumeration, and to check the Monte Carlo samplers
against the exact law.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ..graph import ComponentGraph
from .data import ScrubData, Table
from .hypothesis import Hypothesis, trees
from .plan import Planner, SymMixed, SymPlan, SymUniform, plan
from .samplers import Random, conjoin

Edge = tuple[str, str, str]


@dataclass
class ExactScrub:
    """The exact joint law of a hypothesis' data.

    ``names[j]`` is the j-th variable ("reference", an interpretation node, or "unimportant
    ..."); ``joint`` has one axis per variable, each over the pool rows; ``slots`` maps every
    input slot (a path ``[(receiver, port, sender), ...]`` from the output to an input) to the
    index of the variable it receives.
    """

    names: list[str]
    keys: list[tuple[Hashable, ...]]
    joint: np.ndarray
    slots: list[tuple[list[Edge], int]]
    table: Table

    def marginal(self, variables: Sequence[int]) -> np.ndarray:
        """The joint law of some variables (axes in the order given)."""
        keep = list(variables)
        drop = tuple(i for i in range(self.joint.ndim) if i not in keep)
        m = self.joint.sum(axis=drop) if drop else self.joint
        order = sorted(keep)
        return np.moveaxis(m, [order.index(v) for v in keep], range(len(keep)))

    def law(self, fn: Callable[..., Hashable], variables: Sequence[int]) -> dict[Hashable, float]:
        """The law of ``fn(row_1, ..., row_k)`` of the pool rows drawn for ``variables``."""
        m = self.marginal(variables)
        out: dict[Hashable, float] = {}
        for idx in zip(*np.nonzero(m)):
            key = fn(*idx)
            out[key] = out.get(key, 0.0) + float(m[idx])
        return out

    def variable(self, name: str) -> int:
        if name not in self.names:
            raise InputError(f"no variable {name!r}; variables: {self.names}")
        return self.names.index(name)

    @property
    def slot_variables(self) -> list[int]:
        return [v for _, v in self.slots]


def entropy(p: np.ndarray | dict[Any, float]) -> float:
    """Shannon entropy in nats of a law (array or dict of probabilities)."""
    vals = np.asarray(list(p.values()) if isinstance(p, dict) else p, dtype=np.float64).ravel()
    vals = vals[vals > 0]
    return float(-(vals * np.log(vals)).sum())


def _paths_below(g: ComponentGraph, node: str) -> list[list[Edge]]:
    n = g.node(node)
    if n.is_input:
        return [[]]
    out: list[list[Edge]] = []
    for p in n.ports:
        for s in g.senders(node, p):
            for rest in _paths_below(g, s):
                out.append([(node, p, s), *rest])
    return out


def _slots(sym: SymPlan) -> list[tuple[list[Edge], tuple[Hashable, ...]]]:
    g = sym.graph
    out: list[tuple[list[Edge], tuple[Hashable, ...]]] = []

    def walk(ref: SymUniform | SymMixed, prefix: list[Edge]) -> None:
        if isinstance(ref, SymUniform):
            for p in _paths_below(g, ref.node):
                out.append(([*prefix, *p], sym.canonical(ref.datum)))
            return
        c = sym.copies[ref.id]
        for port, s, atom, child in c.feeds:
            if atom is not None:
                raise InputError("exact_scrub does not handle position restrictions")
            walk(child, [*prefix, (ref.node, port, s)])

    walk(sym.root, [])
    return out


def exact_scrub(
    hypothesis: Hypothesis,
    graph: ComponentGraph,
    data: ScrubData,
    probs: Sequence[float] | np.ndarray | None = None,
) -> ExactScrub:
    """The exact joint law of the data a hypothesis draws, with references ~ ``probs`` (uniform
    over the rows by default). Small domains only: the joint has (rows ** variables) entries."""
    table = Table(data)
    m = len(data)
    p = np.full(m, 1.0 / m) if probs is None else np.asarray(probs, dtype=np.float64)
    if p.shape != (m,) or (p < 0).any() or not np.isclose(p.sum(), 1.0):
        raise InputError(f"probs must be {m} non-negative numbers summing to 1")
    sym = plan(trees(hypothesis), graph, seq=None, n=None)
    names = ["reference"]
    keys: list[tuple[Hashable, ...]] = [("reference",)]
    joint = p.copy()
    var_of: dict[tuple[str, ...], int] = {}
    for pn in sorted(sym.pairs.values(), key=lambda q: (q.depth, repr(q.owners))):
        where = f"node {pn.name(sym.trees)!r}"
        s = Planner.sampler_of(pn, where)
        t = s.transition(table, p, where)
        parent = 0 if pn.parent is None else var_of[pn.parent]
        joint = _extend(joint, parent, t)
        var_of[pn.owners] = joint.ndim - 1
        names.append(pn.name(sym.trees))
        keys.append(("ds", pn.owners))
    groups: dict[Hashable, list[Hashable]] = {}
    for k in sym.other_samplers:
        groups.setdefault(sym.uf.find(k), []).append(k)
    other_var: dict[Hashable, int] = {}
    used = {sym.canonical(k) for k in sym.datum_keys()}
    for key in sorted((k for k in used if k[0] == "other"), key=repr):
        members = groups.get(key[1], [])
        conditioned = [mm for mm in members if not isinstance(sym.other_samplers[mm][0], Random)]
        refs = {sym.other_reference(mm) for mm in conditioned}
        if len(refs) > 1:
            raise InputError(
                "unimportant inputs sampled together but conditioned on different nodes"
            )
        parent = var_of[next(iter(refs))] if refs else 0
        sampler = conjoin([sym.other_samplers[mm][0] for mm in members]) if members else Random()
        joint = _extend(joint, parent, sampler.transition(table, p, "unimportant inputs"))
        other_var[key[1]] = joint.ndim - 1
        names.append(f"unimportant {key[1]!r}")
        keys.append(key)
    slots = []
    for path, key in _slots(sym):
        if key[0] == "ds":
            owners = key[1]
            assert isinstance(owners, tuple)
            slots.append((path, var_of[owners]))
        else:
            slots.append((path, other_var[key[1]]))
    return ExactScrub(names, keys, joint, slots, table)


def _extend(joint: np.ndarray, parent: int, t: np.ndarray) -> np.ndarray:
    """Add a variable drawn from row ``x`` of ``t`` given variable ``parent`` = x."""
    if joint.size * t.shape[1] > 50_000_000:
        raise InputError("the exact joint law is too large; use a smaller domain")
    expand = t.reshape([t.shape[0] if i == parent else 1 for i in range(joint.ndim)] + [t.shape[1]])
    return joint[..., None] * expand


__all__ = ["ExactScrub", "entropy", "exact_scrub"]
