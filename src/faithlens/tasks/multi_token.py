"""Multi-token answers by teacher forcing.

An answer of ``m`` tokens ``a_0 .. a_{m-1}`` to a prompt of ``L`` tokens is scored on the
sequence ``prompt + a_0 .. a_{m-2}`` (the answer appended, its last token never an input):

    log p(answer | prompt) = sum_j log softmax(logits at position L - 1 + j)[a_j]

The clean and the corrupted prompt get the same continuation, so each pair stays
position-aligned (patching the corrupted run at position ``t`` still lines up with the clean
run). With a wrong answer the metric is the logit-difference analogue

    log p(correct | prompt) - log p(wrong | prompt),

each term teacher-forced on its own sequence: the correct continuation is the task itself, the
wrong one its ``against`` task (same prompts, same examples); a method runs both and subtracts
per example before any statistics (:meth:`~faithlens.tasks.Task.parts`), so intervals are over
examples, never over continuations. Without a wrong answer the metric is
``log p(correct | prompt)`` alone.

``Task.positions`` of a multi-token task is each example's last position read (a causal run
still stops there); ``Task.reads`` ``[n, k]`` are all the positions read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from ..errors import InputError
from ..models.model import Inputs, Model
from .metrics import SequenceLogProb

if TYPE_CHECKING:
    from .base import Task

#: What a method that cannot score a multi-token task suggests instead.
SUPPORTED = "fl.patch (exact or attribution), fl.path_patch, fl.logit_lens and Task.evaluate"

Tokens = Sequence[int]


def refusal(task: Task, fn: str) -> str:
    """The message of a method that cannot score ``task``'s multi-token answers."""
    assert task.reads is not None
    return (
        f"{fn}: the task {task.name!r} has multi-token answers (teacher forcing: its metric "
        f"reads up to {int(task.reads.shape[1])} positions per example), which {fn} does not "
        f"support; multi-token tasks work with {SUPPORTED}. For {fn}, give single-token "
        "answers (Task.from_prompts), e.g. end each prompt so that the answer's first token "
        "decides it"
    )


def check_multi_token(task: Task) -> None:
    """The checks of a multi-token task's ``reads``, ``answer_mask``, ``answers``,
    ``positions``, metric and ``against`` (see the module docstring)."""
    n, seq = task.n, task.seq_len
    reads, mask, ans = task.reads, task.answer_mask, task.answers
    if reads is None or mask is None:
        raise InputError(
            "a multi-token task needs both reads and answer_mask ([n, k]); build it with "
            "Task.multi_token"
        )
    shape = (n, int(reads.shape[1]) if reads.dim() == 2 else -1)
    for what, t in (("reads", reads), ("answer_mask", mask), ("answers", ans)):
        if t.dim() != 2 or tuple(t.shape) != shape or shape[1] < 1:
            raise InputError(
                f"a multi-token task's {what} must be [n={n}, k] like its reads; got "
                f"{tuple(t.shape)}"
            )
    if reads.is_floating_point() or reads.dtype == torch.bool:
        raise InputError(f"reads must be integer positions, not {reads.dtype}")
    m = mask.cpu().bool()
    if not bool(m[:, 0].all()):
        raise InputError("answer_mask: every answer needs at least one token (column 0 set)")
    r = reads.cpu().long()
    if bool(((r < 0) | (r >= seq)).any()):
        raise InputError(f"reads must be positions 0..{seq - 1}; got {r.min()}..{r.max()}")
    cm = task.clean.mask.cpu().bool() if task.clean.mask is not None else None
    if cm is not None and not bool(cm.gather(1, r)[m].all()):
        raise InputError("reads fall on padding; read only the prompt's and answer's tokens")
    last = r.masked_fill(~m, -1).max(-1).values
    if not torch.equal(last, task.positions.cpu().long()):
        raise InputError(
            "a multi-token task's positions must be each example's last position read "
            "(reads.max(-1))"
        )
    if not isinstance(task.metric, SequenceLogProb):
        raise InputError(
            f"a multi-token task scores with SequenceLogProb, not {task.metric.name!r}; its "
            "metric is log p(correct) (wrong=None) or log p(correct) - log p(wrong)"
        )
    a = task.against
    if a is not None and (a.reads is None or a.against is not None or a.n != n):
        raise InputError(
            "against must be a multi-token task of the same examples (the wrong "
            "continuation) without an against of its own"
        )


