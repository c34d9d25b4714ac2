"""Attribution patching: the first-order (gradient) approximation of activation patching.

For a site with base activation ``a`` and source activation ``a'``, patching changes the metric
by about ``grad_a m . (a' - a)``. Two forward passes (source, base with gradients) and one
backward pass give this estimate for every site at once. Per example ``i`` the estimate is
``m_base_i + sum over the patched positions and units of grad . (a' - a)``, and the effect is
normalised and bootstrapped exactly like exact patching.

The examples run in chunks as large as the memory budget allows (the backward pass keeps every
layer's activations of its chunk); each chunk is a work item of
:meth:`~faithlens.executor.Executor.map_model`, so the Ray executor runs the chunks on its
workers with the in-process result. A task that fits the budget is one chunk (one pass of each
kind over every example, as before chunking existed).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .. import validate
from ..executor import Executor, current_executor, on_executor
from ..fingerprint import data_fingerprint, model_fingerprint
from ..models.model import Model
from ..progress import Progress
from ..tasks.base import Task
from .exact import resolve_sites
from .result import PatchingResult
from .sweep import (
    ChunkStore,
    build_result,
    check_arguments,
    effects,
    refuse_two_axes,
    row_bytes,
    site_length,
)

#: One chunk's metrics: source ``[n]``, base ``[n]`` and the estimated change ``[conds, n]``.
Chunk = tuple[np.ndarray, np.ndarray, np.ndarray]


@validate.renamed_argument("task", "data")
@on_executor
def attribution_patch(
    model: Model,
    data: Task,
    sites: str | Sequence[str] = "head",
    positions: str = "all",
    *,
    direction: str = "denoising",
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    max_memory: int | None = None,
    progress: Progress | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    executor: str | Executor | None = None,
) -> PatchingResult:
    """Gradient-based estimate of :func:`faithlens.patch` for every site, same result shape.

    Args:
        sites, positions, direction, n_boot, level, seed: as :func:`faithlens.patch`.
        max_memory: bytes one chunk of examples may use (its forward passes, the activations
            the backward pass keeps, the cached sites and their gradients); default: the
            configured memory budget.
        progress: called as ``progress(done, total)`` after each chunk of examples.
        checkpoint: a folder where each finished chunk of examples is saved; a run killed as
            a whole and started again with the same folder (same model, data and arguments)
            computes only the chunks it had not finished, with the same result.
        executor: where the chunks run for this call: ``"ray"`` (a Ray executor built
            for the call), an :class:`~faithlens.executor.Executor`, or ``None`` (the one
            in force: :func:`faithlens.executor.executor`); the numbers do not change.
    """
    check_arguments(
        "attribution_patch",
        data,
        positions,
        direction,
        model=model,
        n_boot=n_boot,
        level=level,
        seed=seed,
        max_memory=max_memory,
        multi_token=True,
    )
    names = resolve_sites(model, sites)
    refuse_two_axes(model, names, positions)
    data = data.to(model.device)
    n = data.n
    lengths = {name: site_length(model, data, name) for name in names}
    conds: list[tuple[str, int | None]] = []
    for name in names:
        # a site without positions ([batch, width], a tensor task's) is one condition at 0
        each = range(lengths[name] or 1) if positions == "each" else [None]
        conds.extend((name, t) for t in each)
    ex = current_executor()
    seq = max((v or 1) for v in lengths.values())
    size = ex.chunk_size(
        n, _bytes_per_example(model, seq, names), max_memory=max_memory, device=model.device
    )
    parts = ex.chunks(n, size)
    subs = [data] if len(parts) == 1 else [data.subset(s) for s in parts]
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, len(subs))

    args = (names, direction, positions)
    if checkpoint is None:
        runs = list(ex.map_model(model, _run_chunk, subs, *args, tick=tick))
    else:
        key = ("faithlens.attribution_patch", *args, size)
        runs = _resumed(model, data, subs, args, key, tick, checkpoint)
    m_source = np.concatenate([r[0] for r in runs])
    m_base = np.concatenate([r[1] for r in runs])
    est_delta = np.concatenate([r[2] for r in runs], axis=1)
    patched = m_base[None, :] + est_delta
    est, note = effects(
        "attribution_patch", patched, m_base, m_source, n_boot=n_boot, level=level, seed=seed
    )
    infos = {name: model.site_info(name) for name in names}
    return build_result(
        model,
        data,
        est,
        note,
        site=[c[0] for c in conds],
        kind=[infos[c[0]].kind for c in conds],
        layer=[infos[c[0]].layer for c in conds],
        head=[infos[c[0]].head for c in conds],
        position=[c[1] for c in conds],
        patched=np.asarray(patched),
        base=m_base,
        source=m_source,
        method="attribution",
        direction=direction,
        positions=positions,
        level=level,
        n_boot=n_boot,
        seed=seed,
        meta={},
    )


def _bytes_per_example(model: Model, seq: int, names: list[str]) -> int:
    """What one example of ``seq`` positions holds: every layer's activations for the backward
    pass, and each site's source and base activations, gradient leaf and gradient."""
    item = torch.finfo(model.dtype).bits // 8
    widths = sum(int(model.site_info(s).width or model.d_model) for s in names)
    return row_bytes(model, seq, seq, item) * (model.n_layers + 1) + 4 * item * seq * widths


