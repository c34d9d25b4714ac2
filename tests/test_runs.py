"""The run engine against plain PyTorch: parity, caching, head decomposition, resume, hooks."""

from __future__ import annotations

import pytest
import torch

import faithlens as fl
from faithlens.models.sites import SiteInfo
from tests.helpers.reference import plain_capture


def hf_logits(module, ids):
    with torch.no_grad():
        out = module(input_ids=ids)
    return out.logits


def test_no_intervention_equals_hf(tiny_hf, ids):
    arch, hf = tiny_hf
    model = fl.wrap(hf)
    assert model.arch == arch.split("-")[0]
    out = model.run(ids)
    assert torch.allclose(out.logits, hf_logits(hf, ids), atol=1e-5)
    assert not hf._forward_hooks and not hf._forward_pre_hooks


def test_cached_activations_equal_plain_hooks(tiny_hf, ids):
    arch, hf = tiny_hf
    model = fl.wrap(hf)
    names = [n for n in model.sites() if n != "logits"]
    out = model.run(ids, cache=names)
    for name in names:
        info: SiteInfo = model.site_info(name)
        full = plain_capture(hf, info.hook.module, info.hook.io, ids, index=info.hook.index)
        ref = full[..., info.start : info.stop]
        assert torch.equal(out.cache[name], ref), name


def test_heads_through_output_projection_sum_to_attn_out(tiny_hf, ids):
    arch, hf = tiny_hf
    model = fl.wrap(hf)
    L = model.n_layers
    heads = [f"head.{l}.{h}" for l in range(L) for h in range(model.n_heads)]
    out = model.run(ids, cache=[*heads, *(f"attn_out.{l}" for l in range(L))])
    for layer in range(L):
        z = torch.cat([out.cache[f"head.{layer}.{h}"] for h in range(model.n_heads)], dim=-1)
        per_head = model.adapter.head_outputs(layer, z)
        _, bias = model.adapter.o_proj(layer)
        total = per_head.sum(-2) + (bias if bias is not None else 0)
        assert torch.allclose(total, out.cache[f"attn_out.{layer}"], atol=1e-5), layer


def test_gqa_key_value_heads(tiny_llama, ids):
    model = fl.wrap(tiny_llama)
    assert model.n_heads == 6 and model.n_kv_heads == 2
    assert len(model.sites("k", layer=0)) == 2 and len(model.sites("q", layer=0)) == 6
    assert [model.kv_head(h) for h in range(6)] == [0, 0, 0, 1, 1, 1]
    with pytest.raises(fl.SiteError, match="grouped-query"):
        model.run(ids, cache=["k.0.5"])


@pytest.mark.parametrize("layer", [0, 1, 2, 3])
def test_resume_at_layer_equals_full_run(tiny_hf, ids, layer):
    arch, hf = tiny_hf
    model = fl.wrap(hf)
    name = f"resid_pre.{layer}" if layer < model.n_layers else f"resid_post.{model.n_layers - 1}"
    full = model.run(ids, cache=[name])
    resumed = model.run(ids, start_at=fl.Resume.from_run(full, layer, model))
    assert torch.allclose(resumed.logits, full.logits, atol=1e-5)


@pytest.mark.parametrize("offset", [1, 4, 8])
def test_resume_from_cached_keys_values(tiny_causal, ids, offset):
    arch, hf = tiny_causal
    model = fl.wrap(hf)
    full = model.run(ids, cache=["resid_pre.1"], return_kv=True)
    r = fl.Resume.from_run(full, 1, model, offset=offset)
    out = model.run(ids, start_at=r)
    assert torch.allclose(out.logits, full.logits[:, offset:], atol=1e-5)


def test_resume_restores_module_tree_when_run_raises(tiny_llama, ids):
    model = fl.wrap(tiny_llama)
    n_before = len(tiny_llama.model.layers)
    full = model.run(ids, cache=["resid_pre.1"])
    bad = fl.Patch("head.2.0", source=torch.zeros(4, 9, 8))  # head width is 8: fine shape

    class Boom(fl.Zero):
        def compute(self, current, ctx):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        model.run(ids, [bad, Boom("mlp_out.2")], start_at=fl.Resume.from_run(full, 1, model))
    assert len(tiny_llama.model.layers) == n_before
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in tiny_llama.modules())


def test_stop_at(tiny_gpt2, ids):
    model = fl.wrap(tiny_gpt2)
    out = model.run(ids, cache=["resid_pre.1"], stop_at="resid_pre.1")
    assert out.logits is None and "resid_pre.1" in out.cache
    with pytest.raises(fl.SiteError, match="never happen"):
        model.run(ids, cache=["mlp_out.2"], stop_at="resid_pre.1")


def test_logits_at_positions(tiny_causal, ids):
    _, hf = tiny_causal
    model = fl.wrap(hf)
    full = model.run(ids).logits
    pos = torch.tensor([2, 8, 0, 5])
    out = model.run(ids, logits_at=pos).logits
    assert out.shape == (4, 1, full.shape[-1])
    assert torch.allclose(out[:, 0], full[torch.arange(4), pos], atol=1e-6)
    last = model.run(ids, logits_at="last").logits
    assert torch.allclose(last[:, 0], full[:, -1], atol=1e-6)


