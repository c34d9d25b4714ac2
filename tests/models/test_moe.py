"""Mixture-of-experts sites (faithlens.models.moe): router weights and expert outputs checked
against plain-PyTorch hooks and an independent computation from the expert weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import faithlens as fl
from faithlens.graph import TransformerGraph
from faithlens.models.moe import MoEAdapter
from tests.helpers.models_coverage import BY_KEY

N, SEQ = 4, 9
KEYS = ("mixtral", "qwen2_moe", "qwen3_moe")


@pytest.fixture(scope="module", params=KEYS)
def moe(request):
    hf = BY_KEY[request.param].build()
    return hf, fl.wrap(hf)


@pytest.fixture(scope="module")
def ids():
    return torch.randint(1, 97, (N, SEQ), generator=torch.Generator().manual_seed(5))


def _experts(hf, layer):
    return hf.model.layers[layer].mlp.experts


def _record_routing(hf, layer, ids):
    """The experts' own inputs (hidden, chosen experts, weights) and output, by a bare hook."""
    store = {}

    def grab(_m, args, out):
        store["args"] = tuple(a.detach().clone() for a in args[:3])
        store["out"] = out.detach().clone()

    h = _experts(hf, layer).register_forward_hook(grab)
    try:
        with torch.no_grad():
            logits = hf(input_ids=ids).logits
    finally:
        h.remove()
    return store["args"], store["out"], logits


def _by_hand(hf, layer, hidden, index, weights, e):
    """Expert e's weighted output per token, from its weights ([tokens, d_model])."""
    ex = _experts(hf, layer)
    gate, up = F.linear(hidden, ex.gate_up_proj[e]).chunk(2, dim=-1)
    y = F.linear(ex.act_fn(gate) * up, ex.down_proj[e])
    w = (weights * (index == e)).sum(-1, keepdim=True)
    return (y * w).detach()


def _patched_logits(hf, layer, ids, fn):
    h = _experts(hf, layer).register_forward_hook(lambda m, a, o: fn(a, o))
    try:
        with torch.no_grad():
            return hf(input_ids=ids).logits
    finally:
        h.remove()


def test_router_site_is_the_routing_the_experts_receive(moe, ids):
    hf, m = moe
    assert isinstance(m.adapter, MoEAdapter) and m.adapter.n_experts == 4
    (hidden, index, weights), _, _ = _record_routing(hf, 1, ids)
    got = m.run(ids, cache=["router.1"]).cache["router.1"]
    assert got.shape == (N, SEQ, 4)
    dense = torch.zeros(N * SEQ, 4)
    for j in range(index.shape[1]):
        dense[torch.arange(N * SEQ), index[:, j]] = weights[:, j].float()
    assert torch.equal(got.reshape(-1, 4).float(), dense)
    assert bool(((got > 0).sum(-1) == m.adapter.top_k).all())


def test_expert_outputs_are_each_experts_weighted_output_and_add_up(moe, ids):
    hf, m = moe
    names = [f"expert_out.1.{e}" for e in range(4)]
    c = m.run(ids, cache=["router.1", *names]).cache
    (hidden, index, weights), out, _ = _record_routing(hf, 1, ids)
    total = sum(c[n] for n in names)
    assert torch.allclose(total.reshape(-1, m.d_model), out, atol=1e-6)
    for e, n in enumerate(names):
        ref = _by_hand(hf, 1, hidden, index, weights, e).reshape(N, SEQ, -1)
        assert torch.allclose(c[n], ref, atol=1e-6), e
        chosen = c["router.1"][..., e] > 0
        assert bool((c[n].abs().sum(-1) > 0).eq(chosen).all()), e


def test_zero_ablating_an_expert_matches_a_plain_hook(moe, ids):
    hf, m = moe
    E = 2

    def drop(args, out):
        hidden, index, weights = args[:3]
        return out - _by_hand(hf, 1, hidden, index, weights, E)

    ref = _patched_logits(hf, 1, ids, drop)
    got = m.run(ids, [fl.Zero(f"expert_out.1.{E}")]).logits
    assert torch.allclose(got, ref, atol=1e-5)
    assert not torch.allclose(got, m.run(ids).logits, atol=1e-4)
    # one position only: the others are untouched there
    last = m.run(ids, [fl.Zero(f"expert_out.1.{E}[:, -1]")]).logits
    assert torch.allclose(last[:, :-1], m.run(ids).logits[:, :-1], atol=1e-6)


def test_patching_an_expert_equals_a_hand_made_reference(moe):
    hf, m = moe
    task = fl.tasks.random_token_task(m, 4, 7, seed=2)
    E = 1
    res = fl.patch(m, task, [f"expert_out.1.{E}"], n_boot=20)
    (ch, ci, cw), _, _ = _record_routing(hf, 1, task.clean.ids)
    clean = _by_hand(hf, 1, ch, ci, cw, E)

    def swap(args, out):
        hidden, index, weights = args[:3]
        return out - _by_hand(hf, 1, hidden, index, weights, E) + clean

    logits = _patched_logits(hf, 1, task.corrupt.ids, swap)
    r = torch.arange(task.n)
    last = logits[r, task.positions]
    ref = (last[r, task.answers[:, 0]] - last[r, task.answers[:, 1]]).numpy()
    np.testing.assert_allclose(res.patched[0], ref, atol=1e-4, rtol=0)


