"""``fl.neurons.explain``: results, certification, stability, bad inputs, save/load, resume."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import faithlens as fl
import faithlens.neurons as N
from faithlens.errors import CheckpointError, InputError, ShapeError
from faithlens.results import Result


@pytest.fixture(scope="module")
def synth():
    """Unit 0 detects concept 'a' (clearly), unit 1 is pure noise, unit 2 mixes 'b' and 'c'."""
    g = torch.Generator().manual_seed(0)
    n = 3000
    freqs = torch.tensor([0.1, 0.1, 0.1, 0.2, 0.3])
    c = (torch.rand(n, 5, generator=g) < freqs).float()
    x = torch.stack(
        [
            3 * c[:, 0] + torch.randn(n, generator=g),
            torch.randn(n, generator=g),
            1.2 * c[:, 1] + 1.1 * c[:, 2] + torch.randn(n, generator=g),
        ],
        1,
    )
    con = N.Concepts(c, ("a", "b", "c", "d", "e"))
    return x, con


@pytest.fixture(scope="module")
def result(synth):
    x, con = synth
    return N.explain(x, con, ["iou", "auroc", "correlation"], alpha=0.1, n_boot=200, seed=0)


def test_certified_winner_and_uncertified_units_say_so(result):
    df = result.to_frame()
    iou = df[df.metric == "iou"].set_index("unit")
    assert iou.loc["0", "status"] == "certified" and iou.loc["0", "concept"] == "a"
    assert iou.loc["0", "guaranteed"] == pytest.approx(iou.loc["0", "score_ci_low"])
    assert 0 < iou.loc["0", "guaranteed"] < iou.loc["0", "score"]
    # the noise unit is not certified: no concept is reported, only the top-scoring one
    assert iou.loc["1", "status"].startswith("not certified")
    assert pd.isna(iou.loc["1", "concept"]) and iou.loc["1", "top_scoring"] in "abcde"
    assert result.explanations("iou")["1"] is None
    text = result.summary()
    assert "NOT certified" in text and "certified 'a'" in text
    # unit 2 is a near-tie of b and c: both stay in its provable set
    assert {"b", "c"} <= set(iou.loc["2", "provable_set"].split(" | "))


def test_stability_of_a_clear_unit_and_of_noise(result):
    st = result.stability("iou").set_index("unit")
    assert st.loc["0", "mode"] == "a" and st.loc["0", "mode_freq"] > 0.95
    assert st.loc["1", "n_distinct"] >= 3 and st.loc["1", "mode_freq"] < 0.8
    be = result.be_set("iou")
    assert be[0].sum() == 1 and be[1].sum() >= 2
    assert np.allclose(result.freq.sum(-1), 1.0)  # every resample picks one winner


def test_bound_kinds_are_named(result):
    assert result.bounds[0].startswith("kl (top-k")
    assert result.bounds[1].startswith("mcdiarmid")
    assert result.bounds[2].startswith("bootstrap max-t band")
    # the band certifies the clear unit for correlation too
    assert result.certified("correlation")[0]


def test_unit_detail_and_plot(result):
    d = result.unit(0, "iou", top=3)
    assert d["concept"].iloc[0] == "a" and d["provable"].iloc[0] and d["be_set"].iloc[0]
    assert (d["score_ci_low"] <= d["score"]).all() and (d["score"] <= d["score_ci_high"]).all()
    fig = result.plot(metric="iou", units=[0, 1])
    assert len(fig.axes) == 4
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_save_load_roundtrip(result, tmp_path):
    result.save(tmp_path / "r")
    back = Result.load(tmp_path / "r")
    assert isinstance(back, N.NeuronExplanation)
    assert back.metrics == result.metrics and back.units == result.units
    assert np.allclose(back.scores, result.scores, equal_nan=True)
    pd.testing.assert_frame_equal(back.to_frame(), result.to_frame())
    assert pd.read_parquet(tmp_path / "r" / "table.parquet").shape[0] == 9


def test_seeded_runs_are_reproducible(synth):
    x, con = synth
    a = N.explain(x, con, "iou", n_boot=50, seed=3)
    b = N.explain(x, con, "iou", n_boot=50, seed=3)
    c = N.explain(x, con, "iou", n_boot=50, seed=4)
    assert np.array_equal(a.freq, b.freq) and np.array_equal(a.scores, b.scores)
    assert not np.array_equal(a.freq, c.freq)


def test_checkpoint_resumes_and_refuses_other_runs(synth, tmp_path, monkeypatch):
    x, con = synth
    kw = dict(metric="iou", n_boot=40, seed=1, max_memory=60_000)
    ref = N.explain(x, con, **kw)
    ck = tmp_path / "ck"
    first = N.explain(x, con, checkpoint=ck, **kw)
    assert len(list(ck.glob("block_*.npz"))) >= 2
    # a rerun must not recompute saved blocks
    import importlib

    E = importlib.import_module("faithlens.neurons.passes")

    calls = {"n": 0}
    real = E._block_scores

    def counting(*a, **k):
        calls["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(E, "_block_scores", counting)
    again = N.explain(x, con, checkpoint=ck, **kw)
    n_blocks = len(list(ck.glob("block_*.npz")))
    assert calls["n"] == n_blocks  # only the full-data pass ran, once per block
    for r in (first, again):
        assert np.array_equal(r.freq, ref.freq)
    with pytest.raises(CheckpointError, match="different run"):
        N.explain(x, con, checkpoint=ck, metric="iou", n_boot=40, seed=2, max_memory=60_000)


def test_groups_and_holdout(synth):
    x, con = synth
    groups = torch.arange(x.shape[0]) // 5
    r = N.explain(x, con, "iou", groups=groups, n_boot=50, alpha=0.1)
    assert r.n_groups == 600 and "grouped" in r.bounds[0]
    h = N.explain(x, con, "iou", groups=groups, holdout=0.3, n_boot=50, alpha=0.1)
    assert h.holdout == 0.3 and "fixed threshold" in h.bounds[0]
    assert h.n_samples < x.shape[0]
    # fixed thresholds avoid the grid: narrower intervals for the clear unit
    w_grid = r.upper[0, 0, 0] - r.lower[0, 0, 0]
    w_hold = h.upper[0, 0, 0] - h.lower[0, 0, 0]
    assert w_hold < w_grid


def test_simultaneous_bounds_are_wider(synth):
    x, con = synth
    a = N.explain(x, con, "iou", n_boot=0)
    b = N.explain(x, con, "iou", n_boot=0, simultaneous=True)
    assert ((b.upper - b.lower) >= (a.upper - a.lower) - 1e-12).all()
    assert a.n_boot == 0
    with pytest.raises(InputError, match="without a bootstrap"):
        a.be_set()


def test_fixed_threshold_and_hoeffding(synth):
    x, con = synth
    r = N.explain(x, con, ["f1", "precision"], threshold=1.5, interval="hoeffding", n_boot=0)
    assert "hoeffding (fixed threshold" in r.bounds[0]
    assert np.allclose(r.thresholds, 1.5)
    fire = x[:, 0] > 1.5
    prec = float((fire & (con.values[:, 0] > 0)).sum() / fire.sum())
    assert r.scores[1, 0, 0] == pytest.approx(prec, abs=1e-6)


def test_accepts_arrays_frames_dicts_and_sites(synth, tiny_llama):
    x, con = synth
    df = pd.DataFrame(con.values.numpy(), columns=list(con.names))
    r1 = N.explain(x.numpy(), df, "iou", n_boot=0)
    r2 = N.explain(x, {k: con.values[:, i] for i, k in enumerate(con.names)}, "iou", n_boot=0)
    assert r1.concepts == con.names and np.allclose(r1.scores, r2.scores)
    # a site of a model plus inputs
    model = fl.wrap(tiny_llama)
    ids = torch.randint(1, 90, (6, 7), generator=torch.Generator().manual_seed(0))
    acts = N.collect(model, ids, "mlp_post.1")
    assert acts.values.shape == (42, model.d_mlp) and acts.groups is not None
    labels = (ids.reshape(-1) % 3 == 0).float()[:, None]
    r = N.explain(
        "mlp_post.1", labels, "iou", model=model, inputs=ids, n_boot=0, skip_constant=True
    )
    assert r.scores.shape == (1, model.d_mlp, 1) and r.n_groups == 6


def test_collect_masks_padding(tiny_llama):
    model = fl.wrap(tiny_llama)
    ids = torch.randint(1, 90, (3, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[0, 4:] = 0
    mask[2, 2:] = 0
    acts = N.collect(model, {"input_ids": ids, "attention_mask": mask}, "mlp_post.0")
    assert acts.n_samples == int(mask.sum())
    assert acts.groups.tolist() == [0] * 4 + [1] * 6 + [2] * 2
    full = model.run({"input_ids": ids, "attention_mask": mask}, cache=["mlp_post.0"]).cache[
        "mlp_post.0"
    ]
    assert torch.allclose(acts.values[:4], full[0, :4])


# ---- bad inputs -----------------------------------------------------------------------------


def test_bad_inputs_raise_clear_errors(synth):
    x, con = synth
    c = con.values
    with pytest.raises(ShapeError, match="one label row per probing sample"):
        N.explain(x, c[:-5], "iou")
    with pytest.raises(InputError, match="empty"):
        N.explain(x, {}, "iou")
    with pytest.raises(InputError, match="empty"):
        N.explain(x, c[:, :0], "iou")
    const = x.clone()
    const[:, 1] = 2.0
    with pytest.raises(InputError, match=r"units '1' are constant.*skip_constant"):
        N.explain(const, c, "iou")
    r = N.explain(const, c, "iou", skip_constant=True, n_boot=0)
    assert r.skipped == (1,) and "skipped" in r.to_frame().set_index("unit").loc["1", "status"]
    nan = x.clone()
    nan[7, 2] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        N.explain(nan, c, "iou")
    cn = c.clone()
    cn[3, 0] = float("nan")
    with pytest.raises(InputError, match="NaN"):
        N.explain(x, cn, "iou")
    with pytest.raises(InputError, match=r"outside \[0, 1\]"):
        N.explain(x, c * 2, "iou")
    z = c.clone()
    z[:, 4] = 0
    with pytest.raises(InputError, match="never or always present"):
        N.explain(x, z, "iou")
    with pytest.raises(InputError, match="unknown metric 'iuo'"):
        N.explain(x, c, "iuo")
    with pytest.raises(InputError, match="alpha"):
        N.explain(x, c, "iou", alpha=1.5)
    with pytest.raises(InputError, match="n_boot >= 50"):
        N.explain(x, c, "correlation", n_boot=10)
    with pytest.raises(InputError, match="no finite-sample bound"):
        N.explain(x, c, "cosine", bound="theory")
    with pytest.raises(ShapeError, match="4 thresholds for 3 units"):
        N.explain(x, c, "iou", threshold=[0.1, 0.2, 0.3, 0.4])
    with pytest.raises(ShapeError, match=r"\[n_samples, n_units\]"):
        N.explain(x[None], c, "iou")
    with pytest.raises(InputError, match="model= and inputs="):
        N.explain("mlp_post.0", c, "iou")
    with pytest.raises(InputError, match="direction"):
        N.explain(x, c, "iou", direction="sideways")


def test_correlation_accepts_raw_scores(synth):
    x, con = synth
    scores = con.values * 5 - 1  # not probabilities
    r = N.explain(x, scores, ["correlation", "cosine"], n_boot=60)
    assert np.isfinite(r.scores).all()
