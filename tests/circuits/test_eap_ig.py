"""EAP-IG against EAP (one step), an independent brute-force reference of the same formula, and
the completeness of integrated gradients."""

from __future__ import annotations

import numpy as np
import pytest

import faithlens as fl
from faithlens.errors import InputError
from tests.helpers.builders import BUILDERS, SMALL_BUILDERS
from tests.helpers.circuits_reference import reference_eap_ig, reference_eap_ig_activations
from tests.helpers.tasks import padded_task

ARCHS = [
    "llama",
    "gpt_neox",
    pytest.param("gpt2", marks=pytest.mark.slow),
    pytest.param("faithlens_zoo", marks=pytest.mark.slow),
    "faithlens_zoo-attn_only",
]


def _setup(arch, n=3, seq=6, builders=SMALL_BUILDERS):
    hf = builders[arch]().double()
    model = fl.wrap(hf)
    return hf, model, padded_task(model, n=n, seq=seq)


def test_one_step_is_eap():
    _, model, task = _setup("llama")
    ig = fl.circuits.eap_ig(model, task, steps=1, n_boot=20)
    eap = fl.circuits.eap(model, task, n_boot=20)
    np.testing.assert_allclose(ig.values, eap.values, atol=1e-12, rtol=0)
    assert ig.method == "eap-ig" and ig.meta["steps"] == 1


@pytest.mark.parametrize("arch", ARCHS)
def test_eap_ig_equals_brute_force_reference(arch):
    hf, model, task = _setup(arch)
    before = [p.requires_grad for p in hf.parameters()]
    res = fl.circuits.eap_ig(model, task, steps=3, n_boot=20)
    ref = reference_eap_ig(hf, task, res.edge, steps=3).numpy()
    np.testing.assert_allclose(res.values, ref, atol=1e-8, rtol=0)
    assert np.abs(ref).max() > 1e-3
    # the path matters: three steps differ from the gradient at the clean run alone
    eap = fl.circuits.eap(model, task, n_boot=20)
    assert np.abs(res.values - eap.values).max() > 1e-4
    assert [p.requires_grad for p in hf.parameters()] == before
    assert all(p.grad is None for p in hf.parameters())


def test_input_edges_are_complete_with_many_steps():
    """Integrated gradients' completeness: the embedding reaches the metric only through the
    ports it feeds, so its edges' values sum to ``m(corrupt) - m(clean)`` as the steps grow."""
    _, model, task = _setup("faithlens_zoo-attn_only", n=4, builders=BUILDERS)
    gap = None
    errors = {}
    for steps in (1, 64):
        res = fl.circuits.eap_ig(model, task, steps=steps, n_boot=20)
        rows = [i for i, w in enumerate(res.writer) if w == "input"]
        total = res.values[rows].sum(0)
        gap = res.corrupt - res.clean
        errors[steps] = np.abs(total - gap).max()
    assert gap is not None and np.abs(gap).min() > 1e-2
    assert errors[64] < 0.02 * np.abs(gap).max()
    assert errors[64] < errors[1] / 10


def test_chunks_and_progress_do_not_change_the_scores():
    _, model, task = _setup("faithlens_zoo-attn_only", n=4)
    whole = fl.circuits.eap_ig(model, task, steps=2, n_boot=20)
    calls = []
    small = fl.circuits.eap_ig(
        model, task, steps=2, n_boot=20, max_memory=1, progress=lambda d, t: calls.append((d, t))
    )
    np.testing.assert_allclose(small.values, whole.values, atol=1e-10, rtol=0)
    assert calls and calls[-1][0] == calls[-1][1] and len(calls) == calls[-1][1]


def test_bad_steps():
    _, model, task = _setup("llama")
    with pytest.raises(InputError, match="steps"):
        fl.circuits.eap_ig(model, task, steps=0)


def test_bad_ig():
    _, model, task = _setup("llama")
    with pytest.raises(InputError, match=r"ig.*activations"):
        fl.circuits.eap_ig(model, task, ig="hidden")


@pytest.mark.parametrize("arch", ["llama", "faithlens_zoo", "faithlens_zoo-attn_only"])
def test_ig_on_activations_equals_brute_force_reference(arch):
    hf, model, task = _setup(arch, seq=5)
    res = fl.circuits.eap_ig(model, task, steps=2, n_boot=20, ig="activations")
    assert res.meta["ig"] == "activations" and res.meta["steps"] == 2
    ref = reference_eap_ig_activations(hf, task, res.edge, steps=2).numpy()
    np.testing.assert_allclose(res.values, ref, atol=1e-8, rtol=0)
    assert np.abs(ref).max() > 1e-3
    # a different path from the inputs' one: the values differ
    inputs = fl.circuits.eap_ig(model, task, steps=2, n_boot=20)
    assert np.abs(res.values - inputs.values).max() > 1e-4
    assert all(p.grad is None for p in hf.parameters())


@pytest.mark.parametrize("arch", ["faithlens_zoo-attn_only", "gpt_neox"])
def test_ig_on_activations_one_step_relations(arch):
    """``steps=1``: every run is the clean run, but the interpolated node's output is held
    fixed. The logits' port is read by no node and feeds nothing else: EAP's values exactly.
    The last node's ports reach the metric only through that node, so their gradient is the
    clean one in every run but that node's own (zero there): EAP's times ``1 - 1 / |nodes|``."""
    from faithlens.circuits.eap_ig import layer_nodes

    _, model, task = _setup(arch, n=4)
    eg = fl.circuits.EdgeGraph(model)
    one = fl.circuits.eap_ig(model, task, steps=1, n_boot=20, ig="activations")
    eap = fl.circuits.eap(model, task, n_boot=20)
    assert list(one.edge) == [e.name for e in eg.edges]
    nodes = layer_nodes(eg)
    last = nodes[-1][0]
    logits = np.array([e.reader.kind == "logits" for e in eg.edges])
    into_last = np.array(
        [e.reader.kind == last.kind and e.reader.layer == last.layer for e in eg.edges]
    )
    assert logits.any() and into_last.any() and np.abs(eap.values[into_last]).max() > 1e-4
    np.testing.assert_allclose(one.values[logits], eap.values[logits], atol=1e-12, rtol=0)
    scaled = eap.values[into_last] * (1 - 1 / len(nodes))
    np.testing.assert_allclose(one.values[into_last], scaled, atol=1e-12, rtol=0)
    # the other ports' gradients also lose the paths through the later nodes held fixed
    assert np.abs(one.values - eap.values).max() > 1e-4


def test_ig_on_activations_input_node_alone_is_ig_on_inputs(monkeypatch):
    """The input node's runs are the inputs' runs: with the node list cut to the input node,
    the activations variant gives the inputs variant's values."""
    import importlib

    module = importlib.import_module("faithlens.circuits.eap_ig")
    _, model, task = _setup("llama")
    full = module.layer_nodes(fl.circuits.EdgeGraph(model))
    assert [w.kind for w in full[0]] == ["input"] and len(full) == 1 + 2 * 2
    monkeypatch.setattr(module, "layer_nodes", lambda eg: full[:1])
    acts = fl.circuits.eap_ig(model, task, steps=3, n_boot=20, ig="activations")
    inputs = fl.circuits.eap_ig(model, task, steps=3, n_boot=20)
    np.testing.assert_allclose(acts.values, inputs.values, atol=1e-12, rtol=0)
