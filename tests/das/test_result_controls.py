"""Every alignment result carries its controls: a planted variable with a known site.

On :func:`tests.helpers.das_toys.planted_sequence` a 2-dim variable lives at position 1 of
``"l0"``; position 2 of ``"l0"`` carries nothing the output reads. ``fl.das`` at the true site
reaches IIA 1 and beats random 2-dim subspaces by a wide margin; at the wrong site the alignment
and the random subspaces both leave the output as it is, so the selectivity is 0. Every
assertion keeps a margin from the figure's own interval.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import faithlens as fl
from faithlens import Site
from faithlens.das import IdentityBasis
from faithlens.das.result import ALL_CONTROLS, DASResult
from faithlens.das.result_controls import check_das_controls
from tests.helpers import das_toys

TRAIN = {"dims": 2, "epochs": 100, "lr": 0.05, "select": "settled"}
OLD = Path(__file__).resolve().parents[1] / "helpers" / "old_das_results" / "DASResult"


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def toy():
    return das_toys.planted_sequence(2, n=256, seed=0)


@pytest.fixture(scope="module")
def true_site(toy):
    model, data, _ = toy
    return fl.das(model, data, Site("l0", positions=1), seed=0, **TRAIN)


@pytest.fixture(scope="module")
def wrong_site(toy):
    model, data, _ = toy
    return fl.das(model, data, Site("l0", positions=2), seed=0, **TRAIN)


def test_selectivity_is_high_at_the_true_site_and_zero_at_a_wrong_one(true_site, wrong_site):
    # Measured (seed 0, n=256 pairs, 5 draws): true site IIA 1.000 [1.000, 1.000], random
    # subspace 0.482 [0.448, 0.518], selectivity 0.518 [0.482, 0.552]; wrong site IIA 0.660
    # [0.602, 0.723] (the pairs whose label is the base answer), random subspace the same on
    # every pair, selectivity 0.000 [0.000, 0.000].
    assert true_site.controls == ("random_subspace",)
    ctl, sel = true_site.control("random_subspace")
    assert true_site.iia_low > 0.9
    assert float(ctl.ci_high) < 0.7
    assert float(sel.ci_low) > 0.3
    assert float(sel.estimate) == pytest.approx(true_site.iia - float(ctl.estimate), abs=1e-12)
    _, wrong = wrong_site.control("random_subspace")
    assert float(wrong.ci_low) > -0.1 and float(wrong.ci_high) < 0.1
    # the two sites' selectivity intervals are far apart
    assert float(sel.ci_low) > float(wrong.ci_high) + 0.2


def test_a_control_not_run_says_so(true_site):
    frame = true_site.controls_frame()
    assert list(frame["control"]) == list(ALL_CONTROLS)
    status = dict(zip(frame["control"], frame["status"], strict=True))
    assert status == {"task": "not run", "random_init": "not run", "random_subspace": "run"}
    for q in ("iia", "control_iia", "selectivity"):
        assert {q, f"{q}_se", f"{q}_ci_low", f"{q}_ci_high"} <= set(frame.columns)
    assert "controls not run: task, random_init" in true_site.summary()
    assert "control random_subspace" in true_site.summary()
    with pytest.raises(fl.InputError, match=r"task control was not run.*controls="):
        true_site.control("task")
    with pytest.raises(fl.ArgumentError, match="name"):
        true_site.control("nope")


def test_controls_survive_save_and_load(true_site, tmp_path):
    back = DASResult.load(true_site.save(tmp_path / "r"))
    assert list(back.controls) == ["random_subspace"] and back.draws == 5
    np.testing.assert_array_equal(back.selectivity_low, true_site.selectivity_low)
    assert back.summary() == true_site.summary()


def test_a_result_saved_before_controls_loads_with_none_run():
    old = DASResult.load(OLD)
    assert tuple(old.controls) == () and old.selectivity.shape == (0,)
    assert "controls not run: task, random_init, random_subspace" in old.summary()
    assert (old.controls_frame()["status"] == "not run").all()
    assert old.interval_of("iia").estimate == pytest.approx(0.8)


@pytest.mark.parametrize("method", ["mean_diff", "pca", "probe"])
def test_direction_methods_carry_every_control(toy, method):
    model, data, _ = toy
    res = fl.das(model, data, Site("l0", positions=1), dims=2, method=method, controls="all")
    assert res.method == method and res.epochs == 1
    assert tuple(res.controls) == ALL_CONTROLS
    assert (res.controls_frame()["status"] == "run").all()
    # the control task's arbitrary labels cannot be read off and interchanged: near chance
    task_ctl, task_sel = res.control("task")
    assert float(task_ctl.ci_high) < 0.3
    assert float(task_sel.ci_low) > float(res.iia_low) - float(task_ctl.ci_high) - 0.05
    ivs = res.intervals()
    assert ivs["control_iia"].estimate.shape == (3,)


def test_trained_controls_are_opt_in_and_train_again(toy):
    model, data, _ = toy
    res = fl.das(
        model,
        data,
        Site("l0", positions=1),
        controls=["random_init", "task"],
        seed=0,
        **TRAIN,
    )
    assert tuple(res.controls) == ("task", "random_init")  # always in ALL_CONTROLS order
    for name in ("task", "random_init"):
        ctl, sel = res.control(name)
        assert float(ctl.ci_high) < 0.5, name
        assert float(sel.ci_low) > 0.4, name


BAD_CONTROLS = [
    (42, "must be a control name or a list"),
    (True, "must be a control name or a list"),
    ({"task": 1}, "must be a control name or a list"),
    ("nope", "must be one of"),
    ("", "must be one of"),
    (["task", "task"], "repeats a control"),
    (["task", 3], "not a control name"),
    (["all"], "stands alone"),
    (["random_subspace", "none"], "stands alone"),
    (["random_subspace", "probe"], "must be one of"),
]


@pytest.mark.parametrize(("controls", "message"), BAD_CONTROLS, ids=repr)
def test_bad_controls_are_refused_before_work(toy, controls, message):
    model, data, _ = toy
    with pytest.raises(fl.ArgumentError, match=message) as err:
        fl.das(model, data, Site("l0", positions=1), controls=controls)
    assert "controls=" in str(err.value)


@pytest.mark.parametrize("controls", ["task", "random_subspace"])
def test_bad_values_are_refused_before_training(toy, controls):
    """``values`` of the wrong length fail before the first epoch (they failed after the whole
    training, when the task control was built)."""
    model, data, _ = toy
    epochs = []
    with pytest.raises(fl.ArgumentError, match="values"):
        fl.das(
            model,
            data,
            Site("l0", positions=1),
            epochs=50,
            controls=controls,
            values=[0, 1, 2],
            progress=lambda d, t: epochs.append(d),
        )
    assert epochs == []


@pytest.mark.parametrize(
    ("controls", "expected"),
    [
        (None, ()),
        ("none", ()),
        ([], ()),
        ("all", ALL_CONTROLS),
        ("task", ("task",)),
        (("random_subspace", "task"), ("task", "random_subspace")),
    ],
    ids=repr,
)
def test_good_controls(controls, expected):
    assert check_das_controls(controls) == expected


def test_bad_draws_and_a_direction_method_with_an_alignment(toy):
    model, data, _ = toy
    with pytest.raises(fl.ArgumentError, match="draws"):
        fl.das(model, data, Site("l0", positions=1), draws=0)
    with pytest.raises(fl.ArgumentError, match="alignment"):
        fl.das(
            model,
            data,
            Site("l0", positions=1),
            method="pca",
            alignment=IdentityBasis(8),
        )
