"""Finite-sample guarantees for neuron explanations.

Neuron identification picks ``ĉ = argmax_c ŝim(f, c)`` over a concept set fixed before looking
at the probing data. If every concept's population similarity lies in an interval
``[lo_c, hi_c]`` *simultaneously* with probability ``1 - δ``, then with that probability

- ``sim(ĉ) >= lo_ĉ``                                        (guaranteed similarity),
- ``c* = argmax_c sim(c)`` lies in ``S = {c : hi_c >= max_c' lo_c'}`` (the provable set),
- ``ĉ = c*`` whenever ``S = {ĉ}``                            (a *certified* winner).

With a common half-width ``ε`` this is the familiar statement: the winner is certified when its
gap to the runner-up exceeds ``2ε``, and ``sim(ĉ) >= max_c sim(c) - 2ε``. Each interval here is
built from concentration inequalities that hold for any distribution; the union bound over the
concept set makes them simultaneous (over the units too with ``simultaneous=True``).

**Thresholded metrics, independent samples** (accuracy, precision, recall, F1, IoU). The unit is
binarised either at a fixed threshold ``τ`` or at its top-α quantile (the ``k = ceil(α n)``-th
largest activation ``s``; ties are broken at random, so the guarantee is about the unit that
fires when ``f > s``, with the random tie-break). Every such metric is a function of three
population numbers:

    a  = P(unit fires)       q1 = E[c | fires]       q0 = E[c | does not fire]

    accuracy                       = a q1 + (1 - a)(1 - q0)
    P(c | fires)                   = q1
    P(fires | c)                   = a q1 / (a q1 + (1 - a) q0)
    IoU                            = a q1 / (a + (1 - a) q0)
    F1                             = 2 a q1 / (a + a q1 + (1 - a) q0)

(precision and recall are ``P(c | fires)`` and ``P(fires | c)`` when the unit is read as a
classifier of the concept, ``direction="unit_predicts_concept"``, and the other way round in
NeuronEval's ``"concept_predicts_unit"`` reading). Each is increasing in ``q1``, decreasing in
``q0`` and monotone in ``a``, so the extremes over a box of ``(a, q1, q0)`` lie at its corners.

- Fixed threshold: given which samples fire (``K`` of them), the concept values of firing samples
  are i.i.d. with mean ``q1`` and those of the others i.i.d. with mean ``q0``; ``K ~ Bin(n, a)``.
- Top-α: given the ``k``-th largest activation ``s``, the ``k - 1`` larger samples are i.i.d. from
  ``f | f > s`` and the ``n - k`` smaller ones from ``f | f < s``; the population firing rate at
  ``s`` is ``A(s) ~ Beta(k, n - k + 1)`` exactly (order statistics of a continuous variable).

So ``q1`` and ``q0`` get Chernoff intervals for bounded means (``kl``, Hoeffding 1963 Thm 1: valid
for any ``[0, 1]`` variable, so soft concepts work, and tight for rare concepts) or plain
Hoeffding intervals, and ``a`` a binomial (fixed threshold) or Beta (top-α) interval. Per unit
that is ``2M + 1`` events, each given ``δ / (2M + 1)``.

**AUROC** (unit activations ranking binary concept labels). Given the labels, the Mann-Whitney
statistic is a two-sample U-statistic; changing one positive moves it by at most ``1/n₊`` and one
negative by ``1/n₋`` (McDiarmid):  ``ε_c = sqrt(ln(2M/δ) (1/n₊ + 1/n₋) / 2)``.

**Grouped samples** (tokens of one sentence, pixels of one image: the i.i.d. unit is the group).
Per group ``g``: its size ``S_g`` and the disjoint masses ``T_g`` (fires and concept), ``FP_g``
(fires, no concept), ``FN_g`` (concept, does not fire), each divided by the largest group size so
that it lies in ``[0, 1]``. The metrics are ratios of their means (``IoU = T / (T + FP + FN)``,
``F1 = 2T / (2T + FP + FN)``, ``accuracy = 1 - (FP + FN) / S`` ...), each rising in ``T`` and
falling in ``FP`` and ``FN``, so Chernoff intervals on the means give the metric's interval at
two corners. A top-α threshold is chosen from the same data, so the masses must hold uniformly
over thresholds ``t``: each is monotone in ``t`` and moves by at most as much as the firing mass,
so a grid of ``G = ceil(1/η) + 1`` thresholds whose firing-mass steps are at most ``η`` brackets
every ``t``, at the price of widening by ``η`` and a union over the grid (``η = α / 50``).

**No finite-sample theorem** (AUPRC, correlation, cosine, SoftWPMI; AUROC with soft or grouped
labels): a simultaneous bootstrap band (max-t): ``q`` is the ``1 - δ`` quantile over resamples of
``max_c |ŝim*_c - ŝim_c| / se_c``, and ``[ŝim_c ± q se_c]``. It is asymptotic, not a theorem; the
result says so.

``faithfulness_bound`` / ``required_n`` give the closed-form leading terms for planning a study
(``ε_n(δ)`` as a function of the probing-set size and the concept frequency).

The intervals for bounded means and the top-α rate (``kl``, Hoeffding, Beta) are in
:mod:`faithlens.neurons.intervals`, and importable from here too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .intervals import (  # re-exported: bounds names every interval it builds on
    INTERVALS,
    bounded_mean_interval,
    hoeffding_interval,
    kl_interval,
    mean_interval,  # deprecated: bounded_mean_interval
    top_rate_interval,
)

ArrayF = np.ndarray

#: Which population reading each thresholded metric has (see the module docstring).
CORE_KINDS = ("accuracy", "c_given_fire", "fire_given_c", "iou", "f1")


def core_kind(metric: str, direction: str) -> str:
    """Map a user-facing thresholded metric name to its population form."""
    if metric in ("accuracy", "iou", "f1"):
        return metric
    if metric not in ("precision", "recall"):
        raise InputError(f"{metric!r} is not a thresholded metric")
    unit_first = direction == "unit_predicts_concept"
    if metric == "precision":
        return "c_given_fire" if unit_first else "fire_given_c"
    return "fire_given_c" if unit_first else "c_given_fire"


# --------------------------------------------------------------------------------------------
# Population forms of the thresholded metrics
# --------------------------------------------------------------------------------------------


def metric_from_rates(kind: str, a: ArrayF, q1: ArrayF, q0: ArrayF) -> ArrayF:
    """A thresholded metric from ``a = P(fire)``, ``q1 = E[c|fire]``, ``q0 = E[c|no fire]``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = a * q1
        p = t + (1 - a) * q0
        if kind == "accuracy":
            return t + (1 - a) * (1 - q0)
        if kind == "c_given_fire":
            return np.asarray(q1, dtype=np.float64) + 0 * p
        if kind == "fire_given_c":
            return t / p
        if kind == "iou":
            return t / (a + p - t)
        if kind == "f1":
            return 2 * t / (a + p)
    raise InputError(f"unknown thresholded metric {kind!r}")


