"""fl.audit on a small transformer: patching, ablation, DAS, source references, positions."""

from __future__ import annotations

import pytest
import torch

import faithlens as fl


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def setup(tiny_llama):
    model = fl.wrap(tiny_llama)
    task = fl.tasks.random_token_task(model, n=24, seq_len=6, seed=0)
    return model, task


def test_audit_patch_zero_and_das(setup):
    model, task = setup
    site = fl.Site("resid_pre.2", positions="last")
    das = fl.das(model, fl.InterchangeData.from_task(task), site, dims=4, epochs=5, seed=0)
    conds = {
        "patch": [fl.Patch("head.1.0", source="clean"), fl.Patch("head.1.3", source="clean")],
        "zero": [fl.Zero("mlp_in.2")],
        "das": [das.intervention("clean", site=site)],
    }
    res = fl.audit(
        model,
        task,
        conds,
        "mlp_post.2",
        metrics=["emd", "nn_mse", "mmd"],
        split_metrics=["emd"],
        n_splits=2,
    )
    assert res.conditions == ("patch", "zero", "das")
    assert res.reader_shape == (48, 80)
    t = res.table
    assert set(t["space"]) == {"full", "row", "null"}
    assert int(t[t["space"] == "null"]["dim"].iloc[0]) == 32
    assert len(t) == 3 * (3 + 2)  # per condition: 3 metrics in full, emd in row and null
    assert res.units_site == ""  # mlp_post of the last layer: no later MLP
    assert torch.isfinite(torch.tensor(t[["intervened", "baseline"]].to_numpy())).all()
    # every condition moves mlp_post.2; zeroing its input moves it by -h: the displacement's
    # row-space fraction is then the natural activations' own row-space fraction
    d = res.displacement.set_index("condition")
    assert set(d.index) == {"patch", "zero", "das"}
    assert ((d["row_fraction"] > 0) & (d["row_fraction"] < 1)).all()


def test_source_reference_binding_equals_explicit_sources(setup):
    model, task = setup
    clean = model.run(task.clean, cache=["head.1.0"]).cache["head.1.0"]
    a = fl.audit(
        model,
        task,
        [fl.Patch("head.1.0", source="clean")],
        "mlp_post.2",
        metrics=["emd"],
        split_metrics=["emd"],
        n_splits=2,
        base="corrupt",
    )
    b = fl.audit(
        model,
        task,
        [fl.Patch("head.1.0", source=clean)],
        "mlp_post.2",
        metrics=["emd"],
        split_metrics=["emd"],
        n_splits=2,
        base="corrupt",
    )
    assert a.table[["intervened", "baseline"]].equals(b.table[["intervened", "baseline"]])


def test_positions_all_uses_every_token(setup):
    model, task = setup
    res = fl.audit(
        model,
        task,
        [fl.Zero("mlp_post.1")],
        "resid_post.2",
        positions="all",
        metrics=["emd"],
        n_splits=2,
    )
    assert res.n_natural == 2 * task.n * 6
    assert res.reader_shape == () and any("no single linear map" in n for n in res.notes)


def test_plain_inputs_cannot_use_source_references():
    lin = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    model = fl.wrap(lin, sites={"x": "0:in"})
    with pytest.raises(fl.InputError, match="refers to a task's run"):
        fl.audit(model, torch.randn(20, 3), [fl.Patch("x", source="clean")], "x", metrics=["emd"])
