"""Alignment search end to end: synthetic task, selection, resume, language models, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import faithlens as fl
from faithlens.das import evaluate_alignment
from faithlens.tasks.synthetic_das import FEATURE_DIMS, synthetic_das
from tests.helpers import das_toys


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def small_tasks():
    """og_holdouts with 30 points per class and 4 noise dims (the CI-sized synthetic task)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return synthetic_das(
            "og_holdouts", seed=11111, n_per_class=30, extra_dims=4, classifier_epochs=300
        )
    finally:
        torch.set_num_threads(n)


def test_synthetic_task_shapes(small_tasks):
    t1, t2 = small_tasks
    assert len(t1.data) == 8 * 30 and t1.data.cl_targets.shape == (240, 6)
    assert t1.classifier_val_acc > 0.95
    assert set(t1.data.cl_groups.tolist()) == {0, 1}
    assert t1.model is t2.model  # og_holdouts shares one classifier
    with pytest.raises(fl.InputError, match="unknown division"):
        synthetic_das("nope")


def test_das_learns_the_x_variable_and_selects_first_best_epoch(small_tasks):
    t1, _ = small_tasks
    res = fl.das(t1.model, t1.data, "h", dims=1, method="linear", epochs=120, seed=1)
    assert res.iia > 0.95
    assert res.select == "iia"
    h = res.history
    best = h["iia"].max()
    assert res.selected_epoch == int(h.index[h["iia"] == best][0])  # the first epoch reaching it
    # the learned alignment re-evaluates to the same IIA through fl.Interchange
    src = t1.model.run(t1.data.source, cache=["h"]).cache["h"]
    out = t1.model.run(t1.data.base, [res.intervention(src)])
    acc = float((out.logits.argmax(-1) == t1.data.labels).float().mean())
    assert acc == pytest.approx(res.iia)


def test_identity_alignment_is_coordinate_patching_and_trains_nothing(small_tasks):
    """method="identity" has no parameters: one epoch, and the IIA of interchanging the first
    native coordinate, as fl.Interchange computes it directly."""
    t1, _ = small_tasks
    res = fl.das(t1.model, t1.data, "h", dims=1, method="identity", epochs=50, seed=1)
    assert len(res.history) == 1 and res.selected_epoch == 0 and res.epochs == 1
    last = fl.das(t1.model, t1.data, "h", dims=1, method="identity", select="last", seed=1)
    assert (
        last.selected_epoch == last.epochs == 1 and last.iia == res.iia
    )  # after the (no-op) update
    src = t1.model.run(t1.data.source, cache=["h"]).cache["h"]
    out = t1.model.run(t1.data.base, [res.intervention(src)])
    acc = float((out.logits.argmax(-1) == t1.data.labels).float().mean())
    assert acc == pytest.approx(res.iia)
    # the same as swapping coordinate 0 of h by hand
    base = t1.model.run(t1.data.base, cache=["h"]).cache["h"].clone()
    base[..., 0] = src[..., 0]
    by_hand = t1.model.run(t1.data.base, [fl.Patch("h", base)])
    acc_hand = float((by_hand.logits.argmax(-1) == t1.data.labels).float().mean())
    assert res.iia == pytest.approx(acc_hand)


def test_cl_loss_brings_intervened_features_closer_to_natural(small_tasks):
    t1, t2 = small_tasks
    kw = dict(dims=1, method="linear", epochs=200, seed=2, emd_dims=list(FEATURE_DIMS))
    d = fl.das(t1.model, t1.data, "h", loss="iia", **kw)
    c = fl.das(t1.model, t1.data, "h", loss="cl", eval_every=20, **kw)
    assert c.select == "emd" and d.select == "iia"
    # IIA 0.979 +- 0.009 (240 pairs): 0.9 is 8 SE below
    assert c.iia > 0.9
    # A regression check of the CL path at one seed, not a statistical claim: at this size
    # (30 points per class, 200 epochs) CL's EMD is lower at seeds 2, 3, 4 and higher at seed 5
    # (0.0585 vs 0.0451), so the claim itself is tested at its own uncertainty in
    # test_das_replication. Seed 2: EMD 0.0508 vs 0.0837, OOD 0.0528 vs 0.0677 (22% apart), the
    # same to 4 decimals under ATEN_CPU_CAPABILITY=default and avx2.
    assert c.emd_features < d.emd_features
    ood_d, ood_c = d.evaluate(t2.model, t2.data), c.evaluate(t2.model, t2.data)
    assert ood_c.emd_features < ood_d.emd_features
    selected = c.history.dropna(subset=["emd_features"])
    assert c.selected_epoch == int(selected.loc[selected["emd_features"].idxmin(), "epoch"])


