"""Metrics by hand: answer sets (max / logsumexp over a set of correct and of wrong answers)."""

from __future__ import annotations

import math

import pytest
import torch

import faithlens as fl
from faithlens.errors import MetricError
from faithlens.tasks import AnswerSet, get_metric
from tests.helpers.builders import BUILDERS, VOCAB


def _logits() -> torch.Tensor:
    return torch.randn(3, 11, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_answer_set_by_hand():
    logits = _logits()
    # two correct answers, then wrong ones; row 2 pads its wrong set by repeating token 6
    answers = torch.tensor([[1, 2, 3, 4, 5], [0, 7, 8, 9, 10], [2, 5, 6, 6, 6]])
    lse, mx = AnswerSet(n_correct=2), AnswerSet(n_correct=2, reduce="max")
    got_lse, got_max = lse(logits, answers), mx(logits, answers)
    for i, row in enumerate(answers.tolist()):
        good, bad = set(row[:2]), set(row[2:])
        lg = logits[i].tolist()
        want = math.log(sum(math.exp(lg[t]) for t in good)) - math.log(
            sum(math.exp(lg[t]) for t in bad)
        )
        assert float(got_lse[i]) == pytest.approx(want, abs=1e-6)
        assert float(got_max[i]) == pytest.approx(
            max(lg[t] for t in good) - max(lg[t] for t in bad), abs=1e-6
        )
    # log p(correct set) - log p(wrong set) from the softmax itself
    p = torch.softmax(logits, -1)
    ratio = torch.log(p[0, [1, 2]].sum()) - torch.log(p[0, [3, 4, 5]].sum())
    assert float(got_lse[0]) == pytest.approx(float(ratio), abs=1e-6)


def test_answer_set_of_one_is_a_logit_diff_against_the_wrong_set():
    logits = _logits()
    answers = torch.tensor([[1, 2], [3, 4], [5, 6]])
    one = get_metric("answer_set")(logits, answers)
    torch.testing.assert_close(one, get_metric("logit_diff")(logits, answers))


def test_answer_set_in_a_task_and_patching():
    model = fl.wrap(BUILDERS["gpt2"]())
    g = torch.Generator().manual_seed(3)
    clean = torch.randint(1, VOCAB, (4, 6), generator=g).tolist()
    corrupt = torch.randint(1, VOCAB, (4, 6), generator=g).tolist()
    answers = [(5, 9, 11, 12, 12), (6, 8, 13, 14, 15), (7, 7, 16, 17, 18), (1, 2, 3, 4, 4)]
    metric = AnswerSet(n_correct=2)
    task = fl.Task.from_token_ids(clean, corrupt, answers, metric=metric)
    values = task.evaluate(model)
    logits = model.run(task.clean, logits_at=task.positions).logits[:, 0]
    torch.testing.assert_close(values, metric(logits, task.answers))
    res = fl.patch(model, task, "head", n_boot=50)
    assert res.to_frame()["effect"].notna().all()
    # the sweep reads only the answer columns; with repeated answer tokens it still agrees
    torch.testing.assert_close(torch.as_tensor(res.source).float(), values, rtol=0, atol=1e-5)
    base = task.evaluate(model, "corrupt")
    torch.testing.assert_close(torch.as_tensor(res.base).float(), base, rtol=0, atol=1e-5)


def test_bad_answer_sets_are_refused():
    with pytest.raises(MetricError, match="reduce"):
        AnswerSet(reduce="mean")
    with pytest.raises(MetricError, match="n_correct"):
        AnswerSet(n_correct=0)
    with pytest.raises(MetricError, match="at least one wrong"):
        AnswerSet(n_correct=2)(_logits(), torch.tensor([[1, 2]] * 3))
