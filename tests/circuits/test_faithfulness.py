"""A circuit's faithfulness: the whole graph is the clean run, the empty circuit the corrupted
run, all edges but one is exact edge patching, all but a head's outgoing edges is activation
patching of that head."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import faithlens as fl
from faithlens.circuits import CircuitFaithfulness, EdgeGraph
from tests.helpers.builders import BUILDERS, SMALL_BUILDERS
from tests.helpers.circuits_reference import reference_exact, reference_exact_at
from tests.helpers.tasks import padded_task

ARCHS = ["llama", "gpt_neox", pytest.param("gpt2", marks=pytest.mark.slow)]


def _setup(arch, builders=BUILDERS):
    hf = builders[arch]().double()
    model = fl.wrap(hf)
    return hf, model, padded_task(model, n=3, seq=6), EdgeGraph(model)


@pytest.mark.parametrize("arch", ARCHS)
def test_whole_graph_is_clean_and_empty_circuit_is_corrupt(arch):
    _, model, task, eg = _setup(arch)
    full = fl.circuits.faithfulness(model, task, eg.names, n_boot=50)
    np.testing.assert_allclose(full.patched, full.clean, atol=1e-6, rtol=0)
    assert full.faithfulness == pytest.approx(1.0, abs=1e-6)
    empty = fl.circuits.faithfulness(model, task, [], n_boot=50)
    np.testing.assert_allclose(empty.patched, empty.corrupt, atol=1e-6, rtol=0)
    assert empty.faithfulness == pytest.approx(0.0, abs=1e-6)
    assert empty.faithfulness_ci_low <= 0 + 1e-9 <= empty.faithfulness_ci_high + 2e-9


@pytest.mark.parametrize("arch", ARCHS)
def test_all_edges_but_one_is_edge_patching(arch):
    hf, model, task, eg = _setup(arch, SMALL_BUILDERS)  # a faithfulness run per edge
    # one edge into each kind of port, from each kind of writer
    wanted = [
        e.name
        for e in eg.edges
        if e.reader.name in {eg.readers[-2].name, "logits", "a1.h1<q>"}
        or (e.reader.layer == 1 and e.reader.port in ("k", "v") and e.reader.head == 0)
    ][::3]
    ref = reference_exact(hf, task, wanted).numpy()
    for i, e in enumerate(wanted):
        res = fl.circuits.faithfulness(model, task, [n for n in eg.names if n != e], n_boot=50)
        np.testing.assert_allclose(res.patched - res.clean, ref[i], atol=1e-5, rtol=0)


def test_all_edges_but_a_heads_outgoing_ones_is_activation_patching():
    _, model, task, eg = _setup("llama")
    head = "a1.h4"
    circuit = [n for n in eg.names if not n.startswith(f"{head}->")]
    res = fl.circuits.faithfulness(model, task, circuit, n_boot=50)
    act = fl.patch(model, task, sites=["head.1.4"], direction="noising", n_boot=50)
    np.testing.assert_allclose(res.patched, act.patched[0], atol=1e-5, rtol=0)


def test_circuit_from_scores_result_and_bad_input(tmp_path):
    _, model, task, eg = _setup("gpt_neox")
    scores = fl.circuits.eap(model, task, n_boot=50)
    calls = []
    res = fl.circuits.faithfulness(
        model, task, scores.top_k(40), n_boot=50, progress=lambda d, t: calls.append((d, t))
    )
    assert res.how == "top_k=40" and len(res.edges) == 40 and res.n_graph_edges == len(eg)
    assert calls[-1][0] == calls[-1][1]
    assert res.faithfulness_ci_low <= res.faithfulness <= res.faithfulness_ci_high
    assert "normalised faithfulness" in res.summary()
    assert list(res.to_frame().columns)[3:8] == [
        "faithfulness",
        "faithfulness_se",
        "faithfulness_ci_low",
        "faithfulness_ci_high",
        "level",
    ]
    back = CircuitFaithfulness.load(res.save(tmp_path / "f"))
    assert back.edges == res.edges and back.faithfulness == res.faithfulness
    assert res.plot() is not None
    with pytest.raises(fl.InputError, match="not an edge"):
        fl.circuits.faithfulness(model, task, ["a2.h0->a1.h0<q>"])
    with pytest.raises(fl.InputError, match="Circuit"):
        fl.circuits.faithfulness(model, task, "input->m0")


@pytest.mark.parametrize("arch", ["llama", "gpt_neox"])
def test_all_but_one_position_of_one_edge_is_edge_patching_at_that_position(arch):
    """Per-position members: the whole graph less one edge at one position (its other
    positions kept) equals bare-hook patching of that edge's writer change at that position."""
    hf, model, task, eg = _setup(arch, SMALL_BUILDERS)
    seq = task.seq_len
    kv = [r.name for r in eg.readers if r.layer == 1 and r.port in ("k", "v")]
    mlp = [r.name for r in eg.readers if r.kind == "mlp"][-1]
    wanted = [
        eg.into(port)[j].name
        for port, j in (("logits", 1), ("logits", -1), ("a1.h1<q>", 2), (kv[0], 1), (kv[-1], -1))
    ] + [eg.into(mlp)[-1].name]
    largest = 0.0
    for e in wanted:
        # the last position for ports that act there alone, an early one for keys and values
        p = 1 if eg.edge(e).reader.port in ("k", "v") else seq - 1
        circuit = [n for n in eg.names if n != e] + [f"{e}@{q}" for q in range(seq) if q != p]
        res = fl.circuits.faithfulness(model, task, circuit, n_boot=20)
        ref = reference_exact_at(hf, task, [e], p).numpy()[0]
        np.testing.assert_allclose(res.patched - res.clean, ref, atol=1e-6, rtol=0)
        largest = max(largest, float(abs(ref).max()))
        assert res.meta["positions"] == "each" and res.n_graph_edges == len(eg) * seq
        assert e not in res.edges and f"{e}@{p}" not in res.edges and f"{e}@0" in res.edges
    assert largest > 1e-3  # the positions patched change the metric