def test_checkpoint_resume_gives_the_same_result(small_tasks, tmp_path):
    t1, _ = small_tasks
    kw = dict(
        dims=1,
        method="linear",
        loss="iia+cl",
        epochs=30,
        seed=3,
        batch_size=64,
        emd_dims=[0, 1],
        eval_every=5,
        checkpoint_every=10,
    )
    full = fl.das(t1.model, t1.data, "h", **kw)

    class Stop(Exception):
        pass

    def boom(epoch, row):
        if epoch == 24:
            raise Stop

    with pytest.raises(Stop):
        fl.das(t1.model, t1.data, "h", checkpoint_dir=tmp_path, progress=boom, **kw)
    resumed = fl.das(t1.model, t1.data, "h", checkpoint_dir=tmp_path, **kw)
    assert resumed.selected_epoch == full.selected_epoch
    # bit for bit (weights_only checkpoints restore every tensor and the batch order exactly)
    assert np.array_equal(resumed.alignment_params, full.alignment_params)
    assert resumed.history["loss"].tolist() == full.history["loss"].tolist()
    with pytest.raises(
        fl.CheckpointError, match=r"different DAS run: other arguments \(lr 0\.01 -> 0\.5\)"
    ):
        fl.das(t1.model, t1.data, "h", checkpoint_dir=tmp_path, **{**kw, "lr": 0.5})


def test_result_save_load(small_tasks, tmp_path):
    t1, _ = small_tasks
    res = fl.das(t1.model, t1.data, "h", dims=1, method="rotation", epochs=20, seed=0)
    back = fl.Result.load(res.save(tmp_path / "das"))
    assert isinstance(back, fl.DASResult)
    x = torch.randn(3, 6)
    assert torch.allclose(back.alignment.forward(x), res.alignment.forward(x), atol=1e-6)
    assert back.summary().startswith("DAS at h")
    import matplotlib.figure

    assert isinstance(back.plot(), matplotlib.figure.Figure)


def test_boundless_das_learns_a_boundary(small_tasks):
    t1, _ = small_tasks
    res = fl.das(
        t1.model, t1.data, "h", method="boundless", epochs=60, seed=0, lr=0.01, boundary_lr=0.05
    )
    h = res.history
    # the default temperature (0.2.0): a quarter of the width (in coordinates) -> 0.1
    assert h["temperature"].iloc[0] == pytest.approx(max(1.0, res.alignment.width / 4))
    assert h["temperature"].iloc[-1] == pytest.approx(0.1)
    assert 0 < res.boundary <= 1 and len(res.dims) >= 1
    assert res.iia > 0.5


# Planted k-dimensional variable at a width-8 site (tests/helpers/das_toys.planted): 256 pairs,
# 300 epochs of Adam (lr 0.05), about 0.5 s a run. Measured over seeds 0, 1, 2 and k = 1, 2, 4
# (nine runs each): Boundless DAS IIA 0.965-1.0, learned boundary b D 0.96-1.2 (k=1),
# 1.80-1.84 (k=2), 3.62-3.76 (k=4), so the hard dims are k every time, and the largest
# principal angle to the planted subspace 1.4-5.2 degrees; DAS with select="settled" 1.5-2.8
# degrees (select="iia" 1.0-3.8). The bounds below sit outside every measured value.
@pytest.mark.parametrize("k", [1, 2, 4])
def test_boundless_das_recovers_a_planted_variable(k):
    model, data, planted_basis = das_toys.planted(k, seed=0)
    res = fl.das(
        model,
        data,
        "h",
        method="boundless",
        epochs=300,
        lr=0.05,
        boundary_lr=0.05,
        select="settled",
        seed=0,
    )
    assert res.iia_low > 0.9, res.summary()
    assert len(res.dims) == k and abs(res.boundary * 8 - k) < 0.5, res.boundary
    w = res.alignment.matrix().detach()
    angles = das_toys.principal_angles_deg(w[:, :k], planted_basis)
    assert float(angles.max()) < 8.0, angles
    # the default temperature is a quarter of the width at the start, 0.1 at the end
    assert res.history["temperature"].iloc[0] == pytest.approx(2.0)
    assert res.history["temperature"].iloc[-1] == pytest.approx(0.1)


