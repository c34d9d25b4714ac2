"""Multi-token answers by teacher forcing: the metric against a hand computation, fl.patch
against a plain hooked reference, attribution patching's two parts, the task file and the CLI
end to end, and the methods that refuse a multi-token task before any work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import faithlens as fl
from faithlens.cli import app
from faithlens.scrubbing import Hypothesis, ScrubData
from faithlens.tasks.interchange import InterchangeData
from faithlens.tasks.prompts_file import read_task_file
from tests.helpers.builders import zoo_mlp
from tests.helpers.reference import capture, patched_logits

# prompts of 4, 3 and 5 tokens; answers of 1 to 3 tokens (the wrong ones of other lengths)
CLEAN = [[5, 17, 3, 9], [8, 40, 12], [2, 61, 7, 30, 2]]
CORRUPT = [[5, 21, 3, 9], [8, 33, 12], [2, 14, 7, 30, 2]]
CORRECT = [[17, 3], [40], [61, 7, 30]]
WRONG = [[21], [33, 12, 4], [14, 7]]


def hand_logprob(hf, prompt, answer):
    """log p(answer | prompt): the answer appended, log-softmax of the plain model's logits
    summed over the answer's tokens."""
    ids = torch.tensor([prompt + answer])
    with torch.no_grad():
        lp = torch.log_softmax(hf(input_ids=ids).logits[0].float(), -1)
    return sum(float(lp[len(prompt) - 1 + j, t]) for j, t in enumerate(answer))


def test_task_layout_is_teacher_forcing(tiny_gpt2):
    task = fl.Task.multi_token(fl.wrap(tiny_gpt2), CLEAN, CORRUPT, CORRECT, WRONG)
    assert task.clean.ids[0].tolist()[:5] == [5, 17, 3, 9, 17]  # the answer's first token only
    assert task.corrupt.ids[0].tolist()[:5] == [5, 21, 3, 9, 17]  # the same continuation
    assert task.reads.tolist() == [[3, 4, 4], [2, 2, 2], [4, 5, 6]]
    assert task.answer_mask.tolist() == [[1, 1, 0], [1, 0, 0], [1, 1, 1]]
    assert task.positions.tolist() == [4, 2, 6]  # the last position read
    assert task.against is not None and task.against.reads.tolist()[1] == [2, 3, 4]
    assert task.seq_len == task.against.seq_len  # one width: the same positions in both parts
    assert task.metric.name == "seq_logprob_diff"


@pytest.mark.parametrize("which", ["clean", "corrupt"])
def test_metric_equals_hand_computation(tiny_gpt2, which):
    model = fl.wrap(tiny_gpt2)
    prompts = CLEAN if which == "clean" else CORRUPT
    pair = fl.Task.multi_token(model, CLEAN, CORRUPT, CORRECT, WRONG)
    alone = fl.Task.multi_token(model, CLEAN, CORRUPT, CORRECT)
    right = [hand_logprob(tiny_gpt2, p, a) for p, a in zip(prompts, CORRECT)]
    wrong = [hand_logprob(tiny_gpt2, p, a) for p, a in zip(prompts, WRONG)]
    np.testing.assert_allclose(alone.evaluate(model, which), right, atol=1e-4)
    np.testing.assert_allclose(pair.evaluate(model, which), np.subtract(right, wrong), atol=1e-4)
    assert alone.metric.name == "seq_logprob" and alone.against is None


def reference(hf, task, sites, positions, direction):
    """Per (condition, example): each part patched with bare hooks, its log-probabilities
    summed over the answer tokens, the parts subtracted."""
    total = 0
    for part, sign in ((task, 1.0), (task.against, -1.0)):
        base, src = (
            (part.corrupt, part.clean) if direction == "denoising" else (part.clean, part.corrupt)
        )
        rows = []
        for site in sites:
            source = capture(hf, site, src.ids, src.mask)
            for p in [None] if positions == "all" else range(part.seq_len):
                logits = patched_logits(hf, site, base.ids, base.mask, source, p)
                lp = torch.log_softmax(logits.float(), -1)
                r = torch.arange(part.n)[:, None]
                picked = lp[r, part.reads, part.answers] * part.answer_mask
                rows.append(picked.sum(-1))
        total = total + sign * torch.stack(rows).double().numpy()
    return total


