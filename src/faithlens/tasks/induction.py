"""Induction: synthetic Markov sequences with repeated spans (causal scrubbing, section 3.4 B).

The background is a sparse random Markov chain over ``vocab`` tokens: every token has
``branching`` possible successors with Zipfian probabilities (``rank ** -zipf``), so bigram
statistics matter, reweighted by a skip-bigram factor of the token before the current one (see
:class:`MarkovChain`; it makes the previous token informative, as in natural text, which is
what lets a previous-token head and then induction heads form quickly in training). Into most
sequences, spans of ``4..24`` tokens (:class:`RepeatSpec`) are copied from earlier in the same
sequence (``A B C ... A B C``); the tokens of a copy after its first one are predictable by
induction (look back to where the current token appeared before and copy what followed), the
rest only from the chain. Some sequences have no copy, so a model must also learn *when* to
copy.

Per target token (the token at position ``t``, predicted at ``t - 1``) the data record its
**kind**: ``KIND_MARKOV`` (drawn from the chain), ``KIND_COPY_START`` (first token of a copy: a
jump, predictable by neither) and ``KIND_COPY`` (later tokens of a copy: the induction targets),
and for copies the position of the source token.

Everything is seeded: the chain by ``MarkovChain.seed`` (it is part of the task definition: a
model is trained and evaluated on one chain; the defaults are ``zoo:induction``'s), the sequences
by the sampling seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import validate
from ..errors import InputError
from ..models.model import Inputs
from .base import Task
from .metrics import Metric, get_metric

KIND_FIRST, KIND_MARKOV, KIND_COPY_START, KIND_COPY = -1, 0, 1, 2
KIND_NAMES = {
    KIND_FIRST: "first",
    KIND_MARKOV: "markov",
    KIND_COPY_START: "copy_start",
    KIND_COPY: "copy",
}


@dataclass(frozen=True)
class MarkovChain:
    """A sparse random bigram chain with Zipfian successor probabilities, optionally modulated
    by the token before the current one (a *skip-bigram* factor).

    The next token after ``(a, b)`` (``b`` the current token, ``a`` the one before) has
    probability proportional to ``P[b, next] * exp(skip * S[a, next])``: ``P`` is the sparse
    bigram (``branching`` successors per token, probabilities ``rank ** -zipf``) and ``S`` a
    random 0/1 matrix with ``skip_fraction`` ones per row. With ``skip = 0`` it is a first-order
    chain. With ``skip > 0`` (default 2, the chain ``zoo:induction`` is trained on) the token
    before the current one carries information about the next, as in natural text, so a
    previous-token head pays off on its own; induction heads build on it.

    Args:
        vocab: number of tokens.
        branching: successors per token.
        zipf: exponent of the successor probabilities (``rank ** -zipf``).
        skip: strength of the skip-bigram factor (a log-odds boost).
        skip_fraction: share of tokens that each earlier token boosts.
        seed: which chain (successor sets, their order and the skip factor).
    """

    vocab: int = 128
    branching: int = 8
    zipf: float = 1.0
    skip: float = 2.0
    skip_fraction: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.vocab < 2:
            raise InputError(f"MarkovChain.vocab must be at least 2, got {self.vocab}")
        if not 1 <= self.branching <= self.vocab:
            raise InputError(
                f"MarkovChain.branching must be in 1..vocab={self.vocab}, got {self.branching}"
            )
        if self.skip < 0 or not 0.0 <= self.skip_fraction <= 1.0:
            raise InputError(
                f"MarkovChain: skip must be >= 0 and skip_fraction in [0, 1] (got {self.skip}, "
                f"{self.skip_fraction})"
            )

    @cached_property
    def skip_weights(self) -> Tensor:
        """``exp(skip * S)``, ``[vocab, vocab]`` (float64): row ``a`` reweights what follows
        ``(a, b)``."""
        g = torch.Generator().manual_seed(int(self.seed) + 0x5EED)
        k = round(self.skip_fraction * self.vocab)
        s = torch.zeros(self.vocab, self.vocab, dtype=torch.float64)
        for a in range(self.vocab):
            s[a, torch.randperm(self.vocab, generator=g)[:k]] = 1.0
        return torch.exp(self.skip * s)

    def next_probs(self, before: Tensor | None, current: Tensor) -> Tensor:
        """``p(next | before, current)``, ``[n, vocab]`` float64 (``before`` None: the first
        position, which has no earlier token)."""
        p = self.transitions[current]
        if before is None or self.skip == 0:
            return p
        p = p * self.skip_weights[before]
        return p / p.sum(-1, keepdim=True)

    @cached_property
    def transitions(self) -> Tensor:
        """Row-stochastic ``[vocab, vocab]`` matrix (float64)."""
        g = torch.Generator().manual_seed(int(self.seed))
        probs = torch.arange(1, self.branching + 1, dtype=torch.float64) ** (-self.zipf)
        probs = probs / probs.sum()
        out = torch.zeros(self.vocab, self.vocab, dtype=torch.float64)
        for a in range(self.vocab):
            succ = torch.randperm(self.vocab, generator=g)[: self.branching]
            out[a, succ] = probs
        return out

    @cached_property
    def entropy(self) -> Tensor:
        """Entropy (nats) of each token's successor distribution: the best possible loss on a
        Markov target given the previous token."""
        p = self.transitions
        return -(torch.where(p > 0, p * p.clamp(min=1e-300).log(), torch.zeros_like(p))).sum(1)


@dataclass(frozen=True)
class RepeatSpec:
    """Where copies go.

    Args:
        seq_len: sequence length.
        copies: probabilities of 0, 1, 2, 3... copies per sequence.
        min_span / max_span: length of a copied span (inclusive).
        min_start: the earliest position a copy may start at.
    """

    seq_len: int = 64
    copies: tuple[float, ...] = (0.15, 0.25, 0.3, 0.3)
    min_span: int = 4
    max_span: int = 24
    min_start: int = 8

    def __post_init__(self) -> None:
        if not 2 <= self.min_span <= self.max_span:
            raise InputError(
                f"RepeatSpec: need 2 <= min_span <= max_span, got {self.min_span}, {self.max_span}"
            )
        if self.seq_len < self.min_start + self.max_span or self.min_start < self.min_span:
            raise InputError(
                f"RepeatSpec: seq_len={self.seq_len} is too short for spans up to "
                f"{self.max_span} starting at {self.min_start}"
            )
        if abs(sum(self.copies) - 1.0) > 1e-9 or any(p < 0 for p in self.copies):
            raise InputError(f"RepeatSpec.copies must be probabilities summing to 1: {self.copies}")


def _plan(spec: RepeatSpec, rng: np.random.Generator) -> list[tuple[int, int, int]]:
    """Copies of one sequence as (source start, destination start, length), non-overlapping."""
    n_copies = int(rng.choice(len(spec.copies), p=np.asarray(spec.copies)))
    plan: list[tuple[int, int, int]] = []
    taken = np.zeros(spec.seq_len, dtype=bool)
    for _ in range(n_copies):
        for _attempt in range(20):
            length = int(rng.integers(spec.min_span, spec.max_span + 1))
            dst = int(rng.integers(max(spec.min_start, length), spec.seq_len - length + 1))
            if taken[max(0, dst - 1) : dst + length].any():
                continue
            src = int(rng.integers(0, dst - length + 1))
            plan.append((src, dst, length))
            taken[dst : dst + length] = True
            break
    return plan


def sample_sequences(
    n: int, seed: int, chain: MarkovChain, spec: RepeatSpec
) -> tuple[Tensor, Tensor, Tensor]:
    """``n`` sequences: ``(ids [n, T], kind [n, T], source [n, T])``.

    ``kind[b, t]`` is the kind of token ``t`` (``KIND_*``); ``source[b, t]`` is the position it
    was copied from (``-1`` when not copied).
    """
    if n < 1:
        raise InputError(f"sample_sequences: n must be at least 1, got {n}")
    T = spec.seq_len
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x1D]))
    source = np.full((n, T), -1, dtype=np.int64)
    kind = np.full((n, T), KIND_MARKOV, dtype=np.int64)
    kind[:, 0] = KIND_FIRST
    for b in range(n):
        for src, dst, length in _plan(spec, rng):
            source[b, dst : dst + length] = np.arange(src, src + length)
            kind[b, dst] = KIND_COPY_START
            kind[b, dst + 1 : dst + length] = KIND_COPY
    u = torch.from_numpy(rng.random((n, T)))
    ids = torch.zeros(n, T, dtype=torch.long)
    ids[:, 0] = torch.from_numpy(rng.integers(0, chain.vocab, n))
    src_t = torch.from_numpy(source)
    rows = torch.arange(n)
    for t in range(1, T):
        before = ids[:, t - 2] if t >= 2 else None
        cum = chain.next_probs(before, ids[:, t - 1]).cumsum(-1)
        cum[:, -1] = 1.0 + 1e-9
        nxt = torch.searchsorted(cum, u[:, t : t + 1].contiguous()).squeeze(1)
        nxt = nxt.clamp(max=chain.vocab - 1)
        s = src_t[:, t]
        copied = ids[rows, s.clamp(min=0)]
        ids[:, t] = torch.where(s >= 0, copied, nxt)
    return ids, torch.from_numpy(kind), src_t


@dataclass(frozen=True, eq=False)
class InductionData:
    """Sequences with repeated spans, with per-token kinds and copy sources."""

    ids: Tensor
    kind: Tensor
    source: Tensor
    chain: MarkovChain
    spec: RepeatSpec
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def sample(
        cls,
        n: int,
        seed: int = 0,
        chain: MarkovChain | None = None,
        spec: RepeatSpec | None = None,
    ) -> InductionData:
        ch, sp = chain or MarkovChain(), spec or RepeatSpec()
        ids, kind, source = sample_sequences(n, seed, ch, sp)
        return cls(ids, kind, source, ch, sp, meta={"seed": seed})

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.ids.shape[1])

    def inputs(self) -> Inputs:
        return Inputs(ids=self.ids, mask=torch.ones_like(self.ids))

    def subset(self, rows: Sequence[int] | Tensor | slice) -> InductionData:
        idx: Any = rows if isinstance(rows, (slice, Tensor)) else torch.tensor(list(rows))
        return InductionData(
            self.ids[idx], self.kind[idx], self.source[idx], self.chain, self.spec, dict(self.meta)
        )

    # -- masks over *targets* (token t, predicted at position t-1): [n, T-1] ------------------
    def target_mask(self, kind: int) -> Tensor:
        """Bool ``[n, T-1]``: prediction position ``t-1`` whose target token ``t`` has ``kind``."""
        return self.kind[:, 1:] == kind

    @cached_property
    def seen_before(self) -> Tensor:
        """Bool ``[n, T]``: the token at ``t`` occurred earlier in the sequence (ACDC's
        "repeat candidates")."""
        eq = self.ids[:, :, None] == self.ids[:, None, :]
        earlier = torch.ones(self.seq_len, self.seq_len, dtype=torch.bool).tril(-1)
        return (eq & earlier[None]).any(-1)

    def induction_targets(self) -> tuple[Tensor, Tensor, Tensor]:
        """Where an induction head should look: ``(rows, query, key)`` for every query position
        ``q`` inside a copy whose next token is also copied; ``key`` is the position after the
        source of the token at ``q`` (the token to copy next)."""
        nxt_kind = torch.cat([self.kind[:, 1:], torch.full_like(self.kind[:, :1], -9)], dim=1)
        here = ((self.kind == KIND_COPY_START) | (self.kind == KIND_COPY)) & (nxt_kind == KIND_COPY)
        rows, q = here.nonzero(as_tuple=True)
        key = self.source[rows, q] + 1
        return rows, q, key

    def markov_loss_floor(self) -> float:
        """Mean entropy of the chain's next-token distribution over the Markov targets: the
        loss of the true chain there (the best any model can do on them)."""
        m = self.target_mask(KIND_MARKOV)  # [n, T-1]: target t+1 predicted at t
        cur = self.ids[:, :-1]
        before = torch.cat([cur[:, :1], self.ids[:, :-2]], dim=1)
        p = self.chain.next_probs(before[m], cur[m])
        at0 = torch.zeros_like(m)
        at0[:, 0] = True  # position 0 has no earlier token
        p = torch.where(at0[m][:, None], self.chain.transitions[cur[m]], p)
        ent = -(torch.where(p > 0, p * p.clamp(min=1e-300).log(), torch.zeros_like(p))).sum(-1)
        return float(ent.mean())


def token_losses(logits: Tensor, ids: Tensor) -> Tensor:
    """Next-token cross-entropy ``[n, T-1]`` from logits ``[n, T, vocab]``."""
    lp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    return -lp.gather(-1, ids[:, 1:, None].to(lp.device)).squeeze(-1)


def induction_task(
    n: int = 256,
    seed: int = 0,
    *,
    chain: MarkovChain | None = None,
    spec: RepeatSpec | None = None,
    metric: str | Metric = "logit_diff",
) -> Task:
    """A :class:`Task` for induction: one copied span per sequence; the metric reads the logits
    at the second-to-last token of the copy (predicting its last token).

    The corrupted sequence is the same with the *source* span replaced by fresh chain samples,
    so nothing can be copied (clean and corrupted sequences are position-aligned and identical
    from the copy on). Answers: (the copied token, the chain's most likely next token other
    than it): the logit difference measures copying over guessing from the chain.
    """
    n = validate.positive_int("n", n, fix="an induction task needs at least one sequence")
    seed = validate.nonnegative_int("seed", seed)
    ch = chain or MarkovChain()
    sp = spec or RepeatSpec()
    one = RepeatSpec(sp.seq_len, (0.0, 1.0), sp.min_span, sp.max_span, sp.min_start)
    data = InductionData.sample(n, seed, ch, one)
    rows, q, _ = data.induction_targets()
    # the last query of each sequence's copy
    last = torch.full((n,), -1, dtype=torch.long)
    last.scatter_reduce_(0, rows, q, reduce="amax")
    if bool((last < 0).any()):
        raise InputError("induction_task: a sequence has no copy; use longer sequences")
    target = data.ids[torch.arange(n), last + 1]
    # corrupt: resample the source span of the copy from the chain
    g = np.random.default_rng(np.random.SeedSequence([int(seed), 0xC0]))
    corrupt = data.ids.clone()
    for b in range(n):
        srcs = data.source[b][data.source[b] >= 0]
        lo, hi = int(srcs.min()), int(srcs.max())
        for t in range(lo, hi + 1):
            if t == 0:
                corrupt[b, t] = int(g.integers(0, ch.vocab))
                continue
            before = corrupt[b, t - 2 : t - 1] if t >= 2 else None
            p = ch.next_probs(before, corrupt[b, t - 1 : t])[0].numpy()
            tok = int(g.choice(ch.vocab, p=p))
            if tok == int(data.ids[b, t]) and (p > 0).sum() > 1:
                p2 = p.copy()
                p2[tok] = 0
                tok = int(g.choice(ch.vocab, p=p2 / p2.sum()))
            corrupt[b, t] = tok
    rows_n = torch.arange(n)
    probs = ch.next_probs(data.ids[rows_n, last - 1], data.ids[rows_n, last])
    ranked = probs.argsort(dim=1, descending=True)
    wrong = torch.where(ranked[:, 0] == target, ranked[:, 1], ranked[:, 0])
    answers = torch.stack([target, wrong], dim=1)
    mask = torch.ones_like(data.ids)
    return Task(
        name="induction",
        clean=Inputs(ids=data.ids, mask=mask),
        corrupt=Inputs(ids=corrupt, mask=mask.clone()),
        answers=answers,
        positions=last,
        metric=get_metric(metric),
        meta={"seed": seed, "n": n, "data": data, "chain": ch},
    )


__all__ = [
    "KIND_COPY",
    "KIND_COPY_START",
    "KIND_FIRST",
    "KIND_MARKOV",
    "KIND_NAMES",
    "InductionData",
    "MarkovChain",
    "RepeatSpec",
    "induction_task",
    "sample_sequences",
    "token_losses",
]