def test_das_settled_selection_waits_for_the_subspace():
    k = 2
    model, data, planted_basis = das_toys.planted(k, seed=0)
    kw = dict(dims=k, epochs=300, lr=0.05, seed=0)
    first = fl.das(model, data, "h", select="iia", **kw)
    settled = fl.das(model, data, "h", select="settled", **kw)
    # IIA saturates early (first best epoch 75 here); "settled" keeps the last epoch whose IIA is
    # within the 95% interval of the best, so it trains on (299 here)
    assert settled.selected_epoch > first.selected_epoch + 100
    best = settled.history["iia"].max()
    lo = float(fl.stats.proportion_interval(round(best * len(data)), len(data)).low)
    sel = settled.history.loc[settled.history["epoch"] == settled.selected_epoch, "iia"]
    assert float(sel.iloc[0]) >= lo
    later = settled.history[settled.history["epoch"] > settled.selected_epoch]
    assert (later["iia"] < lo).all()
    w = settled.alignment.matrix().detach()
    assert float(das_toys.principal_angles_deg(w[:, :k], planted_basis).max()) < 6.0
    assert settled.iia_low > 0.9


def test_das_on_a_language_model_uses_resume_and_matches_a_full_run(tiny_llama):
    model = fl.wrap(tiny_llama)
    task = fl.tasks.random_token_task(model, n=12, seq_len=6, seed=0)
    data = fl.InterchangeData.from_task(task)
    site = fl.Site("resid_pre.2", positions="last")
    res = fl.das(model, data, site, dims=4, epochs=15, lr=0.05, seed=0)
    assert len(res.history) == 15 and 0 <= res.iia <= 1
    # evaluation with the resumed runs equals a plain full run through fl.Interchange
    src = model.run(data.source, cache=[site]).cache["resid_pre.2"]
    out = model.run(data.base, [res.intervention(src, site=site)], logits_at=data.positions)
    scores = out.logits[:, -1].gather(1, data.candidates)
    acc = float((scores.argmax(-1) == data.labels).float().mean())
    ev = evaluate_alignment(model, res.alignment, data, site, dims=list(res.dims))
    assert ev.iia == pytest.approx(acc)
    assert ev.iia == pytest.approx(res.iia)


def test_bad_das_inputs(small_tasks, tiny_llama):
    t1, _ = small_tasks
    with pytest.raises(fl.InputError, match="CL loss needs natural counterfactual latents"):
        data = fl.InterchangeData(base=t1.data.base, source=t1.data.source, labels=t1.data.labels)
        fl.das(t1.model, data, "h", loss="cl")
    with pytest.raises(fl.ShapeError, match="between 1 and the site width 6"):
        fl.das(t1.model, t1.data, "h", dims=7)
    with pytest.raises(fl.InputError, match=r"loss='kl': must be one of"):
        fl.das(t1.model, t1.data, "h", loss="kl")
    with pytest.raises(fl.InputError, match="select='emd' needs emd_dims"):
        fl.das(t1.model, t1.data, "h", select="emd")
    with pytest.raises(fl.ShapeError, match="one source per base example"):
        fl.InterchangeData(base=t1.data.base, source=t1.data.source[:5], labels=t1.data.labels)
    with pytest.raises(fl.SiteError):
        fl.das(t1.model, t1.data, "hh")
    bad = t1.data.cl_targets.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(fl.InputError, match="NaN"):
        fl.InterchangeData(
            base=t1.data.base, source=t1.data.source, labels=t1.data.labels, cl_targets=bad
        )


