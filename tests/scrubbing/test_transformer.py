"""Causal scrubbing on transformers: the residual stream as a sum of components, per head, per
position and per Q/K/V input, on tiny random-config Hugging Face models of each architecture.

The engine (memoised copies, base-subtraction assembly, batched runs per layer, Q/K/V packing
under grouped-query attention) is compared with an independent implementation that enumerates
every path of the treeified model, and with hand-written hook code for position splits.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import faithlens as fl
from faithlens import scrubbing as sc
from faithlens.graph import TransformerGraph
from faithlens.scrubbing.evaluate import TableFeed, prepare
from tests.helpers.scrub_reference import naive_scrub, path_reference

N, S = 24, 6


def _data(vocab, n=N, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (n, S), generator=g)
    return sc.ScrubData(
        ids=ids,
        mask=torch.ones_like(ids),
        label=ids[:, -1],
        pos=torch.full((n,), S - 2),
        first=ids[:, 0],
        second=ids[:, 1],
    )


BEH = sc.CrossEntropy("label", positions_column="pos")


def first(d):
    return d["first"] % 3


def second(d):
    return d["second"] % 2


def _tiny(arch):
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        GPTNeoXConfig,
        GPTNeoXForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
    )

    torch.manual_seed(5)
    if arch == "llama":
        cfg = LlamaConfig(
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            hidden_size=16,
            intermediate_size=32,
            vocab_size=13,
        )
        return LlamaForCausalLM(cfg).eval()
    if arch == "gpt2":
        cfg = GPT2Config(n_layer=2, n_head=2, n_embd=16, vocab_size=13, n_positions=16)
        return GPT2LMHeadModel(cfg).eval()
    cfg = GPTNeoXConfig(
        num_hidden_layers=2,
        num_attention_heads=2,
        hidden_size=16,
        intermediate_size=32,
        vocab_size=13,
        rotary_pct=0.5,
    )
    return GPTNeoXForCausalLM(cfg).eval()


def test_identity_nothing_random_and_every_path(tiny_causal):
    arch, hf = tiny_causal
    m = fl.wrap(hf)
    data = _data(97)
    ident = sc.scrub(m, data, sc.Hypothesis.identity(), behaviour=BEH, n_boot=100)
    assert np.array_equal(ident.scrubbed, ident.original)
    assert ident.kl.max() < 1e-10
    # every path the model's own: each direct component carries the reference
    h = sc.Hypothesis("every path exact")
    for s in TransformerGraph(m).senders("logits", "in"):
        h.add(s.replace(".", "_"), sc.to(s, direct=True), sampler="exact")
    every = sc.scrub(m, data, h, behaviour=BEH, n_boot=100)
    assert np.allclose(every.scrubbed, every.original, atol=1e-5)
    # the root drawn at random: the model on an unrelated input, which is the baseline
    rnd = sc.scrub(m, data, sc.Hypothesis.random(), behaviour=BEH, n_boot=100)
    assert np.array_equal(rnd.scrubbed, rnd.baseline("random"))
    # claiming nothing: every path gets the root's one random datum
    prep = prepare(m, sc.Hypothesis.nothing(), data, behaviour=BEH, baselines=())
    other = next(i for i, lab in enumerate(prep.data.labels) if "unimportant" in lab[0])
    rows = prep.table.data.take(prep.data.vectors[other])
    direct = m.run(fl.Inputs(ids=rows["ids"], mask=rows["mask"]), logits_at=data["pos"]).logits
    nothing = sc.scrub(m, data, sc.Hypothesis.nothing(), behaviour=BEH, n_boot=100)
    assert np.allclose(nothing.scrubbed, BEH(direct, data).numpy(), atol=1e-5)


def _hypotheses():
    out = []
    h = sc.Hypothesis("direct head")
    h.add("h10", sc.to("head.1.0", direct=True), feature=first)
    out.append(h)
    h = sc.Hypothesis("q/k/v, exclusions, mlp paths")
    a = h.add("h11", sc.to("head.1.1", direct=True), feature=second)
    a.add("v_embed", sc.to("embed", port="v", direct=True), feature=first)
    a.add("k_h00", sc.to("head.0.0", port="k"), sampler="exact")
    b = h.add("m1", sc.to("mlp.1", direct=True), feature=first)
    b.add("x", sc.to("embed", excluding=["head.0.1"]), feature=second)
    out.append(h)
    h = sc.Hypothesis("gqa: two heads of one kv group, different keys", unimportant="global")
    a = h.add("h10", sc.to("head.1.0", direct=True), feature=first)
    a.add("k0", sc.to("head.0.1", port="k", direct=True), sampler="random")
    b = h.add("h11", sc.to("head.1.1", direct=True), feature=second)
    b.add("k1", sc.to("mlp.0", port="k"), feature=first)
    out.append(h)
    h = sc.Hypothesis("input point, union, through")
    c = h.add("q11", sc.to("head.1.1", direct=True).input(port="q"), feature=first)
    c.add("e", sc.to("mlp.0"), feature=second)
    h.add("both", sc.to("head.0.0", direct=True) | sc.to("head.0.1", direct=True), feature=second)
    h.add("via", sc.to("embed", through=["mlp.1"]), sampler="random")
    out.append(h)
    # an interpretation DAG: one node under two parents is treeified (copied per parent)
    h = sc.Hypothesis("dag")
    shared = sc.InterpNode("shared", sc.to("embed", direct=True), feature=second)
    h.add("h10", sc.to("head.1.0", direct=True), feature=first).add(shared)
    h.add("m0", sc.to("mlp.0", direct=True), feature=first).add(shared)
    out.append(h)
    return out


CASES = [("llama", k) for k in range(5)] + [
    ("gpt2", 1),
    ("gpt2", 3),
    ("gpt_neox", 1),
    ("gpt_neox", 2),
]


@pytest.fixture(scope="module")
def tiny2():
    return {arch: fl.wrap(_tiny(arch)) for arch in ("llama", "gpt2", "gpt_neox")}


@pytest.mark.parametrize("arch, k", CASES)
def test_engine_matches_path_enumeration(tiny2, arch, k):
    m = tiny2[arch]
    h = _hypotheses()[k]
    data = _data(13)
    prep = prepare(m, h, data, n=5, behaviour=BEH, baselines=(), seed=k)
    feed = TableFeed(prep.table, prep.data, prep.graph.input_fields(), m.device)
    rows = torch.arange(5)
    fast = prep.graph.evaluate(
        prep.plan, feed, rows, out_positions=BEH.positions(prep.table.data.take(prep.ref))
    )[1]
    ref = path_reference(prep, range(5))[0]
    assert torch.allclose(fast, ref, atol=1e-5), float((fast - ref).abs().max())
    if k == 1 and arch == "llama":
        assert prep.plan.copies, "expected mixed copies"
        naive = naive_scrub(prep, [0])[0]
        assert torch.allclose(fast[:1], naive, atol=1e-5)


def test_treeification_copies_dag_nodes():
    h = _hypotheses()[4]
    t = h.treeify()
    assert t.copied == ("shared",)
    assert {n.id for n in t.nodes.values() if n.name == "shared"} == {
        "root/h10/shared",
        "root/m0/shared",
    }
    assert "treeified: copied ['shared']" in h.describe()


def _manual_head(m, layer, head, hidden, ids):
    """Head ``head`` of ``layer`` on an explicit layer input, with plain hooks (no faithlens)."""
    hf = m.module
    store = {}
    layers = hf.model.layers
    o_proj = layers[layer].self_attn.o_proj
    h1 = layers[layer].register_forward_pre_hook(
        lambda mod, args, kw: ((hidden, *args[1:]), kw), with_kwargs=True
    )
    h2 = o_proj.register_forward_pre_hook(lambda mod, a: store.__setitem__("z", a[0].clone()))
    try:
        with torch.no_grad():
            hf(input_ids=ids)
    finally:
        h1.remove()
        h2.remove()
    dh = m.d_head
    z = store["z"][..., head * dh : (head + 1) * dh]
    return z @ o_proj.weight[:, head * dh : (head + 1) * dh].T


def _manual_output(m, resid, ids, pos):
    hf = m.module
    with torch.no_grad():
        x = hf.model.norm(resid)
        logits = hf.lm_head(x)
    return logits[torch.arange(len(ids)), pos][:, None]


def _cache(m, ids, sites):
    return m.run(fl.Inputs(ids=ids, mask=torch.ones_like(ids)), cache=sites).cache


def test_position_splits_match_hand_written_hooks():
    m = fl.wrap(_tiny("llama"))
    data = _data(13)
    # the root's unimportant inputs are random; head 1.0's direct contribution at the last
    # position only comes from the reference; its input at position 1 only from a random datum
    h = sc.Hypothesis("positions")
    a = h.add(
        "h10_last",
        sc.to("head.1.0", direct=True, positions=[S - 1]),
        sampler="exact",
        other="exact",
    )
    a.add("in1", sc.input_of(positions=[1]), sampler="random")
    beh = sc.CrossEntropy("label", positions_column=None)
    prep = prepare(m, h, data, n=8, behaviour=beh, baselines=(), seed=3)
    feed = TableFeed(prep.table, prep.data, prep.graph.input_fields(), m.device)
    fast = prep.graph.evaluate(prep.plan, feed, torch.arange(8))[1]
    lab = {lab[0].split(":")[-1]: i for i, lab in enumerate(prep.data.labels)}
    ref_ids = data.take(prep.ref)["ids"]
    other_ids = data.take(prep.data.vectors[lab["unimportant(root)"]])["ids"]
    in1_ids = data.take(prep.data.vectors[lab["in1"]])["ids"]
    c_ref = _cache(m, ref_ids, ["resid_pre.1"])
    c_in1 = _cache(m, in1_ids, ["resid_pre.1"])
    c_oth = _cache(m, other_ids, ["resid_post.1", "head.1.0"])
    x = c_ref["resid_pre.1"].clone()
    x[:, 1] = c_in1["resid_pre.1"][:, 1]
    h10_mixed = _manual_head(m, 1, 0, x, ref_ids)
    dh = m.d_head
    w = m.module.model.layers[1].self_attn.o_proj.weight
    h10_other = c_oth["head.1.0"] @ w[:, :dh].T
    resid = c_oth["resid_post.1"].clone()
    resid[:, S - 1] += h10_mixed[:, S - 1] - h10_other[:, S - 1]
    want = _manual_output(m, resid, ref_ids, torch.full((8,), S - 1))
    assert torch.allclose(fast[:, -1:], want, atol=1e-5)
    assert not torch.allclose(
        fast[:, -1:], _manual_output(m, c_oth["resid_post.1"], ref_ids, torch.full((8,), S - 1))
    )


def test_fallback_without_resume_support(monkeypatch):
    m = fl.wrap(_tiny("llama"))
    data = _data(13)
    h = _hypotheses()[1]
    a = sc.scrub(m, data, h, n=6, behaviour=BEH, baselines=(), n_boot=50)
    monkeypatch.setattr(type(m.adapter), "supports_resume", property(lambda self: False))
    b = sc.scrub(m, data, h, n=6, behaviour=BEH, baselines=(), n_boot=50)
    assert np.allclose(a.scrubbed, b.scrubbed, atol=1e-5)


def test_positions_from_a_data_column_equal_fixed_positions():
    m = fl.wrap(_tiny("llama"))
    data = _data(13)
    out = []
    for pos in ([S - 2], "pos"):  # the "pos" column is S - 2 for every example
        h = sc.Hypothesis("positions")
        h.add("a", sc.to("head.1.0", direct=True, positions=pos), sampler="exact")
        out.append(sc.scrub(m, data, h, n=10, behaviour=BEH, baselines=(), n_boot=50).scrubbed)
    assert np.allclose(out[0], out[1])


def test_a_child_on_its_parents_input_edge_is_sampled_from_that_parent():
    """``input_of(positions=[1])`` hands its edges to its children: a child that claims the
    embeddings on that very edge moves the owner two levels down at once. Its datum must still
    be drawn relative to its own parent (the input node), not to the grandparent."""
    m = fl.wrap(_tiny("llama"))
    data = _data(13, n=60)
    h = sc.Hypothesis("nested input")
    a = h.add("head", sc.to("head.1.0", direct=True), sampler="exact")
    b = a.add("in1", sc.input_of(positions=[1]), sampler="random")
    b.add("emb", sc.to("embed", direct=True), feature=first)
    prep = prepare(m, h, data, n=40, behaviour=BEH, baselines=(), seed=1)
    vec = {lab[0].split(":")[-1]: prep.data.vectors[i] for i, lab in enumerate(prep.data.labels)}
    feat = first(data).numpy()
    # emb agrees with in1 (its parent) on the feature, for every example ...
    assert np.array_equal(feat[vec["emb"]], feat[vec["in1"]])
    # ... and not merely with the reference (the grandparent's datum)
    assert not np.array_equal(feat[vec["emb"]], feat[prep.ref])
    names = list(prep.sampled.diagnostics[i]["node"] for i in range(len(prep.sampled.diagnostics)))
    assert names.index("in1") < names.index("emb")