def test_patching_the_router_routes_like_the_source(moe):
    hf, m = moe
    task = fl.tasks.random_token_task(m, 4, 7, seed=3)
    src = m.run(task.clean, cache=["router.1"]).cache["router.1"]
    got = m.run(task.corrupt, [fl.Patch("router.1", source=src)]).logits
    (_, ci, cw), _, _ = _record_routing(hf, 1, task.clean.ids)
    h = _experts(hf, 1).register_forward_pre_hook(lambda mod, a: (a[0], ci, cw, *a[3:]))
    try:
        with torch.no_grad():
            ref = hf(input_ids=task.corrupt.ids, attention_mask=task.corrupt.mask).logits
    finally:
        h.remove()
    assert torch.allclose(got, ref, atol=1e-5)
    base = m.run(task.corrupt).logits
    assert not torch.allclose(got, base, atol=1e-4)


def test_a_model_with_dense_layers_keeps_their_neurons():
    """Qwen-MoE's mlp_only_layers: a dense MLP (mlp_post, a linear reader) where asked."""
    from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2MoeConfig(
        vocab_size=97,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        hidden_size=32,
        intermediate_size=64,
        moe_intermediate_size=24,
        shared_expert_intermediate_size=40,
        num_experts=4,
        num_experts_per_tok=2,
        mlp_only_layers=[0],
    )
    hf = Qwen2MoeForCausalLM(cfg).eval()
    m = fl.wrap(hf)
    assert m.adapter.moe_layers() == [1]
    sites = set(m.sites())
    assert {"mlp_post.0", "router.1", "expert_out.1.3"} <= sites
    assert not {"mlp_post.1", "router.0"} & sites
    assert m.reader("mlp_in.0") is not None and m.reader("mlp_in.1") is None
    assert m.sites("experts") == [f"expert_out.1.{e}" for e in range(4)]
    ids = torch.randint(1, 97, (2, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = hf(input_ids=ids).logits
    assert torch.allclose(m.run(ids).logits, ref, atol=1e-5)


def test_path_level_methods_treat_the_block_as_one_node(moe):
    hf, m = moe
    graph = TransformerGraph(m)
    assert {"mlp.0", "mlp.1"} <= set(graph.nodes)
    assert not any(n.startswith(("expert", "router")) for n in graph.nodes)
    task = fl.tasks.random_token_task(m, 4, 7, seed=1)
    with pytest.raises(fl.errors.SiteError, match=r"one node, 'mlp\.0'"):
        fl.path_patch(m, task, ["expert_out.0.1"], "logits", n_boot=20)
    res = fl.path_patch(m, task, ["mlp.0"], "logits", n_boot=20)
    assert np.isfinite(res.patched).all()


def test_gradients_at_expert_and_router_sites(moe, ids):
    """Every expert's output is added to the block's output, so its gradient is the gradient at
    mlp_out; the router's gradient is zero exactly for the experts not chosen."""
    hf, m = moe
    names = ["mlp_out.1", "router.1", *(f"expert_out.1.{e}" for e in range(4))]
    out = m.run(ids, grad=True, grad_sites=names, cache=["router.1"])
    out.logits[:, -1, 5].sum().backward()
    g = out.grad("mlp_out.1")
    assert g.abs().sum() > 0
    for e in range(4):
        assert torch.allclose(out.grad(f"expert_out.1.{e}"), g, atol=1e-6), e
    chosen = out.cache["router.1"] > 0
    router = out.grad("router.1")
    assert bool((router[~chosen] == 0).all()) and router[chosen].abs().sum() > 0
    hf.zero_grad(set_to_none=True)


@pytest.mark.parametrize("impl", ["eager", "batched_mm", "grouped_mm"])
def test_expert_outputs_under_every_experts_implementation(impl, ids):
    """transformers picks how the experts run (config._experts_implementation); the expert
    sites call the experts' own forward, whichever it is."""
    hf = BY_KEY["mixtral"].build()
    hf.config._experts_implementation = impl
    assert _experts(hf, 1).config._experts_implementation == impl
    m = fl.wrap(hf)
    names = [f"expert_out.1.{e}" for e in range(4)]
    c = m.run(ids, cache=["mlp_out.1", *names]).cache
    assert torch.allclose(sum(c[n] for n in names), c["mlp_out.1"], atol=1e-6)
    (hidden, index, weights), _, _ = _record_routing(hf, 1, ids)
    ref = _by_hand(hf, 1, hidden, index, weights, 3).reshape(N, SEQ, -1)
    assert torch.allclose(c["expert_out.1.3"], ref, atol=1e-6)