def test_per_position_circuits_agree_with_whole_edges():
    """Every position of every edge is the whole graph (the clean run); every position of a set
    of edges is that set of whole edges; names are checked."""
    _, model, task, eg = _setup("gpt_neox")
    seq = task.seq_len
    each = [f"{e}@{p}" for e in eg.names for p in range(seq)]
    full = fl.circuits.faithfulness(model, task, each, n_boot=20)
    np.testing.assert_allclose(full.patched, full.clean, atol=1e-9, rtol=0)
    some = eg.names[::3]
    whole = fl.circuits.faithfulness(model, task, some, n_boot=20)
    spread = fl.circuits.faithfulness(
        model, task, [f"{e}@{p}" for e in some for p in range(seq)], n_boot=20
    )
    np.testing.assert_allclose(spread.patched, whole.patched, atol=1e-9, rtol=0)
    assert abs(whole.patched - whole.clean).max() > 1e-3
    # the interventions of a per-position circuit run it in one plain pass
    mixed_circuit = [f"{e}@{p}" for e in some for p in (0, 2, 4)] + eg.names[1::3]
    res = fl.circuits.faithfulness(model, task, mixed_circuit, n_boot=20)
    ivs = fl.circuits.circuit_interventions(model, task, mixed_circuit)
    out = model.run(task.clean, ivs, logits_at=task.positions)
    got = task.metric(out.logits[:, 0], task.answers).double().numpy()
    np.testing.assert_allclose(got, res.patched, atol=1e-9, rtol=0)
    assert abs(res.patched - spread.patched).max() > 1e-4  # not the whole-edge circuit
    # a member's order: edge-graph order, the whole edge before its positions
    mixed = fl.circuits.faithfulness(
        model, task, [f"{some[1]}@2", some[1], f"{some[0]}@1"], n_boot=20
    )
    assert mixed.edges == [f"{some[0]}@1", some[1], f"{some[1]}@2"]
    with pytest.raises(fl.ArgumentError, match=r"position 6.*0 to 5"):
        fl.circuits.faithfulness(model, task, [f"{some[0]}@{seq}"])
    with pytest.raises(fl.InputError, match="0-based"):
        fl.circuits.faithfulness(model, task, [f"{some[0]}@last"])
    with pytest.raises(fl.InputError, match="not an edge"):
        fl.circuits.faithfulness(model, task, ["a2.h0->a1.h0<q>@1"])