def test_evaluate_alignment_blur_is_deprecated_and_emd_is_exact():
    model, data, _ = das_toys.planted(1, seed=0)
    rot = fl.das(model, data, "h", dims=1, epochs=5, lr=0.05, seed=0).alignment
    with pytest.warns(DeprecationWarning, match="blur is ignored"):
        old = evaluate_alignment(model, rot, data, "h", dims=[0], blur=0.05)
    new = evaluate_alignment(model, rot, data, "h", dims=[0], emd_dims=[0, 1])
    assert old.emd == new.emd
    # the result's emd is the exact EMD of the intervened rows from the natural (source) rows
    assert new.emd == pytest.approx(fl.divergence.emd(new.intervened, new.natural), rel=1e-12)
    assert new.emd_features == pytest.approx(
        fl.divergence.emd(new.intervened[:, :2], new.natural[:, :2]), rel=1e-12
    )


def test_settled_selection_resumes_from_a_checkpoint(tmp_path):
    model, data, _ = das_toys.planted(2, seed=0)
    kw = dict(dims=2, epochs=40, lr=0.05, seed=0, select="settled", checkpoint_every=10)
    full = fl.das(model, data, "h", **kw)

    class Stop(Exception):
        pass

    def boom(epoch, row):
        if epoch == 24:
            raise Stop

    with pytest.raises(Stop):
        fl.das(model, data, "h", checkpoint_dir=tmp_path, on_epoch=boom, **kw)
    resumed = fl.das(model, data, "h", checkpoint_dir=tmp_path, **kw)
    # the best IIA so far travels in the checkpoint, so the rule picks the same epoch
    assert resumed.selected_epoch == full.selected_epoch
    assert np.array_equal(resumed.alignment_params, full.alignment_params)


def test_a_resid_post_site_trains_and_matches_its_resid_pre_twin():
    """resid_post.L is resid_pre.L+1: DAS at either gives the same alignment (a run used to
    resume after the resid_post hook, and the engine refused the interchange)."""
    from faithlens.tasks.interchange import InterchangeData
    from tests.helpers.builders import BUILDERS

    model = fl.wrap(BUILDERS["gpt2"]())
    g = torch.Generator().manual_seed(0)
    data = InterchangeData(
        base=torch.randint(0, 90, (8, 5), generator=g),
        source=torch.randint(0, 90, (8, 5), generator=g),
        labels=torch.randint(0, 97, (8,), generator=g),
    )
    post = fl.das(model, data, fl.Site("resid_post.1", positions=-1), dims=2, epochs=3, seed=0)
    pre = fl.das(model, data, fl.Site("resid_pre.2", positions=-1), dims=2, epochs=3, seed=0)
    np.testing.assert_allclose(post.alignment_params, pre.alignment_params, atol=1e-5)
    assert post.iia == pre.iia


def test_from_task_refuses_a_set_of_correct_answers():
    # DAS's label is one answer among (correct, wrong): a set of two correct ones does not fit
    task = fl.Task.from_token_ids(
        [[1, 2, 3], [4, 5, 6]], [[1, 7, 3], [4, 8, 6]], [(2, 9, 7), (5, 9, 8)],
        metric=fl.tasks.AnswerSet(n_correct=2),
    )  # fmt: skip
    with pytest.raises(fl.InputError, match="AnswerSet"):
        fl.InterchangeData.from_task(task)
    # one correct and a set of two wrong: DAS would read only the first wrong one
    wrong_set = fl.Task.from_token_ids(
        [[1, 2, 3], [4, 5, 6]], [[1, 7, 3], [4, 8, 6]], [(2, 7, 9), (5, 8, 9)],
        metric=fl.tasks.AnswerSet(n_correct=1),
    )  # fmt: skip
    with pytest.raises(fl.InputError, match="1 correct, 2 wrong"):
        fl.InterchangeData.from_task(wrong_set)
    one = fl.Task.from_token_ids(
        [[1, 2, 3], [4, 5, 6]], [[1, 7, 3], [4, 8, 6]], [(2, 7), (5, 8)],
        metric=fl.tasks.AnswerSet(n_correct=1),
    )  # fmt: skip
    assert fl.InterchangeData.from_task(one).candidates.tolist() == [[2, 7], [5, 8]]
