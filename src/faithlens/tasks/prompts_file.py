"""A task from your own data: a JSON-lines file of clean / corrupted prompts and answers.

Each non-blank line is one example, a JSON object in one of two forms (one form per file):

* text, for a model with a tokenizer::

    {"clean": "When Mary and John went to the store, John gave a drink to",
     "corrupt": "When Mary and John went to the store, Mary gave a drink to",
     "answer": " Mary", "wrong": " John"}

* token ids, for a model without a tokenizer (or to bypass it)::

    {"clean_ids": [5, 17, 3, 5], "corrupt_ids": [5, 9, 3, 5], "answer_id": 17, "wrong_id": 9}

The metric (logit difference by default) reads the logits at each example's last token; each
clean prompt must have as many tokens as its corrupted twin. An answer may be several tokens
(text that the tokenizer splits, or a list of ids: ``"answer_id": [17, 4]``): the whole file is
then a multi-token task (:meth:`Task.multi_token`, teacher forcing), scored by
``log p(answer | prompt) - log p(wrong | prompt)``, each answer's log-probability the sum over its
tokens. An answer may also be a *set* of one-token answers, any of which is right (or wrong):
``"answer": [" Paris", " paris"]`` (text) or ``"answer_id": [[17], [18]]`` (token ids: a list of
one-token answers); ``"wrong"`` / ``"wrong_id"`` likewise. When any line gives a set, the whole
file is scored by :class:`~faithlens.tasks.metrics.AnswerSet` (a single answer is a set of one):
``log p(correct set) - log p(wrong set)`` at the last token, which for sets of one is the logit
difference. Sets and multi-token answers do not mix in one file. :func:`read_task_file` checks the file line by line without a model (errors name the
file, the line and the field); :meth:`TaskFile.build` then builds the task with
:meth:`Task.from_prompts`, :meth:`Task.from_token_ids` or :meth:`Task.multi_token` for a model,
checking each line's tokens.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..models.model import Model
from .base import Task
from .metrics import AnswerSet, Metric

#: The fields of each form, in the order a line gives them.
TEXT_FIELDS = ("clean", "corrupt", "answer", "wrong")
ID_FIELDS = ("clean_ids", "corrupt_ids", "answer_id", "wrong_id")
#: The metrics a file with multi-token answers can be scored with, by the name it is given.
MULTI_METRICS = {"logit_diff": "seq_logprob_diff", "logprob": "seq_logprob"}
#: The metrics a file with answer sets can be scored with (each an AnswerSet of logsumexp).
SET_METRICS = ("logit_diff", "answer_set")


@dataclass(frozen=True)
class TaskFile:
    """The checked examples of a task file: ``form`` is ``"text"`` or ``"ids"``; ``rows`` the
    examples (dicts of the form's fields) and ``lines`` their line numbers in ``path``."""

    path: Path
    form: str
    rows: tuple[dict[str, Any], ...]
    lines: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def name(self) -> str:
        return self.path.stem

    def where(self, i: int, field: str | None = None) -> str:
        """``path:line`` of example ``i`` (and the field), for an error message."""
        return f"{self.path}:{self.lines[i]}" + (f": field {field!r}" if field else "")

    def build(self, model: Model, *, metric: str | Metric = "logit_diff") -> Task:
        """The task for ``model``: text is tokenized by its tokenizer (each answer one token,
        each clean prompt as long as its corrupted twin, checked line by line); token ids must
        be in its vocabulary. When any answer is several tokens the task is a multi-token one
        (teacher forcing): ``metric`` ``"logit_diff"`` then means ``log p(answer) -
        log p(wrong)`` and ``"logprob"`` ``log p(answer)``; no other metric applies."""
        if self.form == "ids":
            return self._build_ids(model, metric)
        tok = model.require_tokenizer()
        answers = []
        multi = False
        sets = self.has_sets
        for i, row in enumerate(self.rows):
            for f in ("answer", "wrong"):
                for member in _members(row[f]):
                    ids = tok(member, add_special_tokens=False)["input_ids"]
                    if not ids:
                        raise InputError(
                            f"{self.where(i, f)}: {member!r} is no tokens for {model.name}"
                        )
                    if sets and len(ids) > 1:
                        raise InputError(
                            f"{self.where(i, f)}: {member!r} is {len(ids)} tokens for "
                            f"{model.name}, but the file gives answer sets, whose members "
                            "are one token each (mind the leading space); sets and "
                            "multi-token answers do not mix"
                        )
                    multi = multi or len(ids) > 1
            answers.append((row["answer"], row["wrong"]))
            try:
                c, k = model.tokenize([row["clean"]]), model.tokenize([row["corrupt"]])
            except InputError as e:
                raise InputError(f"{self.where(i)}: {e}") from None
            assert c.ids is not None and k.ids is not None
            if c.ids.shape != k.ids.shape:
                raise InputError(
                    f"{self.where(i)}: the clean prompt is {c.ids.shape[1]} tokens for "
                    f"{model.name} and the corrupted one {k.ids.shape[1]}; patching needs "
                    "position-aligned pairs (change words for words of as many tokens)"
                )
        if multi:
            return self._build_multi(model, metric, "clean", "corrupt", "answer", "wrong")
        rows, metric = self._answer_rows(answers, metric)
        return Task.from_prompts(
            model,
            [r["clean"] for r in self.rows],
            [r["corrupt"] for r in self.rows],
            rows,
            metric=metric,
            name=self.name,
        )

    @property
    def has_sets(self) -> bool:
        """Whether some line gives an answer set (``"answer": [...]`` of text, or
        ``"answer_id": [[...], ...]`` of token ids) rather than one answer."""
        fields = ("answer", "wrong") if self.form == "text" else ("answer_id", "wrong_id")
        return any(_is_set(r[f], self.form) for r in self.rows for f in fields)

    def _answer_rows(self, pairs: list[tuple[Any, Any]], metric: str | Metric) -> tuple[Any, Any]:
        """Each example's answer row and the metric: ``(correct, wrong)`` and ``metric`` as
        given, or with answer sets every correct member then every wrong one, padded to the
        largest sets by repeating a member, and an :class:`AnswerSet` metric."""
        if not self.has_sets:
            return pairs, metric
        if isinstance(metric, AnswerSet):
            reduce = metric.reduce
        else:
            name = metric if isinstance(metric, str) else metric.name
            if name not in SET_METRICS:
                raise InputError(
                    f"{self.path}: some answers are sets, scored by log p(correct set) - "
                    f"log p(wrong set), and metric {name!r} does not apply; use "
                    "'logit_diff' (or 'answer_set', the same), or give one answer per field"
                )
            reduce = "logsumexp"
        good = [_members(a) for a, _ in pairs]
        bad = [_members(w) for _, w in pairs]
        k, m = max(map(len, good)), max(map(len, bad))
        rows = [tuple(_pad(g, k) + _pad(b, m)) for g, b in zip(good, bad, strict=True)]
        return rows, AnswerSet(n_correct=k, reduce=reduce)

    def _build_ids(self, model: Model, metric: str | Metric) -> Task:
        vocab = int(getattr(model.adapter, "d_vocab", 0) or 0)
        for i, row in enumerate(self.rows):
            for f in ID_FIELDS:
                v = row[f]
                flat = [x for m in _members(v) for x in _ids(m)] if _is_set(v, "ids") else _ids(v)
                top = max(flat)
                if vocab and top >= vocab:
                    raise InputError(
                        f"{self.where(i, f)}: token id {top} is outside the vocabulary of "
                        f"{model.name} ({vocab} tokens: ids 0..{vocab - 1})"
                    )
        if self.has_sets:
            for i, row in enumerate(self.rows):
                for f in ("answer_id", "wrong_id"):
                    if not _is_set(row[f], "ids") and len(_ids(row[f])) > 1:
                        raise InputError(
                            f"{self.where(i, f)}: a multi-token answer, but the file gives "
                            "answer sets (lists of one-id lists); sets and multi-token "
                            "answers do not mix in one file"
                        )
            pairs = [
                ([m[0] for m in _set_ids(r["answer_id"])], [m[0] for m in _set_ids(r["wrong_id"])])
                for r in self.rows
            ]
            rows, metric = self._answer_rows(pairs, metric)
            return Task.from_token_ids(
                [r["clean_ids"] for r in self.rows],
                [r["corrupt_ids"] for r in self.rows],
                rows,
                metric=metric,
                name=self.name,
            )
        if any(len(_ids(r[f])) > 1 for r in self.rows for f in ("answer_id", "wrong_id")):
            return self._build_multi(
                model, metric, "clean_ids", "corrupt_ids", "answer_id", "wrong_id"
            )
        return Task.from_token_ids(
            [r["clean_ids"] for r in self.rows],
            [r["corrupt_ids"] for r in self.rows],
            [(_ids(r["answer_id"])[0], _ids(r["wrong_id"])[0]) for r in self.rows],
            metric=metric,
            name=self.name,
        )

    def _build_multi(
        self, model: Model, metric: str | Metric, clean: str, corrupt: str, answer: str, wrong: str
    ) -> Task:
        """The file as a multi-token task (some answer is several tokens)."""
        name = metric if isinstance(metric, str) else metric.name
        if name not in MULTI_METRICS:
            raise InputError(
                f"{self.path}: some answers are several tokens, so the task is scored by "
                f"teacher forcing and metric {name!r} does not apply; use 'logit_diff' "
                "(log p(answer) - log p(wrong)) or 'logprob' (log p(answer))"
            )

        def column(f: str) -> list[Any]:
            return [r[f] if isinstance(r[f], str) else _ids(r[f]) for r in self.rows]

        return Task.multi_token(
            model,
            column(clean),
            column(corrupt),
            column(answer),
            None if MULTI_METRICS[name] == "seq_logprob" else column(wrong),
            name=self.name,
        )


def is_task_file(text: str) -> bool:
    """Whether a ``--task`` value names a file rather than a registered task."""
    return text.endswith((".jsonl", ".json")) or "/" in text or Path(text).is_file()


def read_task_file(path: str | Path) -> TaskFile:
    """Read and check a task file (see the module docstring) without a model; any problem is
    an :class:`~faithlens.errors.InputError` naming the file, the line and the field."""
    p = Path(path)
    if not p.is_file():
        raise InputError(
            f"task file {str(p)!r} does not exist; give a JSON-lines file of examples "
            "(see docs/patching.md, 'A task from your own prompts') or a registered task name"
        )
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"task file {p}: cannot be read as UTF-8 text ({e})") from None
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    form: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{p}:{number}"
        row = _parse_line(line, where)
        this = "ids" if any(k in row for k in ID_FIELDS) else "text"
        if form is None:
            form = this
        elif this != form:
            raise InputError(
                f"{where}: this line gives {this} but line {lines[0]} gives {form}; use one "
                f"form per file ({', '.join(TEXT_FIELDS)} or {', '.join(ID_FIELDS)})"
            )
        _check_row(row, this, where)
        rows.append(row)
        lines.append(number)
    if not rows or form is None:
        raise InputError(
            f"task file {p} has no examples; write one JSON object per line, e.g. "
            '{"clean": "...", "corrupt": "...", "answer": " Mary", "wrong": " John"}'
        )
    return TaskFile(path=p, form=form, rows=tuple(rows), lines=tuple(lines))


