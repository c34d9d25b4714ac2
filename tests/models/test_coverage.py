"""The architecture coverage matrix: every row of tests/helpers/models_coverage.py checked for what its
columns claim (docs/models.md is generated from the same rows)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import faithlens as fl
from faithlens import scrubbing as sc
from faithlens.graph import TransformerGraph
from faithlens.models.sites import KIND_ORDER
from tests.helpers.models_coverage import (
    FAMILIES,
    PATH_BLOCKS,
    PATH_REFUSED,
    PATH_YES,
    VISION,
    Family,
    VisionFamily,
    main,
    render,
    vision_capabilities,
)

N, SEQ = 4, 9


@pytest.fixture(scope="module", params=FAMILIES, ids=[f.key for f in FAMILIES])
def fam(request):
    f: Family = request.param
    hf = f.build()
    return f, hf, fl.wrap(hf)


@pytest.fixture(scope="module")
def ids():
    return torch.randint(1, 97, (N, SEQ), generator=torch.Generator().manual_seed(0))


def _forward(hf, ids, **kw):
    with torch.no_grad():
        return hf(input_ids=ids, **kw)


def _logits(f: Family, hf, ids):
    out = _forward(hf, ids)
    if f.hf and getattr(out, "logits", None) is None:  # a headless encoder: its hidden states
        return out.last_hidden_state
    return out.logits if hasattr(out, "logits") else out


def _o_proj(f: Family, hf, layer: int):
    return hf.get_submodule(f.o_proj.format(L=layer))


def _hooked_logits(f: Family, hf, ids, layer: int, fn):
    """Logits with ``fn`` applied to the o_proj input of ``layer`` (bare PyTorch hooks)."""
    h = _o_proj(f, hf, layer).register_forward_pre_hook(lambda m, a: (fn(a[0]), *a[1:]))
    try:
        return _logits(f, hf, ids)
    finally:
        h.remove()


# ---- sites ------------------------------------------------------------------------------------


def test_site_list_is_complete(fam):
    f, hf, m = fam
    assert m.arch == f.arch
    got = set(m.sites())
    per_layer = [k for k in KIND_ORDER if k not in f.absent]
    for L in range(m.n_layers):
        for kind in per_layer:
            if kind in ("head", "q"):
                want = {f"{kind}.{L}.{h}" for h in range(m.n_heads)}
            elif kind in ("k", "v"):
                want = {f"{kind}.{L}.{g}" for g in range(m.n_kv_heads)}
            else:
                want = {f"{kind}.{L}"}
            assert want <= got, (kind, L, sorted(want - got))
        for kind in f.absent:
            assert not any(s.startswith(f"{kind}.{L}") for s in got), kind
        experts = {f"router.{L}", *(f"expert_out.{L}.{e}" for e in range(f.experts))}
        assert (experts <= got) if f.experts else not any(s.startswith("expert") for s in got)
    top = {"embed", "logits", *(() if "ln_final" in f.absent else ("ln_final",))}
    assert top <= got
    assert m.n_heads % m.n_kv_heads == 0


def test_cache_is_batch_pos_width_at_every_kind(fam, ids):
    f, hf, m = fam
    names = [n for n in m.sites() if not n.startswith(("head.", "q.", "k.", "v."))]
    names += ["head.0.1", "q.0.1", "k.0.0", "v.0.0"]
    out = m.run(ids, cache=names)
    for name in names:
        info = m.site_info(name)
        x = out.cache[name]
        assert x.shape[:2] == (N, SEQ) and x.dim() == 3, (name, x.shape)
        if info.width is not None:
            assert x.shape[-1] == info.width, name


def test_value_sites_are_the_cached_values(fam, ids):
    """v.L.G (a slice of the value projection, fused or not) is key/value head G's values as the
    model caches them (values carry no rotary embedding, so they compare directly)."""
    f, hf, m = fam
    if not f.causal:
        return
    names = [f"v.{L}.{g}" for L in range(m.n_layers) for g in range(m.n_kv_heads)]
    out = m.run(ids, cache=names, return_kv=True)
    assert out.kv is not None
    for L, (_, values) in enumerate(out.kv):
        per = values.shape[1] // m.n_kv_heads  # Falcon caches values repeated per query head
        for g in range(m.n_kv_heads):
            ref = values[:, g * per]  # [batch, pos, d_head]
            assert torch.allclose(out.cache[f"v.{L}.{g}"], ref, atol=1e-6), (L, g)


def test_fused_qkv_slices_match_falcons_own_split(fam, ids):
    f, hf, m = fam
    if f.arch != "falcon":
        return
    attn = hf.transformer.h[0].self_attention
    names = [f"q.0.{h}" for h in range(m.n_heads)]
    names += [f"{w}.0.{g}" for w in "kv" for g in range(m.n_kv_heads)]
    out = m.run(ids, cache=["module:transformer.h.0.self_attention.query_key_value", *names])
    q, k, v = attn._split_heads(out.cache["module:transformer.h.0.self_attention.query_key_value"])
    dh, r = m.d_head, m.n_heads // m.n_kv_heads
    q, k, v = (x.reshape(N, SEQ, -1, dh) for x in (q, k, v))
    for h in range(m.n_heads):
        assert torch.equal(out.cache[f"q.0.{h}"], q[:, :, h]), h
    for g in range(m.n_kv_heads):
        i = g * r if k.shape[2] == m.n_heads else g  # new architecture: keys broadcast per head
        assert torch.equal(out.cache[f"k.0.{g}"], k[:, :, i]), g
        assert torch.equal(out.cache[f"v.0.{g}"], v[:, :, i]), g


# ---- parity -----------------------------------------------------------------------------------


def test_parity_with_the_models_own_forward(fam, ids):
    f, hf, m = fam
    ref = _logits(f, hf, ids)
    out = m.run(ids, cache=["resid_pre.0", *(f"resid_post.{L}" for L in range(m.n_layers))])
    assert out.logits is not None
    assert torch.allclose(out.logits, ref, atol=1e-5)
    assert not hf._forward_hooks and not hf._forward_pre_hooks
    if not f.hf:
        return
    hidden = _forward(hf, ids, output_hidden_states=True).hidden_states
    assert torch.allclose(out.cache["resid_pre.0"], hidden[0], atol=1e-5)
    # the last entry is after the final norm on some architectures: compare the others
    for L in range(m.n_layers - 1):
        assert torch.allclose(out.cache[f"resid_post.{L}"], hidden[L + 1], atol=1e-5), L


def test_logits_site_is_the_models_output(fam, ids):
    f, hf, m = fam
    out = m.run(ids, cache=["logits"])
    assert torch.allclose(out.cache["logits"], out.logits)


def test_residual_stream_adds_up(fam, ids):
    """resid_post = resid_pre + attn_out + mlp_out on pre-norm families (post-LN BERT aside):
    attn_out / mlp_out are what is added to the residual stream (after Gemma's post-norms)."""
    f, hf, m = fam
    if f.path == PATH_REFUSED:
        return
    L = 1
    names = [f"resid_pre.{L}", f"attn_out.{L}", f"resid_post.{L}"]
    names += [] if "mlp_out" in f.absent else [f"mlp_out.{L}"]
    c = m.run(ids, cache=names).cache
    mlp = c.get(f"mlp_out.{L}", 0)
    total = c[f"resid_pre.{L}"] + c[f"attn_out.{L}"] + mlp
    assert torch.allclose(total, c[f"resid_post.{L}"], atol=1e-5)


# ---- ablation ---------------------------------------------------------------------------------


def test_zero_ablating_a_head_matches_a_plain_hook(fam, ids):
    f, hf, m = fam
    L, H, dh = 1, 2, m.d_head

    def zero(x):
        x = x.clone()
        x[..., H * dh : (H + 1) * dh] = 0
        return x

    ref = _hooked_logits(f, hf, ids, L, zero)
    out = m.run(ids, [fl.Zero(f"head.{L}.{H}")])
    assert torch.allclose(out.logits, ref, atol=1e-5)
    assert not torch.allclose(out.logits, m.run(ids).logits, atol=1e-4)


def test_sliding_window_is_exercised(fam, ids):
    """Rows with sliding-window layers use a window shorter than the test sequence: widening it
    changes the output (so resume and the key/value cache are tested on real windows)."""
    f, hf, m = fam
    if not f.sliding:
        assert not m.adapter._sliding or f.arch == "llama"
        return
    assert m.adapter._sliding
    narrow = m.run(ids).logits
    old = hf.config.sliding_window
    hf.config.sliding_window = 64
    try:
        wide = m.run(ids).logits
    finally:
        hf.config.sliding_window = old
    assert not torch.allclose(narrow, wide, atol=1e-4)


# ---- resume -----------------------------------------------------------------------------------


def test_resume_from_a_layer_equals_the_full_run(fam, ids):
    f, hf, m = fam
    names = [f"resid_pre.{L}" for L in range(m.n_layers)] + [f"resid_post.{m.n_layers - 1}"]
    full = m.run(ids, cache=names)
    for layer in range(m.n_layers + 1):
        out = m.run(ids, start_at=fl.Resume.from_run(full, layer, m))
        assert torch.allclose(out.logits, full.logits, atol=1e-5), layer
    if getattr(hf.config, "layer_types", None) is not None:
        assert len(hf.config.layer_types) == m.n_layers  # restored after each resumed run


def test_resume_from_a_position_equals_the_full_run(fam, ids):
    f, hf, m = fam
    if not f.causal:
        full = m.run(ids, cache=["resid_pre.1"])
        with pytest.raises(fl.errors.InputError, match="causal"):
            m.run(ids, start_at=fl.Resume(1, full.cache["resid_pre.1"][:, 4:], 4, kv=[]))
        return
    names = [f"resid_pre.{L}" for L in range(m.n_layers)]
    full = m.run(ids, cache=names, return_kv=True)
    assert full.kv is not None and len(full.kv) == m.n_layers
    assert all(k.shape[-2] == SEQ for k, _ in full.kv)  # every position, sliding layers too
    for layer in (0, 1, m.n_layers - 1):
        for offset in (1, 5, 8):
            r = fl.Resume.from_run(full, layer, m, offset=offset)
            out = m.run(ids, start_at=r)
            assert torch.allclose(out.logits, full.logits[:, offset:], atol=1e-5), (layer, offset)
    # decoding: the new positions from the embedding on, on top of the cached keys and values
    out = m.run(ids, start_at=fl.Resume.decode([(k[:, :, :6], v[:, :, :6]) for k, v in full.kv]))
    assert torch.allclose(out.logits, full.logits[:, 6:], atol=1e-5)


# ---- patching ---------------------------------------------------------------------------------


def _task(m):
    return fl.tasks.random_token_task(m, 4, 7, seed=1)


def _logit_diff(logits, task):
    r = torch.arange(task.n)
    last = logits[r, task.positions]
    return (last[r, task.answers[:, 0]] - last[r, task.answers[:, 1]]).numpy()


def test_patching_one_head_equals_a_hand_made_reference(fam):
    f, hf, m = fam
    task = _task(m)
    L, H, dh = 1, 1, m.d_head
    res = fl.patch(m, task, ["head.1.1", "mlp_out.0" if m.d_mlp else "attn_out.0"], n_boot=20)
    store = {}
    h = _o_proj(f, hf, L).register_forward_pre_hook(
        lambda mod, a: store.__setitem__("z", a[0][..., H * dh : (H + 1) * dh].clone())
    )
    try:
        _logits(f, hf, task.clean.ids)
    finally:
        h.remove()

    def write(x):
        x = x.clone()
        x[..., H * dh : (H + 1) * dh] = store["z"]
        return x

    ref = _logit_diff(_hooked_logits(f, hf, task.corrupt.ids, L, write), task)
    np.testing.assert_allclose(res.patched[0], ref, atol=1e-4, rtol=0)
    base = _logit_diff(_logits(f, hf, task.corrupt.ids), task)
    np.testing.assert_allclose(res.base, base, atol=1e-4, rtol=0)
    assert np.isfinite(res.effect).all()


def test_attribution_patching_runs(fam):
    f, hf, m = fam
    task = _task(m)
    sites = ["head.0.0", "head.1.3", "attn_out.1", *(["mlp_out.1"] if m.d_mlp else [])]
    res = fl.attribution_patch(m, task, sites, n_boot=20)
    assert res.patched.shape == (len(sites), task.n) and np.isfinite(res.patched).all()
    assert all(p.grad is None for p in hf.parameters())


def test_path_patching_runs_or_is_refused(fam):
    f, hf, m = fam
    task = _task(m)
    if f.path == PATH_YES:
        res = fl.path_patch(m, task, ["head.0.1", "head.1.0"], "logits", n_boot=20)
        assert res.patched.shape == (2, task.n) and np.isfinite(res.patched).all()
        # from a head of the last layer the only path to the output is the direct one
        last = m.n_layers - 1
        direct = fl.path_patch(m, task, [f"head.{last}.0"], "logits", n_boot=20)
        act = fl.patch(m, task, [f"head.{last}.0"], n_boot=20)
        if m.d_mlp and not TransformerGraph(m).parallel:
            return  # the last MLP reads the head: activation patching includes that path
        np.testing.assert_allclose(direct.patched, act.patched, atol=1e-5)
        return
    match = "post-attention norm" if f.path == PATH_BLOCKS else "LayerGraph"
    with pytest.raises(fl.errors.InputError, match=match):
        fl.path_patch(m, task, "head", "logits", n_boot=20)


# ---- scrubbing --------------------------------------------------------------------------------


def _scrub_data(n=12, s=6):
    ids = torch.randint(1, 97, (n, s), generator=torch.Generator().manual_seed(3))
    return sc.ScrubData(
        ids=ids, mask=torch.ones_like(ids), label=ids[:, -1], pos=torch.full((n,), s - 2)
    )


def test_scrubbing_every_path_reproduces_the_model(fam):
    f, hf, m = fam
    beh = sc.CrossEntropy("label", positions_column="pos")
    if f.path == PATH_REFUSED:
        with pytest.raises(fl.errors.InputError, match="LayerGraph"):
            TransformerGraph(m)
        return
    graph = (
        TransformerGraph(m, split_heads=False, split_qkv=False)
        if f.path == PATH_BLOCKS
        else TransformerGraph(m)
    )
    if f.path == PATH_BLOCKS:
        with pytest.raises(fl.errors.InputError, match="post-attention norm"):
            TransformerGraph(m)
    data = _scrub_data()
    h = sc.Hypothesis("every path exact")
    for s in graph.senders("logits", "in"):
        h.add(s.replace(".", "_"), sc.to(s, direct=True), sampler="exact")
    every = sc.scrub(m, data, h, behaviour=beh, graph=graph, n_boot=20)
    assert np.allclose(every.scrubbed, every.original, atol=1e-5)
    rnd = sc.scrub(m, data, sc.Hypothesis.random(), behaviour=beh, graph=graph, n_boot=20)
    assert not np.allclose(rnd.scrubbed, rnd.original, atol=1e-3)


@pytest.mark.parametrize(
    "cls, cfg_cls, extra, match",
    [
        ("OPTForCausalLM", "OPTConfig", {"do_layer_norm_before": False}, "after attention"),
        ("OPTForCausalLM", "OPTConfig", {"word_embed_proj_dim": 8}, "project_in"),
        ("GraniteForCausalLM", "GraniteConfig", {}, "multipliers"),
    ],
)
def test_families_without_exact_sites_are_refused_with_the_reason(cls, cfg_cls, extra, match):
    import transformers

    cfg = getattr(transformers, cfg_cls)(
        vocab_size=97, num_hidden_layers=1, num_attention_heads=2, hidden_size=16, **extra
    )
    with pytest.raises(fl.errors.InputError, match=match):
        fl.wrap(getattr(transformers, cls)(cfg))


# ---- the generated documentation -------------------------------------------------------------


def test_docs_models_md_is_generated_from_this_table():
    from tests.helpers.models_coverage import DOC

    assert DOC.read_text() == render(), "run: python -m tests.helpers.models_coverage"
    assert main(["models_coverage", "--check"]) == 0
    for f in FAMILIES:
        assert f.label in DOC.read_text()
    model_types = {f.key.split("-")[0] for f in FAMILIES}
    assert len(model_types) >= 14, sorted(model_types)


def test_post_norm_is_declared_only_where_outputs_are_normalised(fam):
    f, hf, m = fam
    assert bool(getattr(m.adapter, "post_norm", False)) == (f.path == PATH_BLOCKS)


def test_bidirectional_gemma3_is_not_causal(ids):
    """EmbeddingGemma-style Gemma 3 (use_bidirectional_attention): not causal, still exact."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    cfg = Gemma3TextConfig(
        vocab_size=97,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        hidden_size=32,
        head_dim=8,
        intermediate_size=64,
        sliding_window=4,
        use_bidirectional_attention=True,
    )
    hf = Gemma3ForCausalLM(cfg).eval()
    m = fl.wrap(hf)
    assert not m.is_causal
    with torch.no_grad():
        ref = hf(input_ids=ids).logits
    assert torch.allclose(m.run(ids).logits, ref, atol=1e-5)
    full = m.run(ids, cache=["resid_pre.1"])
    assert torch.allclose(
        m.run(ids, start_at=fl.Resume.from_run(full, 1, m)).logits, ref, atol=1e-5
    )


# ---- vision models (the second table) ---------------------------------------------------------


@pytest.fixture(scope="module", params=VISION, ids=[f.key for f in VISION])
def vis(request):
    f: VisionFamily = request.param
    hf = f.build()
    g = torch.Generator().manual_seed(5)
    clean = torch.randn(N, 3, f.size, f.size, generator=g)
    corrupt = torch.randn(N, 3, f.size, f.size, generator=g)
    return f, hf, fl.wrap(hf), clean, corrupt


def _vision_task(m, clean, corrupt):
    width = m.site_info("logits").width if "logits" in m.adapter.site_table else m.d_model
    answers = torch.tensor([[i % width, (i + 1) % width] for i in range(N)])
    return fl.Task.from_tensors(clean, corrupt, answers=answers)


def _hf_out(f: VisionFamily, hf, x):
    with torch.no_grad():
        out = hf(x, output_hidden_states=True)
    return getattr(out, f.logits).flatten(1), out.hidden_states


def test_vision_site_list_and_positions(vis):
    f, hf, m, clean, _ = vis
    assert m.arch == f.arch and not m.is_causal
    cache = m.run(clean, cache=m.sites()).cache
    if f.transformer:
        n_patches = (f.size // hf.config.patch_size) ** 2
        assert f.positions == "CLS + patches"
        for L in range(m.n_layers):
            for kind in KIND_ORDER:
                n = m.n_heads if kind in ("head", "q", "k", "v") else None
                names = [f"{kind}.{L}.{h}" for h in range(n)] if n else [f"{kind}.{L}"]
                for name in names:
                    assert cache[name].shape[:2] == (N, 1 + n_patches), name
        assert cache["embed"].shape[:2] == (N, n_patches)  # the patches, before the CLS token
    else:
        assert f.positions == "h * w (row-major)"
        cfg = hf.config
        want = {f"block.{s}.{b}" for s, d in enumerate(cfg.depths) for b in range(d)}
        assert want <= set(m.sites("block"))
        _, hidden = _hf_out(f, hf, clean)
        for s in range(len(cfg.depths)):
            h = hidden[s + 1]
            assert cache[f"stage.{s}"].shape == (N, h.shape[2] * h.shape[3], h.shape[1])


def test_vision_parity_with_the_models_own_forward(vis):
    f, hf, m, clean, _ = vis
    out, hidden = _hf_out(f, hf, clean)
    assert vision_capabilities(f)["HF parity"] == "yes"
    assert torch.allclose(m.run(clean).logits, out, atol=1e-5)
    if f.transformer:
        names = [f"resid_pre.{L}" for L in range(m.n_layers)]
        got = m.run(clean, cache=names).cache
        for L, name in enumerate(names):
            assert torch.allclose(got[name], hidden[L], atol=1e-5), name
    else:
        got = m.run(clean, cache=["embed", "stage.0", "stage.1"]).cache
        for i, name in enumerate(["embed", "stage.0", "stage.1"]):
            assert torch.allclose(got[name], hidden[i].flatten(2).transpose(1, 2), atol=1e-5)


def _vision_site(f: VisionFamily):
    return (
        ("head.1.0", "vit.layers.1.attention.o_proj")
        if f.arch == "vit"
        else (
            ("head.1.0", "encoder.layers.1.self_attn.out_proj")
            if f.arch == "clip_vision_model"
            else ("block.1.0", "resnet.encoder.stages.1.layers.0")
        )
    )


def test_vision_zero_ablation_matches_a_plain_hook(vis):
    f, hf, m, clean, _ = vis
    site, module = _vision_site(f)
    mod = hf.get_submodule(module)
    if f.transformer:  # head 0: the first d_head columns of the output projection's input
        dh = m.d_head

        def pre(_m, a):
            z = a[0].clone()
            z[..., :dh] = 0
            return (z,)

        h = mod.register_forward_pre_hook(pre)
    else:
        h = mod.register_forward_hook(lambda _m, _a, o: torch.zeros_like(o))
    try:
        ref, _ = _hf_out(f, hf, clean)
    finally:
        h.remove()
    got = m.run(clean, [fl.Zero(site)]).logits
    assert torch.allclose(got, ref, atol=1e-5)


def test_vision_resume_from_a_layer(vis):
    f, hf, m, clean, _ = vis
    if not f.transformer:
        assert vision_capabilities(f)["resume (layer)"].startswith("n/a")
        assert not m.adapter.supports_resume
        return
    full = m.run(clean, cache=["resid_pre.1"])
    resumed = m.run(clean, start_at=fl.Resume.from_run(full, 1, m))
    assert torch.allclose(resumed.logits, full.logits, atol=1e-5)


def test_vision_patching_equals_a_hand_made_reference(vis):
    f, hf, m, clean, corrupt = vis
    site, module = _vision_site(f)
    task = _vision_task(m, clean, corrupt)
    res = fl.patch(m, task, [site], n_boot=20)
    mod = hf.get_submodule(module)
    store = {}
    if f.transformer:
        dh = m.d_head
        h = mod.register_forward_pre_hook(lambda _m, a: store.__setitem__("z", a[0].clone()))
        _hf_out(f, hf, clean)
        h.remove()

        def put(_m, a):
            z = a[0].clone()
            z[..., :dh] = store["z"][..., :dh]
            return (z,)

        h = mod.register_forward_pre_hook(put)
    else:
        h = mod.register_forward_hook(lambda _m, _a, o: store.__setitem__("o", o.clone()))
        _hf_out(f, hf, clean)
        h.remove()
        h = mod.register_forward_hook(lambda _m, _a, o: store["o"])
    try:
        logits, _ = _hf_out(f, hf, corrupt)
    finally:
        h.remove()
    want = task.metric(logits, task.answers)
    np.testing.assert_allclose(res.patched[0], want.double().numpy(), atol=1e-5)


def test_vision_attribution_and_neurons(vis):
    f, hf, m, clean, corrupt = vis
    task = _vision_task(m, clean, corrupt)
    site, _ = _vision_site(f)
    res = fl.attribution_patch(m, task, [site], n_boot=20)
    assert res.patched.shape == (1, N) and np.isfinite(res.patched).all()
    assert all(p.grad is None for p in hf.parameters())
    reader = "resid_post.1" if f.transformer else "block.1.0"
    acts = fl.neurons.collect(m, clean, reader, pool="mean")
    cached = m.run(clean, cache=[reader]).cache[reader]
    assert torch.allclose(acts.values, cached.mean(1), atol=1e-6)  # pooled over positions
    if not f.transformer:
        from faithlens.neurons.dissect import collect_maps

        maps = collect_maps(m, clean, reader)
        assert maps.shape[:2] == (N, cached.shape[2]) and maps.dim() == 4
        assert torch.equal(maps.flatten(2).transpose(1, 2), cached)
        g = torch.Generator().manual_seed(0)
        masks = torch.rand(N, 2, f.size, f.size, generator=g) > 0.6
        d = fl.neurons.dissect(reader, masks, model=m, inputs=clean, n_boot=20)
        assert len(d.to_frame()) == cached.shape[2]  # one row per channel


def test_vision_path_patching_and_scrubbing_refuse_a_tensor_task(vis):
    f, hf, m, clean, corrupt = vis
    task = _vision_task(m, clean, corrupt)
    caps = vision_capabilities(f)
    assert caps["path patching"] == "refused (tensor task)"
    with pytest.raises(fl.errors.InputError, match="built from tensors"):
        fl.path_patch(m, task, "head", "logits", n_boot=20)
    assert caps["scrubbing"].startswith("refused")
    why = "TransformerGraph feeds token ids" if f.transformer else "one tensor per forward arg"
    with pytest.raises(fl.errors.InputError, match=why):
        sc.scrub(m, task, sc.Hypothesis.random(), n_boot=20)
    with pytest.raises(fl.errors.InputError, match="built from tensors"):
        fl.circuits.eap(m, task, n_boot=20)


def test_docs_models_md_lists_the_vision_rows():
    from tests.helpers.models_coverage import DOC

    text = DOC.read_text()
    for f in VISION:
        assert f.label in text and f"`{f.arch}`" in text


def test_vision_residual_stream_adds_up(vis):
    f, hf, m, clean, _ = vis
    if not f.transformer:  # a ResNet block's output is relu(x + f(x)): no additive components
        assert not m.sites("attn_out") and not m.sites("mlp_out")
        return
    L = m.n_layers - 1
    names = [f"{k}.{L}" for k in ("resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post")]
    heads = [f"head.{L}.{h}" for h in range(m.n_heads)]
    c = m.run(clean, cache=[*names, *heads]).cache
    mid = c[f"resid_pre.{L}"] + c[f"attn_out.{L}"]
    assert torch.allclose(c[f"resid_mid.{L}"], mid, atol=1e-5)
    assert torch.allclose(c[f"resid_post.{L}"], mid + c[f"mlp_out.{L}"], atol=1e-5)
    w, b = m.adapter.o_proj(L)
    z = torch.cat([c[h] for h in heads], -1)
    per_head = m.adapter.head_outputs(L, z).sum(-2) + (b if b is not None else 0)
    assert torch.allclose(per_head, c[f"attn_out.{L}"], atol=1e-5)
