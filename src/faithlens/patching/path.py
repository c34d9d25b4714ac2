"""Path patching: the effect of a sender along its direct edges into chosen receivers only.

Activation patching asks how much a component matters through *every* path; path patching
(Wang et al. 2022, Goldowsky-Dill et al. 2023) asks how much it matters through its direct
edges into chosen receivers: the query, key or value inputs of some heads, the input of some
MLPs, or the logits. For each sender, in the denoising direction:

1. **Run A** (the corrupted input): the sender's output is set to its clean value, and every
   component between the sender and the last receiver (attention and MLP outputs) keeps its
   corrupted value, so the residual stream entering each receiver is the corrupted one plus the
   sender's change and nothing else. The receivers' inputs are recorded.
2. **Run B** (the corrupted input): the receivers' inputs are set to the values recorded in A,
   and the model runs on from them; the metric is read. With ``receivers=["logits"]``, run A is
   run to the end and gives the metric (the sender's direct effect on the output).

The effect is normalised like activation patching: ``(m_B - m_corrupt) / (m_clean - m_corrupt)``
on the metric averaged over examples, with a bootstrap CI over examples. ``direction="noising"``
swaps the roles of the clean and corrupted runs.

The residual stream must be a sum of component outputs (pre-LN transformers: GPT-2, Llama,
GPT-NeoX, the zoo); the direct edges are those of :class:`~faithlens.graph.TransformerGraph`
(so a head and the MLP of its own layer are not connected in a parallel-block model). Senders of
one layer share their passes: they are stacked in the batch, a block of rows each.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import validate
from ..errors import InputError
from ..executor import Executor, current_executor, on_executor
from ..graph import TransformerGraph
from ..interventions import Patch
from ..models.model import Inputs, Model
from ..models.sites import Site
from ..progress import Progress
from ..runs import Resume
from ..tasks.base import Task
from ..tasks.tensors import require_tokens
from .result import PatchingResult
from .sweep import (
    answer_columns,
    build_result,
    check_arguments,
    effects,
    example_chunks,
    resumable_chunks,
    row_bytes,
    summed_parts,
    truncated,
)

PORTS = ("q", "k", "v")
SENDER_POSITIONS = ("all", "last")


def _node_kind(graph: TransformerGraph, name: str, what: str) -> str:
    """The kind of a sender or receiver node; unknown names raise with the nearest ones."""
    node = graph.node(name)
    if node.kind not in ("head", "mlp"):
        also = "" if what == "sender" else ", or receivers='logits' alone"
        raise InputError(
            f"{what} {name!r} is not a head or an MLP (it is the graph's {node.kind} node); "
            f"path patching {what}s are heads ('head.L.H') and MLPs ('mlp.L'){also}"
        )
    return str(node.kind)


def resolve_senders(
    graph: TransformerGraph, senders: str | Sequence[str]
) -> tuple[list[str], bool]:
    """Sender node names from ``"head"``, ``"mlp"`` or a list; and whether they came from a group
    (a group silently skips senders with no direct edge into the receivers)."""
    if isinstance(senders, str):
        if senders in ("head", "mlp"):
            names = [n for n, v in graph.nodes.items() if v.kind == senders]
            if not names:
                raise InputError(f"this model has no {senders!r} nodes to send from")
            return names, True
        senders = [senders]
    names = list(dict.fromkeys(senders))
    if not names:
        raise InputError("no senders: give 'head', 'mlp' or a list such as ['head.0.1']")
    for s in names:
        if not isinstance(s, str):
            raise InputError(f"senders must be node names, not {type(s).__name__}")
        _node_kind(graph, s, "sender")
    return names, False


def _resolve_receivers(
    graph: TransformerGraph, receivers: str | Sequence[str], ports: Sequence[str]
) -> list[tuple[str, str]]:
    """(node, port) pairs; ``[("logits", "in")]`` for the output."""
    if isinstance(receivers, str):
        receivers = [receivers]
    names = list(dict.fromkeys(receivers))
    if not names:
        raise InputError("no receivers: give heads, MLPs (e.g. ['head.2.0', 'mlp.1']) or 'logits'")
    if "logits" in names:
        if len(names) > 1:
            raise InputError(
                "receivers='logits' (the direct effect on the output) cannot be combined with "
                "other receivers; run them as two path-patching experiments"
            )
        return [("logits", "in")]
    bad = [p for p in ports if p not in PORTS]
    if bad or not ports:
        raise InputError(f"receiver_ports must be a non-empty subset of {PORTS}, not {list(ports)}")
    out: list[tuple[str, str]] = []
    for r in names:
        if _node_kind(graph, r, "receiver") == "head":
            out.extend((r, p) for p in dict.fromkeys(ports))
        else:
            out.append((r, "in"))
    return out


def _input_site(graph: TransformerGraph, node: str, port: str) -> str:
    """The site holding a receiver port's input as the node reads it (after its norm)."""
    n = graph.node(node)
    assert n.layer is not None
    if n.kind == "mlp":
        return f"mlp_in.{n.layer}"
    assert n.head is not None
    head = n.head if port == "q" else n.head // (graph.n_heads // graph.n_kv)
    return f"{port}.{n.layer}.{head}"


