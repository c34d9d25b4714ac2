"""Connected circuits: pruning by hand on small graphs, and the greedy selection."""

from __future__ import annotations

import numpy as np
import pytest

import faithlens as fl
from faithlens.circuits import EdgeGraph, connected
from faithlens.circuits.select import fed, greedy
from tests.helpers.builders import BUILDERS


def test_connected_by_hand():
    graph = [
        "input->a0.h0<q>",
        "input->a0.h1<v>",
        "input->m0",
        "a0.h0->m0",
        "a0.h1->m0",
        "input->logits",
        "a0.h0->logits",
        "a0.h1->logits",
        "m0->logits",
    ]
    # a0.h1 reaches the logits but not from the input; m0 is fed by a0.h1 only; a0.h0 is fed
    # by the input and reaches the logits through m0
    circuit = ["input->a0.h0<q>", "a0.h1->m0", "a0.h0->m0", "m0->logits", "a0.h1->logits"]
    assert connected(circuit, graph) == ["input->a0.h0<q>", "a0.h0->m0", "m0->logits"]
    assert connected(["input->logits"], graph) == ["input->logits"]
    assert connected(["input->a0.h0<q>"], graph) == []  # a0.h0 reaches nothing
    assert connected(graph, graph) == graph


def test_grouped_key_value_ports_feed_every_head_of_their_group():
    graph = [f"input->a0.h{h}<q>" for h in range(4)] + ["input->a0.kv0<k>", "input->a0.kv1<k>"]
    assert fed("a0.kv1<k>", 2) == ["a0.h2", "a0.h3"]
    # the key of group 1 makes head 3 reachable from the input, which reaches the logits
    assert connected(["input->a0.kv1<k>", "a0.h3->logits"], graph) == [
        "input->a0.kv1<k>",
        "a0.h3->logits",
    ]
    assert connected(["input->a0.kv0<k>", "a0.h3->logits"], graph) == []


def test_greedy_grows_from_the_logits_by_hand():
    names = ["input->a0.h0<q>", "input->m0", "a0.h0->m0", "input->logits", "m0->logits"]
    key = np.array([9.0, 1.0, 5.0, 2.0, 3.0])
    # only logits edges first: m0->logits (3) beats input->logits (2); then a0.h0->m0 (5),
    # then input->a0.h0<q> (9)
    assert greedy(names, key, 1) == [4]
    assert greedy(names, key, 3) == [0, 2, 4]
    assert greedy(names, key, 10) == [0, 1, 2, 3, 4]


def test_per_position_edges_connect_through_their_components_by_hand():
    names = [f"{e}@{p}" for e in ("input->a0.h0<q>", "a0.h0->m0", "m0->logits") for p in (0, 1)]
    key = np.array([1.0, 2.0, 3.0, 4.0, 6.0, 5.0])
    # logits' positions first (6 at @0, then 5 at @1), then m0's port (4 at @1), then the head's
    assert greedy(names, key, 2) == [4, 5]
    assert greedy(names, key, 3) == [3, 4, 5]
    assert greedy(names, key, 5) == [1, 2, 3, 4, 5]
    # an edge at any position links its writer to its reader's component
    assert connected([names[0], names[3], names[4]], names) == [names[0], names[3], names[4]]
    assert connected([names[3], names[5]], names) == []  # a0.h0 never reached from the input
    assert fed("a1.kv0<k>@3", 2) == ["a1.h0", "a1.h1"] and fed("logits@2", 1) == ["logits"]


def test_greedy_circuit_is_connected_and_pruned():
    model = fl.wrap(BUILDERS["faithlens_zoo-attn_only"]().double())
    eg = EdgeGraph(model)
    scores = fl.circuits.exact(model, fl.tasks.random_token_task(model, 3, 6, seed=0), n_boot=50)
    for k in (5, 20, 60):
        c = scores.greedy(k)
        assert len(c) <= k and c.how == f"greedy={k}"
        assert connected(c.edges, eg.names) == list(c.edges)
        assert len(scores.greedy(k, prune=False)) == k
    assert len(scores.greedy(60)) > 0
    with pytest.raises(fl.ArgumentError, match="k"):
        scores.greedy(0)


def _reference_greedy(names, key, k):
    """The plain greedy loop (a scan of every edge per step), as it was first written."""
    group = 1
    readers = {e.partition("->")[2] for e in names}
    kv = sum(".kv" in r and r.endswith("<k>") for r in readers)
    if kv:
        group = sum(r.endswith("<q>") for r in readers) // kv
    feeds = [fed(e.partition("->")[2], group) for e in names]
    writers = [e.partition("->")[0] for e in names]
    inside, chosen, taken = {"logits"}, [], [False] * len(names)
    while len(chosen) < k:
        best = -1
        for i in range(len(names)):
            if taken[i] or not any(t in inside for t in feeds[i]):
                continue
            if best < 0 or key[i] > key[best]:
                best = i
        if best < 0:
            break
        taken[best] = True
        chosen.append(best)
        inside.add(writers[best])
    return sorted(chosen)


def _synthetic_edges(n_layers, n_heads, n_kv, mlp):
    """Edge names of a model's edge graph written out by hand (as EdgeGraph lists them)."""
    writers, edges = ["input"], []
    for L in range(n_layers):
        for p in ("q", "k", "v"):
            grouped = p != "q" and n_kv != n_heads
            for i in range(n_kv if grouped else n_heads):
                port = f"a{L}.kv{i}<{p}>" if grouped else f"a{L}.h{i}<{p}>"
                edges += [f"{w}->{port}" for w in writers]
        heads = [f"a{L}.h{h}" for h in range(n_heads)]
        if mlp:
            edges += [f"{w}->m{L}" for w in writers + heads]
        writers += heads + ([f"m{L}"] if mlp else [])
    return edges + [f"{w}->logits" for w in writers]


@pytest.mark.parametrize("arch", ["faithlens_zoo-attn_only", "llama", "gpt2"])
def test_synthetic_edges_match_the_edge_graph(arch):
    model = fl.wrap(BUILDERS[arch]())
    eg = EdgeGraph(model)
    assert _synthetic_edges(eg.n_layers, eg.n_heads, eg.n_kv, eg.graph.has_mlp) == eg.names


@pytest.mark.parametrize(
    "shape", [(2, 4, 4, False), (3, 4, 2, True), (4, 6, 3, True), (3, 2, 1, False)]
)
def test_greedy_equals_the_plain_loop_on_random_scores(shape):
    names = _synthetic_edges(*shape)
    rng = np.random.default_rng(sum(shape))
    for trial in range(12):
        if trial % 3 == 0:  # many ties
            key = rng.integers(0, 4, len(names)).astype(float)
        elif trial % 3 == 1:  # signed, with -inf (NaN scores ranked by value)
            key = rng.normal(size=len(names))
            key[rng.random(len(names)) < 0.2] = -np.inf
        else:
            key = np.abs(rng.standard_cauchy(len(names)))
        for k in (1, 3, len(names) // 7, len(names) // 2, len(names) + 5):
            assert greedy(names, key, k) == _reference_greedy(names, key, k), (trial, k)
