"""Generation and teacher-forced scoring through the run engine, with steering.

:func:`generate` is a small, exact decoding loop over :meth:`Model.run`: prompts are
left-padded (with explicit position ids, so every prompt sees the positions it would see alone),
the prompt is read in one forward pass that returns its keys and values, then each new token is
computed alone on top of them (:meth:`faithlens.Resume.decode`). Steering is applied as asked:
to the prompt pass, to the pass of each generated token, or both (:class:`Steering`).
Greedy decoding when ``temperature == 0``, otherwise seeded sampling (optionally top-k).

:func:`continuation_logprobs` scores given continuations instead (teacher forcing): the
log-probability of each continuation token after the prompt, with the same steering schedule
(continuation tokens play the part of generated tokens).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..errors import InputError
from ..models.model import Inputs, Model
from ..progress import Progress
from ..results import Result
from ..runs import Resume
from .data import Prompt
from .steering import Steering, as_steerings, label_of


def encode(model: Model, prompts: Sequence[Prompt], what: str = "prompt") -> list[list[int]]:
    """Token ids of each prompt (strings are tokenised the way :meth:`Model.tokenize` does)."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if len(prompts) == 0:
        raise InputError(f"no {what}s given")
    out: list[list[int]] = []
    for i, p in enumerate(prompts):
        if isinstance(p, str):
            ids = model.tokenize([p]).ids
            assert ids is not None
            seq = ids[0].tolist()
        else:
            seq = [int(t) for t in p]
        if not seq:
            raise InputError(f"{what} {i} is empty")
        out.append(seq)
    return out


def encode_continuations(model: Model, texts: Sequence[Prompt]) -> list[list[int]]:
    """Token ids of continuations, without any special token (they follow a prompt)."""
    out: list[list[int]] = []
    for i, t in enumerate(texts):
        if isinstance(t, str):
            tok = model.tokenizer
            if tok is None:
                raise InputError(f"{model.name} has no tokenizer; give continuations as token ids")
            seq = list(tok(t, add_special_tokens=False)["input_ids"])
        else:
            seq = [int(x) for x in t]
        if not seq:
            raise InputError(f"continuation {i} ({t!r}) has no tokens")
        out.append(seq)
    return out


def pad_id(model: Model) -> int:
    tok = model.tokenizer
    if tok is None:
        return 0
    for cand in (tok.pad_token_id, tok.eos_token_id):
        if cand is not None:
            return int(cand)
    return 0


def left_pad(
    model: Model, seqs: Sequence[Sequence[int]], tails: Sequence[Sequence[int]] | None = None
) -> tuple[Tensor, Tensor, int]:
    """``[batch, P + C]`` ids and mask: prompts left-padded to ``P`` (so they all end at column
    ``P - 1``), then optional tails right-padded to ``C``. Returns (ids, mask, P)."""
    P = max(len(s) for s in seqs)
    C = max((len(t) for t in tails), default=0) if tails is not None else 0
    pad = pad_id(model)
    ids = torch.full((len(seqs), P + C), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), P + C), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, P - len(s) : P] = torch.tensor(list(s), dtype=torch.long)
        mask[i, P - len(s) : P] = 1
        if tails is not None:
            t = list(tails[i])
            ids[i, P : P + len(t)] = torch.tensor(t, dtype=torch.long)
            mask[i, P : P + len(t)] = 1
    return ids, mask, P