def _sender_site(graph: TransformerGraph, node: str) -> str:
    n = graph.node(node)
    return node if n.kind == "head" else f"mlp_out.{n.layer}"


def _frozen(graph: TransformerGraph, kind: str, layer: int, last: int) -> list[str]:
    """The component outputs run A keeps at their base values: every one after the sender up to
    the last layer a receiver reads (the sender's own attention output excepted)."""
    out = []
    if kind == "head" and graph.has_mlp:
        out.append(f"mlp_out.{layer}")
    for L in range(layer + 1, last + 1):
        out.append(f"attn_out.{L}")
        if graph.has_mlp:
            out.append(f"mlp_out.{L}")
    return out


@validate.renamed_argument("task", "data")
@on_executor
def path_patch(
    model: Model,
    data: Task,
    senders: str | Sequence[str] = "head",
    receivers: str | Sequence[str] = "logits",
    *,
    receiver_ports: Sequence[str] = PORTS,
    positions: str = "all",
    receiver_positions: str = "all",
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
    """Path patching of each sender into ``receivers`` (see the module docstring).

    Args:
        senders: ``"head"`` (every head), ``"mlp"`` (every MLP) or node names (``"head.L.H"``,
            ``"mlp.L"``). From a group, senders with no direct edge into any receiver are
            skipped (listed in ``result.meta``); a named sender without one is an error.
        receivers: node names (``"head.L.H"``, ``"mlp.L"``), or ``"logits"`` for the senders'
            direct effect on the output.
        receiver_ports: which inputs of the receiving heads are patched: any of ``"q"``,
            ``"k"``, ``"v"``. In a grouped-query model a head's ``k`` and ``v`` inputs are its
            key/value head's, shared by the query heads of its group.
        positions: where the sender is patched: ``"all"`` positions or each example's metric
            position (``"last"``).
        receiver_positions: where the receivers' inputs are patched: ``"all"`` or ``"last"``.
        direction: ``"denoising"`` (clean sender into the corrupted run) or ``"noising"``.
        n_boot, level, seed: the bootstrap over examples.
        max_rows: deprecated (one release; use ``max_memory``): cap on batch rows per forward
            pass.
        progress: called as ``progress(done, total)`` after each pass.
        max_memory: bytes one forward pass may use (default: the configured memory budget).
        checkpoint: a folder where each finished chunk of examples is saved; a run killed as
            a whole and started again with the same folder (same model, data and arguments)
            computes only the chunks it had not finished, with the same result.
        executor: where the chunks run for this call: ``"ray"`` (a Ray executor built
            for the call), an :class:`~faithlens.executor.Executor`, or ``None`` (the one
            in force: :func:`faithlens.executor.executor`); the numbers do not change.

    Returns a :class:`PatchingResult` (``method="path"``) with one row per sender.
    """
    receiver_ports = _check(
        model,
        data,
        positions,
        receiver_positions,
        receiver_ports,
        direction,
        n_boot,
        level,
        seed,
        max_rows,
        max_memory,
    )
    graph = TransformerGraph(model)  # raises for models whose residual is not a sum (post-LN)
    pp = _plan(model, graph, senders, receivers, receiver_ports, positions, receiver_positions)
    data = data.to(model.device)
    row_cap = _row_cap(model, data, max_rows, max_memory)
    parts = data.parts()  # two for a multi-token task with wrong answers (Task.parts)
    plans = [
        [
            _Chunk(rows, truncated(model, part.subset(rows)))
            for rows in example_chunks(model, part, max(1, min(part.n, row_cap)))
        ]
        for part, _ in parts
    ]
    passes = 1 if pp.to_logits else 2
    total = sum(_n_passes(pp, c.sub, row_cap) * passes for chunks in plans for c in chunks)
    done = 0

    def tick() -> None:
        nonlocal done
        done += passes
        if progress is not None:
            progress(done, total)

    m_src, m_base, patched = summed_parts(
        parts,
        plans,
        lambda part, chunks, where: _part_runs(
            model, part, chunks, pp, direction, row_cap, tick, where
        ),
        checkpoint,
        (len(pp.kept), data.n),
    )
    est, note = effects("path_patch", patched, m_base, m_src, n_boot=n_boot, level=level, seed=seed)
    return _result(
        model, data, graph, pp, est, note, patched, m_base, m_src, direction, level, n_boot, seed
    )


def _check(
    model: Model,
    task: Task,
    positions: str,
    receiver_positions: str,
    receiver_ports: Sequence[str],
    direction: str,
    n_boot: int,
    level: float,
    seed: int,
    max_rows: int | None,
    max_memory: int | None = None,
) -> Sequence[str]:
    """Step 1: the argument checks, before any work; the receiver ports as a list."""
    require_tokens(task, "path_patch")
    check_arguments(
        "path_patch",
        task,
        positions,
        direction,
        model=model,
        n_boot=n_boot,
        level=level,
        seed=seed,
        max_rows=max_rows,
        position_modes=SENDER_POSITIONS,
        max_memory=max_memory,
        stacklevel=5,
        multi_token=True,
    )
    validate.choice("receiver_positions", receiver_positions, SENDER_POSITIONS)
    if task.is_multi_token and receiver_positions == "last":
        why = "a multi-token task's metric reads one position per answer token, none 'last'"
        raise validate.fail("receiver_positions", "last", why, 'use receiver_positions="all"')
    if isinstance(receiver_ports, str):
        receiver_ports = (
            list(receiver_ports) if set(receiver_ports) <= set(PORTS) else [receiver_ports]
        )
    return receiver_ports


@dataclass(frozen=True)
class _PathPlan:
    """What one path-patching experiment runs: the senders kept (those with a direct edge into
    a receiver) in groups that share their passes, the receivers, and the layers involved. It
    holds no model (nor the graph, which holds one), so it travels to workers."""

    kept: list[str]
    skipped: list[str]
    recv: list[tuple[str, str]]
    receiver_ports: Sequence[str]
    to_logits: bool
    groups: dict[tuple[int, str], list[str]]
    last_layer: int
    freeze_sites: list[str]
    resid_layers: list[int]
    positions: str
    receiver_positions: str


def _plan(
    model: Model,
    graph: TransformerGraph,
    senders: str | Sequence[str],
    receivers: str | Sequence[str],
    receiver_ports: Sequence[str],
    positions: str,
    receiver_positions: str,
) -> _PathPlan:
    """Step 2: the senders and receivers resolved, senders without an edge skipped (an error
    for named senders), the senders grouped by (layer, kind), and the sites the runs cache."""
    names, from_group = resolve_senders(graph, senders)
    recv = _resolve_receivers(graph, receivers, receiver_ports)
    to_logits = recv[0][0] == "logits"

    def reached(sender: str) -> list[tuple[str, str]]:
        return [(r, p) for r, p in recv if sender in graph.senders(r, p)]

    kept: list[str] = []
    skipped: list[str] = []
    for s in names:
        (kept if reached(s) else skipped).append(s)
    if skipped and not from_group:
        raise InputError(
            f"{skipped} have no direct edge into the receivers {sorted({r for r, _ in recv})}: "
            "a receiver must read the sender's output (a later layer, or the MLP after a head "
            "in the same layer of a sequential block)"
        )
    if not kept:
        raise InputError(f"no sender has a direct edge into the receivers {[r for r, _ in recv]}")
    # Senders that start at the same layer and are of one kind share their passes.
    groups: dict[tuple[int, str], list[str]] = {}
    for s in kept:
        node = graph.node(s)
        assert node.layer is not None
        groups.setdefault((node.layer, node.kind), []).append(s)
    last_layer = model.n_layers - 1 if to_logits else max(graph.node(r).layer or 0 for r, _ in recv)
    freeze_sites = sorted({f for (L, kind) in groups for f in _frozen(graph, kind, L, last_layer)})
    resid_layers = sorted(
        {L for (L, _) in groups} | {graph.node(r).layer or 0 for r, _ in recv if r != "logits"}
    )
    return _PathPlan(
        kept,
        skipped,
        recv,
        receiver_ports,
        to_logits,
        groups,
        last_layer,
        freeze_sites,
        resid_layers,
        positions,
        receiver_positions,
    )


@dataclass(frozen=True)
class _Chunk:
    """A chunk of examples: their indices in the task and the task's (truncated) slice."""

    rows: Tensor
    sub: Task


def _n_passes(pp: _PathPlan, sub: Task, row_cap: int) -> int:
    """The sender passes of one chunk (each one or two forward passes)."""
    return sum(-(-len(ss) // max(1, row_cap // sub.n)) for ss in pp.groups.values())


def _part_runs(
    model: Model,
    part: Task,
    chunks: list[_Chunk],
    pp: _PathPlan,
    direction: str,
    row_cap: int,
    tick: Callable[[], None],
    checkpoint: str | os.PathLike[str] | None,
) -> Any:
    """Every chunk's (source, base, patched) metrics of one part of the task, in order (each
    chunk a picklable work item that executors with workers send to one, by name)."""
    return resumable_chunks(
        model,
        _run_chunk,
        [c.sub for c in chunks],
        (pp, direction, row_cap),
        checkpoint=checkpoint,
        key=(
            "faithlens.path_patch",
            part.fingerprint(),
            pp,
            direction,
            row_cap,
            [c.rows for c in chunks],
        ),
        replay=[_n_passes(pp, c.sub, row_cap) for c in chunks],
        tick=tick,
    )


def _row_cap(model: Model, task: Task, max_rows: int | None, max_memory: int | None = None) -> int:
    """Step 3: batch rows per forward pass, from the executor (the memory budget)."""
    seq = task.seq_len
    item = torch.finfo(model.dtype).bits // 8
    return current_executor().chunk_size(
        None,
        row_bytes(model, seq, seq, item),
        device=model.device,
        max_memory=max_memory,
        tokens_per_item=seq,
        limit=max_rows,
    )


def _run_chunk(
    model: Model,
    sub: Task,
    pp: _PathPlan,
    direction: str,
    row_cap: int,
    tick: Callable[[], None],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step 4, for one chunk of examples: the source run (caching the senders' outputs), the
    base run (caching the frozen outputs and the residual streams), then every sender group's
    passes (``tick()`` after each). The chunk's source and base metrics ``[ne]`` and patched
    metrics ``[n_senders, ne]``. Module-level, of picklable arguments: a worker runs it on its
    own copy of the model (``Executor.map_model``)."""
    graph = TransformerGraph(model)
    base_in, src_in = (
        (sub.corrupt, sub.clean) if direction == "denoising" else (sub.clean, sub.corrupt)
    )
    ne = sub.n
    tokens, answers = answer_columns(model, sub, [])
    src_out = model.run(
        src_in,
        cache=sorted({_sender_site(graph, s) for s in pp.kept}),
        logits_at=sub.read_at,
        logit_tokens=tokens,
    )
    assert src_out.logits is not None
    m_src = sub.score(src_out.logits, answers).cpu().numpy()
    base_out = model.run(
        base_in,
        cache=[*pp.freeze_sites, *(f"resid_pre.{L}" for L in pp.resid_layers)],
        logits_at=sub.read_at,
        logit_tokens=tokens,
    )
    assert base_out.logits is not None
    m_base = sub.score(base_out.logits, answers).cpu().numpy()
    index = {s: i for i, s in enumerate(pp.kept)}
    patched = np.zeros((len(pp.kept), ne), dtype=np.float64)
    per_pass = max(1, row_cap // ne)
    for (layer, kind), members in pp.groups.items():
        frozen = _frozen(graph, kind, layer, pp.last_layer)
        targets = (
            []
            if pp.to_logits
            else [(r, p) for r, p in pp.recv if any(s in graph.senders(r, p) for s in members)]
        )
        for k in range(0, len(members), per_pass):
            batch = members[k : k + per_pass]
            vals = _run_senders(
                model,
                graph,
                sub,
                base_in,
                base_out,
                src_out,
                batch,
                layer,
                frozen,
                targets,
                pp.last_layer,
                pp.positions,
                pp.receiver_positions,
                tokens,
                answers,
            )
            patched[np.asarray([index[s] for s in batch])] = vals
            tick()
    del src_out, base_out
    return m_src, m_base, patched


def _result(
    model: Model,
    task: Task,
    graph: TransformerGraph,
    pp: _PathPlan,
    est: Any,
    note: str | None,
    patched: np.ndarray,
    m_base: np.ndarray,
    m_src: np.ndarray,
    direction: str,
    level: float,
    n_boot: int,
    seed: int,
) -> PatchingResult:
    """Step 5: one row per kept sender."""
    nodes = [graph.node(s) for s in pp.kept]
    return build_result(
        model,
        task,
        est,
        note,
        site=pp.kept,
        kind=[str(v.kind) for v in nodes],
        layer=[v.layer for v in nodes],
        head=[v.head for v in nodes],
        position=[None] * len(pp.kept),
        patched=patched,
        base=m_base,
        source=m_src,
        method="path",
        direction=direction,
        positions=pp.positions,
        level=level,
        n_boot=n_boot,
        seed=seed,
        meta={
            "receivers": sorted(
                {r for r, _ in pp.recv}, key=lambda r: (graph.node(r).layer or 0, r)
            ),
            "receiver_ports": [] if pp.to_logits else list(dict.fromkeys(pp.receiver_ports)),
            "receiver_positions": pp.receiver_positions,
            "senders_without_edge": pp.skipped,
        },
    )


def _run_senders(
    model: Model,
    graph: TransformerGraph,
    task: Task,
    base_in: Inputs,
    base_out: Any,
    src_out: Any,
    senders: list[str],
    layer: int,
    frozen: list[str],
    targets: list[tuple[str, str]],
    last_layer: int,
    positions: str,
    receiver_positions: str,
    tokens: Tensor | None,
    answers: Tensor,
) -> np.ndarray:
    """The metric per (sender, example) for senders of one layer and kind, stacked in blocks."""
    ne, c = task.n, len(senders)
    inputs = base_in.repeat(c)
    pos: Any = None if positions == "all" else task.positions
    ivs: list[Patch] = []
    for j, s in enumerate(senders):
        block = slice(j * ne, (j + 1) * ne)
        site = _sender_site(graph, s)
        ivs.append(Patch(Site(site, positions=pos), source=src_out.cache[site], rows=block))
        ivs.extend(Patch(f, source=base_out.cache[f], rows=block) for f in frozen)
    hidden = base_out.cache[f"resid_pre.{layer}"].repeat(c, 1, 1)
    start = Resume(layer=layer, hidden=hidden)
    reads = task.read_at  # [n], or [n, k] for a multi-token task
    logits_at = reads.repeat(c, *([1] * (reads.dim() - 1)))
    if not targets:  # receivers = logits: run A is the whole experiment
        out = model.run(inputs, ivs, start_at=start, logits_at=logits_at, logit_tokens=tokens)
    else:
        sites = sorted({_input_site(graph, r, p) for r, p in targets})
        run_a = model.run(
            inputs, ivs, start_at=start, cache=sites, stop_at=f"resid_post.{last_layer}"
        )
        rpos: Any = None if receiver_positions == "all" else logits_at
        first = min(graph.node(r).layer or 0 for r, _ in targets)
        hidden_b = base_out.cache[f"resid_pre.{first}"].repeat(c, 1, 1)
        out = model.run(
            inputs,
            [Patch(Site(s, positions=rpos), source=run_a.cache[s]) for s in sites],
            start_at=Resume(layer=first, hidden=hidden_b),
            logits_at=logits_at,
            logit_tokens=tokens,
        )
    assert out.logits is not None
    vals = task.score(out.logits, answers.repeat(c, 1))
    return vals.reshape(c, ne).double().cpu().numpy()


__all__ = ["path_patch", "resolve_senders"]
