"""Node-level scores: every attention head and MLP as one node (all its outgoing edges at once).

A node ``u`` (a writer: ``a{L}.h{H}`` or ``m{L}``) is scored in the noising direction, as the
edges are: every reader receives ``u``'s output on the corrupted input and everything else runs
clean, i.e. activation patching of ``u``'s output.

- ``exact_nodes(model, data, ...)``: ``m(u corrupted) - m(clean)`` per example, by activation
  patching of the head's output (``head.L.H``) or the MLP's (``mlp_out.L``) through
  :func:`faithlens.patch` (``direction="noising"``, every position);
- ``node_scores(edge_scores)`` for EAP and EAP-IG: a node's attribution is
  ``(u(corrupt) - u(clean)) . dm/du``, and since ``u``'s output enters the residual stream that
  every later reader port reads, ``dm/du`` is the sum of those ports' gradients: the node's
  score is exactly the sum of its outgoing edges' per-example values (no new forward pass).
  Exact edge patching and ACDC are not additive over edges and are refused (use
  :func:`exact_nodes`, or :func:`faithlens.circuits.acdc_nodes` for ACDC over nodes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from .. import validate
from ..errors import InputError
from ..models.model import Model
from ..progress import Progress
from ..results import Estimate, Result
from ..stats import mean_interval
from ..tasks.base import Task
from ..tasks.metrics import Metric
from .common import prepare
from .scores import EdgeScores

#: Edge scorers whose values add up over a node's outgoing edges.
ADDITIVE = ("eap", "eap-ig")


@dataclass(frozen=True, eq=False)
class NodeScores(Result):
    """The score of every head and MLP (one row per node, in forward order): ``score`` is the
    mean over examples of the metric's change when the node's output alone carries the
    corrupted input (or its first-order estimate), with ``score_se``, ``score_ci_low`` and
    ``score_ci_high`` (BCa bootstrap over examples); ``values [n_nodes, n]`` per example."""

    node: list[str]
    kind: list[str]
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
                "node": self.node,
                "kind": self.kind,
                "score": self.score,
                "score_se": self.score_se,
                "score_ci_low": self.score_ci_low,
                "score_ci_high": self.score_ci_high,
                "level": np.full(len(self.node), self.level),
            }
        )

    def __getitem__(self, node: str) -> float:
        if node not in self.node:
            raise InputError(f"{node!r} is not a node of these scores; e.g. {self.node[:3]}")
        return float(self.score[self.node.index(node)])

    def top(self, k: int = 10) -> pd.DataFrame:
        """The ``k`` nodes with the largest ``|score|``."""
        k = validate.nonnegative_int("k", k, fix="the number of nodes, e.g. 10")
        order = np.argsort(-np.abs(np.nan_to_num(self.score)), kind="stable")[:k]
        return self.to_frame().iloc[order].reset_index(drop=True)

    def _what(self) -> str:
        if "kept" not in self.meta:
            return "the metric when the node's output alone is corrupted"
        return (
            f"{self.meta.get('objective', 'the objective')} when the node was pruned "
            f"(tau={self.meta.get('tau', '?')}); {len(self.meta['kept'])} nodes kept"
        )

    def summary(self, k: int = 10) -> str:
        lines = [
            f"{self.method} node scores of {self.model} on {self.task}: {len(self.node)} nodes, "
            f"n={self.n} examples",
            f"metric {self.metric}: clean {float(self.clean.mean()):.3f}, corrupted "
            f"{float(self.corrupt.mean()):.3f}; score = mean change of {self._what()}; "
            f"{round(self.level * 100)}% bootstrap CIs",
        ]
        iv = self.interval_of("score")
        for _, r in self.top(k).iterrows():
            lines.append(f"  {r['node']:<10} {iv[self.node.index(r['node'])]:+.4f}")
        return "\n".join(lines)


def build_node_scores(
    nodes: list[str],
    kinds: list[str],
    values: np.ndarray,
    clean: np.ndarray,
    corrupt: np.ndarray,
    *,
    method: str,
    metric: str,
    model: str,
    task: str,
    n_boot: int,
    level: float,
    seed: int,
    meta: dict[str, Any],
) -> NodeScores:
    """A :class:`NodeScores` from per-example values ``[n_nodes, n]``: each node's mean over
    examples with its bootstrap interval."""
    est = mean_interval(values, n_boot=n_boot, level=level, seed=seed)
    return NodeScores(
        node=nodes,
        kind=kinds,
        score=np.asarray(est.estimate, dtype=np.float64),
        score_se=np.asarray(est.se, dtype=np.float64),
        score_ci_low=np.asarray(est.low, dtype=np.float64),
        score_ci_high=np.asarray(est.high, dtype=np.float64),
        values=values,
        clean=clean,
        corrupt=corrupt,
        method=method,
        metric=metric,
        model=model,
        task=task,
        level=level,
        n_boot=n_boot,
        seed=seed,
        meta=meta,
    )


def node_scores(scores: EdgeScores) -> NodeScores:
    """The node scores of EAP or EAP-IG edge scores: each head's and MLP's outgoing edges'
    per-example values summed (module docstring), with the scores' bootstrap settings."""
    if not isinstance(scores, EdgeScores):
        raise validate.fail(
            "scores", type(scores).__name__, "must be an EdgeScores", "pass fl.circuits.eap(...)"
        )
    if scores.method not in ADDITIVE:
        raise validate.fail(
            "scores",
            f"{scores.method} scores",
            "only EAP and EAP-IG scores add up over a node's edges",
            "use fl.circuits.exact_nodes(model, data) for exact node scores "
            "(fl.circuits.acdc_nodes for ACDC over nodes)",
        )
    nodes: list[str] = []
    for w in scores.writer:
        if w != "input" and w not in nodes:
            nodes.append(w)
    writer = np.asarray(scores.writer)
    values = np.stack([scores.values[writer == u].sum(0) for u in nodes])
    return build_node_scores(
        nodes,
        ["head" if u.startswith("a") else "mlp" for u in nodes],
        values,
        scores.clean,
        scores.corrupt,
        method=scores.method,
        metric=scores.metric,
        model=scores.model,
        task=scores.task,
        n_boot=scores.n_boot,
        level=scores.level,
        seed=scores.seed,
        meta={**scores.meta, "from": "edge scores"},
    )


