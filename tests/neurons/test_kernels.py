"""Vectorised kernels against scikit-learn, numpy and explicitly materialised resamples."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

import faithlens.neurons as N
from faithlens.neurons.kernels import (
    Problem,
    SoftWPMI,
    UnitBlock,
    auprc,
    auroc,
    moments,
    resample_counts,
    softwpmi_log_given,
    threshold_metric,
    threshold_stats,
)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    n, m = 240, 6
    c = (torch.rand(n, m, generator=g) < torch.linspace(0.08, 0.4, m)).float()
    x = torch.stack(
        [
            2 * c[:, 0] + torch.randn(n, generator=g),
            c[:, 2] - c[:, 3] + 0.5 * torch.randn(n, generator=g),
            torch.round(2 * torch.randn(n, generator=g)),  # many ties
            torch.randn(n, generator=g),
        ],
        1,
    )
    return x, c


def problem(x, c, alpha=0.1, thresholds=None, direction="unit_predicts_concept"):
    return Problem(
        x=x,
        c=c,
        alpha=None if thresholds is not None else alpha,
        thresholds=thresholds,
        direction=direction,
        perm=torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(1)),
    )


def materialise(x, c, counts):
    idx = torch.repeat_interleave(torch.arange(x.shape[0]), counts.long())
    return x[idx], c[idx]


def test_rank_and_moment_metrics_match_sklearn_and_numpy(data):
    x, c = data
    blk = UnitBlock(problem(x, c), slice(0, x.shape[1]))
    ones = torch.ones(1, x.shape[0])
    a, ap = auroc(blk, ones)[0], auprc(blk, ones)[0]
    mo = moments(blk, ones, ["correlation", "cosine"])
    for u in range(x.shape[1]):
        for m in range(c.shape[1]):
            assert a[u, m] == pytest.approx(roc_auc_score(c[:, m], x[:, u]), abs=1e-5)
            assert ap[u, m] == pytest.approx(average_precision_score(c[:, m], x[:, u]), abs=1e-5)
            assert mo["correlation"][0, u, m] == pytest.approx(
                np.corrcoef(x[:, u], c[:, m])[0, 1], abs=1e-5
            )
            cos = float(x[:, u] @ c[:, m] / (x[:, u].norm() * c[:, m].norm()))
            assert mo["cosine"][0, u, m] == pytest.approx(cos, abs=1e-5)


def test_weighted_kernels_equal_materialised_resamples(data):
    x, c = data
    prob = problem(x, c)
    blk = UnitBlock(prob, slice(0, x.shape[1]))
    counts = torch.from_numpy(resample_counts(x.shape[0], 5, seed=3))
    a, ap = auroc(blk, counts), auprc(blk, counts)
    mo = moments(blk, counts, ["correlation"])
    st = threshold_stats(blk, counts)
    k = math.ceil(0.1 * x.shape[0])
    for b in range(5):
        xb, cb = materialise(x, c, counts[b])
        for u in range(x.shape[1]):
            for m in range(c.shape[1]):
                assert a[b, u, m] == pytest.approx(roc_auc_score(cb[:, m], xb[:, u]), abs=1e-5)
                assert ap[b, u, m] == pytest.approx(
                    average_precision_score(cb[:, m], xb[:, u]), abs=1e-5
                )
                assert mo["correlation"][b, u, m] == pytest.approx(
                    np.corrcoef(xb[:, u], cb[:, m])[0, 1], abs=1e-4
                )
            assert st.fired[b, u] == pytest.approx(k)
            if u != 2:  # continuous: the resample's top k is unambiguous
                top = torch.argsort(xb[:, u], descending=True)[:k]
                assert torch.allclose(st.tp[b, u], cb[top].sum(0))


def test_threshold_metrics_by_hand(data):
    x, c = data
    prob = problem(x, c, alpha=0.1)
    blk = UnitBlock(prob, slice(0, 1))
    st = threshold_stats(blk, torch.ones(1, x.shape[0]))
    k = math.ceil(0.1 * x.shape[0])
    fire = torch.zeros(x.shape[0], dtype=torch.bool)
    fire[torch.argsort(x[:, 0], descending=True)[:k]] = True
    for m in range(c.shape[1]):
        cm = c[:, m].bool()
        tp = (fire & cm).sum().float()
        want = {
            "accuracy": (fire == cm).float().mean(),
            "iou": tp / (fire | cm).sum(),
            "f1": 2 * tp / (fire.sum() + cm.sum()),
            "precision": tp / fire.sum(),  # unit as classifier: P(concept | fires)
            "recall": tp / cm.sum(),
        }
        for name, v in want.items():
            got = threshold_metric(name, prob.direction, st)[0, 0, m]
            assert float(got) == pytest.approx(float(v), abs=1e-6), name
    # NeuronEval's convention swaps precision and recall
    prob2 = problem(x, c, alpha=0.1, direction="concept_predicts_unit")
    st2 = threshold_stats(UnitBlock(prob2, slice(0, 1)), torch.ones(1, x.shape[0]))
    assert torch.allclose(
        threshold_metric("precision", prob2.direction, st2),
        threshold_metric("recall", prob.direction, st),
    )


def test_fixed_threshold_fires_strictly_above(data):
    x, c = data
    thr = torch.tensor([0.5, 0.0, 0.0, 1.0])
    prob = problem(x, c, thresholds=thr)
    st = threshold_stats(UnitBlock(prob, slice(0, 4)), torch.ones(1, x.shape[0]))
    fire = x > thr
    assert torch.allclose(st.fired[0], fire.sum(0).float())
    assert torch.allclose(st.tp[0], fire.float().T @ c)


def test_paired_mode_equals_separate_problems(data):
    x, c = data
    g = torch.Generator().manual_seed(5)
    c2 = torch.stack([c, c[torch.randperm(c.shape[0], generator=g)], c, c.flip(0)])  # [U, n, M]
    paired = Problem(
        x=x,
        c=c2,
        alpha=0.1,
        thresholds=None,
        direction="unit_predicts_concept",
        perm=torch.arange(x.shape[0]),
    )
    counts = torch.from_numpy(resample_counts(x.shape[0], 3, seed=0))
    blk = UnitBlock(paired, slice(0, 4))
    st = threshold_stats(blk, counts)
    a = auroc(blk, counts)
    mo = moments(blk, counts, ["correlation", "cosine"])
    for u in range(4):
        single = Problem(
            x=x[:, u : u + 1],
            c=c2[u],
            alpha=0.1,
            thresholds=None,
            direction="unit_predicts_concept",
            perm=torch.arange(x.shape[0]),
        )
        sb = UnitBlock(single, slice(0, 1))
        ss = threshold_stats(sb, counts)
        assert torch.allclose(st.tp[:, u], ss.tp[:, 0], atol=1e-5)
        assert torch.allclose(st.pos[:, u], ss.pos, atol=1e-5)
        assert torch.allclose(a[:, u], auroc(sb, counts)[:, 0], atol=1e-5, equal_nan=True)
        mo1 = moments(sb, counts, ["correlation", "cosine"])
        for k in mo:
            assert torch.allclose(mo[k][:, u], mo1[k][:, 0], atol=1e-5, equal_nan=True)


def reference_softwpmi(x, c, cfg: SoftWPMI):
    """CLIP-Dissect's SoftWPMI written out per unit (the reference the kernel must match)."""
    logp = torch.log_softmax(cfg.a * c, dim=1)
    p = logp.exp()
    pi = torch.linspace(cfg.p_high, cfg.p_low, cfg.top_k)
    given = []
    for u in range(x.shape[1]):
        top = torch.argsort(x[:, u], descending=True)[: cfg.top_k]
        given.append(torch.log(pi[:, None] * p[top] + 1 - pi[:, None]).sum(0))
    g = torch.stack(given)
    prior = torch.logsumexp(g, 0) - math.log(x.shape[1])
    return g - cfg.lam * prior


