"""EAP against an independent gradient-times-difference reference, and against exact patching
where the model is linear enough."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import faithlens as fl
from faithlens.circuits import connected
from faithlens.zoo import ZooConfig, ZooTransformer
from tests.helpers.builders import BUILDERS
from tests.helpers.circuits_reference import reference_eap, reference_eap_at
from tests.helpers.tasks import padded_task

ARCHS = [
    "llama",
    "gpt_neox",
    pytest.param("gpt2", marks=pytest.mark.slow),
    pytest.param("faithlens_zoo", marks=pytest.mark.slow),
    "faithlens_zoo-attn_only",
]


@pytest.mark.parametrize("arch", ARCHS)
def test_eap_equals_gradient_times_difference(arch):
    hf = BUILDERS[arch]().double()
    model = fl.wrap(hf)
    task = padded_task(model, n=3, seq=6)
    before = [p.requires_grad for p in hf.parameters()]
    res = fl.circuits.eap(model, task, n_boot=50)
    ref = reference_eap(hf, task, res.edge).numpy()
    np.testing.assert_allclose(res.values, ref, atol=1e-8, rtol=0)
    assert np.abs(ref).max() > 1e-3
    assert res.method == "eap"
    # gradients were taken with respect to activations only
    assert [p.requires_grad for p in hf.parameters()] == before
    assert all(p.grad is None for p in hf.parameters())


def _near_task(hf, n=4, seq=6, eps=1e-3):
    """Each corrupted prompt swaps one token for a reserved token whose embedding is the clean
    token's plus ``eps`` noise: every writer's change is small, so the model is linear in it."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 80, (n, seq), generator=g)
    corrupt = ids.clone()
    with torch.no_grad():
        for i in range(n):
            spare = 90 + i
            corrupt[i, seq - 3] = spare
            noise = torch.randn(hf.embed.weight.shape[1], generator=g).to(hf.embed.weight)
            hf.embed.weight[spare] = hf.embed.weight[ids[i, seq - 3]] + eps * noise
    answers = torch.randint(1, 80, (n, 2), generator=g)
    mask = torch.ones_like(ids)
    return fl.Task(
        name="near",
        clean=fl.Inputs(ids=ids, mask=mask),
        corrupt=fl.Inputs(ids=corrupt, mask=mask.clone()),
        answers=answers,
        positions=torch.full((n,), seq - 1),
    )


def test_eap_approximates_exact_when_changes_are_small():
    cfg = ZooConfig(n_layers=2, n_heads=4, d_model=32, d_vocab=97, n_ctx=64, init_std=0.2, d_mlp=48)
    hf = ZooTransformer(cfg)
    hf.reset_parameters(generator=torch.Generator().manual_seed(4))
    hf = hf.eval().double()
    model = fl.wrap(hf)
    task = _near_task(hf)
    approx = fl.circuits.eap(model, task, n_boot=50)
    exact = fl.circuits.exact(model, task, n_boot=50)
    scale = np.abs(exact.values).max()
    assert scale > 1e-6
    assert np.abs(approx.values - exact.values).max() < 0.01 * scale
    assert np.corrcoef(approx.score, exact.score)[0, 1] > 0.999


@pytest.mark.parametrize("arch", ["llama", "gpt_neox"])
def test_eap_per_position_equals_gradient_times_difference_at_each_position(arch):
    hf = BUILDERS[arch]().double()
    model = fl.wrap(hf)
    task = padded_task(model, n=3, seq=6)
    whole = fl.circuits.eap(model, task, n_boot=20)
    each = fl.circuits.eap(model, task, n_boot=20, positions="each")
    seq = task.seq_len
    assert each.edge[:2] == [f"{whole.edge[0]}@0", f"{whole.edge[0]}@1"]
    values = each.values.reshape(len(whole.edge), seq, task.n)
    ref = reference_eap_at(hf, task, whole.edge).numpy()
    np.testing.assert_allclose(values, ref, atol=1e-8, rtol=0)
    assert np.abs(ref).max() > 1e-3
    # summed over positions: the edge's EAP value
    np.testing.assert_allclose(values.sum(1), whole.values, atol=1e-10, rtol=0)
    ig = fl.circuits.eap_ig(model, task, steps=1, n_boot=20, positions="each")
    np.testing.assert_allclose(ig.values, each.values, atol=1e-12, rtol=0)


def test_per_position_scores_select_and_evaluate_circuits():
    """Per-position scores rank (edge, position) pairs: the greedy selection grows them from
    the logits, the curve's sizes are fractions of the pairs and each size is the faithfulness
    of that top-k of pairs; scrubbing (whole activations) refuses them."""
    model = fl.wrap(BUILDERS["faithlens_zoo-attn_only"]().double())
    task = padded_task(model, n=3, seq=5)
    each = fl.circuits.eap(model, task, n_boot=20, positions="each")
    g = each.greedy(12)
    assert 0 < len(g) <= 12 and all("@" in e for e in g.edges)
    assert connected(g.edges, each.edge) == list(g.edges)
    assert "logits" in g.nodes and all("@" not in n for n in g.nodes)
    sizes = (0.02, 0.1, 1.0)
    curve = fl.circuits.faithfulness_curve(model, task, each, sizes=sizes, n_boot=50)
    assert curve.n_graph_edges == len(each.edge) and curve.meta["positions"] == "each"
    assert curve.edges.tolist() == [int(p * len(each.edge)) for p in sizes]
    for i, k in enumerate(curve.edges.tolist()[:2]):
        one = fl.circuits.faithfulness(model, task, each.top_k(k), n_boot=20)
        np.testing.assert_allclose(curve.patched[i], one.patched, atol=1e-12, rtol=0)
    assert curve.faithfulness[-1] == pytest.approx(1.0, abs=1e-9)
    assert g.plot() is not None
    whole = fl.circuits.eap(model, task, n_boot=20)
    with pytest.raises(fl.InputError, match="another edge graph"):
        fl.circuits.faithfulness_curve(model, padded_task(model, n=3, seq=6), each)
    with pytest.raises(fl.InputError, match="per-position edge"):
        g.to_hypothesis()
    assert len(whole.edge) * task.seq_len == len(each.edge)
    with pytest.raises(fl.ArgumentError, match="positions"):
        fl.circuits.eap(model, task, positions=None)
