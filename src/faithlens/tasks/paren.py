"""Balanced parentheses: Redwood's paren-balance checker task (causal scrubbing, section 3.1).

A string of ``(`` and ``)`` is *balanced* when it passes two tests. With ``p_i`` the proportion of
open parens among the parens at token positions ``>= i`` (:func:`p_open_after`):

- the **count test**: ``p`` over the whole string is 1/2 (as many ``(`` as ``)``);
- the **horizon test**: ``max_i p_i <= 1/2`` (reading right to left, the nesting depth never goes
  negative).

Tokens follow Redwood's ``ParenTokenizer``: ``[START]=0, [PAD]=1, [END]=2, (=3, )=4``; a string of
``L`` parens is ``START`` + parens + ``END`` + padding, ``n_ctx = 42`` for up to 40 parens. The
classifier reads two logits at position 0: ``[unbalanced, balanced]``.

Data follow the mixture of Redwood's ``random_choice_len_40_extra_yeses_8`` (section 3.1 of the
causal scrubbing notes): about 76.5 % uniformly random strings (even length uniform over
2..40, each paren a fair coin) and 23.5 % extra balanced strings (uniform over the balanced
strings of their length; half-length ``k`` drawn with probability proportional to
``k ** -1.15``, so they are mostly short).

Everything is seeded; nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .. import validate
from ..errors import InputError
from ..models.model import Inputs
from .base import Task
from .metrics import Metric, get_metric

START, PAD, END, OPEN, CLOSE = 0, 1, 2, 3, 4
VOCAB: tuple[str, ...] = ("[START]", "[PAD]", "[END]", "(", ")")
MAX_PARENS = 40
N_CTX = MAX_PARENS + 2
#: Output classes of the classifier (the logits read at position 0).
UNBALANCED, BALANCED = 0, 1
#: Codes of :func:`horizon_classes` (Redwood's ``to_horizon_vals``).
H_PAD, H_END_AFTER_OPEN, H_END_AFTER_CLOSE, H_FAIL, H_PASS = 0, -1, 1, -2, 2
CATEGORIES = ("balanced", "count_only", "horizon_only", "both")


@dataclass(frozen=True)
class ParenMixture:
    """The data distribution: uniform random strings plus extra balanced strings.

    Args:
        balanced_fraction: share of extra balanced strings (the rest are uniform random).
        max_parens: longest string (even).
        balanced_exponent: half-lengths ``k`` of the extra balanced strings are drawn with
            probability proportional to ``k ** -balanced_exponent``.
    """

    balanced_fraction: float = 0.235
    max_parens: int = MAX_PARENS
    balanced_exponent: float = 1.15

    def __post_init__(self) -> None:
        if not 0.0 <= self.balanced_fraction <= 1.0:
            raise InputError(
                f"ParenMixture.balanced_fraction must be in [0, 1], got {self.balanced_fraction}"
            )
        if self.max_parens < 2 or self.max_parens % 2:
            raise InputError(
                f"ParenMixture.max_parens must be an even number >= 2, got {self.max_parens}"
            )

    @property
    def n_ctx(self) -> int:
        return self.max_parens + 2

    def half_length_probs(self) -> np.ndarray:
        """P(k) for k = 1..max_parens/2 (the extra balanced strings)."""
        k = np.arange(1, self.max_parens // 2 + 1, dtype=np.float64)
        w = k ** (-self.balanced_exponent)
        return w / w.sum()


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


def _generator(seed: int | torch.Generator) -> torch.Generator:
    if isinstance(seed, torch.Generator):
        return seed
    return torch.Generator().manual_seed(int(seed))


def uniform_dyck(half_lengths: Tensor, width: int, generator: torch.Generator) -> Tensor:
    """Uniformly random balanced strings, as ``+1`` (open) / ``-1`` (close), ``0``-padded.

    Cycle lemma: a uniformly random arrangement of ``k`` opens and ``k + 1`` closes has exactly
    one rotation whose every proper prefix has depth ``>= 0``; that rotation minus its final
    close is a uniform Dyck word of length ``2k``. ``half_lengths`` is ``[m]``; returns
    ``[m, width]``.
    """
    k = half_lengths.long()
    m = int(k.numel())
    if m == 0:
        return torch.zeros(0, width, dtype=torch.long)
    if int(k.min()) < 1 or 2 * int(k.max()) > width:
        raise InputError(f"half lengths must be in 1..{width // 2}")
    n = 2 * k + 1  # arrangement length per row
    cols = width + 1
    col = torch.arange(cols)[None, :]
    valid = col < n[:, None]
    # a random permutation of the first n positions of each row: sort random keys
    keys = torch.rand(m, cols, generator=generator)
    keys = torch.where(valid, keys, torch.full_like(keys, 2.0))
    rank = keys.argsort(dim=1).argsort(dim=1)  # rank of each slot among the row's slots
    steps = torch.where(rank < k[:, None], 1, -1)
    steps = torch.where(valid, steps, torch.zeros_like(steps))
    depth = steps.cumsum(1)
    depth = torch.where(valid, depth, torch.full_like(depth, 10**6))
    first_min = depth.argmin(dim=1)  # first occurrence of the minimum
    start = first_min + 1  # rotate to start right after it
    idx = (start[:, None] + col) % n[:, None]
    rotated = steps.gather(1, idx)
    rotated = torch.where(col < (n - 1)[:, None], rotated, torch.zeros_like(rotated))
    return rotated[:, :width]


def sample_parens(
    n: int, seed: int | torch.Generator = 0, mixture: ParenMixture | None = None
) -> tuple[Tensor, Tensor]:
    """``n`` strings from the mixture: ``(steps [n, max_parens] of +1/-1/0, lengths [n])``."""
    mix = mixture or ParenMixture()
    if n < 1:
        raise InputError(f"sample_parens: n must be at least 1, got {n}")
    g = _generator(seed)
    width = mix.max_parens
    extra = torch.rand(n, generator=g) < mix.balanced_fraction
    half = torch.randint(1, width // 2 + 1, (n,), generator=g)
    probs = torch.tensor(mix.half_length_probs(), dtype=torch.float64)
    half_bal = torch.multinomial(probs, n, replacement=True, generator=g) + 1
    half = torch.where(extra, half_bal, half)
    lengths = 2 * half
    coins = torch.randint(0, 2, (n, width), generator=g) * 2 - 1
    col = torch.arange(width)[None, :]
    steps = torch.where(col < lengths[:, None], coins, torch.zeros_like(coins))
    rows = extra.nonzero().flatten()
    if rows.numel():
        steps[rows] = uniform_dyck(half[rows], width, g)
    return steps, lengths


def steps_to_ids(steps: Tensor, lengths: Tensor, n_ctx: int | None = None) -> tuple[Tensor, Tensor]:
    """``+1/-1`` steps to token ids (``START``, parens, ``END``, ``PAD``...) and attention mask."""
    n, width = steps.shape
    ctx = n_ctx if n_ctx is not None else width + 2
    if int(lengths.max()) + 2 > ctx:
        raise InputError(f"a string of {int(lengths.max())} parens does not fit in n_ctx={ctx}")
    ids = torch.full((n, ctx), PAD, dtype=torch.long)
    ids[:, 0] = START
    body = torch.where(steps > 0, OPEN, CLOSE)
    col = torch.arange(width)[None, :]
    inside = col < lengths[:, None]
    w = min(width, ctx - 1)
    ids[:, 1 : w + 1] = torch.where(inside[:, :w], body[:, :w], PAD)
    ids[torch.arange(n), lengths + 1] = END
    mask = (ids != PAD).long()
    return ids, mask


def encode(strings: Sequence[str], n_ctx: int = N_CTX) -> tuple[Tensor, Tensor]:
    """Token ids ``[n, n_ctx]`` and mask for strings of parens."""
    if isinstance(strings, str):
        strings = [strings]
    if len(strings) == 0:
        raise InputError("encode: no strings given")
    ids = torch.full((len(strings), n_ctx), PAD, dtype=torch.long)
    for i, s in enumerate(strings):
        bad = set(s) - {"(", ")"}
        if bad:
            raise InputError(f"paren string {i} ({s!r}) has characters other than '(' and ')'")
        if len(s) + 2 > n_ctx:
            raise InputError(
                f"paren string {i} has {len(s)} parens; at most {n_ctx - 2} fit in n_ctx={n_ctx}"
            )
        ids[i, 0] = START
        for j, c in enumerate(s):
            ids[i, j + 1] = OPEN if c == "(" else CLOSE
        ids[i, len(s) + 1] = END
    return ids, (ids != PAD).long()


def decode(ids: Tensor) -> list[str]:
    """Strings of parens from token ids (specials dropped)."""
    out = []
    for row in ids.tolist():
        out.append("".join("(" if t == OPEN else ")" for t in row if t in (OPEN, CLOSE)))
    return out


# --------------------------------------------------------------------------------------------
# Features (all from token ids [n, T])
# --------------------------------------------------------------------------------------------


def _suffix_sum(x: Tensor) -> Tensor:
    return x.flip(1).cumsum(1).flip(1)


def p_open_after(ids: Tensor) -> Tensor:
    """``p[:, i]``: the proportion of ``(`` among the parens at positions ``>= i`` (NaN where no
    paren is at or after ``i``: ``END`` and padding). ``p[:, 0]`` is the whole string's."""
    opens = _suffix_sum((ids == OPEN).double())
    closes = _suffix_sum((ids == CLOSE).double())
    total = opens + closes
    return torch.where(total > 0, opens / total.clamp(min=1), torch.full_like(total, torch.nan))


def count_test(ids: Tensor) -> Tensor:
    """As many ``(`` as ``)`` (bool ``[n]``)."""
    return (ids == OPEN).sum(1) == (ids == CLOSE).sum(1)


def horizon_test(ids: Tensor) -> Tensor:
    """Every suffix has at least as many ``)`` as ``(`` (bool ``[n]``)."""
    p = p_open_after(ids)
    return ~(torch.nan_to_num(p, nan=0.0) > 0.5).any(1)


def is_balanced(ids: Tensor) -> Tensor:
    return count_test(ids) & horizon_test(ids)


def starts_with_open(ids: Tensor) -> Tensor:
    return ids[:, 1] == OPEN


def input_lengths(ids: Tensor) -> Tensor:
    """Number of non-padding tokens (parens + 2)."""
    return (ids != PAD).sum(1)


def adjusted_p_open(ids: Tensor, attention: Tensor) -> Tensor:
    """The proportion of open parens as a head actually weighs them (Redwood's "adjusted p").

    ``attention`` is the head's pattern ``[n, query, key]``. At each query position the result
    is the attention-weighted share of ``(`` among the paren keys (other keys are ignored):
    ``sum_k a[q, k] [k is (] / sum_k a[q, k] [k is a paren]``; NaN where the head puts no weight
    on any paren. A head that attends uniformly to the parens at positions ``>= q`` gives
    :func:`p_open_after` exactly; Redwood's head 0.0 also looked a little before ``q``, and
    conditioning on this adjusted proportion explained it better.
    """
    if (
        attention.dim() != 3
        or attention.shape[0] != ids.shape[0]
        or attention.shape[-1] != ids.shape[1]
    ):
        raise InputError(
            f"attention must be [n={ids.shape[0]}, query, key={ids.shape[1]}], got "
            f"{tuple(attention.shape)}"
        )
    a = attention.double()
    opens = (a * (ids == OPEN)[:, None, :]).sum(-1)
    parens = (a * ((ids == OPEN) | (ids == CLOSE))[:, None, :]).sum(-1)
    return torch.where(
        parens > 0, opens / parens.clamp(min=1e-300), torch.full_like(parens, torch.nan)
    )


def horizon_classes(ids: Tensor, p: Tensor | None = None) -> Tensor:
    """Per position, Redwood's five ``horizon_i`` classes (``[n, T]`` long):

    ``0`` padding; ``-1`` / ``1``: ``END`` after ``(`` / after ``)``; ``-2``: ``p_i > 1/2``
    (evidence of imbalance); ``2``: ``p_i <= 1/2``. ``p`` defaults to :func:`p_open_after`;
    pass an adjusted proportion (e.g. weighted by a head's attention) to use that instead.
    """
    p = p_open_after(ids) if p is None else p
    if p.shape != ids.shape:
        raise InputError(f"p has shape {tuple(p.shape)} but the ids are {tuple(ids.shape)}")
    prev = torch.cat([torch.full_like(ids[:, :1], PAD), ids[:, :-1]], dim=1)
    out = torch.where(torch.nan_to_num(p, nan=0.0) > 0.5, H_FAIL, H_PASS)
    out = torch.where((ids == END) & (prev == CLOSE), H_END_AFTER_CLOSE, out)
    out = torch.where((ids == END) & (prev == OPEN), H_END_AFTER_OPEN, out)
    out = torch.where(ids == PAD, H_PAD, out)
    return out.long()


def categories(ids: Tensor) -> list[str]:
    """``balanced``, ``count_only`` (fails only the count test), ``horizon_only``, ``both``."""
    c, h = count_test(ids), horizon_test(ids)
    out = []
    for ci, hi in zip(c.tolist(), h.tolist()):
        out.append(
            "balanced" if ci and hi else "count_only" if hi else "horizon_only" if ci else "both"
        )
    return out


# --------------------------------------------------------------------------------------------
# Datasets and tasks
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ParenData:
    """A batch of paren strings with their labels and the features hypotheses condition on.

    ``ids``/``mask`` are ``[n, n_ctx]``; ``labels`` is ``[n]`` (1 = balanced).
    """

    ids: Tensor
    mask: Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.ids.dim() != 2 or self.ids.shape != self.mask.shape:
            raise InputError(
                f"ParenData: ids {tuple(self.ids.shape)} and mask {tuple(self.mask.shape)} "
                "must both be [n, n_ctx]"
            )
        if bool((self.ids[:, 0] != START).any()):
            raise InputError("ParenData: every row must start with the [START] token (id 0)")

    # -- construction ------------------------------------------------------------------------
    @classmethod
    def sample(
        cls, n: int, seed: int = 0, mixture: ParenMixture | None = None, n_ctx: int | None = None
    ) -> ParenData:
        """``n`` seeded strings from the mixture."""
        mix = mixture or ParenMixture()
        steps, lengths = sample_parens(n, seed, mix)
        ids, mask = steps_to_ids(steps, lengths, n_ctx or mix.n_ctx)
        return cls(ids, mask, meta={"seed": seed, "mixture": mix})

    @classmethod
    def from_strings(cls, strings: Sequence[str], n_ctx: int = N_CTX) -> ParenData:
        ids, mask = encode(strings, n_ctx)
        return cls(ids, mask)

    # -- basics ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def n_ctx(self) -> int:
        return int(self.ids.shape[1])

    def inputs(self) -> Inputs:
        return Inputs(ids=self.ids, mask=self.mask)

    def subset(self, rows: Sequence[int] | Tensor | slice) -> ParenData:
        idx: Any = rows if isinstance(rows, (slice, Tensor)) else torch.tensor(list(rows))
        return ParenData(self.ids[idx], self.mask[idx], meta=dict(self.meta))

    @cached_property
    def strings(self) -> list[str]:
        return decode(self.ids)

    # -- features ------------------------------------------------------------------------------
    @cached_property
    def labels(self) -> Tensor:
        """1.0 where balanced (``[n]`` float)."""
        return is_balanced(self.ids).float()

    @cached_property
    def count_test(self) -> Tensor:
        return count_test(self.ids)

    @cached_property
    def horizon_test(self) -> Tensor:
        return horizon_test(self.ids)

    @cached_property
    def starts_with_open(self) -> Tensor:
        return starts_with_open(self.ids)

    @cached_property
    def p_open(self) -> Tensor:
        return p_open_after(self.ids)

    @cached_property
    def lengths(self) -> Tensor:
        """Number of parens."""
        return input_lengths(self.ids) - 2

    @cached_property
    def categories(self) -> list[str]:
        return categories(self.ids)

    def horizon_classes(self, p: Tensor | None = None) -> Tensor:
        return horizon_classes(self.ids, p)

    def features(self) -> pd.DataFrame:
        """One row per string: the string, label, tests, category, length, p over the string."""
        return pd.DataFrame(
            {
                "string": self.strings,
                "balanced": self.labels.bool().numpy(),
                "count_test": self.count_test.numpy(),
                "horizon_test": self.horizon_test.numpy(),
                "starts_with_open": self.starts_with_open.numpy(),
                "category": self.categories,
                "n_parens": self.lengths.numpy(),
                "p_open": self.p_open[:, 0].numpy(),
            }
        )


def _opposite_same_length(data: ParenData, g: torch.Generator) -> Tensor:
    """For each string, a random string of the same length with the opposite label."""
    lengths = data.lengths
    width = data.n_ctx - 2
    n = len(data)
    out = torch.zeros(n, width, dtype=torch.long)
    bal = data.labels.bool()
    rows = (~bal).nonzero().flatten()
    if rows.numel():  # unbalanced -> a uniform balanced string of that length
        out[rows] = uniform_dyck(lengths[rows] // 2, width, g)
    todo = bal.nonzero().flatten()
    col = torch.arange(width)[None, :]
    while todo.numel():  # balanced -> a uniform random unbalanced string (rejection)
        coins = torch.randint(0, 2, (int(todo.numel()), width), generator=g) * 2 - 1
        coins = torch.where(col < lengths[todo][:, None], coins, torch.zeros_like(coins))
        ids, _ = steps_to_ids(coins, lengths[todo], data.n_ctx)
        ok = ~is_balanced(ids)
        out[todo[ok]] = coins[ok]
        todo = todo[~ok]
    return out


def paren_task(
    n: int = 512,
    seed: int = 0,
    *,
    corruption: str = "opposite",
    mixture: ParenMixture | None = None,
    metric: str | Metric = "logit_diff",
    data: ParenData | None = None,
) -> Task:
    """A :class:`Task` for a paren-balance classifier (two logits read at position 0).

    ``answers`` are (correct class, other class) in the classifier's output space
    (``0`` = unbalanced, ``1`` = balanced), so the default metric is
    ``logit(correct) - logit(wrong)`` and ``metric="bce"`` is the training loss. Corruptions keep
    every string's length (so clean and corrupted inputs are position-aligned):

    - ``"opposite"``: a random string of the same length with the opposite label (an unbalanced
      string gets a uniform balanced one; a balanced string a random unbalanced one);
    - ``"resample"``: another string of the same length from the mixture (either label).
    """
    if corruption not in ("opposite", "resample"):
        raise InputError(
            f"paren_task: corruption must be 'opposite' or 'resample', not {corruption!r}"
        )
    if data is None:
        n = validate.positive_int("n", n, fix="a paren task needs at least one string")
    seed = validate.nonnegative_int("seed", seed)
    mix = mixture or ParenMixture()
    clean = data if data is not None else ParenData.sample(n, seed, mix)
    g = torch.Generator().manual_seed(int(seed) + 7919)
    if corruption == "opposite":
        steps = _opposite_same_length(clean, g)
    else:
        width = clean.n_ctx - 2
        steps = torch.zeros(len(clean), width, dtype=torch.long)
        lengths = clean.lengths
        for L in lengths.unique().tolist():
            rows = (lengths == L).nonzero().flatten()
            pool_steps, pool_len = sample_parens(max(64, 4 * int(rows.numel())), g, mix)
            pool_steps, pool_len = pool_steps[:, :width], pool_len
            same = (pool_len == L).nonzero().flatten()
            while same.numel() < rows.numel():  # short of that length: add uniform strings
                coins = torch.randint(0, 2, (int(rows.numel()), width), generator=g) * 2 - 1
                col = torch.arange(width)[None, :]
                coins = torch.where(col < L, coins, torch.zeros_like(coins))
                pool_steps = torch.cat([pool_steps, coins])
                pool_len = torch.cat([pool_len, torch.full((int(rows.numel()),), L)])
                same = (pool_len == L).nonzero().flatten()
            steps[rows] = pool_steps[same[: rows.numel()]]
    ids, mask = steps_to_ids(steps, clean.lengths, clean.n_ctx)
    corrupt = ParenData(ids, mask)
    label = clean.labels.long()
    answers = torch.stack([label, 1 - label], dim=1)
    return Task(
        name=f"paren-{corruption}",
        clean=clean.inputs(),
        corrupt=corrupt.inputs(),
        answers=answers,
        positions=torch.zeros(len(clean), dtype=torch.long),
        metric=get_metric(metric),
        prompts=tuple(clean.strings),
        corrupt_prompts=tuple(corrupt.strings),
        answer_text=tuple(
            ("balanced", "unbalanced") if b else ("unbalanced", "balanced") for b in label.tolist()
        ),
        meta={"seed": seed, "corruption": corruption, "n": len(clean), "data": clean},
    )


__all__ = [
    "BALANCED",
    "CATEGORIES",
    "CLOSE",
    "END",
    "MAX_PARENS",
    "N_CTX",
    "OPEN",
    "PAD",
    "START",
    "UNBALANCED",
    "VOCAB",
    "ParenData",
    "ParenMixture",
    "adjusted_p_open",
    "categories",
    "count_test",
    "decode",
    "encode",
    "horizon_classes",
    "horizon_test",
    "input_lengths",
    "is_balanced",
    "p_open_after",
    "paren_task",
    "sample_parens",
    "starts_with_open",
    "steps_to_ids",
    "uniform_dyck",
]
