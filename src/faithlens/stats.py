"""Uncertainty for every number faithlens reports.

Estimates are means (or ratios of means) over examples; their uncertainty comes from the
bootstrap over examples (BCa by default, percentile where BCa is degenerate) and from standard
errors. All resampling is seeded.

Memory is linear in the number of examples ``n``: resamples are drawn and evaluated in chunks of
a fixed size (:data:`RESAMPLE_CHUNK_BYTES`; the chunking changes no number), and BCa's jackknife
is in closed form for the mean-based statistics faithlens uses (:func:`ratio_of_means`, the mean:
leave-one-out means are ``(sum - x_i) / (n - 1)``) and chunked over left-out examples for any
other statistic. The intervals are scipy's (``scipy.stats.bootstrap(..., paired=True,
method="BCa")``) given the same seed: the same resamples, the same bias correction and quantiles;
the closed-form jackknife changes the acceleration only by rounding (~1e-12 relative).

Degenerate input is refused, never reported as an estimate: a confidence interval needs at
least 2 examples and 2 resamples, and ``level`` must lie strictly between 0 and 1
(:class:`~faithlens.errors.ArgumentError`). Where a statistic is undefined (a ratio whose
denominator is 0, NaN data) its estimate or interval is NaN or infinite and
:class:`DegenerateDataWarning` says so.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

import numpy as np
import pandas as pd
from scipy import stats as _st
from scipy.special import ndtr, ndtri

from . import validate

ArrayLike = Any


class DegenerateDataWarning(UserWarning):
    """Data that give no usable uncertainty: one sample (no standard error), or a statistic
    that is NaN / infinite, so that its interval is NaN."""


@dataclass(frozen=True, init=False)
class Interval:
    """A point estimate with its standard error and a confidence interval at ``level``.

    The one interval type of every faithlens result (``Result.intervals()``). The fields are
    floats or numpy arrays that broadcast together. A missing piece is NaN, never a guess: an
    estimate reported with a confidence interval but no standard error has ``se`` NaN, one with
    a standard error but no interval gets the normal (or Student t) interval of
    :meth:`from_se`, and the result's docstring says which. ``low`` / ``high`` are read-only
    aliases of ``ci_low`` / ``ci_high`` (as keywords, ``Interval(..., low=, high=)`` still works
    for one release, with a ``DeprecationWarning``).

    ``format(iv, ".3f")`` (or ``f"{iv:.3f}"``) is the text every summary prints:
    ``0.532 ± 0.021 [0.491, 0.573]`` (the standard error or the interval is left out where it is
    NaN); :meth:`columns` the frame columns ``q, q_se, q_ci_low, q_ci_high``.
    """

    estimate: Any
    se: Any
    ci_low: Any
    ci_high: Any
    level: float

    #: The fields, in order.
    PARTS: ClassVar[tuple[str, ...]] = ("estimate", "se", "ci_low", "ci_high", "level")

    def __init__(
        self,
        estimate: Any,
        se: Any,
        ci_low: Any = None,
        ci_high: Any = None,
        level: float | None = None,
        *,
        low: Any = None,
        high: Any = None,
    ) -> None:
        validate.replaced_knob("Interval", "low", low, "ci_low", ci_low)
        validate.replaced_knob("Interval", "high", high, "ci_high", ci_high)
        lo = ci_low if low is None else low
        hi = ci_high if high is None else high
        if lo is None or hi is None or level is None:
            raise TypeError("Interval needs estimate, se, ci_low, ci_high and level")
        for name, value in zip(self.PARTS, (estimate, se, lo, hi, level), strict=True):
            object.__setattr__(self, name, value)

    @property
    def low(self) -> Any:
        """The lower end of the confidence interval (``ci_low``)."""
        return self.ci_low

    @property
    def high(self) -> Any:
        """The upper end of the confidence interval (``ci_high``)."""
        return self.ci_high

    @classmethod
    def from_se(
        cls, estimate: ArrayLike, se: ArrayLike, level: float = 0.95, *, df: float | None = None
    ) -> Interval:
        """``estimate ± z se``: the normal-approximation interval at ``level`` (Student t with
        ``df`` degrees of freedom where given, e.g. a mean over a few splits)."""
        est = np.asarray(estimate, dtype=np.float64)
        s = np.asarray(se, dtype=np.float64)
        q = 0.5 + validate.level(level) / 2
        z = float(_st.norm.ppf(q) if df is None else _st.t.ppf(q, df))
        return cls(est, s, est - z * s, est + z * s, float(level))

    def __getitem__(self, index: Any) -> Interval:
        """The interval of one element (or a slice) of array-valued estimates."""
        e, s, lo, hi = (
            np.broadcast_to(np.asarray(v), np.shape(self.estimate))[index] for v in self.parts
        )
        return Interval(e, s, lo, hi, self.level)

    @property
    def parts(self) -> tuple[Any, Any, Any, Any]:
        """``(estimate, se, ci_low, ci_high)``."""
        return (self.estimate, self.se, self.ci_low, self.ci_high)

    def __format__(self, spec: str) -> str:
        """``estimate ± se [ci_low, ci_high]`` with ``spec`` (default ``.3f``) for every number
        (the standard error without a sign); a scalar interval only."""
        spec = spec or ".3f"
        est, se, lo, hi = (float(np.asarray(v)) for v in self.parts)
        # The width of ``spec`` pads the estimate only; the interval keeps its sign flag.
        digits = re.sub(r"^.*?(?=[,_.]|[a-zA-Z%]$)", "", spec, count=1) or ".3f"
        text = format(est, spec)
        if np.isfinite(se):
            text += f" ± {format(se, digits)}"
        if not (np.isnan(lo) and np.isnan(hi)):
            ci = ("+" if "+" in spec else "") + digits
            text += f" [{format(lo, ci)}, {format(hi, ci)}]"
        return text

    def format(self, spec: str = ".3f") -> str:
        """The text of :meth:`__format__`: ``format(iv, spec)``."""
        return self.__format__(spec)

    def columns(self, name: str | None = None) -> dict[str, Any]:
        """Frame columns: ``{name, name_se, name_ci_low, name_ci_high}``; with no ``name`` the
        columns of a long table, one row per estimate (``estimate, se, ci_low, ci_high``)."""
        return dict(zip(self.column_names(name), self.parts, strict=True))

    @staticmethod
    def column_names(name: str | None = None) -> tuple[str, str, str, str]:
        """The names of the frame columns of :meth:`columns`."""
        if name is None:
            return ("estimate", "se", "ci_low", "ci_high")
        return (name, f"{name}_se", f"{name}_ci_low", f"{name}_ci_high")

    @classmethod
    def from_row(cls, row: Any, name: str | None = None, level: float = 0.95) -> Interval:
        """The interval of ``name`` in a frame row (or any mapping) with :meth:`columns`."""
        e, s, lo, hi = (row[c] for c in cls.column_names(name))
        return cls(e, s, lo, hi, level)


class Estimate(NamedTuple):
    """Where a result keeps one estimate: the names of its fields (or properties) holding the
    estimate, its standard error and its confidence interval (None: not reported; a missing
    standard error is NaN, a missing interval the normal one of :meth:`Interval.from_se`), and
    the level of the interval (an attribute name, or a number)."""

    estimate: str
    se: str | None = None
    ci_low: str | None = None
    ci_high: str | None = None
    level: str | float = "level"

    def of(self, result: Any) -> Interval:
        """The :class:`~faithlens.stats.Interval` of this estimate in ``result``."""
        get = lambda name: np.asarray(getattr(result, name), dtype=np.float64)  # noqa: E731
        level = float(getattr(result, self.level) if isinstance(self.level, str) else self.level)
        est = get(self.estimate)
        se = get(self.se) if self.se else np.full_like(est, np.nan)
        if self.ci_low is None or self.ci_high is None:
            return Interval.from_se(est, se, level)
        return Interval(est, se, get(self.ci_low), get(self.ci_high), level)


def with_intervals(
    frame: pd.DataFrame, intervals: Mapping[str, Interval], drop: tuple[str, ...] = ()
) -> pd.DataFrame:
    """``frame`` with each column ``q`` named in ``intervals`` replaced by the uniform columns
    ``q, q_se, q_ci_low, q_ci_high`` of its interval (``Interval.columns``), a ``level``
    column at the end, and the columns ``drop`` (the old names of those pieces) left out."""
    out: dict[str, Any] = {}
    for k, v in frame.items():
        if k in intervals:
            out.update(intervals[str(k)].columns(str(k)))
        elif k not in drop:
            out[str(k)] = v
    levels = {iv.level for q, iv in intervals.items() if q in frame.columns}
    if levels and "level" not in out:
        out["level"] = levels.pop() if len(levels) == 1 else np.nan
    return pd.DataFrame(out, index=frame.index)


#: Above this many examples :func:`bootstrap` uses the percentile interval instead of BCa (the
#: jackknife of a general statistic costs O(n^2) time; the BCa correction is negligible there).
BCA_MAX_N = 10_000

#: Bytes of resampled data :func:`bootstrap` holds at once (per chunk of resamples, or of
#: jackknife samples). Fixed, so that results never depend on the machine.
RESAMPLE_CHUNK_BYTES = 32 << 20


def mean_se(
    x: ArrayLike, axis: int = -1, *, allow_single: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error of the mean along ``axis`` (``std(ddof=1) / sqrt(n)``).

    One sample has no standard error: ``se`` is NaN then, with a :class:`DegenerateDataWarning`
    unless ``allow_single=True`` (a summary over one seed, say, where a missing SE is expected).
    No samples at all is an :class:`~faithlens.errors.ArgumentError`.
    """
    a = np.asarray(x, dtype=np.float64)
    if a.ndim == 0:
        a = a.reshape(1)
    n = a.shape[axis]
    if n < 1:
        raise validate.fail("x", f"<{n} samples>", "a mean needs at least 1 sample")
    m = a.mean(axis=axis)
    if n < 2:
        if not allow_single:
            warnings.warn(
                "mean_se: one sample has no standard error; se is NaN (use at least 2 samples, "
                "or allow_single=True where one is expected)",
                DegenerateDataWarning,
                stacklevel=2,
            )
        return m, np.full_like(m, np.nan)
    return m, a.std(axis=axis, ddof=1) / np.sqrt(n)


