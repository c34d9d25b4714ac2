"""A circuit's scrubbing score as one DAG (``unimportant="global"``): equal to ``fl.scrub`` of
its tree on small models of every architecture, the whole graph is the model (100 %), the empty
circuit is the empty global hypothesis (0 % against it), and the scrubbed run against an
independent reference: the circuit faithfulness engine with every edge outside the circuit
carrying its writer's output on the shared datum."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import faithlens as fl
from faithlens.circuits import Circuit
from faithlens.circuits.common import contribution, prepare, writer_sites
from faithlens.circuits.faithfulness import measure
from faithlens.circuits.hypothesis import MAX_NODES
from faithlens.scrubbing import Hypothesis, SameFeature, field
from tests.helpers.builders import BUILDERS, SMALL_BUILDERS

ARCHS = ["gpt2", "llama", "gpt_neox", "faithlens_zoo"]
N = 24


def _model(arch, small=True):
    hf = (SMALL_BUILDERS if small else BUILDERS)[arch]()
    return fl.wrap(hf.double())


def _task(model):
    return fl.tasks.random_token_task(model, 16, 6, seed=0)


def _circuits(names):
    rng = np.random.default_rng(1)
    return {
        "random 12": list(rng.choice(names, 12, replace=False)),
        "random half": list(rng.choice(names, len(names) // 2, replace=False)),
    }


@pytest.mark.parametrize("arch", ARCHS)
def test_equal_to_the_tree_scrub(arch):
    model = _model(arch)
    task = _task(model)
    names = fl.circuits.EdgeGraph(model).names
    for label, edges in _circuits(names).items():
        c = Circuit(tuple(edges), how=label)
        fast = fl.circuits.scrub(model, task, c, N, seed=3, n_boot=200)
        h = c.to_hypothesis(model=model, unimportant="global")
        tree = fl.scrub(model, hypothesis=h, data=task, n=N, seed=3, n_boot=200)
        np.testing.assert_allclose(fast.scrubbed, tree.scrubbed, rtol=0, atol=1e-10)
        np.testing.assert_array_equal(fast.original, tree.original)
        np.testing.assert_array_equal(fast.baseline_values, tree.baseline_values)
        np.testing.assert_allclose(fast.kl, tree.kl, rtol=0, atol=1e-10)
        a, b = fast.interval_of("% recovered vs random"), tree.interval_of("% recovered vs random")
        assert (a.estimate, a.ci_low, a.ci_high) == pytest.approx(
            (b.estimate, b.ci_low, b.ci_high), rel=1e-9
        )
        assert fast.hypothesis == "circuit (" + label + ")"
        assert fast.stats["evaluation"] == "circuit DAG"


@pytest.mark.parametrize("arch", ARCHS)
def test_whole_graph_is_100_and_empty_circuit_is_0(arch):
    model = _model(arch, small=False)  # three layers: the whole graph's tree is too large
    task = _task(model)
    names = fl.circuits.EdgeGraph(model).names
    empty = {"empty": Hypothesis.nothing("empty", unimportant="global")}
    whole = fl.circuits.scrub(model, task, names, N, baselines=empty, n_boot=200)
    np.testing.assert_allclose(whole.scrubbed, whole.original, rtol=0, atol=1e-10)
    assert whole.interval_of("% recovered vs empty").estimate == pytest.approx(100.0)
    none = fl.circuits.scrub(model, task, [], N, baselines=empty, n_boot=200)
    np.testing.assert_array_equal(none.scrubbed, none.baseline_values[0])
    assert none.interval_of("% recovered vs empty").estimate == 0.0
    if arch == "llama":  # the tree of the whole graph is refused; the DAG is not
        with pytest.raises(fl.InputError, match=f"paths from the logits, more than {MAX_NODES:,}"):
            Circuit(tuple(names)).to_hypothesis(model=model, unimportant="global")


def test_against_the_faithfulness_engine():
    """Every edge outside the circuit carries its writer's output on the shared datum: the
    circuit faithfulness engine's run with those outputs as the ablation values (an
    independent implementation, layer by layer through the run engine) gives the scrubbed
    values, on grouped-query attention with edges into key/value groups."""
    model = _model("llama", small=False)
    task = _task(model)
    names = fl.circuits.EdgeGraph(model).names
    rng = np.random.default_rng(2)
    edges = [e for e in names if ".kv" in e][:6] + list(rng.choice(names, 40, replace=False))
    res = fl.circuits.scrub(model, task, edges, N, seed=5, n_boot=50)
    prep = fl.scrubbing.prepare(
        model, Hypothesis.nothing("e", unimportant="global"), task, N, seed=5
    )
    shared = prep.data.vectors[prep.plan.roots[1].datum]
    np.testing.assert_array_equal(prep.ref, res.references)
    ref_task, eg = prepare("test", model, task.subset(prep.ref.tolist()), None, 2, 0.95, 0, None)
    out = model.run(task.subset(shared.tolist()).clean, cache=writer_sites(eg))
    values = {w.name: contribution(eg, w, out) for w in eg.writers}
    patched, clean, _ = measure(eg, ref_task, set(edges), ablated=values)
    np.testing.assert_allclose(clean, res.original, rtol=0, atol=1e-9)
    # scrubbing assembles a copy's inputs in float32 (measured: 4e-8 apart on values ~0.1)
    np.testing.assert_allclose(patched, res.scrubbed, rtol=0, atol=1e-6)
    assert not np.allclose(res.scrubbed, res.original, atol=1e-6)  # the circuit changes it


def test_bad_input():
    model = _model("gpt2")
    task = _task(model)
    with pytest.raises(fl.InputError, match="unimportant"):
        fl.circuits.scrub(model, task, [], unimportant="per_node")
    with pytest.raises(fl.InputError, match="is not an edge of"):
        fl.circuits.scrub(model, task, ["a9.h0->logits"])
    with pytest.raises(fl.InputError, match="per-position"):
        fl.circuits.scrub(model, task, ["a0.h0->logits@1"])
    with pytest.raises(fl.InputError, match="Circuit or a list"):
        fl.circuits.scrub(model, task, "a0.h0->logits")
    with pytest.raises(fl.InputError, match="faithlens Model"):
        fl.circuits.scrub(torch.nn.Linear(2, 2), task, [])


def test_a_conditioned_shared_datum_is_the_trees():
    """``other=`` conditions the shared datum on the reference (here: a row whose answer is read
    at the same position), as ``to_hypothesis(..., other=...)`` does in the tree."""
    model = _model("llama")
    task = dataclasses.replace(_task(model), positions=torch.tensor([3, 4, 5, 5] * 4))
    names = fl.circuits.EdgeGraph(model).names
    c = Circuit(tuple(np.random.default_rng(1).choice(names, 20, replace=False)))
    same = SameFeature(field("positions"))
    fast = fl.circuits.scrub(model, task, c, N, other=same, n_boot=100)
    h = c.to_hypothesis(model=model, unimportant="global", other=same)
    tree = fl.scrub(model, hypothesis=h, data=task, n=N, n_boot=100)
    np.testing.assert_allclose(fast.scrubbed, tree.scrubbed, rtol=0, atol=1e-10)
    assert "SameFeature(field('positions'))" in fast.description
    free = fl.circuits.scrub(model, task, c, N, n_boot=100)  # another shared datum
    assert np.abs(free.scrubbed - fast.scrubbed).max() > 1e-3


def test_shared_data_of_other_lengths_are_warned_about():
    model = _model("gpt2")
    task = _task(model)
    lengths = torch.tensor([4, 5, 6, 6] * 4)
    mask = (torch.arange(6)[None, :] < lengths[:, None]).long()
    padded = dataclasses.replace(
        task,
        clean=fl.Inputs(ids=task.clean.ids, mask=mask),
        corrupt=fl.Inputs(ids=task.corrupt.ids, mask=mask),
        positions=lengths - 1,
    )
    mixed = fl.circuits.scrub(model, padded, [], N, n_boot=50)
    assert mixed.stats["variable_lengths_share"] > 0.2
    assert any("VARIABLE LENGTHS" in w for w in mixed.warnings)
    same = fl.circuits.scrub(model, padded, [], N, other=SameFeature(field("positions")), n_boot=50)
    assert same.stats["variable_lengths_share"] == 0.0
    assert not any("VARIABLE LENGTHS" in w for w in same.warnings)
