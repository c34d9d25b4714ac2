"""Intervals for bounded means (faithlens.neurons.intervals): against the Chernoff equation,
exact binomial coverage, the Hoeffding formula and the Beta law of an order statistic."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from faithlens.errors import InputError
from faithlens.neurons import bounds as B
from faithlens.neurons import intervals as I


def test_kl_interval_solves_the_chernoff_equation():
    mean = np.array([0.0, 0.03, 0.3, 0.5, 0.97, 1.0])
    m = np.full_like(mean, 200.0)
    lo, hi = I.kl_interval(mean, m, 0.05)
    budget = math.log(2 / 0.05) / 200
    for x, a, b in zip(mean, lo, hi):
        if a > 0:
            assert I._kl(np.array(x), np.array(a)) == pytest.approx(budget, rel=1e-6)
        if b < 1:
            assert I._kl(np.array(x), np.array(b)) == pytest.approx(budget, rel=1e-6)
        assert a <= x <= b
    # m = 0: nothing is known
    lo0, hi0 = I.kl_interval(np.array([0.3]), np.array([0.0]), 0.05)
    assert (lo0[0], hi0[0]) == (0.0, 1.0)


def test_kl_interval_is_valid_for_every_binomial_outcome():
    """Exact coverage: sum the binomial probabilities of the outcomes whose interval misses."""
    n, delta = 60, 0.1
    counts = np.arange(n + 1)
    lo, hi = I.kl_interval(counts / n, np.full(n + 1, float(n)), delta)
    for p in np.linspace(0.01, 0.99, 41):
        miss = (lo > p) | (hi < p)
        assert stats.binom.pmf(counts, n, p)[miss].sum() <= delta + 1e-12


def test_kl_interval_tighter_than_hoeffding_for_rare_events():
    lo_k, hi_k = I.kl_interval(np.array([0.01]), np.array([1000.0]), 0.01)
    lo_h, hi_h = I.hoeffding_interval(np.array([0.01]), np.array([1000.0]), 0.01)
    assert hi_k[0] - lo_k[0] < 0.5 * (hi_h[0] - lo_h[0])


def test_hoeffding_interval_formula():
    lo, hi = I.hoeffding_interval(np.array([0.4]), np.array([100.0]), 0.05)
    eps = math.sqrt(math.log(2 / 0.05) / 200)
    assert lo[0] == pytest.approx(0.4 - eps) and hi[0] == pytest.approx(0.4 + eps)


def test_top_rate_interval_is_the_beta_law_of_the_order_statistic():
    lo, hi = I.top_rate_interval(np.array([10]), 200, 0.05)
    assert lo[0] == pytest.approx(stats.beta.ppf(0.025, 10, 191))
    assert hi[0] == pytest.approx(stats.beta.ppf(0.975, 10, 191))
    # Monte Carlo: the population rate above the 10th largest of 200 uniforms
    rng = np.random.default_rng(0)
    u = np.sort(rng.random((20000, 200)), axis=1)
    rate = 1 - u[:, -10]
    inside = (rate >= lo[0]) & (rate <= hi[0])
    assert inside.mean() == pytest.approx(0.95, abs=0.01)


def test_bounds_reexports_the_intervals():
    for name in I.__all__:
        assert getattr(B, name) is getattr(I, name), name
    with pytest.raises(InputError, match="interval must be one of"):
        I.bounded_mean_interval(np.array([0.5]), np.array([10.0]), 0.05, "wald")


def test_bounded_mean_interval_picks_the_method_and_the_old_name_warns():
    mean, m = np.array([0.1, 0.5]), np.array([50.0, 200.0])
    for method, fn in [("kl", I.kl_interval), ("hoeffding", I.hoeffding_interval)]:
        got = I.bounded_mean_interval(mean, m, 0.05, method)
        want = fn(mean, m, 0.05)
        assert all(np.array_equal(g, w) for g, w in zip(got, want, strict=True))
        with pytest.warns(DeprecationWarning, match="now bounded_mean_interval"):
            old = I.mean_interval(mean, m, 0.05, method)
        assert all(np.array_equal(g, o) for g, o in zip(got, old, strict=True))
