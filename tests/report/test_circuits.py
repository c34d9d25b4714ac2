"""The drawing of a circuit: its nodes and edges, counted on the figure's artists."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from matplotlib.patches import FancyArrowPatch

import faithlens as fl
from faithlens.circuits import Circuit
from faithlens.report.circuits import PORT_OFFSET, circuit_layout


def _drawn(fig):
    ax = fig.axes[0]
    nodes = {t.get_gid(): t.get_position() for t in ax.texts if t.get_gid()}
    edges = {p.get_gid(): p for p in ax.patches if isinstance(p, FancyArrowPatch)}
    return nodes, edges


def test_circuit_plot_draws_every_node_and_edge_by_score():
    edges = ("input->a0.h2<v>", "a0.h2->a1.h0<k>", "input->a1.h0<q>", "a1.h0->logits", "m0->m1")
    scores = (-2.0, -0.5, 0.25, 1.0, 0.0)
    c = Circuit(edges, "by hand", 10, "toy", scores)
    nodes, drawn = _drawn(c.plot())
    assert set(nodes) == {"input", "a0.h2", "a1.h0", "m0", "m1", "logits"}
    assert set(drawn) == set(edges) and len(drawn) == len(edges)
    # layers upward: the embedding, layer 0's heads, its MLP, layer 1's heads, MLP, the logits
    ys = {n: p[1] for n, p in nodes.items()}
    order = ["input", "a0.h2", "m0", "a1.h0", "m1", "logits"]
    assert [ys[n] for n in order] == sorted(ys.values()) == list(range(6))
    # width grows with |score|; colour by sign
    widths = {e: drawn[e].get_linewidth() for e in edges}
    assert max(widths, key=widths.__getitem__) == "input->a0.h2<v>"
    assert widths["a1.h0->logits"] > widths["a0.h2->a1.h0<k>"] > widths["input->a1.h0<q>"]
    assert widths["m0->m1"] == pytest.approx(min(widths.values()))
    red, blue = to_rgba("C3", 0.8), to_rgba("C0", 0.8)
    assert drawn["input->a0.h2<v>"].get_edgecolor() == pytest.approx(red)
    assert drawn["a1.h0->logits"].get_edgecolor() == pytest.approx(blue)


def test_circuit_plot_ports_arrive_apart_and_no_scores_is_grey():
    edges = ("input->a1.h0<q>", "input->a1.h0<k>", "input->a1.h0<v>", "a1.h0->logits")
    nodes, drawn = _drawn(Circuit(edges).plot())
    x_head = nodes["a1.h0"][0]
    # the arrow's path is in display units; its tip is its highest point
    tips = [drawn[e].get_path().vertices for e in edges[:3]]
    ends = [v[np.argmax(v[:, 1]), 0] for v in tips]
    assert ends[0] < ends[1] < ends[2]
    assert PORT_OFFSET["q"] < PORT_OFFSET["k"] == 0 < PORT_OFFSET["v"]
    assert x_head == 0
    assert all(p.get_edgecolor() == pytest.approx(to_rgba("0.5", 0.8)) for p in drawn.values())


def test_layout_orders_heads_and_grouped_key_value_heads():
    pos = circuit_layout(["input", "a0.h3", "a0.kv1", "a0.h1", "logits"])
    assert [n for n in sorted(pos, key=lambda n: pos[n][0]) if n.startswith("a0")] == [
        "a0.h1",
        "a0.h3",
        "a0.kv1",
    ]
    assert pos["a0.h3"][0] == 0 and pos["input"][1] == 0 and pos["logits"][1] == 2


def test_plot_of_a_discovered_circuit():
    model = fl.load("zoo:induction")
    task = fl.tasks.induction.induction_task(n=4, seed=0)
    scores = fl.circuits.eap(model, task, n_boot=20)
    c = scores.top_k(12)
    nodes, drawn = _drawn(c.plot())
    assert set(drawn) == set(c.edges) and set(nodes) == set(c.nodes) | {"logits"}
    i = int(np.argmax(np.abs(c.scores)))
    widths = {e: p.get_linewidth() for e, p in drawn.items()}
    assert max(widths, key=widths.__getitem__) == c.edges[i]
