"""``Task.from_tensors``: tasks on models that take tensors (pixels, embeddings), their checks
before any work, and the token-only methods that refuse them with a clear error."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import faithlens as fl
from faithlens.errors import InputError
from faithlens.models import ConvAdapter
from faithlens.tasks import TensorTask
from tests.helpers.builders import BUILDERS

N = 4


def _net() -> fl.Model:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(64, 5))
    x = torch.randn(1, 3, 4, 4)
    return fl.wrap(net.eval(), adapter=ConvAdapter(net, {"conv": "1"}, example=x, logits="3"))


def _x(seed: int, shape=(N, 3, 4, 4)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


ANSWERS = [[0, 1], [2, 3], [4, 0], [1, 2]]


def test_from_tensors_builds_a_tensor_task():
    task = fl.Task.from_tensors(_x(1), _x(2), answers=ANSWERS, name="pix")
    assert isinstance(task, TensorTask) and isinstance(task, fl.Task)
    assert len(task) == N and not task.tokens and task.name == "pix"
    assert task.metric.name == "logit_diff"
    assert torch.equal(task.positions, torch.zeros(N, dtype=torch.long))
    sub = task.subset([2, 0])
    assert torch.equal(sub.clean.args[0], task.clean.args[0][[2, 0]])
    assert torch.equal(sub.answers, task.answers[[2, 0]])


def test_labels_default_to_log_probability_and_loss_is_cross_entropy():
    m = _net()
    labels = torch.tensor([0, 2, 4, 1])
    task = fl.Task.from_tensors(_x(1), _x(2), labels=labels)
    assert task.metric.name == "logprob" and task.answers.shape == (N, 1)
    logits = m.run(_x(1)).logits
    lp = torch.log_softmax(logits, -1)[torch.arange(N), labels]
    assert torch.allclose(task.evaluate(m), lp, atol=1e-6)
    loss = fl.Task.from_tensors(_x(1), _x(2), labels=labels, metric="loss")
    assert not loss.metric.higher_is_better
    want = nn.functional.cross_entropy(logits, labels, reduction="none")
    assert torch.allclose(loss.evaluate(m), want, atol=1e-6)


def test_a_tensor_task_is_patched_and_attributed():
    m = _net()
    task = fl.Task.from_tensors(_x(1), _x(2), answers=ANSWERS)
    res = fl.patch(m, task, ["conv"], n_boot=20)
    np.testing.assert_allclose(res.patched[0], res.source, atol=1e-5)  # the whole map: clean
    attr = fl.attribution_patch(m, task, ["conv"], positions="each", n_boot=20)
    assert len(attr.position) == 16 and np.isfinite(attr.patched).all()


BAD = [
    (lambda: fl.Task.from_tensors(_x(1), _x(2, (N, 3, 4, 5)), answers=ANSWERS), "same shape"),
    (lambda: fl.Task.from_tensors(_x(1), _x(2), answers=ANSWERS[:3]), r"\[n=4, k\]"),
    (
        lambda: fl.Task.from_tensors(_x(1), _x(2), answers=[[0], [1], [2], [3]]),
        "compares the correct",
    ),
    (lambda: fl.Task.from_tensors(_x(1), _x(2), answers=[[0.5, 1.0]] * N), "integer class"),
    (lambda: fl.Task.from_tensors(_x(1), _x(2), answers=[[-1, 1]] * N), "negative class"),
    (lambda: fl.Task.from_tensors(_x(1), _x(2)), "either answers"),
    (lambda: fl.Task.from_tensors(_x(1), _x(2), answers=ANSWERS, labels=[0] * N), "either answers"),
    (lambda: fl.Task.from_tensors(_x(1), _x(2), labels=[[0, 1]] * N), r"labels must be \[n\]"),
    (lambda: fl.Task.from_tensors("pixels", _x(2), answers=ANSWERS), "clean must be a tensor"),
    (lambda: fl.Task.from_tensors(_x(1).fill_(float("nan")), _x(2), answers=ANSWERS), "NaN"),
    (
        lambda: fl.Task.from_tensors(
            _x(1, (0, 3)), _x(2, (0, 3)), answers=torch.zeros(0, 2, dtype=torch.long)
        ),
        "no examples",
    ),
    (lambda: fl.Task.from_tensors(_x(1), _x(2), answers=ANSWERS, metric="nope"), "unknown metric"),
]


@pytest.mark.parametrize("build, match", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_tensor_tasks_are_refused(build, match):
    with pytest.raises((InputError, fl.errors.MetricError), match=match):
        build()


def test_token_only_uses_refuse_a_tensor_task_before_any_work():
    m = _net()
    task = fl.Task.from_tensors(_x(1), _x(2), answers=ANSWERS)
    with pytest.raises(InputError, match="positions='all'"):
        fl.patch(m, task, ["conv"], positions="last", n_boot=20)
    with pytest.raises(InputError, match="built from tensors"):
        _ = task.seq_len
    with pytest.raises(InputError, match="built from tensors"):
        fl.path_patch(m, task, ["conv"], "logits", n_boot=20)


def test_a_tensor_task_on_a_model_of_token_ids_is_refused():
    lm = fl.wrap(BUILDERS["gpt2"]())
    task = fl.Task.from_tensors(_x(1), _x(2), answers=ANSWERS)
    with pytest.raises(InputError, match="takes token ids"):
        fl.patch(lm, task, "head", n_boot=20)


def test_answers_beyond_the_models_classes_are_refused():
    m = _net()
    task = fl.Task.from_tensors(_x(1), _x(2), answers=[[0, 7]] * N)
    with pytest.raises(InputError, match="outputs 5 classes"):
        fl.patch(m, task, ["conv"], n_boot=20)


def test_identical_inputs_are_degenerate():
    m = _net()
    x = _x(1)
    task = fl.Task.from_tensors(x, x.clone(), answers=ANSWERS)
    with pytest.raises(InputError, match="identical"):
        fl.patch(m, task, ["conv"], n_boot=20)
