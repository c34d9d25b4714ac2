"""Encoder-decoders (faithlens.models.encdec): BART's encoder and decoder sites, self- and
cross-attention heads, checked against the model's own outputs and plain-PyTorch hooks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import faithlens as fl
from faithlens.models.encdec import EncDecAdapter
from faithlens.models.model import Inputs

N, ENC, DEC = 3, 7, 5


def _config(**kw):
    from transformers import BartConfig

    base = dict(
        vocab_size=97,
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=48,
        decoder_ffn_dim=40,
        max_position_embeddings=64,
    )
    return BartConfig(**{**base, **kw})


def _t5():
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(30)
    cfg = T5Config(
        vocab_size=97,
        d_model=32,
        d_kv=8,
        d_ff=40,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        decoder_start_token_id=0,
        pad_token_id=0,
    )
    return T5ForConditionalGeneration(cfg).eval()


def _bart():
    from transformers import BartForConditionalGeneration

    torch.manual_seed(29)
    return BartForConditionalGeneration(_config()).eval()


@pytest.fixture(scope="module", params=["bart", "t5"])
def bart(request):
    hf = _bart() if request.param == "bart" else _t5()
    return hf, fl.wrap(hf)


def _ids(seed, n, length):
    return torch.randint(3, 97, (n, length), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def x():
    ids = _ids(0, N, ENC)
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "decoder_input_ids": _ids(1, N, DEC),
    }


def _hf(hf, x, **kw):
    with torch.no_grad():
        return hf(**x, **kw)


def _cross_o(hf, L):
    if hf.config.model_type == "t5":
        return hf.decoder.block[L].layer[1].EncDecAttention.o
    return hf.model.decoder.layers[L].encoder_attn.out_proj


def test_sites_of_both_stacks_and_cross_attention(bart, x):
    hf, m = bart
    assert isinstance(m.adapter, EncDecAdapter) and not m.is_causal
    assert m.arch == hf.config.model_type
    got = set(m.sites())
    pre_norm = ("attn_in", "mlp_in") if m.arch == "t5" else ()
    for s, n_heads in (("enc", 4), ("dec", 4)):
        for L in range(2):
            for kind in ("resid_pre", "attn_out", "resid_mid", "mlp_post", "mlp_out", "resid_post"):
                assert f"{s}.{kind}.{L}" in got
            for kind in ("attn_in", "mlp_in"):
                assert (f"{s}.{kind}.{L}" in got) == (kind in pre_norm)
            assert {
                f"{s}.{w}.{L}.{h}" for w in ("head", "q", "k", "v") for h in range(n_heads)
            } <= got
    cross = {
        f"dec.cross_{w}.{L}.{h}"
        for w in ("head", "q", "k", "v")
        for L in range(2)
        for h in range(4)
    }
    assert cross <= got and not any(s.startswith("enc.cross") for s in got)
    assert len(m.sites("cross_head")) == 8 and "logits" in got
    out = m.run(x, cache=["dec.cross_k.1.2", "dec.cross_q.1.2", "enc.mlp_post.0", "dec.mlp_post.0"])
    assert out.cache["dec.cross_k.1.2"].shape == (N, ENC, 8)  # keys over the encoder's tokens
    assert out.cache["dec.cross_q.1.2"].shape == (N, DEC, 8)
    assert out.cache["enc.mlp_post.0"].shape == (N, ENC, m.d_mlp)
    assert out.cache["dec.mlp_post.0"].shape == (N, DEC, 40)
    if m.arch == "t5":  # pre-norm: the residual stream is a sum of component outputs
        names = [f"dec.{k}.1" for k in ("resid_pre", "attn_out", "cross_attn_out", "mlp_out")]
        c = m.run(x, cache=[*names, "dec.resid_post.1", "dec.resid_mid.1"]).cache
        total = sum(c[n] for n in names)
        assert torch.allclose(total, c["dec.resid_post.1"], atol=1e-5)
        assert torch.allclose(total - c["dec.mlp_out.1"], c["dec.resid_mid.1"], atol=1e-5)


def test_parity_with_the_models_own_forward(bart, x):
    hf, m = bart
    ref = _hf(hf, x, output_hidden_states=True)
    names = [f"{s}.resid_post.{L}" for s in ("enc", "dec") for L in range(2)]
    out = m.run(x, cache=["enc.resid_pre.0", "dec.resid_pre.0", "logits", *names])
    assert torch.allclose(out.logits, ref.logits, atol=1e-5)
    assert torch.equal(out.cache["logits"], out.logits)
    for s, hidden in (("enc", ref.encoder_hidden_states), ("dec", ref.decoder_hidden_states)):
        assert torch.allclose(out.cache[f"{s}.resid_pre.0"], hidden[0], atol=1e-6)
        for L in range(2 if m.arch == "bart" else 1):  # T5's last entry is after its norm
            assert torch.allclose(out.cache[f"{s}.resid_post.{L}"], hidden[L + 1], atol=1e-6)
    if m.arch == "t5":
        c = m.run(x, cache=["enc.ln_final"]).cache
        assert torch.allclose(c["enc.ln_final"], ref.encoder_last_hidden_state, atol=1e-6)
    assert not hf._forward_hooks and not hf._forward_pre_hooks


def test_zero_ablating_a_cross_head_at_the_last_decoder_position(bart, x):
    hf, m = bart
    L, H, dh = 1, 2, 8

    def zero(mod, a):
        z = a[0].clone()
        z[:, -1, H * dh : (H + 1) * dh] = 0
        return (z,)

    h = _cross_o(hf, L).register_forward_pre_hook(zero)
    try:
        ref = _hf(hf, x).logits
    finally:
        h.remove()
    got = m.run(x, [fl.Zero(fl.Site(f"dec.cross_head.{L}.{H}", positions=-1))]).logits
    assert torch.allclose(got, ref, atol=1e-5)
    assert not torch.allclose(got, _hf(hf, x).logits, atol=1e-4)


def test_last_position_of_a_decoder_site_reads_the_decoder_mask(bart, x):
    hf, m = bart
    dmask = torch.ones(N, DEC, dtype=torch.long)
    dmask[0, 3:] = 0
    y = {**x, "decoder_attention_mask": dmask}
    full = m.run(y, cache=["dec.resid_post.1"]).cache["dec.resid_post.1"]
    last = m.run(y, cache=[fl.Site("dec.resid_post.1", positions="last")]).cache
    picked = last["dec.resid_post.1"][:, 0]
    assert torch.equal(picked[0], full[0, 2]) and torch.equal(picked[1], full[1, DEC - 1])


def _task(m):
    ids, cor, dec = _ids(2, 4, ENC), _ids(3, 4, ENC), _ids(4, 4, DEC)
    mask = torch.ones_like(ids)
    return fl.Task(
        "bart-toy",
        Inputs(ids=ids, mask=mask, kwargs={"decoder_input_ids": dec}),
        Inputs(ids=cor, mask=mask, kwargs={"decoder_input_ids": dec}),
        answers=torch.tensor([[5, 6], [7, 8], [9, 10], [11, 12]]),
        positions=torch.tensor([4, 3, 4, 2]),
    )


def test_patching_a_cross_head_equals_a_hand_made_reference(bart):
    hf, m = bart
    task = _task(m)
    L, H, dh = 0, 1, 8
    last = "enc.resid_post.1"
    res = fl.patch(m, task, [f"dec.cross_head.{L}.{H}", last], n_boot=20)
    store = {}
    h = _cross_o(hf, L).register_forward_pre_hook(
        lambda mod, a: store.__setitem__("z", a[0][..., H * dh : (H + 1) * dh].clone())
    )
    clean = {
        "input_ids": task.clean.ids,
        "decoder_input_ids": task.clean.kwargs["decoder_input_ids"],
    }
    corrupt = {"input_ids": task.corrupt.ids, "decoder_input_ids": clean["decoder_input_ids"]}
    try:
        _hf(hf, clean)
    finally:
        h.remove()

    def write(mod, a):
        z = a[0].clone()
        z[..., H * dh : (H + 1) * dh] = store["z"]
        return (z,)

    h = _cross_o(hf, L).register_forward_pre_hook(write)
    try:
        logits = _hf(hf, corrupt).logits
    finally:
        h.remove()
    r = torch.arange(task.n)
    at = logits[r, task.positions]
    ref = (at[r, task.answers[:, 0]] - at[r, task.answers[:, 1]]).numpy()
    np.testing.assert_allclose(res.patched[0], ref, atol=1e-4, rtol=0)
    # the decoder's inputs are the same: the encoder's output is all that differs
    np.testing.assert_allclose(res.patched[1], res.source, atol=1e-4, rtol=0)


def test_what_is_not_in_scope_is_refused_with_the_reason(bart, x):
    hf, m = bart
    task = _task(m)
    full = m.run(x, cache=["dec.resid_pre.1"])
    with pytest.raises(fl.errors.InputError, match="cannot resume"):
        m.run(x, start_at=fl.Resume(1, full.cache["dec.resid_pre.1"]))
    with pytest.raises(fl.errors.InputError, match="no single order"):
        m.run(x, cache=["enc.resid_post.0"], stop_at="enc.resid_post.1")
    with pytest.raises(fl.errors.InputError, match="cross-attention, which a TransformerGraph"):
        fl.path_patch(m, task, ["dec.head.0.1"], "logits", n_boot=20)
    with pytest.raises(fl.errors.InputError, match="two position axes"):
        fl.patch(m, task, ["dec.head.0.1"], positions="last", n_boot=20)
    # an encoder site too: the task's positions are the decoder's (it used to run)
    with pytest.raises(fl.errors.InputError, match="two position axes"):
        fl.patch(m, task, ["enc.resid_post.1"], positions="last", n_boot=20)
    for positions in ("last", "each"):
        with pytest.raises(fl.errors.InputError, match="two position axes"):
            fl.attribution_patch(m, task, ["dec.resid_post.1"], positions=positions, n_boot=20)


def test_attribution_on_both_stacks_labels_each_sites_own_positions(bart):
    # all positions summed per site: one row per site, whatever each stack's length
    hf, m = bart
    res = fl.attribution_patch(m, _task(m), ["dec.resid_post.1", "enc.resid_post.1"], n_boot=20)
    assert list(res.site) == ["dec.resid_post.1", "enc.resid_post.1"]
    assert res.patched.shape == (2, 4)


def test_the_logits_site_is_on_the_decoders_positions(bart, x):
    hf, m = bart
    full = m.run(x, cache=["logits"]).cache["logits"]
    assert full.shape[1] == DEC
    last = m.run(x, cache=[fl.Site("logits", positions="last")]).cache["logits"]
    assert torch.equal(last[:, 0], full[:, DEC - 1])


def test_pre_norm_variants_are_refused():
    from transformers import BartForConditionalGeneration

    with pytest.raises(fl.errors.InputError, match="post-LN layout only"):
        fl.wrap(BartForConditionalGeneration(_config(normalize_before=True)))
