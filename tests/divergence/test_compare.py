"""Divergence against the natural-vs-natural baseline; null/row-space split; adapter readers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import faithlens as fl
from faithlens.divergence import compare, subspace


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(1)


def test_same_distribution_is_at_baseline_and_shift_is_not(rng):
    nat = rng.normal(size=(400, 6))
    same = rng.normal(size=(200, 6))
    shifted = rng.normal(size=(200, 6)) + 0.8
    metrics = ["emd", "nn_mse", "mmd"]
    r_same = fl.divergences(nat, same, metrics=metrics, n_splits=4, seed=0)
    r_shift = fl.divergences(nat, shifted, metrics=metrics, n_splits=4, seed=0)
    for m in metrics:
        s, t = r_same[m], r_shift[m]
        assert abs(s["excess"]) < 4 * s["excess_se"] + 0.02 * abs(s["baseline"]) + 1e-3, m
        assert t["excess"] > 5 * t["excess_se"], m
    assert r_shift["emd"]["ratio"] > 2
    assert not r_same.paired and np.isnan(r_same.mse)


def test_paired_protocol_and_mse(rng):
    nat = rng.normal(size=(100, 4))
    itv = nat + 0.5
    r = fl.divergences(nat, itv, metrics=["emd"], n_splits=3, seed=2)
    assert r.paired
    assert r.mse == pytest.approx(0.25)
    # the intervened half is the intervened version of the baseline half B: the raw split values
    # equal the metric on (B + 0.5 vs A) and (B vs A)
    sv = compare.split_values(nat, itv, metrics=["emd"], n_splits=1, seed=5)
    perm = np.random.default_rng(5).permutation(100)
    a, b = nat[perm[:50]], nat[perm[50:100]]
    # ("emd" is the exact EMD; it was the paper's under-converged Sinkhorn before 0.2.0)
    assert sv.values[0, 0, 0] == pytest.approx(fl.divergence.emd(b + 0.5, a))
    assert sv.values[0, 0, 1] == pytest.approx(fl.divergence.emd(b, a))


def test_result_save_load_plot(tmp_path, rng):
    r = fl.divergences(rng.normal(size=(60, 3)), rng.normal(size=(30, 3)), n_splits=2, seed=0)
    r2 = fl.Result.load(r.save(tmp_path / "div"))
    assert isinstance(r2, fl.DivergenceResult)
    assert r2.metrics == r.metrics and np.allclose(r2.values, r.values)
    assert "natural baseline" in r2.summary()
    import matplotlib.figure

    assert isinstance(r.plot(), matplotlib.figure.Figure)


def test_too_few_points_and_unknown_metrics(rng):
    with pytest.raises(fl.ShapeError, match="halves of 5 points"):
        fl.divergences(rng.normal(size=(10, 3)), rng.normal(size=(10, 3)), metrics=["local_pca"])
    with pytest.raises(fl.InputError, match="unknown divergence metric"):
        fl.divergences(rng.normal(size=(10, 3)), rng.normal(size=(10, 3)), metrics=["wasserstein"])
    with pytest.raises(fl.ShapeError, match="natural has width 3 but intervened has width 2"):
        fl.divergences(rng.normal(size=(10, 3)), rng.normal(size=(10, 2)))


def test_row_null_bases_and_split(rng):
    w = rng.normal(size=(2, 5))  # reads a 2-d row space of a 5-d site
    row, null = subspace.row_null_bases(w)
    assert row.shape == (5, 2) and null.shape == (5, 3)
    full = torch.cat([row, null], 1)
    assert torch.allclose(full.T @ full, torch.eye(5, dtype=full.dtype), atol=1e-10)
    assert torch.allclose(
        torch.as_tensor(w) @ null, torch.zeros(2, 3, dtype=full.dtype), atol=1e-10
    )
    # move natural points only inside the null space: harmless
    nat = rng.normal(size=(300, 5))
    itv = nat + 2.0 * null[:, 0].numpy()
    t = subspace.split_divergences(nat, itv, w, metrics=["emd"], n_splits=3, seed=0)
    by = t.set_index("space")
    assert by.loc["row", "excess"] == pytest.approx(0.0, abs=1e-9)
    assert by.loc["null", "excess"] > 1.0
    assert by.loc["null", "dim"] == 3 and by.loc["row", "dim"] == 2
    # displacements: null-space ones are invisible, row-space ones visible
    vis_null = subspace.visibility(np.tile(null[:, 0].numpy(), (3, 1)), w)
    assert np.allclose(vis_null, 0, atol=1e-10)
    u, s, vt = np.linalg.svd(w)
    assert subspace.visibility(vt[:1], w)[0] == pytest.approx(1.0)
    assert subspace.visibility(vt[1:2], w)[0] == pytest.approx(s[1] / s[0])


def test_adapter_reader_llama(tiny_llama):
    model = fl.wrap(tiny_llama)
    layer = tiny_llama.model.layers[1]
    w, b = model.reader("head.1.2")
    dh = model.d_head
    assert torch.equal(w, layer.self_attn.o_proj.weight[:, 2 * dh : 3 * dh]) and b is None
    w, _ = model.reader("mlp_post.1")
    assert torch.equal(w, layer.mlp.down_proj.weight)
    w, _ = model.reader("attn_in.1")
    assert w.shape == (model.d_head * (model.n_heads + 2 * model.n_kv_heads), model.d_model)
    w, _ = model.reader("mlp_in.1")
    assert w.shape == (2 * model.d_mlp, model.d_model)
    assert model.reader("resid_pre.1") is None
    assert model.reader("resid_post.2") is None


def test_adapter_reader_gpt2_conv1d_and_generic(tiny_gpt2):
    model = fl.wrap(tiny_gpt2)
    w, _ = model.reader("mlp_post.0")
    c_proj = tiny_gpt2.transformer.h[0].mlp.c_proj
    assert torch.equal(w, c_proj.weight.t())  # Conv1D stores [in, out]
    lin = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU())
    g = fl.wrap(lin, sites={"x": "0:in"})
    w, b = g.reader("x")
    assert torch.equal(w, lin[0].weight) and torch.equal(b, lin[0].bias)
    assert g.reader("module:1") is None


def test_grouped_splits_remove_the_near_duplicate_confound():
    rng = np.random.default_rng(7)
    # 60 examples, each with two near-identical natural rows (a prompt and its corrupted twin)
    # and one intervened row that is just a third near-copy: no real divergence.
    x = rng.normal(size=(60, 4))
    nat = np.concatenate([x, x + 0.01 * rng.normal(size=x.shape)])
    itv = x + 0.01 * rng.normal(size=x.shape)
    ids = np.arange(60)
    by_row = fl.divergences(nat, itv, metrics=["nn_mse"], n_splits=8, seed=0)
    grouped = fl.divergences(
        nat, itv, metrics=["nn_mse"], n_splits=8, seed=0, groups=(np.tile(ids, 2), ids)
    )
    # splitting by row, the intervened set has a near-copy of every natural point: it looks
    # *closer* than natural data to itself
    assert by_row["nn_mse"]["ratio"] < 0.7
    # splitting by example, the two comparisons are alike
    g = grouped["nn_mse"]
    assert abs(g["excess"]) < 3 * g["excess_se"] + 0.1 * g["baseline"]
    assert 0.75 < g["ratio"] < 1.33
    with pytest.raises(fl.ShapeError, match="one id per row"):
        fl.divergences(nat, itv, groups=(ids, ids))


def test_spread_takes_one_row_per_group_first():
    g = np.repeat(np.arange(10), 3)  # 10 groups of 3 rows
    idx = np.arange(30)
    sel = compare._spread(idx, g, 10, np.random.default_rng(0))
    assert sorted(g[sel].tolist()) == list(range(10))
    sel = compare._spread(idx, g, 15, np.random.default_rng(1))
    counts = np.bincount(g[sel], minlength=10)
    assert counts.min() >= 1 and counts.max() <= 2 and len(set(sel.tolist())) == 15


def test_no_ratio_of_estimates_that_are_not_positive():
    # the "ratio 1.256" of two negative MMD values: no ratio where the baseline <= 0
    v = np.zeros((3, 4, 2))
    v[0, :, 0], v[0, :, 1] = [2.0, 2.2, 1.8, 2.0], [1.0, 1.1, 0.9, 1.0]  # positive baseline
    v[1, :, 0], v[1, :, 1] = [-0.5, -0.6, -0.4, -0.5], [-0.4, -0.3, -0.5, -0.4]  # negative
    v[2, :, 0] = [0.1, 0.2, 0.1, 0.2]  # a zero baseline
    t = compare.summarize_splits(compare.SplitValues(["emd", "mmd", "nn_mse"], v, 8))
    ratio = dict(zip(t["metric"], t["ratio"]))
    assert ratio["emd"] == pytest.approx(2.0)
    assert np.isnan(ratio["mmd"]) and np.isnan(ratio["nn_mse"])
    assert t.loc[t["metric"] == "mmd", "excess"].iloc[0] == pytest.approx(-0.1)
