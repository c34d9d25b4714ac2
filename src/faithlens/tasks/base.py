"""``Task``: clean and corrupted inputs, answer tokens and a metric."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..errors import InputError, SiteError
from ..fingerprint import data_fingerprint
from ..models.model import Inputs, Model
from .metrics import (
    Accuracy,
    BinaryCrossEntropy,
    LogitDiff,
    Metric,
    ProbDiff,
    SequenceLogProb,
    get_metric,
)

if TYPE_CHECKING:
    from ..interventions import Intervention


@dataclass(frozen=True, eq=False)
class Task:
    """A behaviour to explain, as a contrast between clean and corrupted inputs.

    ``clean`` and ``corrupt`` are right-padded token batches of the same shape and padding (each
    clean prompt has exactly as many tokens as its corrupted twin); ``answers`` is ``[n, 2]``
    (correct, wrong) token ids read at ``positions`` (``[n]``, each example's last real token by
    default) by ``metric``.

    A multi-token task (:meth:`multi_token`, teacher forcing) appends an answer's tokens to each
    prompt and reads the logits at several positions: ``reads`` ``[n, k]`` (the positions that
    predict the answer's tokens), ``answers`` ``[n, k]`` those tokens and ``answer_mask``
    ``[n, k]`` which are real (shorter answers are padded); ``positions`` is then each example's
    last position read (so a causal run may still stop there) and ``metric`` a
    :class:`~faithlens.tasks.metrics.SequenceLogProb`. ``against``, when given, is the same
    examples teacher-forced with the wrong answer: the task's score is then
    ``log p(correct | prompt) - log p(wrong | prompt)`` (:meth:`score`, :meth:`parts`).
    """

    name: str
    clean: Inputs
    corrupt: Inputs
    answers: Tensor
    positions: Tensor
    metric: Metric = field(default_factory=LogitDiff)
    prompts: tuple[str, ...] | None = None
    corrupt_prompts: tuple[str, ...] | None = None
    answer_text: tuple[tuple[str, ...], ...] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    reads: Tensor | None = None
    answer_mask: Tensor | None = None
    against: Task | None = None

    def __post_init__(self) -> None:
        c, k = self.clean, self.corrupt
        if c.ids is None or k.ids is None:
            raise InputError("a Task needs token ids for its clean and corrupted inputs")
        n = int(c.ids.shape[0])
        if tuple(c.ids.shape) != tuple(k.ids.shape):
            raise InputError(
                f"clean inputs are {tuple(c.ids.shape)} but corrupted are {tuple(k.ids.shape)}: "
                "each pair must have the same number of tokens"
            )
        cm = c.mask if c.mask is not None else torch.ones_like(c.ids)
        km = k.mask if k.mask is not None else torch.ones_like(k.ids)
        if not torch.equal(cm.cpu(), km.cpu()):
            rows = (cm != km).any(-1).nonzero().flatten().tolist()[:8]
            raise InputError(
                f"clean and corrupted prompts {rows} have different token lengths; patching "
                "needs position-aligned pairs (same number of tokens in each pair)"
            )
        if self.reads is not None or self.answer_mask is not None or self.against is not None:
            from .multi_token import check_multi_token

            check_multi_token(self)
        elif self.answers.dim() != 2 or self.answers.shape[0] != n or self.answers.shape[1] < 2:
            raise InputError(
                f"answers must be [n={n}, 2] token ids; got {tuple(self.answers.shape)}"
            )
        if self.positions.shape != (n,):
            raise InputError(f"positions must be [n={n}]; got {tuple(self.positions.shape)}")
        if n == 0:
            raise InputError("this Task has no examples; a task needs at least one")
        for what, t in (("clean ids", c.ids), ("corrupted ids", k.ids), ("answers", self.answers)):
            if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
                raise InputError(f"{what} must be integer token ids, not {t.dtype}")
            if bool((t < 0).any()):
                raise InputError(
                    f"{what} hold negative token ids ({int(t.min())}); token ids are >= 0"
                )
        p = self.positions
        if p.is_floating_point() or p.is_complex() or p.dtype == torch.bool:
            raise InputError(f"positions must be integer indices, not {p.dtype}")
        seq = int(c.ids.shape[1])
        bad = ((p < 0) | (p >= seq)).nonzero().flatten().tolist()
        if bad:
            raise InputError(
                f"positions {p[bad[:8]].tolist()} (examples {bad[:8]}) are out of range for "
                f"sequences of {seq} tokens; metric positions are indices 0..{seq - 1} (a "
                "negative index would read padding)"
            )
        real = cm.cpu().bool()[torch.arange(n), p.cpu().long()]
        if not bool(real.all()):
            rows = (~real).nonzero().flatten().tolist()[:8]
            raise InputError(
                f"the metric positions of examples {rows} fall on padding; read the last real "
                "token of each example instead (mask.sum(-1) - 1)"
            )

    def check_model(
        self,
        model: Model,
        fn: str = "this task",
        *,
        logits: bool = True,
        multi_token: bool = False,
    ) -> None:
        """Check, before any forward pass, that this task fits ``model``: its token ids are in
        the model's vocabulary, and its answers are columns of the model's output (a model
        without a language-model head, such as a BERT encoder, has no token logits). A
        multi-token task is refused unless the caller can score one (``multi_token``)."""
        assert self.clean.ids is not None and self.corrupt.ids is not None
        if self.is_multi_token:
            from .multi_token import refusal

            if not multi_token:
                raise InputError(refusal(self, fn))
            if not model.is_causal:
                raise InputError(
                    f"{fn}: the task {self.name!r} has multi-token answers, scored by teacher "
                    f"forcing, but {model.name} is not causal: the positions that predict an "
                    "answer would see the answer's own tokens; use a causal model, or "
                    "single-token answers"
                )
        if self.against is not None:
            self.against.check_model(model, fn, logits=logits, multi_token=True)
        adapter = model.adapter
        if not adapter.site_table:
            return  # a generic module: nothing known about its inputs and outputs
        vocab = int(getattr(adapter, "d_vocab", 0) or 0)
        top = max(int(self.clean.ids.max()), int(self.corrupt.ids.max()))
        if vocab and top >= vocab:
            raise InputError(
                f"{fn}: the task {self.name!r} has token id {top} but {model.name} has a "
                f"vocabulary of {vocab}; the task was built for another model (build it with "
                "this model's tokenizer)"
            )
        if not logits:
            return
        width: int | None = None
        get_out = getattr(model.module, "get_output_embeddings", None)
        if callable(get_out):  # a Hugging Face model: its language-model head, if any
            head = get_out()
            weight = getattr(head, "weight", None)
            if isinstance(weight, Tensor):
                width = int(weight.shape[0])
            elif head is None:
                raise InputError(no_head_message(model, fn))
        if width is None:
            try:
                width = model.site_info("logits").width
            except SiteError:
                return
        ans = int(self.answers.max())
        if width is not None and ans >= width:
            raise InputError(
                f"{fn}: the task {self.name!r} has answer id {ans} but {model.name} outputs "
                f"{width} logits; the task was built for another model"
            )

    def degenerate(self) -> str | None:
        """Why the normalised effect ``(patched - base) / (source - base)`` is undefined on this
        task whatever the model (clean and corrupted inputs identical, or every correct answer
        equal to its wrong answer), or None."""
        assert self.clean.ids is not None and self.corrupt.ids is not None
        if torch.equal(self.clean.ids.cpu(), self.corrupt.ids.cpu()) and not (
            self.clean.args or self.clean.kwargs
        ):
            return (
                "the clean and corrupted inputs are identical in every example, so the clean "
                "and corrupted runs agree and the normalised effect divides by zero; corrupt "
                "the prompts (change at least one token per example)"
            )
        if self.against is not None and torch.equal(self.answers.cpu(), self.against.answers.cpu()):
            return (
                "every correct answer equals its wrong answer, so the log-probability "
                "difference is zero and the normalised effect divides by zero; give two "
                "different answers per example"
            )
        if isinstance(self.metric, (LogitDiff, ProbDiff, Accuracy, BinaryCrossEntropy)):
            a = self.answers
            if bool((a[:, 1:] == a[:, :1]).all()):
                return (
                    f"every correct answer equals its wrong answer, so {self.metric.name} is "
                    "constant and the normalised effect divides by zero; give two different "
                    "answer tokens per example"
                )
        return None

    @property
    def is_multi_token(self) -> bool:
        """Whether the metric reads several positions per example (:meth:`multi_token`)."""
        return self.reads is not None

    @property
    def read_at(self) -> Tensor:
        """The positions whose logits the metric reads, for ``run(..., logits_at=...)``:
        ``positions`` ``[n]``, or a multi-token task's ``reads`` ``[n, k]``."""
        return self.positions if self.reads is None else self.reads

    def score(self, logits: Tensor, answers: Tensor | None = None) -> Tensor:
        """The metric per row from a run's logits at :attr:`read_at` (``[rows, 1 or k, ...]``;
        rows may repeat the task's examples, with ``answers`` repeated to match). For a task
        with ``against`` this is the correct continuation's log-probability only; the
        difference needs the wrong continuation's run too (:meth:`parts`)."""
        answers = self.answers if answers is None else answers
        if self.reads is None:
            return self.metric(logits[:, 0], answers)
        assert isinstance(self.metric, SequenceLogProb) and self.answer_mask is not None
        mask = self.answer_mask.repeat(int(answers.shape[0]) // self.n, 1)
        return self.metric(logits, answers, mask)

    def parts(self) -> list[tuple[Task, float]]:
        """The tasks whose scores, times their signs, add up to this task's metric: the task
        itself, and for a multi-token task with ``against`` the wrong continuation with sign
        -1 (each example's metric is the sum over the parts, before any statistics)."""
        if self.against is None:
            return [(self, 1.0)]
        return [(replace(self, against=None), 1.0), (self.against, -1.0)]

    @property
    def tokens(self) -> bool:
        """Whether the inputs are token ids (False for a task built from tensors)."""
        return True

    def __len__(self) -> int:
        assert self.clean.ids is not None
        return int(self.clean.ids.shape[0])

    @property
    def n(self) -> int:
        return len(self)

    @property
    def seq_len(self) -> int:
        assert self.clean.ids is not None
        return int(self.clean.ids.shape[1])

    def first_difference(self) -> Tensor:
        """Per example, the first position where clean and corrupted tokens differ (seq_len if
        they never do). In a causal model nothing before it differs between the two runs."""
        assert self.clean.ids is not None and self.corrupt.ids is not None
        diff = self.clean.ids.cpu() != self.corrupt.ids.cpu()
        seq = diff.shape[1]
        first = torch.where(
            diff.any(-1), diff.float().argmax(-1), torch.full((diff.shape[0],), seq)
        )
        return first.long()

    def subset(self, rows: Sequence[int] | Tensor | slice) -> Task:
        """The task restricted to some examples."""
        idx = (
            rows
            if isinstance(rows, (slice, Tensor))
            else torch.tensor(list(rows), dtype=torch.long)
        )
        if isinstance(idx, Tensor) and idx.dtype != torch.bool:
            flat = idx.flatten()
            if bool(((flat < -self.n) | (flat >= self.n)).any()):
                raise InputError(
                    f"rows {flat.tolist()[:8]} are out of range for a task of {self.n} examples"
                )

        def pick(t: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
            if t is None:
                return None
            if isinstance(idx, slice):
                return t[idx]
            return tuple(t[int(i)] for i in idx)

        return replace(
            self,
            clean=self.clean.select(idx),
            corrupt=self.corrupt.select(idx),
            answers=self.answers[idx],
            positions=self.positions[idx],
            prompts=pick(self.prompts),
            corrupt_prompts=pick(self.corrupt_prompts),
            answer_text=pick(self.answer_text),
            reads=None if self.reads is None else self.reads[idx],
            answer_mask=None if self.answer_mask is None else self.answer_mask[idx],
            against=None if self.against is None else self.against.subset(rows),
        )

    def fingerprint(self) -> str:
        """sha256 of the name, the inputs, answers and positions, the metric and the prompts'
        text (not ``meta``): the :class:`~faithlens.tasks.data.Data` fingerprint."""
        m = self.metric
        metric: Any = m if dataclasses.is_dataclass(m) else (type(m).__qualname__, m.name)
        return data_fingerprint(
            {
                "name": self.name,
                "clean": self.clean,
                "corrupt": self.corrupt,
                "answers": self.answers,
                "positions": self.positions,
                "metric": metric,
                "prompts": self.prompts,
                "corrupt_prompts": self.corrupt_prompts,
                "answer_text": self.answer_text,
                **(
                    {
                        "reads": self.reads,
                        "answer_mask": self.answer_mask,
                        "against": None if self.against is None else self.against.fingerprint(),
                    }
                    if self.reads is not None
                    else {}
                ),
            }
        )

    def with_metric(self, metric: str | Metric) -> Task:
        return replace(self, metric=get_metric(metric))

    def to(self, device: torch.device | str) -> Task:
        against = None if self.against is None else self.against.to(device)
        return replace(
            self, clean=self.clean.to(device), corrupt=self.corrupt.to(device), against=against
        )

    def evaluate(
        self,
        model: Model,
        which: str = "clean",
        interventions: Sequence[Intervention] = (),
    ) -> Tensor:
        """The metric per example on the clean or corrupted inputs (optionally intervened)."""
        if which not in ("clean", "corrupt"):
            raise InputError(f"which must be 'clean' or 'corrupt', not {which!r}")
        total: Tensor | None = None
        for part, sign in self.parts():
            inputs = part.clean if which == "clean" else part.corrupt
            out = model.run(inputs, interventions, logits_at=part.read_at)
            assert out.logits is not None
            value = sign * part.score(out.logits)
            total = value if total is None else total + value
        assert total is not None
        return total

    def bind(self, model: Model, interventions: Sequence[Intervention]) -> list[Intervention]:
        """Resolve ``source="clean"`` / ``source="corrupt"`` references (as returned by
        ``PatchingResult.interventions()``) into this task's cached activations."""
        from ..models.sites import Site

        wanted: dict[str, set[str]] = {"clean": set(), "corrupt": set()}
        for iv in interventions:
            ref = getattr(iv, "source", None)
            if isinstance(ref, str):
                if ref not in wanted:
                    raise InputError(
                        f"{iv.describe()}: source {ref!r} is not a tensor, a cache, 'clean' or 'corrupt'"
                    )
                wanted[ref].add(iv.site_spec.name)
        caches = {}
        for which, names in wanted.items():
            if names:
                inputs = self.clean if which == "clean" else self.corrupt
                caches[which] = model.run(inputs, cache=[Site(n) for n in sorted(names)]).cache
        out: list[Intervention] = []
        for iv in interventions:
            ref = getattr(iv, "source", None)
            if isinstance(ref, str):
                iv = dataclasses.replace(iv, source=caches[ref][iv.site_spec.name])  # type: ignore[type-var]
            out.append(iv)
        return out

    @classmethod
    def from_prompts(
        cls,
        model: Model,
        clean: Sequence[str],
        corrupt: Sequence[str],
        answers: Sequence[tuple[str, str]],
        *,
        metric: str | Metric = "logit_diff",
        name: str = "custom",
    ) -> Task:
        """Build a task from text; the metric reads the logits at each prompt's last token.

        Each answer pair is (correct, wrong), each a single token (mind the leading space).
        """
        if not (len(clean) == len(corrupt) == len(answers)):
            raise InputError(
                f"got {len(clean)} clean prompts, {len(corrupt)} corrupted prompts and "
                f"{len(answers)} answer pairs; give one of each per example"
            )
        if len(clean) == 0:
            raise InputError("a task needs at least one example")
        answer_ids = []
        for pair in answers:
            if len(pair) < 2:
                raise InputError(f"answer {pair!r} must be a (correct, wrong) pair")
            answer_ids.append([model.token_id(a) for a in pair])
        ci = model.tokenize(list(clean))
        ki = model.tokenize(list(corrupt))
        assert ci.mask is not None and ki.mask is not None
        lc, lk = ci.mask.sum(-1), ki.mask.sum(-1)
        bad = (lc != lk).nonzero().flatten().tolist()
        if bad:
            i = bad[0]
            raise InputError(
                f"clean and corrupted prompts of example {i} have different token lengths "
                f"({int(lc[i])} vs {int(lk[i])}): {clean[i]!r} / {corrupt[i]!r}. Patching needs "
                f"position-aligned pairs. ({len(bad)} such examples: {bad[:8]})"
            )
        if ki.ids is not None and ci.ids is not None and ki.ids.shape != ci.ids.shape:
            ki = Inputs(ids=ki.ids[:, : ci.ids.shape[1]], mask=ki.mask[:, : ci.ids.shape[1]])
        positions = (lc - 1).long()
        return cls(
            name=name,
            clean=ci,
            corrupt=ki,
            answers=torch.tensor(answer_ids, dtype=torch.long),
            positions=positions,
            metric=get_metric(metric),
            prompts=tuple(clean),
            corrupt_prompts=tuple(corrupt),
            answer_text=tuple(tuple(a) for a in answers),
        )

    @classmethod
    def multi_token(
        cls,
        model: Model,
        clean: Sequence[str | Sequence[int]],
        corrupt: Sequence[str | Sequence[int]],
        correct: Sequence[str | Sequence[int]],
        wrong: Sequence[str | Sequence[int]] | None = None,
        *,
        name: str = "custom",
        pad_id: int = 0,
    ) -> Task:
        """A task whose answers may be several tokens, scored by teacher forcing.

        Each prompt and answer is text (tokenized by ``model``; mind an answer's leading
        space) or a list of token ids. Each answer is appended to both prompts of its example
        and scored by the sum of its tokens' log-probabilities given the prompt and the earlier
        answer tokens. With ``wrong`` answers the metric is ``log p(correct | prompt) -
        log p(wrong | prompt)`` (``"seq_logprob_diff"``: each continuation teacher-forced in
        its own run, subtracted per example); without, ``log p(correct | prompt)``
        (``"seq_logprob"``). Each clean prompt must have as many tokens as its corrupted twin;
        the methods that take the task refuse a model that is not causal.
        See :mod:`faithlens.tasks.multi_token` and docs/patching.md."""
        from .multi_token import build

        return build(model, clean, corrupt, correct, wrong, name=name, pad_id=pad_id)

    @classmethod
    def from_tensors(
        cls,
        clean: Tensor | Sequence[Tensor],
        corrupt: Tensor | Sequence[Tensor],
        answers: Any = None,
        *,
        labels: Any = None,
        metric: str | Metric | None = None,
        name: str = "custom",
    ) -> Task:
        """Build a task from input tensors (pixels ``[n, channels, h, w]``, embeddings; or a
        list of a model's input tensors), for models that take no token ids: an image
        classifier, any module through ``fl.wrap``. ``answers`` ``[n, 2]`` are (correct, wrong)
        class indices (default metric ``"logit_diff"``), or ``labels`` ``[n]`` the correct
        class (default metric ``"logprob"``; ``"loss"`` is the cross-entropy). The metric reads
        the model's output ``[n, classes]``. Returns a
        :class:`~faithlens.tasks.tensors.TensorTask`."""
        from .tensors import TensorTask

        return TensorTask.build(clean, corrupt, answers, labels=labels, metric=metric, name=name)

    @classmethod
    def from_token_ids(
        cls,
        clean: Sequence[Sequence[int]],
        corrupt: Sequence[Sequence[int]],
        answers: Sequence[tuple[int, int]],
        *,
        metric: str | Metric = "logit_diff",
        name: str = "custom",
        pad_id: int = 0,
    ) -> Task:
        """Build a task from token ids (for models without a tokenizer); the metric reads the
        logits at each example's last token. Examples may differ in length (they are
        right-padded with ``pad_id``), but each clean example must have as many tokens as its
        corrupted twin; each answer pair is (correct, wrong) token ids."""
        if not (len(clean) == len(corrupt) == len(answers)):
            raise InputError(
                f"got {len(clean)} clean examples, {len(corrupt)} corrupted examples and "
                f"{len(answers)} answer pairs; give one of each per example"
            )
        if len(clean) == 0:
            raise InputError("a task needs at least one example")
        for i, (c, k) in enumerate(zip(clean, corrupt, strict=True)):
            if len(c) != len(k) or len(c) == 0:
                raise InputError(
                    f"example {i}: the clean ids have {len(c)} tokens and the corrupted ids "
                    f"{len(k)}; give each pair the same (non-zero) number of tokens"
                )
        seq = max(len(c) for c in clean)
        n = len(clean)
        ci = torch.full((n, seq), pad_id, dtype=torch.long)
        ki = torch.full((n, seq), pad_id, dtype=torch.long)
        mask = torch.zeros((n, seq), dtype=torch.long)
        for i, (c, k) in enumerate(zip(clean, corrupt, strict=True)):
            ci[i, : len(c)] = torch.tensor(list(c), dtype=torch.long)
            ki[i, : len(k)] = torch.tensor(list(k), dtype=torch.long)
            mask[i, : len(c)] = 1
        return cls(
            name=name,
            clean=Inputs(ids=ci, mask=mask),
            corrupt=Inputs(ids=ki, mask=mask.clone()),
            answers=torch.tensor([list(a) for a in answers], dtype=torch.long),
            positions=(mask.sum(-1) - 1).long(),
            metric=get_metric(metric),
        )


def no_head_message(model: Model, fn: str) -> str:
    """Why a Hugging Face model without a language-model head (``get_output_embeddings()`` is
    None: a bare encoder or decoder, a sequence classifier) cannot score a task's token
    answers, and what to use instead."""
    cls = type(model.module).__name__
    if "Classification" in cls or any(
        hasattr(model.module, a) for a in ("classifier", "score", "qa_outputs")
    ):
        what = "a classifier: its output is one score per class"
    else:
        what = "a bare transformer: its outputs are hidden states"
    name = model.name if model.name == cls else f"{model.name} ({cls})"
    return (
        f"{fn}: {name} has no language-model head ({what}, not token logits), so "
        "the task's answer tokens cannot be scored; use a model with a language-model head "
        "(a causal LM such as smollm2, a zoo model, or the ...ForCausalLM / ...ForMaskedLM "
        "class of this architecture)"
    )
