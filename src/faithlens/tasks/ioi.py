"""Indirect object identification (Wang et al. 2022), built for any tokenizer.

A clean prompt names two people, then repeats one of them (the subject, S); the model should
complete with the other (the indirect object, IO): "When Mary and John went to the store, John
gave a drink to" -> " Mary". The metric is logit(IO) - logit(S) at the last token.

Corruptions (both keep every token position aligned, as patching needs):

- ``"abc"`` (default): the repeated name S2 is replaced by a third name C, a minimal pair that
  differs at one position ("..., Bob gave a drink to"): the model no longer knows which of the
  two names to prefer.
- ``"abc_all"``: all three names are replaced by three fresh names (Wang et al.'s p_ABC).

Only names that are a single token (with their leading space) for the model's tokenizer are used,
so clean and corrupted prompts always have the same length.
"""

from __future__ import annotations

import random

import torch

from .. import validate
from ..errors import InputError
from ..models.model import Model
from .base import Task
from .metrics import Metric, get_metric

# {A}: the first-mentioned name, {B}: the second, {S}: the repeated subject.
TEMPLATES_ABBA = [
    "When {A} and {B} went to the {PLACE}, {S} gave a {OBJECT} to",
    "Then, {A} and {B} went to the {PLACE}. {S} gave a {OBJECT} to",
    "After {A} and {B} arrived at the {PLACE}, {S} handed a {OBJECT} to",
    "While {A} and {B} were working at the {PLACE}, {S} gave a {OBJECT} to",
    "Friends {A} and {B} found a {OBJECT} at the {PLACE}. {S} gave it to",
    "Afterwards, {A} and {B} went to the {PLACE}. {S} passed a {OBJECT} to",
]

NAMES = [
    "Mary",
    "John",
    "Tom",
    "James",
    "Dan",
    "Sid",
    "Martin",
    "Amy",
    "Kate",
    "Anna",
    "Paul",
    "Mark",
    "Lisa",
    "Sarah",
    "Ben",
    "Max",
    "Sam",
    "Jack",
    "Adam",
    "Ryan",
    "Emma",
    "Alice",
    "Bob",
    "David",
    "Mike",
    "Laura",
    "Rose",
    "Steve",
    "Tim",
    "Ann",
    "Eric",
    "Grace",
    "Henry",
    "Jane",
    "Kim",
    "Leo",
    "Nick",
    "Oscar",
    "Peter",
    "Ruth",
    "Lucy",
    "Joe",
    "George",
    "Helen",
    "Chris",
    "Alex",
    "Carl",
    "Emily",
    "Frank",
    "Jason",
    "Kevin",
    "Linda",
    "Nancy",
    "Olivia",
    "Susan",
    "Victor",
]
PLACES = [
    "store",
    "park",
    "school",
    "office",
    "station",
    "garden",
    "market",
    "library",
    "hospital",
    "restaurant",
    "beach",
    "house",
]
OBJECTS = [
    "drink",
    "book",
    "ring",
    "bag",
    "key",
    "gift",
    "ball",
    "pen",
    "letter",
    "cake",
    "flower",
    "phone",
]


def single_token_names(model: Model) -> list[str]:
    """The candidate names that are one token (with a leading space) for this tokenizer."""
    tok = model.require_tokenizer()
    return [n for n in NAMES if len(tok(" " + n, add_special_tokens=False)["input_ids"]) == 1]


def ioi(
    model: Model,
    n: int = 64,
    seed: int = 0,
    *,
    corruption: str = "abc",
    metric: str | Metric = "logit_diff",
    templates: list[str] | None = None,
) -> Task:
    """``n`` IOI prompts (half with the subject named first, half second) and their corruptions."""
    n = validate.positive_int("n", n, fix="ioi needs at least one example")
    seed = validate.nonnegative_int("seed", seed)
    if corruption not in ("abc", "abc_all"):
        raise InputError(f"ioi: corruption must be 'abc' or 'abc_all', not {corruption!r}")
    names = single_token_names(model)
    if len(names) < 6:
        raise InputError(
            f"ioi: only {len(names)} of the candidate names are single tokens for this tokenizer; "
            "IOI needs at least 6"
        )
    rng = random.Random(seed)
    tpls = templates or TEMPLATES_ABBA
    clean, corrupt, answers = [], [], []
    for i in range(n):
        tpl = rng.choice(tpls)
        io, s, c = rng.sample(names, 3)
        place, obj = rng.choice(PLACES), rng.choice(OBJECTS)
        first, second = (io, s) if i % 2 == 0 else (s, io)  # ABBA / BABA
        clean.append(tpl.format(A=first, B=second, S=s, PLACE=place, OBJECT=obj))
        if corruption == "abc":
            corrupt.append(tpl.format(A=first, B=second, S=c, PLACE=place, OBJECT=obj))
        else:
            x, y, z = rng.sample([m for m in names if m not in (io, s)], 3)
            corrupt.append(tpl.format(A=x, B=y, S=z, PLACE=place, OBJECT=obj))
        answers.append((" " + io, " " + s))
    task = Task.from_prompts(
        model, clean, corrupt, answers, metric=get_metric(metric), name=f"ioi-{corruption}"
    )
    return Task(
        name=task.name,
        clean=task.clean,
        corrupt=task.corrupt,
        answers=task.answers,
        positions=task.positions,
        metric=task.metric,
        prompts=task.prompts,
        corrupt_prompts=task.corrupt_prompts,
        answer_text=task.answer_text,
        meta={"seed": seed, "corruption": corruption, "n": n},
    )


def random_token_task(
    model: Model, n: int, seq_len: int, seed: int = 0, *, vocab: int | None = None
) -> Task:
    """A task on random tokens (for models without a tokenizer, e.g. random-config test models):
    the corrupted input differs from the clean one at a random position per example, and the
    answers are two random tokens."""
    n = validate.positive_int("n", n)
    seq_len = validate.positive_int("seq_len", seq_len)
    seed = validate.nonnegative_int("seed", seed)
    g = torch.Generator().manual_seed(seed)
    v = vocab or model.adapter.d_vocab
    if not v:
        raise InputError("random_token_task needs the vocabulary size")
    clean = torch.randint(1, v, (n, seq_len), generator=g)
    corrupt = clean.clone()
    where = torch.randint(0, seq_len, (n,), generator=g)
    corrupt[torch.arange(n), where] = (
        clean[torch.arange(n), where] + torch.randint(1, v - 1, (n,), generator=g)
    ) % (v - 1) + 1
    answers = torch.randint(1, v, (n, 2), generator=g)
    from ..models.model import Inputs

    mask = torch.ones_like(clean)
    return Task(
        name="random-tokens",
        clean=Inputs(ids=clean, mask=mask),
        corrupt=Inputs(ids=corrupt, mask=mask.clone()),
        answers=answers,
        positions=torch.full((n,), seq_len - 1, dtype=torch.long),
        meta={"seed": seed},
    )
