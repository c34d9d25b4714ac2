"""Activations of contrast pairs for reading vectors: one token (or the mean over the prompt) of a
residual-stream site at each layer, for both members of every pair."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from ..executor import InProcess, current_executor
from ..models.model import Inputs, Model
from ..models.sites import Site
from ..progress import Progress
from .data import ContrastPairs, Prompt
from .generation import encode

# --------------------------------------------------------------------------------------------
# activations
# --------------------------------------------------------------------------------------------


def right_pad(model: Model, seqs: Sequence[Sequence[int]]) -> Inputs:
    """Right-padded ids and mask (the layout :meth:`Model.tokenize` produces)."""
    from .generation import pad_id

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id(model), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[i, : len(s)] = 1
    return Inputs(ids=ids, mask=mask)


def resolve_layers(model: Model, layers: Sequence[int] | int | None) -> list[int]:
    n = model.n_layers
    if n == 0:
        raise InputError(f"{model.name} has no transformer layers to read from")
    if layers is None:
        return list(range(n))
    ls = [int(layers)] if isinstance(layers, int) else [int(x) for x in layers]
    if not ls:
        raise InputError("no layers given")
    bad = [x for x in ls if not -n <= x < n]
    if bad:
        raise InputError(f"layers {bad} out of range for a model with {n} layers (0..{n - 1})")
    return sorted({x % n for x in ls})


def _check_site(model: Model, site: str, layer: int) -> None:
    name = f"{site}.{layer}"
    info = model.site_info(name)
    if info.width != model.d_model:
        raise InputError(
            f"reading vectors live in the residual stream (width {model.d_model}); {name} has "
            f"width {info.width}. Use resid_pre, resid_mid, resid_post, attn_out or mlp_out"
        )


def token_positions(inp: Inputs, position: str | int) -> Tensor | None:
    """Per-example token index for ``"last"`` / an offset from the last token; None for mean."""
    last = inp.last
    assert last is not None
    if position == "last":
        return last
    if position == "mean":
        return None
    if isinstance(position, int) and not isinstance(position, bool):
        if position > 0:
            raise InputError(
                f"position {position}: give 'last', 'mean' or an offset <= 0 from the last token"
            )
        p = last + position
        if bool((p < 0).any()):
            raise InputError(f"position offset {position} reaches before the start of a prompt")
        return p
    raise InputError(f"position must be 'last', 'mean' or an int offset <= 0, not {position!r}")


def activations(
    model: Model,
    prompts: Sequence[Prompt],
    *,
    layers: Sequence[int] | int | None = None,
    site: str = "resid_post",
    position: str | int = "last",
    batch_size: int = 16,
    progress: Progress | None = None,
    max_memory: int | None = None,
) -> np.ndarray:
    """``[n, n_layers, d_model]`` activations of ``site.L`` at one token of each prompt
    (``"last"``, an offset ``<= 0`` from the last token, or ``"mean"`` over the prompt's tokens),
    float32. ``max_memory`` (bytes): prompts per forward pass from the executor's budget instead
    of ``batch_size``."""
    ls = resolve_layers(model, layers)
    for L in ls:
        _check_site(model, site, L)
    if not isinstance(position, (str, int)):
        raise InputError(f"position must be 'last', 'mean' or an int, not {position!r}")
    if isinstance(position, str) and position not in ("last", "mean"):
        raise InputError(f"position must be 'last', 'mean' or an int offset, not {position!r}")
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    seqs = encode(model, prompts)
    n = len(seqs)
    if max_memory is not None and n:
        batch_size = prompts_per_pass(model, seqs, max(ls), max_memory)
    out = np.empty((n, len(ls), model.d_model), dtype=np.float32)
    starts = range(0, n, batch_size)
    chunks = [[list(map(int, s)) for s in seqs[b0 : b0 + batch_size]] for b0 in starts]
    ends = iter(min(n, b0 + batch_size) for b0 in starts)

    def tick() -> None:
        done = next(ends)
        if progress is not None:
            progress(done, n)

    # a model built in this process (no spec: fl.wrap, a planted model) cannot be loaded by a
    # worker: its passes run here, as before
    ex = current_executor() if model.spec is not None else InProcess()
    runs = ex.map_model(model, activation_chunk, chunks, ls, site, position, tick=tick)
    for b0, acts in zip(starts, runs):
        out[b0 : b0 + len(acts)] = acts
    return out


def activation_chunk(
    model: Model,
    seqs: list[list[int]],
    ls: list[int],
    site: str,
    position: str | int,
    tick: Callable[[], None],
) -> np.ndarray:
    """One chunk of prompts of :func:`activations` (a work item of
    :meth:`~faithlens.executor.Executor.map_model`: the chunks are planned in the calling
    process, so every executor runs the same batches): ``[len(seqs), len(ls), d_model]``
    float32, one forward pass stopped at the last layer read."""
    inp = right_pad(model, seqs)
    pos = token_positions(inp, position)
    sites = [Site(f"{site}.{L}", positions=pos) for L in ls]
    res = model.run(inp, cache=sites, stop_at=f"{site}.{max(ls)}")
    out = np.empty((len(seqs), len(ls), model.d_model), dtype=np.float32)
    for j, L in enumerate(ls):
        a = res.cache[f"{site}.{L}"].float()
        if pos is None:
            assert inp.mask is not None
            m = inp.mask.to(a.device, a.dtype)[..., None]
            v = (a * m).sum(1) / m.sum(1).clamp(min=1)
        else:
            v = a[:, 0]
        out[:, j] = v.cpu().numpy()
    tick()
    return out


def prompts_per_pass(
    model: Model, seqs: Sequence[Any], last_layer: int, max_memory: int, extra_tokens: int = 0
) -> int:
    """Prompts per forward pass that fit ``max_memory`` bytes (from the executor): the residual
    streams up to ``last_layer`` and one MLP's hidden units of the longest prompt (plus
    ``extra_tokens``: continuations, generated tokens), per prompt."""
    seq = max(len(s) for s in seqs) + int(extra_tokens)
    item = torch.finfo(model.dtype).bits // 8
    width = 2 * (last_layer + 2) * model.d_model + int(model.d_mlp or 4 * model.d_model)
    return current_executor().chunk_size(len(seqs), item * seq * width, max_memory=max_memory)


@dataclass(frozen=True, eq=False)
class ContrastActivations:
    """Activations of both members of every pair: ``positive`` / ``negative`` are
    ``[n_pairs, n_layers, d_model]``."""

    positive: np.ndarray
    negative: np.ndarray
    layers: list[int]
    site: str
    position: str | int
    groups: tuple[str, ...]
    concept: str = "positive"
    name: str = "pairs"
    model: str = ""

    def __len__(self) -> int:
        return int(self.positive.shape[0])

    def layer(self, layer: int) -> tuple[np.ndarray, np.ndarray]:
        if layer not in self.layers:
            raise InputError(f"layer {layer} was not collected; layers: {self.layers}")
        j = self.layers.index(layer)
        return self.positive[:, j], self.negative[:, j]

    def subset(self, rows: Sequence[int]) -> ContrastActivations:
        idx = np.asarray(list(rows), dtype=np.int64)
        return ContrastActivations(
            self.positive[idx],
            self.negative[idx],
            self.layers,
            self.site,
            self.position,
            tuple(self.groups[int(i)] for i in idx),
            self.concept,
            self.name,
            self.model,
        )


def collect(
    model: Model,
    pairs: ContrastPairs,
    *,
    layers: Sequence[int] | int | None = None,
    site: str = "resid_post",
    position: str | int = "last",
    batch_size: int = 16,
    progress: Progress | None = None,
    max_memory: int | None = None,
) -> ContrastActivations:
    """Activations of both members of every pair at ``site.L`` for each layer (see
    :func:`activations`)."""
    if not isinstance(pairs, ContrastPairs):
        raise InputError(f"pairs must be ContrastPairs, not {type(pairs).__name__}")
    ls = resolve_layers(model, layers)
    n = len(pairs)

    def prog(done: int, total: int) -> None:
        if progress is not None:
            progress(done, 2 * n)

    def prog2(done: int, total: int) -> None:
        if progress is not None:
            progress(n + done, 2 * n)

    pos = activations(
        model,
        pairs.positive,
        layers=ls,
        site=site,
        position=position,
        batch_size=batch_size,
        progress=prog,
        max_memory=max_memory,
    )
    neg = activations(
        model,
        pairs.negative,
        layers=ls,
        site=site,
        position=position,
        batch_size=batch_size,
        progress=prog2,
        max_memory=max_memory,
    )
    return ContrastActivations(
        pos, neg, ls, site, position, pairs.group_ids, pairs.concept, pairs.name, model.name
    )


__all__ = [
    "ContrastActivations",
    "activations",
    "collect",
    "resolve_layers",
    "right_pad",
]
