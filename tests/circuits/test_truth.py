"""Edge rankings scored against a true circuit: the AUROC and its bootstrap interval."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import faithlens as fl
from faithlens.circuits.truth import auroc
from faithlens.errors import ArgumentError
from faithlens.zoo import tracr as T
from tests.helpers.result_builders import edge_scores


def test_auroc_equals_sklearn_with_ties():
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=40), 1)  # many ties
    truth = rng.random(40) < 0.3
    assert auroc(scores, truth) == pytest.approx(roc_auc_score(truth, scores))
    assert auroc(np.zeros(10), np.arange(10) < 3) == 0.5  # every edge tied: chance
    assert auroc(np.arange(10.0), np.arange(10) >= 7) == 1.0


def test_edge_auroc_interval_and_checks():
    s = edge_scores()
    truth = s.edge[:2]
    iv = fl.circuits.edge_auroc(s, truth, n_boot=200, seed=1)
    assert iv.ci_low <= iv.estimate <= iv.ci_high and iv.level == 0.95
    again = fl.circuits.edge_auroc(s, truth, n_boot=200, seed=1)
    assert again.ci_low == iv.ci_low
    with pytest.raises(ArgumentError, match="truth"):
        fl.circuits.edge_auroc(s, ["nope->logits"])
    with pytest.raises(ArgumentError, match="some but not all"):
        fl.circuits.edge_auroc(s, s.edge)
    with pytest.raises(ArgumentError, match="one string"):
        fl.circuits.edge_auroc(s, s.edge[0])
    with pytest.raises(ArgumentError, match="by"):
        fl.circuits.edge_auroc(s, truth, by="rank")
    with pytest.raises(ArgumentError, match="rtol"):
        fl.circuits.edge_auroc(s, truth, rtol=-1)


def test_float_noise_ties_with_zero():
    """A score of 1e-19 (a gradient that is zero in exact arithmetic) ties with exact zeros
    under the default rtol, and outranks them with rtol=0."""
    s = edge_scores()
    values = np.zeros_like(s.values)
    values[0] = 1.0  # a true edge found
    values[1] = 1e-19  # a true edge "found" by noise
    noisy = dataclasses.replace(s, values=values, score=values.mean(-1))
    truth = s.edge[:2]
    assert fl.circuits.edge_auroc(noisy, truth, n_boot=20).estimate == 0.75
    assert fl.circuits.edge_auroc(noisy, truth, rtol=0.0, n_boot=20).estimate == 1.0


@pytest.mark.parametrize("program", list(T.TRACR_PROGRAMS))
def test_exact_patching_recovers_tracrs_circuit(program):
    """Exact patching ranks the true circuit of a compiled program first: AUROC near 1."""
    model = fl.load(f"zoo:{T.zoo_name(program)}")
    task = T.tracr_task(program, n=24)
    scores = fl.circuits.exact(model, task, n_boot=50)
    iv = fl.circuits.edge_auroc(scores, T.tracr_circuit(program).edges, n_boot=200)
    assert iv.estimate >= 0.95 and iv.ci_low >= 0.9


def test_eap_misses_edges_behind_tracrs_flat_steps():
    """EAP's gradient through tracr's MLPs that turn a count into a category (a table of sharp
    ReLU steps, flat at every count) and through its saturated attention is zero at the clean
    input, so on hist it scores the edges before the MLP as zero while exact patching finds
    them: AUROC 1 against at most 0.75."""
    model = fl.load("zoo:tracr_hist")
    task = T.tracr_task("hist", n=24)
    truth = T.tracr_circuit("hist").edges
    ex = fl.circuits.exact(model, task, n_boot=50)
    ea = fl.circuits.eap(model, task, n_boot=50)
    assert fl.circuits.edge_auroc(ex, truth, n_boot=100).estimate == 1.0
    assert fl.circuits.edge_auroc(ea, truth, n_boot=100).estimate <= 0.75
    before_mlp = [i for i, e in enumerate(ea.edge) if e in ("a0.h0->m0", "input->a0.h0<q>")]
    assert np.abs(ea.score[before_mlp]).max() < 1e-6
    assert np.abs(ex.score[before_mlp]).min() > 0.3


def test_eap_sees_shuffle_dyck_only_after_its_comparisons():
    """shuffle_dyck compares the numerical balance with 0 in MLP m3 (``balance < 0``,
    ``balance == 0``: sharp steps) and negates the numerical ``has_neg`` in m4: EAP's gradient
    is zero upstream of both, so it finds 4 of the 12 true edges (AUROC 2/3), while exact
    patching gives every true edge an effect of at least 0.5. pair_balance, the same balance
    without the comparisons (linear in what the corruption changes), is found whole."""
    model = fl.load("zoo:tracr_shuffle_dyck")
    task = T.tracr_task("shuffle_dyck", n=12)
    truth = T.tracr_circuit("shuffle_dyck").edges
    ex = fl.circuits.exact(model, task, n_boot=20)
    ea = fl.circuits.eap(model, task, n_boot=20)
    blind = ["input->m0", "m0->a1.h0<v>", "a1.h1->m2", "m2->m3", "m3->a4.h1<v>", "a4.h1->m4"]
    idx = [ea.edge.index(e) for e in blind]
    assert np.abs(ea.score[idx]).max() < 1e-12
    assert np.abs(ex.score[[ex.edge.index(e) for e in truth]]).min() > 0.5
    assert fl.circuits.edge_auroc(ea, truth, n_boot=20).estimate == pytest.approx(2 / 3)
    pb = fl.load("zoo:tracr_pair_balance")
    ea_pb = fl.circuits.eap(pb, T.tracr_task("pair_balance", n=12), n_boot=20)
    assert fl.circuits.edge_auroc(ea_pb, T.tracr_circuit("pair_balance").edges).estimate == 1.0


@pytest.mark.parametrize("program", ["count", "pair_balance"])
def test_acdc_keeps_exactly_tracrs_circuit(program):
    """ACDC (KL, tau 0.01) prunes every edge outside a compiled program's circuit (their
    effect is exactly 0) and keeps every edge inside it, on a categorical and a numerical
    program."""
    model = fl.load(f"zoo:{T.zoo_name(program)}")
    scores = fl.circuits.acdc(model, T.tracr_task(program, n=16), n_boot=20)
    assert set(scores.kept().edges) == set(T.tracr_circuit(program).edges)


def test_exact_patching_agrees_with_the_induction_card():
    """zoo:induction (trained) against its card's circuit without the induction heads' query
    edges (the task's corruption never changes the query tokens): exact patching ranks it
    first (0.989 [0.939, 0.993] on 64 examples in docs/circuits.md; here 32, with a margin)."""
    prev, ind = (2, 3), (0, 1, 2, 3)
    truth = [f"input->a0.h{p}<v>" for p in prev]
    for h in ind:
        truth += [f"a0.h{p}->a1.h{h}<k>" for p in prev]
        truth += [f"input->a1.h{h}<v>", f"a1.h{h}->logits"]
    model = fl.load("zoo:induction")
    task = fl.tasks.induction.induction_task(n=32, seed=0)
    scores = fl.circuits.exact(model, task, n_boot=50)
    iv = fl.circuits.edge_auroc(scores, truth, n_boot=200)
    assert iv.estimate >= 0.9 and iv.ci_low >= 0.8
    with_q = truth + [f"input->a1.h{h}<q>" for h in ind]
    assert fl.circuits.edge_auroc(scores, with_q, n_boot=50).estimate < iv.estimate - 0.1
