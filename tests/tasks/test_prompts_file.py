"""A task from your own data: JSON-lines files of text or token ids, checked line by line
before any model work (errors name the file, the line and the field), built with
Task.from_prompts / Task.from_token_ids."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import faithlens as fl
from faithlens.tasks.prompts_file import is_task_file, read_task_file

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "tasks"


def write(tmp_path, *lines, name="t.jsonl"):
    p = tmp_path / name
    p.write_text("".join(line + "\n" for line in lines))
    return p


def line(**kw):
    return json.dumps(kw)


TEXT = line(clean="t1 t2 t3 t1", corrupt="t1 t5 t3 t1", answer="t2", wrong="t5")
IDS = line(clean_ids=[1, 2, 3, 1], corrupt_ids=[1, 5, 3, 1], answer_id=2, wrong_id=5)


@pytest.fixture(scope="module")
def induction():
    return fl.load("zoo:induction")


def test_text_file_builds_the_same_task_as_from_prompts(tmp_path, induction):
    p = write(tmp_path, TEXT, "", line(clean="t4 t6", corrupt="t4 t7", answer="t6", wrong="t7"))
    tf = read_task_file(p)
    assert (tf.form, len(tf), tf.lines) == ("text", 2, (1, 3))
    task = tf.build(induction)
    ref = fl.Task.from_prompts(
        induction, ["t1 t2 t3 t1", "t4 t6"], ["t1 t5 t3 t1", "t4 t7"], [("t2", "t5"), ("t6", "t7")]
    )
    assert task.name == "t"
    assert torch.equal(task.clean.ids, ref.clean.ids)
    assert torch.equal(task.corrupt.ids, ref.corrupt.ids)
    assert task.answers.tolist() == [[2, 5], [6, 7]] == ref.answers.tolist()
    assert task.positions.tolist() == [3, 1]


def test_id_file_builds_a_padded_task(tmp_path, induction):
    p = write(tmp_path, IDS, line(clean_ids=[4, 6], corrupt_ids=[4, 7], answer_id=6, wrong_id=7))
    task = read_task_file(p).build(induction)
    assert task.clean.ids.tolist() == [[1, 2, 3, 1], [4, 6, 0, 0]]
    assert task.corrupt.mask.tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert task.positions.tolist() == [3, 1]
    assert task.answers.tolist() == [[2, 5], [6, 7]]
    # the same as the token-id constructor
    same = fl.Task.from_token_ids([[1, 2, 3, 1], [4, 6]], [[1, 5, 3, 1], [4, 7]], [(2, 5), (6, 7)])
    assert torch.equal(same.clean.ids, task.clean.ids) and torch.equal(
        same.positions, task.positions
    )
    # and it runs: the metric on every example
    assert task.evaluate(induction).shape == (2,)


def test_shipped_example_files_read():
    assert read_task_file(EXAMPLES / "ioi_prompts.jsonl").form == "text"
    assert read_task_file(EXAMPLES / "induction_ids.jsonl").form == "ids"
    sets = read_task_file(EXAMPLES / "induction_sets_ids.jsonl")
    assert sets.form == "ids" and sets.has_sets


def _last_logits(model, task):
    """A plain forward pass of the clean prompts: the logits at each example's last token."""
    with torch.no_grad():
        logits = model.module(task.clean.ids).logits
    return logits[torch.arange(task.n), task.positions]


