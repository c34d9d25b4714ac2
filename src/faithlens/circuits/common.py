"""What the edge scorers share: argument checks, chunks of examples, the clean and corrupted
runs, each writer's change as a residual-stream vector, and the one builder of
:class:`~faithlens.circuits.scores.EdgeScores`.

Every scorer measures an edge in the **noising** direction, as EAP and MIB do: the clean run is
the base, and an edge ``u->v`` carries the corrupted input's ``u`` into ``v`` (``v`` reads
``clean residual - u(clean) + u(corrupt)``; everything else stays clean). An edge's per-example
value is ``m(edge corrupted) - m(clean)`` (exact patching) or its first-order estimate (EAP).
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import validate
from ..errors import InputError
from ..executor import current_executor
from ..fingerprint import data_fingerprint, model_fingerprint
from ..models.model import Model
from ..patching.sweep import ChunkStore, check_arguments, example_chunks, row_bytes, truncated
from ..progress import Progress
from ..runs import RunOutput
from ..stats import mean_interval
from ..tasks.base import Task
from ..tasks.metrics import Metric
from ..tasks.tensors import require_tokens
from .edges import EdgeGraph, Writer, split_position
from .scores import Circuit, EdgeScores


def prepare(
    fn: str,
    model: Model,
    data: Any,
    metric: str | Metric | None,
    n_boot: Any,
    level: Any,
    seed: Any,
    max_memory: Any,
) -> tuple[Task, EdgeGraph]:
    """The argument checks every scorer makes before any work (model, task, n_boot, level,
    seed, max_memory, a non-degenerate task), the task with its metric, and the edge graph."""
    if isinstance(data, Task):
        require_tokens(data, fn)  # edges run per token position
    check_arguments(
        fn,
        data,
        "all",
        "noising",
        model=model,
        n_boot=n_boot,
        level=level,
        seed=seed,
        max_memory=max_memory,
    )
    task: Task = data if metric is None else data.with_metric(metric)
    return task.to(model.device), EdgeGraph(model)


def chunks(
    model: Model, task: Task, max_memory: int | None
) -> tuple[list[tuple[Tensor, Task]], int]:
    """The chunks of examples (grouped by metric position and cut after it in a causal model)
    and the batch rows one forward pass may hold (from the executor's memory budget)."""
    seq = task.seq_len
    item = torch.finfo(model.dtype).bits // 8
    row_cap = current_executor().chunk_size(
        None,
        row_bytes(model, seq, seq, item),
        device=model.device,
        max_memory=max_memory,
        tokens_per_item=seq,
    )
    size = max(1, min(task.n, row_cap))
    return [
        (rows, truncated(model, task.subset(rows))) for rows in example_chunks(model, task, size)
    ], row_cap


def writer_sites(eg: EdgeGraph) -> list[str]:
    return sorted({w.site for w in eg.writers})


def contribution(eg: EdgeGraph, w: Writer, out: RunOutput) -> Tensor:
    """A writer's output as the residual stream receives it (a head through its slice of the
    output projection, without the bias)."""
    return eg.graph.contribution_of(eg.graph.node(w.node), out.cache[w.site])


def deltas(eg: EdgeGraph, clean: RunOutput, corrupt: RunOutput) -> dict[str, Tensor]:
    """Each writer's change ``u(corrupt) - u(clean)`` in the residual stream, by writer name."""
    return {w.name: contribution(eg, w, corrupt) - contribution(eg, w, clean) for w in eg.writers}


def metric_values(task: Task, out: RunOutput, repeat: int = 1) -> Tensor:
    """The task's metric per row of a run whose logits were read at the task's positions."""
    assert out.logits is not None
    return task.metric(out.logits[:, 0], task.answers.repeat(repeat, 1))


@dataclass(frozen=True)
class Measured:
    """Per-example values of every edge ``[n_edges, n]`` and the clean and corrupted metric."""

    values: np.ndarray
    clean: np.ndarray
    corrupt: np.ndarray


#: What an edge scorer's ``positions=`` takes: ``"all"`` (an edge's change at every position at
#: once, one row per edge) or ``"each"`` (one row per edge and token position).
POSITIONS = ("all", "each")


def check_positions(positions: Any) -> bool:
    """Whether ``positions`` asks for per-position edges (``"each"``); refuses anything else."""
    validate.choice("positions", positions, POSITIONS)
    return bool(positions == "each")


def position_name(edge: str, position: int) -> str:
    """A per-position edge's name: MIB's edge name and the token position (``"a0.h1->m1@3"``)."""
    return f"{edge}@{position}"


def circuit_names(
    eg: EdgeGraph,
    circuit: Circuit | Sequence[str],
    *,
    arg: str = "circuit",
    seq: int | None = None,
    whole: str | None = None,
) -> list[str]:
    """The edge names of ``circuit`` (a :class:`Circuit` or names; argument ``arg`` in errors),
    checked against ``eg`` before any work: whole edges, or per-position edges ``"edge@p"``
    with ``p`` below ``seq`` (the task's length, when given). With ``whole`` (why), per-position
    edges are refused with that reason."""
    names = list(circuit.edges) if isinstance(circuit, Circuit) else circuit
    if isinstance(names, str) or not all(isinstance(e, str) for e in names):
        raise validate.fail(
            arg,
            names,
            "must be a Circuit or a list of edge names",
            "pass scores.top_k(k) or ['a0.h1->logits', ...]",
        )
    for e in names:
        edge, pos = split_position(e)
        if pos is not None and whole is not None:
            raise InputError(
                f"{arg}: {e!r} is a per-position edge (positions='each'): {whole}; choose "
                "whole edges (scores with positions='all')"
            )
        eg.index(edge)  # unknown names raise with examples
        if pos is not None and seq is not None and pos >= seq:
            raise validate.fail(
                arg,
                e,
                f"names token position {pos}, but the task's prompts have {seq} tokens",
                f"use positions 0 to {seq - 1} (scores from this task with positions='each')",
            )
    return list(names)


def mask_position(change: dict[str, Tensor], position: int) -> dict[str, Tensor]:
    """Each writer's change kept at one token position only (zero elsewhere)."""
    out = {}
    for name, d in change.items():
        m = torch.zeros_like(d)
        m[:, position] = d[:, position]
        out[name] = m
    return out


def build_scores(
    eg: EdgeGraph,
    task: Task,
    measured: Measured,
    *,
    method: str,
    n_boot: int,
    level: float,
    seed: int,
    meta: dict[str, Any],
    select: Sequence[str] | None = None,
) -> EdgeScores:
    """The :class:`EdgeScores` of a scorer: each edge's mean value over examples with its
    bootstrap interval. Per-position values ``[n_edges, seq, n]`` give one row per edge and
    position (edge-major: ``e@0, e@1, ...``). With ``select`` (edge names), those edges' rows
    only (in graph order)."""
    values = measured.values
    edges = eg.edges
    if select is not None:
        rows = sorted(eg.index(e) for e in select)
        edges = [edges[i] for i in rows]
        values = values[rows]
    names = [e.name for e in edges]
    writers = [e.writer.name for e in edges]
    readers = [e.reader.name for e in edges]
    if values.ndim == 3:
        seq = values.shape[1]
        names = [position_name(e, p) for e in names for p in range(seq)]
        writers = [w for w in writers for _ in range(seq)]
        readers = [r for r in readers for _ in range(seq)]
        values = values.reshape(len(edges) * seq, values.shape[2])
    est = mean_interval(values, n_boot=n_boot, level=level, seed=seed)
    return EdgeScores(
        edge=names,
        writer=writers,
        reader=readers,
        score=np.asarray(est.estimate, dtype=np.float64),
        score_se=np.asarray(est.se, dtype=np.float64),
        score_ci_low=np.asarray(est.low, dtype=np.float64),
        score_ci_high=np.asarray(est.high, dtype=np.float64),
        values=values,
        clean=measured.clean,
        corrupt=measured.corrupt,
        method=method,
        metric=task.metric.name,
        model=eg.model.name,
        task=task.name,
        level=level,
        n_boot=n_boot,
        seed=seed,
        meta=meta,
    )


def gather(
    n: int, n_edges: int, parts: Sequence[tuple[Tensor, Measured]], seq: int | None = None
) -> Measured:
    """Chunks' measurements put back in example order. With ``seq`` the values are per
    position (``[n_edges, chunk seq, n]``, a chunk cut after its last metric position) and are
    gathered into ``[n_edges, seq, n]``: the positions a chunk does not hold are 0 (in a causal
    model they cannot change the metric)."""
    shape = (n_edges, n) if seq is None else (n_edges, seq, n)
    values = np.zeros(shape, dtype=np.float64)
    clean, corrupt = np.zeros(n), np.zeros(n)
    for rows, m in parts:
        cols = rows.cpu().numpy()
        if seq is None:
            values[:, cols] = m.values
        else:
            values[:, : m.values.shape[1], cols] = m.values
        clean[cols] = m.clean
        corrupt[cols] = m.corrupt
    return Measured(values, clean, corrupt)


#: ``passes(eg, sub, rows_per_pass)``: the forward/backward passes one chunk of examples takes
#: (for the progress total); ``chunk(eg, sub, row_cap, tick)``: its per-example edge values.
Passes = Callable[[EdgeGraph, Task, int], int]
ChunkFn = Callable[[EdgeGraph, Task, int, Callable[[], None]], Measured]


def score_edges(
    name: str,
    model: Model,
    data: Task,
    *,
    passes: Passes,
    chunk: ChunkFn,
    method: str,
    meta: dict[str, Any],
    metric: str | Metric | None,
    n_boot: int,
    level: float,
    seed: int,
    max_memory: int | None,
    progress: Progress | None,
    context: Callable[[Model], AbstractContextManager[Any]] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    each: bool = False,
    select: Sequence[str] | None = None,
) -> EdgeScores:
    """What every edge scorer does around its own per-chunk work: check the arguments
    (``name`` in errors), split the examples into chunks, run ``chunk`` on each through the
    executor (inside ``context(model)`` if given, e.g. frozen parameters), count progress by
    ``passes``, and gather the values into an :class:`EdgeScores` with a bootstrap over
    examples. Each chunk of examples is a work item of :meth:`Executor.map_model`
    (:func:`run_chunk`): an executor with workers runs it on a worker's own copy of the model,
    so ``chunk`` and ``context`` must be module-level functions (or partials of them). With
    ``checkpoint`` (a folder), each finished chunk is saved there and a killed run started again
    with the same folder computes only the others (:func:`measure_chunks`). With ``each``,
    ``chunk`` returns per-position values ``[n_edges, seq, n]`` (scores per edge and position).
    With ``select`` (edge names) the scores hold those edges' rows only, in graph order."""
    task, eg = prepare(name, model, data, metric, n_boot, level, seed, max_memory)
    parts, row_cap = chunks(model, task, max_memory)
    total = sum(passes(eg, sub, max(1, row_cap // sub.n)) for _, sub in parts)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    keep_graph(eg)
    work = (chunk, row_cap, context)
    if checkpoint is None:
        subs = [sub for _, sub in parts]
        measured = list(current_executor().map_model(model, run_chunk, subs, *work, tick=tick))
    else:
        key: tuple[Any, ...] = (name, method, meta, task.metric.name, row_cap)
        key = (*key, [rows for rows, _ in parts])
        if select is not None:  # another subset's folder is refused
            key = (*key, sorted(select))
        replay = [passes(eg, sub, max(1, row_cap // sub.n)) for _, sub in parts]
        measured = measure_chunks(model, task, parts, work, key, replay, tick, checkpoint)
    out = gather(
        task.n,
        len(eg),
        [(rows, m) for (rows, _), m in zip(parts, measured)],
        task.seq_len if each else None,
    )
    return build_scores(
        eg,
        task,
        out,
        method=method,
        n_boot=n_boot,
        level=level,
        seed=seed,
        meta=meta,
        select=select,
    )


def measure_chunks(
    model: Model,
    task: Task,
    parts: list[tuple[Tensor, Task]],
    work: tuple[ChunkFn, int, Callable[[Model], AbstractContextManager[Any]] | None],
    key: tuple[Any, ...],
    replay: list[int],
    tick: Callable[[], None],
    checkpoint: str | os.PathLike[str],
) -> list[Measured]:
    """Every chunk's :class:`Measured`, with a checkpoint folder: the chunks a killed run
    finished are read back (``replay[i]`` progress steps each, replayed first), the others run
    through the executor and are saved as each finishes. The folder is keyed on the model's
    weights and dtype, the task and ``key`` (the scorer, its options and the chunk plan); another
    run's folder is refused."""
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise validate.fail(
            "checkpoint", checkpoint, "must be a folder path", "give a str or a pathlib.Path"
        )
    store = ChunkStore(
        checkpoint,
        data_fingerprint(
            *key, model_fingerprint(model.module), str(model.dtype), task.fingerprint()
        ),
    )
    saved = [store.load(i) for i in range(len(parts))]
    for s, steps in zip(saved, replay):
        for _ in range(steps if s is not None else 0):
            tick()
    todo = [sub for (_, sub), s in zip(parts, saved) if s is None]
    fresh = current_executor().map_model(model, run_chunk, todo, *work, tick=tick)
    out: list[Measured] = []
    for i, s in enumerate(saved):
        if s is None:
            m = next(fresh)
            store.save(i, values=m.values, clean=m.clean, corrupt=m.corrupt)
            out.append(m)
        else:
            out.append(Measured(s["values"], s["clean"], s["corrupt"]))
    return out


_GRAPHS: weakref.WeakKeyDictionary[Model, EdgeGraph] = weakref.WeakKeyDictionary()


def keep_graph(eg: EdgeGraph) -> None:
    """Let the work items of ``eg``'s model in this process use ``eg`` (:func:`edge_graph`)."""
    _GRAPHS[eg.model] = eg


def edge_graph(model: Model) -> EdgeGraph:
    """The edge graph of ``model``, built once per model and kept (a worker's work items share
    it)."""
    eg = _GRAPHS.get(model)
    if eg is None:
        eg = _GRAPHS[model] = EdgeGraph(model)
    return eg


def run_chunk(
    model: Model,
    sub: Task,
    chunk: ChunkFn,
    row_cap: int,
    context: Callable[[Model], AbstractContextManager[Any]] | None,
    tick: Callable[[], None],
) -> Measured:
    """One chunk of examples' edge values: ``chunk(EdgeGraph(model), sub, row_cap, tick)``
    inside ``context(model)`` (the work item :func:`score_edges` hands the executor; a worker
    builds the edge graph of its own model once and keeps it)."""
    eg = edge_graph(model)
    with context(model) if context is not None else nullcontext():
        return chunk(eg, sub, row_cap, tick)


__all__ = [
    "POSITIONS",
    "ChunkFn",
    "Measured",
    "Passes",
    "build_scores",
    "check_positions",
    "chunks",
    "circuit_names",
    "contribution",
    "deltas",
    "edge_graph",
    "gather",
    "keep_graph",
    "mask_position",
    "measure_chunks",
    "metric_values",
    "position_name",
    "prepare",
    "run_chunk",
    "score_edges",
    "writer_sites",
]
