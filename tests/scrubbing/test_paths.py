"""Hypothesis validation: every bad hypothesis gives a clear error that names the bad node, and it
does so before any forward pass of the experiment. Plus the printed choices and the dry run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import faithlens as fl
from faithlens import scrubbing as sc
from faithlens.graph import LayerGraph, TransformerGraph

S = 5


@pytest.fixture(scope="module")
def setup():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        hidden_size=16,
        intermediate_size=32,
        vocab_size=13,
    )
    m = fl.wrap(LlamaForCausalLM(cfg).eval())
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 13, (40, S), generator=g)
    data = sc.ScrubData(
        ids=ids,
        mask=torch.ones_like(ids),
        label=ids[:, -1],
        pos=torch.full((40,), S - 1),
        tok=ids[:, 0],
        uid=torch.arange(40),
    )
    return m, TransformerGraph(m), data


class Counter:
    def __init__(self, module):
        self.calls = 0
        self.h = module.register_forward_pre_hook(self)

    def __call__(self, *a):
        self.calls += 1


def fails(setup, h, match, exc=fl.FaithlensError, **kw):
    m, g, data = setup
    c = Counter(m.module)
    try:
        with pytest.raises(exc, match=match) as info:
            sc.scrub(m, data, h, n=8, behaviour=sc.CrossEntropy("label", "pos"), graph=g, **kw)
    finally:
        c.h.remove()
    assert c.calls == 0, "the error must come before any forward pass"
    return str(info.value)


def tok(d):
    return d["tok"] % 2


def test_path_set_matching_nothing_names_the_node(setup):
    h = sc.Hypothesis("bad")
    a = h.add("h00", sc.to("head.0.0", direct=True), feature=tok)
    a.add("late", sc.to("mlp.1"), feature=tok)
    msg = fails(setup, h, "node 'late'.*match nothing")
    assert "'mlp.1' is not upstream of 'head.0.0'" in msg
    h = sc.Hypothesis("bad direct")
    h.add("m0", sc.to("mlp.0", direct=True), feature=tok).add("h11", sc.to("head.1.1", direct=True))
    fails(setup, h, "node 'h11'.*match nothing")
    h = sc.Hypothesis("excluded")
    h.add("e", sc.to("embed", direct=True, port="q"), feature=tok)
    fails(setup, h, "node 'e'.*port 'q'")


def test_path_claimed_twice(setup):
    h = sc.Hypothesis("twice")
    h.add("a", sc.to("head.1.0", direct=True), feature=tok)
    h.add("b", sc.to("head.1.0"), feature=tok)
    fails(setup, h, r"claimed by \['a', 'b'\]")
    h = sc.Hypothesis("through a claimed node")
    h.add("a", sc.to("mlp.0", direct=True), feature=tok)
    h.add("b", sc.to("embed", through=["mlp.0"]), feature=tok)
    fails(setup, h, "node 'a' claims every path below.*'b'")


def test_unknown_names_ports_and_positions(setup):
    h = sc.Hypothesis("typo")
    h.add("a", sc.to("head.7.0", direct=True), feature=tok)
    msg = fails(setup, h, "node 'a'.*no node 'head.7.0'")
    assert "head.1.0" in msg  # nearest names
    h = sc.Hypothesis("bad port")
    h.add("a", sc.to("head.1.0").input(port="x"), feature=tok)
    fails(setup, h, "no port 'x'")
    h = sc.Hypothesis("bad position")
    h.add("a", sc.to("head.1.0", direct=True, positions=[S + 3]), feature=tok)
    fails(setup, h, "out of range", exc=fl.SiteError)


def test_structural_errors(setup):
    h = sc.Hypothesis("input with children")
    h.add("e", sc.to("embed"), feature=tok).add("x", sc.to("embed"), feature=tok)
    fails(setup, h, "node 'e'.*must be a leaf")
    with pytest.raises(fl.InputError, match="give a port or positions"):
        sc.input_of()
    a = sc.InterpNode("a", sc.to("head.1.0"))
    b = a.add("b", sc.to("embed"))
    b.add(a)
    h = sc.Hypothesis("cycle")
    h.add(a)
    fails(setup, h, "cycle: root -> a -> b -> a")
    h = sc.Hypothesis("duplicate names")
    h.add("x", sc.to("head.1.0", direct=True), feature=tok)
    h.add("x", sc.to("head.1.1", direct=True), feature=tok)
    fails(setup, h, "two different nodes are named 'x'")
    with pytest.raises(fl.InputError, match="without '/'"):
        sc.InterpNode("a/b")
    with pytest.raises(fl.InputError, match="needs paths"):
        sc.Hypothesis("x").add("a")
    with pytest.raises(fl.InputError, match="unimportant must be one of"):
        sc.Hypothesis("x", unimportant="sometimes")


def test_feature_errors_name_the_node(setup):
    def breaks(d):
        v = d["tok"]
        if (v == 3).any():
            raise ValueError("cannot handle token 3")
        return v

    h = sc.Hypothesis("breaks")
    h.add("a", sc.to("head.1.0", direct=True), feature=breaks)
    fails(setup, h, "node 'a'.*feature breaks failed.*cannot handle token 3")
    h = sc.Hypothesis("nan")
    h.add("a", sc.to("head.1.0", direct=True), feature=lambda d: d["tok"].float() / 0 * 0)
    fails(setup, h, "node 'a'.*NaN")
    h = sc.Hypothesis("wrong length")
    h.add("a", sc.to("head.1.0", direct=True), feature=lambda d: d["tok"][:3])
    fails(setup, h, "node 'a'.*3 values for 40 rows")


def test_equivalence_class_with_no_match(setup):
    h = sc.Hypothesis("injective feature")
    h.add("a", sc.to("head.1.0", direct=True), feature=lambda d: d["uid"], exclude_self=True)
    msg = fails(setup, h, "node 'a'.*no pool row other than the reference itself")
    assert "Generate" in msg
    # references given separately from the pool: a value the pool never has
    m, g, data = setup
    refs = data.take(np.arange(4))
    pool = sc.ScrubData({k: v[4:] for k, v in data.items()})
    h = sc.Hypothesis("no match")
    h.add("a", sc.to("head.1.0", direct=True), feature=lambda d: d["uid"])
    with pytest.raises(fl.InputError, match="no pool row matches"):
        sc.scrub(m, pool, h, references=refs, behaviour=sc.CrossEntropy("label", "pos"), graph=g)


def test_other_input_errors(setup):
    m, g, data = setup
    h = sc.Hypothesis("ok")
    with pytest.raises(fl.InputError, match="needs a behaviour"):
        sc.scrub(m, data, h, graph=g)
    bad = sc.ScrubData(tokens=data["ids"], label=data["label"])
    with pytest.raises(fl.InputError, match=r"no columns \['ids'\]"):
        sc.scrub(m, bad, h, behaviour=sc.CrossEntropy("label"), graph=g)
    with pytest.raises(fl.InputError, match="unknown baseline"):
        sc.scrub(m, data, h, behaviour=sc.CrossEntropy("label"), graph=g, baselines=["shuffle"])
    a = sc.Hypothesis("a", rewrites=[sc.split_sum("mlp.0")])
    with pytest.raises(fl.InputError, match="rewrite the model's graph differently"):
        sc.join(a, sc.Hypothesis("b"))


def test_positions_need_a_position_axis():
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.A = torch.nn.Linear(2, 2)

        def forward(self, x):
            return self.A(x)

    m = fl.wrap(M())
    data = sc.ScrubData(x=torch.randn(10, 2), y=torch.randn(10, 2))
    h = sc.Hypothesis("pos")
    h.add("a", sc.to("x", positions=[0]), sampler="random")
    with pytest.raises(fl.InputError, match="no position axis"):
        sc.scrub(m, data, h, behaviour=sc.MSE("y"), graph=LayerGraph.trace(m))


def test_description_prints_every_choice(setup):
    h = sc.Hypothesis("described", unimportant="per_input")
    a = h.add("a", sc.to("head.1.0", direct=True), feature=tok, group="g1")
    a.add("v", sc.to("embed", port="v", direct=True), sampler="random", unimportant="per_node")
    text = h.describe()
    for bit in (
        "per_input",
        "a separate random datum for each unimportant input edge",
        "SameFeature(tok)",
        "group=g1",
        "to('embed', port=v, direct)",
        "leaf: every path below gets this datum",
        "unimportant inputs: Random() (per_input)",
    ):
        assert bit in text, bit


def test_dry_run_shows_every_slot_without_running_the_model(setup):
    m, g, data = setup
    h = sc.Hypothesis("dry")
    a = h.add("a", sc.to("head.1.0", direct=True), feature=tok)
    a.add("v", sc.to("embed", port="v", direct=True), sampler="random")
    c = Counter(m.module)
    try:
        text = sc.dry_run(m, data, h, n=4, behaviour=sc.CrossEntropy("label", "pos"), graph=g)
    finally:
        c.h.remove()
    assert c.calls == 0
    assert "logits [mixed" in text and "head.1.0 [mixed" in text
    assert "v <- embed: embed [uniform d" in text
    assert "dry:a" in text and "dry:v" in text and "unimportant(root)" in text
    assert "example 0:" in text and "drew its own reference" in text
