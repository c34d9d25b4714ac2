"""The join of hypotheses (appendix 8), checked on exact laws (no sampling noise)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import faithlens as fl
from faithlens import scrubbing as sc
from faithlens.graph import LayerGraph
from faithlens.scrubbing.enumeration import exact_scrub
from tests.helpers.scrub_toys import Op

DOMAIN = [(a, b) for a in range(4) for b in range(4)]


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.A = Op(lambda x: x[:, :1])
        self.B = Op(lambda x: x[:, 1:])
        self.C = Op(lambda a, b: a + b)

    def forward(self, x):
        return self.C(self.A(x), self.B(x))


@pytest.fixture(scope="module")
def setup():
    data = sc.ScrubData(x=torch.tensor(DOMAIN, dtype=torch.float32))
    probs = np.random.default_rng(0).dirichlet(np.ones(16))
    return LayerGraph.trace(fl.wrap(Net())), data, probs


def f_hi(d):
    return (d["x"][:, 0] > 1).long()


def f_odd(d):
    return (d["x"][:, 0] % 2).long()


def f_b(d):
    return (d["x"][:, 1] > 0).long()


def slot_law(h, setup):
    """The exact law of (reference, datum on the A path, datum on the B path)."""
    graph, data, probs = setup
    ex = exact_scrub(h, graph, data, probs)
    slots = {tuple(e[0] for e in path): v for path, v in ex.slots}
    va, vb = slots[("C", "A")], slots[("C", "B")]
    order = sorted({0, va, vb})
    law = np.zeros((16, 16, 16))
    for idx, p in np.ndenumerate(ex.marginal(order)):
        val = dict(zip(order, idx))
        law[val[0], val[va], val[vb]] += p
    return law, (va, vb, ex)


def test_join_at_the_same_point_conjoins_the_features(setup):
    h1 = sc.Hypothesis("hi")
    h1.add("A", sc.to("A"), feature=f_hi)
    h2 = sc.Hypothesis("odd")
    h2.add("A", sc.to("A"), feature=f_odd)
    both = sc.Hypothesis("hi and odd")
    both.add("A", sc.to("A"), feature=[f_hi, f_odd])
    law_join, _ = slot_law(sc.join(h1, h2), setup)
    law_both, _ = slot_law(both, setup)
    assert np.allclose(law_join, law_both, atol=1e-12)
    # and the join is more specific than either: every swap it makes, both permit
    for r, a, _b in zip(*np.nonzero(law_join)):
        assert (DOMAIN[a][0] > 1) == (DOMAIN[r][0] > 1)
        assert DOMAIN[a][0] % 2 == DOMAIN[r][0] % 2


def test_a_node_inside_a_leaf_is_absorbed(setup):
    outer = sc.Hypothesis("A leaf: hi")
    outer.add("A", sc.to("A"), feature=f_hi)
    inner = sc.Hypothesis("A open, its input odd")
    a = inner.add("A", sc.to("A"), sampler="random")
    a.add("X", sc.to("x"), feature=f_odd)
    ref = sc.Hypothesis("A: hi (leaf absorbs the input node; its datum is conditioned on A's)")
    ref.add("A", sc.to("A"), feature=f_hi)
    law_join, _ = slot_law(sc.join(outer, inner), setup)
    assert np.allclose(law_join, slot_law(ref, setup)[0], atol=1e-12)


def test_unimportant_inputs_sampled_together_if_either_does(setup):
    apart = sc.Hypothesis.nothing("apart", unimportant="per_input")
    together = sc.Hypothesis.nothing("together", unimportant="per_node")
    _, (va, vb, _) = slot_law(apart, setup)
    assert va != vb
    _, (va, vb, _) = slot_law(sc.join(apart, together), setup)
    assert va == vb


class Chain(torch.nn.Module):
    """x -> B -> A -> C (the output): every path to x goes through A, then B."""

    def __init__(self):
        super().__init__()
        self.B = Op(lambda x: x)
        self.A = Op(lambda b: b)
        self.C = Op(lambda a: a)

    def forward(self, x):
        return self.C(self.A(self.B(x)))


def test_agreement_is_transitive_through_an_inserted_node(setup):
    _, data, probs = setup
    graph = LayerGraph.trace(fl.wrap(Chain()))
    h1 = sc.Hypothesis("B agrees on hi")
    h1.add("B", sc.to("B"), feature=f_hi)
    h2 = sc.Hypothesis("A agrees on b, its inputs unimportant")
    h2.add("A", sc.to("A"), feature=f_b, leaf=False)
    ex = exact_scrub(sc.join(h1, h2), graph, data, probs)
    ((path, v),) = ex.slots
    assert [e[0] for e in path] == ["C", "A", "B"]
    law = ex.marginal([0, v])
    for r, s_row in zip(*np.nonzero(law)):
        # B's datum agrees with its original parent (the root) on hi, through the inserted A
        assert (DOMAIN[s_row][0] > 1) == (DOMAIN[r][0] > 1)
    # A's datum also keeps h2's claim, and carries B's feature too (transitivity)
    va = ex.variable("root ^ A")
    for r, a_row in zip(*np.nonzero(ex.marginal([0, va]))):
        assert (DOMAIN[a_row][1] > 0) == (DOMAIN[r][1] > 0)
        assert (DOMAIN[a_row][0] > 1) == (DOMAIN[r][0] > 1)


def test_join_refuses_generalised_samplers(setup):
    graph, data, probs = setup
    h1 = sc.Hypothesis("kernel")
    h1.add("A", sc.to("A"), sampler=sc.Kernel(lambda d: d["x"][:, 0], 1.0))
    h2 = sc.Hypothesis("feature")
    h2.add("A", sc.to("A"), feature=f_hi)
    with pytest.raises(fl.InputError, match="not uniquely defined"):
        sc.scrub(fl.wrap(Net()), data, sc.join(h1, h2), behaviour=sc.MSE("x"), graph=graph)