@pytest.mark.parametrize("arch", ["gpt_neox", "faithlens_zoo-attn_only"])
def test_circuit_interventions_run_the_circuit(arch):
    """The interventions applied in one plain run give the circuit's metric (and nothing for the
    whole graph); they can be audited for divergence."""
    _, model, task, eg = _setup(arch)
    circuit = eg.names[::3]
    res = fl.circuits.faithfulness(model, task, circuit, n_boot=50)
    ivs = fl.circuits.circuit_interventions(model, task, circuit)
    out = model.run(task.clean, ivs, logits_at=task.positions)
    np.testing.assert_allclose(
        task.metric(out.logits[:, 0], task.answers).double().numpy(), res.patched, atol=1e-6
    )
    assert abs(res.patched - res.clean).max() > 1e-3  # the circuit changes the run
    assert fl.circuits.circuit_interventions(model, task, eg.names) == []
    site = eg.reader("logits").residual
    aud = fl.audit(model, task, {"circuit": ivs}, site, base="clean", metrics=["mmd"], n_splits=2)
    assert aud.site == site and "circuit" in aud.conditions


@pytest.mark.parametrize("ablation", ["zero", "mean", "resample"])
def test_ablations_by_hand(ablation):
    """All edges but a head's outgoing ones, under each ablation, is the model with that head's
    output replaced by hand: zeros, its mean over the examples at each position, or another
    example's (the seeded derangement); the whole graph is the clean run and the empty circuit
    the normalisation's baseline."""
    from faithlens.circuits.faithfulness import resample_order
    from faithlens.interventions import Patch

    hf = BUILDERS["faithlens_zoo-attn_only"]().double()
    model = fl.wrap(hf)
    task = fl.tasks.random_token_task(model, 4, 6, seed=0)
    eg = EdgeGraph(model)
    head = "a1.h2"
    circuit = [n for n in eg.names if not n.startswith(f"{head}->")]
    res = fl.circuits.faithfulness(model, task, circuit, ablation=ablation, seed=3, n_boot=50)
    z = model.run(task.clean, cache=["head.1.2"]).cache["head.1.2"]
    source = {
        "zero": torch.zeros_like(z),
        "mean": z.mean(0, keepdim=True).expand_as(z),
        "resample": z[torch.as_tensor(resample_order(4, 3))],
    }[ablation]
    out = model.run(task.clean, [Patch("head.1.2", source=source)], logits_at=task.positions)
    want = task.metric(out.logits[:, 0], task.answers).double().numpy()
    np.testing.assert_allclose(res.patched, want, atol=1e-6, rtol=0)
    assert np.abs(want - res.clean).max() > 1e-4  # the head matters: the check can fail
    assert res.meta["ablation"] == ablation
    whole = fl.circuits.faithfulness(model, task, eg.names, ablation=ablation, n_boot=50)
    np.testing.assert_allclose(whole.patched, whole.clean, atol=1e-6, rtol=0)
    empty = fl.circuits.faithfulness(model, task, [], ablation=ablation, seed=3, n_boot=50)
    np.testing.assert_allclose(empty.patched, res.corrupt, atol=1e-6, rtol=0)


def test_resample_order_is_a_derangement_and_bad_ablation():
    from faithlens.circuits.faithfulness import resample_order

    for n, seed in ((2, 0), (5, 1), (9, 4)):
        src = resample_order(n, seed)
        assert sorted(src.tolist()) == list(range(n)) and all(src[i] != i for i in range(n))
    _, model, task, _ = _setup("gpt_neox")
    with pytest.raises(fl.ArgumentError, match="ablation"):
        fl.circuits.faithfulness(model, task, [], ablation="noise")
