"""Reading vectors: formulas against brute force, recovery of a planted direction, held-out
statistics, stability, persistence of results, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import binomtest
from sklearn.metrics import roc_auc_score

import faithlens as fl
from faithlens import stats
from faithlens.representations import METHODS, ReadingResult, fit_direction, read
from faithlens.representations.reading import activations, pair_auroc, stability
from faithlens.results import Result
from tests.helpers.represent import decoy_acts, planted, planted_acts, planted_reading


def _toy_pairs(n=200, d=12, seed=0, gap=3.0):
    rng = np.random.default_rng(seed)
    u = np.zeros(d)
    u[0] = 1.0
    base = rng.standard_normal((n, d)) * np.array([0.3] + [1.0] * (d - 1))
    pos = base + gap / 2 * u + 0.1 * rng.standard_normal((n, d))
    neg = base - gap / 2 * u + 0.1 * rng.standard_normal((n, d))
    return pos, neg, u


def test_pca_is_the_top_eigenvector_of_sign_flipped_differences():
    pos, neg, _ = _toy_pairs()
    r = fit_direction(pos, neg, "pca", seed=3)
    # brute force: same sign flips, covariance, eigh
    signs = np.random.default_rng(3).choice([-1.0, 1.0], size=len(pos))
    x = (pos - neg) * signs[:, None]
    x -= x.mean(0)
    w, v = np.linalg.eigh(x.T @ x)
    top = v[:, -1]
    assert abs(abs(float(r @ top)) - 1) < 1e-8
    # oriented by the labels: the positive member scores higher in most pairs
    assert np.mean((pos - neg) @ r > 0) >= 0.5


def test_mean_diff_and_logistic_directions():
    pos, neg, u = _toy_pairs()
    md = fit_direction(pos, neg, "mean_diff")
    ref = (pos - neg).mean(0)
    np.testing.assert_allclose(md, ref / np.linalg.norm(ref), atol=1e-12)
    lg = fit_direction(pos, neg, "logistic")
    assert abs(np.linalg.norm(lg) - 1) < 1e-9 and float(lg @ u) > 0.9
    rnd = fit_direction(pos, neg, "random", seed=1)
    assert abs(float(rnd @ u)) < 0.9
    with pytest.raises(fl.InputError, match="unknown method"):
        fit_direction(pos, neg, "lda")
    with pytest.raises(fl.InputError, match="zero"):
        fit_direction(pos, pos, "mean_diff")


def test_pair_auroc_is_the_mann_whitney_statistic():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(40) + 0.7, rng.standard_normal(40)
    a[3] = b[5]  # a tie counts half
    ref = roc_auc_score(np.r_[np.ones(40), np.zeros(40)], np.r_[a, b])
    assert abs(float(pair_auroc(a, b)) - ref) < 1e-12
    # vectorised over leading axes
    both = pair_auroc(np.stack([a, b]), np.stack([b, a]))
    np.testing.assert_allclose(both, [ref, 1 - ref], atol=1e-12)


def test_wilson_interval_matches_scipy():
    iv = stats.proportion_interval([0, 7, 40], [40, 40, 40])
    for k, lo, hi in zip([0, 7, 40], iv.low, iv.high):
        ci = binomtest(k, 40).proportion_ci(method="wilson")
        assert abs(lo - ci.low) < 1e-12 and abs(hi - ci.high) < 1e-12
    assert stats.empirical_p(3.0, np.array([1.0, 2.0, 3.0, 4.0])) == pytest.approx(3 / 5)
    assert stats.empirical_p(-3.0, np.array([1.0, -2.0]), alternative="two-sided") == pytest.approx(
        1 / 3
    )


@pytest.mark.parametrize("method", ["pca", "mean_diff", "logistic"])
def test_each_method_recovers_the_planted_direction(method):
    pm = planted()
    r = planted_reading(method)
    u, m = pm.direction.numpy(), pm.marker.numpy()
    # layer 1's MLP writes u: read after it, the direction is u; before it, the input marker m
    assert float(r.directions[r.layers.index(1)] @ u) > 0.97
    assert abs(float(r.directions[r.layers.index(0)] @ m)) > 0.97
    assert np.all(r.accuracy == 1.0) and np.all(r.auroc > 0.99)
    assert np.all(r.accuracy_low > 0.8)
    assert r.separation[1] > 5.0 and r.spread[1] > 0


def test_random_baseline_and_methods_agree():
    rr = planted_reading("random")
    u = planted().direction.numpy()
    assert abs(float(rr.directions[1] @ u)) < 0.5
    cos = planted_reading("pca").cosine(planted_reading("mean_diff"))
    assert np.all(cos > 0.99)


def test_decoy_pairs_read_the_decoy_and_shuffled_labels_read_nothing():
    pm = planted()
    r = read(None, decoy_acts(), method="mean_diff", n_boot=200)
    assert float(r.directions[1] @ pm.decoy.numpy()) > 0.99
    assert float(r.directions[1] @ pm.direction.numpy()) < 0.05
    # swap the members of a random half of the pairs: nothing left to read
    acts = planted_acts()
    flip = np.random.default_rng(0).random(len(acts)) < 0.5
    pos = np.where(flip[:, None, None], acts.negative, acts.positive)
    neg = np.where(flip[:, None, None], acts.positive, acts.negative)
    shuffled = type(acts)(pos, neg, acts.layers, acts.site, acts.position, acts.groups)
    r0 = read(None, shuffled, method="mean_diff", n_boot=200, n_stability=20)
    assert np.all(r0.accuracy_low < 0.5) and np.all(r0.accuracy_high > 0.5)
    assert np.all(r0.stability < 0.9)


def test_stability_high_for_planted_low_for_random():
    pos, neg = planted_acts().layer(1)
    r = fit_direction(pos, neg, "pca")
    cos = stability(pos, neg, r, "pca", n_boot=20, seed=0)
    assert cos.min() > 0.99
    rr = fit_direction(pos, neg, "random")
    assert stability(pos, neg, rr, "random", n_boot=20).mean() < 0.5
    res = planted_reading("pca", 20)
    assert np.all(res.stability > 0.99) and np.all(res.stability_low <= res.stability)


def test_read_from_model_with_explicit_test_pairs_and_positions():
    pm = planted()
    train, test = pm.pairs(24, seed=5), pm.pairs(12, seed=6)
    r = read(pm.model, train, method="mean_diff", layers=[1], test=test, n_boot=100)
    assert r.layers == [1] and r.n_train == 24 and r.n_test == 12
    assert float(r.direction(1) @ pm.direction) > 0.97
    # the token before the mode word holds nothing about it
    prev = read(pm.model, train, layers=[1], position=-1, test=test, n_boot=100)
    assert prev.accuracy[0] < 0.8
    mean = activations(pm.model, train.positive, layers=[1], position="mean")
    last = activations(pm.model, train.positive, layers=[1])
    assert mean.shape == last.shape == (24, 1, pm.model.d_model)


def test_activations_match_a_plain_forward_hook():
    pm = planted()
    hf = pm.model.module
    prompts = ["w1 w2 truthful", "w3 deceptive"]
    got = activations(pm.model, prompts, layers=[0, 1])
    for i, p in enumerate(prompts):
        ids = pm.model.to_tokens(p)
        seen = {}
        hooks = [
            hf.model.layers[L].register_forward_hook(
                lambda m, a, o, L=L, seen=seen: seen.__setitem__(
                    L, (o[0] if isinstance(o, tuple) else o)[0, -1]
                )
            )
            for L in (0, 1)
        ]
        try:
            with torch.no_grad():
                hf(input_ids=ids)
        finally:
            for h in hooks:
                h.remove()
        for j in (0, 1):
            np.testing.assert_allclose(got[i, j], seen[j].numpy(), atol=1e-5)


def test_steering_and_ablation_vectors():
    r = planted_reading("pca")
    st = r.steering([1], -2.0)
    v = st.vectors["resid_post.1"]
    np.testing.assert_allclose(v.numpy(), -2.0 * r.separation[1] * r.directions[1], rtol=1e-5)
    assert torch.allclose(r.vector(1, 3.0, "unit"), 3.0 * r.direction(1))
    assert float(r.vector(1, 1.0, "spread").norm()) == pytest.approx(r.spread[1], rel=1e-5)
    ab = r.ablation(1)
    assert ab.operator == "project_out" and ab.sites == ["resid_post.1"]
    with pytest.raises(fl.InputError, match="scale"):
        r.vector(1, 1.0, "bogus")
    with pytest.raises(fl.InputError, match="no reading vector"):
        r.direction(7)
    assert r.best_layer() in r.layers


def test_reading_result_save_load_plot(tmp_path):
    r = planted_reading("pca", 20)
    r.save(tmp_path / "r")
    back = Result.load(tmp_path / "r")
    assert isinstance(back, ReadingResult)
    np.testing.assert_array_equal(back.directions, r.directions)
    assert back.layers == r.layers and back.method == "pca"
    assert "best layer" in r.summary()
    assert list(r.to_frame()["layer"]) == r.layers
    fig = r.plot()
    assert fig.axes


def test_bad_input_is_caught_before_any_forward_pass():
    pm = planted()
    pairs = pm.pairs(8)
    with pytest.raises(fl.InputError, match="method='svm': must be one of"):
        read(pm.model, pairs, method="svm")
    with pytest.raises(fl.InputError, match="out of range"):
        read(pm.model, pairs, layers=[5])
    with pytest.raises(fl.SiteError):
        read(pm.model, pairs, site="resid_bogus")
    with pytest.raises(fl.InputError, match="width"):
        read(pm.model, pairs, site="mlp_post")
    with pytest.raises(fl.InputError, match="position"):
        read(pm.model, pairs, position=2)
    with pytest.raises(fl.InputError, match="too few"):
        read(pm.model, pm.pairs(3))
    with pytest.raises(fl.InputError, match="needs the model"):
        read(None, pairs)
    with pytest.raises(fl.InputError, match="level"):
        read(pm.model, pairs, level=1.5)
    with pytest.raises(fl.InputError, match="were not collected"):
        read(None, planted_acts(), layers=[3])
    assert set(METHODS) == {"pca", "mean_diff", "logistic", "random"}


def test_scan_reads_the_concept_token_by_token():
    pm = planted()
    r = planted_reading("pca")
    sc = r.scan(pm.model, ["w1 w2 truthful w3", "w4 deceptive", "w5 w6 w7"])
    assert sc.shape == (3, 2, 4)
    at = sc[:, 1]  # layer 1, where u lives
    assert at[0, 2] > 3 and at[1, 1] < -3  # the mode tokens
    assert abs(at[0, 0]) < 1 and np.all(np.abs(at[2, :3]) < 1)  # fillers read ~0
    assert np.isnan(at[1, 2:]).all()
    # the read-out at the last token equals the held-out scoring convention
    acts = pm.model.run("w1 truthful", cache=["resid_post.1"]).cache["resid_post.1"][0, -1]
    want = float((acts.numpy() - r.means[1]) @ r.directions[1])
    assert r.scan(pm.model, ["w1 truthful"])[0, 1, -1] == pytest.approx(want, rel=1e-4)


def test_a_killed_read_resumes_from_its_checkpoint_with_the_same_numbers(tmp_path, monkeypatch):
    """read(checkpoint=folder) keeps each layer's fit as its chunk finishes; a run killed after
    the first layer resumes with only the second fitted, and every array equals an
    uninterrupted run's; a folder of other options is refused."""
    from faithlens.errors import CheckpointError
    from faithlens.representations import directions, reading

    acts = planted_acts()
    monkeypatch.setattr(reading, "layer_bytes", lambda *a: 1 << 60)  # one layer per chunk
    kw = {"n_stability": 4, "n_boot": 40, "seed": 2}
    ref = read(None, acts, **kw)
    real, calls = directions.fit_layers, []

    def dies_after_one(model, layers, *args):
        calls.append([k for k, *_ in layers])
        if len(calls) > 1:
            raise RuntimeError("killed")
        return real(model, layers, *args)

    monkeypatch.setattr(directions, "fit_layers", dies_after_one)
    with pytest.raises(RuntimeError, match="killed"):
        read(None, acts, checkpoint=tmp_path / "ck", **kw)
    assert sorted(p.name for p in (tmp_path / "ck").glob("layer_*.npz")) == ["layer_0000000.npz"]
    calls.clear()
    monkeypatch.setattr(directions, "fit_layers", lambda *a: calls.append(1) or real(*a))
    got = read(None, acts, checkpoint=tmp_path / "ck", **kw)
    assert len(calls) == len(ref.layers) - 1
    for f in ("directions", "means", "separation", "spread", "test_pos", "test_neg", "auroc"):
        np.testing.assert_array_equal(getattr(got, f), getattr(ref, f), err_msg=f)
    for f in ("auroc_low", "auroc_high", "stability", "stability_low", "stability_high"):
        np.testing.assert_array_equal(getattr(got, f), getattr(ref, f), err_msg=f)
    with pytest.raises(CheckpointError, match="other activations or options"):
        read(None, acts, checkpoint=tmp_path / "ck", **{**kw, "seed": 3})