def _parse_line(line: str, where: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise InputError(
            f"{where}: not valid JSON ({e.msg} at column {e.colno}); each line is one JSON object"
        ) from None
    if not isinstance(row, dict):
        raise InputError(f"{where}: a line must be a JSON object, not {type(row).__name__}")
    return row


def _check_row(row: dict[str, Any], form: str, where: str) -> None:
    fields = TEXT_FIELDS if form == "text" else ID_FIELDS
    for f in fields:
        if f not in row:
            raise InputError(
                f"{where}: field {f!r} is missing; each line needs {', '.join(fields)}"
            )
    unknown = sorted(set(row) - set(fields))
    if unknown:
        raise InputError(
            f"{where}: unknown field {unknown[0]!r}; a line has exactly {', '.join(fields)}"
        )
    if form == "text":
        for f in ("clean", "corrupt"):
            if not isinstance(row[f], str) or not row[f]:
                raise InputError(f"{where}: field {f!r} must be a non-empty string")
        for f in ("answer", "wrong"):
            v = row[f]
            if isinstance(v, list):
                if not v or not all(isinstance(x, str) and x for x in v):
                    raise InputError(
                        f"{where}: field {f!r} is a list, so an answer set: it must be a "
                        'non-empty list of non-empty strings, e.g. [" Paris", " paris"]'
                    )
            elif not isinstance(v, str) or not v:
                raise InputError(
                    f"{where}: field {f!r} must be a non-empty string, or a list of them (an "
                    "answer set)"
                )
        if row["answer"] == row["wrong"]:
            raise InputError(
                f"{where}: fields 'answer' and 'wrong' are both {row['answer']!r}; give two "
                "different answers"
            )
        _check_sets(row, "answer", "wrong", where)
        return
    for f in ("clean_ids", "corrupt_ids"):
        v = row[f]
        if not isinstance(v, list) or not v or not all(_token_id(x) for x in v):
            raise InputError(
                f"{where}: field {f!r} must be a non-empty list of token ids (integers >= 0)"
            )
    if len(row["clean_ids"]) != len(row["corrupt_ids"]):
        raise InputError(
            f"{where}: field 'corrupt_ids' has {len(row['corrupt_ids'])} tokens but "
            f"'clean_ids' has {len(row['clean_ids'])}; patching needs pairs of the same length"
        )
    for f in ("answer_id", "wrong_id"):
        v = row[f]
        if _is_set(v, "ids"):
            if not all(isinstance(m, list) and len(m) == 1 and _token_id(m[0]) for m in v):
                raise InputError(
                    f"{where}: field {f!r} is a list of lists, so an answer set: each member "
                    "must be one token id in a list of its own, e.g. [[17], [18]] (sets of "
                    "multi-token answers are not supported)"
                )
            continue
        if not (_token_id(v) or (isinstance(v, list) and v and all(_token_id(x) for x in v))):
            raise InputError(
                f"{where}: field {f!r} must be a token id (an integer >= 0), a non-empty list "
                "of token ids (a multi-token answer) or a list of one-id lists (an answer "
                "set, [[17], [18]])"
            )
    if _ids(row["answer_id"]) == _ids(row["wrong_id"]):
        raise InputError(
            f"{where}: fields 'answer_id' and 'wrong_id' are both {row['answer_id']}; give two "
            "different answers"
        )
    _check_sets(row, "answer_id", "wrong_id", where)


def _is_set(v: Any, form: str) -> bool:
    """Whether an answer field gives a set: a list of strings (text) or of lists (token ids)."""
    if form == "text":
        return isinstance(v, list)
    return isinstance(v, list) and bool(v) and all(isinstance(m, list) for m in v)


def _members(v: Any) -> list[Any]:
    """The answers of a field: its members if it is a set (or a list), else the one answer."""
    return list(v) if isinstance(v, list) else [v]


def _set_ids(v: Any) -> list[list[int]]:
    """A token-id answer field as a set of answers, each a list of ids."""
    return [list(m) for m in v] if _is_set(v, "ids") else [_ids(v)]


def _pad(members: list[Any], size: int) -> list[Any]:
    """A set padded to ``size`` members by repeating its first (a repeat counts once)."""
    return members + [members[0]] * (size - len(members))


def _check_sets(row: dict[str, Any], answer: str, wrong: str, where: str) -> None:
    """An answer set lists each member once, and no answer is both correct and wrong."""
    form = "text" if answer == "answer" else "ids"
    sides = {}
    for f in (answer, wrong):
        members = [json.dumps(m) for m in _set_ids(row[f])] if form == "ids" else _members(row[f])
        if _is_set(row[f], form) and len(set(members)) != len(members):
            twice = next(m for m in members if members.count(m) > 1)
            raise InputError(f"{where}: field {f!r} lists {twice} twice; list each answer once")
        sides[f] = members
    both = [m for m in sides[answer] if m in sides[wrong]]
    if both:
        raise InputError(
            f"{where}: fields {answer!r} and {wrong!r} both list {both[0]}; an answer cannot "
            "be both correct and wrong"
        )


def _ids(v: Any) -> list[int]:
    """An answer field's token ids: one id, or a list of them."""
    return list(v) if isinstance(v, list) else [v]


def _token_id(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0
