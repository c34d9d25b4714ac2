"""The audit on SmolLM2: IOI head patching (through fl.patch) and mean-difference steering."""

from __future__ import annotations

import numpy as np
import pytest

import faithlens as fl
from faithlens.divergence.audit import mean_difference_vector

pytestmark = [pytest.mark.slow, pytest.mark.smollm2]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # small batches: one thread is faster, and far faster on a busy machine
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def ioi_audit(smollm2):
    model = smollm2
    task = fl.tasks.ioi(model, n=16, seed=0)
    effects = fl.patch(model, task, sites=["head.9.6", "head.9.7", "head.9.8"], n_boot=50)
    patches = effects.interventions(top=2)
    delta = mean_difference_vector(
        model, task.clean, task.corrupt, "resid_pre.9", positions=task.positions
    )
    steer = fl.Site("resid_pre.9", positions="last")
    conds = {
        "patch": patches,
        "steer x1": [fl.Add(steer, vector=delta)],
        "steer x8": [fl.Add(steer, vector=delta, coef=8.0)],
    }
    res = fl.audit(
        model,
        task,
        conds,
        "mlp_post.9",
        metrics=["emd", "nn_mse"],
        split_metrics=["emd"],
        n_splits=3,
        seed=0,
    )
    return model, task, res


def test_audit_tables_and_split(ioi_audit):
    model, task, res = ioi_audit
    assert res.conditions == ("patch", "steer x1", "steer x8")
    assert res.reader_shape == (model.d_model, model.d_mlp)  # the down projection
    dims = res.table.groupby("space")["dim"].first().to_dict()
    assert dims == {"full": model.d_mlp, "row": model.d_model, "null": model.d_mlp - model.d_model}
    assert np.isfinite(res.table[["intervened", "baseline", "intervened_se"]].to_numpy()).all()
    assert res.n_natural == 2 * task.n
    assert res.units_site == "mlp_post.10"
    d = res.displacement.set_index("condition")
    assert ((d["row_fraction"] > 0) & (d["row_fraction"] <= 1)).all()
    # a steering vector 8 times larger diverges more, in every space ...
    for space in ("full", "row", "null"):
        small = res.value("emd", "steer x1", space)["intervened"]
        big = res.value("emd", "steer x8", space)["intervened"]
        assert big > small, space
    d8, d1 = d.loc["steer x8"], d.loc["steer x1"]
    assert d8["n_moved"] == d1["n_moved"] == task.n
    assert "null space (harmless)" in res.summary()


def test_audit_saves_loads_and_plots(ioi_audit, tmp_path):
    _, _, res = ioi_audit
    back = fl.Result.load(res.save(tmp_path / "audit"))
    assert isinstance(back, fl.AuditResult)
    assert back.conditions == res.conditions
    assert back.table.equals(res.table)
    import matplotlib.figure

    assert isinstance(back.plot(), matplotlib.figure.Figure)


def test_audit_errors(smollm2):
    task = fl.tasks.ioi(smollm2, n=4, seed=1)
    with pytest.raises(fl.SiteError, match="unknown site"):
        fl.audit(smollm2, task, [fl.Zero("head.1.1")], "mlp_pots.3")
    with pytest.raises(fl.InputError, match="not a reference"):
        fl.audit(smollm2, task, [fl.Patch("head.1.1", source="clena")], "mlp_post.3")
    with pytest.raises(fl.InputError, match="no interventions"):
        fl.audit(smollm2, task, [], "mlp_post.3")
