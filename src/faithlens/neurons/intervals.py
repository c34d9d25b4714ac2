"""Intervals for bounded means, the building blocks of :mod:`faithlens.neurons.bounds`.

For the mean of ``m`` i.i.d. variables in ``[0, 1]``: the Chernoff interval (``kl``, Hoeffding
1963 Thm 1: valid for any ``[0, 1]`` variable, so soft concepts work, and tight for rare
concepts) or the plain Hoeffding interval, each at level ``1 - δ``; and the exact Beta interval
for the population firing rate at a top-α threshold (order statistics of a continuous
variable). Vectorised over any shape, float64. :mod:`faithlens.neurons.bounds` explains how they
combine into guarantees, and every name here is importable from there too.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import special as _sp
from scipy import stats as _st

from ..errors import InputError

ArrayF = np.ndarray

#: Interval methods for bounded means.
INTERVALS = ("kl", "hoeffding")


def _kl(p: ArrayF, q: ArrayF) -> ArrayF:
    """Bernoulli KL divergence kl(p || q), with 0 log 0 = 0 (vectorised, float64)."""
    q = np.clip(q, 1e-300, 1 - 1e-16)
    return np.asarray(
        _sp.xlogy(p, p) - _sp.xlogy(p, q) + _sp.xlogy(1 - p, 1 - p) - _sp.xlogy(1 - p, 1 - q)
    )


def _newton_convex(x: ArrayF, target: ArrayF, start: ArrayF, upper: bool) -> ArrayF:
    """Newton's method for the end points of the KL interval in log coordinates, iterating only
    on the entries that have not converged (from outside, monotonically)."""
    shape = x.shape
    xf, tf = x.reshape(-1), np.broadcast_to(target, shape).reshape(-1)
    w = start.reshape(-1).copy()
    idx = np.arange(w.size)
    for _ in range(60):
        xi, wi = xf[idx], w[idx]
        e = np.exp(-wi)
        if upper:
            f = -xi * np.log1p(-e) + (1 - xi) * wi + tf[idx]
            df = (1 - xi) - xi * e / (1 - e)
        else:
            f = xi * wi - (1 - xi) * np.log1p(-e) + tf[idx]
            df = xi - (1 - xi) * e / (1 - e)
        move = (f > 1e-14) & (df > 0) & np.isfinite(f)
        if not move.any():
            break
        idx = idx[move]
        w[idx] = wi[move] - f[move] / df[move]
    return w.reshape(shape)


def kl_interval(mean: ArrayF, m: ArrayF, delta: float | ArrayF) -> tuple[ArrayF, ArrayF]:
    """Two-sided Chernoff interval for the mean of ``m`` i.i.d. ``[0, 1]`` variables.

    ``{μ : m · kl(mean || μ) <= ln(2/δ)}``: it contains the true mean with probability at least
    ``1 - δ`` for any distribution on ``[0, 1]`` (Hoeffding 1963, Thm 1: each tail is at most
    ``exp(-m kl)``). ``m = 0`` gives ``[0, 1]``.

    Solved by Newton's method in the coordinates ``u = -ln(1 - μ)`` (upper end) and
    ``v = -ln μ`` (lower end), in which ``kl(mean || μ)`` is convex and increasing away from
    ``mean``; started outside the interval (at the Hoeffding end points ``mean ± sqrt(b/2)``,
    outside by Pinsker's inequality), the iterates approach each end monotonically from outside,
    so every iterate is a valid (slightly conservative) bound.
    """
    x = np.clip(np.asarray(mean, dtype=np.float64), 0.0, 1.0)
    m = np.asarray(m, dtype=np.float64)
    x, m = np.broadcast_arrays(x, m)
    level = np.log(2.0 / np.asarray(delta, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        budget = np.where(m > 0, level / np.where(m > 0, m, 1.0), np.inf)
        ent = _sp.xlogy(x, x) + _sp.xlogy(
            1 - x, 1 - x
        )  # -entropy: kl = ent - x ln q - (1-x) ln(1-q)
    target = ent - budget
    half = np.sqrt(np.minimum(budget, 4.0) / 2.0)
    big = 745.0  # -ln of the smallest positive double
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # upper end: g(u) = -x ln(1 - e^-u) + (1 - x) u + target = 0, with u = -ln(1 - q)
        u0 = -np.log1p(-np.minimum(x + half, 1.0 - 1e-16))
        u = _newton_convex(x, target, np.minimum(np.where(np.isfinite(u0), u0, big), big), True)
        up = -np.expm1(-u)
        # lower end: h(v) = x v - (1 - x) ln(1 - e^-v) + target = 0, with v = -ln q
        v = _newton_convex(x, target, np.minimum(-np.log(np.maximum(x - half, 1e-300)), big), False)
        low = np.exp(-v)
        # the whole side is inside the interval: the bound is the end of [0, 1]
        up = np.where(ent - (1 - x) * np.log(1e-16) - x * np.log1p(-1e-16) <= budget, 1.0, up)
        low = np.where(ent - x * np.log(1e-300) <= budget, 0.0, low)
    up = np.maximum(up, x)
    low = np.minimum(low, x)
    undefined = ~(m > 0)
    return np.where(undefined, 0.0, low), np.where(undefined, 1.0, up)


def hoeffding_interval(mean: ArrayF, m: ArrayF, delta: float | ArrayF) -> tuple[ArrayF, ArrayF]:
    """``mean ± sqrt(ln(2/δ) / 2m)``, clipped to ``[0, 1]`` (``m = 0`` gives ``[0, 1]``)."""
    mean = np.asarray(mean, dtype=np.float64)
    m = np.asarray(m, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        eps = np.sqrt(np.log(2.0 / np.asarray(delta, dtype=np.float64)) / (2 * m))
    eps = np.where(m > 0, eps, np.inf)
    return np.clip(mean - eps, 0.0, 1.0), np.clip(mean + eps, 0.0, 1.0)


def bounded_mean_interval(
    mean: ArrayF, m: ArrayF, delta: float | ArrayF, method: str = "kl"
) -> tuple[ArrayF, ArrayF]:
    """Interval at level ``1 - δ`` for the mean of ``m`` i.i.d. ``[0, 1]`` variables, by
    ``method``: ``"kl"`` (:func:`kl_interval`) or ``"hoeffding"`` (:func:`hoeffding_interval`)."""
    if method == "kl":
        return kl_interval(mean, m, delta)
    if method == "hoeffding":
        return hoeffding_interval(mean, m, delta)
    raise InputError(f"interval must be one of {INTERVALS}, not {method!r}")


def mean_interval(
    mean: ArrayF, m: ArrayF, delta: float | ArrayF, method: str = "kl"
) -> tuple[ArrayF, ArrayF]:
    """Deprecated name of :func:`bounded_mean_interval` (``faithlens.stats.mean_interval`` is
    the bootstrap interval of a mean); it warns and will be removed after one release."""
    warnings.warn(
        "faithlens.neurons.intervals.mean_interval is now bounded_mean_interval "
        "(faithlens.stats.mean_interval is the bootstrap interval of a mean)",
        DeprecationWarning,
        stacklevel=2,
    )
    return bounded_mean_interval(mean, m, delta, method)


def top_rate_interval(
    k: ArrayF | int, n: int, delta: float, method: str = "kl"
) -> tuple[ArrayF, ArrayF]:
    """Interval for ``A(s)``, the population firing rate at the ``k``-th largest of ``n``.

    ``A(s) ~ Beta(k, n - k + 1)`` exactly for a continuous activation (ties broken at random);
    ``"hoeffding"`` uses the binomial Hoeffding bound ``k/n ± sqrt(ln(2/δ)/2n)`` instead.
    """
    k_arr = np.asarray(k, dtype=np.float64)
    if method == "hoeffding":
        eps = math.sqrt(math.log(2.0 / delta) / (2 * n))
        return np.clip(k_arr / n - eps, 0.0, 1.0), np.clip(k_arr / n + eps, 0.0, 1.0)
    lo = np.asarray(_st.beta.ppf(delta / 2, k_arr, n - k_arr + 1), dtype=np.float64)
    hi = np.asarray(_st.beta.ppf(1 - delta / 2, k_arr, n - k_arr + 1), dtype=np.float64)
    return lo, hi


__all__ = [
    "INTERVALS",
    "bounded_mean_interval",
    "hoeffding_interval",
    "kl_interval",
    "mean_interval",  # deprecated: bounded_mean_interval
    "top_rate_interval",
]
