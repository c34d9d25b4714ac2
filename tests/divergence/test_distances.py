"""Each distance against a reference: geomloss / POT, brute force or hand-computed values."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import faithlens as fl
from faithlens.divergence import distances as D


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(0)


def test_sinkhorn_of_a_set_with_itself_is_zero(rng):
    x = rng.normal(size=(60, 5))
    assert abs(D.sinkhorn(x, x)) < 1e-8
    assert abs(D.sinkhorn(x, x, normalize=True)) < 1e-8


def test_sinkhorn_matches_geomloss_directly(rng):
    from geomloss import SamplesLoss

    x, y = rng.normal(size=(40, 3)), rng.normal(size=(50, 3)) + 0.3
    ref = SamplesLoss("sinkhorn", p=2, blur=0.05)(torch.tensor(x), torch.tensor(y))
    assert D.sinkhorn(x, y) == pytest.approx(float(ref), rel=1e-10)


def test_sinkhorn_is_half_squared_w2_against_exact_transport(rng):
    from scipy.optimize import linear_sum_assignment

    x = rng.normal(size=(40, 2))
    y = rng.normal(size=(40, 2)) + np.array([1.5, -0.5])
    # exact optimal transport between two uniform sets of equal size is an assignment problem
    cost = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    r, c = linear_sum_assignment(cost)
    exact_half_w2 = 0.5 * cost[r, c].mean()
    # debiased Sinkhorn with a small blur is close to the exact optimal transport cost
    assert D.sinkhorn(x, y, blur=0.01) == pytest.approx(exact_half_w2, rel=0.03)
    # a pure translation by t: W2^2 = |t|^2 exactly
    t = np.array([1.0, 0.0])
    assert D.sinkhorn(x, x + t, blur=0.01) == pytest.approx(0.5, rel=0.02)


def test_normalized_emd_ignores_per_dimension_affine_shifts(rng):
    x = rng.normal(size=(80, 4))
    y = rng.normal(size=(80, 4)) @ rng.normal(size=(4, 4))
    scale, shift = np.array([3.0, 0.2, 7.0, 1.5]), np.array([10.0, -4.0, 0.5, 2.0])
    a = D.sinkhorn_normalized(x, y)
    b = D.sinkhorn_normalized(x * scale + shift, y)
    assert b == pytest.approx(a, rel=1e-5)
    # ... while the un-normalised EMD sees the shift
    assert D.sinkhorn(x * scale + shift, y) > 10 * D.sinkhorn(x, y)
    # and the value is the z-scored Sinkhorn divided by sqrt(D)
    zx, zy = D.zscore(torch.tensor(x)), D.zscore(torch.tensor(y))
    assert a == pytest.approx(D.sinkhorn(zx, zy) / 2.0, rel=1e-8)


def test_sinkhorn_dims_restricts_coordinates(rng):
    x, y = rng.normal(size=(30, 5)), rng.normal(size=(30, 5))
    assert D.sinkhorn(x, y, dims=[0, 1]) == pytest.approx(D.sinkhorn(x[:, :2], y[:, :2]))


def test_pairwise_costs_brute_force(rng):
    x, y = rng.normal(size=(4, 6)), rng.normal(size=(5, 6))
    mse = D.pairwise_cost(x, y, "mse")
    corr = D.pairwise_cost(x, y, "corr")
    for i in range(4):
        for j in range(5):
            assert mse[i, j] == pytest.approx(((x[i] - y[j]) ** 2).mean())
            assert corr[i, j] == pytest.approx(1 - np.corrcoef(x[i], y[j])[0, 1])


@pytest.mark.parametrize("cost", ["mse", "corr"])
def test_matching_and_nearest_neighbour_brute_force(rng, cost):
    x, y = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    c = D.pairwise_cost(x, y, cost)
    best = min(np.mean([c[i, p[i]] for i in range(6)]) for p in itertools.permutations(range(6)))
    assert D.matching_cost(x, y, cost) == pytest.approx(best)
    assert D.nn_cost(x, y, cost) == pytest.approx(np.mean([c[i].min() for i in range(6)]))


def test_local_pca_residual_on_a_plane(rng):
    basis = np.linalg.qr(rng.normal(size=(6, 2)))[0]  # a 2-d plane in 6-d
    natural = rng.normal(size=(200, 2)) @ basis.T
    on = rng.normal(size=(10, 2)) @ basis.T
    normal = np.linalg.qr(np.concatenate([basis, rng.normal(size=(6, 1))], 1))[0][:, 2]
    off = on + 0.7 * normal
    assert D.local_pca_residual(on, natural) < 1e-8
    assert D.local_pca_residual(off, natural) == pytest.approx(0.7, rel=1e-6)


def test_lle_residual_measures_distance_off_the_neighbours_span(rng):
    basis = np.linalg.qr(rng.normal(size=(6, 2)))[0]  # natural data on a 2-d plane in 6-d
    natural = rng.normal(size=(300, 2)) @ basis.T
    on = rng.normal(size=(8, 2)) * 0.5 @ basis.T
    normal = np.linalg.qr(np.concatenate([basis, rng.normal(size=(6, 1))], 1))[0][:, 2]
    # on the plane: reconstructed from its neighbours (up to the ridge regulariser)
    assert D.lle_residual(on, natural, k=5) < 0.02
    # off the plane by 0.7: no affine combination of plane points gets closer than 0.7
    off = D.lle_residuals(on + 0.7 * normal, natural, k=5)
    assert np.all(off >= 0.7 - 1e-9)
    assert np.all(off < 0.75)


def test_kde_matches_sklearn(rng):
    from sklearn.neighbors import KernelDensity

    x, y = rng.normal(size=(7, 3)), rng.normal(size=(50, 3))
    ref = -KernelDensity(bandwidth=0.4).fit(y).score_samples(x)
    assert np.allclose(D.kde_scores(x, y, bandwidth=0.4), ref)


def test_mmd_brute_force(rng):
    x, y = rng.normal(size=(6, 2)), rng.normal(size=(7, 2)) + 1
    h = 1.3

    def k(a, b):
        return np.exp(-((a - b) ** 2).sum() / (2 * h * h))

    xx = sum(k(x[i], x[j]) for i in range(6) for j in range(6) if i != j) / 30
    yy = sum(k(y[i], y[j]) for i in range(7) for j in range(7) if i != j) / 42
    xy = sum(k(a, b) for a in x for b in y) / 42
    assert D.mmd(x, y, bandwidth=h) == pytest.approx(xx + yy - 2 * xy)


def test_classifier_auroc(rng):
    same = D.classifier_auroc(rng.normal(size=(100, 3)), rng.normal(size=(100, 3)))
    apart = D.classifier_auroc(rng.normal(size=(100, 3)) + 1.5, rng.normal(size=(100, 3)))
    assert abs(same - 0.5) < 0.15
    assert apart > 0.9


def test_bad_inputs_give_clear_errors(rng):
    x = rng.normal(size=(30, 4))
    with pytest.raises(fl.ShapeError, match="width 4 but y has width 3"):
        D.sinkhorn(x, rng.normal(size=(30, 3)))
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(fl.InputError, match="NaN"):
        D.mmd(bad, x)
    with pytest.raises(fl.ShapeError, match=r"\[n_points, width\]"):
        D.nn_cost(x[0], x)
    with pytest.raises(fl.ShapeError, match="more natural points than dimensions"):
        D.kde_score(x, rng.normal(size=(3, 4)), bandwidth="scott")
    with pytest.raises(fl.ShapeError, match="k=20 nearest natural neighbours"):
        D.local_pca_residual(x, x[:10])
    with pytest.raises(fl.InputError, match="unknown pair cost"):
        D.matching_cost(x, x, "l1")
