"""Activation and attribution patching against the plain-PyTorch reference."""

from __future__ import annotations

import numpy as np
import pytest

import faithlens as fl
from tests.helpers.reference import reference_attribution, reference_patch
from tests.helpers.tasks import padded_task

SITES = ["head.0.1", "head.1.3", "head.2.0", "mlp_out.0", "mlp_out.2", "resid_pre.1", "attn_out.2"]


def sites_of(model):
    """SITES that exist on this model (attention-only models have no MLP sites)."""
    return [s for s in SITES if model.d_mlp or not s.startswith("mlp")]


@pytest.mark.parametrize("positions", ["all", "last", "each"])
@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_exact_patching_equals_reference(tiny_causal, positions, direction):
    _, hf = tiny_causal
    model = fl.wrap(hf)
    task = padded_task(model)
    sites = sites_of(model)
    res = fl.patch(
        model, task, sites, positions=positions, direction=direction, n_boot=50, max_rows=12
    )
    ref = reference_patch(hf, task, sites, positions=positions, direction=direction)
    assert res.patched.shape == ref.shape
    np.testing.assert_allclose(res.patched, ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("positions", ["all", "last", "each"])
def test_attribution_patching_equals_reference(tiny_causal, positions):
    _, hf = tiny_causal
    model = fl.wrap(hf)
    task = padded_task(model)
    sites = [s for s in sites_of(model) if not s.startswith("resid")]
    res = fl.attribution_patch(model, task, sites, positions=positions, n_boot=50)
    ref = reference_attribution(hf, task, sites, positions=positions)
    np.testing.assert_allclose(res.patched, ref, atol=1e-4, rtol=0)
    assert all(p.grad is None for p in hf.parameters())
    assert all(p.requires_grad for p in hf.parameters())


def test_effect_formula_and_bootstrap(tiny_llama):
    model = fl.wrap(tiny_llama)
    task = padded_task(model)
    res = fl.patch(model, task, ["head.1.0", "resid_pre.0"], n_boot=200)
    b, s = res.base.mean(), res.source.mean()
    np.testing.assert_allclose(res.effect, (res.patched.mean(-1) - b) / (s - b), rtol=1e-10)
    # patching the whole residual stream before layer 0 reproduces the source run exactly
    i = res.site.index("resid_pre.0")
    np.testing.assert_allclose(res.patched[i], res.source, atol=1e-5)
    assert abs(res.effect[i] - 1) < 1e-5
    assert np.all(res.ci_low <= res.effect + 1e-9) and np.all(res.effect <= res.ci_high + 1e-9)


def test_result_frame_save_load_plot(tiny_llama, tmp_path):
    model = fl.wrap(tiny_llama)
    task = padded_task(model)
    res = fl.patch(model, task, "head", n_boot=100)
    df = res.to_frame()
    assert list(df.columns[:7]) == [
        "site",
        "kind",
        "layer",
        "head",
        "position",
        "effect",
        "effect_se",
    ]
    assert {"effect_ci_low", "effect_ci_high", "level"} <= set(df.columns)
    assert len(df) == model.n_layers * model.n_heads
    res.save(tmp_path / "r")
    back = fl.Result.load(tmp_path / "r")
    assert isinstance(back, fl.PatchingResult)
    np.testing.assert_array_equal(back.effect, res.effect)
    assert back.site == res.site and back.head == res.head
    fig = res.plot()
    fig.savefig(tmp_path / "heat.png")
    assert (tmp_path / "heat.png").stat().st_size > 1000
    assert "activation patching" in res.summary()


def test_chunking_does_not_change_results(tiny_gpt2):
    model = fl.wrap(tiny_gpt2)
    task = padded_task(model)
    a = fl.patch(model, task, "head", positions="each", n_boot=20)
    b = fl.patch(model, task, "head", positions="each", n_boot=20, max_rows=7)
    np.testing.assert_allclose(a.patched, b.patched, atol=1e-5)


@pytest.mark.parametrize("positions", ["all", "last", "each"])
def test_progress_counts_every_pass_once(tiny_gpt2, positions):
    model = fl.wrap(tiny_gpt2)
    task = padded_task(model)  # examples of several lengths: several chunks of examples
    calls: list[tuple[int, int]] = []
    fl.patch(
        model,
        task,
        "head",
        positions=positions,
        n_boot=20,
        max_rows=7,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls, "no progress reported"
    total = calls[0][1]
    assert [d for d, _ in calls] == list(range(1, total + 1))
    assert all(t == total for _, t in calls)


def test_noop_conditions_are_exact(tiny_llama):
    model = fl.wrap(tiny_llama)
    task = padded_task(model)
    res = fl.patch(model, task, ["head.0.0"], positions="each", n_boot=20)
    first = int(task.first_difference().min())
    assert res.meta["conditions_skipped_as_noop"] == first
    ref = reference_patch(tiny_llama, task, ["head.0.0"], positions="each")
    np.testing.assert_allclose(res.patched[:first], ref[:first], atol=1e-5)


def test_interventions_round_trip_through_bind(tiny_llama):
    model = fl.wrap(tiny_llama)
    task = padded_task(model)
    res = fl.patch(model, task, "head", positions="last", n_boot=20)
    ivs = res.interventions(top=3)
    assert len(ivs) == 3 and all(iv.source == "clean" for iv in ivs)
    bound = task.bind(model, ivs)
    best = int(np.argmax(np.abs(res.effect)))
    out = task.evaluate(model, "corrupt", bound[:1])
    np.testing.assert_allclose(out.double().numpy(), res.patched[best], atol=1e-5)
