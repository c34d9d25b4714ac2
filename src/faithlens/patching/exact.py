"""Exact activation patching sweeps, batched.

Every condition (a site, patched at all positions, at each example's metric position, or at one
position) is one patched forward pass in principle. The planner makes them cheap:

1. **Start at the patched layer.** A patch at layer L changes nothing before L: the run resumes
   from the base run's cached ``resid_pre.L``.
2. **Start at the first changed position** (causal models). Nothing before the patched position
   changes; and where the clean and corrupted prompts share a prefix, their activations there are
   identical, so patching them changes nothing either. The run resumes at that position with the
   base run's cached keys and values for the prefix. A condition that can change nothing at all
   (a position before every example's first differing token) is exactly the base run.
3. **Stack conditions in the batch.** Conditions with the same (layer, position) share one
   forward pass, each on its own block of rows; chunk sizes come from the executor
   (``faithlens.executor``: from the fixed memory budget, never the free memory, so results are
   machine-independent).
4. **Stop at the metric position** (causal models). Later positions cannot reach it: examples
   that read the same position run together, cut after it, so a patch at that position
   recomputes exactly one position.
5. **Logits only where the metric reads them.**
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import validate
from ..errors import InputError, SiteError
from ..executor import Executor, current_executor, on_executor
from ..fingerprint import data_fingerprint, model_fingerprint
from ..interventions import Patch
from ..models.model import Inputs, Model
from ..models.sites import KINDS, SITE_GROUPS, Site, SiteInfo
from ..progress import Progress
from ..runs import Resume
from ..tasks.base import Task
from .result import PatchingResult
from .sweep import (
    ChunkStore,
    answer_columns,
    build_result,
    check_arguments,
    effects,
    example_chunks,
    refuse_two_axes,
    row_bytes,
    site_length,
    summed_parts,
    truncated,
)


def resolve_sites(model: Model, sites: str | Sequence[str | Site]) -> list[str]:
    """Site names from a group (``"head"``, ``"mlp"``, ``"attn"``, ``"resid"``...) or a list."""
    # a vision adapter's own kinds are groups too ("block", "stage", "conv")
    own = {i.kind for i in model.adapter.site_table.values()} - {*KINDS, "module", "logits"}
    if isinstance(sites, str):
        if sites in SITE_GROUPS or sites in own:
            names = model.sites(kind=sites)
            if not names:
                raise SiteError(f"this {model.arch} model has no {sites!r} sites")
            return names
        sites = [sites]
    out: list[str] = []
    for s in sites:
        if isinstance(s, Site):
            # refuses selections a patching condition cannot carry
            if site_positions(s) is not None and s.name in SITE_GROUPS:
                raise InputError(f"{s}: positions go on a site name, not on a group")
            s = s.name
        if not isinstance(s, str):
            raise InputError(f"sites must be names, not {type(s).__name__}")
        if s in SITE_GROUPS:
            out.extend(model.sites(kind=s))
            continue
        info = model.site_info(s)  # raises with the nearest names
        if info.kind == "logits":
            raise validate.fail(
                "sites",
                s,
                "patching the logits replaces the very output the metric reads (its effect is "
                "1 by construction)",
                "patch sites upstream of the output (head, mlp, resid, ln_final)",
            )
        out.append(s)
    if not out:
        raise InputError("no sites to patch")
    return list(dict.fromkeys(out))


def site_positions(s: Site) -> tuple[int, ...] | None:
    """The positions a :class:`Site` carries into a patching sweep: ``None`` (the sweep's
    ``positions`` mode applies), or sorted non-negative token positions, patched together in
    every example (``Site("resid_pre.3", positions=[4, 5])``)."""
    if s.units is not None:
        raise InputError(f"{s}: patching patches whole sites; give the site without units")
    p = s.positions
    if p is None:
        return None
    items = [p] if isinstance(p, int) else p
    ok = isinstance(items, (list, tuple)) and len(items) > 0
    ok = ok and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in items)
    if not ok:
        raise InputError(
            f"{s}: a patched site carries non-negative token positions (an int or a list of "
            "ints); for each example's metric position use patch(positions='last')"
        )
    return tuple(sorted({int(i) for i in items}))


def carried_positions(sites: str | Sequence[str | Site]) -> dict[str, tuple[int, ...]]:
    """Site name -> the positions its :class:`Site` carries (only sites that carry some)."""
    if isinstance(sites, str):
        return {}
    out: dict[str, tuple[int, ...]] = {}
    for s in sites:
        if isinstance(s, Site):
            at = site_positions(s)
            if at is not None:
                if s.name in out and out[s.name] != at:
                    raise InputError(f"site {s.name} is given twice with different positions")
                out[s.name] = at
    return out


@dataclass(frozen=True)
class Condition:
    site: str
    info: SiteInfo
    mode: str  # "all" | "last" | "each" | "site" (positions carried by the Site)
    position: int | None  # for "each" (and "site" with one position)
    layer: int  # first layer to recompute
    offset: int  # first position to recompute
    noop: bool  # provably equal to the base run
    at: tuple[int, ...] | None = None  # for "site": the positions patched


def plan_sweep(
    model: Model,
    task: Task,
    sites: Sequence[str],
    positions: str,
    carried: dict[str, tuple[int, ...]] | None = None,
) -> list[Condition]:
    """The conditions of a sweep, each with the layer and position it must be recomputed from.
    ``carried``: the positions :class:`Site` arguments carry (their sites ignore ``positions``);
    positions a (truncated) task does not have are dropped: in a causal model they come after
    every position the metric reads."""
    n_layers = model.n_layers
    causal = model.is_causal and model.adapter.supports_resume
    refuse_two_axes(model, [s for s in sites if not (carried and s in carried)], positions)
    first_diff = task.first_difference()
    earliest_diff = int(first_diff.min())
    earliest_read = int(task.read_at.min())
    conds = []
    for name in sites:
        info = model.site_info(name)
        length = site_length(model, task, name)  # a token task's length, a tensor task's own
        seq = 1 if length is None else length
        resumable = model.adapter.supports_resume and info.kind not in ("embed", "module")
        layer = info.first_layer(n_layers) if resumable else 0
        if info.kind == "resid_post" and info.layer is not None:
            # its hook is layer L's output, which a run resumed at L + 1 never computes
            layer = min(layer, info.layer)
        if carried and name in carried:
            at = tuple(i for i in carried[name] if i < seq)
            start = at[0] if (causal and resumable and at) else 0
            offset = max(0, min(start, earliest_read, seq - 1))
            one = carried[name][0] if len(carried[name]) == 1 else None
            conds.append(Condition(name, info, "site", one, layer, offset, not at, at))
            continue
        each = positions == "each" and length is not None
        ts: list[int | None] = list(range(seq)) if each else [None]
        for t in ts:
            if not causal or not resumable:
                start, noop = 0, False
            elif positions == "all":
                start, noop = earliest_diff, earliest_diff >= seq
            elif positions == "last":
                start, noop = int(task.positions.min()), False
            else:
                assert t is not None
                start, noop = t, bool((first_diff > t).all())
            offset = max(0, min(start, earliest_read, seq - 1))
            conds.append(Condition(name, info, positions, t, layer, offset, noop))
    return conds


#: The old name of :func:`plan_sweep` (renamed: "plan" also names the scrubbing planner and the
#: graph's evaluation plan); kept for one release.
plan = plan_sweep


@validate.renamed_argument("task", "data")
@on_executor
def patch(
    model: Model,
    data: Task,
    sites: str | Sequence[str | Site] = "head",
    positions: str = "all",
    *,
    direction: str = "denoising",
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    max_rows: int | None = None,
    progress: Progress | None = None,
    max_memory: int | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    executor: str | Executor | None = None,
) -> PatchingResult:
    """Activation patching of every site in ``sites``.

    Args:
        sites: a group (``"head"``, ``"mlp"``, ``"attn"``, ``"resid"``, ``"resid_post"``,
            ``"mlp_post"``, ``"q"``, ``"k"``, ``"v"``) or a list of site names and
            :class:`~faithlens.Site` objects. A ``Site`` that carries positions
            (``Site("resid_pre.3", positions=[4, 5])``: non-negative token positions) is patched
            at those positions in every example, whatever ``positions`` says (one row; its
            ``position`` is the position when there is one).
        positions: ``"all"`` (patch every position at once), ``"last"`` (only each example's
            metric position) or ``"each"`` (every position separately: one row per site and
            position).
        direction: ``"denoising"`` (clean activations into the corrupted run) or ``"noising"``
            (corrupted activations into the clean run).
        n_boot, level, seed: the bootstrap over examples.
        max_rows: deprecated (one release; use ``max_memory``): cap on batch rows per forward
            pass.
        progress: called as ``progress(done, total)`` after each batch.
        max_memory: bytes one batched computation may use (the cached activations of a chunk of
            examples; one forward pass's rows); default: the configured memory budget.
        checkpoint: a folder where each finished chunk of examples is saved; a run killed as
            a whole and started again with the same folder (same model, data and arguments)
            computes only the chunks it had not finished, with the same result.
        executor: where the chunks run for this call: ``"ray"`` (a Ray executor built
            for the call), an :class:`~faithlens.executor.Executor`, or ``None`` (the one
            in force: :func:`faithlens.executor.executor`); the numbers do not change.

    Returns a :class:`PatchingResult` with one row per condition.
    """
    check_arguments(
        "patch",
        data,
        positions,
        direction,
        model=model,
        n_boot=n_boot,
        level=level,
        seed=seed,
        max_rows=max_rows,
        max_memory=max_memory,
        multi_token=True,
    )
    names = resolve_sites(model, sites)
    carried = carried_positions(sites)
    conds = plan_sweep(model, data, names, positions, carried)
    data = data.to(model.device)
    ex_chunk, row_cap = _chunk_sizes(model, data, conds, max_rows, max_memory)
    parts = data.parts()  # two for a multi-token task with wrong answers (Task.parts)
    # Plan every chunk of examples first (cheap), so the progress bar knows the total.
    plans = [
        [
            _chunk_plan(model, part, rows, conds, names, positions, carried)
            for rows in example_chunks(model, part, ex_chunk)
        ]
        for part, _ in parts
    ]
    total = sum(
        -(-len(idx) // max(1, row_cap // len(cp.rows)))
        for chunk_plans in plans
        for cp in chunk_plans
        for idx in cp.groups.values()
    )
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    args = (names, direction, row_cap)
    key = (positions, carried, ex_chunk)
    m_src, m_base, patched = summed_parts(
        parts,
        plans,
        lambda part, cps, where: _chunk_results(model, part, cps, args, key, tick, where),
        checkpoint,
        (len(conds), data.n),
    )
    est, note = effects("patch", patched, m_base, m_src, n_boot=n_boot, level=level, seed=seed)
    return build_result(
        model,
        data,
        est,
        note,
        site=[c.site for c in conds],
        kind=[c.info.kind for c in conds],
        layer=[c.info.layer for c in conds],
        head=[c.info.head for c in conds],
        position=[c.position for c in conds],
        patched=patched,
        base=m_base,
        source=m_src,
        method="exact",
        direction=direction,
        positions=positions,
        level=level,
        n_boot=n_boot,
        seed=seed,
        meta={
            "conditions_skipped_as_noop": int(sum(c.noop for c in conds)),
            **({"site_positions": {k: list(v) for k, v in carried.items()}} if carried else {}),
        },
    )


def _chunk_results(
    model: Model,
    task: Task,
    plans: list[_ChunkPlan],
    args: tuple[list[str], str, int],
    key: tuple[Any, ...],
    tick: Callable[[], None],
    checkpoint: str | os.PathLike[str] | None,
) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Every chunk's (source, base, patched) metrics, in order. Each chunk is a picklable work
    item: executors with workers send it to one (by name). With ``checkpoint``, the chunks a
    killed run finished are read back (their progress steps replayed first) and only the
    others run, each saved as it finishes."""
    ex = current_executor()
    if checkpoint is None:
        yield from ex.map_model(model, _run_chunk, plans, *args, tick=tick)
        return
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise validate.fail(
            "checkpoint", checkpoint, "must be a folder path", "give a str or a pathlib.Path"
        )
    names, direction, row_cap = args
    store = ChunkStore(
        checkpoint,
        data_fingerprint(
            "faithlens.patch",
            model_fingerprint(model.module),
            str(model.dtype),
            task.fingerprint(),
            names,
            direction,
            row_cap,
            list(key),
            [cp.rows for cp in plans],
        ),
    )
    saved = [store.load(i) for i in range(len(plans))]
    todo = [i for i, s in enumerate(saved) if s is None]
    for i, s in enumerate(saved):
        if s is not None:
            per_pass = max(1, row_cap // len(plans[i].rows))
            for idx in plans[i].groups.values():
                for _ in range(-(-len(idx) // per_pass)):
                    tick()
    fresh = ex.map_model(model, _run_chunk, [plans[i] for i in todo], *args, tick=tick)
    for i, s in enumerate(saved):
        if s is None:
            src, base, vals = next(fresh)
            store.save(i, source=src, base=base, patched=vals)
            yield src, base, vals
        else:
            yield s["source"], s["base"], s["patched"]


def _chunk_sizes(
    model: Model,
    task: Task,
    conds: list[Condition],
    max_rows: int | None,
    max_memory: int | None = None,
) -> tuple[int, int]:
    """(examples per chunk, batch rows per forward pass), from the executor: a chunk's cached
    source activations and base residuals must fit the budget, and so must one pass's rows."""
    seq = max((site_length(model, task, c.site) or 1 for c in conds), default=1)
    device = model.device
    item = torch.finfo(model.dtype).bits // 8
    widths = {c.site: int(c.info.width or model.d_model) for c in conds}
    per_example = (
        item
        * seq
        * (
            sum(widths.values())
            + (model.n_layers + 1) * model.d_model
            + 2 * model.n_layers * model.n_kv_heads * model.d_head
        )
    )
    ex = current_executor()
    ex_chunk = ex.chunk_size(task.n, per_example, device=device, max_memory=max_memory)
    seq_rel_max = seq - min((c.offset for c in conds), default=0)
    row_cap = ex.chunk_size(
        None,
        row_bytes(model, seq_rel_max, seq, item),
        device=device,
        max_memory=max_memory,
        tokens_per_item=seq_rel_max,
        limit=max_rows,
    )
    return min(ex_chunk, row_cap), row_cap


@dataclass(frozen=True)
class _ChunkPlan:
    """One chunk of examples: their indices, the (truncated) task, the sweep's conditions as
    planned for it, and the live conditions grouped by the (layer, position) they start at."""

    rows: Tensor
    sub: Task
    local: list[Condition | None]
    groups: dict[tuple[int, int], list[int]]


def _chunk_plan(
    model: Model,
    task: Task,
    rows: Tensor,
    conds: list[Condition],
    names: list[str],
    positions: str,
    carried: dict[str, tuple[int, ...]] | None = None,
) -> _ChunkPlan:
    sub = truncated(model, task.subset(rows))
    local = _localise(conds, plan_sweep(model, sub, names, positions, carried), positions)
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, c in enumerate(local):
        if c is not None and not c.noop:
            groups[(c.layer, c.offset)].append(i)
    return _ChunkPlan(rows, sub, local, groups)


def _run_chunk(
    model: Model,
    cp: _ChunkPlan,
    names: list[str],
    direction: str,
    row_cap: int,
    tick: Callable[[], None],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One chunk of examples: the source run (caching every patched site), the base run
    (caching the residual streams to resume from, and the keys and values), then every group of
    conditions in passes of at most ``row_cap`` rows (``tick()`` after each). The chunk's source
    and base metrics ``[ne]`` and patched metrics ``[n_conditions, ne]``."""
    sub, local, groups = cp.sub, cp.local, cp.groups
    base_i, src_i = (
        (sub.corrupt, sub.clean) if direction == "denoising" else (sub.clean, sub.corrupt)
    )
    ne = sub.n
    # Logits only for the answer tokens, when that is all the metric reads.
    tokens, answers = answer_columns(model, sub, names)
    # Source run: cache every patched site.
    src_out = model.run(src_i, cache=names, logits_at=sub.read_at, logit_tokens=tokens)
    assert src_out.logits is not None
    m_src = sub.score(src_out.logits, answers).cpu().numpy()
    # Base run: the residual stream entering each layer we resume at, and the KV cache.
    live = [c for c in local if c is not None and not c.noop]
    layers = sorted({c.layer for c in live if _resumes(model, c)})
    resid_names = [_resid_name(model, L) for L in layers]
    need_kv = any(c.offset > 0 for c in live)
    base_out = model.run(
        base_i,
        cache=resid_names,
        logits_at=sub.read_at,
        logit_tokens=tokens,
        return_kv=need_kv,
    )
    assert base_out.logits is not None
    m_base = sub.score(base_out.logits, answers).cpu().numpy()
    patched = np.zeros((len(local), ne), dtype=np.float64)
    for i, c in enumerate(local):
        if c is None or c.noop:
            patched[i] = m_base
    per_pass = max(1, row_cap // ne)
    for (layer, offset), idx in groups.items():
        for k in range(0, len(idx), per_pass):
            batch_idx = idx[k : k + per_pass]
            vals = _run_group(
                model,
                sub,
                base_i,
                base_out,
                src_out,
                [c for j in batch_idx if (c := local[j]) is not None],
                layer,
                offset,
                tokens,
                answers,
            )
            patched[np.asarray(batch_idx)] = vals
            tick()
    del src_out, base_out
    return m_src, m_base, patched


def _localise(
    conds: list[Condition], local: list[Condition], positions: str
) -> list[Condition | None]:
    """The sweep's conditions as planned for one (possibly truncated) chunk of examples.
    ``None``: the condition patches a position the chunk no longer has, after every position
    its metric reads, so in a causal model it equals the base run."""
    if positions != "each":
        assert len(local) == len(conds)
        return list(local)
    by_key = {(c.site, c.position): c for c in local}
    return [by_key.get((c.site, c.position)) for c in conds]


def _resumes(model: Model, c: Condition) -> bool:
    """Whether a condition's run resumes from a cached residual stream (never on a model that
    cannot resume, such as a CNN or an encoder-decoder: its runs start from the inputs)."""
    if not model.adapter.supports_resume:
        return False
    return not (c.layer == 0 and c.info.kind in ("embed", "module"))


def _resid_name(model: Model, layer: int) -> str:
    return f"resid_pre.{layer}" if layer < model.n_layers else f"resid_post.{model.n_layers - 1}"


def _run_group(
    model: Model,
    task: Task,
    base_in: Inputs,
    base_out: Any,
    src_out: Any,
    conds: list[Condition],
    layer: int,
    offset: int,
    tokens: Tensor | None,
    answers: Tensor,
) -> np.ndarray:
    """Metric per (condition, example) for conditions sharing a start layer and position."""
    ne = task.n
    c = len(conds)
    inputs = base_in.repeat(c)
    start: Resume | None = None
    if _resumes(model, conds[0]):
        hidden = base_out.cache[_resid_name(model, layer)][:, offset:]
        kv = None
        if offset:
            kv = [
                (k[:, :, :offset].repeat(c, 1, 1, 1), v[:, :, :offset].repeat(c, 1, 1, 1))
                for k, v in base_out.kv
            ]
        start = Resume(layer=layer, hidden=hidden.repeat(c, 1, 1), offset=offset, kv=kv)
    ivs = []
    for j, cond in enumerate(conds):
        pos: Any
        if cond.mode == "all":
            pos = None
        elif cond.mode == "last":
            pos = task.positions
        elif cond.mode == "site":
            assert cond.at
            pos = list(cond.at)
        else:
            pos = cond.position
        ivs.append(
            Patch(
                Site(cond.site, positions=pos),
                source=src_out.cache[cond.site],
                rows=slice(j * ne, (j + 1) * ne),
            )
        )
    at = task.read_at
    reads = at.repeat(c) if at.dim() == 1 else at.repeat(c, 1)
    out = model.run(inputs, ivs, start_at=start, logits_at=reads, logit_tokens=tokens)
    assert out.logits is not None
    vals = task.score(out.logits, answers.repeat(c, 1))
    return vals.reshape(c, ne).double().cpu().numpy()
