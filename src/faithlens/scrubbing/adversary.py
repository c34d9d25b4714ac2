"""Adversarial validation (appendix 8): search refinements that expose a hypothesis.

A hypothesis can look good because it *neglects* something: a mechanism that hurts
performance, a correlation between terms it samples separately, a feature that the model does
not use but that smuggles information in. An adversary proposes refinements -- the hypothesis
is then scored on the join of its claims and the adversary's -- and picks the one that moves the
metric most (makes the scrubbed loss largest). If some refinement moves the metric far beyond
its noise, the hypothesis was not telling the whole story.

Refinements (each is a hypothesis ``h_adv`` on the same points, joined with the hypothesis):

- ``node``: a component the hypothesis treats as unimportant under node ``n`` is important: its
  paths get ``n``'s datum instead of random data ("these heads matter too");
- ``feature``: node ``n`` must also agree on a feature from the adversary's library;
- ``merge``: unimportant inputs sampled separately are sampled together (the unimportant
  inputs of one node, or of two nodes).

Every candidate is evaluated with the same references and random numbers, so the differences are
paired; the search is greedy within an evaluation budget.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from .. import validate as V
from ..errors import InputError
from ..executor import Executor, on_executor
from ..graph import ComponentGraph, graph_for
from ..models.model import Model
from ..progress import Progress
from ..stats import mean_se
from .data import Feature, ScrubData
from .evaluate import finish
from .hypothesis import Hypothesis, InterpNode, Joined, hypothesis_first, join, trees
from .metrics import ScrubBehaviour as Behaviour
from .paths import Route, to
from .plan import plan
from .preparation import (
    as_data,
    as_model,
    check_rewrites,
    check_scrub_args,
    prepare,
    seq_len,
    tensor_task_graph,
)
from .results import AdversaryResult, ScrubResult
from .samplers import Exact, Random, SameFeature
from .sampling import stream


@dataclass(frozen=True, eq=False)
class Refinement:
    """One adversarial refinement of a hypothesis (see the module docstring)."""

    kind: str
    node: str
    target: Route | None = None
    feature: tuple[str, Feature] | None = None
    other: str | None = None

    def describe(self) -> str:
        if self.kind == "node":
            assert self.target is not None
            return f"under {self.node}: {self.target.describe()} is important"
        if self.kind == "feature":
            assert self.feature is not None
            return f"{self.node} also agrees on {self.feature[0]}"
        if self.kind == "merge":
            if self.other is None:
                return f"sample the unimportant inputs of {self.node} together"
            return f"sample the unimportant inputs of {self.node} and {self.other} together"
        return self.kind

    def build(self, h: Hypothesis) -> Hypothesis:
        """The adversary's hypothesis: ``h``'s points with no conditions, plus this refinement."""
        sh, nodes = shadow(h)
        if self.node not in nodes:
            raise InputError(f"refinement: {h.name!r} has no node {self.node!r}")
        n = nodes[self.node]
        if self.kind == "node":
            assert self.target is not None
            label = "adv:" + (self.target.target or "input").replace("/", ":")
            n.add(InterpNode(label, self.target, Exact()))
        elif self.kind == "feature":
            assert self.feature is not None
            n.sampler = SameFeature(self.feature[1])
        elif self.kind == "merge":
            if self.other is None:
                n.unimportant = "per_node"
            else:
                n.other_group = "adv:merge"
                nodes[self.other].other_group = "adv:merge"
        else:
            raise InputError(f"unknown refinement kind {self.kind!r}")
        sh.name = self.describe()
        return sh


def shadow(h: Hypothesis) -> tuple[Hypothesis, dict[str, InterpNode]]:
    """A hypothesis with ``h``'s nodes and paths (and modes) but no conditions: joined with
    ``h`` it changes nothing; the adversary adds one refinement to it."""
    base = h.members[0] if isinstance(h, Joined) else h
    new = Hypothesis(
        f"{base.name} (shadow)",
        sampler=Random(),
        other=Random(),
        unimportant=base.unimportant,
        rewrites=base.rewrites,
    )
    new.root.leaf = False
    made: dict[int, InterpNode] = {id(base.root): new.root}
    names: dict[str, InterpNode] = {"root": new.root}
    modes = {t.name: t.unimportant for t in base.treeify().nodes.values()}

    def copy(src: InterpNode, dst: InterpNode) -> None:
        for c in src.children:
            got = made.get(id(c))
            if got is None:
                got = InterpNode(
                    c.name,
                    c.routes,
                    Random(),
                    other=Random(),
                    unimportant=modes[c.name],
                    leaf=False,
                )
                made[id(c)] = got
                names[c.name] = got
                copy(c, got)
            dst.children.append(got)

    copy(base.root, new.root)
    new.root.unimportant = modes["root"]
    return new, names


def candidates(
    h: Hypothesis,
    graph: ComponentGraph,
    features: Mapping[str, Feature] | None = None,
    *,
    max_nodes_per_point: int = 64,
) -> list[Refinement]:
    """Every refinement the adversary may try on ``h``: important components under each open
    node, library features for each conditioned node, merges of unimportant inputs."""
    base = h.members[0] if isinstance(h, Joined) else h
    tree = base.treeify()
    out: list[Refinement] = []
    for node in tree.root.walk():
        if node.is_leaf:
            continue
        points = (
            [graph.output]
            if node.parent is None
            else [r.target for r in node.routes if r.target is not None and not r.at_input]
        )
        claimed = {r.target for c in node.children for r in c.routes}
        for t in points:
            senders = [s for p in graph.ports(t) for s in graph.senders(t, p)]
            seen: list[str] = []
            for s in senders:
                if s in claimed or s in seen or (graph.node(s).is_input and node.parent is None):
                    continue
                seen.append(s)
            for s in seen[:max_nodes_per_point]:
                out.append(Refinement("node", node.name, to(s, direct=True)))
        if node.unimportant == "per_input":
            out.append(Refinement("merge", node.name))
    opens = [n for n in tree.root.walk() if not n.is_leaf]
    for i, a in enumerate(opens):
        for b in opens[i + 1 :]:
            out.append(Refinement("merge", a.name, other=b.name))
    for node in tree.root.walk():
        if isinstance(node.sampler, Exact):
            continue
        for fname, f in (features or {}).items():
            out.append(Refinement("feature", node.name, feature=(fname, f)))
    return out


@V.reordered_arguments(("model", "hypothesis", "data"), hypothesis_first)
@on_executor
def adversary(
    model: Model | nn.Module,
    data: Any,
    hypothesis: Hypothesis,
    n: int | None = None,
    *,
    behaviour: Behaviour | None = None,
    features: Mapping[str, Feature] | None = None,
    refinements: Sequence[Refinement] | None = None,
    budget: int = 32,
    steps: int = 1,
    min_z: float = 3.0,
    graph: ComponentGraph | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    progress: Progress | None = None,
    max_memory: int | None = None,
    executor: str | Executor | None = None,
) -> AdversaryResult:
    """Adversarial validation: evaluate up to ``budget`` refinements (joined with the
    hypothesis), greedily keep the one that raises the scrubbed loss most (lowers the score),
    if it does so by at least ``min_z`` paired standard errors, and repeat for ``steps``.

    ``features``: the adversary's library of candidate features (name -> feature);
    ``refinements``: an explicit list instead of the generated candidates.
    ``max_memory``: bytes one chunk of reference rows may use (default: the configured memory
    budget); ``batch_size`` (reference rows per chunk) is deprecated for one release.
    ``executor``: where the chunks of reference rows run for this call (``"ray"``, an
    :class:`~faithlens.executor.Executor`, or ``None``: the one in force); the numbers do not
    change.
    """
    V.positive_int("budget", budget, fix="allow at least one evaluation, e.g. 32")
    V.positive_int("steps", steps, fix="take at least one refinement step")
    V.finite_float("min_z", min_z, low=0.0, fix="use e.g. 3.0 standard errors")
    check_scrub_args(
        n=n, seed=seed, batch_size=batch_size, progress=progress, max_memory=max_memory
    )
    V.replaced_knob("adversary", "batch_size", batch_size, "max_memory", max_memory)
    s = _start_search(model, hypothesis, data, behaviour, features, refinements, graph, seed)
    for step in range(steps):
        trial, tried = _propose(s, hypothesis, step, budget)
        if not trial:
            break
        prep = prepare(
            s.model,
            s.current,
            s.pool,
            n,
            behaviour=s.behaviour,
            graph=s.graph,
            baselines={"random": "random", **trial},
            seed=seed,
        )
        if step == 0:
            check_rewrites(prep)
        res = finish(
            prep,
            batch_size=batch_size,
            seed=seed,
            n_boot=200,
            progress=progress,
            max_memory=max_memory,
        )
        s.used += len(trial)
        if s.first is None:
            s.first = res
        s.last = res
        best = _score_trial(s, res, tried, trial, step, min_z)
        if best is None:
            break
        s.chosen.append(best[1])
        s.current = best[2]
    return _adversary_result(s, hypothesis, budget)


@dataclass(eq=False)
class _Search:
    """The adversary's state: the model, data and graphs it scores on, the refinements still to
    try (in their seeded order), what it chose so far and every candidate's row."""

    model: Model
    pool: ScrubData
    behaviour: Behaviour | None
    graph: ComponentGraph
    rewritten: ComponentGraph
    seq: int | None
    queue: list[Refinement]
    current: Hypothesis
    sign: float
    chosen: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)
    used: int = 0
    first: ScrubResult | None = None
    last: ScrubResult | None = None


