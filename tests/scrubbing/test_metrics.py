"""The scrubbing metrics' interval: mean, analytic standard error and BCa interval; the old name
warns."""

from __future__ import annotations

import numpy as np
import pytest

from faithlens import stats
from faithlens.scrubbing import metrics


def test_mean_se_interval_is_the_mean_its_standard_error_and_a_bootstrap_interval():
    x = np.random.default_rng(0).normal(1.0, 2.0, 40)
    est, se, lo, hi = metrics.mean_se_interval(x, n_boot=500, level=0.9, seed=3)
    assert est == pytest.approx(x.mean(), abs=1e-12)
    assert se == pytest.approx(x.std(ddof=1) / np.sqrt(x.size), rel=1e-12)
    iv = stats.bootstrap_means(lambda a: np.asarray(a), (x,), n_boot=500, level=0.9, seed=3)
    assert (lo, hi) == (float(iv.low), float(iv.high))
    assert lo < est < hi


def test_the_old_name_warns_and_gives_the_same_numbers():
    x = np.arange(10.0)
    with pytest.warns(DeprecationWarning, match="now mean_se_interval"):
        old = metrics.mean_interval(x, n_boot=200, level=0.95, seed=0)
    assert old == metrics.mean_se_interval(x, n_boot=200, level=0.95, seed=0)
