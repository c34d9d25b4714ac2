"""The edge graph: counts by hand, MIB / EAP-IG names, grouped-query and parallel blocks."""

from __future__ import annotations

import pytest

import faithlens as fl
from faithlens.circuits import EdgeGraph
from tests.helpers.builders import BUILDERS


def _graph(arch: str) -> EdgeGraph:
    return EdgeGraph(fl.wrap(BUILDERS[arch]()))


def test_edge_count_of_an_attention_only_zoo_model_by_hand():
    """3 layers of 4 heads, no MLP. Writers: the input and 12 heads. A head of layer L reads
    the input and the 4L heads before it through each of q, k, v: 12 ports per layer reading
    1, 5 and 9 writers; the logits read all 13."""
    eg = _graph("faithlens_zoo-attn_only")
    assert len(eg.writers) == 13 and len(eg.readers) == 3 * 12 + 1
    assert len(eg) == 12 * (1 + 5 + 9) + 13 == 193
    assert len(eg.into("a0.h2<k>")) == 1 and len(eg.into("a2.h0<v>")) == 9
    assert [e.name for e in eg.into("logits")][:3] == [
        "input->logits",
        "a0.h0->logits",
        "a0.h1->logits",
    ]


def test_edge_count_with_mlps_by_hand():
    """3 layers of 4 heads and an MLP (sequential blocks): writers are the input, 12 heads and 3
    MLPs; head ports of layer L read 1 + 5L writers, MLP L reads 5 + 5L (its own layer's heads
    included), the logits all 16."""
    eg = _graph("faithlens_zoo")
    heads = 12 * (1 + 6 + 11)
    mlps = 5 + 10 + 15
    assert len(eg.writers) == 16
    assert len(eg) == heads + mlps + 16 == 262
    names = set(eg.names)
    assert {"input->a0.h1<v>", "a0.h1->m0", "m0->a1.h2<q>", "m1->logits"} <= names
    assert eg.edge("a0.h1->m0").reader.site == "mlp_in.0"
    assert eg.edge("m0->a1.h2<q>").writer.site == "mlp_out.0"
    assert eg.edge("input->a0.h1<v>").writer.site == "resid_pre.0"


def test_parallel_blocks_have_no_edge_from_a_layers_heads_to_its_mlp():
    eg = _graph("gpt_neox")
    names = set(eg.names)
    assert "a0.h1->m0" not in names and "a0.h1->m1" in names
    assert len(eg.into("m1")) == 1 + 4 + 1  # the input, layer 0's heads and MLP
    assert len(eg.into("m0")) == 1


def test_grouped_query_attention_ports():
    """Llama with 6 query heads sharing 2 key/value heads: per layer 6 q ports and 2 k and 2 v
    ports (named by key/value head), plus the MLP's."""
    eg = _graph("llama")
    layer0 = [r.name for r in eg.readers if r.layer == 0]
    assert layer0 == [
        *(f"a0.h{h}<q>" for h in range(6)),
        "a0.kv0<k>",
        "a0.kv1<k>",
        "a0.kv0<v>",
        "a0.kv1<v>",
        "m0",
    ]
    assert eg.reader("a1.kv1<k>").site == "k.1.1"
    assert eg.reader("a1.h5<q>").site == "q.1.5"
    assert len(eg.readers) == 3 * 11 + 1
    assert len(eg.into("a1.kv0<v>")) == 1 + 6 + 1


def test_unknown_names_are_refused_with_examples():
    eg = _graph("faithlens_zoo-attn_only")
    with pytest.raises(fl.InputError, match="not an edge"):
        eg.index("a2.h0->a1.h0<q>")
    with pytest.raises(fl.InputError, match="not a reader port"):
        eg.into("m0")
    with pytest.raises(fl.InputError, match="not a writer"):
        fl.circuits.edges.writer_name("logits")


def test_post_ln_models_are_refused():
    with pytest.raises(fl.InputError, match="LayerGraph"):
        _graph("bert")