def _start_search(
    model: Model | nn.Module,
    hypothesis: Hypothesis,
    data: Any,
    behaviour: Behaviour | None,
    features: Mapping[str, Feature] | None,
    refinements: Sequence[Refinement] | None,
    graph: ComponentGraph | None,
    seed: int,
) -> _Search:
    """The model, data and graph, and the candidate refinements in their seeded order."""
    m = as_model(model)
    g_tensors = tensor_task_graph(m, data, graph)
    pool, default_b = as_data(data, g_tensors)
    beh = behaviour or default_b
    g = g_tensors if g_tensors is not None else graph if graph is not None else graph_for(m)
    gr = g
    for rw in hypothesis.rewrites:
        gr = rw.apply(gr)
    cands = list(refinements) if refinements is not None else candidates(hypothesis, gr, features)
    if not cands:
        raise InputError("the adversary has no refinement to try (give features= or refinements=)")
    order = np.argsort(stream(seed, "adversary", len(cands))[0], kind="stable")
    queue = [cands[i] for i in order]
    seq = seq_len(gr, pool)
    sign = 1.0 if not (beh is not None and beh.higher_is_better) else -1.0
    return _Search(m, pool, beh, g, gr, seq, queue, hypothesis, sign)


def _propose(
    s: _Search, hypothesis: Hypothesis, step: int, budget: int
) -> tuple[dict[str, Hypothesis], list[Refinement]]:
    """The next refinements that plan (joined with the current hypothesis), within the budget;
    the ones that do not plan get an invalid row."""
    trial: dict[str, Hypothesis] = {}
    tried: list[Refinement] = []
    while s.queue and s.used + len(trial) < budget:
        r = s.queue.pop(0)
        try:
            cand = join(s.current, r.build(hypothesis), name=r.describe())
            plan(trees(cand), s.rewritten, seq=s.seq, n=None, columns=s.pool.__getitem__)
        except InputError as e:
            s.rows.append(
                {
                    "step": step,
                    "refinement": r.describe(),
                    "kind": r.kind,
                    "expectation": np.nan,
                    "delta": np.nan,
                    "se_delta": np.nan,
                    "z": -np.inf,
                    "valid": False,
                    "why": str(e)[:200],
                }
            )
            continue
        trial[r.describe()] = cand
        tried.append(r)
    return trial, tried


