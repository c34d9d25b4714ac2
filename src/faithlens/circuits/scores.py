"""``EdgeScores``: one score per edge with a bootstrap interval, and the ``Circuit`` it selects."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from .. import validate
from ..errors import InputError
from ..results import Estimate, Result, plotter_for
from ..scrubbing import Hypothesis, Sampler
from .hypothesis import circuit_hypothesis, heads_per_group
from .select import connected, greedy

if TYPE_CHECKING:
    from matplotlib.figure import Figure


@dataclass(frozen=True)
class Circuit:
    """A set of edges (MIB names, ``"a0.h1->a2.h0<q>"``) chosen from an :class:`EdgeScores`.

    ``how`` says how it was chosen (``"top_k=20"``, ``"threshold=0.1"``); ``of`` is the number of
    edges it was chosen from; ``scores`` the chosen edges' scores, in the order of ``edges``
    (empty for a circuit written by hand), which :meth:`plot` draws.
    """

    edges: tuple[str, ...]
    how: str = ""
    of: int = 0
    model: str = ""
    scores: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.scores and len(self.scores) != len(self.edges):
            raise validate.fail(
                "scores",
                f"{len(self.scores)} values",
                f"must give one score per edge ({len(self.edges)})",
                "pass scores aligned with edges, or none",
            )

    def __len__(self) -> int:
        return len(self.edges)

    def __contains__(self, edge: object) -> bool:
        return edge in set(self.edges)

    @property
    def nodes(self) -> list[str]:
        """The writers and readers (MIB names, ports and positions dropped) the circuit's
        edges touch."""
        out: dict[str, None] = {}
        for e in self.edges:
            w, _, r = e.partition("->")
            out.setdefault(w)
            out.setdefault(r.partition("@")[0].split("<")[0])
        return list(out)

    def to_hypothesis(
        self,
        name: str | None = None,
        *,
        model: Any = None,
        unimportant: str = "per_node",
        other: Sampler | str | None = None,
    ) -> Hypothesis:
        """The causal-scrubbing hypothesis that the circuit's edges matter and every other path
        can be resampled (:mod:`faithlens.circuits.hypothesis`): score it with
        ``fl.scrub(model, hypothesis=circuit.to_hypothesis(model=model), data=task)``.
        ``model`` (a faithlens Model) gives the query heads per key/value group, needed when the
        circuit has edges into grouped key/value ports (``a{L}.kv{G}<k>``); ``unimportant``: how
        its unimportant inputs are sampled (``"per_node"``, ``"per_input"``, ``"global"``; a
        large circuit in the ``"global"`` mode is scored without a tree by
        :func:`faithlens.circuits.scrub`); ``other``: their sampler (default ``Random()``;
        :func:`~faithlens.circuits.hypothesis.circuit_hypothesis`)."""
        group = heads_per_group(model) if model is not None else None
        return circuit_hypothesis(
            self.edges,
            name or f"circuit ({self.how or len(self)})",
            group=group,
            unimportant=unimportant,
            other=other,
        )

    def plot(self, ax: Any = None) -> Figure:
        """The circuit drawn layer by layer (:func:`faithlens.report.circuits.circuit_plot`):
        the embedding at the bottom, each layer's heads and then its MLP above it, the logits at
        the top; an edge arrives at its head's left, middle or right for a query, key or value
        port; its width grows with ``|score|`` and its colour says the sign (blue positive, red
        negative; grey without scores)."""
        fn = plotter_for(type(self))
        if fn is None:
            raise NotImplementedError(
                "no plotter is registered for Circuit: import faithlens (faithlens.report "
                "registers it)"
            )
        return fn(self, ax=ax)

    def summary(self) -> str:
        share = f" of {self.of}" if self.of else ""
        return f"circuit of {self.model or 'a model'} ({self.how}): {len(self)}{share} edges"


@dataclass(frozen=True, eq=False)
class EdgeScores(Result):
    """The score of every edge of a model's edge graph on a task (one row per edge).

    ``score`` is the mean over examples of an edge's effect on the metric when the edge alone
    carries the corrupted input (noising; negative when corrupting it lowers the metric):
    ``m(edge corrupted) - m(clean)`` for exact patching, its first-order estimate
    ``(u(corrupt) - u(clean)) . dm/d(reader input)`` for EAP (for EAP-IG with the gradient
    averaged along the path between the input embeddings). ``score_se``, ``score_ci_low``
    and ``score_ci_high`` are the bootstrap standard error and ``level`` confidence interval
    over examples (BCa). ``values`` holds the per-example values ``[n_edges, n]``; ``clean``
    and ``corrupt`` the metric of the unpatched runs ``[n]``.
    """

    edge: list[str]
    writer: list[str]
    reader: list[str]
    score: np.ndarray
    score_se: np.ndarray
    score_ci_low: np.ndarray
    score_ci_high: np.ndarray
    values: np.ndarray
    clean: np.ndarray
    corrupt: np.ndarray
    method: str = "exact"
    metric: str = "logit_diff"
    model: str = ""
    task: str = ""
    level: float = 0.95
    n_boot: int = 1000
    seed: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    INTERVALS: ClassVar[dict[str, Estimate]] = {
        "score": Estimate("score", "score_se", "score_ci_low", "score_ci_high")
    }

    @property
    def n(self) -> int:
        return int(self.clean.shape[0])

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "edge": self.edge,
                "writer": self.writer,
                "reader": self.reader,
                "score": self.score,
                "score_se": self.score_se,
                "score_ci_low": self.score_ci_low,
                "score_ci_high": self.score_ci_high,
                "level": np.full(len(self.edge), self.level),
            }
        )

    def __getitem__(self, edge: str) -> float:
        """The score of one edge, by name."""
        try:
            return float(self.score[self.edge.index(edge)])
        except ValueError:
            raise InputError(
                f"{edge!r} is not an edge of these scores; e.g. {self.edge[:3]}"
            ) from None

    def _key(self, by: str) -> np.ndarray:
        """What edges are ranked by: ``|score|`` or the score, an edge without a score (NaN)
        last in both."""
        validate.choice("by", by, ("abs", "value"))
        key = np.abs(self.score) if by == "abs" else np.asarray(self.score, dtype=float)
        return np.where(np.isnan(key), -np.inf, key)

    def _order(self, by: str) -> np.ndarray:
        return np.argsort(-self._key(by), kind="stable")

    def ranking(self, by: str = "abs") -> np.ndarray:
        """Edge indices from the highest-ranked down, by ``|score|`` (``by="abs"``) or score
        (``"value"``); ties in the order of the edge graph (as :meth:`top_k` ranks them)."""
        return self._order(by)

    def top(self, k: int = 10, by: str = "abs") -> pd.DataFrame:
        """The ``k`` edges with the largest score (``by="abs"``) or most positive (``"value"``)."""
        k = validate.nonnegative_int("k", k, fix="the number of edges, e.g. 10")
        df = self.to_frame()
        return df.iloc[self._order(by)[:k]].reset_index(drop=True)

    def top_k(self, k: int, by: str = "abs") -> Circuit:
        """The circuit of the ``k`` edges with the largest ``|score|`` (``by="abs"``, the
        default, as MIB ranks them) or the largest score (``"value"``); ties in the order of
        the edge graph."""
        k = validate.positive_int("k", k, fix="the number of edges to keep, e.g. 20")
        if k > len(self.edge):
            raise validate.fail(
                "k", k, f"must be at most the number of edges ({len(self.edge)})", "keep fewer"
            )
        idx = sorted(self._order(by)[:k].tolist())
        return self._circuit(idx, f"top_k={k}")

    def threshold(self, t: float, by: str = "abs") -> Circuit:
        """The circuit of the edges whose ``|score|`` (``by="abs"``) or score (``"value"``) is at
        least ``t``."""
        t = validate.finite_float("t", t, fix="a score threshold, e.g. 0.05")
        keep = np.nonzero(self._key(by) >= t)[0]
        return self._circuit(keep.tolist(), f"threshold={t:g}")

    def greedy(self, k: int, by: str = "abs", prune: bool = True) -> Circuit:
        """A connected circuit of at most ``k`` edges grown from the logits backwards: start
        from the output and repeatedly add the edge with the largest ``|score|`` (``by="abs"``)
        or score (``"value"``) among the edges into a component already in the circuit (EAP-IG's
        and MIB's greedy selection); with ``prune`` (the default), the edges on no path from
        the input to the logits are then dropped (so the circuit may have fewer than ``k``).
        Per-position scores (``positions="each"``) are grown the same way over (edge, position)
        pairs, with the components' connectivity (an edge at any position brings in its
        writer)."""
        k = validate.positive_int("k", k, fix="the number of edges to keep, e.g. 20")
        validate.choice("by", by, ("abs", "value"))
        edges = [self.edge[i] for i in greedy(self.edge, self._key(by), k)]
        if prune:
            edges = connected(edges, self.edge)
        at = {e: i for i, e in enumerate(self.edge)}
        return self._circuit([at[e] for e in edges], f"greedy={k}")

    def kept(self) -> Circuit:
        """The circuit a pruning method kept (:func:`faithlens.circuits.acdc`: its edges that
        were not pruned); other scorers keep no circuit of their own (use :meth:`top_k`)."""
        if "kept" not in self.meta:
            raise InputError(
                f"{self.method} scores keep no circuit of their own; choose one with "
                "top_k(k) or threshold(t), or run fl.circuits.acdc"
            )
        keep = set(self.meta["kept"])
        how = f"{self.method} tau={self.meta.get('tau', '?')}"
        return self._circuit([i for i, e in enumerate(self.edge) if e in keep], how)

    def _circuit(self, idx: list[int], how: str) -> Circuit:
        """The circuit of the edges at ``idx`` (in that order), with their scores."""
        return Circuit(
            tuple(self.edge[i] for i in idx),
            how,
            len(self.edge),
            self.model,
            tuple(float(self.score[i]) for i in idx),
        )

    def stability(
        self, k: int, *, n_resamples: int = 200, seed: int = 0, by: str = "abs"
    ) -> np.ndarray:
        """How often each edge is among the ``k`` top-ranked edges (as :meth:`top_k` ranks
        them) when the examples are resampled with replacement: a fraction per edge, in edge
        order. Edges whose rank depends on which examples were drawn have values between 0
        and 1."""
        k = validate.positive_int("k", k, fix="the circuit size, e.g. 20")
        n_resamples = validate.positive_int("n_resamples", n_resamples, fix="e.g. 200")
        seed = validate.nonnegative_int("seed", seed)
        validate.choice("by", by, ("abs", "value"))
        n_edges, n = self.values.shape
        rng = np.random.default_rng(seed)
        counts = np.zeros(n_edges)
        step = max(1, (32 << 20) // max(1, 8 * n_edges * n))
        for start in range(0, n_resamples, step):
            b = min(step, n_resamples - start)
            means = self.values[:, rng.integers(0, n, (b, n))].mean(-1)  # [n_edges, b]
            key = np.abs(means) if by == "abs" else means
            key = np.where(np.isnan(key), -np.inf, key)
            top = np.argsort(-key, axis=0, kind="stable")[: min(k, n_edges)]
            counts += np.bincount(top.ravel(), minlength=n_edges)
        return counts / n_resamples

    def summary(self, k: int = 10) -> str:
        what = "the metric when the edge alone carries the corrupted input"
        if "kept" in self.meta:
            what = (
                f"{self.meta.get('objective', 'the objective')} when the edge was pruned "
                f"(tau={self.meta.get('tau', '?')}); {len(self.meta['kept'])} edges kept"
            )
        lines = [
            f"{self.method} edge scores of {self.model} on {self.task}: {len(self.edge)} edges, "
            f"n={self.n} examples",
            f"metric {self.metric}: clean {float(self.clean.mean()):.3f}, corrupted "
            f"{float(self.corrupt.mean()):.3f}; score = mean change of {what}; "
            f"{round(self.level * 100)}% bootstrap CIs",
        ]
        iv = self.interval_of("score")
        for _, r in self.top(k).iterrows():
            i = self.edge.index(r["edge"])
            lines.append(f"  {r['edge']:<24} {iv[i]:+.4f}")
        return "\n".join(lines)


__all__ = ["Circuit", "EdgeScores"]
