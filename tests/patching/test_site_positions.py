"""fl.patch takes a Site that carries positions: the position is part of the site."""

from __future__ import annotations

import numpy as np
import pytest

import faithlens as fl
from faithlens.errors import InputError
from tests.helpers.tasks import padded_task


@pytest.mark.parametrize("name", ["resid_pre.1", "head.1.3"])
@pytest.mark.parametrize("pos", [0, 3, 6])
def test_site_with_one_position_equals_the_each_row(tiny_gpt2, name, pos):
    model = fl.wrap(tiny_gpt2)
    task = padded_task(model)
    each = fl.patch(model, task, [name], positions="each", n_boot=20)
    at = fl.patch(model, task, [fl.Site(name, positions=pos)], n_boot=20)
    row = next(i for i, p in enumerate(each.to_frame()["position"]) if p == pos)
    # float32 forward passes batched with other conditions: equal to rounding
    np.testing.assert_allclose(at.patched[0], each.patched[row], atol=1e-6, rtol=0)
    assert at.to_frame()["position"].tolist() == [pos]
    assert at.meta["site_positions"] == {name: [pos]}


def test_site_with_positions_equals_a_hand_built_patch(tiny_gpt2):
    model = fl.wrap(tiny_gpt2)
    task = padded_task(model)
    name, pos = "resid_pre.2", [2, 5]
    res = fl.patch(model, task, [fl.Site(name, positions=pos), "head.0.1"], n_boot=20)
    src = model.run(task.clean, cache=[name])
    out = model.run(
        task.corrupt,
        [fl.Patch(fl.Site(name, positions=pos), source=src.cache[name])],
        logits_at=task.positions,
    )
    want = task.metric(out.logits[:, 0], task.answers).double().cpu().numpy()
    np.testing.assert_allclose(res.patched[0], want, atol=1e-5, rtol=0)
    plain = fl.patch(model, task, ["head.0.1"], n_boot=20)
    np.testing.assert_array_equal(res.patched[1], plain.patched[0])


@pytest.mark.parametrize(
    "site",
    [
        fl.Site("resid_pre.1", positions=-1),
        fl.Site("resid_pre.1", positions="last"),
        fl.Site("resid_pre.1", units=[0, 1]),
        fl.Site("head", positions=2),
    ],
)
def test_site_selections_patching_cannot_carry_are_refused(tiny_gpt2, site):
    model = fl.wrap(tiny_gpt2)
    with pytest.raises(InputError):
        fl.patch(model, padded_task(model), [site], n_boot=20)


def test_site_with_positions_in_an_each_sweep(tiny_gpt2):
    model = fl.wrap(tiny_gpt2)
    task = padded_task(model)
    res = fl.patch(
        model, task, [fl.Site("resid_pre.1", positions=[1, 4]), "head.0.1"], "each", n_boot=20
    )
    alone = fl.patch(model, task, [fl.Site("resid_pre.1", positions=[1, 4])], n_boot=20)
    each = fl.patch(model, task, ["head.0.1"], "each", n_boot=20)
    frame = res.to_frame()
    assert frame["site"].tolist() == ["resid_pre.1"] + ["head.0.1"] * task.seq_len
    np.testing.assert_allclose(res.patched[0], alone.patched[0], atol=1e-6, rtol=0)
    np.testing.assert_allclose(res.patched[1:], each.patched, atol=1e-6, rtol=0)
