"""Validation on synthetic units whose true concepts and population similarities are known.

The design (replication target R1 of the spec): ``M`` independent binary concepts; concept 0
has frequency ``p``, the others are drawn once from ``U(p_low, p_high)``; the unit is

    f = w0 · c0 + w1 · c1 + N(0, 1),

so concept 0 is the true explanation and concept 1 a weaker distractor. Every population
similarity is available in closed form (normal tails), at any firing threshold: the simulation
checks the bounds against the exact population value at the threshold each repetition used,
which is what the bounds claim to cover. Repetitions run as one batch: each repetition is a
"unit" with its own probing set (the engine's paired mode).

Reported per metric and probing-set size ``n``: the simultaneous coverage of the bounds (the
fraction of repetitions in which *every* concept's population similarity lies in its
interval; the theorem says at least ``1 - delta``), the 95th percentile of the largest deviation
``sup_c |ŝim - sim|`` next to the median bound, how often the right concept wins, is certified,
or is certified wrongly (at most ``delta``), and with a bootstrap the coverage of the BE
prediction sets for the true concept and for the winner on fresh data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from scipy import stats as _st

from .. import stats
from .. import validate as V
from ..errors import InputError
from ..results import Result, with_intervals
from . import bounds as _b
from .explain import (
    DIRECTIONS,
    as_metrics,
    bootstrap_pass,
    full_pass,
    theory_intervals,
    unit_blocks,
)
from .kernels import FAMILIES, Problem, SoftWPMI, memory_budget, plan_chunks


@dataclasses.dataclass(frozen=True)
class Design:
    """The synthetic population: concept frequencies and the unit's weights."""

    freqs: tuple[float, ...]
    w0: float
    w1: float

    def _cells(self) -> list[tuple[float, float, float]]:
        """(probability, c0, c1) for the four cells of (c0, c1)."""
        p0, p1 = self.freqs[0], self.freqs[1]
        return [
            ((p0 if a else 1 - p0) * (p1 if b else 1 - p1), float(a), float(b))
            for a in (0, 1)
            for b in (0, 1)
        ]

    def rates(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Population ``A(t) = P(f > t)`` (``[R]``) and ``T_m(t) = P(f > t, c_m = 1)``
        (``[R, M]``) at thresholds ``t`` (``[R]``)."""
        t = np.asarray(t, dtype=np.float64)
        a = np.zeros_like(t)
        t0 = np.zeros_like(t)
        t1 = np.zeros_like(t)
        for prob, c0, c1 in self._cells():
            tail = prob * _st.norm.sf(t - self.w0 * c0 - self.w1 * c1)
            a += tail
            t0 += tail * c0
            t1 += tail * c1
        freqs = np.asarray(self.freqs)
        joint = a[:, None] * freqs[None, :]
        joint[:, 0] = t0
        joint[:, 1] = t1
        return a, joint

    def threshold_metric(self, kind: str, t: np.ndarray) -> np.ndarray:
        """Population value ``[R, M]`` of a thresholded metric at thresholds ``t``."""
        a, joint = self.rates(t)
        freqs = np.asarray(self.freqs)[None, :]
        q1 = joint / a[:, None]
        q0 = (freqs - joint) / (1 - a[:, None])
        return _b.metric_from_rates(kind, a[:, None], q1, q0)

    def auroc(self) -> np.ndarray:
        """Population AUROC of ``f`` for each concept (``[M]``)."""
        out = np.full(len(self.freqs), 0.5)
        p0, p1 = self.freqs[0], self.freqs[1]
        for m, (w_own, w_other, p_other) in enumerate(
            [(self.w0, self.w1, p1), (self.w1, self.w0, p0)]
        ):
            v = 0.0
            for b in (0, 1):
                for b2 in (0, 1):
                    pb = (p_other if b else 1 - p_other) * (p_other if b2 else 1 - p_other)
                    v += pb * _st.norm.cdf((w_own + w_other * (b - b2)) / np.sqrt(2))
            out[m] = v
        return out

    def correlation(self) -> np.ndarray:
        """Population Pearson correlation of ``f`` with each concept (``[M]``)."""
        f = np.asarray(self.freqs)
        var_f = self.w0**2 * f[0] * (1 - f[0]) + self.w1**2 * f[1] * (1 - f[1]) + 1.0
        out = np.zeros(len(f))
        for m, w in ((0, self.w0), (1, self.w1)):
            out[m] = w * f[m] * (1 - f[m]) / np.sqrt(var_f * f[m] * (1 - f[m]))
        return out

    def nominal_best(self, metric: str, kind: str | None, alpha: float) -> int:
        """The population-best concept at the nominal firing rate ``alpha``."""
        if metric == "auroc":
            return int(np.argmax(self.auroc()))
        if metric == "correlation":
            return int(np.argmax(self.correlation()))
        assert kind is not None
        # the threshold whose population firing rate is alpha
        from scipy.optimize import brentq

        t = brentq(lambda s: float(self.rates(np.array([s]))[0][0]) - alpha, -20, 20)
        return int(np.argmax(self.threshold_metric(kind, np.array([t]))[0]))

    def sample(self, n: int, reps: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``reps`` independent probing sets: activations ``[n, R]``, concepts ``[R, n, M]``."""
        freqs = np.asarray(self.freqs, dtype=np.float32)
        c = (rng.random((reps, n, len(freqs)), dtype=np.float32) < freqs).astype(np.float32)
        x = (
            self.w0 * c[:, :, 0]
            + self.w1 * c[:, :, 1]
            + rng.standard_normal((reps, n), dtype=np.float32)
        )
        return x.T.copy(), c


SUPPORTED = ("accuracy", "precision", "recall", "f1", "iou", "auroc", "correlation")


def simulate(
    metrics: str | Sequence[str] = ("accuracy", "iou", "auroc"),
    n: int | Sequence[int] = (100, 300, 1000, 3000),
    *,
    reps: int = 200,
    p: float = 0.1,
    n_concepts: int = 50,
    alpha: float | None = None,
    weights: tuple[float, float] = (2.0, 0.6),
    p_range: tuple[float, float] = (0.02, 0.3),
    p_distractor: float | None = None,
    delta: float = 0.05,
    n_boot: int = 0,
    level: float = 0.9,
    interval: str = "kl",
    direction: str = "unit_predicts_concept",
    seed: int = 0,
    max_memory: int | None = None,
) -> BoundValidation:
    """Check bounds and prediction sets on ``reps`` simulated probing sets per size ``n``.

    ``alpha`` (firing quantile of thresholded metrics) defaults to ``p``; ``p_distractor`` fixes
    the frequency of concept 1 (otherwise drawn like the others). With ``n_boot > 0``
    each repetition also gets a bootstrap ensemble and its BE set (coverage ``level``).
    Correlation has no theorem; it is checked through its bootstrap band (``n_boot >= 50``).
    """
    ms, sizes = _check_simulate_args(
        metrics,
        n,
        reps=reps,
        p=p,
        n_concepts=n_concepts,
        alpha=alpha,
        p_range=p_range,
        delta=delta,
        n_boot=n_boot,
        level=level,
        interval=interval,
        direction=direction,
        seed=seed,
        max_memory=max_memory,
    )
    a = p if alpha is None else float(alpha)
    rng = np.random.default_rng(seed)
    freqs = np.concatenate([[p], rng.uniform(p_range[0], p_range[1], n_concepts - 1)])
    if p_distractor is not None:
        if not 0 < p_distractor < 1:
            raise InputError("p_distractor must lie in (0, 1)")
        freqs[1] = p_distractor
    design = Design(tuple(float(f) for f in freqs), float(weights[0]), float(weights[1]))
    rows: list[dict[str, Any]] = []
    for size in sizes:
        rows += _simulate_size(
            design,
            size,
            ms,
            rng,
            reps=reps,
            alpha=a,
            delta=delta,
            n_boot=n_boot,
            level=level,
            interval=interval,
            direction=direction,
            max_memory=max_memory,
        )
    table = pd.DataFrame(rows)
    return BoundValidation(
        table=table,
        metrics=ms,
        sizes=sizes,
        reps=int(reps),
        p=float(p),
        alpha=float(a),
        n_concepts=int(n_concepts),
        weights=(float(weights[0]), float(weights[1])),
        delta=float(delta),
        n_boot=int(n_boot),
        level=float(level),
        interval=interval,
        seed=int(seed),
    )


def _check_simulate_args(
    metrics: str | Sequence[str],
    n: int | Sequence[int],
    *,
    reps: int,
    p: float,
    n_concepts: int,
    alpha: float | None,
    p_range: tuple[float, float],
    delta: float,
    n_boot: int,
    level: float,
    interval: str,
    direction: str,
    seed: int,
    max_memory: int | None,
) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Refuse a bad :func:`simulate` argument; the metrics and the probing-set sizes."""
    ms = as_metrics(metrics)
    bad = [m for m in ms if m not in SUPPORTED]
    if bad:
        raise InputError(f"simulate supports {list(SUPPORTED)}, not {bad}")
    sizes = (n,) if isinstance(n, int) else tuple(int(v) for v in n)
    if not sizes or min(sizes) < 10:
        raise InputError("probing-set sizes must be at least 10")
    if reps < 2:
        raise InputError("reps must be at least 2")
    if not 0 < p < 1 or not 0 < p_range[0] < p_range[1] < 1:
        raise InputError("concept frequencies must lie in (0, 1)")
    if n_concepts < 2:
        raise InputError("n_concepts must be at least 2")
    if direction not in DIRECTIONS:
        raise InputError(f"direction must be one of {DIRECTIONS}")
    V.probability("delta", delta, fix="bounds hold with probability 1 - delta, e.g. 0.05")
    V.level(level)
    nb = V.nonnegative_int("n_boot", n_boot, fix="0 skips the BE sets")
    if nb == 1:
        raise V.fail("n_boot", n_boot, "one resample gives no spread", "use 0 or e.g. 200")
    V.choice("interval", interval, _b.INTERVALS)
    V.nonnegative_int("seed", seed)
    if alpha is not None:
        V.probability("alpha", alpha, fix="the firing quantile, e.g. 0.1")
    if max_memory is not None:
        V.positive_int("max_memory", max_memory, fix="give a number of bytes")
    if "correlation" in ms and n_boot < 50:
        raise InputError("correlation is checked through its bootstrap band: pass n_boot >= 50")
    return ms, sizes


def _simulate_size(
    design: Design,
    size: int,
    ms: tuple[str, ...],
    rng: np.random.Generator,
    *,
    reps: int,
    alpha: float,
    delta: float,
    n_boot: int,
    level: float,
    interval: str,
    direction: str,
    max_memory: int | None,
) -> list[dict[str, Any]]:
    """The rows of one probing-set size: ``reps`` samples as one batch of units, their full
    pass, theory intervals and (with ``n_boot``) bootstrap, scored against the design."""
    x, c = design.sample(size, reps, rng)
    prob = Problem(
        x=torch.from_numpy(x),
        c=torch.from_numpy(c),
        alpha=alpha,
        thresholds=None,
        direction=direction,
        softwpmi=SoftWPMI(),
        perm=torch.from_numpy(rng.permutation(size)),
    )
    families = {FAMILIES[m] for m in ms}
    per_block, per_chunk = plan_chunks(
        prob, families, n_boot, int("correlation" in ms), memory_budget(prob.device, max_memory)
    )
    blocks = unit_blocks(prob, per_block)
    fp = full_pass(prob, ms, blocks)
    lower, upper, kinds, band = theory_intervals(
        prob, ms, fp, bound="auto", delta=delta, interval=interval, simultaneous=False
    )
    freq = None
    if n_boot > 0:
        freq = bootstrap_pass(
            prob,
            ms,
            blocks,
            fp.scores,
            lower,
            upper,
            band,
            n_boot=n_boot,
            per_chunk=per_chunk,
            seed=int(rng.integers(2**31)),
            band_delta=delta,
        )
    rows: list[dict[str, Any]] = []
    for j, m in enumerate(ms):
        kind = _b.core_kind(m, direction) if FAMILIES[m] == "threshold" else None
        if kind is not None:
            truth = design.threshold_metric(kind, fp.thresholds)
        elif m == "auroc":
            truth = np.broadcast_to(design.auroc(), fp.scores[j].shape)
        else:
            truth = np.broadcast_to(design.correlation(), fp.scores[j].shape)
        s, lo, hi = fp.scores[j], lower[j], upper[j]
        defined = np.isfinite(s)
        inside = (lo <= truth + 1e-9) & (truth <= hi + 1e-9)
        covered = np.where(defined, inside, True).all(axis=1)
        dev = np.where(defined, np.abs(s - truth), 0.0).max(axis=1)
        half = np.where(defined, np.maximum(hi - s, s - lo), 0.0).max(axis=1)
        win, pset, cert = _b.provable_sets(s, lo, hi)
        best_here = np.argmax(truth, axis=1)  # population best at each realised threshold
        best = design.nominal_best(m, kind, alpha)
        row: dict[str, Any] = {
            "metric": m,
            "n": size,
            "coverage": float(covered.mean()),
            "q95_sup_dev": float(np.quantile(dev, 0.95)),
            "median_bound": float(np.median(half)),
            "identified": float((win == best).mean()),
            "certified": float(cert.mean()),
            "certified_wrong": float((cert & (win != best_here)).mean()),
            "provable_covers": float(pset[np.arange(reps), best_here].mean()),
            "provable_size": float(pset.sum(1).mean()),
            "bound": kinds[j],
        }
        if freq is not None:
            be = _b.be_sets(freq[j].astype(np.float64), level)
            fresh = np.roll(win, -1)  # the winner on an independent probing set
            row["be_covers_true"] = float(be[np.arange(reps), best].mean())
            row["be_covers_fresh"] = float(be[np.arange(reps), fresh].mean())
            row["be_size"] = float(be.sum(1).mean())
        rows.append(row)
    return rows


@dataclasses.dataclass(frozen=True)
class BoundValidation(Result):
    """Coverage of the bounds and prediction sets on simulated units (see :func:`simulate`).

    ``intervals()``: every rate over the ``reps`` repetitions (``coverage``, ``identified``,
    ``certified``, ``certified_wrong`` and, with a bootstrap, ``be_covers_true`` and
    ``be_covers_fresh``), one element per row of ``table``, with its binomial standard error
    and 95% Wilson interval (the Monte-Carlo error of the simulation); ``to_frame()`` is
    ``table`` with ``q, q_se, q_ci_low, q_ci_high, level``.
    """

    kind: ClassVar[str] = "neurons-validation"

    #: The columns of ``table`` that are rates over the repetitions.
    RATES: ClassVar[tuple[str, ...]] = (
        "coverage",
        "identified",
        "certified",
        "certified_wrong",
        "be_covers_true",
        "be_covers_fresh",
    )

    table: pd.DataFrame
    metrics: tuple[str, ...]
    sizes: tuple[int, ...]
    reps: int
    p: float
    alpha: float
    n_concepts: int
    weights: tuple[float, float]
    delta: float
    n_boot: int
    level: float
    interval: str
    seed: int

    def intervals(self) -> dict[str, stats.Interval]:
        t = self.table
        return {
            q: stats.proportion_interval(
                np.round(t[q].to_numpy(dtype=np.float64) * self.reps), self.reps, level=0.95
            )
            for q in self.RATES
            if q in t.columns
        }

    def to_frame(self) -> pd.DataFrame:
        return with_intervals(self.table, self.intervals())

    def coverage_se(self) -> pd.Series:
        """Monte-Carlo standard error of the coverage column."""
        c = self.table["coverage"]
        return np.sqrt(c * (1 - c) / self.reps)

    def summary(self) -> str:
        head = (
            f"Bound validation: {self.reps} repetitions per size, {self.n_concepts} concepts, "
            f"true concept frequency {self.p:g}, firing quantile {self.alpha:g}, "
            f"f = {self.weights[0]:g} c0 + {self.weights[1]:g} c1 + N(0,1)\n"
            f"bounds should cover all concepts in >= {1 - self.delta:.0%} of repetitions"
        )
        if self.n_boot:
            head += f"; BE sets ({self.n_boot} resamples) target {self.level:.0%} coverage"
        cols = [
            "metric",
            "n",
            "coverage",
            "q95_sup_dev",
            "median_bound",
            "identified",
            "certified",
            "certified_wrong",
            "provable_size",
        ]
        if self.n_boot:
            cols += ["be_covers_true", "be_covers_fresh", "be_size"]
        shown = self.table[cols].copy()
        for q, iv in self.intervals().items():
            shown[q] = [f"{iv[i]:.3f}" for i in range(len(shown))]
        note = "rates over the repetitions with binomial SE and 95% Wilson interval"
        return f"{head}\n{note}\n" + shown.to_string(index=False, float_format="%.3f")


__all__ = ["BoundValidation", "Design", "simulate"]
