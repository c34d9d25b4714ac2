"""Bounds, intervals, prediction sets: formulas against hand-computed and brute-force values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from faithlens.errors import InputError
from faithlens.neurons import bounds as B


def brute_metric(kind, a, q1, q0, n=400_000, seed=0):
    """The metric by simulation of a population with those three numbers."""
    rng = np.random.default_rng(seed)
    fire = rng.random(n) < a
    c = np.where(fire, rng.random(n) < q1, rng.random(n) < q0)
    tp = (fire & c).sum()
    return {
        "accuracy": (fire == c).mean(),
        "c_given_fire": tp / fire.sum(),
        "fire_given_c": tp / c.sum(),
        "iou": tp / (fire | c).sum(),
        "f1": 2 * tp / (fire.sum() + c.sum()),
    }[kind]


@pytest.mark.parametrize("kind", B.CORE_KINDS)
def test_metric_from_rates_matches_simulation(kind):
    a, q1, q0 = 0.1, 0.7, 0.05
    assert B.metric_from_rates(kind, np.array(a), np.array(q1), np.array(q0)) == pytest.approx(
        brute_metric(kind, a, q1, q0), abs=5e-3
    )


@pytest.mark.parametrize("kind", B.CORE_KINDS)
def test_metric_from_counts_agrees_with_rates(kind):
    a, q1, q0 = 0.2, 0.6, 0.1
    t, fp, fn = a * q1, a * (1 - q1), (1 - a) * q0
    assert B.metric_from_counts(kind, np.array(1.0), t, fp, fn) == pytest.approx(
        B.metric_from_rates(kind, np.array(a), np.array(q1), np.array(q0))
    )


@pytest.mark.parametrize("kind", B.CORE_KINDS)
def test_rate_metrics_are_monotone_as_the_box_argument_needs(kind):
    grid = np.linspace(0.01, 0.99, 25)
    a, q1, q0 = np.meshgrid(grid, grid, grid, indexing="ij")
    v = B.metric_from_rates(kind, a, q1, q0)
    assert (np.diff(v, axis=1) >= -1e-12).all()  # rises in q1
    assert (np.diff(v, axis=2) <= 1e-12).all()  # falls in q0
    da = np.diff(v, axis=0)  # monotone in a for every (q1, q0)
    assert ((da >= -1e-12).all(axis=0) | (da <= 1e-12).all(axis=0)).all()


def test_core_kind_follows_the_direction_convention():
    assert B.core_kind("precision", "unit_predicts_concept") == "c_given_fire"
    assert B.core_kind("recall", "unit_predicts_concept") == "fire_given_c"
    assert B.core_kind("precision", "concept_predicts_unit") == "fire_given_c"
    assert B.core_kind("recall", "concept_predicts_unit") == "c_given_fire"
    assert B.core_kind("iou", "concept_predicts_unit") == "iou"


def test_auroc_epsilon_formula():
    eps = B.auroc_epsilon(np.array([50.0]), np.array([450.0]), 20, 0.05)
    assert eps[0] == pytest.approx(math.sqrt(math.log(2 * 20 / 0.05) * (1 / 50 + 1 / 450) / 2))
    assert np.isinf(B.auroc_epsilon(np.array([0.0]), np.array([10.0]), 2, 0.05)[0])


def test_closed_form_bounds_match_the_spec_table():
    # accuracy, |C| = 50, delta = 0.05: sqrt(ln(2*50/0.05) / 2n) = .195 / .113 / .062 / .036
    eps = B.faithfulness_bound("accuracy", np.array([100, 300, 1000, 3000]), 50, 0.05)
    assert np.round(eps, 3).tolist() == [0.195, 0.113, 0.062, 0.036]
    # sample size for +-0.05 at |C| = 1000: 2,119 (the spec's table) up to rounding
    assert B.required_n("accuracy", 0.05, 1000) in (2119, 2120)
    # precision/IoU with U = p exactly: sqrt(L / 2pn)
    L = math.log(2 * 1000 / 0.05)
    assert B.faithfulness_bound("recall", 21_000, 1000, p=0.1) == pytest.approx(
        math.sqrt(L / (2 * 0.1 * 21_000))
    )
    n_auc = B.required_n("auroc", 0.05, 1000, p=0.5)
    assert 8400 <= n_auc <= 8600  # the spec's 8.5k
    with pytest.raises(InputError, match="needs alpha"):
        B.faithfulness_bound("iou", 100, 10, p=0.1)
    with pytest.raises(InputError, match="no closed-form"):
        B.faithfulness_bound("cosine", 100, 10)


def test_required_n_inverts_the_bound():
    n = B.required_n("iou", 0.04, 500, 0.05, p=0.05, alpha=0.05)
    assert B.faithfulness_bound("iou", n, 500, 0.05, p=0.05, alpha=0.05) <= 0.04
    assert B.faithfulness_bound("iou", n - 1, 500, 0.05, p=0.05, alpha=0.05) > 0.04


def test_provable_sets_and_certification_by_hand():
    scores = np.array([[0.9, 0.5, 0.1], [0.6, 0.55, 0.1], [np.nan, np.nan, np.nan]])
    lower = scores - 0.1
    upper = scores + 0.1
    win, pset, cert = B.provable_sets(scores, lower, upper)
    assert win.tolist() == [0, 0, -1]
    # unit 0: best lower 0.8 > every other upper (0.6, 0.2): certified
    assert pset[0].tolist() == [True, False, False] and cert[0]
    # unit 1: 0.65 >= 0.5: two concepts may be best
    assert pset[1].tolist() == [True, True, False] and not cert[1]
    assert not cert[2] and not pset[2].any()
    # with a common half-width eps this is "gap > 2 eps"
    s = np.array([[0.70, 0.59]])
    assert B.provable_sets(s, s - 0.05, s + 0.05)[2][0]  # gap 0.11 > 0.10
    assert not B.provable_sets(s, s - 0.06, s + 0.06)[2][0]  # gap 0.11 < 0.12


def test_be_sets_smallest_prefix_reaching_the_level():
    freq = np.array([[0.5, 0.3, 0.15, 0.05], [1.0, 0, 0, 0], [0.25, 0.25, 0.25, 0.25]])
    sets = B.be_sets(freq, 0.9)
    assert sets[0].tolist() == [True, True, True, False]  # .5+.3 < .9 <= .95
    assert sets[1].tolist() == [True, False, False, False]
    assert sets[2].tolist() == [True, True, True, True]
    assert B.be_sets(freq, 0.8)[0].tolist() == [True, True, False, False]


def test_frequency_error_formula():
    assert B.frequency_error(np.array([20.0]), 1000)[0] == pytest.approx(
        math.sqrt(math.log(2 * 20 / 0.05) / 2000)
    )


def test_bootstrap_band_is_simultaneous_and_studentised():
    rng = np.random.default_rng(0)
    est = np.array([0.5, 0.2, 0.1])
    draws = est + rng.standard_normal((4000, 3)) * np.array([0.01, 0.05, 0.1])
    lo, hi, se = B.bootstrap_band(est, draws, 0.05)
    assert se == pytest.approx([0.01, 0.05, 0.1], rel=0.05)
    q = (hi - est) / se
    assert np.allclose(q, q[0])  # one multiplier for all concepts
    assert 2.2 < q[0] < 2.6  # the 95% quantile of the max of 3 |N(0,1)| is about 2.39
    inside = ((draws >= lo) & (draws <= hi)).all(axis=1)
    assert inside.mean() == pytest.approx(0.95, abs=0.015)


def test_iid_intervals_contain_the_point_estimate_region_and_shrink_with_n():
    # a unit whose top 10% are 80% concept, rest 5%
    def iv(n):
        k = int(0.1 * n)
        tp = np.array([[0.8 * k]])
        pos = np.array([0.8 * k + 0.05 * (n - k)])
        return B.threshold_intervals_iid(
            "iou",
            n=n,
            fired=np.array([k]),
            tp=tp,
            pos=pos,
            boundary=np.array([[1.0]]),
            top_k=True,
            delta=0.05,
        )

    small, big = iv(500), iv(50_000)
    assert small.upper[0, 0] - small.lower[0, 0] > 3 * (big.upper[0, 0] - big.lower[0, 0])
    truth = 0.1 * 0.8 / (0.1 + 0.9 * 0.05)
    assert big.lower[0, 0] < truth < big.upper[0, 0]
