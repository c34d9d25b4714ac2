"""``TensorTask``: a :class:`~faithlens.tasks.Task` whose inputs are tensors, not token ids.

An image classifier (a ViT, a ResNet, any CNN) or a model fed embeddings takes tensors: a task
on it is clean and corrupted input tensors of the same shape, the classes to compare per example
and a metric on the model's output (``[n, classes]``, read as one output position). Build one
with :meth:`faithlens.Task.from_tensors`::

    task = fl.Task.from_tensors(clean_pixels, corrupt_pixels, answers=[[3, 5], [1, 0]])
    fl.patch(model, task, model.sites("resid_pre"))

It is a ``Task``, so every method that patches a task's inputs takes it (``fl.patch``,
``fl.attribution_patch``); what needs token positions (the metric position of
``positions="last"``, path patching, circuits, IOI) refuses it with :func:`require_tokens`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import InputError
from ..models.model import Inputs, Model
from .base import Task
from .metrics import Accuracy, BinaryCrossEntropy, LogitDiff, Metric, ProbDiff, get_metric

#: Metrics that compare the correct answer with at least one wrong one (answers ``[n, >= 2]``).
PAIRED = (LogitDiff, ProbDiff, Accuracy, BinaryCrossEntropy)


def _arg_tensors(inputs: Inputs) -> list[Tensor]:
    return [a for a in inputs.args if isinstance(a, Tensor)]


@dataclass(frozen=True, eq=False)
class TensorTask(Task):
    """Clean and corrupted input tensors (``Inputs(args=(x,))``: pixels, embeddings), answers
    ``[n, k]`` (class indices: correct first, then the wrong ones) and a metric on the model's
    output. ``positions`` is zeros: the output has one position per example."""

    def __post_init__(self) -> None:
        c, k = self.clean, self.corrupt
        if c.ids is not None or k.ids is not None:
            raise InputError(
                "a TensorTask takes input tensors (Inputs(args=(x,))), not token ids; for token "
                "ids use Task.from_token_ids"
            )
        cs, ks = _arg_tensors(c), _arg_tensors(k)
        if not cs or len(cs) != len(ks):
            raise InputError(
                f"clean inputs hold {len(cs)} tensors and corrupted inputs {len(ks)}; give the "
                "same input tensors (at least one) for both"
            )
        n = int(cs[0].shape[0]) if cs[0].dim() else 0
        for i, (a, b) in enumerate(zip(cs, ks, strict=True)):
            if tuple(a.shape) != tuple(b.shape):
                raise InputError(
                    f"clean input {i} is {tuple(a.shape)} but the corrupted one is "
                    f"{tuple(b.shape)}: each pair of inputs must have the same shape"
                )
            if a.dim() == 0 or int(a.shape[0]) != n:
                raise InputError(
                    f"input {i} has shape {tuple(a.shape)}; every input tensor needs the "
                    f"examples on its first axis ({n} examples)"
                )
            for what, t in (("clean", a), ("corrupted", b)):
                if t.is_floating_point() and not bool(torch.isfinite(t).all()):
                    raise InputError(f"the {what} input {i} holds NaN or infinite values")
        if n == 0:
            raise InputError("this task has no examples; a task needs at least one")
        self._check_answers(n)
        if tuple(self.positions.shape) != (n,) or bool((self.positions != 0).any()):
            raise InputError(
                "a TensorTask's positions are zeros [n] (one output per example); build it with "
                "Task.from_tensors"
            )

    def _check_answers(self, n: int) -> None:
        a = self.answers
        if a.dim() != 2 or int(a.shape[0]) != n or int(a.shape[1]) < 1:
            raise InputError(
                f"answers must be [n={n}, k] class indices (correct first); got {tuple(a.shape)}"
            )
        if a.is_floating_point() or a.is_complex() or a.dtype == torch.bool:
            raise InputError(f"answers must be integer class indices, not {a.dtype}")
        if bool((a < 0).any()):
            raise InputError(f"answers hold a negative class index ({int(a.min())})")
        if isinstance(self.metric, PAIRED) and int(a.shape[1]) < 2:
            raise InputError(
                f"the metric {self.metric.name} compares the correct class with a wrong one, "
                "but each example has one answer; give answers=[[correct, wrong], ...] or use "
                "metric='logprob' / 'loss'"
            )

    # -- what token tasks have and tensor tasks do not ----------------------------------------
    @property
    def tokens(self) -> bool:
        return False

    @property
    def seq_len(self) -> int:
        raise InputError(
            f"the task {self.name!r} is built from tensors (no token sequence): this needs a "
            "task of token ids (Task.from_prompts / Task.from_token_ids)"
        )

    def __len__(self) -> int:
        return int(_arg_tensors(self.clean)[0].shape[0])

    def first_difference(self) -> Tensor:
        """Zeros: any position of a tensor task's sites may differ between its two runs."""
        return torch.zeros(len(self), dtype=torch.long)

    def check_model(
        self,
        model: Model,
        fn: str = "this task",
        *,
        logits: bool = True,
        multi_token: bool = False,
    ) -> None:
        """Check, before any forward pass, that ``model`` takes tensors (not token ids) and
        that the answers are classes of its output (``multi_token``: whether the caller could
        score multi-token answers; a tensor task never has them)."""
        adapter = model.adapter
        takes_tokens = getattr(
            adapter, "token_inputs", bool(adapter.d_vocab) or model.tokenizer is not None
        )
        if takes_tokens:
            raise InputError(
                f"{fn}: {model.name} takes token ids, but the task {self.name!r} is built from "
                "tensors; use a task of token ids (Task.from_prompts), or a model that takes "
                "tensors (a vision model, or fl.wrap(module))"
            )
        if not logits or "logits" not in adapter.site_table:
            return
        width = model.site_info("logits").width
        top = int(self.answers.max())
        if width is not None and top >= width:
            raise InputError(
                f"{fn}: the task {self.name!r} has answer class {top} but {model.name} outputs "
                f"{width} classes (0..{width - 1})"
            )

    def degenerate(self) -> str | None:
        same = all(
            torch.equal(a.cpu(), b.cpu())
            for a, b in zip(_arg_tensors(self.clean), _arg_tensors(self.corrupt), strict=True)
        )
        if same:
            return (
                "the clean and corrupted inputs are identical in every example, so the two runs "
                "agree and the normalised effect divides by zero; corrupt the inputs"
            )
        a = self.answers
        if isinstance(self.metric, PAIRED) and bool((a[:, 1:] == a[:, :1]).all()):
            return (
                f"every correct class equals its wrong class, so {self.metric.name} is constant; "
                "give two different classes per example"
            )
        return None

    @classmethod
    def build(
        cls,
        clean: Tensor | Sequence[Tensor],
        corrupt: Tensor | Sequence[Tensor],
        answers: Any = None,
        *,
        labels: Any = None,
        metric: str | Metric | None = None,
        name: str = "custom",
    ) -> TensorTask:
        """See :meth:`faithlens.Task.from_tensors`."""
        ci, ki = _as_inputs(clean, "clean"), _as_inputs(corrupt, "corrupt")
        if (answers is None) == (labels is None):
            raise InputError(
                "give either answers ([n, 2]: correct and wrong class per example) or labels "
                "([n]: the correct class), not both or neither"
            )
        if answers is not None:
            ans = torch.as_tensor(answers)
            default = "logit_diff"
        else:
            lab = torch.as_tensor(labels)
            if lab.dim() != 1:
                raise InputError(f"labels must be [n] class indices; got {tuple(lab.shape)}")
            ans = lab[:, None]
            default = "logprob"
        if ans.is_floating_point():
            raise InputError(f"answers / labels must be integer class indices, not {ans.dtype}")
        n = int(_arg_tensors(ci)[0].shape[0]) if _arg_tensors(ci) else 0
        return cls(
            name=name,
            clean=ci,
            corrupt=ki,
            answers=ans.long(),
            positions=torch.zeros(n, dtype=torch.long),
            metric=get_metric(metric if metric is not None else default),
        )


def _as_inputs(x: Any, what: str) -> Inputs:
    if isinstance(x, Inputs):
        return x
    if isinstance(x, Tensor):
        return Inputs(args=(x,))
    if isinstance(x, (tuple, list)) and x and all(isinstance(t, Tensor) for t in x):
        return Inputs(args=tuple(x))
    raise InputError(
        f"{what} must be a tensor (pixels [n, channels, h, w], embeddings...), a list of the "
        f"model's input tensors or an Inputs, not {type(x).__name__}"
    )


def require_tokens(task: Task, fn: str) -> None:
    """Refuse a task built from tensors where ``fn`` needs token positions."""
    if isinstance(task, TensorTask):
        raise InputError(
            f"{fn} needs a task of token ids (its sites and edges are per token position), "
            f"but the task {task.name!r} is built from tensors (Task.from_tensors); use "
            "fl.patch or fl.attribution_patch on it"
        )


__all__ = ["TensorTask", "require_tokens"]