def exact_nodes(
    model: Model,
    data: Task,
    *,
    metric: str | Metric | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    max_memory: int | None = None,
    progress: Progress | None = None,
) -> NodeScores:
    """Every head's and MLP's effect when its output alone is corrupted (activation patching
    of the node, noising, every position). Arguments as :func:`faithlens.circuits.exact`."""
    from ..patching import patch

    task, eg = prepare("circuits.exact_nodes", model, data, metric, n_boot, level, seed, max_memory)
    writers = [w for w in eg.writers if w.kind in ("head", "mlp")]
    res = patch(
        model,
        task,
        sites=[w.site for w in writers],
        direction="noising",
        n_boot=n_boot,
        level=level,
        seed=seed,
        max_memory=max_memory,
        progress=progress,
    )
    clean = np.asarray(res.base, dtype=np.float64)
    values = np.asarray(res.patched, dtype=np.float64) - clean[None]
    return build_node_scores(
        [w.name for w in writers],
        [w.kind for w in writers],
        values,
        clean,
        np.asarray(res.source, dtype=np.float64),
        method="exact",
        metric=task.metric.name,
        model=model.name,
        task=task.name,
        n_boot=n_boot,
        level=level,
        seed=seed,
        meta={"direction": "noising", "positions": "all"},
    )


__all__ = ["ADDITIVE", "NodeScores", "build_node_scores", "exact_nodes", "node_scores"]