@pytest.mark.parametrize("positions", ["all", "each"])
@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_patch_equals_plain_hooked_reference(tiny_llama, positions, direction):
    model = fl.wrap(tiny_llama)
    task = fl.Task.multi_token(model, CLEAN, CORRUPT, CORRECT, WRONG)
    sites = ["head.0.1", "mlp_out.0", "resid_pre.1", "attn_out.1"]
    res = fl.patch(model, task, sites, positions=positions, direction=direction, n_boot=50)
    ref = reference(tiny_llama, task, sites, positions, direction)
    assert res.patched.shape == ref.shape
    np.testing.assert_allclose(res.patched, ref, atol=1e-4, rtol=0)
    base, source = ("corrupt", "clean") if direction == "denoising" else ("clean", "corrupt")
    np.testing.assert_allclose(res.base, task.evaluate(model, base), atol=1e-4)
    np.testing.assert_allclose(res.source, task.evaluate(model, source), atol=1e-4)
    assert res.metric == "seq_logprob_diff" and res.patched.shape[1] == len(CLEAN)


def test_patch_in_small_chunks_and_from_a_checkpoint_gives_the_same_numbers(tiny_llama, tmp_path):
    model = fl.wrap(tiny_llama)
    task = fl.Task.multi_token(model, CLEAN, CORRUPT, CORRECT, WRONG)
    one = fl.patch(model, task, ["head.0.1", "mlp_out.1"], positions="each", n_boot=50)
    small = fl.patch(
        model, task, ["head.0.1", "mlp_out.1"], positions="each", n_boot=50, max_memory=4096,
        checkpoint=tmp_path / "ck",
    )  # fmt: skip
    np.testing.assert_allclose(small.patched, one.patched, atol=1e-5)
    assert (tmp_path / "ck" / "wrong" / "checkpoint.json").exists()  # the wrong part's chunks
    again = fl.patch(
        model, task, ["head.0.1", "mlp_out.1"], positions="each", n_boot=50, max_memory=4096,
        checkpoint=tmp_path / "ck",
    )  # fmt: skip
    np.testing.assert_array_equal(again.patched, small.patched)


def test_attribution_sums_its_two_parts(tiny_gpt2):
    model = fl.wrap(tiny_gpt2)
    pair = fl.Task.multi_token(model, CLEAN, CORRUPT, CORRECT, WRONG)
    right = fl.Task.multi_token(model, CLEAN, CORRUPT, CORRECT)
    wrong = fl.Task.multi_token(model, CLEAN, CORRUPT, WRONG)
    sites = ["head.0.0", "mlp_out.1"]
    got = fl.attribution_patch(model, pair, sites, n_boot=50)
    a = fl.attribution_patch(model, right, sites, n_boot=50)
    b = fl.attribution_patch(model, wrong, sites, n_boot=50)
    np.testing.assert_allclose(got.base, a.base - b.base, atol=1e-4)
    np.testing.assert_allclose(got.source, a.source - b.source, atol=1e-4)
    np.testing.assert_allclose(got.patched, a.patched - b.patched, atol=1e-4)
    assert not np.allclose(a.patched, b.patched)  # the two parts differ: the sum is a test


