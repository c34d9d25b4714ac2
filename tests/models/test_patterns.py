"""Attention patterns of Hugging Face models as sites: parity with Hugging Face's eager
``output_attentions``, exact patching, and refusals."""

from __future__ import annotations

import pytest
import torch

import faithlens as fl
from faithlens.errors import InputError
from faithlens.interventions import Patch
from faithlens.models.patterns import expose_patterns, pattern_site
from tests.helpers.builders import BUILDERS, VOCAB

CAUSAL = ["llama", "gpt2", "gpt_neox", "gemma3"]


def gemma3():
    """A tiny Gemma 3: grouped keys, sliding-window layers, query/key norms, soft scaling."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(6)
    cfg = Gemma3TextConfig(
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        hidden_size=32,
        intermediate_size=64,
        head_dim=8,
        vocab_size=VOCAB,
        sliding_window=4,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        pad_token_id=0,
    )
    return Gemma3ForCausalLM(cfg).eval()


def _build(arch: str) -> torch.nn.Module:
    return gemma3() if arch == "gemma3" else BUILDERS[arch]()


def _inputs() -> fl.Inputs:
    g = torch.Generator().manual_seed(5)
    ids = torch.randint(1, VOCAB, (3, 7), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # one padded row
    return fl.Inputs(ids=ids, mask=mask)


@pytest.mark.parametrize("arch", CAUSAL)
def test_cached_pattern_equals_hugging_face_eager_attentions(arch):
    inp = _inputs()
    reference = _build(arch)
    reference.set_attn_implementation("eager")
    with torch.no_grad():
        want = reference(input_ids=inp.ids, attention_mask=inp.mask, output_attentions=True)
    model = fl.wrap(_build(arch))
    before = model.run(inp).logits
    sites = expose_patterns(model)
    assert sites == [pattern_site(model, L) for L in range(model.n_layers)]
    out = model.run(inp, cache=sites)
    for L, site in enumerate(sites):
        torch.testing.assert_close(out.cache[site], want.attentions[L], rtol=0, atol=1e-7)
    # nothing patched: the logits are eager attention's (sdpa's up to float error)
    torch.testing.assert_close(out.logits, want.logits, rtol=0, atol=1e-7)
    torch.testing.assert_close(out.logits, before, rtol=0, atol=1e-5)
    assert expose_patterns(model) == sites  # idempotent


@pytest.mark.parametrize("arch", CAUSAL)
def test_patched_pattern_is_exact(arch):
    """Patch layer 1's pattern with a uniform pattern over the allowed keys: each head's output
    (``head.1.H``) is then the mean of its value vectors, computed here from the cached v."""
    inp = _inputs()
    model = fl.wrap(_build(arch).double())
    site = expose_patterns(model)[1]
    clean = model.run(inp, cache=[site]).cache[site]
    allowed = (clean > 0).double()
    uniform = allowed / allowed.sum(-1, keepdim=True)
    n_kv = model.adapter.n_kv_heads or model.n_heads
    v_sites = [f"v.1.{G}" for G in range(n_kv)]
    heads = [f"head.1.{H}" for H in range(model.n_heads)]
    out = model.run(inp, [Patch(site, source=uniform)], cache=v_sites + heads)
    for H in range(model.n_heads):
        v = out.cache[f"v.1.{model.kv_head(H)}"]  # [b, key, d_head]
        want = uniform[:, H] @ v
        torch.testing.assert_close(out.cache[f"head.1.{H}"], want, rtol=0, atol=1e-10)
    # the patch changes the output; patching the clean pattern back changes nothing
    base = model.run(inp).logits
    same = model.run(inp, [Patch(site, source=clean)]).logits
    torch.testing.assert_close(same, base, rtol=0, atol=1e-10)
    assert not torch.allclose(model.run(inp, [Patch(site, source=uniform)]).logits, base)


def test_zoo_pattern_sites_are_its_own():
    model = fl.wrap(BUILDERS["faithlens_zoo-attn_only"]())
    assert expose_patterns(model) == [f"module:blocks.{L}.attn.pattern" for L in range(3)]


def test_refusals():
    model = fl.wrap(BUILDERS["gpt2"]())
    with pytest.raises(InputError, match="expose_patterns"):
        pattern_site(model, 0)
    with pytest.raises(InputError, match="out of range"):
        pattern_site(model, 9)
    generic = fl.wrap(torch.nn.Linear(3, 3))
    with pytest.raises(InputError, match="Hugging Face"):
        expose_patterns(generic)


def test_an_ablated_pattern_is_applied_not_dropped():
    """A [batch, head, query, key] site is patched in place (it used to be silently left as it
    was: the hook's write of a whole non-3-D tensor was lost)."""
    model = fl.wrap(BUILDERS["faithlens_zoo-attn_only"]())
    inp = _inputs()
    site = pattern_site(model, 0)
    out = model.run(inp, [fl.Zero(site)], cache=["head.0.0", "head.0.3"])
    assert float(out.cache["head.0.0"].abs().max()) == 0.0
    assert float(out.cache["head.0.3"].abs().max()) == 0.0
    assert not torch.equal(out.logits, model.run(inp).logits)
    with pytest.raises(fl.ShapeError, match="source has shape"):
        model.run(inp, [Patch(site, source=torch.zeros(3, 4, 7))])


# ------------------------------------------------------------- canonical pattern.L / pattern.L.H


@pytest.mark.parametrize("arch", CAUSAL)
def test_canonical_pattern_sites_equal_hugging_face_eager_attentions(arch):
    inp = _inputs()
    reference = _build(arch)
    reference.set_attn_implementation("eager")
    with torch.no_grad():
        want = reference(input_ids=inp.ids, attention_mask=inp.mask, output_attentions=True)
    model = fl.wrap(_build(arch))
    expose_patterns(model)
    L = model.n_layers - 1
    heads = [f"pattern.{L}.{H}" for H in range(model.n_heads)]
    assert model.sites("pattern", layer=L) == heads
    out = model.run(inp, cache=[f"pattern.{L}", *heads])
    a = want.attentions[L]  # [batch, head, query, key]
    for H, name in enumerate(heads):
        torch.testing.assert_close(out.cache[name], a[:, H], rtol=0, atol=1e-6)
    b, h, q, k = a.shape
    flat = a.transpose(1, 2).reshape(b, q, h * k)
    torch.testing.assert_close(out.cache[f"pattern.{L}"], flat, rtol=0, atol=1e-6)
    info = model.site_info(f"pattern.{L}.1")
    assert (info.kind, info.layer, info.head) == ("pattern", L, 1)


def _hand_patched_metric(model, task, layer, head, query):
    """The corrupted run with head ``head``'s pattern at ``layer`` replaced by the clean run's
    (at query positions ``query``, or all), by plain PyTorch forward hooks on the hook point;
    the logit difference at each example's metric position."""
    point = model.module.get_submodule(pattern_site(model, layer).removeprefix("module:"))
    seen = {}

    def keep(_m, _a, out):
        seen["clean"] = out.detach().clone()

    def swap(_m, _a, out):
        out = out.clone()
        rows = slice(None) if query is None else query
        out[:, head, rows] = seen["clean"][:, head, rows]
        return out

    def logits(ids, hook):
        handle = point.register_forward_hook(hook)
        try:
            with torch.no_grad():
                res = model.module(input_ids=ids)
        finally:
            handle.remove()
        return res.logits if hasattr(res, "logits") else res[0]

    logits(task.clean.ids, keep)
    lg = logits(task.corrupt.ids, swap)[torch.arange(task.n), task.positions]
    return lg.gather(1, task.answers[:, :1])[:, 0] - lg.gather(1, task.answers[:, 1:2])[:, 0]


@pytest.mark.parametrize("arch", [*CAUSAL, "faithlens_zoo-attn_only"])
def test_patching_one_heads_pattern_equals_a_hooked_reference(arch):
    model = fl.wrap(_build(arch).double())
    expose_patterns(model)
    g = torch.Generator().manual_seed(3)
    clean = torch.randint(1, VOCAB, (4, 6), generator=g)
    corrupt = clean.clone()
    corrupt[:, 2:] = (clean[:, 2:] % (VOCAB - 1)) + 1  # they differ from position 2 on
    answers = torch.randint(1, VOCAB, (4, 2), generator=g)
    answers[:, 1] = (answers[:, 0] % (VOCAB - 1)) + 1
    task = fl.Task.from_token_ids(clean.tolist(), corrupt.tolist(), answers.tolist())
    H = model.n_heads - 1
    res = fl.patch(model, task, [f"pattern.1.{H}"], n_boot=10)
    want = _hand_patched_metric(model, task, 1, H, None)
    # float64 models, but rotary tables (Hugging Face) and the zoo's softmax are float32
    torch.testing.assert_close(torch.as_tensor(res.patched[0]), want, rtol=0, atol=1e-6)
    # at one query position (the run resumes there, from cached keys and values)
    one = fl.patch(model, task, [fl.Site(f"pattern.1.{H}", positions=[4])], n_boot=10)
    want4 = _hand_patched_metric(model, task, 1, H, [4])
    torch.testing.assert_close(torch.as_tensor(one.patched[0]), want4, rtol=0, atol=1e-6)
    # the patch does something (deterministic: more than 10 times the tolerance)
    assert float((want - torch.as_tensor(res.base)).abs().max()) > 1e-5
    # the whole layer's pattern: every head at once
    layer = fl.patch(model, task, ["pattern.1"], n_boot=10)
    base = fl.patch(model, task, ["module:" + pattern_site(model, 1).removeprefix("module:")])
    torch.testing.assert_close(
        torch.as_tensor(layer.patched), torch.as_tensor(base.patched), rtol=0, atol=1e-6
    )


def test_pattern_names_before_exposing_say_how():
    model = fl.wrap(BUILDERS["gpt2"]())
    with pytest.raises(fl.SiteError, match="expose_patterns"):
        model.site_info("pattern.0.1")