def position_ids(mask: Tensor) -> Tensor:
    """Each token's position among the real tokens of its row (pads get 0)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def padded_inputs(ids: Tensor, mask: Tensor, pos: Tensor, model: Model) -> Inputs:
    """Inputs for a left-padded batch: ids, mask and the position ids of the computed tokens
    (passed to the model when its ``forward`` takes ``position_ids``)."""
    kwargs: dict[str, Any] = {}
    if _takes_position_ids(model):
        kwargs["position_ids"] = pos
    return Inputs(ids=ids, mask=mask, kwargs=kwargs)


def _takes_position_ids(model: Model) -> bool:
    import inspect

    try:
        params = inspect.signature(model.module.forward).parameters
    except (TypeError, ValueError):
        return False
    return "position_ids" in params


def _check_causal(model: Model, what: str) -> None:
    if not model.is_causal:
        raise InputError(f"{what} needs a causal language model; {model.name} is {model.arch}")


def stop_ids(model: Model) -> set[int]:
    """Token ids that end a generation: the tokenizer's end-of-sequence token (and the chat
    end-of-turn token when the tokenizer has one)."""
    tok = model.tokenizer
    out: set[int] = set()
    if tok is None:
        return out
    if tok.eos_token_id is not None:
        out.add(int(tok.eos_token_id))
    for name in ("<|im_end|>", "<|eot_id|>", "<|endoftext|>"):
        tid = tok.convert_tokens_to_ids(name) if hasattr(tok, "convert_tokens_to_ids") else None
        unk = getattr(tok, "unk_token_id", None)
        if isinstance(tid, int) and tid != unk and tid >= 0:
            out.add(tid)
    return out


@dataclass(frozen=True, eq=False)
class Generations(Result):
    """Continuations generated for a list of prompts (one row per prompt).

    ``tokens`` ``[n, T]`` (``-1`` after a row's end), ``logprobs`` ``[n, T]``: the log-probability
    of each generated token under the (steered) model that produced it (NaN after the end);
    ``tracked`` ``[n, T, k]``: at every step, the log-probability of each token in ``track``.
    """

    prompts: list[str]
    texts: list[str]
    tokens: np.ndarray
    logprobs: np.ndarray
    tracked: np.ndarray
    track: list[int]
    steering: str = "none"
    temperature: float = 0.0
    seed: int = 0
    model: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.texts)

    @property
    def lengths(self) -> np.ndarray:
        return np.asarray((self.tokens >= 0).sum(1))

    def to_frame(self) -> pd.DataFrame:
        with np.errstate(invalid="ignore"):
            mean_lp = np.nanmean(np.where(self.tokens >= 0, self.logprobs, np.nan), axis=1)
        return pd.DataFrame(
            {
                "prompt": self.prompts,
                "text": self.texts,
                "n_tokens": self.lengths,
                "mean_logprob": mean_lp,
            }
        )

    def summary(self) -> str:
        lines = [
            f"{self.n} generations from {self.model} (steering: {self.steering}, "
            f"temperature {self.temperature:g}, seed {self.seed}), "
            f"mean length {float(self.lengths.mean()):.1f} tokens"
        ]
        for p, t in list(zip(self.prompts, self.texts))[:5]:
            lines.append(f"  ...{p[-40:]!r} -> {t[:80]!r}")
        return "\n".join(lines)


def _sample(logits: Tensor, temperature: float, top_k: int | None, gen: torch.Generator) -> Tensor:
    if temperature <= 0:
        return logits.argmax(-1)
    z = logits.float() / temperature
    if top_k is not None and top_k < z.shape[-1]:
        kth = torch.topk(z, top_k, dim=-1).values[..., -1:]
        z = z.masked_fill(z < kth, float("-inf"))
    probs = torch.softmax(z, -1).cpu()
    return torch.multinomial(probs, 1, generator=gen)[:, 0].to(logits.device)


def generate(
    model: Model,
    prompts: Sequence[Prompt],
    steering: Steering | Sequence[Steering] | None = None,
    *,
    max_new_tokens: int = 20,
    temperature: float = 0.0,
    top_k: int | None = None,
    seed: int = 0,
    stop: Sequence[int] | None = None,
    track: Sequence[int] = (),
    batch_size: int = 16,
    progress: Progress | None = None,
) -> Generations:
    """Generate up to ``max_new_tokens`` tokens after each prompt, with steering applied as its
    schedule says (see :class:`Steering`).

    Args:
        prompts: strings or token-id sequences (chat-format them first for an instruct model,
            e.g. with :func:`~faithlens.representations.data.chat_prompt`).
        steering: one or several :class:`Steering` (applied together).
        temperature: 0 for greedy decoding; otherwise sampling at this temperature (seeded;
            ``top_k`` restricts it to the k most likely tokens).
        stop: token ids that end a row (default: the tokenizer's end-of-sequence / end-of-turn
            tokens); the stop token is not part of the text.
        track: token ids whose log-probability is recorded at every step (``tracked``).
        batch_size: prompts per forward pass. A method option, not a memory knob: each batch
            samples from its own generator (seeded ``seed`` + its first row), so the draws
            depend on it, and it does not go through the executor (no ``max_memory``).
    """
    steers, seqs, track_ids, stops = _prepare_generation(
        model, prompts, steering, max_new_tokens, temperature, top_k, stop, track, batch_size
    )
    n = len(seqs)
    tokens = np.full((n, max_new_tokens), -1, dtype=np.int64)
    logprobs = np.full((n, max_new_tokens), np.nan, dtype=np.float64)
    tracked = np.full((n, max_new_tokens, len(track_ids)), np.nan, dtype=np.float64)
    done_rows = 0
    for b0 in range(0, n, batch_size):
        rows = list(range(b0, min(n, b0 + batch_size)))
        _generate_batch(
            model,
            [seqs[i] for i in rows],
            rows,
            steers,
            gen=torch.Generator().manual_seed(int(seed) + b0),
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            stops=stops,
            track_ids=track_ids,
            out=(tokens, logprobs, tracked),
        )
        done_rows += len(rows)
        if progress is not None:
            progress(done_rows, n)
    texts = _cut_at_stops(model, tokens, logprobs, stops)
    return Generations(
        prompts=[p if isinstance(p, str) else _decode(model, list(p)) for p in prompts],
        texts=texts,
        tokens=tokens,
        logprobs=logprobs,
        tracked=tracked,
        track=track_ids,
        steering=label_of(steering),
        temperature=float(temperature),
        seed=int(seed),
        model=model.name,
        meta={"max_new_tokens": max_new_tokens, "top_k": top_k, "batch_size": batch_size},
    )


def _prepare_generation(
    model: Model,
    prompts: Sequence[Prompt],
    steering: Steering | Sequence[Steering] | None,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    stop: Sequence[int] | None,
    track: Sequence[int],
    batch_size: int,
) -> tuple[list[Steering], list[list[int]], list[int], set[int]]:
    """Refuse a bad :func:`generate` argument; the steerings, the encoded prompts, the tracked
    token ids and the stop tokens."""
    _check_causal(model, "generate")
    if max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    if temperature < 0 or not math.isfinite(temperature):
        raise InputError(f"temperature must be >= 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise InputError(f"top_k must be at least 1, got {top_k}")
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    steers = as_steerings(steering)
    for s in steers:
        s.check(model)
    seqs = encode(model, prompts)
    vocab = model.adapter.d_vocab or None
    track_ids = [int(t) for t in track]
    if vocab is not None and any(not 0 <= t < vocab for t in track_ids):
        raise InputError(f"track: token ids must lie in 0..{vocab - 1}, got {track_ids}")
    stops = set(stop_ids(model) if stop is None else (int(t) for t in stop))
    return steers, seqs, track_ids, stops


def _generate_batch(
    model: Model,
    seqs: list[list[int]],
    rows: list[int],
    steers: list[Steering],
    *,
    gen: torch.Generator,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    stops: set[int],
    track_ids: list[int],
    out: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    """Decode one batch of prompts (left-padded, from cached keys and values), writing each
    step's tokens, log-probabilities and tracked log-probabilities into ``out`` at ``rows``."""
    tokens, logprobs, tracked = out
    device = model.device
    ids, mask, P = left_pad(model, seqs)
    ids, mask = ids.to(device), mask.to(device)
    pos = position_ids(mask)
    ivs = [iv for s in steers for iv in s.prompt_interventions(P)]
    res = model.run(padded_inputs(ids, mask, pos, model), ivs, logits_at=P - 1, return_kv=True)
    finished = torch.zeros(len(rows), dtype=torch.bool, device=device)
    for t in range(max_new_tokens):
        assert res.logits is not None
        logits = res.logits[:, -1].float()
        lp = torch.log_softmax(logits, -1)
        nxt = _sample(logits, temperature, top_k, gen)
        chosen = lp.gather(-1, nxt[:, None])[:, 0]
        live = (~finished).cpu().numpy()
        r = np.asarray(rows)[live]
        tokens[r, t] = nxt.cpu().numpy()[live]
        logprobs[r, t] = chosen.cpu().double().numpy()[live]
        if track_ids:
            tr = lp[:, track_ids].cpu().double().numpy()
            tracked[r, t] = tr[live]
        if stops:
            is_stop = torch.tensor(
                [int(x) in stops for x in nxt.tolist()], dtype=torch.bool, device=device
            )
            finished = finished | is_stop
        if bool(finished.all()) or t == max_new_tokens - 1:
            break
        ids = torch.cat([ids, nxt[:, None]], 1)
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        pos = position_ids(mask)[:, -1:]
        ivs = [iv for s in steers for iv in s.generated_interventions(t)]
        res = model.run(
            padded_inputs(ids, mask, pos, model),
            ivs,
            start_at=Resume.decode(res.kv, ids.shape[1] - 1),  # type: ignore[arg-type]
            return_kv=True,
        )


def _cut_at_stops(
    model: Model, tokens: np.ndarray, logprobs: np.ndarray, stops: set[int]
) -> list[str]:
    """Cut each row at its stop token (kept out of the text and the token list), in place; the
    rows' texts."""
    max_new_tokens = tokens.shape[1]
    texts: list[str] = []
    for i in range(tokens.shape[0]):
        row = tokens[i]
        end = max_new_tokens
        for t in range(max_new_tokens):
            if row[t] < 0:
                end = t
                break
            if int(row[t]) in stops:
                end = t
                break
        tokens[i, end:] = -1
        logprobs[i, end:] = np.nan
        texts.append(_decode(model, row[:end].tolist()))
    return texts


def _decode(model: Model, ids: list[int]) -> str:
    tok = model.tokenizer
    if tok is None:
        return " ".join(str(i) for i in ids)
    return str(tok.decode(ids, skip_special_tokens=True))


def continuation_logprobs(
    model: Model,
    prompts: Sequence[Prompt],
    continuations: Sequence[Prompt],
    steering: Steering | Sequence[Steering] | None = None,
    *,
    batch_size: int = 16,
    progress: Progress | None = None,
) -> np.ndarray:
    """Teacher-forced log-probability of every continuation token after its prompt:
    ``[n, C]`` (NaN past each continuation's end). Steering follows its schedule: the prompt
    positions are the prompt pass, the continuation positions the generated tokens."""
    return score_alternatives(
        model, prompts, [continuations], steering, batch_size=batch_size, progress=progress
    )[0]


def score_alternatives(
    model: Model,
    prompts: Sequence[Prompt],
    alternatives: Sequence[Sequence[Prompt]],
    steering: Steering | Sequence[Steering] | None = None,
    *,
    batch_size: int = 16,
    progress: Progress | None = None,
) -> list[np.ndarray]:
    """:func:`continuation_logprobs` for several alternative continuations of the same prompts
    (``alternatives[a][i]`` continues prompt ``i``): each prompt is read once, and every
    alternative is scored on top of its cached keys and values. Returns one ``[n, C_a]`` array
    per alternative."""
    _check_causal(model, "continuation_logprobs")
    if not alternatives:
        raise InputError("give at least one set of continuations")
    for alt in alternatives:
        if len(alt) != len(prompts):
            raise InputError(
                f"{len(prompts)} prompts but {len(alt)} continuations; give one per prompt"
            )
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    steers = as_steerings(steering)
    for s in steers:
        s.check(model)
    seqs = encode(model, prompts)
    tails = [encode_continuations(model, alt) for alt in alternatives]
    n = len(seqs)
    outs = [np.full((n, max(len(t) for t in ts)), np.nan, dtype=np.float64) for ts in tails]
    device = model.device
    for b0 in range(0, n, batch_size):
        rows = list(range(b0, min(n, b0 + batch_size)))
        ids, mask, P = left_pad(model, [seqs[i] for i in rows])
        ids, mask = ids.to(device), mask.to(device)
        pre = [iv for s in steers for iv in s.prompt_interventions(P)]
        first = model.run(
            padded_inputs(ids, mask, position_ids(mask), model),
            pre,
            logits_at=P - 1,
            return_kv=True,
        )
        assert first.logits is not None and first.kv is not None
        lp0 = torch.log_softmax(first.logits[:, 0].float(), -1)
        for a, ts in enumerate(tails):
            bt = [ts[i] for i in rows]
            full, fmask, _ = left_pad(model, [seqs[i] for i in rows], bt)
            full, fmask = full.to(device), fmask.to(device)
            C = full.shape[1] - P
            got = np.full((len(rows), C), np.nan)
            got[:, 0] = lp0.gather(-1, full[:, P : P + 1])[:, 0].cpu().double().numpy()
            if C > 1:
                ivs: list[Any] = []
                for s in steers:
                    steps = [k for k in range(C) if s.step_active(k)]
                    if steps:
                        ivs += s.generated_interventions(0, [P + k for k in steps])
                res = model.run(
                    padded_inputs(full, fmask, position_ids(fmask)[:, P:], model),
                    ivs,
                    start_at=Resume.decode(first.kv, P),
                    logits_at=list(range(P, P + C - 1)),
                )
                assert res.logits is not None
                lp = torch.log_softmax(res.logits.float(), -1)
                tgt = full[:, P + 1 : P + C]
                got[:, 1:] = lp.gather(-1, tgt[:, :, None])[:, :, 0].cpu().double().numpy()
            for j, i in enumerate(rows):
                L = len(ts[i])
                outs[a][i, :L] = got[j, :L]
        if progress is not None:
            progress(rows[-1] + 1, n)
    return outs


__all__ = [
    "Generations",
    "continuation_logprobs",
    "encode",
    "encode_continuations",
    "generate",
    "left_pad",
    "padded_inputs",
    "position_ids",
    "score_alternatives",
    "stop_ids",
]
