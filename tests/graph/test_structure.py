"""The structure of component graphs: nodes, ports and edges of TransformerGraph and LayerGraph,
queries, splits, and graph_for. No evaluation here (see test_evaluate.py)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import faithlens as fl
from faithlens.graph import (
    PHI_PORT,
    ComponentGraph,
    GraphNode,
    LayerGraph,
    LinearPart,
    PhiPart,
    ResidualPart,
    TransformerGraph,
    graph_for,
)
from tests.helpers.builders import BUILDERS

# ---- TransformerGraph ----------------------------------------------------------------------


def test_graph_structure_and_checks(tiny_causal):
    arch, hf = tiny_causal
    m = fl.wrap(hf)
    g = TransformerGraph(m)
    assert g.parallel == (arch == "gpt_neox")
    L, H = m.n_layers, m.n_heads
    n_mlp = 1 if m.d_mlp else 0  # attention-only models (the zoo's) have no MLP nodes
    assert len(g.senders("logits", "in")) == 1 + L * (H + n_mlp)
    assert g.senders("head.1.0", "q") == g.senders("head.1.0", "k")
    if n_mlp:
        assert "head.1.0" not in g.senders("mlp.0", "in")
        # sequential blocks: the MLP reads its own layer's heads; parallel blocks (NeoX) do not
        assert ("head.0.0" in g.senders("mlp.0", "in")) == (not g.parallel)
        assert ("head.1.0" in g.senders("mlp.1", "in")) == (not g.parallel)
    else:
        assert "mlp.0" not in g.nodes and "head.0.0" in g.senders("head.1.0", "k")
    coarse = TransformerGraph(m, split_heads=False, split_qkv=False)
    assert "attn.0" in coarse.nodes and coarse.ports("attn.0") == ("in",)
    with pytest.raises(fl.SiteError, match=r"[Nn]earest"):
        g.node("head.9.0")


def test_post_ln_models_are_rejected_with_a_hint():
    with pytest.raises(fl.InputError, match="LayerGraph"):
        TransformerGraph(fl.wrap(BUILDERS["bert"]()))


@pytest.fixture(scope="module")
def llama():
    return fl.wrap(BUILDERS["llama"]())  # 3 layers, 6 heads (2 key/value groups), MLPs


def test_transformer_nodes_ports_and_order(llama):
    g = TransformerGraph(llama)
    L, H = 3, 6
    assert g.kind == "transformer" and g.positions
    assert g.inputs == ("embed",) and g.output == "logits"
    assert len(g.nodes) == 1 + L * H + L + 1
    assert (g.n_layers, g.n_heads, g.n_kv) == (3, 6, 2)
    assert g.node("embed") == GraphNode("embed", "input", (), 0)
    assert g.node("head.2.5") == GraphNode("head.2.5", "head", ("q", "k", "v"), 5, 2, 5)
    assert g.node("mlp.1") == GraphNode("mlp.1", "mlp", ("in",), 4, 1)
    assert g.node("embed").is_input and g.node("logits").is_output
    assert g.ports("logits") == ("in",) and g.ports("embed") == ()
    assert g.input_fields() == ("ids", "mask")
    # every port reads every component before it, in order (sequential blocks)
    heads0 = tuple(f"head.0.{h}" for h in range(H))
    assert g.senders("head.0.3", "v") == ("embed",)
    assert g.senders("mlp.0", "in") == ("embed", *heads0)
    assert g.senders("head.1.0", "k") == ("embed", *heads0, "mlp.0")
    assert g.senders("logits", "in")[-1] == "mlp.2"
    topo = g.topo()
    assert topo[0] == "embed" and topo[-1] == "logits"
    assert topo.index("head.0.5") < topo.index("mlp.0") < topo.index("head.1.0")
    assert g.describe().startswith("transformer graph: 23 nodes, inputs ['embed'], output 'logits'")


def test_transformer_queries(llama):
    g = TransformerGraph(llama)
    assert ("logits", "in") in g.receivers("mlp.2")
    assert set(g.receivers("head.2.0")) == {("logits", "in"), ("mlp.2", "in")}
    assert {r for r, _ in g.receivers("embed")} == set(g.nodes) - {"embed"}
    assert g.ancestors("head.0.0") == frozenset({"embed"})
    assert g.ancestors("mlp.0") == frozenset({"embed", *(f"head.0.{h}" for h in range(6))})
    assert g.reaches("logits", "embed")
    assert not g.reaches("head.0.0", "mlp.0")
    assert not g.reaches("mlp.1", "head.2.0")
    # with ``avoid``: only paths through none of the avoided nodes count
    assert g.reaches("mlp.1", "mlp.0", avoid=frozenset({"head.1.0"}))  # mlp.1 reads mlp.0
    assert g.reaches("head.1.0", "head.0.0", avoid=frozenset({"mlp.0"}))
    # in a chain, avoiding the node in between cuts the only path
    ch = LayerGraph.chain(fl.wrap(Net()), ["A", "B", "C"], ["x"])
    assert ch.reaches("C", "A") and not ch.reaches("C", "A", avoid=frozenset({"B"}))
    assert ch.reaches("output", "x", avoid=frozenset({"A"})) is False
    assert ch.ancestors("C") == frozenset({"x", "A", "B"})


def test_split_rewires_receivers_and_names_parts(llama):
    g = TransformerGraph(llama)
    half = LinearPart(lambda t: 0.5 * t, label="half")
    s = g.split("head.1.2", {"a": half, "b": half})
    assert isinstance(s, TransformerGraph) and s is not g
    assert "head.1.2" in g.nodes and "head.1.2" not in s.nodes  # the original is unchanged
    assert s.parts_of("head.1.2") == ["head.1.2/a", "head.1.2/b"]
    assert s.expand("head.1.2") == ("head.1.2/a", "head.1.2/b")
    assert s.expand("mlp.0") == ("mlp.0",)
    a = s.node("head.1.2/a")
    assert (a.base, a.kind, a.layer, a.head) == ("head.1.2", "head", 1, 2)
    assert a.ports == g.ports("head.1.2") and a.part is half
    assert s.senders("head.1.2/a", "q") == g.senders("head.1.2", "q")
    recv = s.senders("mlp.1", "in")
    assert "head.1.2" not in recv and recv.count("head.1.2/a") == 1
    assert recv.index("head.1.2/a") + 1 == recv.index("head.1.2/b")
    assert s.rewrites == ("head.1.2 = head.1.2/a[half] + head.1.2/b[half]",)
    with pytest.raises(fl.SiteError, match=r"split by a rewrite into \['head.1.2/a'"):
        s.node("head.1.2")
    # a phi part reads the input directly; the residual reads the node's ports and the input
    t = g.split("mlp.0", {"phi": PhiPart(lambda d: d), "rest": ResidualPart((lambda d: d,))})
    assert t.ports("mlp.0/phi") == (PHI_PORT,) and t.senders("mlp.0/phi", PHI_PORT) == ("embed",)
    assert t.ports("mlp.0/rest") == ("in", PHI_PORT)
    for bad, match in [
        (("embed", {"a": half}), "cannot split the input"),
        (("mlp.0", {}), "at least one part"),
    ]:
        with pytest.raises(fl.InputError, match=match):
            g.split(*bad)
    with pytest.raises(fl.InputError, match="already a part"):
        s.split("head.1.2/a", {"x": half})


def test_residual_part_scale():
    r = ResidualPart((), scale=0.25)
    assert torch.equal(r.apply(torch.tensor([4.0]), torch.tensor([2.0])), torch.tensor([0.5]))
    assert torch.equal(ResidualPart(()).apply(torch.tensor([4.0]), 1), torch.tensor([3.0]))


# ---- LayerGraph ----------------------------------------------------------------------------


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.A = nn.Linear(3, 4)
        self.B = nn.Linear(3, 4)
        self.C = nn.Linear(4, 2)

    def forward(self, x, y):
        return self.C(torch.tanh(self.A(x)) * self.B(y + x))


def test_layer_graph_from_a_trace():
    g = LayerGraph.trace(fl.wrap(Net()))
    assert g.kind == "layers" and not g.positions
    assert g.inputs == ("x", "y") and g.output == "C"  # the return value is C's output
    assert set(g.nodes) == {"x", "y", "A", "B", "C"}
    assert g.senders("A", "in") == ("x",)
    assert g.senders("B", "in") == ("x", "y")  # arithmetic folds into the edges
    assert g.senders("C", "in") == ("A", "B")
    assert g.node("C").is_output and g.node("x").is_input
    assert g.node("A").order == 1 and g.node("C").order == 2
    assert g.topo() == ["x", "y", "A", "B", "C"]
    assert g.input_fields() == ("x", "y")
    assert g.model_inputs({"y": torch.ones(1), "x": torch.zeros(1)})[0].item() == 0.0
    with pytest.raises(fl.InputError, match="no fields"):
        g.model_inputs({"x": torch.zeros(1)})
    only = LayerGraph.trace(fl.wrap(Net()), nodes=["A"])
    assert set(only.nodes) == {"x", "y", "A", "output"}
    assert only.senders("output", "in") == ("A", "x", "y")


def test_layer_graph_chain_whole_and_errors():
    m = fl.wrap(Net())
    ch = LayerGraph.chain(m, ["A", "C"], ["x", "mask"], shared=["mask"])
    assert ch.senders("A", "in") == ("x", "mask")
    assert ch.senders("C", "in") == ("A", "mask")
    assert ch.senders("output", "in") == ("C",)
    whole = LayerGraph.whole(m)
    assert set(whole.nodes) == {"x", "y", "output"}
    assert whole.senders("output", "in") == ("x", "y")
    for parents, match in [
        ({"A": ["x"]}, "what the output"),
        ({"A": ["B"], "B": ["A"], "output": ["A"]}, "cycle"),
        ({"A": ["z"], "output": ["A"]}, "neither an input"),
        ({"Q": ["x"], "output": ["Q"]}, "no module 'Q'"),
        ({"A": [], "output": ["A"]}, "reads nothing"),
    ]:
        with pytest.raises((fl.InputError, fl.SiteError), match=match):
            LayerGraph(m, parents, ["x", "y"])
    with pytest.raises(fl.InputError, match="at least one module"):
        LayerGraph.chain(m, [], ["x"])


# ---- graph_for -----------------------------------------------------------------------------


class Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.A = nn.Linear(2, 2)

    def forward(self, x):
        return self.A(x) if bool(x.sum() > 0) else x


def test_graph_for_picks_the_graph(llama):
    assert isinstance(graph_for(llama), TransformerGraph)
    coarse = graph_for(llama, split_heads=False, split_qkv=False)
    assert isinstance(coarse, TransformerGraph) and "attn.0" in coarse.nodes
    traced = graph_for(fl.wrap(Net()))
    assert isinstance(traced, LayerGraph) and "A" in traced.nodes
    whole = graph_for(fl.wrap(Branchy()))
    assert isinstance(whole, LayerGraph) and set(whole.nodes) == {"x", "output"}
    assert all(isinstance(g, ComponentGraph) for g in (traced, whole))
