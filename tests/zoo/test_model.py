"""The zoo transformer itself: masking, positions, attention-only layout, cache, weights I/O.

Engine parity (sites vs plain hooks, heads through W_O, resume at a layer / position) runs on
two zoo variants through the parametrised fixtures of tests/conftest.py (tests/test_runs.py).
"""

from __future__ import annotations

import pytest
import torch

import faithlens as fl
from faithlens.models.adapters import hf_adapter
from faithlens.zoo import (
    ZooAdapter,
    ZooCache,
    ZooConfig,
    ZooTransformer,
    load_weights,
    read_weights,
    save_weights,
)

V = 23


def make(**kw):
    base = dict(n_layers=2, n_heads=2, d_model=16, d_vocab=V, n_ctx=12, init_std=0.3)
    base.update(kw)
    m = ZooTransformer(ZooConfig(**base))
    m.reset_parameters(generator=torch.Generator().manual_seed(0))
    return m.eval()


@pytest.fixture(scope="module")
def ids():
    return torch.randint(0, V, (3, 10), generator=torch.Generator().manual_seed(1))


def test_config_validation():
    with pytest.raises(fl.InputError, match="divisible"):
        ZooConfig(n_layers=1, n_heads=3, d_model=16, d_vocab=5, n_ctx=4)
    with pytest.raises(fl.InputError, match="positions"):
        ZooConfig(n_layers=1, n_heads=2, d_model=16, d_vocab=5, n_ctx=4, positions="rotary")  # type: ignore[arg-type]
    with pytest.raises(fl.InputError, match="n_layers"):
        ZooConfig(n_layers=0, n_heads=2, d_model=16, d_vocab=5, n_ctx=4)
    with pytest.raises(fl.InputError, match="unknown ZooConfig fields"):
        ZooConfig.from_dict({"n_layers": 1, "bogus": 2})
    cfg = ZooConfig(n_layers=2, n_heads=2, d_model=16, d_vocab=5, n_ctx=4, d_mlp=0, d_out=2)
    assert cfg.attn_only and cfg.head_dim == 8 and cfg.d_out == 2
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size) == (2, 16, 0)
    assert ZooConfig.from_json(cfg.to_json()) == cfg


@pytest.mark.parametrize("causal", [True, False])
def test_causal_vs_bidirectional(ids, causal):
    m = make(causal=causal, d_mlp=8)
    a = m(ids).logits
    changed = ids.clone()
    changed[:, 7] = (changed[:, 7] + 1) % V
    b = m(changed).logits
    before_same = torch.allclose(a[:, :7], b[:, :7], atol=1e-6)
    assert before_same is causal
    assert not torch.allclose(a[:, 7:], b[:, 7:])


