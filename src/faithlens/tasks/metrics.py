"""Metrics: model outputs -> one number per example.

A metric reads the logits at each example's metric position (``[n, vocab]``) and the task's
answer tokens (``[n, k]``) and returns ``[n]``. NaN or inf in a metric is an error, not a number.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import MetricError


def check_finite(values: Tensor, what: str) -> Tensor:
    bad = ~torch.isfinite(values)
    if bool(bad.any()):
        idx = bad.nonzero().flatten().tolist()[:8]
        raise MetricError(
            f"{what} is NaN or infinite for examples {idx}; check the interventions (a NaN "
            "source, a zero-norm projection) and the inputs"
        )
    return values


class Metric:
    """Base class: ``metric(logits [n, vocab], answers [n, k]) -> [n]``."""

    name: str = "metric"
    higher_is_better: bool = True
    #: The metric reads only the answer tokens' logits (no softmax over the vocabulary), so a
    #: run may compute just those columns (``run(..., logit_tokens=...)``).
    answer_logits_only: bool = False

    def __call__(self, logits: Tensor, answers: Tensor) -> Tensor:
        out = self.compute(logits.float(), answers)
        if not bool(torch.isfinite(out).all()):
            # Name the cause: non-finite logits (an intervention) or the metric itself.
            check_finite(logits, f"the logits reaching {self.name}")
            check_finite(out, self.name)
        return out

    def compute(self, logits: Tensor, answers: Tensor) -> Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class LogitDiff(Metric):
    """logit(correct) - logit(wrong): answers are ``[n, 2]`` (or ``[n, 1 + m]``: the mean over
    the m wrong answers is subtracted)."""

    name: str = "logit_diff"

    answer_logits_only = True

    def compute(self, logits: Tensor, answers: Tensor) -> Tensor:
        picked = logits.gather(-1, answers.to(logits.device))
        return picked[:, 0] - picked[:, 1:].mean(-1)


@dataclass(frozen=True)
class LogProb(Metric):
    """log p(correct)."""

    name: str = "logprob"

    def compute(self, logits: Tensor, answers: Tensor) -> Tensor:
        lp = torch.log_softmax(logits, -1)
        return lp.gather(-1, answers[:, :1].to(logits.device))[:, 0]


@dataclass(frozen=True)
class ProbDiff(Metric):
    """p(correct) - p(wrong)."""

    name: str = "prob_diff"

    def compute(self, logits: Tensor, answers: Tensor) -> Tensor:
        p = torch.softmax(logits, -1).gather(-1, answers.to(logits.device))
        return p[:, 0] - p[:, 1:].sum(-1)


@dataclass(frozen=True)
class Accuracy(Metric):
    """1 where the correct answer outscores every other answer given."""

    name: str = "accuracy"

    answer_logits_only = True

    def compute(self, logits: Tensor, answers: Tensor) -> Tensor:
        picked = logits.gather(-1, answers.to(logits.device))
        return (picked[:, 0:1] > picked[:, 1:]).all(-1).float()


@dataclass(frozen=True)
class BinaryCrossEntropy(Metric):
    """-log sigmoid(logit(correct) - logit(wrong)) (lower is better).

    For a two-way classifier whose answers are (correct class, other class) this is its binary
    cross-entropy loss (the loss Redwood's paren-balance checker was trained and scrubbed with);
    for a language model it is the cross-entropy restricted to the answer pair. With more than
    one wrong answer, their mean logit is used.
    """

    name: str = "bce"
    higher_is_better = False

    answer_logits_only = True

    def compute(self, logits: Tensor, answers: Tensor) -> Tensor:
        picked = logits.gather(-1, answers.to(logits.device))
        return torch.nn.functional.softplus(picked[:, 1:].mean(-1) - picked[:, 0])


@dataclass(frozen=True)
class CrossEntropy(Metric):
    """-log p(correct) over every class (lower is better): a classifier's loss."""

    name: str = "loss"
    higher_is_better = False

    def compute(self, logits: Tensor, answers: Tensor) -> Tensor:
        lp = torch.log_softmax(logits, -1)
        return -lp.gather(-1, answers[:, :1].to(logits.device))[:, 0]


@dataclass(frozen=True)
class AnswerSet(Metric):
    """A set of correct answers against a set of wrong ones: ``reduce`` over the correct set's
    logits minus ``reduce`` over the wrong set's. ``answers`` is ``[n, n_correct + m]``: the
    first ``n_correct`` columns are each example's correct set, the rest its wrong set.

    ``reduce="logsumexp"`` (default) gives ``log p(correct set) - log p(wrong set)`` (the
    softmax's normaliser cancels); ``"max"`` the best member of each set. Sets of different sizes
    are padded by repeating a member: a token repeated within a set counts once.
    """

    n_correct: int = 1
    reduce: str = "logsumexp"
    name: str = "answer_set"

    answer_logits_only = True

    def __post_init__(self) -> None:
        if self.reduce not in ("logsumexp", "max"):
            raise MetricError(
                f"AnswerSet: reduce must be 'logsumexp' or 'max', not {self.reduce!r}"
            )
        if (
            isinstance(self.n_correct, bool)
            or not isinstance(self.n_correct, int)
            or self.n_correct < 1
        ):
            raise MetricError(f"AnswerSet: n_correct must be an int >= 1, not {self.n_correct!r}")

    def compute(self, logits: Tensor, answers: Tensor) -> Tensor:
        k = self.n_correct
        if answers.shape[1] <= k:
            raise MetricError(
                f"{self.name}: answers have {answers.shape[1]} columns but n_correct={k}; give "
                f"the {k} correct answers and at least one wrong answer per example"
            )
        ans = answers.to(logits.device)
        picked = logits.gather(-1, ans)
        return self._reduce(picked[:, :k], ans[:, :k]) - self._reduce(picked[:, k:], ans[:, k:])

    def _reduce(self, values: Tensor, ids: Tensor) -> Tensor:
        # a repeat of an earlier member of the same set (padding) counts once
        same = ids[:, :, None] == ids[:, None, :]
        earlier = torch.ones_like(same[0]).tril(-1).bool()
        repeat = (same & earlier).any(-1)
        masked = values.masked_fill(repeat, float("-inf"))
        if self.reduce == "max":
            return masked.max(-1).values
        return torch.logsumexp(masked, -1)


@dataclass(frozen=True)
class SequenceLogProb(Metric):
    """log p(answer tokens | prompt) by teacher forcing: the sum over an answer's tokens of
    each token's log-probability given the prompt and the answer's earlier tokens.

    Reads logits ``[n, k, vocab]`` at the ``k`` positions that predict the answer's tokens (the
    prompt's last token, then each answer token but the last), ``answers`` ``[n, k]`` the tokens
    and ``mask`` ``[n, k]`` which of them are real (answers shorter than ``k`` are padded). A
    multi-token task (:meth:`~faithlens.tasks.Task.multi_token`) scores with it through
    :meth:`~faithlens.tasks.Task.score`; with a wrong answer its score is this metric on the
    correct continuation minus this metric on the wrong one (``name`` says which).
    """

    name: str = "seq_logprob"

    def __call__(self, logits: Tensor, answers: Tensor, mask: Tensor | None = None) -> Tensor:
        if logits.dim() != 3 or tuple(answers.shape) != tuple(logits.shape[:2]):
            raise MetricError(
                f"{self.name}: needs logits [n, k, vocab] at each answer token's position and "
                f"answers [n, k]; got logits {tuple(logits.shape)} and answers "
                f"{tuple(answers.shape)}"
            )
        lp = torch.log_softmax(logits.float(), -1)
        picked = lp.gather(-1, answers.to(logits.device)[..., None])[..., 0]
        if mask is not None:
            picked = picked.masked_fill(~mask.to(picked.device).bool(), 0.0)
        out = picked.sum(-1)
        if not bool(torch.isfinite(out).all()):
            check_finite(logits, f"the logits reaching {self.name}")
            check_finite(out, self.name)
        return out


METRICS: dict[str, type[Metric]] = {
    "logit_diff": LogitDiff,
    "logprob": LogProb,
    "prob_diff": ProbDiff,
    "accuracy": Accuracy,
    "bce": BinaryCrossEntropy,
    "loss": CrossEntropy,
    "answer_set": AnswerSet,
}


def get_metric(metric: str | Metric) -> Metric:
    if isinstance(metric, Metric):
        return metric
    cls = METRICS.get(metric)
    if cls is None:
        raise MetricError(f"unknown metric {metric!r}; choose from {sorted(METRICS)}")
    return cls()
