"""What the patching sweeps share: argument checks, the chunks of examples, the answer columns,
the memory of one batch row, the effect estimate and the one builder of a
:class:`~faithlens.patching.result.PatchingResult`.

Exact activation patching (:mod:`.exact`), path patching (:mod:`.path`) and attribution patching
(:mod:`.attribution`) all use these; chunk sizes come from the executor
(:mod:`faithlens.executor`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import validate
from ..errors import InputError
from ..executor import current_executor
from ..fingerprint import data_fingerprint, model_fingerprint
from ..folders import NpzStore
from ..models.model import Inputs, Model
from ..models.probe import site_positions
from ..stats import normalized_effect
from ..tasks.base import Task
from .result import PatchingResult

POSITION_MODES = ("all", "last", "each")
DIRECTIONS = ("denoising", "noising")


def check_arguments(
    fn: str,
    task: object,
    positions: str,
    direction: str,
    *,
    model: object = None,
    n_boot: Any = 1000,
    level: Any = 0.95,
    seed: Any = 0,
    max_rows: Any = None,
    position_modes: Sequence[str] = POSITION_MODES,
    max_memory: Any = None,
    stacklevel: int = 4,
    multi_token: bool = False,
) -> None:
    """The argument checks every patching method makes before any work: the argument values,
    the task against the model (vocabulary, a language-model head), its size (a confidence
    interval needs two examples) and degenerate tasks whose normalised effect is undefined
    (clean == corrupt, identical answers). A multi-token task is refused unless the method
    scores one (``multi_token``), and then with ``positions="last"`` (its metric reads several
    positions, none of them "the" last)."""
    if not isinstance(model, Model):
        raise validate.fail(
            "model", type(model).__name__, f"{fn} needs a faithlens Model", "use fl.load(...)"
        )
    if not isinstance(task, Task):
        raise InputError(f"{fn} needs a faithlens Task, not {type(task).__name__}")
    validate.choice("positions", positions, position_modes)
    validate.choice("direction", direction, DIRECTIONS)
    validate.n_boot(n_boot)
    validate.level(level)
    validate.nonnegative_int("seed", seed)
    if max_rows is not None:
        validate.positive_int("max_rows", max_rows)
    validate.max_memory(max_memory)
    validate.replaced_knob(
        fn, "max_rows", max_rows, "max_memory", max_memory, stacklevel=stacklevel
    )
    if len(task) < 2:
        raise validate.fail(
            "task",
            f"{task.name} ({len(task)} example{'s' if len(task) != 1 else ''})",
            f"{fn}'s confidence intervals need at least 2 examples (one has no spread, so "
            "its interval would be NaN, not an estimate)",
            "build the task with n >= 2 (e.g. fl.tasks.build(name, model, n=32))",
        )
    if positions == "last" and not task.tokens:
        raise validate.fail(
            "positions",
            positions,
            f"the task {task.name!r} is built from tensors: its metric reads the model's "
            "output, not one of a site's positions",
            "use positions='all' (every position at once) or 'each' (one row per position)",
        )
    task.check_model(model, fn, multi_token=multi_token)
    if task.is_multi_token and positions == "last":
        raise validate.fail(
            "positions",
            positions,
            f"the task {task.name!r} has multi-token answers: its metric reads one position "
            "per answer token (teacher forcing), so no single metric position is 'last'",
            'use positions="all" or "each", or Site(name, positions=[...]) for chosen positions',
        )
    why = task.degenerate()
    if why is not None:
        raise InputError(f"{fn}: task {task.name!r} is degenerate: {why}")


def degenerate_warning(
    fn: str, base: np.ndarray, source: np.ndarray, *, stacklevel: int = 3
) -> str | None:
    """After the runs: the mean metric of the source and base runs agree exactly, so every
    normalised effect divides by zero. Warn, and return the note the result carries."""
    if float(np.mean(source)) != float(np.mean(base)):
        return None
    note = (
        f"{fn}: the clean and corrupted runs give the same mean metric "
        f"({float(np.mean(base)):.6g}), so the normalised effect (patched - base) / "
        "(source - base) divides by zero; the effects are NaN, not estimates. Use a task whose "
        "corruption changes the model's answer"
    )
    warnings.warn(note, RuntimeWarning, stacklevel=stacklevel)
    return note


def row_bytes(model: Model, seq_rel: int, seq_abs: int, dtype_bytes: int) -> int:
    """Bytes one batch row of a patched forward pass holds (activations of ``seq_rel``
    recomputed positions attending to ``seq_abs``, the keys and values, one logit row)."""
    a = model.adapter
    d = a.d_model or 1
    per_tok = d * 12 + (a.d_mlp or d) * 4 + (a.n_heads or 1) * seq_abs * 3
    kv = 2 * (a.n_layers or 1) * (a.n_kv_heads or 1) * (a.d_head or 1) * seq_abs
    return (per_tok * seq_rel + kv + (a.d_vocab or 1)) * dtype_bytes


def nan_interval(est: Any) -> Any:
    """The interval with every value NaN (an undefined estimate, never a number)."""
    nan = np.full(np.shape(est.estimate), np.nan)
    return replace(est, estimate=nan, se=nan.copy(), ci_low=nan.copy(), ci_high=nan.copy())


def answer_columns(model: Model, task: Task, sites: Sequence[str]) -> tuple[Tensor | None, Tensor]:
    """The vocabulary columns a run must compute, and the answers as indices into them: only
    the answer tokens when the metric reads nothing else (and no patched site is the logits),
    else every column (``None``) and the answers as they are."""
    unembed = model.adapter.unembed_module
    lin = model.module.get_submodule(unembed) if unembed is not None else None
    if (
        not task.metric.answer_logits_only
        or not isinstance(lin, torch.nn.Linear)
        or any(model.site_info(s).kind == "logits" for s in sites)
    ):
        return None, task.answers
    tokens = torch.unique(task.answers)
    return tokens, torch.searchsorted(tokens, task.answers)


def refuse_two_axes(model: Model, sites: Sequence[str], positions: str) -> None:
    """An encoder-decoder's sites lie on two position axes (the encoder's tokens and the
    decoder's), and a task's metric positions are the decoder's: only ``positions="all"`` (or
    positions carried by each :class:`Site`) means the same thing on every site."""
    if positions == "all" or getattr(model.adapter, "ordered", True):
        return
    raise validate.fail(
        "positions",
        positions,
        "an encoder-decoder's sites lie on two position axes (the encoder's and the "
        "decoder's tokens), and the task's positions are the decoder's",
        'use positions="all", or Site(name, positions=...) on each site',
    )


def site_length(model: Model, task: Task, site: str) -> int | None:
    """The positions ``site`` has on the task's inputs: the tokens of a token task; on a task
    built from tensors, those the model makes there (a ViT's patches and CLS token, a CNN
    block's ``h * w``), or None for a site without positions (``[batch, width]``). A decoder
    site of an encoder-decoder has the decoder's tokens (its ``SiteInfo.seq_key`` input)."""
    key = model.site_info(site).seq_key
    own = task.clean.kwargs.get(key) if key is not None else None
    if isinstance(own, Tensor):
        return int(own.shape[1])
    if task.tokens:
        return task.seq_len
    hp = model.site_info(site).hook
    one = task.clean.select(slice(0, 1)).to(model.device)  # the probe runs one example
    return site_positions(model.module, hp, one.args, dict(one.kwargs))


def example_chunks(model: Model, task: Task, size: int) -> list[Tensor]:
    """Example indices, in chunks of at most ``size``. In a causal model examples are grouped
    by metric position first: a chunk whose examples read the same position can stop there
    (:func:`truncated`) and, patched at that position, recompute that one position only."""
    n = task.n
    if not can_truncate(model, task):
        return list(torch.arange(n).split(size))
    pos = task.positions.cpu()
    out: list[Tensor] = []
    for p in torch.unique(pos).tolist():
        out.extend((pos == p).nonzero().flatten().split(size))
    return out


def can_truncate(model: Model, task: Task) -> bool:
    plain = not (task.clean.args or task.clean.kwargs or task.corrupt.args or task.corrupt.kwargs)
    return bool(model.is_causal and model.adapter.supports_resume and plain)


def truncated(model: Model, task: Task) -> Task:
    """In a causal model, the task without the positions after its last metric position: they
    can change nothing the metric reads."""
    if not can_truncate(model, task):
        return task
    end = int(task.positions.max()) + 1
    if end >= task.seq_len:
        return task

    def cut(x: Inputs) -> Inputs:
        assert x.ids is not None
        return Inputs(ids=x.ids[:, :end], mask=None if x.mask is None else x.mask[:, :end])

    return replace(task, clean=cut(task.clean), corrupt=cut(task.corrupt))


def effects(
    fn: str,
    patched: np.ndarray,
    base: np.ndarray,
    source: np.ndarray,
    *,
    n_boot: int,
    level: float,
    seed: int,
) -> tuple[Any, str | None]:
    """The normalised effect of every condition with its bootstrap interval, and the note of a
    degenerate sweep (then every value is NaN; see :func:`degenerate_warning`)."""
    est = normalized_effect(patched, base, source, n_boot=n_boot, level=level, seed=seed)
    note = degenerate_warning(fn, base, source, stacklevel=4)
    if note is not None:
        est = nan_interval(est)
    return est, note


def build_result(
    model: Model,
    task: Task,
    est: Any,
    note: str | None,
    *,
    site: list[str],
    kind: list[str],
    layer: list[int | None],
    head: list[int | None],
    position: list[int | None],
    patched: np.ndarray,
    base: np.ndarray,
    source: np.ndarray,
    method: str,
    direction: str,
    positions: str,
    level: float,
    n_boot: int,
    seed: int,
    meta: dict[str, Any],
) -> PatchingResult:
    """The :class:`PatchingResult` of a sweep (one row per condition); a degenerate sweep's
    ``note`` goes into ``meta["degenerate"]``."""
    if not len(site) == len(position) == patched.shape[0] == len(est.estimate):
        raise RuntimeError(  # a faithlens bug: conditions and their rows must line up
            f"{method} patching built {len(site)} conditions but {patched.shape[0]} rows of "
            f"patched metrics; please report this"
        )
    return PatchingResult(
        site=site,
        kind=kind,
        layer=layer,
        head=head,
        position=position,
        effect=est.estimate,
        se=est.se,
        ci_low=est.low,
        ci_high=est.high,
        patched=patched,
        base=base,
        source=source,
        method=method,
        direction=direction,
        positions=positions,
        metric=task.metric.name,
        model=model.name,
        task=task.name,
        level=level,
        n_boot=n_boot,
        seed=seed,
        meta={
            **meta,
            **({"degenerate": note} if note is not None else {}),
            **position_tokens(model, task, position),
        },
    )


def position_tokens(model: Model, task: Task, position: list[int | None]) -> dict[str, Any]:
    """``{"position_tokens": {pos: token}}``: the first clean example's token at each patched
    position (labels for per-position plots), when the model has a tokenizer; else ``{}``."""
    ids = task.clean.ids
    tok = model.tokenizer
    at = sorted({int(p) for p in position if p is not None})
    if ids is None or not at or not callable(getattr(tok, "decode", None)):
        return {}
    row = ids[0].tolist()
    try:
        shown = {str(p): str(tok.decode([row[p]])) for p in at if p < len(row)}
    except Exception:  # a tokenizer that cannot decode single ids: plots keep numbers
        return {}
    return {"position_tokens": shown}


def summed_parts(
    parts: Sequence[tuple[Task, float]],
    plans: Sequence[Sequence[Any]],
    run: Callable[[Task, Any, Any], Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]]],
    checkpoint: Any,
    shape: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per example, the (source, base, patched ``[conditions, n]``) metrics of a task's parts
    (:meth:`~faithlens.tasks.Task.parts`: a multi-token task with wrong answers has two, the
    correct and the wrong continuation), each times its sign and added, before any statistics.
    ``run(part, plans[j], folder)`` yields part ``j``'s chunks in the order of ``plans[j]``
    (each with its example indices ``rows``); its checkpoint folder is ``checkpoint`` for the
    first part and ``checkpoint/wrong`` for the second."""
    patched = np.zeros(shape, dtype=np.float64)
    base, source = np.zeros(shape[1]), np.zeros(shape[1])
    for j, ((part, sign), chunk_plans) in enumerate(zip(parts, plans, strict=True)):
        where = checkpoint if j == 0 or checkpoint is None else os.path.join(checkpoint, "wrong")
        for cp, (src, b, vals) in zip(chunk_plans, run(part, chunk_plans, where)):
            cols = cp.rows.cpu().numpy()
            source[cols] += sign * src
            base[cols] += sign * b
            patched[:, cols] += sign * vals
    return source, base, patched


class ChunkStore(NpzStore):
    """The finished chunks of a sweep on disk, so that a killed run resumes from them
    (:class:`faithlens.folders.NpzStore`: ``key`` fingerprints the model, the data, the arguments
    and the chunk plan; chunk ``i`` is ``chunk_{i:07d}.npz``)."""

    def __init__(self, path: str | os.PathLike[str], key: str) -> None:
        super().__init__(
            path,
            key,
            prefix="chunk",
            what="checkpoint",
            other_run="another run (another model, data, arguments or chunk plan)",
        )


def resumable_chunks(
    model: Model,
    fn: Callable[..., tuple[np.ndarray, ...]],
    items: list[Any],
    args: tuple[Any, ...],
    *,
    checkpoint: str | os.PathLike[str] | None,
    key: tuple[Any, ...],
    replay: list[int],
    tick: Callable[[], None],
) -> Iterator[tuple[np.ndarray, ...]]:
    """``fn(model, item, *args, tick)`` of every item through the executor, in order; each
    result is a tuple of arrays. With ``checkpoint`` (a folder), the items a killed run finished
    are read back (``replay[i]`` progress steps each, replayed first) and only the others run,
    each saved as it finishes; the folder is keyed on the model's weights and dtype and on
    ``key`` (the data, the arguments and the chunk plan), and another run's folder is refused
    (:class:`ChunkStore`)."""
    ex = current_executor()
    if checkpoint is None:
        yield from ex.map_model(model, fn, items, *args, tick=tick)
        return
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise validate.fail(
            "checkpoint", checkpoint, "must be a folder path", "give a str or a pathlib.Path"
        )
    fp = data_fingerprint(*key, model_fingerprint(model.module), str(model.dtype))
    store = ChunkStore(checkpoint, fp)
    saved = [store.load(i) for i in range(len(items))]
    for s, steps in zip(saved, replay):
        for _ in range(steps if s is not None else 0):
            tick()
    fresh = ex.map_model(
        model, fn, [x for x, s in zip(items, saved) if s is None], *args, tick=tick
    )
    for i, s in enumerate(saved):
        if s is None:
            out = tuple(next(fresh))
            store.save(i, **{f"part_{k}": v for k, v in enumerate(out)})
            yield out
        else:
            yield tuple(s[f"part_{k}"] for k in range(len(s)))


__all__ = [
    "ChunkStore",
    "DIRECTIONS",
    "POSITION_MODES",
    "answer_columns",
    "build_result",
    "can_truncate",
    "check_arguments",
    "degenerate_warning",
    "effects",
    "example_chunks",
    "nan_interval",
    "resumable_chunks",
    "row_bytes",
    "site_length",
    "summed_parts",
    "truncated",
]