def test_softwpmi_matches_the_reference(data):
    x, c = data
    cfg = SoftWPMI(top_k=20)
    xc = x[:, [0, 1, 3]]  # continuous units: the top-k is unambiguous
    res = N.explain(xc, c, "softwpmi", softwpmi=cfg, n_boot=50, seed=0)
    ref = reference_softwpmi(xc, c, cfg)
    assert np.allclose(res.scores[0], ref.numpy(), atol=1e-4)
    # a weighted resample equals the materialised one
    prob = problem(x, c)
    prob.softwpmi = cfg
    counts = torch.from_numpy(resample_counts(x.shape[0], 2, seed=9))
    logp = torch.log_softmax(cfg.a * c, dim=1)
    got = softwpmi_log_given(UnitBlock(prob, slice(0, 4)), counts, logp)
    for b in range(2):
        xb, cb = materialise(x, c, counts[b])
        pb = torch.log_softmax(cfg.a * cb, dim=1).exp()
        pi = torch.linspace(cfg.p_high, cfg.p_low, cfg.top_k)
        for u in [0, 1, 3]:  # continuous units: unambiguous top-k
            top = torch.argsort(xb[:, u], descending=True)[: cfg.top_k]
            want = torch.log(pi[:, None] * pb[top] + 1 - pi[:, None]).sum(0)
            assert torch.allclose(got[b, u], want, atol=1e-4)


def test_chunking_does_not_change_results(data):
    x, c = data
    kw = dict(metric=["iou", "auroc", "correlation"], n_boot=60, seed=4, alpha=0.1)
    big = N.explain(x, c, **kw)
    small = N.explain(x, c, max_memory=20_000, **kw)  # forces one unit and few resamples per chunk
    for f in ("scores", "lower", "upper", "freq"):
        assert np.allclose(getattr(big, f), getattr(small, f), atol=1e-5, equal_nan=True), f


def test_grouped_weights_resample_whole_groups():
    from faithlens.neurons.kernels import expand_weights

    groups = torch.tensor([0, 0, 1, 1, 1, 2])
    counts = torch.tensor([[2.0, 0.0, 1.0]])
    assert expand_weights(counts, groups).tolist() == [[2, 2, 0, 0, 0, 1]]
    assert resample_counts(50, 7, seed=1).sum(1).tolist() == [50.0] * 7


def test_auroc_with_a_few_ties_takes_the_sparse_path_and_matches_sklearn(data):
    """Continuous activations with the odd exact collision: the tied positions are fixed up one
    by one instead of gathering every position (faster), with the same mid-ranks."""
    x, c = data
    x = x[:, [0, 1, 3]].clone()
    x[5, 0] = x[7, 0]  # one pair of ties in unit 0
    x[[10, 11, 12], 2] = 0.3  # a triple in unit 2
    blk = UnitBlock(problem(x, c), slice(0, 3))
    tied = blk.tied_positions()
    assert tied is not None and tied[0].numel() == 5  # 2 + 3 tied positions
    counts = torch.from_numpy(resample_counts(x.shape[0], 4, seed=5))
    a = auroc(blk, counts)
    for b in range(4):
        xb, cb = materialise(x, c, counts[b])
        for u in range(3):
            for m in range(c.shape[1]):
                assert a[b, u, m] == pytest.approx(roc_auc_score(cb[:, m], xb[:, u]), abs=1e-5)
    # many ties (rounded values) take the dense path
    many = UnitBlock(problem(torch.round(x), c), slice(0, 3))
    assert many.ascending()[1] is not None and many.tied_positions() is None
