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
