"""faithlens.stats: BCa parity with scipy, memory linear in n, degenerate input refused."""

from __future__ import annotations

import dataclasses
import math
import re
import tracemalloc
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sst

from faithlens import stats
from faithlens.errors import ArgumentError


def _scipy(statistic, data, *, n_boot, seed, method="BCa"):
    lead = np.broadcast_shapes(*(np.shape(a)[:-1] for a in data))
    n = np.shape(data[0])[-1]
    full = tuple(np.broadcast_to(np.asarray(a, dtype=np.float64), (*lead, n)) for a in data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sst.bootstrap(
            full,
            statistic,
            paired=True,
            vectorized=True,
            axis=-1,
            n_resamples=n_boot,
            confidence_level=0.95,
            method=method,
            rng=np.random.default_rng(seed),
        )


def _median(a, axis=-1):
    return np.median(a, axis=axis)


def _diff_mean(a, b, axis=-1):
    return a.mean(axis=axis) - b.mean(axis=axis)


def _data(n=120, seed=0):
    rng = np.random.default_rng(seed)
    patched = rng.exponential(size=(4, n)) + np.arange(4)[:, None]
    base = rng.normal(size=n)
    source = rng.normal(size=n) + 5
    return patched, base, source


# (statistic, data, tolerance): the closed-form jackknife of mean statistics differs from
# scipy's explicit one by rounding only; other statistics use scipy's jackknife samples.
CASES = [
    ("ratio_of_means", lambda p, b, s: (stats.ratio_of_means, (p, b, s)), 1e-10),
    ("mean", lambda p, b, s: (stats._mean, (p,)), 1e-10),
    ("mean 1-d", lambda p, b, s: (stats._mean, (s,)), 1e-10),
    ("median", lambda p, b, s: (_median, (p,)), 0.0),
    ("difference of means", lambda p, b, s: (_diff_mean, (p, b)), 0.0),
]


@pytest.mark.parametrize(("name", "make", "tol"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("method", ["BCa", "percentile"])
def test_bootstrap_equals_scipy(name, make, tol, method):
    statistic, data = make(*_data())
    mine = stats.bootstrap(statistic, data, n_boot=400, seed=3, method=method)
    ref = _scipy(statistic, data, n_boot=400, seed=3, method=method)
    lo, hi = np.asarray(ref.confidence_interval.low), np.asarray(ref.confidence_interval.high)
    assert np.isfinite(lo).all() and np.isfinite(hi).all()
    if tol == 0.0 or method == "percentile":
        np.testing.assert_array_equal(mine.low, lo)
        np.testing.assert_array_equal(mine.high, hi)
    else:
        np.testing.assert_allclose(mine.low, lo, rtol=tol, atol=0)
        np.testing.assert_allclose(mine.high, hi, rtol=tol, atol=0)
    np.testing.assert_allclose(mine.se, ref.standard_error, rtol=1e-12, atol=0)
    np.testing.assert_array_equal(mine.estimate, statistic(*data, axis=-1))


def test_closed_form_jackknife_equals_leave_one_out():
    p, b, s = _data(n=60)
    got = stats._jackknife(stats.ratio_of_means, [p, b, s], (4,))
    for i in range(60):
        keep = np.arange(60) != i
        want = stats.ratio_of_means(p[:, keep], b[keep], s[keep])
        np.testing.assert_allclose(got[:, i], want, rtol=1e-12)


@pytest.mark.parametrize("chunk", [1, 5_000, 200_000])
def test_chunk_size_changes_no_number(monkeypatch, chunk):
    p, b, s = _data(n=150)
    cases = [(stats.ratio_of_means, (p, b, s)), (_median, (p,)), (stats._mean, (s,))]
    ref = [stats.bootstrap(f, d, n_boot=300, seed=1) for f, d in cases]
    monkeypatch.setattr(stats, "RESAMPLE_CHUNK_BYTES", chunk)
    for (f, d), r in zip(cases, ref):
        got = stats.bootstrap(f, d, n_boot=300, seed=1)
        for k in ("estimate", "se", "low", "high"):
            np.testing.assert_array_equal(getattr(got, k), getattr(r, k))
    got = stats.bootstrap_means(lambda a: a, (s,), n_boot=300, seed=1)
    monkeypatch.setattr(stats, "RESAMPLE_CHUNK_BYTES", 32 << 20)
    again = stats.bootstrap_means(lambda a: a, (s,), n_boot=300, seed=1)
    assert (got.low, got.high, got.se) == (again.low, again.high, again.se)


def _peak_bytes(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    "run",
    [
        lambda x: stats.mean_interval(x, n_boot=200),
        lambda x: stats.normalized_effect(np.stack([x, 2 * x]), x[::-1], x + 3, n_boot=200),
        lambda x: stats.bootstrap(_diff_mean, (x, x[::-1]), n_boot=200),
        lambda x: stats.bootstrap_means(lambda a: a, (x,), n_boot=200),
    ],
    ids=["mean_interval", "normalized_effect", "generic BCa", "bootstrap_means"],
)
def test_memory_grows_linearly_in_n(run):
    """4x the examples: a linear method needs ~4x the memory, a quadratic one 16x."""
    rng = np.random.default_rng(0)
    small = _peak_bytes(lambda: run(rng.normal(size=2_000)))
    large = _peak_bytes(lambda: run(rng.normal(size=8_000)))
    assert large < 6 * small, (small, large)
    # and in absolute terms: far below the n^2 float64 jackknife (512 MB at n = 8000)
    assert large < 100 << 20


BAD = [
    ({"n_boot": 0}, "n_boot=0"),
    ({"n_boot": 1}, "n_boot=1"),
    ({"n_boot": 2.5}, "n_boot=2.5"),
    ({"level": 0}, "level=0"),
    ({"level": 1}, "level=1"),
    ({"level": 1.5}, "level=1.5"),
    ({"level": float("nan")}, "level=nan"),
    ({"level": -0.2}, "level=-0.2"),
    ({"method": "bootstrap-t"}, "method='bootstrap-t'"),
]


@pytest.mark.parametrize(("kwargs", "named"), BAD, ids=[b[1] for b in BAD])
def test_bad_arguments_are_refused(kwargs, named):
    x = np.arange(10.0)
    with pytest.raises(ArgumentError, match=re.escape(named)):
        stats.bootstrap(stats._mean, (x,), **kwargs)
    if "method" not in kwargs:
        with pytest.raises(ArgumentError, match=re.escape(named)):
            stats.mean_interval(x, **kwargs)
        with pytest.raises(ArgumentError, match=re.escape(named)):
            stats.normalized_effect(x[None], x, x + 1, **kwargs)
        with pytest.raises(ArgumentError, match=re.escape(named)):
            stats.bootstrap_means(lambda a: a, (x,), **kwargs)


@pytest.mark.parametrize("n", [0, 1])
def test_a_confidence_interval_needs_two_examples(n):
    x = np.ones(n)
    for call in (
        lambda: stats.mean_interval(x),
        lambda: stats.normalized_effect(x[None], x, x + 1),
        lambda: stats.bootstrap_means(lambda a: a, (x,)),
    ):
        with pytest.raises(ArgumentError, match="needs at least 2 examples"):
            call()


def test_unequal_lengths_are_refused():
    with pytest.raises(ArgumentError, match="same number of examples"):
        stats.bootstrap(_diff_mean, (np.ones(5), np.ones(6)))


def test_mean_se_one_sample_is_nan_with_a_warning():
    with pytest.warns(stats.DegenerateDataWarning, match="one sample"):
        m, se = stats.mean_se([3.0])
    assert m == 3.0 and math.isnan(se)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m, se = stats.mean_se([3.0], allow_single=True)
    assert m == 3.0 and math.isnan(se)
    with pytest.raises(ArgumentError, match="at least 1 sample"):
        stats.mean_se(np.zeros(0))
    m, se = stats.mean_se([1.0, 2.0, 4.0])
    assert m == pytest.approx(7 / 3)
    assert se == pytest.approx(np.std([1.0, 2.0, 4.0], ddof=1) / math.sqrt(3))


def test_a_site_without_spread_keeps_bca_for_the_others():
    """A no-op site (patched == base) has no spread: its interval is the point 0, and BCa still
    applies to every other site (scipy's BCa on that site alone)."""
    p, b, s = _data(n=200)
    p = p.copy()
    p[1] = b
    got = stats.normalized_effect(p, b, s, n_boot=300, seed=2)
    assert got.low[1] == got.high[1] == got.estimate[1] == 0.0 and got.se[1] == 0.0
    keep = [0, 2, 3]
    ref = _scipy(stats.ratio_of_means, (p[keep], b, s), n_boot=300, seed=2)
    np.testing.assert_allclose(got.low[keep], ref.confidence_interval.low, rtol=1e-10)
    np.testing.assert_allclose(got.high[keep], ref.confidence_interval.high, rtol=1e-10)


def test_an_undefined_ratio_warns_and_is_nan():
    """source == base: the normalised effect divides by 0; said, never silently reported."""
    p, b, _ = _data(n=50)
    with pytest.warns(stats.DegenerateDataWarning, match="undefined"):
        got = stats.normalized_effect(p, b, b, n_boot=50)
    assert not np.isfinite(got.low).any() and not np.isfinite(got.high).any()


def test_above_bca_max_n_is_the_percentile_interval(monkeypatch):
    monkeypatch.setattr(stats, "BCA_MAX_N", 100)
    p, b, s = _data(n=150)
    got = stats.normalized_effect(p, b, s, n_boot=200, seed=4)
    ref = _scipy(stats.ratio_of_means, (p, b, s), n_boot=200, seed=4, method="percentile")
    np.testing.assert_array_equal(got.low, ref.confidence_interval.low)
    np.testing.assert_array_equal(got.high, ref.confidence_interval.high)


# -- Interval: the one interval type of every result -------------------------------------------


def test_interval_fields_aliases_and_columns():
    iv = stats.Interval(
        np.array([0.5, 1.0]), np.array([0.1, 0.2]), np.array([0.3, 0.6]), np.array([0.7, 1.4]), 0.9
    )
    assert iv.low is iv.ci_low and iv.high is iv.ci_high
    with pytest.raises(dataclasses.FrozenInstanceError):
        iv.ci_low = 0  # type: ignore[misc]
    assert list(iv.columns("effect")) == ["effect", "effect_se", "effect_ci_low", "effect_ci_high"]
    assert list(iv.columns()) == ["estimate", "se", "ci_low", "ci_high"]
    one = iv[1]
    assert [float(v) for v in one.parts] == [1.0, 0.2, 0.6, 1.4] and one.level == 0.9
    row = pd.DataFrame(iv.columns("q")).iloc[0]
    back = stats.Interval.from_row(row, "q", 0.9)
    assert [float(v) for v in back.parts] == [0.5, 0.1, 0.3, 0.7]


def test_interval_from_se_is_the_normal_or_t_interval():
    iv = stats.Interval.from_se(2.0, 0.5, 0.95)
    assert iv.ci_low == pytest.approx(2.0 - sst.norm.ppf(0.975) * 0.5)
    assert iv.ci_high == pytest.approx(2.0 + sst.norm.ppf(0.975) * 0.5)
    t = stats.Interval.from_se(2.0, 0.5, 0.9, df=4)
    assert t.ci_high == pytest.approx(2.0 + sst.t.ppf(0.95, 4) * 0.5)
    with pytest.raises(ArgumentError, match="level"):
        stats.Interval.from_se(2.0, 0.5, 1.5)


def test_interval_text_is_one_format():
    iv = stats.Interval(0.532, 0.021, 0.491, 0.573, 0.95)
    assert f"{iv}" == "0.532 ± 0.021 [0.491, 0.573]" == iv.format()
    assert f"{iv:+.2f}" == "+0.53 ± 0.02 [+0.49, +0.57]"
    assert f"{iv:8.1f}" == "     0.5 ± 0.0 [0.5, 0.6]"  # the width pads the estimate only
    assert f"{iv:.1%}" == "53.2% ± 2.1% [49.1%, 57.3%]"
    assert f"{stats.Interval(1.0, np.nan, 0.5, 2.0, 0.95)}" == "1.000 [0.500, 2.000]"
    assert f"{stats.Interval(1.0, 0.1, np.nan, np.nan, 0.95)}" == "1.000 ± 0.100"


def test_every_interval_of_stats_is_an_interval():
    rng = np.random.default_rng(0)
    x = rng.normal(size=30)
    for iv in (
        stats.mean_interval(x, n_boot=50),
        stats.proportion_interval(3, 10),
        stats.bootstrap_means(lambda m: m, (x,), n_boot=50),
    ):
        assert isinstance(iv, stats.Interval)
        assert iv.ci_low <= iv.estimate <= iv.ci_high and iv.se > 0


def test_interval_low_high_keywords_still_work_with_a_warning():
    with pytest.warns(DeprecationWarning, match="low= is deprecated"):
        iv = stats.Interval(1.0, 0.1, low=0.8, high=1.2, level=0.95)
    assert (iv.ci_low, iv.ci_high, iv.low) == (0.8, 1.2, 0.8)
    with pytest.raises(ArgumentError, match=r"low=0\.8: cannot be given together with ci_low"):
        stats.Interval(1.0, 0.1, 0.7, 1.2, 0.95, low=0.8)
    assert dataclasses.replace(iv, ci_low=0.5).ci_low == 0.5