BAD_INPUTS = [
    (dict(correct=CORRECT[:2]), ["3 clean prompts", "2 correct answers"]),
    (dict(wrong=WRONG[:1]), ["1 wrong answers"]),
    (dict(correct=[[17, 3], [], [61]]), ["correct answer 1", "non-empty list"]),
    (dict(correct=[[17, 3], [40], [61, -7]]), ["correct answer 2", "integers >= 0"]),
    (dict(correct=[[17, 3], [True], [61]]), ["correct answer 1"]),
    (dict(wrong=[[17, 3], [33], [14]]), ["examples [0]", "same tokens"]),
    (dict(corrupt=[[5, 21, 3], [8, 33, 12], [2, 14, 7, 30, 2]]), ["example 0", "4 tokens", "3"]),
    (dict(clean=[], corrupt=[], correct=[], wrong=[]), ["at least one example"]),
]  # fmt: skip


@pytest.mark.parametrize("change, words", BAD_INPUTS)
def test_bad_inputs_are_refused_with_the_fix(tiny_gpt2, change, words):
    kw = dict(clean=CLEAN, corrupt=CORRUPT, correct=CORRECT, wrong=WRONG) | change
    with pytest.raises(fl.InputError) as e:
        fl.Task.multi_token(fl.wrap(tiny_gpt2), **kw)
    for w in words:
        assert w in str(e.value), f"{w!r} not in {e.value}"


def test_text_answers_need_a_tokenizer_and_text_is_tokenized():
    model = fl.load("zoo:induction")
    task = fl.Task.multi_token(model, ["t1 t2 t3 t1"], ["t1 t5 t3 t1"], ["t2 t3"], ["t5"])
    assert task.answers.tolist() == [[2, 3]] and task.reads.tolist() == [[3, 4]]
    with pytest.raises(fl.InputError, match="correct answer 0"):
        fl.Task.multi_token(model, ["t1 t2"], ["t1 t3"], [""], ["t3"])


def refusals(model, task):
    hyp = Hypothesis("everything matters", other="exact")
    return {
        "exact_nodes": lambda: fl.circuits.exact_nodes(model, task, n_boot=10),
        "dla": lambda: fl.direct_logit_attribution(model, task),
        "scrub": lambda: fl.scrub(model, task, hyp),
        "ScrubData": lambda: ScrubData.from_task(task),
        "das": lambda: InterchangeData.from_task(task),
        "audit": lambda: fl.audit(model, task, {"zero": [fl.Zero("head.0.0")]}, "resid_post.0"),
    }


@pytest.mark.parametrize("fn", ["exact_nodes", "dla", "scrub", "ScrubData", "das", "audit"])
def test_methods_that_cannot_score_it_refuse_before_work(tiny_gpt2, monkeypatch, fn):
    model = fl.wrap(tiny_gpt2)
    task = fl.Task.multi_token(model, CLEAN, CORRUPT, CORRECT, WRONG)

    def forbidden(*a, **k):
        raise AssertionError("a forward pass ran before the error")

    monkeypatch.setattr(fl.models.model.Model, "run", forbidden)
    with pytest.raises(fl.InputError) as e:
        refusals(model, task)[fn]()
    assert "multi-token answers" in str(e.value) and "fl.patch" in str(e.value)


def test_a_bidirectional_model_is_refused():
    # teacher forcing needs a causal model: a bidirectional one sees the answer it predicts
    model = fl.wrap(zoo_mlp())
    task = fl.Task.multi_token(model, CLEAN, CORRUPT, CORRECT, WRONG)
    with pytest.raises(fl.InputError, match="is not causal"):
        fl.patch(model, task, ["head.0.0"], n_boot=10)


def test_patch_refuses_last_and_a_single_token_metric(tiny_gpt2):
    model = fl.wrap(tiny_gpt2)
    task = fl.Task.multi_token(model, CLEAN, CORRUPT, CORRECT, WRONG)
    with pytest.raises(fl.InputError, match="no single metric position"):
        fl.patch(model, task, ["head.0.0"], positions="last")
    with pytest.raises(fl.InputError, match="SequenceLogProb"):
        task.with_metric("logit_diff")
    same = fl.Task.multi_token(model, CLEAN, CLEAN, CORRECT, WRONG)
    with pytest.raises(fl.InputError, match="degenerate"):
        fl.patch(model, same, ["head.0.0"])


