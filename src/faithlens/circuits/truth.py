"""Scoring an edge ranking against a circuit known to be true.

``edge_auroc(scores, truth)`` is the area under the ROC curve of ranking a model's edges by
their score, with the edges of the true circuit as the positives: the probability that a true
edge outranks an edge outside the circuit (ties count one half, so a method that gives every
edge the same score has 0.5; scores within ``rtol`` of zero, relative to the largest, tie at
zero). The interval comes from a bootstrap over the **examples**: each
resample of the examples recomputes every edge's mean score from the stored per-example values
(``EdgeScores.values``) and the AUROC of that ranking (percentile interval, seeded). The true
circuit is held fixed: the uncertainty is the ranking's, from the examples it was measured on.

Circuits known by construction come with tracr's compiled models
(:func:`faithlens.zoo.tracr.tracr_circuit`).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from scipy.stats import rankdata

from .. import validate
from ..stats import Interval
from .scores import EdgeScores


def auroc(scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """AUROC of ``scores`` (``[..., n_edges]``, larger = more likely positive) against the
    boolean ``positive`` (``[n_edges]``): the Mann-Whitney statistic, ties counted one half."""
    pos = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    ranks = rankdata(scores, axis=-1)  # average ranks for ties
    r_pos = ranks[..., pos].sum(-1)
    return np.asarray((r_pos - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg), dtype=np.float64)


def edge_auroc(
    scores: EdgeScores,
    truth: Iterable[str],
    *,
    by: str = "abs",
    rtol: float = 1e-6,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """The AUROC of ``scores``' edge ranking against the true circuit ``truth`` (edge names),
    with a bootstrap interval over examples (module docstring).

    Args:
        scores: an :class:`EdgeScores` (from ``fl.circuits.exact``, ``eap``, ``eap_ig``).
        truth: the edges of the true circuit (e.g. ``tracr_circuit(name).edges``); every one
            must be an edge of ``scores``, and some edges must be outside it.
        by: rank by ``"abs"`` (``|mean score|``, as ``top_k`` does) or ``"value"`` (the signed
            mean, largest first).
        rtol: mean scores within ``rtol`` times the largest ``|mean score|`` of zero count as
            zero (tied): float noise, such as a gradient that is zero in exact arithmetic
            evaluating to 1e-19, must not rank above an exact zero.
        n_boot, level, seed: the bootstrap over examples (percentile interval).
    """
    if not isinstance(scores, EdgeScores):
        raise validate.fail("scores", scores, "must be an EdgeScores (fl.circuits.exact/eap/...)")
    if isinstance(truth, str):
        raise validate.fail("truth", truth, "must be a collection of edge names, not one string")
    true = list(truth)
    known = set(scores.edge)
    unknown = [e for e in true if e not in known]
    if unknown:
        raise validate.fail(
            "truth",
            unknown[:5],
            f"names edges that {scores.model} does not have",
            f"edges are named like {scores.edge[:2]}",
        )
    positive = np.isin(np.asarray(scores.edge, dtype=object), np.asarray(true, dtype=object))
    if not positive.any() or positive.all():
        raise validate.fail(
            "truth", len(true), "must hold some but not all of the edges (an AUROC needs both)"
        )
    by = validate.choice("by", by, ("abs", "value"))
    n_boot = validate.n_boot(n_boot)
    level = validate.level(level)
    seed = validate.nonnegative_int("seed", seed)
    rtol = validate.finite_float("rtol", rtol, low=0.0, high=1.0, high_open=True)
    values = np.asarray(scores.values, dtype=np.float64)  # [n_edges, n]

    def rank(means: np.ndarray) -> np.ndarray:
        tiny = np.abs(means) <= rtol * np.abs(means).max()
        means = np.where(tiny, 0.0, means)
        return np.abs(means) if by == "abs" else means

    est = float(auroc(rank(values.mean(-1)), positive))
    n = values.shape[1]
    rng = np.random.default_rng(seed)
    boot = np.empty(n_boot)
    for b in range(n_boot):
        idx = rng.integers(0, n, size=n)
        boot[b] = auroc(rank(values[:, idx].mean(-1)), positive)
    alpha = (1 - level) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    return Interval(est, float(boot.std(ddof=1)), float(low), float(high), level)


__all__ = ["auroc", "edge_auroc"]
