"""Scores and circuits as MIB's / EAP-IG's graph JSON: the file's graph against EAP-IG's edge
count by hand, round trips, grouped key/value ports, attention-only models, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

import faithlens as fl
from faithlens.circuits import EdgeGraph, read_mib, write_mib
from tests.helpers.builders import BUILDERS, SMALL_BUILDERS
from tests.helpers.tasks import padded_task


def _setup(arch, builders=SMALL_BUILDERS):
    model = fl.wrap(builders[arch]().double())
    task = padded_task(model, n=3, seq=5)
    return model, fl.circuits.eap(model, task, n_boot=20), EdgeGraph(model)


def _eap_ig_count(layers, heads, parallel):
    """EAP-IG's ``Graph.from_model`` edge count: every earlier node into each head's three
    ports and each MLP (a sequential MLP also reads its own layer's heads), all into logits."""
    total, stream = 0, 1
    for _ in range(layers):
        total += stream * 3 * heads
        total += stream if parallel else stream + heads
        stream += heads + 1
    return total + stream


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox"])
def test_the_files_graph_is_eap_igs_and_ours(arch, tmp_path):
    """Without grouping and with MLPs, EAP-IG's graph and faithlens' have the same edges: the
    file holds exactly the model's edges, with its scores, and reads back the circuit."""
    model, scores, eg = _setup(arch)
    circuit = scores.top_k(12)
    path = write_mib(tmp_path / "g.json", scores, model, circuit=circuit)
    d = json.loads(path.read_text())
    cfg = d["cfg"]
    assert cfg["parallel_attn_mlp"] == (arch == "gpt_neox")
    assert cfg["n_layers"] == eg.n_layers and cfg["n_heads"] == eg.n_heads
    assert cfg["d_model"] == model.d_model
    assert len(d["edges"]) == _eap_ig_count(eg.n_layers, eg.n_heads, cfg["parallel_attn_mlp"])
    assert set(d["edges"]) == set(eg.names)
    for e, s in zip(scores.edge, scores.score):
        assert d["edges"][e]["score"] == pytest.approx(float(s), abs=0)
        assert d["edges"][e]["in_graph"] == (e in circuit.edges)
    back = read_mib(path, model)
    assert back.edges == circuit.edges and back.of == len(eg)
    np.testing.assert_allclose(back.scores, circuit.scores, rtol=0, atol=0)
    scores_only = json.loads(write_mib(tmp_path / "s.json", scores, model).read_text())
    assert not any(v["in_graph"] for v in scores_only["edges"].values())
    assert read_mib(tmp_path / "s.json", model).edges == ()


def test_nodes_in_graph_as_eap_ig_prunes_them(tmp_path):
    model, scores, _ = _setup("gpt2")
    circuit = ["input->a0.h0<q>", "a0.h0->logits", "a1.h1->logits", "input->m0"]
    d = json.loads(write_mib(tmp_path / "g.json", scores, model, circuit=circuit).read_text())
    inside = {n for n, v in d["nodes"].items() if v["in_graph"]}
    # a1.h1 has no incoming edge in the circuit; m0 no outgoing one
    assert inside == {"input", "a0.h0", "logits"}


def test_grouped_key_value_ports_are_split_per_query_head(tmp_path):
    model, scores, eg = _setup("llama")
    assert eg.grouped
    group = eg.n_heads // eg.n_kv
    kv_edge = next(e for e in eg.names if e.endswith("kv0<k>"))
    circuit = (*scores.top_k(15).edges, kv_edge)
    d = json.loads(write_mib(tmp_path / "g.json", scores, model, circuit=circuit).read_text())
    assert len(d["edges"]) == _eap_ig_count(eg.n_layers, eg.n_heads, False)
    writer, layer = kv_edge.split("->")[0], kv_edge.split("->")[1].split(".")[0]
    per_head = [f"{writer}->{layer}.h{h}<k>" for h in range(group)]
    port = float(scores.score[scores.edge.index(kv_edge)])
    assert sum(d["edges"][e]["score"] for e in per_head) == pytest.approx(port, abs=1e-12)
    assert all(d["edges"][e]["in_graph"] for e in per_head)
    back = read_mib(tmp_path / "g.json", model)
    assert set(back.edges) == set(circuit)
    at = dict(zip(back.edges, back.scores))
    assert at[kv_edge] == pytest.approx(port, abs=1e-12)
    # any query head's edge in the graph brings in its group's port
    d["edges"][per_head[0]]["in_graph"] = False
    (tmp_path / "h.json").write_text(json.dumps(d))
    assert kv_edge in read_mib(tmp_path / "h.json", model).edges


def test_attention_only_models_write_empty_mlps_and_refuse_them(tmp_path):
    model, scores, eg = _setup("faithlens_zoo-attn_only", BUILDERS)
    path = write_mib(tmp_path / "g.json", scores, model, circuit=scores.top_k(5))
    d = json.loads(path.read_text())
    mlp = [e for e in d["edges"] if "m0" in e]
    assert mlp and all(d["edges"][e] == {"score": 0.0, "in_graph": False} for e in mlp)
    assert set(eg.names) < set(d["edges"])
    assert read_mib(path, model).edges == scores.top_k(5).edges
    d["edges"][mlp[0]]["in_graph"] = True
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(fl.InputError, match="no such edge"):
        read_mib(tmp_path / "bad.json", model)


def test_bad_input(tmp_path):
    model, scores, _ = _setup("gpt2")
    path = write_mib(tmp_path / "g.json", scores, model)
    with pytest.raises(fl.FaithlensError, match="already exists"):
        write_mib(path, scores, model)
    write_mib(path, scores, model, overwrite=True)
    other, other_scores, _ = _setup("gpt_neox")
    with pytest.raises(fl.InputError, match="another edge graph"):
        write_mib(tmp_path / "x.json", other_scores, model)
    with pytest.raises(fl.InputError, match="parallel_attn_mlp"):
        read_mib(path, other)
    each = fl.circuits.eap(model, padded_task(model, n=3, seq=5), n_boot=20, positions="each")
    with pytest.raises(fl.InputError, match="per position"):
        write_mib(tmp_path / "e.json", each, model)
    with pytest.raises(fl.InputError, match="per-position"):
        write_mib(tmp_path / "c.json", scores, model, circuit=[each.edge[0]])
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(fl.ArgumentError, match="JSON"):
        read_mib(tmp_path / "junk.json", model)
    (tmp_path / "other.json").write_text(json.dumps({"nodes": {}}))
    with pytest.raises(fl.ArgumentError, match="'cfg' and 'edges'"):
        read_mib(tmp_path / "other.json", model)
    with pytest.raises(fl.ArgumentError, match="EdgeScores"):
        write_mib(tmp_path / "y.json", scores.top_k(3), model)
