"""The weights shipped in the package: they load, meet their targets, and have model cards."""

from __future__ import annotations

import pytest
import torch

import faithlens as fl
from faithlens import zoo
from faithlens.stats import proportion_interval
from faithlens.tasks import induction as ind
from faithlens.tasks import paren as par
from faithlens.zoo.recipes import TEST_SEED


@pytest.fixture(scope="module")
def paren():
    return fl.load("zoo:paren")


@pytest.fixture(scope="module")
def induction():
    return fl.load("zoo:induction")


@pytest.mark.parametrize("name", ["paren", "induction"])
def test_shipped_files(name):
    entry = {e.name: e for e in zoo.entries()}[name]
    assert entry.size_bytes <= 2 * 1024 * 1024
    assert entry.info["name"] == name and entry.info["seconds"] < 15 * 60
    card = zoo.card(name)
    for section in ("## Architecture", "## Data", "## Recipe", "## Evaluation", "## Training time"):
        assert section in card
    assert "All targets met" in card


def test_unknown_zoo_model():
    with pytest.raises(fl.InputError, match="zoo models: \\['induction', 'paren'\\]"):
        fl.load("zoo:gpt5")


def test_paren_accuracy_on_fresh_strings(paren):
    data = par.ParenData.sample(4000, seed=TEST_SEED)
    d = zoo.ParenRecipe().scores(paren.module, data)
    correct = ((d > 0).float() == data.labels).sum()
    iv = proportion_interval(int(correct), len(data))
    assert float(iv.estimate) >= 0.995 and float(iv.low) >= 0.99


def test_paren_reads_strings(paren):
    assert repr(paren).startswith("faithlens.Model('zoo:paren'")
    strings = ["(())", "(()", "())(", "()()()", ")(", "((()())())"]
    out = paren.run(strings, logits_at=0).logits[:, 0]
    pred = (out[:, par.BALANCED] > out[:, par.UNBALANCED]).tolist()
    assert pred == [True, False, False, True, False, True]
    assert paren.to_str_tokens(paren.to_tokens("()")[0]) == ["[START]", "(", ")", "[END]"]
    with pytest.raises(fl.InputError, match="not in this model's vocabulary"):
        paren.run(["(a)"])


def test_paren_task_contrast(paren):
    task = par.paren_task(300, seed=1)
    clean = task.evaluate(paren)
    corrupt = task.evaluate(paren, which="corrupt")
    # logit(correct) - logit(wrong) has the right sign on 300 / 300 clean and 299 / 300 corrupted
    # strings (the corrupted ones have the other label); > 0.99 failed at 297. The 99.9% Wilson
    # lower bounds (0.965, 0.959) clear 0.94, which holds down to 296 / 300.
    for right in ((clean > 0), (corrupt < 0)):
        k, n = int(right.sum()), right.numel()
        assert float(proportion_interval(k, n, level=0.999).low) > 0.94, (k, n)
    bce = task.with_metric("bce").evaluate(paren)
    assert float(bce.mean()) < 0.05


# ---------------------------------------------------------------------------------------------
# induction
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ind_data():
    return ind.InductionData.sample(300, seed=TEST_SEED)


def test_induction_loss_far_lower_on_repeats(induction, ind_data):
    by = zoo.InductionRecipe().losses_by_kind(induction.module, ind_data)
    copy = by["copy"][~torch.isnan(by["copy"])]
    markov = by["markov"]
    assert float(copy.mean()) < float(markov.mean()) / 3
    # within 0.3 nats of the best possible loss on Markov tokens (uniform guessing: 4.85)
    assert float(markov.mean()) < ind_data.markov_loss_floor() + 0.3


def test_previous_token_and_induction_heads(induction, ind_data):
    scores = zoo.head_scores(induction.module, ind_data)
    prev, indu = scores["prev_token"], scores["induction"]
    p_head = int(prev[0].argmax())
    i_head = int(indu[1].argmax())
    # uniform attention would give about 1/t (~0.03 here)
    assert prev[0, p_head] > 0.8 and indu[1, i_head] > 0.4
    # each is specific: no layer-0 head does induction, the induction heads do not look back
    # one token
    assert indu[0].max() < 0.1 and prev[1].max() < 0.1


def test_ablations_show_the_circuit(induction, ind_data):
    """Mean-ablating the previous-token head or the induction head(s) destroys the loss on
    repeated tokens and leaves Markov tokens nearly untouched."""
    recipe = zoo.InductionRecipe()
    scores = zoo.head_scores(induction.module, ind_data)
    p_heads = [h for h in range(induction.n_heads) if scores["prev_token"][0, h] > 0.5]
    i_heads = [h for h in range(induction.n_heads) if scores["induction"][1, h] > 0.3]
    assert p_heads and i_heads
    base = recipe.losses_by_kind(induction.module, ind_data)

    def ablated(sites):
        ivs = [fl.Mean.fit(induction, s, ind_data.ids) for s in sites]
        losses = []
        with torch.no_grad():
            out = induction.run(ind_data.ids, ivs)
            losses = ind.token_losses(out.logits, ind_data.ids)
        res = {}
        for kind in (ind.KIND_MARKOV, ind.KIND_COPY):
            m = ind_data.target_mask(kind)
            res[ind.KIND_NAMES[kind]] = float(losses[m].mean())
        return res

    copy0 = float(torch.nanmean(base["copy"]))
    markov0 = float(torch.nanmean(base["markov"]))
    for sites in ([f"head.0.{h}" for h in p_heads], [f"head.1.{h}" for h in i_heads]):
        got = ablated(sites)
        assert got["copy"] > copy0 + 0.5 * (markov0 - copy0), sites
        assert got["markov"] < markov0 + 0.25, sites


def test_tasks_registered_for_the_cli(paren, induction):
    t = fl.tasks.build("paren", paren, n=8, seed=0)
    assert t.n == 8 and t.name == "paren-opposite"
    t = fl.tasks.build("induction", induction, n=8, seed=0)
    assert t.n == 8 and int(t.clean.ids.max()) < 128
    with pytest.raises(fl.InputError, match="zoo:induction"):
        fl.tasks.build("induction", paren, n=8)
