"""OPT (faithlens.models.opt): the MLP sites are views of the tensors OPT's decoder layer
flattens, checked against plain-PyTorch hooks row by row."""

from __future__ import annotations

import pytest
import torch

import faithlens as fl
from faithlens.graph import TransformerGraph
from faithlens.models.opt import OPTAdapter
from tests.helpers.models_coverage import BY_KEY

N, SEQ = 3, 6


@pytest.fixture(scope="module")
def opt():
    hf = BY_KEY["opt"].build()
    return hf, fl.wrap(hf)


@pytest.fixture(scope="module")
def ids():
    return torch.randint(1, 97, (N, SEQ), generator=torch.Generator().manual_seed(7))


def _layer(hf, L):
    return hf.model.decoder.layers[L]


def test_mlp_sites_are_the_flattened_tensors_seen_per_position(opt, ids):
    hf, m = opt
    assert isinstance(m.adapter, OPTAdapter) and m.d_mlp == 48
    store = {}
    lay = _layer(hf, 1)
    hooks = [
        lay.fc2.register_forward_hook(lambda mod, a, o: store.update(post=a[0], out=o)),
        lay.final_layer_norm.register_forward_hook(lambda mod, a, o: store.update(mid=a[0], n=o)),
    ]
    try:
        with torch.no_grad():
            hf(input_ids=ids)
    finally:
        for h in hooks:
            h.remove()
    assert store["post"].shape == (N * SEQ, 48)  # OPT still flattens: the reason for the views
    names = ["resid_mid.1", "mlp_in.1", "mlp_post.1", "mlp_out.1", "resid_pre.1", "attn_out.1"]
    c = m.run(ids, cache=names).cache
    for name, key in (("resid_mid.1", "mid"), ("mlp_in.1", "n"), ("mlp_post.1", "post")):
        assert torch.equal(c[name], store[key].reshape(N, SEQ, -1)), name
    assert torch.equal(c["mlp_out.1"], store["out"].reshape(N, SEQ, -1))
    assert torch.allclose(c["resid_mid.1"], c["resid_pre.1"] + c["attn_out.1"], atol=1e-6)
    w, _ = m.reader("mlp_post.1")
    assert w is lay.fc2.weight


def test_ablating_neurons_at_one_position_matches_a_plain_hook(opt, ids):
    """Row b * SEQ + t of the flattened tensor is example b, position t."""
    hf, m = opt
    units, pos = [3, 17], 4

    def zero(mod, a):
        x = a[0].clone().reshape(N, SEQ, -1)
        x[:, pos, units] = 0
        return (x.reshape(N * SEQ, -1),)

    h = _layer(hf, 0).fc2.register_forward_pre_hook(zero)
    try:
        with torch.no_grad():
            ref = hf(input_ids=ids).logits
    finally:
        h.remove()
    got = m.run(ids, [fl.Zero(fl.Site("mlp_post.0", positions=pos, units=units))]).logits
    assert torch.allclose(got, ref, atol=1e-5)
    assert not torch.allclose(got, m.run(ids).logits, atol=1e-4)


def test_patching_the_mlp_output_from_another_run(opt, ids):
    hf, m = opt
    other = torch.randint(1, 97, (N, SEQ), generator=torch.Generator().manual_seed(8))
    src = m.run(other, cache=["mlp_out.1"]).cache["mlp_out.1"]
    got = m.run(ids, [fl.Patch("mlp_out.1", source=src)]).logits
    h = _layer(hf, 1).fc2.register_forward_hook(lambda mod, a, o: src.reshape(N * SEQ, -1))
    try:
        with torch.no_grad():
            ref = hf(input_ids=ids).logits
    finally:
        h.remove()
    assert torch.allclose(got, ref, atol=1e-5)


def test_resuming_checks_the_hidden_state_shape(opt, ids):
    hf, m = opt
    full = m.run(ids, cache=["resid_pre.1"])
    with pytest.raises(fl.errors.ShapeError, match="covers 3 positions"):
        m.run(ids, start_at=fl.Resume(1, full.cache["resid_pre.1"][:, :3]))
    # the adapter's own check, for a caller that resumes without the engine
    bad = full.cache["resid_pre.1"][:, :3]
    with (
        pytest.raises(fl.errors.InputError, match="resumed hidden state"),
        m.adapter.resumed(1, bad),
        torch.no_grad(),
    ):
        hf(input_ids=ids)
    assert len(hf.model.decoder.layers) == 2 and not _layer(hf, 1)._forward_pre_hooks


def test_the_graph_reads_the_mlp_input_from_the_flattened_norm(opt):
    hf, m = opt
    graph = TransformerGraph(m)
    assert graph.mlp_norm_input == ["resid_mid.0", "resid_mid.1"]
    assert not graph.parallel


@pytest.mark.parametrize(
    "extra, match",
    [({"do_layer_norm_before": False}, "OPT-350m"), ({"word_embed_proj_dim": 8}, "8")],
)
def test_variants_without_exact_sites_are_refused(extra, match):
    from transformers import OPTConfig, OPTForCausalLM

    cfg = OPTConfig(
        vocab_size=97, num_hidden_layers=1, num_attention_heads=2, hidden_size=16, **extra
    )
    with pytest.raises(fl.errors.InputError, match=match):
        fl.wrap(OPTForCausalLM(cfg))
