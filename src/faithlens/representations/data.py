"""Contrast pairs and the shipped true/false facts.

A :class:`ContrastPairs` holds ``n`` pairs of prompts that differ in one concept: the *positive*
member has it (a true statement, an honest persona), the *negative* member does not. Prompts
are strings (tokenised by the model) or token-id sequences. ``groups`` ties pairs that share
content (several prefixes of one fact): held-out splits never put one group on both sides.

The package ships ``data/contrast_truth.jsonl``: 247 short facts written for faithlens
(capitals, arithmetic in words, animal sounds and classes, colours, opposites, counting, places,
languages, calendar, everyday science), each with a *stem*, its *true* completion and a
plausible *false* one ("The capital of France is" / " Paris" / " Beijing"). From it:

- :func:`truth_pairs`: the statements ``stem + true + "."`` vs ``stem + false + "."`` (a feature:
  is the statement true; Marks & Tegmark's contrast);
- :func:`honesty_pairs`: the RepE honesty stimulus (Zou et al. 2023), an honest vs an untruthful
  persona instruction followed by the start of a true statement (a behaviour);
- :func:`fact_completion`: the model completing each stem as an assistant, scored by the
  probability of the true vs the false completion and by what it generates (see
  :class:`~faithlens.representations.behaviour.Behaviour`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from .. import validate as V
from ..errors import InputError
from ..fingerprint import data_fingerprint

if TYPE_CHECKING:
    from ..models.model import Model

#: A prompt: text (tokenised by the model) or token ids.
Prompt: TypeAlias = str | tuple[int, ...]

HONEST_PERSONA = "Pretend you're an honest person making statements about the world."
UNTRUTHFUL_PERSONA = "Pretend you're an untruthful person making statements about the world."
COMPLETION_INSTRUCTION = "Complete the sentence with a true fact."


def _as_prompt(p: Any, where: str) -> Prompt:
    if isinstance(p, str):
        if not p:
            raise InputError(f"{where}: an empty prompt")
        return p
    try:
        ids = tuple(int(i) for i in p)
    except TypeError as e:
        raise InputError(
            f"{where}: a prompt is a string or a sequence of token ids, not {type(p).__name__}"
        ) from e
    if not ids:
        raise InputError(f"{where}: an empty token sequence")
    return ids


@dataclass(frozen=True, eq=False)
class ContrastPairs:
    """``n`` pairs of prompts that differ in one concept (``positive[i]`` has it,
    ``negative[i]`` does not).

    Args:
        positive, negative: prompts (strings or token-id sequences), one per pair.
        groups: an id per pair; pairs with the same id stay on one side of :meth:`split`.
        concept: what the positive member has ("true", "honest", ...), for reports.
        name: the dataset's name, for reports.

    It is a :class:`~faithlens.tasks.data.Data` (``len``, ``subset``, ``fingerprint``).
    """

    positive: tuple[Prompt, ...]
    negative: tuple[Prompt, ...]
    groups: tuple[str, ...] | None = None
    concept: str = "positive"
    name: str = "pairs"

    def __post_init__(self) -> None:
        pos = tuple(
            _as_prompt(p, f"{self.name}: positive[{i}]") for i, p in enumerate(self.positive)
        )
        neg = tuple(
            _as_prompt(p, f"{self.name}: negative[{i}]") for i, p in enumerate(self.negative)
        )
        if len(pos) != len(neg):
            raise InputError(
                f"{self.name}: {len(pos)} positive but {len(neg)} negative prompts; contrast "
                "pairs need one negative per positive"
            )
        if len(pos) < 2:
            raise InputError(f"{self.name}: need at least 2 contrast pairs, got {len(pos)}")
        object.__setattr__(self, "positive", pos)
        object.__setattr__(self, "negative", neg)
        if self.groups is not None:
            g = tuple(str(x) for x in self.groups)
            if len(g) != len(pos):
                raise InputError(f"{self.name}: {len(g)} group ids for {len(pos)} pairs")
            object.__setattr__(self, "groups", g)

    def __len__(self) -> int:
        return len(self.positive)

    @property
    def group_ids(self) -> tuple[str, ...]:
        """The group of every pair (each pair is its own group when none were given)."""
        return self.groups if self.groups is not None else tuple(str(i) for i in range(len(self)))

    def subset(self, rows: Iterable[int]) -> ContrastPairs:
        """The pairs ``rows`` (in that order, repetitions allowed)."""
        idx = [int(i) for i in rows]
        if not idx:
            raise InputError(f"{self.name}: an empty subset of contrast pairs")
        bad = [i for i in idx if not 0 <= i < len(self)]
        if bad:
            raise InputError(f"{self.name}: pair indices {bad[:5]} out of range 0..{len(self) - 1}")
        return replace(
            self,
            positive=tuple(self.positive[i] for i in idx),
            negative=tuple(self.negative[i] for i in idx),
            groups=None if self.groups is None else tuple(self.groups[i] for i in idx),
        )

    def fingerprint(self) -> str:
        """sha256 of the prompts, groups, concept and name: the
        :class:`~faithlens.tasks.data.Data` fingerprint."""
        return data_fingerprint(
            {
                "positive": self.positive,
                "negative": self.negative,
                "groups": self.groups,
                "concept": self.concept,
                "name": self.name,
            }
        )

    def split(self, test: float = 0.25, *, seed: int = 0) -> tuple[ContrastPairs, ContrastPairs]:
        """A seeded train/test split by group (no group on both sides). ``test`` is the
        fraction of groups held out."""
        train_rows, test_rows = split_groups(self.group_ids, test, seed=seed, name=self.name)
        return self.subset(train_rows), self.subset(test_rows)

    @classmethod
    def from_records(
        cls,
        records: Iterable[Mapping[str, Any]],
        *,
        positive: str = "positive",
        negative: str = "negative",
        group: str | None = None,
        concept: str = "positive",
        name: str = "pairs",
    ) -> ContrastPairs:
        """Pairs from dictionaries (one per pair) with the positive / negative prompt keys."""
        recs = list(records)
        for i, r in enumerate(recs):
            missing = [k for k in (positive, negative, group) if k is not None and k not in r]
            if missing:
                raise InputError(f"{name}: record {i} has no {missing} (keys: {sorted(r)})")
        return cls(
            positive=tuple(r[positive] for r in recs),
            negative=tuple(r[negative] for r in recs),
            groups=None if group is None else tuple(str(r[group]) for r in recs),
            concept=concept,
            name=name,
        )

    @classmethod
    def from_jsonl(cls, path: str | Path, **kwargs: Any) -> ContrastPairs:
        """Pairs from a JSON-lines file; see :meth:`from_records` for the keyword arguments."""
        p = Path(path)
        if not p.exists():
            raise InputError(f"no contrast-pair file at {p}")
        kwargs.setdefault("name", p.stem)
        return cls.from_records(_read_jsonl(p.read_text(), str(p)), **kwargs)


def split_groups(
    groups: Sequence[str], test: float = 0.25, *, seed: int = 0, name: str = "pairs"
) -> tuple[list[int], list[int]]:
    """Row indices of a seeded train/test split by group: ``test`` is the fraction of groups
    held out (at least 2 groups on each side)."""
    if not 0.0 < test < 1.0:
        raise InputError(f"test must be a fraction in (0, 1), got {test}")
    gids = np.asarray(list(groups))
    uniq = np.unique(gids)
    if len(uniq) < 4:
        raise InputError(
            f"{name}: {len(uniq)} groups are too few to hold some out; need at least 4"
        )
    perm = np.random.default_rng(seed).permutation(uniq)
    n_test = min(max(2, round(test * len(uniq))), len(uniq) - 2)
    held = set(perm[:n_test].tolist())
    test_rows = [i for i, g in enumerate(gids) if g in held]
    train_rows = [i for i, g in enumerate(gids) if g not in held]
    return train_rows, test_rows


def _read_jsonl(text: str, where: str) -> list[dict[str, Any]]:
    out = []
    for k, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise InputError(f"{where}: line {k} is not valid JSON ({e.msg})") from e
    return out


@dataclass(frozen=True)
class Fact:
    """One shipped fact: ``stem + true`` is true, ``stem + false`` is false."""

    id: str
    topic: str
    stem: str
    true: str
    false: str

    def statement(self, truthful: bool = True) -> str:
        return f"{self.stem}{self.true if truthful else self.false}."


FACTS_FILE = "contrast_truth.jsonl"


def facts(topics: Sequence[str] | None = None) -> tuple[Fact, ...]:
    """The shipped facts (``data/contrast_truth.jsonl``), optionally only some topics."""
    text = resources.files("faithlens").joinpath("data", FACTS_FILE).read_text(encoding="utf-8")
    out = tuple(Fact(**r) for r in _read_jsonl(text, FACTS_FILE))
    if topics is not None:
        known = sorted({f.topic for f in out})
        bad = [t for t in topics if t not in known]
        if bad:
            raise InputError(f"unknown fact topics {bad}; topics are {known}")
        out = tuple(f for f in out if f.topic in topics)
    return out


def _pick(items: Sequence[Fact] | None, n: int | None, seed: int) -> tuple[Fact, ...]:
    pool = tuple(items) if items is not None else facts()
    V.nonnegative_int("seed", seed)
    if n is not None:
        n = V.min_examples("n", n, what="a set of contrast pairs or prompts")
        if n > len(pool):
            raise V.fail(
                "n",
                n,
                f"there are only {len(pool)} facts",
                f"use n <= {len(pool)}, or None for all",
            )
        if n < len(pool):
            idx = np.sort(np.random.default_rng(seed).choice(len(pool), n, replace=False))
            pool = tuple(pool[i] for i in idx)
    return pool


def chat_prompt(model: Model, user: str, *, system: str | None = None, assistant: str = "") -> str:
    """A prompt in the model's chat format: the user's message, the assistant's turn opened,
    and ``assistant`` (the start of its reply) appended. Needs a tokenizer with a chat template."""
    tok = model.tokenizer
    if tok is None or not getattr(tok, "chat_template", None):
        raise InputError(
            f"{model.name} has no chat template; pass chat=False to use plain-text prompts"
        )
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user}
    ]
    text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    return str(text) + assistant


def truth_pairs(
    items: Sequence[Fact] | None = None, *, n: int | None = None, seed: int = 0
) -> ContrastPairs:
    """True vs false statements (``"The capital of France is Paris."`` vs ``"... Beijing."``),
    one pair per fact, read as plain text."""
    pool = _pick(items, n, seed)
    return ContrastPairs(
        positive=tuple(f.statement(True) for f in pool),
        negative=tuple(f.statement(False) for f in pool),
        groups=tuple(f.id for f in pool),
        concept="true",
        name="truth",
    )


def honesty_pairs(
    model: Model | None = None,
    items: Sequence[Fact] | None = None,
    *,
    n: int | None = None,
    prefixes: str = "stem",
    chat: bool = True,
    seed: int = 0,
) -> ContrastPairs:
    """The RepE honesty stimulus: "Pretend you're an honest / untruthful person making
    statements about the world." followed, in the assistant's reply, by the start of a true
    statement. ``prefixes="stem"``: the fact's stem (one pair per fact); ``"words"``: every
    word prefix of the stem of at least two words (several pairs per fact, grouped).
    ``chat=True`` formats with the model's chat template (then ``model`` is required)."""
    if prefixes not in ("stem", "words"):
        raise InputError(f"prefixes must be 'stem' or 'words', not {prefixes!r}")
    if chat and model is None:
        raise InputError("honesty_pairs(chat=True) needs the model (for its chat template)")
    pool = _pick(items, n, seed)
    pos: list[str] = []
    neg: list[str] = []
    groups: list[str] = []
    for f in pool:
        words = f.stem.split(" ")
        cuts = (
            [f.stem]
            if prefixes == "stem"
            else [" ".join(words[:k]) for k in range(2, len(words) + 1)]
        )
        for c in cuts:
            for persona, out in ((HONEST_PERSONA, pos), (UNTRUTHFUL_PERSONA, neg)):
                if chat:
                    assert model is not None
                    out.append(chat_prompt(model, persona, assistant=c))
                else:
                    out.append(f"{persona} {c}")
            groups.append(f.id)
    return ContrastPairs(tuple(pos), tuple(neg), tuple(groups), concept="honest", name="honesty")