def _resumed(
    model: Model,
    data: Task,
    subs: list[Task],
    args: tuple[list[str], str, str],
    key: tuple[object, ...],
    tick: Callable[[], None],
    checkpoint: str | os.PathLike[str],
) -> list[Chunk]:
    """The chunks' metrics, those a killed run finished read back from ``checkpoint`` (their
    progress steps replayed first), the others run and saved as each finishes."""
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise validate.fail(
            "checkpoint", checkpoint, "must be a folder path", "give a str or a pathlib.Path"
        )
    store = ChunkStore(
        checkpoint,
        data_fingerprint(
            *key, model_fingerprint(model.module), str(model.dtype), data.fingerprint()
        ),
    )
    saved = [store.load(i) for i in range(len(subs))]
    for s in saved:
        if s is not None:
            tick()
    todo = [sub for sub, s in zip(subs, saved) if s is None]
    fresh = current_executor().map_model(model, _run_chunk, todo, *args, tick=tick)
    out: list[Chunk] = []
    for i, s in enumerate(saved):
        if s is None:
            src, base, delta = next(fresh)
            store.save(i, source=src, base=base, delta=delta)
            out.append((src, base, delta))
        else:
            out.append((s["source"], s["base"], s["delta"]))
    return out


def _run_chunk(
    model: Model,
    data: Task,
    names: list[str],
    direction: str,
    positions: str,
    tick: Callable[[], None],
) -> Chunk:
    """One chunk of examples: its source and base metrics and every condition's estimated
    change (a work item of ``Executor.map_model``: workers run it on their own model). A
    multi-token task with a wrong answer sums its two parts with their signs
    (:meth:`~faithlens.tasks.Task.parts`): the estimate is linear, so that is each part's."""
    total: list[np.ndarray] = []
    for part, sign in data.parts():
        got = _run_part(model, part, names, direction, positions)
        total = [sign * a for a in got] if not total else [t + sign * a for t, a in zip(total, got)]
    tick()
    return total[0], total[1], total[2]


def _run_part(model: Model, data: Task, names: list[str], direction: str, positions: str) -> Chunk:
    """One chunk's metrics for one part of its task (see :func:`_run_chunk`)."""
    base_in, src_in = (
        (data.corrupt, data.clean) if direction == "denoising" else (data.clean, data.corrupt)
    )
    src = model.run(src_in, cache=names, logits_at=data.read_at)
    assert src.logits is not None
    m_src = data.score(src.logits)

    # Gradients only with respect to the sites (not the weights): requires_grad is turned off on
    # the parameters for the duration, so no .grad is written into the user's model.
    params = [p for p in model.module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        base = model.run(base_in, cache=names, logits_at=data.read_at, grad=True, grad_sites=names)
        assert base.logits is not None
        m_base_t = data.score(base.logits)
        deltas = [base.grad_leaf(name)[0] for name in names]
        grads = torch.autograd.grad(m_base_t.sum(), deltas, allow_unused=True)
    finally:
        for p in params:
            p.requires_grad_(True)
    grad_by_site = {}
    for name, g, dlt in zip(names, grads, deltas):
        sel = base.grad_leaf(name)[1]
        grad_by_site[name] = sel.get(g if g is not None else torch.zeros_like(dlt))

    n = data.n
    rows = []
    for name in names:
        diff = (src.cache[name] - base.cache[name].detach()).float()
        contrib = (diff * grad_by_site[name].float()).sum(-1)  # [n, seq] (or [n]: no positions)
        if contrib.dim() == 1:
            contrib = contrib[:, None]
        if positions == "all":
            rows.append(contrib.sum(-1))
        elif positions == "last":
            rows.append(contrib[torch.arange(n), data.positions])
        else:
            rows.extend(contrib[:, t] for t in range(contrib.shape[1]))
    return (
        m_src.double().cpu().numpy(),
        m_base_t.detach().double().cpu().numpy(),
        torch.stack(rows).double().cpu().numpy(),
    )