def _score_trial(
    s: _Search,
    res: ScrubResult,
    tried: list[Refinement],
    trial: dict[str, Hypothesis],
    step: int,
    min_z: float,
) -> tuple[float, str, Hypothesis] | None:
    """A row per evaluated refinement (paired difference from the scrubbed loss, its z); the
    refinement that moves the metric most, if by at least ``min_z``."""
    sign = s.sign
    best: tuple[float, str, Hypothesis] | None = None
    for r in tried:
        name = r.describe()
        v = res.baseline(name)
        d = v - res.scrubbed
        md, se = mean_se(d)
        z = sign * float(md) / float(se) if float(se) > 0 else (np.inf if sign * md > 0 else 0.0)
        s.rows.append(
            {
                "step": step,
                "refinement": name,
                "kind": r.kind,
                "expectation": float(v.mean()),
                "delta": float(md),
                "se_delta": float(se),
                "z": float(z),
                "valid": True,
                "why": "",
            }
        )
        if z >= min_z and (best is None or sign * float(md) > best[0]):
            best = (sign * float(md), name, trial[name])
    return best


def _adversary_result(s: _Search, hypothesis: Hypothesis, budget: int) -> AdversaryResult:
    first, last, chosen = s.first, s.last, s.chosen
    assert first is not None and last is not None
    final = last.baseline(chosen[-1]).mean() if chosen else last.expectation
    try:
        after = (
            (float(last.baseline("random").mean()) - float(final))
            / (float(last.baseline("random").mean()) - last.original_expectation)
            * 100.0
        )
    except ZeroDivisionError:  # pragma: no cover
        after = float("nan")
    table = pd.DataFrame(s.rows)
    return AdversaryResult(
        hypothesis=hypothesis.name,
        behaviour=first.behaviour,
        higher_is_better=first.higher_is_better,
        original=first.original_expectation,
        base_expectation=first.expectation,
        base_se=first.se,
        final_expectation=float(final),
        candidates=table,
        chosen=chosen,
        evaluations=s.used,
        budget=budget,
        final_description=s.current.describe(),
        recovered_before=first.recovered("random"),
        recovered_after=after,
    )


__all__ = ["Refinement", "adversary", "candidates", "shadow"]
