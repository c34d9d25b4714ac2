"""Extensionally equal rewrites: each is checked numerically before use, and a wrong one is an
error; correct ones leave the model unchanged when every part keeps the reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import faithlens as fl
from faithlens import scrubbing as sc
from faithlens.graph import LayerGraph, LinearPart, TransformerGraph
from faithlens.scrubbing.rewrites import SplitNode
from tests.helpers.scrub_toys import Op

S = 5


@pytest.fixture(scope="module")
def llama():
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
    ids = torch.randint(0, 13, (60, S), generator=g)
    data = sc.ScrubData(
        ids=ids,
        mask=torch.ones_like(ids),
        label=ids[:, -1],
        pos=torch.full((60,), S - 1),
        tok=ids[:, 0],
    )
    return m, data


BEH = sc.CrossEntropy("label", positions_column="pos")


def run(m, h, data, **kw):
    return sc.scrub(m, data, h, n=20, behaviour=BEH, baselines=(), n_boot=50, **kw)


def test_projection_of_a_head(llama):
    m, data = llama
    v = torch.randn(16, 2)
    both = sc.Hypothesis("both parts exact", other="exact", rewrites=[sc.project("head.1.0", v)])
    both.add("p", sc.to("head.1.0/proj", direct=True), sampler="exact")
    both.add("o", sc.to("head.1.0/orth", direct=True), sampler="exact")
    r = run(m, both, data)
    assert np.allclose(r.scrubbed, r.original, atol=1e-5)
    assert (
        "project: head.1.0 = head.1.0/proj[onto 2-d subspace] + head.1.0/orth"
        in r.stats["rewrites"][0]
    )
    only = sc.Hypothesis("only the subspace", other="exact", rewrites=[sc.project("head.1.0", v)])
    only.add("o", sc.to("head.1.0/orth", direct=True), sampler="random")
    assert not np.allclose(run(m, only, data).scrubbed, r.original, atol=1e-4)
    full = sc.Hypothesis("full space", rewrites=[sc.project("head.1.0", torch.eye(16))])
    full.add("p", sc.to("head.1.0/proj", direct=True), sampler="exact")
    full.add("h", sc.to("head.1.0/orth", direct=True), sampler="random")
    exact_head = sc.Hypothesis("head exact")
    exact_head.add("h", sc.to("head.1.0", direct=True), sampler="exact")
    assert np.allclose(run(m, full, data).scrubbed, run(m, exact_head, data).scrubbed, atol=1e-4)
    bad = sc.Hypothesis("bad width", rewrites=[sc.project("head.1.0", torch.randn(7, 1))])
    with pytest.raises(fl.ShapeError, match="basis has 7 rows"):
        run(m, bad, data)


def test_phi_plus_residual_on_a_transformer_mlp(llama):
    m, data = llama

    def phi0(rows):  # a crude guess at mlp.0's output: a fixed vector times the first token
        return (rows["ids"][:, :, None].float() * 0.01).expand(-1, -1, 16)

    h = sc.Hypothesis("phi exact, residual exact", other="exact", rewrites=[sc.phi("mlp.0", phi0)])
    h.add("phi", sc.to("mlp.0/phi", direct=True), sampler="exact")
    h.add("res", sc.to("mlp.0/res", direct=True), sampler="exact")
    r = run(m, h, data)
    assert np.allclose(r.scrubbed, r.original, atol=1e-5)
    # phi conditioned, residual resampled: phi(x_cond) + [mlp(x_rand) - phi(x_rand)]
    h2 = sc.Hypothesis("phi only", rewrites=[sc.phi("mlp.0", phi0)])
    h2.add("phi", sc.to("mlp.0/phi", direct=True), feature=lambda d: d["tok"])
    assert np.isfinite(run(m, h2, data).expectation)
    bad = sc.Hypothesis("bad phi", rewrites=[sc.phi("mlp.0", lambda rows: torch.zeros(3))])
    with pytest.raises(fl.ShapeError, match=r"phi function returned shape \(3,\)"):
        run(m, bad, data)


def test_split_sum_and_positions(llama):
    m, data = llama
    h = sc.Hypothesis("shares", other="exact", rewrites=[sc.split_sum("mlp.1", (0.25, 0.75))])
    h.add("a", sc.to("mlp.1/part0", direct=True), sampler="exact")
    h.add("b", sc.to("mlp.1/part1", direct=True), sampler="exact")
    r = run(m, h, data)
    assert np.allclose(r.scrubbed, r.original, atol=1e-5)
    wrong = sc.Hypothesis("shares", rewrites=[sc.split_sum("mlp.1", (0.5, 0.6))])
    with pytest.raises(fl.InputError, match="not extensionally equal"):
        run(m, wrong, data)
    pos = sc.Hypothesis(
        "positions", other="exact", rewrites=[sc.split_positions("head.0.1", [1, 3])]
    )
    pos.add("a", sc.to("head.0.1/at"), sampler="exact")
    pos.add("b", sc.to("head.0.1/rest"), sampler="exact")
    assert np.allclose(run(m, pos, data).scrubbed, r.original, atol=1e-5)


def test_a_wrong_rewrite_is_rejected(llama):
    m, data = llama
    lie = SplitNode("mlp.0", {"a": LinearPart(lambda x: x), "b": LinearPart(lambda x: 0.1 * x)})
    with pytest.raises(fl.InputError, match="not extensionally equal"):
        run(m, sc.Hypothesis("lie", rewrites=[lie]), data)


def test_split_heads_and_qkv(llama):
    m, data = llama
    coarse = TransformerGraph(m, split_heads=False, split_qkv=False)
    h = sc.Hypothesis("per head", rewrites=[sc.split_qkv()])
    h.add("q", sc.to("head.1.0", direct=True).input(port="q"), sampler="random")
    fine = sc.scrub(m, data, h, n=20, behaviour=BEH, baselines=(), graph=coarse, n_boot=50)
    assert fine.stats["rewrites"] == ["split_qkv"]
    plain = sc.Hypothesis("per head, default graph")
    plain.add("q", sc.to("head.1.0", direct=True).input(port="q"), sampler="random")
    direct = sc.scrub(m, data, plain, n=20, behaviour=BEH, baselines=(), n_boot=50)
    assert np.allclose(fine.scrubbed, direct.scrubbed, atol=1e-5)
    heads = sc.Hypothesis("heads", rewrites=[sc.split_heads()])
    heads.add("h", sc.to("head.0.1", direct=True), sampler="random")
    assert np.isfinite(
        sc.scrub(
            m, data, heads, n=10, behaviour=BEH, baselines=(), graph=coarse, n_boot=50
        ).expectation
    )
    with pytest.raises(fl.InputError, match="applies to a TransformerGraph"):
        sc.split_qkv().apply(LayerGraph.trace(fl.wrap(torch.nn.Sequential(torch.nn.Linear(2, 2)))))


def test_phi_on_a_layer_graph():
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.h = Op(lambda x: x**2 + 0.1 * x)
            self.out = Op(lambda h: 2 * h)

        def forward(self, x):
            return self.out(self.h(x))

    x = torch.randn(400, 1)
    data = sc.ScrubData(x=x, y=2 * x**2)
    m = fl.wrap(M())
    h = sc.Hypothesis("h is x^2", rewrites=[sc.phi("h", lambda rows: rows["x"] ** 2)])
    h.add("sq", sc.to("h/phi"), feature=lambda d: d["x"][:, 0].abs())
    r = sc.scrub(m, data, h, behaviour=sc.MSE("y"), n_boot=100)
    # the residual 0.1 x is resampled: error 0.2 x_rand instead of 0.2 x; same law
    assert r.expectation == pytest.approx(r.original_expectation, abs=4 * r.se + 4e-3)
    assert r.recovered() > 95
