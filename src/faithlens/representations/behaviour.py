"""Behaviours measured over continuations, not first-token logits.

A :class:`Behaviour` is a set of prompts, each with a *positive* continuation (the behaviour:
the true answer, the honest reply) and a *negative* one (its opposite). It is measured two ways:

- :meth:`Behaviour.margin`: the teacher-forced log-probability of the whole positive
  continuation minus that of the negative one, ``log p(pos | x) - log p(neg | x)`` (summed over
  their tokens; ``per_token=True`` averages instead). Continuations may be several tokens long,
  so this is not a first-token logit difference.
- :meth:`Behaviour.rate`: generate an open-ended continuation and ask a *judge* whether it shows
  the behaviour. The default :class:`AnswerJudge` looks for the positive and the negative answer
  in the text (whichever comes first wins; neither: "neither"); any callable
  ``judge(text, i) -> "positive" | "negative" | "neither"`` can replace it.

Both return one number per prompt, so every comparison between conditions is paired.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from .data import Prompt
from .generation import Generations, generate, score_alternatives

if TYPE_CHECKING:
    from ..models.model import Model
    from .steering import Steering

LABELS = ("positive", "negative", "neither")
Judge = Callable[[str, int], str]


def _norm(text: str) -> str:
    return " ".join(re.findall(r"[\w']+", text.lower()))


@dataclass(frozen=True)
class AnswerJudge:
    """Rule-based judge: ``"positive"`` if the positive answer's words occur in the text before
    the negative answer's (whole words, case-insensitive, punctuation ignored), ``"negative"``
    if the negative answer comes first, ``"neither"`` if neither occurs."""

    positive: tuple[str, ...]
    negative: tuple[str, ...]

    def __call__(self, text: str, i: int) -> str:
        t = f" {_norm(text)} "
        p = _norm(self.positive[i])
        q = _norm(self.negative[i])
        ip = t.find(f" {p} ") if p else -1
        iq = t.find(f" {q} ") if q else -1
        if ip < 0 and iq < 0:
            return "neither"
        if iq < 0 or (0 <= ip < iq):
            return "positive"
        return "negative"


@dataclass(frozen=True, eq=False)
class Behaviour:
    """Prompts with a positive and a negative continuation each (see the module docstring).

    Args:
        prompts: strings or token ids (already in the model's chat format when it has one).
        positive, negative: continuation per prompt (text, or token ids for models without a
            tokenizer); text continuations usually start with a space.
        name: for reports.
        ids: an id per prompt (e.g. the fact each prompt came from).
        judge: how :meth:`rate` labels a generated text (default :class:`AnswerJudge`).
    """

    prompts: tuple[Prompt, ...]
    positive: tuple[Prompt, ...]
    negative: tuple[Prompt, ...]
    name: str = "behaviour"
    ids: tuple[str, ...] | None = None
    judge: Judge | None = None

    def __post_init__(self) -> None:
        n = len(self.prompts)
        if n == 0:
            raise InputError(f"behaviour {self.name!r} has no prompts")
        if len(self.positive) != n or len(self.negative) != n:
            raise InputError(
                f"behaviour {self.name!r}: {n} prompts but {len(self.positive)} positive and "
                f"{len(self.negative)} negative continuations; give one of each per prompt"
            )
        for i, (p, q) in enumerate(zip(self.positive, self.negative)):
            if p == q:
                raise InputError(
                    f"behaviour {self.name!r}: the positive and negative continuations of prompt "
                    f"{i} are identical ({p!r})"
                )
        object.__setattr__(self, "prompts", tuple(self.prompts))
        object.__setattr__(self, "positive", tuple(self.positive))
        object.__setattr__(self, "negative", tuple(self.negative))
        if self.ids is not None and len(self.ids) != n:
            raise InputError(f"behaviour {self.name!r}: {len(self.ids)} ids for {n} prompts")

    def __len__(self) -> int:
        return len(self.prompts)

    def subset(self, rows: Sequence[int]) -> Behaviour:
        idx = [int(i) for i in rows]
        if not idx or any(not 0 <= i < len(self) for i in idx):
            raise InputError(
                f"behaviour {self.name!r}: bad subset {idx[:5]} of {len(self)} prompts"
            )
        return replace(
            self,
            prompts=tuple(self.prompts[i] for i in idx),
            positive=tuple(self.positive[i] for i in idx),
            negative=tuple(self.negative[i] for i in idx),
            ids=None if self.ids is None else tuple(self.ids[i] for i in idx),
        )

    # -- teacher-forced ----------------------------------------------------------------------
    def logprobs(
        self,
        model: Model,
        steering: Steering | Sequence[Steering] | None = None,
        *,
        batch_size: int = 16,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-token log-probabilities of the positive and the negative continuations
        (``[n, C]`` each, NaN-padded)."""
        pos, neg = score_alternatives(
            model, self.prompts, [self.positive, self.negative], steering, batch_size=batch_size
        )
        return pos, neg

    def margin(
        self,
        model: Model,
        steering: Steering | Sequence[Steering] | None = None,
        *,
        per_token: bool = False,
        batch_size: int = 16,
    ) -> np.ndarray:
        """``log p(positive) - log p(negative)`` per prompt (nats; summed over tokens, or the
        per-token mean with ``per_token=True``)."""
        pos, neg = self.logprobs(model, steering, batch_size=batch_size)
        agg = np.nanmean if per_token else np.nansum
        return np.asarray(agg(pos, axis=1) - agg(neg, axis=1))

    # -- generated ---------------------------------------------------------------------------
    def generate(
        self,
        model: Model,
        steering: Steering | Sequence[Steering] | None = None,
        **kwargs: Any,
    ) -> Generations:
        """Generate a continuation of every prompt (keyword arguments go to
        :func:`~faithlens.representations.generation.generate`)."""
        return generate(model, self.prompts, steering, **kwargs)

    def labels(self, gens: Generations) -> list[str]:
        """The judge's label of every generation."""
        if gens.n != len(self):
            raise InputError(f"{gens.n} generations for a behaviour of {len(self)} prompts")
        judge = self.judge or AnswerJudge(
            tuple(_text(p) for p in self.positive), tuple(_text(q) for q in self.negative)
        )
        out = []
        for i, t in enumerate(gens.texts):
            lab = judge(t, i)
            if lab not in LABELS:
                raise InputError(f"the judge returned {lab!r}; it must return one of {LABELS}")
            out.append(lab)
        return out

    def rate(
        self,
        model: Model,
        steering: Steering | Sequence[Steering] | None = None,
        **kwargs: Any,
    ) -> np.ndarray:
        """1 where the generated continuation shows the behaviour (judge: "positive"), else 0."""
        gens = self.generate(model, steering, **kwargs)
        return np.asarray([lab == "positive" for lab in self.labels(gens)], dtype=np.float64)


def _text(p: Prompt) -> str:
    return p if isinstance(p, str) else " ".join(str(i) for i in p)


def label_rates(labels: Sequence[str]) -> dict[str, float]:
    """Fraction of each judge label."""
    n = max(len(labels), 1)
    return {k: sum(lab == k for lab in labels) / n for k in LABELS}


__all__ = ["LABELS", "AnswerJudge", "Behaviour", "Judge", "label_rates"]