@pytest.mark.parametrize("positions", ["learned", "shortformer"])
def test_padding_is_masked(positions):
    m = make(causal=False, d_mlp=8, positions=positions)
    a = torch.tensor([[1, 2, 3, 4, 5, 6]])
    b = torch.tensor([[7, 8, 9]])
    batch = torch.tensor([[1, 2, 3, 4, 5, 6], [7, 8, 9, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    out = m(batch, attention_mask=mask).logits
    assert torch.allclose(out[0], m(a).logits[0], atol=1e-5)
    assert torch.allclose(out[1, :3], m(b).logits[0], atol=1e-5)
    # the padding tokens' identity does not matter
    other = batch.clone()
    other[1, 3:] = 5
    assert torch.allclose(m(other, attention_mask=mask).logits[1, :3], out[1, :3], atol=1e-6)


def test_attention_pattern_site(ids):
    model = fl.wrap(make(causal=True))
    mask = torch.ones_like(ids)
    mask[0, 8:] = 0
    out = model.run(fl.Inputs(ids=ids, mask=mask), cache=["module:blocks.0.attn.pattern"])
    pat = out.cache["module:blocks.0.attn.pattern"]
    assert pat.shape == (3, 2, 10, 10)
    assert torch.allclose(pat.sum(-1), torch.ones(3, 2, 10), atol=1e-5)
    assert float(pat.triu(1).abs().max()) == 0.0  # causal
    assert float(pat[0, :, :, 8:].abs().max()) == 0.0  # padding keys


def test_learned_vs_shortformer_positions(ids):
    learned = fl.wrap(make(positions="learned"))
    short = fl.wrap(make(positions="shortformer"))
    for model, with_pos in ((learned, True), (short, False)):
        m = model.module
        out = model.run(ids, cache=["resid_pre.0", "attn_in.0", "module:blocks.0.attn.q_proj:in"])
        tok = m.embed(ids)
        pos = m.pos_embed(torch.arange(ids.shape[1]))[None]
        want = tok + pos if with_pos else tok
        assert torch.allclose(out.cache["resid_pre.0"], want, atol=1e-6)
        q_in = out.cache["module:blocks.0.attn.q_proj:in"]
        # shortformer: queries and keys read ln1(x) + pos; values read ln1(x)
        want_q = out.cache["attn_in.0"] + (0 if with_pos else pos)
        assert torch.allclose(q_in, want_q, atol=1e-6)


def test_attention_only_has_no_mlp_sites():
    model = fl.wrap(make(d_mlp=0))
    assert model.d_mlp == 0 and not model.adapter.has_mlp
    names = model.sites()
    assert not [n for n in names if n.startswith(("mlp", "resid_mid"))]
    assert model.sites("mlp_out") == []
    with pytest.raises(fl.SiteError, match="unknown site"):
        model.site_info("mlp_out.0")
    with_mlp = fl.wrap(make(d_mlp=8))
    assert "mlp_out.1" in with_mlp.sites() and "resid_mid.0" in with_mlp.sites()


def test_adapter_comes_from_the_model():
    m = make(causal=False)
    assert isinstance(hf_adapter(m), ZooAdapter)
    model = fl.load(m)
    assert isinstance(model.adapter, ZooAdapter) and not model.is_causal
    assert fl.wrap(make(causal=True)).is_causal


def test_kv_cache_matches_full_forward(ids):
    m = make(causal=True, positions="shortformer")
    full = m(ids).logits
    first = m(ids[:, :6], use_cache=True)
    rest = m(ids[:, 6:], past_key_values=first.past_key_values, use_cache=True)
    assert torch.allclose(torch.cat([first.logits, rest.logits], 1), full, atol=1e-5)
    assert rest.past_key_values.get_seq_length() == 10
    cache = ZooCache([(k[:, :, :6], v[:, :, :6]) for k, v in rest.past_key_values.to_list()])
    again = m(ids[:, 6:], past_key_values=cache)
    assert torch.allclose(again.logits, full[:, 6:], atol=1e-5)
    with pytest.raises(fl.InputError, match="bidirectional"):
        make(causal=False)(ids, use_cache=True)


def test_bad_inputs():
    m = make(n_ctx=12)
    with pytest.raises(fl.InputError, match="token ids must be in"):
        m(torch.tensor([[1, V]]))
    with pytest.raises(fl.ShapeError, match="longer than this model's context"):
        m(torch.zeros(1, 13, dtype=torch.long))
    with pytest.raises(fl.ShapeError, match="attention_mask"):
        m(torch.zeros(2, 4, dtype=torch.long), attention_mask=torch.ones(2, 5))


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_dtypes(ids, dtype):
    m = make(d_mlp=8)
    ref = m(ids).logits
    out = make(d_mlp=8).to(dtype)(ids).logits
    assert out.dtype == dtype
    tol = 1e-5 if dtype == torch.float64 else 0.1
    assert torch.allclose(out.float(), ref, atol=tol)


def test_weights_roundtrip(tmp_path, ids):
    m = make(d_mlp=8, causal=False, positions="shortformer")
    path = save_weights(m, tmp_path / "m.safetensors", {"name": "custom", "note": 1})
    cfg, state, info = read_weights(path)
    assert cfg == m.config and info == {"name": "custom", "note": 1}
    loaded, _ = load_weights(path, dtype=torch.float64)
    assert torch.allclose(loaded(ids).logits.float(), m(ids).logits, atol=1e-5)
    model = fl.load(f"zoo:{path}")
    assert torch.allclose(model.run(ids).logits, m(ids).logits, atol=1e-6)
    (tmp_path / "bad.safetensors").write_bytes(b"nope")
    with pytest.raises(Exception):  # noqa: B017 - safetensors' own header error
        read_weights(tmp_path / "bad.safetensors")
    assert torch.allclose(fl.load(str(path)).run(ids).logits, m(ids).logits, atol=1e-6)
    with pytest.raises(fl.InputError, match="no zoo weights file"):
        fl.load(f"zoo:{tmp_path / 'missing.safetensors'}")


def test_readers_of_sites():
    """The linear maps that read a site (used by divergence's readable/null-space split)."""
    m = make(d_mlp=8)
    model = fl.wrap(m)
    w, b = model.reader("attn_in.1")
    blk = m.blocks[1]
    assert torch.equal(
        w, torch.cat([blk.attn.q_proj.weight, blk.attn.k_proj.weight, blk.attn.v_proj.weight])
    )
    w, b = model.reader("mlp_in.0")
    assert torch.equal(w, m.blocks[0].mlp.fc_in.weight)
    w, b = model.reader("head.0.1")
    assert torch.equal(w, m.blocks[0].attn.o_proj.weight[:, 8:16]) and b is None


def test_without_norms(ids):
    """``norm=False`` (tracr's layout): the three norms are identities and a block is
    ``x + attn(x)``, then ``+ mlp(.)``; a config written before ``norm`` existed means norms."""
    m = make(d_mlp=8, causal=False, norm=False)
    for mod in (m.blocks[0].ln1, m.blocks[0].ln2, m.ln_final):
        assert isinstance(mod, torch.nn.Identity)
    with torch.no_grad():
        x = m.embed(ids) + m.pos_embed(torch.arange(ids.shape[1]))[None]
        for b in m.blocks:
            x = x + b.attn(x)
            x = x + b.mlp(x)
        assert torch.allclose(m(ids).logits, m.unembed(x), atol=1e-5)
    old = {k: v for k, v in make().config.to_dict().items() if k != "norm"}
    assert ZooConfig.from_dict(old).norm
    assert "no-norm" in m.config.describe()
    graph = fl.circuits.EdgeGraph(fl.wrap(m))
    assert len(graph) > 0