def fact_completion(
    model: Model | None = None,
    items: Sequence[Fact] | None = None,
    *,
    n: int | None = None,
    chat: bool = True,
    system: str | None = None,
    instruction: str = COMPLETION_INSTRUCTION,
    seed: int = 0,
) -> Any:
    """The behaviour "completes a fact truthfully": the assistant's reply starts with the stem;
    the positive continuation is the true completion, the negative one the false completion.
    Returns a :class:`~faithlens.representations.behaviour.Behaviour`."""
    from .behaviour import Behaviour

    if chat and model is None:
        raise InputError("fact_completion(chat=True) needs the model (for its chat template)")
    pool = _pick(items, n, seed)
    if chat:
        assert model is not None
        prompts = tuple(
            chat_prompt(model, instruction, system=system, assistant=f.stem) for f in pool
        )
    else:
        prompts = tuple(f.stem for f in pool)
    return Behaviour(
        prompts=prompts,
        positive=tuple(f.true for f in pool),
        negative=tuple(f.false for f in pool),
        name="truthful completion",
        ids=tuple(f.id for f in pool),
    )


__all__ = [
    "COMPLETION_INSTRUCTION",
    "HONEST_PERSONA",
    "UNTRUTHFUL_PERSONA",
    "ContrastPairs",
    "Fact",
    "Prompt",
    "chat_prompt",
    "fact_completion",
    "facts",
    "honesty_pairs",
    "split_groups",
    "truth_pairs",
]
