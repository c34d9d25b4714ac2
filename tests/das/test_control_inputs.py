"""The control task (arbitrary label mappings) and the randomly initialised model."""

from __future__ import annotations

import pytest
import torch

import faithlens as fl
from faithlens.das.control_inputs import control_task, random_init
from tests.helpers import das_toys


def test_default_control_task_relabels_every_pair_by_a_derangement():
    _, data, _ = das_toys.planted(2, seed=0)
    ctrl = control_task(data, seed=3)
    old, new = data.labels, ctrl.labels
    assert (old != new).all()  # no fixed point: every control label differs from the real one
    # type level: one label per value, and a permutation of the label set
    mapping = {}
    for a, b in zip(old.tolist(), new.tolist(), strict=True):
        assert mapping.setdefault(a, b) == b
    assert sorted(set(mapping.values())) <= sorted(set(old.tolist()))
    # the format is kept; only the labels change
    assert torch.equal(ctrl.base, data.base) and torch.equal(ctrl.source, data.source)
    assert ctrl.name.endswith(":control") and ctrl.meta["control_seed"] == 3
    assert torch.equal(control_task(data, seed=3).labels, new)
    assert not torch.equal(control_task(data, seed=4).labels, new)


def test_values_map_to_arbitrary_labels_one_per_value():
    _, data, _ = das_toys.planted(2, seed=0)
    values = [i % 5 for i in range(len(data))]
    ctrl = control_task(data, values=values, seed=0)
    by_value = {}
    for v, lab in zip(values, ctrl.labels.tolist(), strict=True):
        assert by_value.setdefault(v, lab) == lab
    assert set(by_value.values()) <= set(data.labels.tolist())


def test_candidates_give_the_label_set():
    d = das_toys.toy_data(0, n=6)
    cand = torch.arange(12).reshape(6, 2)
    d = fl.InterchangeData(d.base, d.source, torch.tensor([0, 1, 0, 1, 0, 1]), candidates=cand)
    assert torch.equal(control_task(d, seed=0).labels, 1 - d.labels)


def test_control_task_refuses():
    _, data, _ = das_toys.planted(2, seed=0)
    with pytest.raises(fl.ArgumentError, match="values"):
        control_task(data, values=[0, 1])
    d = das_toys.toy_data(0, n=4)
    one = fl.InterchangeData(d.base, d.source, torch.zeros(4, dtype=torch.long))
    with pytest.raises(fl.ArgumentError, match="two labels"):
        control_task(one)
    with pytest.raises(fl.ArgumentError, match="data"):
        control_task("data")  # type: ignore[arg-type]


def test_random_init_keeps_the_architecture_and_redraws_the_weights():
    model = das_toys.toy_model(0)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    rnd = random_init(model, seed=5)
    assert type(rnd.module) is type(model.module) and rnd.module is not model.module
    after = model.module.state_dict()
    for k, v in before.items():
        assert torch.equal(after[k], v)  # the given model is untouched
        assert rnd.module.state_dict()[k].shape == v.shape
        assert not torch.equal(rnd.module.state_dict()[k], v), k
    again = random_init(model, seed=5)
    for k, v in rnd.module.state_dict().items():
        assert torch.equal(again.module.state_dict()[k], v)  # seeded
    x = torch.randn(3, 6)
    out = rnd.run(x, cache=["h"])
    assert out.cache["h"].shape == model.run(x, cache=["h"]).cache["h"].shape


def test_random_init_redraws_parameters_no_module_resets():
    class Scale(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.arange(6.0))
            self.g = torch.nn.Parameter(torch.ones(6))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.w * self.g

    model = fl.wrap(Scale())
    rnd = random_init(model, seed=0)
    w = rnd.module.w.detach()
    assert not torch.equal(w, torch.arange(6.0))
    assert torch.equal(rnd.module.g.detach(), torch.ones(6))  # a constant stays constant
    with pytest.raises(fl.ArgumentError, match="model"):
        random_init("m")  # type: ignore[arg-type]


def test_random_init_of_a_hugging_face_model_hooks_the_copy():
    from tests.helpers.builders import BUILDERS

    model = fl.wrap(BUILDERS["gpt2"]())
    rnd = random_init(model, seed=0)
    assert rnd.adapter.module is rnd.module and model.adapter.module is model.module
    ids = torch.randint(0, 50, (2, 5))
    got = rnd.run(ids, cache=["resid_post.0"])
    assert got.cache["resid_post.0"].shape == (2, 5, 32)
    # GPT-2's Conv1D has no reset_parameters: its weights are redrawn, not kept
    w0 = model.module.transformer.h[0].attn.c_attn.weight
    w1 = rnd.module.transformer.h[0].attn.c_attn.weight
    assert w0.shape == w1.shape and not torch.equal(w0, w1)
    assert not torch.allclose(got.logits, model.run(ids).logits)