def _file(tmp_path, rows):
    p = tmp_path / "multi.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


TEXT_ROWS = [
    {"clean": "t1 t2 t3 t1", "corrupt": "t1 t5 t3 t1", "answer": "t2 t3", "wrong": "t5"},
    {"clean": "t4 t6 t8 t4", "corrupt": "t4 t7 t8 t4", "answer": "t6 t8 t4", "wrong": "t7 t8"},
    {"clean": "t9 t2 t9", "corrupt": "t9 t3 t9", "answer": "t2", "wrong": "t3"},
]


def test_task_file_with_multi_token_answers_builds_the_same_task(tmp_path):
    model = fl.load("zoo:induction")
    task = read_task_file(_file(tmp_path, TEXT_ROWS)).build(model)
    ref = fl.Task.multi_token(
        model,
        [r["clean"] for r in TEXT_ROWS],
        [r["corrupt"] for r in TEXT_ROWS],
        [r["answer"] for r in TEXT_ROWS],
        [r["wrong"] for r in TEXT_ROWS],
    )
    assert task.name == "multi" and torch.equal(task.clean.ids, ref.clean.ids)
    assert torch.equal(task.against.clean.ids, ref.against.clean.ids)
    np.testing.assert_allclose(task.evaluate(model), ref.evaluate(model), atol=1e-6)
    logprob = read_task_file(_file(tmp_path, TEXT_ROWS)).build(model, metric="logprob")
    assert logprob.against is None and logprob.metric.name == "seq_logprob"
    with pytest.raises(fl.InputError, match="metric 'prob_diff' does not apply"):
        read_task_file(_file(tmp_path, TEXT_ROWS)).build(model, metric="prob_diff")
    ids = [
        {"clean_ids": [1, 2, 3, 1], "corrupt_ids": [1, 5, 3, 1], "answer_id": [2, 3], "wrong_id": 5},
        {"clean_ids": [4, 6, 4], "corrupt_ids": [4, 7, 4], "answer_id": 6, "wrong_id": [7]},
    ]  # fmt: skip
    by_ids = read_task_file(_file(tmp_path, ids)).build(model)
    assert by_ids.is_multi_token and by_ids.answers.tolist() == [[2, 3], [6, 6]]


def test_cli_patch_on_a_multi_token_task_file(tmp_path):
    path = _file(tmp_path, TEXT_ROWS)
    out = tmp_path / "res"
    args = ["patch", "--model", "zoo:induction", "--task", str(path), "--sites", "head"]
    res = CliRunner().invoke(app, [*args, "--positions", "each", "--out", str(out)])
    assert res.exit_code == 0, res.output
    back = fl.Result.load(out)
    assert back.metric == "seq_logprob_diff" and back.patched.shape[1] == len(TEXT_ROWS)
    model = fl.load("zoo:induction")
    task = read_task_file(path).build(model)
    np.testing.assert_allclose(back.source, task.evaluate(model, "clean"), atol=1e-5)
    np.testing.assert_allclose(back.base, task.evaluate(model, "corrupt"), atol=1e-5)
    last = CliRunner().invoke(app, [*args, "--positions", "last"])
    assert last.exit_code == 2 and "multi-token answers" in last.output.replace("\n", " ")


def test_shipped_multi_token_example_runs_on_the_induction_model():
    model = fl.load("zoo:induction")
    path = Path(__file__).resolve().parents[2] / "examples/tasks/induction_multi_ids.jsonl"
    task = read_task_file(path).build(model)
    assert task.is_multi_token and task.reads.shape == (4, 4)
    # the trained induction model continues the repeated sequence (a margin of nats, not a tie)
    clean, corrupt = task.evaluate(model, "clean"), task.evaluate(model, "corrupt")
    assert float(clean.mean()) > 1.0 and float(corrupt.mean()) < -1.0
