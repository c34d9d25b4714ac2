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
   forward pass, each on its own block of rows; chunk sizes follow the memory budget
   (``faithlens._memory``: fixed, never the free memory, so results are machine-independent).
4. **Stop at the metric position** (causal models). Later positions cannot reach it: examples
   that read the same position run together, cut after it, so a patch at that position
   recomputes exactly one position.
5. **Logits only where the metric reads them.**
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import validate
from .._memory import budget_bytes, rows_that_fit
from ..errors import InputError, SiteError
from ..interventions import Patch
from ..models.model import Inputs, Model
from ..models.sites import SITE_GROUPS, Site, SiteInfo
from ..runs import Resume
from ..stats import normalized_effect
from ..tasks.base import Task
from .result import PatchingResult

Progress = Callable[[int, int], None]
POSITION_MODES = ("all", "last", "each")
DIRECTIONS = ("denoising", "noising")


def resolve_sites(model: Model, sites: str | Sequence[str]) -> list[str]:
    """Site names from a group (``"head"``, ``"mlp"``, ``"attn"``, ``"resid"``...) or a list."""
    if isinstance(sites, str):
        if sites in SITE_GROUPS:
            names = model.sites(kind=sites)
            if not names:
                raise SiteError(f"this {model.arch} model has no {sites!r} sites")
            return names
        sites = [sites]
    out: list[str] = []
    for s in sites:
        if isinstance(s, Site):
            if s.positions is not None or s.units is not None:
                raise InputError(
                    f"{s}: choose positions with patch(positions=...), not on the site"
                )
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
) -> None:
    """The argument checks every patching method makes before any work: the argument values,
    the task against the model (vocabulary, a language-model head) and degenerate tasks whose
    normalised effect is undefined (clean == corrupt, identical answers)."""
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
    task.check_model(model, fn)
    why = task.degenerate()
    if why is not None:
        raise InputError(f"{fn}: task {task.name!r} is degenerate: {why}")


def degenerate_warning(fn: str, base: np.ndarray, source: np.ndarray) -> str | None:
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
    warnings.warn(note, RuntimeWarning, stacklevel=3)
    return note


@dataclass(frozen=True)
class Condition:
    site: str
    info: SiteInfo
    mode: str  # "all" | "last" | "each"
    position: int | None  # for "each"
    layer: int  # first layer to recompute
    offset: int  # first position to recompute
    noop: bool  # provably equal to the base run


def plan(
    model: Model,
    task: Task,
    sites: Sequence[str],
    positions: str,
) -> list[Condition]:
    """The conditions of a sweep, each with the layer and position it must be recomputed from."""
    n_layers = model.n_layers
    causal = model.is_causal and model.adapter.supports_resume
    seq = task.seq_len
    first_diff = task.first_difference()
    earliest_diff = int(first_diff.min())
    earliest_read = int(task.positions.min())
    conds = []
    for name in sites:
        info = model.site_info(name)
        resumable = model.adapter.supports_resume and info.kind not in ("embed", "module")
        layer = info.first_layer(n_layers) if resumable else 0
        ts: list[int | None] = list(range(seq)) if positions == "each" else [None]
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


def _row_bytes(model: Model, seq_rel: int, seq_abs: int, dtype_bytes: int) -> int:
    a = model.adapter
    d = a.d_model or 1
    per_tok = d * 12 + (a.d_mlp or d) * 4 + (a.n_heads or 1) * seq_abs * 3
    kv = 2 * (a.n_layers or 1) * (a.n_kv_heads or 1) * (a.d_head or 1) * seq_abs
    return (per_tok * seq_rel + kv + (a.d_vocab or 1)) * dtype_bytes