def test_answer_sets_score_log_p_of_each_set(tmp_path, induction):
    # a set of correct answers against a set of wrong ones, by hand from the logits
    p = write(
        tmp_path,
        line(clean="t1 t2 t3 t1", corrupt="t1 t5 t3 t1", answer=["t2", "t6"], wrong="t5"),
        line(clean="t4 t6", corrupt="t4 t7", answer="t6", wrong=["t7", "t8", "t9"]),
    )
    tf = read_task_file(p)
    assert tf.has_sets
    task = tf.build(induction)
    assert isinstance(task.metric, fl.tasks.AnswerSet) and task.metric.n_correct == 2
    assert task.answers.tolist() == [[2, 6, 5, 5, 5], [6, 6, 7, 8, 9]]  # padded by repeats
    lg = _last_logits(induction, task).double()
    want = torch.stack(
        [
            lg[0, [2, 6]].logsumexp(0) - lg[0, 5],
            lg[1, 6] - lg[1, [7, 8, 9]].logsumexp(0),
        ]
    )
    got = task.evaluate(induction).double()
    assert torch.allclose(got, want, atol=1e-4), (got, want)
    # token ids: the same sets as lists of one-id lists give the same task
    ids = write(
        tmp_path,
        line(clean_ids=[1, 2, 3, 1], corrupt_ids=[1, 5, 3, 1], answer_id=[[2], [6]], wrong_id=5),
        line(clean_ids=[4, 6], corrupt_ids=[4, 7], answer_id=[6], wrong_id=[[7], [8], [9]]),
        name="ids.jsonl",
    )
    same = read_task_file(ids).build(induction)
    assert same.answers.tolist() == task.answers.tolist() and same.metric == task.metric
    assert torch.allclose(same.evaluate(induction).double(), want, atol=1e-4)
    # "max" through an AnswerSet metric object; other metrics do not apply to sets
    mx = tf.build(induction, metric=fl.tasks.AnswerSet(reduce="max"))
    assert mx.metric == fl.tasks.AnswerSet(n_correct=2, reduce="max")
    with pytest.raises(fl.InputError, match=r"are sets.*'prob_diff' does not apply"):
        tf.build(induction, metric="prob_diff")


def test_a_file_without_sets_keeps_its_pairs(tmp_path, induction):
    task = read_task_file(write(tmp_path, TEXT)).build(induction)
    assert not read_task_file(write(tmp_path, TEXT)).has_sets
    assert task.metric.name == "logit_diff" and task.answers.tolist() == [[2, 5]]


def test_is_task_file():
    assert is_task_file("my.jsonl") and is_task_file("data/tasks")
    assert not is_task_file("ioi")


BAD_FILES = [
    # (lines, words the error must contain)
    ([], ["has no examples"]),
    (["", "  "], ["has no examples"]),
    (['{"clean": "t1"'], [":1:", "not valid JSON"]),
    (["[1, 2]"], [":1:", "JSON object"]),
    ([TEXT, line(clean="t1", corrupt="t2", answer="t3")], [":2:", "'wrong'", "missing"]),
    ([line(clean="t1", corrupt="t2", answer="t3", wrong="t4", anwser="t5")], ["'anwser'"]),
    ([line(clean="t1", corrupt="t2", answer="t3", wrong=5)], ["'wrong'", "string"]),
    ([line(clean="t1", corrupt="t2", answer="t3", wrong="t3")], ["'answer'", "'wrong'"]),
    ([TEXT, IDS], [":2:", "one form per file"]),
    ([line(clean_ids=[1, 2], corrupt_ids=[1], answer_id=3, wrong_id=4)], ["'corrupt_ids'", "same length"]),
    ([line(clean_ids=[], corrupt_ids=[], answer_id=3, wrong_id=4)], ["'clean_ids'", "non-empty"]),
    ([line(clean_ids=[1, -2], corrupt_ids=[1, 2], answer_id=3, wrong_id=4)], ["'clean_ids'"]),
    ([line(clean_ids=[1, 2], corrupt_ids=[1, 3], answer_id=[], wrong_id=4)], ["'answer_id'", "non-empty list"]),
    ([line(clean_ids=[1, 2], corrupt_ids=[1, 3], answer_id=[3, -4], wrong_id=4)], ["'answer_id'", "token id"]),
    ([line(clean_ids=[1, 2], corrupt_ids=[1, 3], answer_id=[3, 4], wrong_id=[3, 4])], ["'answer_id'", "'wrong_id'"]),
    ([line(clean_ids=[1, 2], corrupt_ids=[1, 3], answer_id=True, wrong_id=4)], ["'answer_id'"]),
    # answer sets
    ([line(clean="t1", corrupt="t2", answer=[], wrong="t4")], ["'answer'", "answer set", "non-empty list"]),
    ([line(clean="t1", corrupt="t2", answer=["t3", 5], wrong="t4")], ["'answer'", "answer set"]),
    ([line(clean="t1", corrupt="t2", answer=["t3", ""], wrong="t4")], ["'answer'", "answer set"]),
    ([line(clean="t1", corrupt="t2", answer=["t3", "t3"], wrong="t4")], ["'answer'", "t3 twice"]),
    ([line(clean="t1", corrupt="t2", answer=["t3", "t5"], wrong=["t4", "t5"])], ["'answer'", "'wrong'", "both list t5"]),
    ([line(clean="t1", corrupt="t2", answer="t3", wrong=["t4", "t3"])], ["'wrong'", "both list t3"]),
    ([line(clean="t1", corrupt="t2", answer="t3", wrong={"set": ["t4"]})], ["'wrong'", "non-empty string"]),
    ([line(clean_ids=[1, 2], corrupt_ids=[1, 3], answer_id=[[3, 4], [5]], wrong_id=6)], ["'answer_id'", "one token id"]),
    ([line(clean_ids=[1, 2], corrupt_ids=[1, 3], answer_id=[[3], 5], wrong_id=6)], ["'answer_id'", "token id"]),
    ([line(clean_ids=[1, 2], corrupt_ids=[1, 3], answer_id=[[3], [-5]], wrong_id=6)], ["'answer_id'", "one token id"]),
    ([line(clean_ids=[1, 2], corrupt_ids=[1, 3], answer_id=[[3], [3]], wrong_id=6)], ["'answer_id'", "twice"]),
    ([line(clean_ids=[1, 2], corrupt_ids=[1, 3], answer_id=[[3], [6]], wrong_id=[[6]])], ["'answer_id'", "'wrong_id'", "both list [6]"]),
]  # fmt: skip


