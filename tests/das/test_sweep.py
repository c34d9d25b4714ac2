"""The layer x position sweep, with known truth: a planted variable that moves between layers.

:func:`tests.helpers.das_toys.planted_sequence` plants a 2-dim variable at position 1 of layer
``"l0"``; layer ``"l1"`` moves it to position 2, which the output reads. The true cells are
(l0, 1) and (l1, 2); (l0, 2) and (l1, 1) carry nothing the output reads.
"""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch

import faithlens as fl
from faithlens.das.sweep import DASSweep, das_sweep
from tests.helpers import das_toys

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def toy():
    return das_toys.planted_sequence(2, n=384, seed=0)


@pytest.fixture(scope="module")
def swept(toy):
    model, data, _ = toy
    return das_sweep(
        model,
        data,
        layers=["l0", "l1"],
        positions=[1, 2],
        dims=2,
        controls=["task", "random_subspace"],
        train={"epochs": 200, "lr": 0.05, "select": "settled"},
        n_boot=500,
        seed=0,
    )


def test_true_cells_are_selective_and_wrong_cells_are_not(swept):
    res = swept
    # Measured (seed 0, 57 changed held-out pairs): true cells IIA 1.000 [1.000, 1.000],
    # control IIA task 0.088 (high 0.175), random_subspace 0.182 (high 0.235), selectivity
    # 0.912 [0.825, 0.965] and 0.818 [0.765, 0.856]; wrong cells: an interchange there changes
    # nothing the output reads, so IIA, control IIA and selectivity are 0 [0, 0] on changed
    # pairs.
    sel = res.interval_of("selectivity")
    for site, pos in (("l0", 1), ("l1", 2)):
        for c in res.controls:
            cell = res.cell(site, pos, c)
            assert float(cell["iia"].ci_low) > 0.8, (site, pos)
            assert float(cell["selectivity"].ci_low) > 0.45, (site, pos, c)
    for site, pos in (("l0", 2), ("l1", 1)):
        for c in res.controls:
            cell = res.cell(site, pos, c)
            assert float(cell["iia"].ci_high) < 0.2, (site, pos)
            assert abs(float(cell["selectivity"].estimate)) < 0.2, (site, pos, c)
            assert float(cell["selectivity"].ci_high) < 0.25, (site, pos, c)
    assert sel.estimate.shape == (2, 2, 2)
    assert res.best("task") in (("l0", 1), ("l1", 2))


def test_frame_save_load_and_heat_map(swept, tmp_path):
    res = swept
    frame = res.to_frame()
    assert len(frame) == 2 * 2 * 2
    assert {"site", "position", "control", "iia_ci_low", "selectivity_ci_high"} <= set(frame)
    back = DASSweep.load(res.save(tmp_path / "s"))
    np.testing.assert_array_equal(back.selectivity, res.selectivity)
    assert back.positions == [1, 2] and back.sites == ["l0", "l1"]
    fig = res.plot()
    assert len(fig.axes) >= 5  # IIA + a control IIA and a selectivity map per control (+ bars)
    assert "most selective" in res.summary()


def test_int_layers_name_sites_of_a_kind(toy):
    model, data, _ = toy
    with pytest.raises(fl.SiteError, match=r"resid_post\.0"):
        das_sweep(model, data, layers=[0], positions=[1], controls=["random_subspace"])


def test_bad_arguments(toy):
    model, data, _ = toy
    with pytest.raises(fl.ArgumentError, match="layers"):
        das_sweep(model, data, layers=[])
    with pytest.raises(fl.ArgumentError, match="layers"):
        das_sweep(model, data, layers=["l0", "l0"])
    with pytest.raises(fl.ArgumentError, match="positions"):
        das_sweep(model, data, layers=["l0"], positions=[-1])
    with pytest.raises(fl.ArgumentError, match="positions"):
        das_sweep(model, data, layers=["l0"], positions="last")
    with pytest.raises(fl.ArgumentError, match="controls"):
        das_sweep(model, data, layers=["l0"], controls=["x"])
    with pytest.raises(fl.ArgumentError, match="progress"):
        das_sweep(model, data, layers=["l0"], progress=3)  # type: ignore[arg-type]


def test_checkpoint_resumes_cells_and_refuses_another_sweep(toy, tmp_path, monkeypatch):
    """A sweep killed after one cell resumes from the saved cell with the same result; a folder
    written by a sweep with other arguments or another model is refused."""
    from faithlens.das import sweep
    from faithlens.errors import CheckpointError

    model, data, _ = toy
    kw = {"layers": ["l0", "l1"], "positions": [1], "dims": 2, "controls": ["random_subspace"]}
    kw |= {"train": {"epochs": 20, "lr": 0.05}, "n_boot": 100, "seed": 0}
    whole = das_sweep(model, data, **kw)
    real, calls = sweep.sweep_cell, [0]

    def cell(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 2:
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(sweep, "sweep_cell", cell)
    ck = tmp_path / "ck"
    with pytest.raises(RuntimeError, match="killed"):
        das_sweep(model, data, checkpoint=ck, **kw)
    assert len(list(ck.glob("cell_*.npz"))) == 1
    resumed = das_sweep(model, data, checkpoint=ck, **kw)
    assert calls[0] == 3  # the second cell only
    for f in ("iia", "iia_low", "iia_high", "selectivity", "selectivity_low", "n_dims"):
        assert np.array_equal(getattr(whole, f), getattr(resumed, f)), f
    with pytest.raises(CheckpointError, match="another sweep"):
        das_sweep(model, data, checkpoint=ck, **{**kw, "seed": 1})
    with pytest.raises(CheckpointError, match="another sweep"):
        das_sweep(das_toys.planted_sequence(2, n=384, seed=1)[0], data, checkpoint=ck, **kw)
    with pytest.raises(fl.errors.ArgumentError, match="checkpoint"):
        das_sweep(model, data, checkpoint=3, **kw)