def patch(
    model: Model,
    task: Task,
    sites: str | Sequence[str] = "head",
    positions: str = "all",
    *,
    direction: str = "denoising",
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    max_rows: int | None = None,
    progress: Progress | None = None,
) -> PatchingResult:
    """Activation patching of every site in ``sites``.

    Args:
        sites: a group (``"head"``, ``"mlp"``, ``"attn"``, ``"resid"``, ``"resid_post"``,
            ``"mlp_post"``, ``"q"``, ``"k"``, ``"v"``) or a list of site names.
        positions: ``"all"`` (patch every position at once), ``"last"`` (only each example's
            metric position) or ``"each"`` (every position separately: one row per site and
            position).
        direction: ``"denoising"`` (clean activations into the corrupted run) or ``"noising"``
            (corrupted activations into the clean run).
        n_boot, level, seed: the bootstrap over examples.
        max_rows: cap on batch rows per forward pass (default: from the memory budget).
        progress: called as ``progress(done, total)`` after each batch.

    Returns a :class:`PatchingResult` with one row per condition.
    """
    check_arguments(
        "patch",
        task,
        positions,
        direction,
        model=model,
        n_boot=n_boot,
        level=level,
        seed=seed,
        max_rows=max_rows,
    )
    names = resolve_sites(model, sites)
    conds = plan(model, task, names, positions)
    task = task.to(model.device)

    n = task.n
    seq = task.seq_len
    device = model.device
    item = torch.finfo(model.dtype).bits // 8
    # Examples per chunk: the cached source activations and base residuals must fit.
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
    ex_chunk = max(1, min(n, budget_bytes(device) // max(1, per_example)))
    seq_rel_max = seq - min((c.offset for c in conds), default=0)
    row_cap = rows_that_fit(
        _row_bytes(model, seq_rel_max, seq, item),
        device,
        tokens_per_row=seq_rel_max,
        limit=max_rows,
    )
    ex_chunk = min(ex_chunk, row_cap)

    patched = np.zeros((len(conds), n), dtype=np.float64)
    m_base = np.zeros(n)
    m_src = np.zeros(n)
    # Plan every chunk of examples first (cheap), so the progress bar knows the total.
    chunk_plans = []
    for rows in _example_chunks(model, task, ex_chunk):
        sub = _truncated(model, task.subset(rows))
        local = _localise(conds, plan(model, sub, names, positions), positions)
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, c in enumerate(local):
            if c is not None and not c.noop:
                groups[(c.layer, c.offset)].append(i)
        chunk_plans.append((rows, sub, local, groups))
    total = sum(
        -(-len(idx) // max(1, row_cap // len(rows)))
        for rows, _, _, groups in chunk_plans
        for idx in groups.values()
    )
    done = 0
    for rows, sub, local, groups in chunk_plans:
        cols = rows.cpu().numpy()
        base_i, src_i = (
            (sub.corrupt, sub.clean) if direction == "denoising" else (sub.clean, sub.corrupt)
        )
        ne = sub.n
        # Logits only for the answer tokens, when that is all the metric reads.
        tokens, answers = _answer_columns(model, sub, names)
        # Source run: cache every patched site.
        src_out = model.run(src_i, cache=names, logits_at=sub.positions, logit_tokens=tokens)
        assert src_out.logits is not None
        m_src[cols] = sub.metric(src_out.logits[:, 0], answers).cpu().numpy()
        # Base run: the residual stream entering each layer we resume at, and the KV cache.
        live = [c for c in local if c is not None and not c.noop]
        layers = sorted({c.layer for c in live if _resumes(c)})
        resid_names = [_resid_name(model, L) for L in layers]
        need_kv = any(c.offset > 0 for c in live)
        base_out = model.run(
            base_i,
            cache=resid_names,
            logits_at=sub.positions,
            logit_tokens=tokens,
            return_kv=need_kv,
        )
        assert base_out.logits is not None
        m_base[cols] = sub.metric(base_out.logits[:, 0], answers).cpu().numpy()
        for i, c in enumerate(local):
            if c is None or c.noop:
                patched[i, cols] = m_base[cols]
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
                patched[np.ix_(np.asarray(batch_idx), cols)] = vals
                done += 1
                if progress is not None:
                    progress(done, total)
        del src_out, base_out
    est = normalized_effect(patched, m_base, m_src, n_boot=n_boot, level=level, seed=seed)
    meta: dict[str, Any] = {"conditions_skipped_as_noop": int(sum(c.noop for c in conds))}
    note = degenerate_warning("patch", m_base, m_src)
    if note is not None:
        est = _nan_interval(est)
        meta["degenerate"] = note
    return PatchingResult(
        site=[c.site for c in conds],
        kind=[c.info.kind for c in conds],
        layer=[c.info.layer for c in conds],
        head=[c.info.head for c in conds],
        position=[c.position for c in conds],
        effect=est.estimate,
        se=est.se,
        ci_low=est.low,
        ci_high=est.high,
        patched=patched,
        base=m_base,
        source=m_src,
        method="exact",
        direction=direction,
        positions=positions,
        metric=task.metric.name,
        model=model.name,
        task=task.name,
        level=level,
        n_boot=n_boot,
        seed=seed,
        meta=meta,
    )


def _nan_interval(est: Any) -> Any:
    """The interval with every value NaN (an undefined estimate, never a number)."""
    nan = np.full(np.shape(est.estimate), np.nan)
    return replace(est, estimate=nan, se=nan.copy(), low=nan.copy(), high=nan.copy())


def _answer_columns(model: Model, task: Task, sites: Sequence[str]) -> tuple[Tensor | None, Tensor]:
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


def _example_chunks(model: Model, task: Task, size: int) -> list[Tensor]:
    """Example indices, in chunks of at most ``size``. In a causal model examples are grouped
    by metric position first: a chunk whose examples read the same position can stop there
    (:func:`_truncated`) and, patched at that position, recompute that one position only."""
    n = task.n
    if not _can_truncate(model, task):
        return list(torch.arange(n).split(size))
    pos = task.positions.cpu()
    out: list[Tensor] = []
    for p in torch.unique(pos).tolist():
        out.extend((pos == p).nonzero().flatten().split(size))
    return out


def _can_truncate(model: Model, task: Task) -> bool:
    plain = not (task.clean.args or task.clean.kwargs or task.corrupt.args or task.corrupt.kwargs)
    return bool(model.is_causal and model.adapter.supports_resume and plain)


def _truncated(model: Model, task: Task) -> Task:
    """In a causal model, the task without the positions after its last metric position: they
    can change nothing the metric reads."""
    if not _can_truncate(model, task):
        return task
    end = int(task.positions.max()) + 1
    if end >= task.seq_len:
        return task

    def cut(x: Inputs) -> Inputs:
        assert x.ids is not None
        return Inputs(ids=x.ids[:, :end], mask=None if x.mask is None else x.mask[:, :end])

    return replace(task, clean=cut(task.clean), corrupt=cut(task.corrupt))


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


def _resumes(c: Condition) -> bool:
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
    if _resumes(conds[0]):
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
        else:
            pos = cond.position
        ivs.append(
            Patch(
                Site(cond.site, positions=pos),
                source=src_out.cache[cond.site],
                rows=slice(j * ne, (j + 1) * ne),
            )
        )
    out = model.run(
        inputs, ivs, start_at=start, logits_at=task.positions.repeat(c), logit_tokens=tokens
    )
    assert out.logits is not None
    vals = task.metric(out.logits[:, 0], answers.repeat(c, 1))
    return vals.reshape(c, ne).double().cpu().numpy()