def token_list(model: Model, value: str | Tokens, what: str, *, prompt: bool) -> list[int]:
    """A prompt or answer as token ids: text through the model's tokenizer (a prompt with its
    special tokens, as :meth:`Model.tokenize`; an answer without), or token ids as given."""
    if isinstance(value, str):
        if not value:
            raise InputError(f"{what} is an empty string; give some text or token ids")
        if prompt:
            inp = model.tokenize([value])
            assert inp.ids is not None
            return [int(t) for t in inp.ids[0].tolist()]
        tok = model.require_tokenizer()
        out = [int(t) for t in tok(value, add_special_tokens=False)["input_ids"]]
        if not out:
            raise InputError(f"{what} {value!r} is no tokens for {model.name}; give some text")
        return out
    ids = list(value)
    if not ids or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in ids):
        raise InputError(
            f"{what} must be text or a non-empty list of token ids (integers >= 0), not {value!r}"
        )
    return ids


def build(
    model: Model,
    clean: Sequence[str | Tokens],
    corrupt: Sequence[str | Tokens],
    correct: Sequence[str | Tokens],
    wrong: Sequence[str | Tokens] | None,
    *,
    name: str,
    pad_id: int = 0,
) -> Task:
    """The multi-token task (see :meth:`Task.multi_token`)."""
    n = len(clean)
    if not (n == len(corrupt) == len(correct)) or (wrong is not None and len(wrong) != n):
        raise InputError(
            f"got {len(clean)} clean prompts, {len(corrupt)} corrupted prompts, "
            f"{len(correct)} correct answers"
            + ("" if wrong is None else f" and {len(wrong)} wrong answers")
            + "; give one of each per example"
        )
    if n == 0:
        raise InputError("a task needs at least one example")
    cs = [token_list(model, c, f"clean prompt {i}", prompt=True) for i, c in enumerate(clean)]
    ks = [token_list(model, k, f"corrupt prompt {i}", prompt=True) for i, k in enumerate(corrupt)]
    for i, (c, k) in enumerate(zip(cs, ks, strict=True)):
        if len(c) != len(k):
            raise InputError(
                f"example {i}: the clean prompt is {len(c)} tokens and the corrupted one "
                f"{len(k)}; patching needs position-aligned pairs (change words for words of "
                "as many tokens)"
            )
    right = [
        token_list(model, a, f"correct answer {i}", prompt=False) for i, a in enumerate(correct)
    ]
    wrongs = (
        None
        if wrong is None
        else [token_list(model, a, f"wrong answer {i}", prompt=False) for i, a in enumerate(wrong)]
    )
    if wrongs is not None:
        same = [i for i in range(n) if right[i] == wrongs[i]]
        if same:
            raise InputError(
                f"examples {same[:8]}: the correct and wrong answers are the same tokens; give "
                "two different answers per example"
            )
    width = max(len(c) + len(a) - 1 for c, a in zip(cs, right, strict=True))
    if wrongs is not None:
        width = max(width, max(len(c) + len(a) - 1 for c, a in zip(cs, wrongs, strict=True)))
    metric = SequenceLogProb(name="seq_logprob" if wrongs is None else "seq_logprob_diff")
    task = _part(cs, ks, right, width, pad_id, name, metric)
    if wrongs is None:
        return task
    against = _part(cs, ks, wrongs, width, pad_id, f"{name} (wrong)", SequenceLogProb())
    return replace(task, against=against)


def _part(
    cs: list[list[int]],
    ks: list[list[int]],
    answers: list[list[int]],
    width: int,
    pad_id: int,
    name: str,
    metric: SequenceLogProb,
) -> Task:
    """The prompts with one continuation each appended (teacher forcing), right-padded to
    ``width``; ``reads`` the positions predicting each answer token."""
    from .base import Task

    n, k = len(cs), max(len(a) for a in answers)
    ci = torch.full((n, width), pad_id, dtype=torch.long)
    ki = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    reads = torch.zeros((n, k), dtype=torch.long)
    ans = torch.zeros((n, k), dtype=torch.long)
    amask = torch.zeros((n, k), dtype=torch.bool)
    for i, (c, kk, a) in enumerate(zip(cs, ks, answers, strict=True)):
        length = len(c) + len(a) - 1
        ci[i, :length] = torch.tensor(c + a[:-1])
        ki[i, :length] = torch.tensor(kk + a[:-1])
        mask[i, :length] = 1
        m = len(a)
        reads[i, :m] = torch.arange(len(c) - 1, len(c) - 1 + m)
        reads[i, m:] = len(c) - 2 + m  # padding repeats the last read (masked out)
        ans[i, :m] = torch.tensor(a)
        ans[i, m:] = a[-1]
        amask[i, :m] = True
    return Task(
        name=name,
        clean=Inputs(ids=ci, mask=mask),
        corrupt=Inputs(ids=ki, mask=mask.clone()),
        answers=ans,
        positions=reads.max(-1).values,
        metric=metric,
        reads=reads,
        answer_mask=amask,
        meta={"answer_lengths": [len(a) for a in answers]},
    )