@pytest.mark.parametrize("lines, words", BAD_FILES)
def test_bad_files_name_the_file_line_and_field(tmp_path, lines, words):
    p = write(tmp_path, *lines)
    with pytest.raises(fl.InputError) as e:
        read_task_file(p)
    msg = str(e.value)
    assert str(p) in msg, msg
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"


def test_missing_file(tmp_path):
    with pytest.raises(fl.InputError, match="does not exist"):
        read_task_file(tmp_path / "nope.jsonl")


@pytest.mark.parametrize(
    "row, words",
    [
        (line(clean="t1 t2 t3", corrupt="t1 t3", answer="t2", wrong="t3"), ["3 tokens", "position-aligned"]),
        (line(clean="t1 x", corrupt="t1 t3", answer="t2", wrong="t3"), ["'x'", "vocabulary"]),
        (line(clean_ids=[1, 900], corrupt_ids=[1, 2], answer_id=2, wrong_id=3), ["'clean_ids'", "900", "vocabulary"]),
        (line(clean="t1 t2", corrupt="t1 t3", answer=["t2 t4", "t6"], wrong="t3"), ["'answer'", "'t2 t4'", "2 tokens", "one token each"]),
        (line(clean="t1 t2", corrupt="t1 t3", answer=["t2", "t6"], wrong="t3 t4"), ["'wrong'", "2 tokens", "do not mix"]),
        (line(clean_ids=[1, 2], corrupt_ids=[1, 3], answer_id=[[2], [6]], wrong_id=[3, 4]), ["'wrong_id'", "do not mix"]),
        (line(clean_ids=[1, 2], corrupt_ids=[1, 3], answer_id=[[2], [901]], wrong_id=3), ["'answer_id'", "901", "vocabulary"]),
    ],
)  # fmt: skip
def test_model_dependent_errors_name_the_line(tmp_path, induction, row, words):
    p = write(tmp_path, TEXT if "clean_ids" not in row else IDS, row)
    with pytest.raises(fl.InputError) as e:
        read_task_file(p).build(induction)
    msg = str(e.value)
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    assert f"{p}:2" in msg, msg
