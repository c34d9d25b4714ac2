"""Bad inputs: a clear faithlens error before any forward pass, hooks removed, nothing half-done."""

from __future__ import annotations

import contextlib

import pytest
import torch

import faithlens as fl


@contextlib.contextmanager
def no_forward(module):
    """Assert that no forward pass starts inside the block and that no hook is left behind."""
    calls = []
    h = module.register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        yield
    finally:
        h.remove()
    assert calls == [], "a forward pass ran before the error"
    for m in module.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks, f"hook left on {type(m).__name__}"


@pytest.fixture
def llama(tiny_llama):
    return fl.wrap(tiny_llama)


def test_unknown_site_lists_nearest(llama, ids):
    with no_forward(llama.module), pytest.raises(fl.SiteError) as e:
        llama.run(ids, [fl.Zero("mlp_outt.1")])
    assert "mlp_out.1" in str(e.value)
    with no_forward(llama.module), pytest.raises(fl.SiteError, match="head"):
        fl.patch(llama, fl.tasks.random_token_task(llama, 2, 5), ["head.7.0"])
    with no_forward(llama.module), pytest.raises(fl.SiteError, match="nearest module paths"):
        llama.run(ids, cache=["module:model.layer.0"])


def test_patch_source_of_wrong_shape(llama, ids):
    with no_forward(llama.module), pytest.raises(fl.ShapeError, match="expected"):
        llama.run(ids, [fl.Patch("head.0.1", source=torch.zeros(4, 9, 7))])
    with no_forward(llama.module), pytest.raises(fl.ShapeError):
        llama.run(ids, [fl.Patch("resid_pre.1[:, -1]", source=torch.zeros(4, 3, 48))])


def test_mismatched_batch_sizes(llama, ids):
    with no_forward(llama.module), pytest.raises(fl.ShapeError, match="shape"):
        llama.run(ids, [fl.Patch("resid_pre.1", source=torch.zeros(5, 9, 48))])
    with no_forward(llama.module), pytest.raises(fl.ShapeError, match="examples"):
        llama.run(ids, start_at=fl.Resume(1, torch.zeros(3, 9, 48)))
    with no_forward(llama.module), pytest.raises(fl.ShapeError, match="per-example positions"):
        llama.run(ids, cache=[fl.Site("resid_pre.1", positions=torch.tensor([1, 2]))])
    with no_forward(llama.module), pytest.raises(fl.InputError, match="got 2 clean prompts"):
        fl.Task.from_prompts(llama, ["a", "b"], ["c"], [("x", "y")])


def test_intervention_rows_out_of_range(llama, ids):
    with no_forward(llama.module), pytest.raises(fl.ShapeError, match="out of range"):
        llama.run(ids, [fl.Zero("mlp_out.0", rows=[0, 9])])


def test_prompts_with_different_token_lengths(smollm2):
    with no_forward(smollm2.module), pytest.raises(fl.InputError, match="different token lengths"):
        fl.Task.from_prompts(
            smollm2,
            clean=["When Mary and John went to the store, John gave a drink to"],
            corrupt=["When Mary and John went to the supermarket nearby, Bob gave a drink to"],
            answers=[(" Mary", " John")],
        )


def test_answers_that_are_not_single_tokens(smollm2):
    with no_forward(smollm2.module), pytest.raises(fl.InputError, match="single tokens"):
        fl.Task.from_prompts(
            smollm2,
            clean=["When Mary and John went to the store, John gave a drink to"],
            corrupt=["When Mary and John went to the store, Bob gave a drink to"],
            answers=[(" Maryanne-Louise", " John")],
        )


def test_nan_source_rejected_before_running(llama, ids):
    bad = torch.zeros(4, 9, 48)
    bad[0, 0, 0] = float("nan")
    with no_forward(llama.module), pytest.raises(fl.InputError, match="NaN"):
        llama.run(ids, [fl.Patch("resid_pre.1", source=bad)])
    with no_forward(llama.module), pytest.raises(fl.InputError, match="NaN"):
        llama.run(ids, [fl.Add("resid_pre.1", vector=torch.full((48,), float("nan")))])


def test_nan_reaching_a_metric(llama):
    task = fl.tasks.random_token_task(llama, 3, 6)
    with pytest.raises(fl.MetricError, match="NaN"):
        task.metric(torch.full((3, 97), float("nan")), task.answers)

    class MakeNaN(fl.Zero):
        def compute(self, current, ctx):
            return torch.full_like(current, float("nan"))

    with pytest.raises(fl.MetricError, match="NaN"):
        task.evaluate(llama, "clean", [MakeNaN("mlp_out.2")])
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in llama.module.modules())


def test_site_the_run_never_reaches(llama, ids):
    full = llama.run(ids, cache=["resid_pre.2"])
    with no_forward(llama.module), pytest.raises(fl.SiteError, match="never happen"):
        llama.run(ids, [fl.Zero("head.0.1")], start_at=fl.Resume.from_run(full, 2, llama))
    with no_forward(llama.module), pytest.raises(fl.SiteError, match="never happen"):
        llama.run(ids, [fl.Zero("mlp_out.2")], stop_at="attn_out.1")
    r = fl.Resume.from_run(
        llama.run(ids, cache=["resid_pre.1"], return_kv=True), 1, llama, offset=5
    )
    with no_forward(llama.module), pytest.raises(fl.SiteError, match="before the first recomputed"):
        llama.run(ids, [fl.Zero(fl.Site("mlp_out.1", positions=2))], start_at=r)


def test_raw_module_site_never_called_is_reported():
    class TwoPaths(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(3, 3)
            self.unused = torch.nn.Linear(3, 3)

        def forward(self, x):
            return self.a(x)

    m = fl.wrap(TwoPaths())
    with pytest.raises(fl.SiteError, match="never ran"):
        m.run(torch.zeros(2, 3), [fl.Zero("module:unused")])
    assert not m.module.unused._forward_hooks


def test_bad_task_arguments(llama):
    task = fl.tasks.random_token_task(llama, 3, 6)
    with (
        no_forward(llama.module),
        pytest.raises(fl.InputError, match="positions='middle': must be one of"),
    ):
        fl.patch(llama, task, "head", positions="middle")
    with no_forward(llama.module), pytest.raises(fl.InputError, match="direction"):
        fl.patch(llama, task, "head", direction="sideways")
    with pytest.raises(fl.InputError, match="same number of tokens"):
        fl.Task(
            name="x",
            clean=task.clean,
            corrupt=fl.Inputs(ids=task.corrupt.ids[:, :4]),
            answers=task.answers,
            positions=task.positions,
        )


def test_left_padding_is_refused(llama):
    inp = fl.Inputs(
        ids=torch.tensor([[0, 5, 6], [7, 8, 9]]), mask=torch.tensor([[0, 1, 1], [1, 1, 1]])
    )
    with no_forward(llama.module), pytest.raises(fl.InputError, match="right padding"):
        llama.run(inp)
