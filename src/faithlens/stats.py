"""Uncertainty for every number faithlens reports.

Estimates are means (or ratios of means) over examples; their uncertainty comes from the
bootstrap over examples (scipy's BCa by default, percentile as the fallback when BCa is degenerate)
and from standard errors. All resampling is seeded.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as _st

ArrayLike = Any


@dataclass(frozen=True)
class Interval:
    """A point estimate with a standard error and a confidence interval (arrays broadcast)."""

    estimate: np.ndarray
    se: np.ndarray
    low: np.ndarray
    high: np.ndarray
    level: float


#: Above this many examples :func:`bootstrap` uses the percentile interval instead of BCa.
BCA_MAX_N = 10_000


def mean_se(x: ArrayLike, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error of the mean along ``axis`` (ddof=1; se is 0 for one sample)."""
    a = np.asarray(x, dtype=np.float64)
    n = a.shape[axis]
    m = a.mean(axis=axis)
    if n < 2:
        return m, np.zeros_like(m)
    return m, a.std(axis=axis, ddof=1) / np.sqrt(n)


def _as2d(x: ArrayLike) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    return a[None, :] if a.ndim == 1 else a


def bootstrap(
    statistic: Callable[..., np.ndarray],
    data: tuple[ArrayLike, ...],
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    method: str = "BCa",
) -> Interval:
    """Paired bootstrap over examples (the last axis of every array in ``data``).

    ``statistic(*arrays, axis=-1)`` must be vectorised. Arrays may have different leading shapes
    (for example per-site values ``[n_sites, n]`` with per-example baselines ``[n]``); they are
    broadcast to a common shape and resampled with the same example indices.
    """
    arrays = [np.asarray(a, dtype=np.float64) for a in data]
    n = arrays[0].shape[-1]
    if any(a.shape[-1] != n for a in arrays):
        raise ValueError(
            "bootstrap: every array needs the same number of examples on its last axis"
        )
    lead = np.broadcast_shapes(*(a.shape[:-1] for a in arrays))
    arrays = [np.broadcast_to(a, (*lead, n)) for a in arrays]
    est = np.asarray(statistic(*arrays, axis=-1), dtype=np.float64)
    if n < 2:
        nan = np.full_like(est, np.nan)
        return Interval(est, nan, nan, nan, level)
    res = None
    if method.lower() == "bca" and n > BCA_MAX_N:
        # BCa's jackknife costs O(n^2) time (and, unbatched, memory: 60k examples need ~28 GB);
        # with this many examples its correction is negligible, so use the percentile interval.
        method = "percentile"
    # Large problems resample in batches so that memory stays bounded (~400 MB of float64);
    # small ones in one go, as before.
    width = int(np.prod(lead, dtype=np.int64)) * n * len(arrays)
    batch = None if width * n_boot <= 5e7 else max(1, int(5e7 // max(1, width)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for m in (method, "percentile") if method != "percentile" else ("percentile",):
            try:
                res = _st.bootstrap(
                    tuple(arrays),
                    statistic,
                    paired=True,
                    vectorized=True,
                    axis=-1,
                    n_resamples=n_boot,
                    confidence_level=level,
                    method=m,
                    rng=np.random.default_rng(seed),
                    batch=batch,
                )
            except Exception:  # degenerate BCa (constant data, ties): fall back to percentile
                res = None
                continue
            low = np.asarray(res.confidence_interval.low)
            if m != "percentile" and np.isnan(low).any():
                # BCa fails elementwise where a site has no spread; percentile fills those in.
                continue
            break
    if res is None:
        nan = np.full_like(est, np.nan)
        return Interval(est, nan, nan, nan, level)
    low = np.asarray(res.confidence_interval.low, dtype=np.float64)
    high = np.asarray(res.confidence_interval.high, dtype=np.float64)
    se = np.asarray(res.standard_error, dtype=np.float64)
    # A statistic with zero spread gives nan bounds in scipy; the interval is the point then.
    flat = np.isnan(low) & np.isfinite(est) & (np.nan_to_num(se) == 0)
    low = np.where(flat, est, low)
    high = np.where(flat, est, high)
    return Interval(est, se, low, high, level)


def bootstrap_means(
    statistic: Callable[..., np.ndarray],
    data: tuple[ArrayLike, ...],
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """BCa bootstrap of a statistic that is a function of the *means* of paired arrays.

    ``statistic(*means) -> estimate`` receives the per-array means (each with a leading axis
    when vectorised over resamples). This is scipy's BCa interval computed in O(n) per resample
    and O(n) for the jackknife (leave-one-out means), instead of scipy's O(n^2) jackknife,
    which dominates for thousands of examples. Falls back to the percentile interval when the
    acceleration is undefined (no spread).
    """
    arrays = [np.asarray(a, dtype=np.float64).reshape(-1) for a in data]
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError("bootstrap_means: every array needs the same number of examples")
    means = [a.mean() for a in arrays]
    est = np.asarray(statistic(*means), dtype=np.float64)
    if n < 2:
        nan = np.full_like(est, np.nan)
        return Interval(est, nan, nan, nan, level)
    rng = np.random.default_rng(seed)
    reps = []
    step = max(1, 8_000_000 // n)
    for s in range(0, n_boot, step):
        idx = rng.integers(0, n, (min(step, n_boot - s), n))
        reps.append(np.asarray(statistic(*[a[idx].mean(-1) for a in arrays]), dtype=np.float64))
    theta = np.concatenate(reps)
    finite = theta[np.isfinite(theta)]
    if finite.size < 2:
        nan = np.full_like(est, np.nan)
        return Interval(est, nan, nan, nan, level)
    se = np.asarray(finite.std(ddof=1))
    alpha = (1 - level) / 2
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        loo = [(a.sum() - a) / (n - 1) for a in arrays]
        jack = np.asarray(statistic(*loo), dtype=np.float64)
        d = jack.mean() - jack
        den = 6.0 * (d**2).sum() ** 1.5
        acc = float((d**3).sum() / den) if den > 0 else np.nan
        z0 = _st.norm.ppf(np.mean(finite < est))
        lo_q, hi_q = alpha, 1 - alpha
        if np.isfinite(acc) and np.isfinite(z0):
            za, zb = _st.norm.ppf(alpha), _st.norm.ppf(1 - alpha)
            lo_q = float(_st.norm.cdf(z0 + (z0 + za) / (1 - acc * (z0 + za))))
            hi_q = float(_st.norm.cdf(z0 + (z0 + zb) / (1 - acc * (z0 + zb))))
            if not (np.isfinite(lo_q) and np.isfinite(hi_q)):
                lo_q, hi_q = alpha, 1 - alpha
    low = np.asarray(np.quantile(finite, lo_q))
    high = np.asarray(np.quantile(finite, hi_q))
    if float(se) == 0.0:
        low, high = est.copy(), est.copy()
    return Interval(est, se, low, high, level)


def ratio_of_means(
    num: np.ndarray, base: np.ndarray, ref: np.ndarray, axis: int = -1
) -> np.ndarray:
    """(mean(num) - mean(base)) / (mean(ref) - mean(base)): the normalised patching effect."""
    b = base.mean(axis=axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray((num.mean(axis=axis) - b) / (ref.mean(axis=axis) - b))


def normalized_effect(
    patched: ArrayLike,
    base: ArrayLike,
    source: ArrayLike,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Effect = (mean m_patched - mean m_base) / (mean m_source - mean m_base), bootstrapped.

    ``patched`` is ``[n_sites, n]`` (or ``[n]``), ``base`` and ``source`` are ``[n]``; the same
    resampled examples are used for numerator and denominator.
    """
    return bootstrap(
        ratio_of_means,
        (_as2d(patched), np.asarray(base), np.asarray(source)),
        n_boot=n_boot,
        level=level,
        seed=seed,
    )


def mean_interval(
    x: ArrayLike, *, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> Interval:
    """Mean over the last axis with its bootstrap confidence interval."""

    def stat(a: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.asarray(a.mean(axis=axis))

    return bootstrap(stat, (np.asarray(x),), n_boot=n_boot, level=level, seed=seed)


def proportion_interval(successes: ArrayLike, n: ArrayLike, *, level: float = 0.95) -> Interval:
    """A proportion ``successes / n`` with its Wilson score interval (good near 0 and 1, where
    the bootstrap and the normal interval are not) and the binomial standard error
    ``sqrt(p (1 - p) / n)``. Elementwise: ``successes`` and ``n`` may be arrays (they broadcast);
    scalars give 0-d arrays."""
    k = np.asarray(successes, dtype=np.float64)
    m = np.asarray(n, dtype=np.float64)
    k, m = np.broadcast_arrays(k, m)
    if bool((m < 1).any()):
        raise ValueError("proportion_interval: n must be at least 1")
    if bool((k < 0).any()) or bool((k > m).any()):
        raise ValueError(f"proportion_interval: successes={successes} is not in 0..n={n}")
    p = k / m
    z = float(_st.norm.ppf(0.5 + level / 2))
    denom = 1 + z**2 / m
    centre = (p + z**2 / (2 * m)) / denom
    half = z * np.sqrt(p * (1 - p) / m + z**2 / (4 * m**2)) / denom
    se = np.sqrt(p * (1 - p) / m)
    low = np.clip(centre - half, 0.0, 1.0)
    high = np.clip(centre + half, 0.0, 1.0)
    return Interval(p, se, low, high, level)


def empirical_p(
    observed: ArrayLike, null: ArrayLike, *, alternative: str = "greater"
) -> np.ndarray:
    """Permutation-style p-value of ``observed`` against draws from a null distribution
    (last axis): ``(1 + #{null >= observed}) / (1 + n_null)`` for ``alternative="greater"``,
    ``<=`` for ``"less"``, and ``|null| >= |observed|`` for ``"two-sided"``."""
    obs = np.asarray(observed, dtype=np.float64)[..., None]
    nul = np.asarray(null, dtype=np.float64)
    if alternative == "greater":
        hits = nul >= obs
    elif alternative == "less":
        hits = nul <= obs
    elif alternative == "two-sided":
        hits = np.abs(nul) >= np.abs(obs)
    else:
        raise ValueError(
            f"alternative must be 'greater', 'less' or 'two-sided', not {alternative!r}"
        )
    return np.asarray((1 + hits.sum(-1)) / (1 + nul.shape[-1]))