def _box(fn: Callable[..., ArrayF], ranges: list[tuple[ArrayF, ArrayF]]) -> tuple[ArrayF, ArrayF]:
    """Min and max of ``fn`` over the corners of a box (exact for coordinate-wise monotone
    functions); corners where the metric is undefined are skipped, and all-undefined gives
    ``[0, 1]``."""
    vals = []
    for corner in range(2 ** len(ranges)):
        args = [ranges[i][(corner >> i) & 1] for i in range(len(ranges))]
        vals.append(fn(*args))
    stack = np.stack(np.broadcast_arrays(*vals))
    with np.errstate(invalid="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            lo = np.nanmin(stack, axis=0)
            hi = np.nanmax(stack, axis=0)
    lo = np.where(np.isnan(lo), 0.0, lo)
    hi = np.where(np.isnan(hi), 1.0, hi)
    return np.clip(lo, 0.0, 1.0), np.clip(hi, 0.0, 1.0)


# --------------------------------------------------------------------------------------------
# Per-unit intervals
# --------------------------------------------------------------------------------------------


def _rows(pos: ArrayF, n_units: int, n_concepts: int) -> ArrayF:
    """Concept masses as ``[U, M]`` (given per concept ``[M]`` or per unit and concept)."""
    p = np.asarray(pos, dtype=np.float64)
    if p.ndim == 1:
        p = p[None, :]
    return np.broadcast_to(p, (n_units, n_concepts))


@dataclass(frozen=True)
class Intervals:
    """Simultaneous intervals ``[lower, upper]`` (``[U, M]``) and the theorem they rest on."""

    lower: ArrayF
    upper: ArrayF
    method: str


def threshold_intervals_iid(
    kind: str,
    *,
    n: int,
    fired: ArrayF,
    tp: ArrayF,
    pos: ArrayF,
    boundary: ArrayF | None,
    top_k: bool,
    delta: float,
    n_events_scale: int = 1,
    method: str = "kl",
) -> Intervals:
    """Intervals for a thresholded metric on independent samples.

    Args:
        n: probing-set size.
        fired: ``[U]`` number of firing samples (``k`` for top-α).
        tp: ``[U, M]`` concept mass among firing samples (``Σ_fire c``).
        pos: ``[M]`` (or ``[U, M]``) concept mass over all samples (``Σ c``).
        boundary: ``[U, M]`` concept value of each unit's ``k``-th sample (top-α only).
        top_k: whether the threshold is the data's ``k``-th largest activation.
        delta: miscoverage per unit (divided over ``2M + 1`` events, times ``n_events_scale``).
    """
    tp = np.asarray(tp, dtype=np.float64)
    n_units, n_concepts = tp.shape
    fired = np.asarray(fired, dtype=np.float64).reshape(n_units, 1)
    pos = _rows(pos, n_units, n_concepts)
    d = delta / ((2 * n_concepts + 1) * n_events_scale)
    if top_k:
        if boundary is None:
            raise InputError("top-k intervals need the boundary sample's concept values")
        m1 = fired - 1
        s1 = tp - np.asarray(boundary, dtype=np.float64)
        a_lo, a_hi = top_rate_interval(fired, n, d, method)
    else:
        m1 = fired
        s1 = tp
        a_lo, a_hi = bounded_mean_interval(fired / n, np.full_like(fired, n), d, method)
    m0 = n - fired
    s0 = pos - tp
    with np.errstate(divide="ignore", invalid="ignore"):
        q1 = np.where(m1 > 0, s1 / np.where(m1 > 0, m1, 1), 0.0)
        q0 = np.where(m0 > 0, s0 / np.where(m0 > 0, m0, 1), 0.0)
    q1_lo, q1_hi = bounded_mean_interval(q1, np.broadcast_to(m1, q1.shape), d, method)
    q0_lo, q0_hi = bounded_mean_interval(q0, np.broadcast_to(m0, q0.shape), d, method)

    def f(a: ArrayF, x1: ArrayF, x0: ArrayF) -> ArrayF:
        return metric_from_rates(kind, a, x1, x0)

    lo, hi = _box(f, [(a_lo, a_hi), (q1_lo, q1_hi), (q0_lo, q0_hi)])
    name = "kl" if method == "kl" else "hoeffding"
    how = "top-k order statistics" if top_k else "fixed threshold"
    return Intervals(lo, hi, f"{name} ({how}, conditional on firing)")


def threshold_intervals_grouped(
    kind: str,
    *,
    n_groups: int,
    scale: float,
    size: float,
    fired: ArrayF,
    tp: ArrayF,
    pos: ArrayF,
    top_k: bool,
    alpha: float | None,
    delta: float,
    n_events_scale: int = 1,
    method: str = "kl",
) -> Intervals:
    """Intervals for a thresholded metric when the i.i.d. unit is a group of samples.

    ``size``, ``fired`` (``[U]``), ``tp`` (``[U, M]``) and ``pos`` (``[M]`` or ``[U, M]``) are
    totals over all samples; ``scale`` is the largest group size (each group's share lies in
    ``[0, 1]`` after dividing by it). The metrics are read from the disjoint masses ``T`` (fires,
    concept), ``FP = A - T`` (fires, no concept), ``FN = P - T`` (concept, does not fire) and the
    total ``S``; each rises in ``T`` and falls in ``FP`` and ``FN``, and accuracy is
    ``1 - (FP + FN) / S``. With a top-α threshold, the three masses hold uniformly over thresholds
    through a bracketing grid (each is monotone in the threshold and moves by at most as much as
    the firing mass, so a grid with firing-mass steps ``η = α / 50`` brackets them all).
    """
    tp = np.asarray(tp, dtype=np.float64)
    n_units, n_concepts = tp.shape
    norm = n_groups * scale
    t_mean = tp / norm
    fp_mean = np.asarray(fired, dtype=np.float64).reshape(n_units, 1) / norm - t_mean
    fn_mean = _rows(pos, n_units, n_concepts) / norm - t_mean
    s_mean = np.asarray(size / norm)
    eta = 0.0
    grid = 1
    if top_k:
        if alpha is None:
            raise InputError("grouped top-k intervals need alpha")
        # eta is in units of the scaled firing mass (at most 1); it is fixed before seeing the
        # data, as the union bound over the grid requires.
        eta = float(alpha) / 50.0
        grid = math.ceil(1.0 / eta) + 1
    n_events = 1 + 3 * n_concepts * grid
    d = delta / (n_events * n_events_scale)
    m = np.asarray(float(n_groups))
    s_lo, s_hi = bounded_mean_interval(s_mean, m, d, method)
    t_lo, t_hi = bounded_mean_interval(np.clip(t_mean, 0, 1), m, d, method)
    fp_lo, fp_hi = bounded_mean_interval(np.clip(fp_mean, 0, 1), m, d, method)
    fn_lo, fn_hi = bounded_mean_interval(np.clip(fn_mean, 0, 1), m, d, method)
    if top_k:
        t_lo, t_hi = np.maximum(t_lo - eta, 0.0), t_hi + eta
        fp_lo, fp_hi = np.maximum(fp_lo - eta, 0.0), fp_hi + eta
        fn_lo, fn_hi = np.maximum(fn_lo - eta, 0.0), fn_hi + eta
    lo = metric_from_counts(kind, s_lo, t_lo, fp_hi, fn_hi)
    hi = metric_from_counts(kind, s_hi, t_hi, fp_lo, fn_lo)
    lo = np.clip(np.where(np.isnan(lo), 0.0, lo), 0.0, 1.0)
    hi = np.clip(np.where(np.isnan(hi), 1.0, hi), 0.0, 1.0)
    name = "kl" if method == "kl" else "hoeffding"
    how = "uniform over thresholds" if top_k else "fixed threshold"
    return Intervals(lo, hi, f"{name} (grouped ratio of means, {how})")


def metric_from_counts(kind: str, s: ArrayF, t: ArrayF, fp: ArrayF, fn: ArrayF) -> ArrayF:
    """A thresholded metric from the masses ``T`` (fires and concept), ``FP`` (fires, no
    concept), ``FN`` (concept, no firing) and the total ``S`` (any common scale)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "accuracy":
            return 1 - (fp + fn) / s
        if kind == "c_given_fire":
            return t / (t + fp)
        if kind == "fire_given_c":
            return t / (t + fn)
        if kind == "iou":
            return t / (t + fp + fn)
        if kind == "f1":
            return 2 * t / (2 * t + fp + fn)
    raise InputError(f"unknown thresholded metric {kind!r}")


def auroc_epsilon(n_pos: ArrayF, n_neg: ArrayF, n_concepts: int, delta: float) -> ArrayF:
    """McDiarmid half-width for every concept's AUROC, simultaneous over ``n_concepts``:
    ``sqrt(ln(2M/δ) (1/n₊ + 1/n₋) / 2)`` (``inf`` where a class is empty)."""
    n_pos = np.asarray(n_pos, dtype=np.float64)
    n_neg = np.asarray(n_neg, dtype=np.float64)
    with np.errstate(divide="ignore"):
        var = 1.0 / n_pos + 1.0 / n_neg
    return np.sqrt(np.log(2.0 * n_concepts / delta) * var / 2.0)


def bootstrap_band(estimate: ArrayF, draws: ArrayF, delta: float) -> tuple[ArrayF, ArrayF, ArrayF]:
    """Simultaneous max-t bootstrap band for one unit.

    ``estimate`` is ``[M]``, ``draws`` ``[B, M]`` (NaN where undefined in a resample). Returns
    ``(lower, upper, se)``: ``estimate ± q · se`` with ``q`` the ``1 - δ`` quantile over
    resamples of ``max_c |draw_c - estimate_c| / se_c``.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        se = np.nanstd(draws, axis=0, ddof=1)
        z = np.abs(draws - estimate[None, :]) / np.where(se > 0, se, np.nan)[None, :]
        tmax = np.nanmax(np.where(np.isfinite(z), z, np.nan), axis=1)
    tmax = tmax[np.isfinite(tmax)]
    if tmax.size == 0:
        q = np.inf
    else:
        q = float(np.quantile(tmax, 1 - delta, method="higher"))
    half = np.where(se > 0, q * se, 0.0)
    half = np.where(np.isnan(se) | np.isnan(estimate), np.inf, half)
    return estimate - half, estimate + half, se


# --------------------------------------------------------------------------------------------
# Prediction sets and certification from intervals
# --------------------------------------------------------------------------------------------


def provable_sets(scores: ArrayF, lower: ArrayF, upper: ArrayF) -> tuple[ArrayF, ArrayF, ArrayF]:
    """For each unit: the winner (``argmax`` of the scores, ties to the lowest index; ``-1``
    when every score is undefined), the provable set mask ``hi_c >= max lo`` (``[U, M]``), and
    whether the winner is certified (the set is exactly the winner)."""
    s = np.where(np.isnan(scores), -np.inf, scores)
    winner = np.argmax(s, axis=1)
    defined = np.isfinite(s).any(axis=1)
    winner = np.where(defined, winner, -1)
    lo = np.where(np.isnan(scores), -np.inf, lower)
    best_lo = lo.max(axis=1, keepdims=True)
    in_set = (np.where(np.isnan(scores), -np.inf, upper) >= best_lo) & np.isfinite(s)
    certified = defined & (in_set.sum(axis=1) == 1)
    certified &= in_set[np.arange(len(winner)), np.maximum(winner, 0)]
    return winner, in_set, certified


def be_sets(freq: ArrayF, level: float) -> ArrayF:
    """Bootstrap Explanation sets: per unit, the smallest set of concepts, taken in decreasing
    order of bootstrap selection frequency (ties to the lower index), whose total frequency
    reaches ``level``. ``freq`` is ``[U, M]``; returns a boolean mask ``[U, M]``."""
    order = np.argsort(-freq, axis=1, kind="stable")
    sorted_f = np.take_along_axis(freq, order, axis=1)
    cum = np.cumsum(sorted_f, axis=1)
    # keep the prefix up to and including the first position whose cumulative sum >= level
    before = cum - sorted_f
    keep_sorted = (before < level - 1e-12) & (sorted_f > 0)
    mask = np.zeros_like(freq, dtype=bool)
    np.put_along_axis(mask, order, keep_sorted, axis=1)
    return mask


def frequency_error(n_selected: ArrayF, n_boot: int, delta: float = 0.05) -> ArrayF:
    """Monte-Carlo error of bootstrap selection frequencies: with probability ``1 - δ``,
    ``sup_c |π̂(c) - π_boot(c)| <= sqrt(ln(2 m / δ) / 2B)`` over the ``m`` concepts ever
    selected."""
    m = np.maximum(np.asarray(n_selected, dtype=np.float64), 1.0)
    return np.sqrt(np.log(2 * m / delta) / (2 * max(n_boot, 1)))


# --------------------------------------------------------------------------------------------
# Closed forms for planning
# --------------------------------------------------------------------------------------------


def faithfulness_bound(
    metric: str,
    n: int | ArrayF,
    n_concepts: int,
    delta: float = 0.05,
    *,
    p: float | None = None,
    alpha: float | None = None,
) -> ArrayF:
    """Leading-term uniform deviation ``ε_n(δ)`` of a metric over ``n_concepts`` concepts.

    Hoeffding with the metric's effective sample size and ``L = ln(2|C|/δ)``:

    ============  ==================================  ==========================
    metric        effective sample size               ε
    ============  ==================================  ==========================
    accuracy      n                                   sqrt(L / 2n)
    P(c | fires)  α n                                 sqrt(L / 2αn)
    P(fires | c)  p n                                 sqrt(L / 2pn)
    iou           (α + p - αp) n  (≈ the union)       sqrt(L / 2Un)
    f1            (α + p) n / 2                       sqrt(L / (α + p)n)
    auroc         n₊ = pn, n₋ = (1 - p)n              sqrt(L (1/n₊ + 1/n₋) / 2)
    ============  ==================================  ==========================

    ``precision``/``recall`` follow the ``unit_predicts_concept`` reading (precision =
    P(c | fires), recall = P(fires | c)). These are a-priori planning numbers (the realised
    intervals of :func:`faithlens.neurons.explain` use the realised counts and are usually
    tighter for rare concepts); they ignore the threshold's own estimation error.
    """
    n_arr = np.asarray(n, dtype=np.float64)
    if n_concepts < 1:
        raise InputError("n_concepts must be at least 1")
    if not 0 < delta < 1:
        raise InputError(f"delta must be in (0, 1), got {delta}")
    L = math.log(2 * n_concepts / delta)

    def need(name: str, v: float | None) -> float:
        if v is None or not 0 < v < 1:
            raise InputError(f"faithfulness_bound({metric!r}) needs {name} in (0, 1)")
        return float(v)

    if metric == "accuracy":
        return np.sqrt(L / (2 * n_arr))
    if metric == "precision":
        a = need("alpha", alpha)
        return np.sqrt(L / (2 * a * n_arr))
    if metric == "recall":
        q = need("p", p)
        return np.sqrt(L / (2 * q * n_arr))
    if metric == "iou":
        a, q = need("alpha", alpha), need("p", p)
        return np.sqrt(L / (2 * (a + q - a * q) * n_arr))
    if metric == "f1":
        a, q = need("alpha", alpha), need("p", p)
        return np.sqrt(L / ((a + q) * n_arr))
    if metric == "auroc":
        q = need("p", p)
        return np.sqrt(L * (1 / (q * n_arr) + 1 / ((1 - q) * n_arr)) / 2)
    raise InputError(
        f"no closed-form bound for {metric!r}; closed forms exist for accuracy, precision, "
        "recall, iou, f1 and auroc (other metrics get a bootstrap band)"
    )


def required_n(
    metric: str,
    epsilon: float,
    n_concepts: int,
    delta: float = 0.05,
    *,
    p: float | None = None,
    alpha: float | None = None,
) -> int:
    """Smallest probing-set size whose :func:`faithfulness_bound` is at most ``epsilon``."""
    if not epsilon > 0:
        raise InputError(f"epsilon must be positive, got {epsilon}")
    unit = float(faithfulness_bound(metric, 1, n_concepts, delta, p=p, alpha=alpha))
    # every closed form is c / sqrt(n)
    return math.ceil((unit / epsilon) ** 2)


__all__ = [
    "INTERVALS",
    "Intervals",
    "auroc_epsilon",
    "be_sets",
    "bootstrap_band",
    "bounded_mean_interval",
    "core_kind",
    "faithfulness_bound",
    "frequency_error",
    "hoeffding_interval",
    "kl_interval",
    "mean_interval",  # deprecated: bounded_mean_interval
    "metric_from_counts",
    "metric_from_rates",
    "provable_sets",
    "required_n",
    "threshold_intervals_grouped",
    "threshold_intervals_iid",
    "top_rate_interval",
]
