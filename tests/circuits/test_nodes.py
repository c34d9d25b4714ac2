"""Node-level scores against bare hooks: exact node patching adds each head's (or MLP's) change
to the output of its projection (or of the MLP) in a plain forward pass; EAP's node scores
equal the derivative of that pass along the change (central differences in float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import faithlens as fl
from faithlens.circuits import NodeScores
from tests.helpers.builders import BUILDERS
from tests.helpers.circuits_reference import _metric, writer_change
from tests.helpers.reference import PATHS, _forward, _hook
from tests.helpers.tasks import padded_task

ARCHS = ["gpt_neox", pytest.param("llama", marks=pytest.mark.slow)]


def _node_metric(hf, task, node: str, delta: torch.Tensor) -> torch.Tensor:
    """The logit difference per example with ``delta`` added to node's output (every reader
    receives it): the output of the head's layer's output projection, or of the MLP."""
    layers, o_proj, mlp = PATHS[hf.config.model_type]
    layer = int(node[1:].split(".")[0])
    module = hf.get_submodule(f"{layers}.{layer}.{o_proj if node.startswith('a') else mlp}")
    h = _hook(module, "out", lambda x: x + delta.to(x))
    try:
        return _metric(_forward(hf, task.clean.ids, task.clean.mask), task)
    finally:
        h.remove()


def _setup(arch):
    hf = BUILDERS[arch]().double()
    model = fl.wrap(hf)
    return hf, model, padded_task(model, n=3, seq=6)


@pytest.mark.parametrize("arch", ARCHS)
def test_exact_nodes_equal_bare_hook_node_patching(arch):
    hf, model, task = _setup(arch)
    res = fl.circuits.exact_nodes(model, task, n_boot=50)
    with torch.no_grad():
        base = _metric(_forward(hf, task.clean.ids, task.clean.mask), task)
        ref = np.stack(
            [
                (_node_metric(hf, task, u, writer_change(hf, task, u)) - base).numpy()
                for u in res.node
            ]
        )
    assert len(res.node) == len([u for u in res.node if u.startswith(("a", "m"))]) > 0
    np.testing.assert_allclose(res.values, ref, atol=1e-6, rtol=0)
    assert np.abs(ref).max() > 1e-3
    np.testing.assert_allclose(res.score, res.values.mean(1))


@pytest.mark.parametrize("method", ["eap", "eap-ig"])
def test_eap_node_scores_are_the_derivative_along_the_change(method):
    hf, model, task = _setup("gpt_neox")
    edges = (
        fl.circuits.eap(model, task, n_boot=50)
        if method == "eap"
        else fl.circuits.eap_ig(model, task, steps=1, n_boot=50)
    )
    res = fl.circuits.node_scores(edges)
    eps = 1e-4
    with torch.no_grad():
        ref = np.stack(
            [
                (
                    (
                        _node_metric(hf, task, u, eps * writer_change(hf, task, u))
                        - _node_metric(hf, task, u, -eps * writer_change(hf, task, u))
                    )
                    / (2 * eps)
                ).numpy()
                for u in res.node
            ]
        )
    np.testing.assert_allclose(res.values, ref, atol=1e-6, rtol=0)
    assert np.abs(ref).max() > 1e-3 and res.method == method


def test_node_scores_round_trip_and_refuse_exact(tmp_path):
    _, model, task = _setup("gpt_neox")
    res = fl.circuits.node_scores(fl.circuits.eap(model, task, n_boot=50))
    back = NodeScores.load(res.save(tmp_path / "n"))
    np.testing.assert_array_equal(back.values, res.values)
    assert back.node == res.node and "node scores" in back.summary()
    assert res[res.node[0]] == pytest.approx(float(res.score[0]))
    with pytest.raises(fl.ArgumentError, match="exact_nodes"):
        fl.circuits.node_scores(fl.circuits.exact(model, task, n_boot=50))