def test_logit_tokens_compute_only_those_columns(tiny_causal, ids):
    _, hf = tiny_causal
    model = fl.wrap(hf)
    tokens = torch.tensor([7, 3, 11])
    if model.adapter.unembed_module is None:  # a headless model: its "logits" are hidden states
        with pytest.raises(fl.errors.InputError, match="unembedding"):
            model.run(ids, logit_tokens=tokens)
        return
    head = hf.get_submodule(model.adapter.unembed_module)
    weight = head.weight
    full = model.run(ids).logits
    pos = torch.tensor([2, 8, 0, 5])
    out = model.run(ids, logits_at=pos, logit_tokens=tokens).logits
    assert out.shape == (4, 1, 3)
    assert torch.allclose(out[:, 0], full[torch.arange(4), pos][:, tokens], atol=1e-6)
    # the unembedding (and any tying to the embedding) is restored
    assert head.weight is weight
    assert torch.allclose(model.run(ids).logits, full)
    with pytest.raises(fl.errors.InputError, match="logit_tokens"):
        model.run(ids, logit_tokens=torch.tensor([10**6]))
    assert head.weight is weight


def test_padding_right_matches_unpadded(tiny_llama):
    model = fl.wrap(tiny_llama)
    a = torch.tensor([[5, 6, 7, 8, 9]])
    b = torch.tensor([[11, 12, 13]])
    inp = fl.Inputs(
        ids=torch.tensor([[5, 6, 7, 8, 9], [11, 12, 13, 0, 0]]),
        mask=torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]),
    )
    out = model.run(inp, logits_at="last").logits[:, 0]
    assert torch.allclose(out[0], model.run(a).logits[0, -1], atol=1e-5)
    assert torch.allclose(out[1], model.run(b).logits[0, -1], atol=1e-5)


def test_resume_uses_the_cache_keyword_without_deprecation_warnings(tiny_causal, ids, monkeypatch):
    """transformers >= 5.2x deprecate ``past_key_values`` (removal in 5.40): runs pass the key/value
    cache by the keyword the module's forward takes, and read it back without the old name."""
    import transformers.utils.generic as generic

    said: list[str] = []
    monkeypatch.setattr(generic.logger, "warning_once", lambda msg, *a, **k: said.append(str(msg)))
    arch, hf = tiny_causal
    model = fl.wrap(hf)
    full = model.run(ids, cache=["resid_pre.1"], return_kv=True)
    r = fl.Resume.from_run(full, 1, model, offset=4)
    out = model.run(ids, start_at=r)
    assert torch.allclose(out.logits, full.logits[:, 4:], atol=1e-5)
    assert not [m for m in said if "past_key_values" in m], said


def test_gradients_at_sites(gpt2, ids):
    out = gpt2.run(ids, grad=True, grad_sites=["resid_pre.1", "head.1.2"], cache=["resid_pre.1"])
    out.logits[:, -1, 3].sum().backward()
    g = out.grad("resid_pre.1")
    assert g.shape == (4, 9, 32) and g.abs().sum() > 0
    assert out.grad("head.1.2").shape == (4, 9, 8)
    gpt2.module.zero_grad(set_to_none=True)


class _TwoDevices(torch.nn.Module):
    """Site ``a`` on the CPU, ``b`` and ``c`` on a second device ("meta": no numbers, but every
    operation checks that its tensors share a device), as a model spread by ``device_map``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Linear(4, 4)
        self.b = torch.nn.Linear(4, 4).to("meta")
        self.c = torch.nn.Linear(4, 3).to("meta")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c(self.b(self.a(x).to("meta")))


def test_sites_on_two_devices_take_sources_from_the_other_and_metrics_read_the_logits():
    """Caches stay on their site's device; every intervention moves its source (cached on the
    CPU) or its vector to the device of the site it writes; a metric reads the answers on the
    logits' device."""
    from faithlens.tasks import metrics as M

    m = fl.wrap(_TwoDevices(), sites={"a": "a", "b": "b", "c": "c"}, example=torch.randn(1, 4))
    x = torch.randn(5, 4)
    out = m.run(x, cache=["a", "b"])
    assert out.cache["a"].device.type == "cpu" and out.cache["b"].device.type == "meta"
    src = out.cache["a"]
    basis = torch.eye(4)[:, :2]
    for iv in (
        fl.Patch("b", src),
        fl.Patch("b", src, rows=[0, 1]),
        fl.Zero("b"),
        fl.Mean("b", torch.zeros(4)),
        fl.Add("b", torch.ones(4)),
        fl.Project("b", basis),
        fl.Project("b", basis, source=src),
        fl.Interchange("b", torch.eye(4), [0, 1], src),
    ):
        got = m.run(x, [iv])
        assert got.logits.device.type == "meta" and got.logits.shape == (5, 3), iv
    answers = torch.tensor([[0, 1]] * 5)  # on the CPU
    for metric in (M.LogitDiff(), M.LogProb(), M.ProbDiff(), M.Accuracy(), M.CrossEntropy()):
        assert metric.compute(out.logits, answers).device.type == "meta", metric.name
