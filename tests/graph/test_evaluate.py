"""ComponentGraph.evaluate (the treeified evaluator) against plain computation: hooked runs of
the model (faithlens' own patching of one site) and hand-written forward passes."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import faithlens as fl
from faithlens.graph import (
    EvalStats,
    Feed,
    LayerGraph,
    LinearPart,
    Mixed,
    MixedCopy,
    Plan,
    PositionAtom,
    PositionSet,
    TransformerGraph,
    Uniform,
)
from faithlens.models.sites import Site
from tests.helpers.builders import BUILDERS

N, S = 5, 7


class TableFeed:
    """A DataFeed over explicit per-datum tensors (every datum has N rows)."""

    def __init__(self, data: dict[int, dict[str, Tensor]]):
        self.data = data

    def fields(self, datum: int, rows: Tensor) -> dict[str, Tensor]:
        return {k: v[rows] for k, v in self.data[datum].items()}

    def rows(self, datum: int, rows: Tensor):
        return self.fields(datum, rows)


def _ids(seed: int, vocab: int = 97) -> Tensor:
    return torch.randint(1, vocab, (N, S), generator=torch.Generator().manual_seed(seed))


def _feed(*ids: Tensor) -> TableFeed:
    return TableFeed({d: {"ids": x, "mask": torch.ones_like(x)} for d, x in enumerate(ids)})


def _logits(m, ids, ivs=()):
    out = m.run(fl.Inputs(ids=ids, mask=torch.ones_like(ids)), list(ivs))
    return out.logits


def _cache(m, ids, sites):
    return m.run(fl.Inputs(ids=ids, mask=torch.ones_like(ids)), cache=sites).cache


def _root(g, feeds, base=0):
    """The root of a plan: a mixed copy of the output (copy id 0) on datum ``base`` with the given
    (sender, child, positions) feeds; returns the root and the copies (add others to them)."""
    top = Mixed(0, g.output)
    return top, {0: MixedCopy(top, base, tuple(Feed("in", s, c, p) for s, c, p in feeds))}


ROWS = torch.arange(N)
CLOSE = {"atol": 1e-5, "rtol": 1e-5}


@pytest.fixture(scope="module")
def attn_only():
    """The zoo's causal attention-only transformer (3 layers, 4 heads): a last-layer head's
    only receiver is the output."""
    return fl.wrap(BUILDERS["faithlens_zoo-attn_only"]())


@pytest.fixture(scope="module")
def llama():
    return fl.wrap(BUILDERS["llama"]())  # 3 layers, 6 heads in 2 key/value groups, MLPs


# ---- TransformerGraph ----------------------------------------------------------------------


def test_uniform_root_is_the_models_own_output(llama):
    g = TransformerGraph(llama)
    a, b = _ids(0), _ids(1)
    stats = EvalStats()
    got = g.evaluate(
        Plan([Uniform("logits", 0), Uniform("logits", 1)]), _feed(a, b), ROWS, stats=stats
    )
    assert torch.equal(got[0], _logits(llama, a)) and torch.equal(got[1], _logits(llama, b))
    assert (stats.clean_runs, stats.runs, stats.mixed_copies) == (2, 2, 0)
    assert stats.layer_rows == 2 * N * 3


def test_mixed_root_fed_by_its_own_datum_is_the_forward_pass(llama):
    g = TransformerGraph(llama)
    a = _ids(0)
    feeds = [(s, Uniform(s, 0), None) for s in g.senders("logits", "in")]
    top, copies = _root(g, feeds)
    got = g.evaluate(Plan([top], copies), _feed(a), ROWS)[0]
    assert torch.allclose(got, _logits(llama, a), **CLOSE)


def test_every_sender_from_another_datum_is_that_datums_output(llama):
    # resid(a) - sum senders(a) + sum senders(b) = resid(b): the constant biases cancel
    g = TransformerGraph(llama)
    a, b = _ids(0), _ids(1)
    top, copies = _root(g, [(s, Uniform(s, 1), None) for s in g.senders("logits", "in")])
    got = g.evaluate(Plan([top], copies), _feed(a, b), ROWS)[0]
    assert torch.allclose(got, _logits(llama, b), **CLOSE)
    assert not torch.allclose(got, _logits(llama, a), **CLOSE)


def test_feeding_the_last_mlp_from_another_input_equals_patching_it(llama):
    g = TransformerGraph(llama)
    a, b = _ids(0), _ids(1)
    top, copies = _root(g, [("mlp.2", Uniform("mlp.2", 1), None)])
    stats = EvalStats()
    got = g.evaluate(Plan([top], copies), _feed(a, b), ROWS, stats=stats)[0]
    src = _cache(llama, b, ["mlp_out.2"])["mlp_out.2"]
    want = _logits(llama, a, [fl.Patch("mlp_out.2", src)])
    assert torch.allclose(got, want, **CLOSE)
    assert not torch.allclose(got, _logits(llama, a), **CLOSE)
    assert stats.mixed_copies == 1 and stats.clean_runs == 2 and stats.runs == 3


def test_feeding_a_head_from_another_input_equals_patching_it(attn_only):
    g = TransformerGraph(attn_only)
    a, b = _ids(0), _ids(1)
    top, copies = _root(g, [("head.2.1", Uniform("head.2.1", 1), None)])
    got = g.evaluate(Plan([top], copies), _feed(a, b), ROWS)[0]
    src = _cache(attn_only, b, ["head.2.1"])["head.2.1"]
    want = _logits(attn_only, a, [fl.Patch("head.2.1", src)])
    assert torch.allclose(got, want, **CLOSE)
    assert not torch.allclose(got, _logits(attn_only, a), **CLOSE)


def test_a_head_whose_query_reads_another_input_equals_patching_its_query(attn_only):
    # head.2.1's q port reads every sender on datum 1, its k and v ports datum 0; the output
    # reads that copy of the head (and everything else on datum 0)
    g = TransformerGraph(attn_only)
    a, b = _ids(0), _ids(1)
    head = Mixed(1, "head.2.1")
    q_feeds = tuple(Feed("q", s, Uniform(s, 1)) for s in g.senders("head.2.1", "q"))
    top, copies = _root(g, [("head.2.1", head, None)])
    copies[1] = MixedCopy(head, 0, q_feeds)
    stats = EvalStats()
    got = g.evaluate(Plan([top], copies), _feed(a, b), ROWS, stats=stats)[0]
    src = _cache(attn_only, b, ["q.2.1"])["q.2.1"]
    want = _logits(attn_only, a, [fl.Patch("q.2.1", src)])
    assert torch.allclose(got, want, **CLOSE)
    # the split head takes a second run (q/k/v patched), then the output one
    assert stats.mixed_copies == 2 and stats.runs == stats.clean_runs + 3


def test_a_position_split_equals_patching_those_positions(attn_only):
    g = TransformerGraph(attn_only)
    a, b = _ids(0), _ids(1)
    at = PositionAtom(frozenset({PositionSet.of([2, -1])}))
    top, copies = _root(g, [("head.2.3", Uniform("head.2.3", 1), at)])
    got = g.evaluate(Plan([top], copies), _feed(a, b), ROWS)[0]
    src = _cache(attn_only, b, ["head.2.3"])["head.2.3"]
    want = _logits(attn_only, a, [fl.Patch(Site("head.2.3", positions=[2, S - 1]), src)])
    assert torch.allclose(got, want, **CLOSE)
    everywhere = _logits(attn_only, a, [fl.Patch("head.2.3", src)])
    assert not torch.allclose(got, everywhere, **CLOSE)


def test_uniform_values_are_clean_activations(llama):
    g = TransformerGraph(llama)
    a, b = _ids(0), _ids(1)
    got = g.uniform_values([Uniform("mlp.1", 1), Uniform("embed", 0)], _feed(a, b), ROWS)
    assert torch.equal(got[0], _cache(llama, b, ["mlp_out.1"])["mlp_out.1"])
    assert torch.equal(got[1], _cache(llama, a, ["resid_pre.0"])["resid_pre.0"])


def test_a_linear_part_is_that_share_of_the_node(llama):
    g = TransformerGraph(llama)
    s = g.split("mlp.2", {"a": LinearPart(lambda t: 0.25 * t), "b": LinearPart(lambda t: 0.75 * t)})
    a, b = _ids(0), _ids(1)
    # the output reads part a from datum 1, part b from datum 0: mlp.2 = 0.25 mlp(b) + 0.75 mlp(a)
    top, copies = _root(s, [("mlp.2/a", Uniform("mlp.2/a", 1), None)])
    got = s.evaluate(Plan([top], copies), _feed(a, b), ROWS)[0]
    ca, cb = (_cache(llama, x, ["mlp_out.2"])["mlp_out.2"] for x in (a, b))
    want = _logits(llama, a, [fl.Patch("mlp_out.2", 0.25 * cb + 0.75 * ca)])
    assert torch.allclose(got, want, **CLOSE)


# ---- LayerGraph ----------------------------------------------------------------------------


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.A = nn.Linear(3, 4)
        self.B = nn.Linear(3, 4)
        self.C = nn.Linear(4, 2)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def forward(self, x, y):
        return self.C(torch.tanh(self.A(x)) * self.B(y))


def _xy(seed: int, positions: bool = False) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    shape = (N, S, 3) if positions else (N, 3)
    return {"x": torch.randn(shape, generator=g), "y": torch.randn(shape, generator=g)}


@pytest.fixture(scope="module")
def net():
    return Net().eval()


def _by_hand(net, a_x, b_y):
    with torch.no_grad():
        return net.C(torch.tanh(net.A(a_x)) * net.B(b_y))


def test_layer_graph_feeds_equal_the_forward_by_hand(net):
    g = LayerGraph.trace(fl.wrap(net))
    d0, d1 = _xy(0), _xy(1)
    feed = TableFeed({0: d0, 1: d1})
    # uniform: the module's own output
    got = g.evaluate(Plan([Uniform("C", 0)]), feed, ROWS)[0]
    assert torch.equal(got, _by_hand(net, d0["x"], d0["y"]))
    # C reads A from datum 1, B from datum 0
    top, copies = _root(g, [("A", Uniform("A", 1), None)])
    stats = EvalStats()
    got = g.evaluate(Plan([top], copies), feed, ROWS, stats=stats)[0]
    assert torch.allclose(got, _by_hand(net, d1["x"], d0["y"]), atol=1e-6)
    assert (stats.clean_runs, stats.runs, stats.mixed_copies) == (2, 3, 1)
    # a mixed copy of A whose input is datum 1's x: the same value
    a = Mixed(1, "A")
    top, copies = _root(g, [("A", a, None)])
    copies[1] = MixedCopy(a, 0, (Feed("in", "x", Uniform("x", 1)),))
    got2 = g.evaluate(Plan([top], copies), feed, ROWS)[0]
    assert torch.allclose(got2, got, atol=1e-6)
    # B from datum 1 through its input y
    bcopy = Mixed(1, "B")
    top, copies = _root(g, [("B", bcopy, None)])
    copies[1] = MixedCopy(bcopy, 0, (Feed("in", "y", Uniform("y", 1)),))
    got3 = g.evaluate(Plan([top], copies), feed, ROWS)[0]
    assert torch.allclose(got3, _by_hand(net, d0["x"], d1["y"]), atol=1e-6)


def test_layer_graph_position_split_and_parts(net):
    g = LayerGraph.trace(fl.wrap(net), positions=True)
    d0, d1 = _xy(0, True), _xy(1, True)
    feed = TableFeed({0: d0, 1: d1})
    at = PositionAtom(frozenset({PositionSet.of([1, 4])}))
    top, copies = _root(g, [("A", Uniform("A", 1), at)])
    got = g.evaluate(Plan([top], copies), feed, ROWS)[0]
    with torch.no_grad():
        a = net.A(d0["x"])
        a[:, [1, 4]] = net.A(d1["x"])[:, [1, 4]]
        want = net.C(torch.tanh(a) * net.B(d0["y"]))
    assert torch.allclose(got, want, atol=1e-6)
    # A split into halves; the output reads one half from datum 1
    s = g.split("A", {"p": LinearPart(lambda t: 0.5 * t), "q": LinearPart(lambda t: 0.5 * t)})
    top, copies = _root(s, [("A/p", Uniform("A/p", 1), None)])
    got = s.evaluate(Plan([top], copies), feed, ROWS)[0]
    with torch.no_grad():
        a = 0.5 * net.A(d1["x"]) + 0.5 * net.A(d0["x"])
        want = net.C(torch.tanh(a) * net.B(d0["y"]))
    assert torch.allclose(got, want, atol=1e-6)


def test_plan_reports_its_data():
    top = Mixed(0, "out")
    c = MixedCopy(top, 2, (Feed("in", "A", Uniform("A", 5)),), inputs=3)
    plan = Plan([top, Uniform("out", 7)], {0: c})
    assert plan.uniform_refs() == {Uniform("A", 5), Uniform("out", 7)}
    assert plan.data() == {2, 3, 5, 7}
    assert c.node == "out" and c.run_datum == 3
    assert MixedCopy(top, 2, ()).run_datum == 2
