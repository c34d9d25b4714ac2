"""Faithfulness checks on the planted model: every check passes for the planted direction
where it should and fails for the decoy; formulas against hand computations."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
import torch

import faithlens as fl
from faithlens.representations import (
    FaithfulnessReport,
    LogitLensResult,
    PersistenceResult,
    Steering,
    SteeringResult,
    WritersResult,
    compare,
    faithfulness,
    logit_lens,
    on_distribution,
    persistence,
    specificity,
    steering_sweep,
    writers,
)
from faithlens.representations.checks import gini, measure
from faithlens.results import Result
from tests.helpers import builders
from tests.helpers.represent import decoy_reading, planted, planted_reading

FAST = {
    "n_random": 9,
    "n_stability": 20,
    "n_boot": 200,
    "persistence_tokens": 4,
    "divergence_metrics": ("nn_mse", "emd"),
}


@lru_cache(maxsize=1)
def report() -> FaithfulnessReport:
    pm = planted()
    return faithfulness(
        pm.model,
        pm.behaviour(16),
        planted_reading("pca"),
        layers=[1],
        pairs=pm.pairs(32),
        prompt="last",
        natural=pm.natural_prompts(64),
        **FAST,
    )


@lru_cache(maxsize=1)
def decoy_report() -> FaithfulnessReport:
    pm = planted()
    return faithfulness(
        pm.model,
        pm.behaviour(16),
        decoy_reading("pca"),
        layers=[1],
        pairs=pm.decoy_pairs(32),
        prompt="last",
        natural=pm.natural_prompts(64),
        **FAST,
    )


def test_planted_direction_passes_the_checks_it_should():
    v = report().verdicts()
    for check in (
        "causal: ablation",
        "causal: steer +",
        "causal: steer -",
        "specific: steer -",
        "specific: ablation",
        "stable",
        "on-distribution",
        "readable",
        "who writes it",
    ):
        assert v[check], (check, report().summary())
    # nothing carries the mode past its own token: a one-shot push does not persist
    assert not v["persistent"]
    w = report().writers
    top = w.loc[w["contribution"].abs().idxmax()]
    assert top["component"] == "mlp_out.1" and top["share"] > 0.9


def test_decoy_direction_fails_where_it_should():
    v = decoy_report().verdicts()
    assert v["stable"]  # it is a perfectly good reading of the decoy words...
    # ...but the behaviour does not use it
    for check in (
        "causal: ablation",
        "causal: steer +",
        "specific: steer -",
        "specific: ablation",
        "readable",
    ):
        assert not v[check], (check, decoy_report().summary())
    w = decoy_report().writers
    assert w.loc[w["contribution"].abs().idxmax(), "component"] == "embed"


def test_report_roundtrip_and_plot(tmp_path):
    rep = report()
    rep.save(tmp_path / "rep")
    back = Result.load(tmp_path / "rep")
    assert isinstance(back, FaithfulnessReport)
    assert back.verdicts() == rep.verdicts()
    assert not back.writers.empty and not back.persistence.empty
    assert "PASS" in rep.summary() and rep.plot().axes
    with pytest.raises(fl.InputError, match="no check"):
        rep.passed("magic")


def test_large_steering_at_every_token_is_off_distribution():
    pm = planted()
    r = planted_reading("pca")
    nat = pm.natural_prompts(64)
    prompts = pm.behaviour(16).prompts
    near = on_distribution(pm.model, r.steering(1, -1.0, prompt="last"), prompts, natural=nat)
    far = on_distribution(pm.model, r.steering(1, -5.0, prompt="last"), prompts, natural=nat)
    every = on_distribution(pm.model, r.steering(1, -1.0), prompts, natural=nat)
    assert near["nn_mse"]["ratio"] < 2.0
    assert far["nn_mse"]["ratio"] > 100 and every["nn_mse"]["ratio"] > 10
    with pytest.raises(fl.InputError, match="generated"):
        on_distribution(pm.model, r.steering(1, -1.0, when="generated"), prompts)
    with pytest.raises(fl.InputError, match="before every steered site"):
        on_distribution(pm.model, r.steering(1, -1.0), prompts, site="resid_post.0")


def test_compare_effects_are_paired_means_with_cis():
    pm = planted()
    b = pm.behaviour(12)
    r = planted_reading("pca")
    res = compare(
        pm.model,
        b,
        [r.steering(1, -1.0), r.ablation(1)],
        kinds=["steer", "ablate"],
        coefs=[-1.0, float("nan")],
        n_boot=300,
    )
    base = b.margin(pm.model)
    np.testing.assert_allclose(res.baseline, base)
    np.testing.assert_allclose(res.effect, (res.values - base).mean(1), atol=1e-12)
    assert np.all(res.effect_low <= res.effect) and np.all(res.effect <= res.effect_high)
    # -1 separation turns 'truthful' into 'deceptive': the margin flips sign (about -15 nats)
    assert res.effect[0] < -12 and res.effect_high[0] < 0
    # ablation removes the yes/no preference: the margin goes to about 0
    assert abs(float(res.values[1].mean())) < 0.5
    assert isinstance(res, SteeringResult) and "effect" in res.summary()
    assert res.row(res.conditions[1])["kind"] == "ablate"
    assert res.plot().axes


def test_dose_response_is_monotone():
    pm = planted()
    sw = steering_sweep(
        pm.model,
        planted_reading("pca"),
        pm.behaviour(8),
        [1],
        coefs=[-1.0, -0.5, -0.25],
        n_boot=200,
    )
    assert np.all(np.diff(sw.effect) > 0) and sw.coef == [-1.0, -0.5, -0.25]


def test_specificity_p_value():
    pm = planted()
    r = planted_reading("pca")
    res, p = specificity(pm.model, pm.behaviour(8), r.steering(1, -1.0), n_random=4)
    assert p == pytest.approx(1 / 5)
    assert res.kind == ["target"] + ["random"] * 4
    # random directions keep the norm of the steering vector
    st = r.steering(1, -1.0)
    rnd = st.random_like(3)
    assert rnd.norms()["resid_post.1"] == pytest.approx(st.norms()["resid_post.1"], rel=1e-5)
    assert float(rnd.vectors["resid_post.1"] @ st.vectors["resid_post.1"]) != 0


def test_rate_metric_judges_generations():
    pm = planted()
    b = pm.behaviour(6)
    r = planted_reading("pca")
    assert measure(pm.model, b, None, metric="rate", max_new_tokens=2).tolist() == [1.0] * 6
    assert measure(pm.model, b, r.steering(1, -1.0), metric="rate", max_new_tokens=2).sum() == 0
    labels = b.labels(b.generate(pm.model, r.steering(1, -1.0), max_new_tokens=2))
    assert set(labels) == {"negative"}
    with pytest.raises(fl.InputError, match="metric"):
        measure(pm.model, b, None, metric="accuracy")
    with pytest.raises(fl.InputError, match="one number per prompt"):
        measure(pm.model, b, None, metric=lambda m, s: np.zeros(3))


def test_persistence_one_shot_fades_continual_persists():
    pm = planted()
    r = planted_reading("pca")
    pr = persistence(pm.model, pm.behaviour(8), r.steering(1, -1.0), max_new_tokens=4, n_boot=200)
    assert isinstance(pr, PersistenceResult) and pr.values.shape == (3, 8, 4)
    one, cont = pr.schedules.index("one-shot"), pr.schedules.index("continual")
    # the first generated token ('yes') is hit by both; later tokens only by continual injection
    assert pr.mean[one, 0] < -5 and pr.mean[cont, 0] < -5
    assert abs(float(np.nanmean(pr.mean[one, 1:]))) < 0.5
    assert float(np.nanmean(pr.mean[cont, 1:])) < -1
    assert abs(pr.late_ratio()) < 0.2
    assert np.all(pr.mean[0] == 0)
    assert len(pr.to_frame()) == 12 and pr.plot().axes and "one-shot" in pr.summary()


def test_logit_lens_reads_yes_for_u_and_nothing_for_the_decoy():
    pm = planted()
    ll = logit_lens(pm.model, pm.direction, n_random=100)
    assert isinstance(ll, LogitLensResult)
    assert ll.top_tokens[0] == "yes" and ll.bottom_tokens[0] == "no" and ll.readable
    # by hand: RMSNorm(u) = sqrt(d) u, so logit(yes) = readout * sqrt(d), every other ~ 0
    logits = torch.zeros(pm.model.adapter.d_vocab)
    logits[pm.token("yes")] = 0.5 * np.sqrt(pm.model.d_model)
    logits[pm.token("no")] = -0.5 * np.sqrt(pm.model.d_model)
    lp = torch.log_softmax(logits.double(), -1)
    assert ll.entropy == pytest.approx(float(-(lp.exp() * lp).sum()), abs=0.02)
    dec = logit_lens(pm.model, pm.decoy, n_random=100)
    assert not dec.readable and dec.normalized > 0.999
    with pytest.raises(fl.InputError, match="width"):
        logit_lens(pm.model, torch.ones(3))
    assert "readable" in ll.summary() and ll.plot().axes


def test_writers_decompose_the_read_out_exactly_on_gpt2(tiny_gpt2):
    # GPT-2 has attention output biases and position embeddings: the parts must still add up
    m = fl.wrap(tiny_gpt2)
    g = torch.Generator().manual_seed(0)
    pairs = fl.representations.ContrastPairs(
        tuple(tuple(torch.randint(1, 90, (6,), generator=g).tolist()) for _ in range(6)),
        tuple(tuple(torch.randint(1, 90, (6,), generator=g).tolist()) for _ in range(6)),
    )
    r = torch.randn(m.d_model, generator=g)
    w = writers(m, pairs, r, 2, n_boot=100)
    assert w.residual < 1e-4
    assert len(w.components) == 1 + 3 * (m.n_heads + 2)
    per_pair_total = w.per_pair.sum(0)
    assert per_pair_total.mean() == pytest.approx(w.total, abs=1e-4)
    mid = writers(m, pairs, r, 1, site="resid_mid", n_boot=100)
    assert mid.residual < 1e-4 and "mlp_out.1" not in mid.components
    assert isinstance(w, WritersResult) and w.plot().axes and "writes" in w.summary()


def test_writers_on_the_planted_model_and_bad_input():
    pm = planted()
    w = writers(pm.model, pm.pairs(16), pm.direction, 1, n_boot=100)
    assert w.k80 == 1 and w.residual < 1e-4 and w.gini > 0.85
    top = w.top(1).iloc[0]
    assert top["component"] == "mlp_out.1" and top["contribution_ci_low"] > 0
    with pytest.raises(fl.InputError, match="resid_pre"):
        writers(pm.model, pm.pairs(4), pm.direction, 1, site="mlp_out")
    with pytest.raises(fl.InputError, match="out of range"):
        writers(pm.model, pm.pairs(4), pm.direction, 5)
    with pytest.raises(fl.InputError, match="pre-norm"):
        writers(fl.wrap(builders.bert()), pm.pairs(4), torch.ones(32), 0)


def test_gini():
    assert gini(np.array([1.0, 0, 0, 0])) == pytest.approx(0.75)
    assert gini(np.ones(5)) == pytest.approx(0.0)
    assert gini(np.zeros(3)) == 0.0


def test_faithfulness_bad_input():
    pm = planted()
    r = planted_reading("pca")
    b = pm.behaviour(4)
    with pytest.raises(fl.InputError, match="unknown checks"):
        faithfulness(pm.model, b, r, layers=[1], checks=["vibes"])
    with pytest.raises(fl.InputError, match="pairs"):
        faithfulness(pm.model, b, r, layers=[1])
    with pytest.raises(fl.InputError, match="no reading vector"):
        faithfulness(pm.model, b, r, layers=[4], pairs=pm.pairs(4))
    with pytest.raises(fl.InputError, match="positive"):
        faithfulness(pm.model, b, r, layers=[1], coef=-1, pairs=pm.pairs(4))
    with pytest.raises(fl.InputError, match="Steering"):
        compare(pm.model, b, [[]])
    with pytest.raises(fl.InputError, match="identical"):
        fl.representations.Behaviour(("a b",), (" yes",), (" yes",))
    assert isinstance(Steering({"resid_post.1": torch.ones(64)}).at("prompt"), Steering)


def test_covariance_null_draws_from_the_span_of_natural_activations():
    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(64, 2, generator=g))[0]  # a 2-d subspace
    natural = {"resid_post.1": torch.randn(50, 2, generator=g) @ basis.T}
    st = Steering({"resid_post.1": torch.ones(64) * 3})
    r = st.random_like(1, natural=natural).vectors["resid_post.1"]
    assert float(r.norm()) == pytest.approx(float(st.vectors["resid_post.1"].norm()), rel=1e-5)
    inside = basis @ (basis.T @ r)
    assert torch.allclose(inside, r, atol=1e-4)  # it lies in the span of the activations
    with pytest.raises(fl.ShapeError, match="natural activations"):
        st.random_like(1, natural={"resid_post.1": torch.ones(5, 3)})
    with pytest.raises(fl.InputError, match="no natural activations"):
        st.random_like(1, natural={"resid_post.0": torch.ones(5, 64)})


def test_isotropic_null_gives_the_same_planted_verdicts():
    pm = planted()
    r = planted_reading("pca")
    b = pm.behaviour(8)
    for null in ("isotropic", "covariance"):
        res, p = specificity(pm.model, b, r.ablation(1), n_random=4, null=null, n_boot=100)
        assert p == pytest.approx(1 / 5)
        assert res.kind[1:] == ["random_ablate"] * 4
    with pytest.raises(fl.InputError, match="null"):
        specificity(pm.model, b, r.ablation(1), null="uniform")


def test_explain_direction_certifies_the_planted_concept():
    from faithlens.representations import explain_direction
    from tests.helpers.represent import planted_acts

    pm = planted()
    acts = planted_acts()
    r = planted_reading("pca")
    plen = np.array([len(p.split()) for p in pm.pairs(64).positive]) > 4  # a distractor
    e = explain_direction(r, acts, 1, {"long prompt": plen}, n_boot=100)
    assert e.concepts == ("truthful", "long prompt")
    assert e.explanations()[e.units[0]] == "truthful"
    assert e.be_set()[0].tolist() == [True, False]
    with pytest.raises(fl.InputError, match="labels"):
        explain_direction(r, acts, 1, {"bad": np.ones(5)})
    with pytest.raises(fl.InputError, match="no reading vector"):
        explain_direction(r, acts, 3)


def test_too_few_random_directions_is_a_visible_caveat():
    # the issue: n_random=4 silently tested at p <= 0.2 instead of alpha = 0.05
    from faithlens.representations.checks.table import random_draws_needed, specificity_caveat

    assert random_draws_needed(0.05) == 19 and random_draws_needed(0.1) == 9
    assert specificity_caveat(19, 0.05) == "" and specificity_caveat(9, 0.1) == ""
    assert "p <= alpha=0.05" in specificity_caveat(4, 0.05)
    pm = planted()
    with pytest.warns(UserWarning, match=r"n_random=4 .* use n_random >= 19"):
        rep = faithfulness(
            pm.model,
            pm.behaviour(8),
            planted_reading("pca"),
            layers=[1],
            checks=["specific"],
            n_random=4,
            n_boot=100,
        )
    for _, row in rep.checks.iterrows():
        assert "p <= 0.2" in row["criterion"]
        assert "CAVEAT" in row["note"] and "n_random >= 19" in row["note"]
        assert "CAVEAT" in rep.summary()