def _as2d(x: ArrayLike) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    return a[None, :] if a.ndim == 1 else a


def ratio_of_means(
    num: np.ndarray, base: np.ndarray, ref: np.ndarray, axis: int = -1
) -> np.ndarray:
    """(mean(num) - mean(base)) / (mean(ref) - mean(base)): the normalised patching effect."""
    b = base.mean(axis=axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray((num.mean(axis=axis) - b) / (ref.mean(axis=axis) - b))


def _mean(a: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.asarray(a.mean(axis=axis))


def _ratio_from_means(num: np.ndarray, base: np.ndarray, ref: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray((num - base) / (ref - base))


#: Statistics that are a function of the per-array means: ``statistic -> f(*means)``. Their
#: jackknife is in closed form (leave-one-out means), in O(n) time and memory.
_OF_MEANS: dict[Callable[..., np.ndarray], Callable[..., np.ndarray]] = {
    ratio_of_means: _ratio_from_means,
    _mean: lambda a: np.asarray(a),
}


def _check_data(arrays: list[np.ndarray], where: str) -> int:
    n = arrays[0].shape[-1] if arrays[0].ndim else 1
    if any((a.shape[-1] if a.ndim else 1) != n for a in arrays):
        raise validate.fail(
            "data",
            [a.shape for a in arrays],
            f"{where}: every array needs the same number of examples on its last axis",
        )
    validate.min_examples("n", n)
    return n


def _resample_chunks(rng: np.random.Generator, n: int, n_boot: int, bytes_per_resample: int) -> Any:
    """Index arrays ``[b, n]`` of bootstrap resamples, ``n_boot`` in all, drawn in chunks. The
    generator's stream does not depend on the chunk size, so neither do the resamples."""
    step = max(1, RESAMPLE_CHUNK_BYTES // max(1, bytes_per_resample))
    for k in range(0, n_boot, step):
        yield rng.integers(0, n, (min(step, n_boot - k), n), dtype=np.int64)


def _jackknife(
    statistic: Callable[..., np.ndarray], arrays: list[np.ndarray], lead: tuple[int, ...]
) -> np.ndarray:
    """Leave-one-out values of ``statistic``, ``[*lead, n]``, in memory linear in ``n``."""
    n = arrays[0].shape[-1]
    of_means = _OF_MEANS.get(statistic)
    if of_means is not None:
        loo = [(a.sum(axis=-1, keepdims=True) - a) / (n - 1) for a in arrays]
        jack = _canonical(lead, n)
        jack[...] = of_means(*loo)
        return jack
    # Any other statistic: scipy's explicit jackknife samples, a chunk of left-out examples at
    # a time (same values as scipy's, whose unbatched jackknife holds n x (n - 1) copies).
    width = max(1, int(np.prod(lead, dtype=np.int64))) * len(arrays) * 8 * n
    step = max(1, RESAMPLE_CHUNK_BYTES // width)
    full = [np.broadcast_to(a, (*lead, n)) for a in arrays]
    out = _canonical(lead, n)
    for k in range(0, n, step):
        b = min(step, n - k)
        keep = np.ones((b, n), dtype=bool)
        np.fill_diagonal(keep[:, k : k + b], False)
        idx = np.broadcast_to(np.arange(n), (b, n))[keep].reshape(b, n - 1)
        out[..., k : k + b] = statistic(*[a[..., idx] for a in full], axis=-1)
    return out


def _canonical(lead: tuple[int, ...], k: int) -> np.ndarray:
    """An empty ``[*lead, k]`` array laid out as ``[k, *lead]`` in memory: the layout of a
    statistic of gathered resamples (hence scipy's, unbatched). Reductions over the last axis
    round according to the layout, so every chunking fills this one layout."""
    return np.moveaxis(np.empty((k, *lead), dtype=np.float64), 0, -1)


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

    ``method="BCa"`` (default) or ``"percentile"``; BCa falls back to the percentile interval
    element by element where it is undefined (a site with no spread), and above
    :data:`BCA_MAX_N` examples. The result equals ``scipy.stats.bootstrap(data, statistic,
    paired=True, vectorized=True, axis=-1, n_resamples=n_boot, confidence_level=level,
    method=method, rng=np.random.default_rng(seed))`` in memory linear in ``n`` (see the module
    docstring). Raises :class:`~faithlens.errors.ArgumentError` for fewer than 2 examples,
    ``n_boot < 2`` or ``level`` outside (0, 1).
    """
    n_boot = validate.n_boot(n_boot)
    level = validate.level(level)
    method = validate.choice("method", str(method).lower(), ("bca", "percentile"))
    arrays = [np.asarray(a, dtype=np.float64) for a in data]
    if not arrays:
        raise validate.fail("data", data, "needs at least one array")
    n = _check_data(arrays, "bootstrap")
    lead = tuple(np.broadcast_shapes(*(a.shape[:-1] for a in arrays)))
    full = [np.broadcast_to(a, (*lead, n)) for a in arrays]
    est = np.asarray(statistic(*full, axis=-1), dtype=np.float64)
    if method == "bca" and n > BCA_MAX_N:
        method = "percentile"
    rng = np.random.default_rng(seed)
    size = max(1, int(np.prod(lead, dtype=np.int64)))
    theta = _canonical(lead, n_boot)
    k = 0
    with np.errstate(all="ignore"):
        # Resampled copies [*lead, b, n], gathered exactly as scipy gathers them (the same
        # layout, hence the same rounding), a bounded chunk of resamples at a time.
        for idx in _resample_chunks(rng, n, n_boot, 8 * n * (1 + size * len(full))):
            b = idx.shape[0]
            theta[..., k : k + b] = statistic(*[a[..., idx] for a in full], axis=-1)
            k += b
        se = np.asarray(np.std(theta, ddof=1, axis=-1), dtype=np.float64)
        alpha = (1 - level) / 2
        p_lo = np.full(lead, alpha)
        p_hi = np.full(lead, 1 - alpha)
        pct = _quantiles(theta, p_lo, p_hi)
        low, high = pct
        if method == "bca":
            # Efron & Tibshirani 14.3 / 15.4 (Eq. 15.36), exactly as scipy computes them.
            # scipy's estimate for the bias correction comes from gathered copies
            every = np.arange(n)
            th_hat = np.asarray(statistic(*[a[..., every] for a in full], axis=-1))[..., None]
            below = np.count_nonzero(theta < th_hat, axis=-1)
            atmost = np.count_nonzero(theta <= th_hat, axis=-1)
            z0 = ndtri((below + atmost) / (2 * theta.shape[-1]))
            jack = _jackknife(statistic, arrays, lead)
            nj = float(jack.shape[-1])
            u = (nj - 1) * (jack.mean(axis=-1, keepdims=True) - jack)
            acc = 1 / 6 * (np.sum(u**3, axis=-1) / nj**3) / (np.sum(u**2, axis=-1) / nj**2) ** 1.5
            z_a = float(ndtri(alpha))
            num1 = z0 + z_a
            num2 = z0 - z_a
            a1 = ndtr(z0 + num1 / (1 - acc * num1))
            a2 = ndtr(z0 + num2 / (1 - acc * num2))
            b_lo, b_hi = _quantiles(theta, np.asarray(a1), np.asarray(a2))
            # BCa is undefined where a site has no spread (0/0 acceleration): percentile there.
            ok = ~(np.isnan(b_lo) | np.isnan(b_hi))
            low = np.where(ok, b_lo, low)
            high = np.where(ok, b_hi, high)
    # A statistic with zero spread: the interval is the point.
    flat = np.isnan(low) & np.isfinite(est) & (np.nan_to_num(se) == 0)
    low = np.where(flat, est, low)
    high = np.where(flat, est, high)
    bad = int(np.count_nonzero(~(np.isfinite(est) & np.isfinite(low) & np.isfinite(high))))
    if bad:
        warnings.warn(
            f"bootstrap: the statistic is undefined or infinite (NaN data, or a ratio with a "
            f"zero denominator) for {bad} of {max(1, est.size)} estimates; their estimates or "
            "intervals are not finite numbers",
            DegenerateDataWarning,
            stacklevel=2,
        )
    return Interval(est, se, np.asarray(low), np.asarray(high), level)


def _quantiles(
    theta: np.ndarray, p_lo: np.ndarray, p_hi: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """scipy's linear quantiles of ``theta`` (last axis) at elementwise probabilities."""
    p = np.stack(np.broadcast_arrays(p_lo, p_hi), axis=-1)
    q = np.asarray(_st.quantile(theta, p, axis=-1), dtype=np.float64)
    return q[..., 0], q[..., 1]


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
    n_boot = validate.n_boot(n_boot)
    level = validate.level(level)
    arrays = [np.asarray(a, dtype=np.float64).reshape(-1) for a in data]
    if not arrays:
        raise validate.fail("data", data, "needs at least one array")
    n = _check_data(arrays, "bootstrap_means")
    means = [a.mean() for a in arrays]
    est = np.asarray(statistic(*means), dtype=np.float64)
    rng = np.random.default_rng(seed)
    reps = []
    for idx in _resample_chunks(rng, n, n_boot, 16 * n):
        reps.append(np.asarray(statistic(*[a[idx].mean(-1) for a in arrays]), dtype=np.float64))
    theta = np.concatenate(reps)
    finite = theta[np.isfinite(theta)]
    if finite.size < 2:
        warnings.warn(
            "bootstrap_means: the statistic is undefined (NaN, or a ratio with a zero "
            f"denominator) in {theta.size - finite.size} of {theta.size} resamples; its "
            "interval is NaN",
            DegenerateDataWarning,
            stacklevel=2,
        )
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
    return bootstrap(_mean, (np.asarray(x),), n_boot=n_boot, level=level, seed=seed)


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
