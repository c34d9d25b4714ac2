"""Exact edge patching: every edge's effect, measured by patching that edge alone.

For an edge ``u->v`` (see :mod:`.edges`), the reader port ``v`` reads ``clean residual -
u(clean) + u(corrupt)`` and everything else runs on the clean input; the edge's value on an
example is ``m(patched) - m(clean)``. This is path patching (:func:`faithlens.path_patch`) of
one sender into one receiver port, in the noising direction, with nothing frozen: the reader's
change propagates through every later component.

How it runs (all through the run engine, on the clean run's cached residual streams):

- a head's query, key or value port: run A resumes at the reader's layer from the clean
  residual plus ``u``'s change, for a block of senders stacked in the batch, and stops once the
  layer's queries, keys and values are computed; run B resumes at the same layer from the clean
  residual with one port's projection patched from run A, for (sender, port) pairs stacked in
  the batch, and reads the metric;
- an MLP: one run resumes at its layer with ``u``'s change added to the input of the MLP's norm
  only (the residual stream itself is untouched), senders stacked in the batch;
- the logits: one run resumes after the last layer from the clean final residual plus ``u``'s
  change, senders stacked in the batch.

In a causal model, examples are grouped by metric position and cut after it, and chunk sizes
come from the executor's memory budget, as in :func:`faithlens.patch`.

``edges=`` scores only the edges named (the others are not run): on a model whose whole graph is
too large to patch edge by edge, the candidates a cheaper scorer ranks first can be measured
exactly; the result holds those rows only (``meta["subset"]``: how many of the graph's edges).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import validate
from ..executor import Executor, on_executor
from ..interventions import Add, Intervention, Patch
from ..models.model import Model
from ..progress import Progress
from ..runs import RunOutput
from ..tasks.base import Task
from ..tasks.metrics import Metric
from .common import (
    Measured,
    check_positions,
    circuit_names,
    deltas,
    mask_position,
    metric_values,
    score_edges,
    writer_sites,
)
from .edges import EdgeGraph, Reader
from .scores import Circuit, EdgeScores


@on_executor
def exact(
    model: Model,
    data: Task,
    *,
    metric: str | Metric | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    max_memory: int | None = None,
    progress: Progress | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    executor: str | Executor | None = None,
    positions: str = "all",
    edges: Circuit | Sequence[str] | None = None,
) -> EdgeScores:
    """Score every edge of ``model``'s edge graph by exact edge patching (module docstring).

    Args:
        model: a faithlens model whose residual stream is a sum of component outputs.
        data: a :class:`~faithlens.Task` (clean and corrupted prompts, answers, positions).
        metric: the metric to read (default: the task's own), e.g. ``"logit_diff"``.
        n_boot, level, seed: the bootstrap over examples.
        max_memory: bytes one forward pass may use (default: the configured memory budget).
        progress: called as ``progress(done, total)`` after each forward pass.
        checkpoint: a folder where each finished chunk of examples is saved; a run killed as
            a whole and started again with the same folder (same model, data and arguments)
            computes only the chunks it had not finished, with the same result.
        executor: where the chunks run for this call: ``"ray"`` (a Ray executor built
            for the call), an :class:`~faithlens.executor.Executor`, or ``None`` (the one
            in force: :func:`faithlens.executor.executor`); the numbers do not change.
        positions: ``"all"`` (an edge carries its writer's change at every position) or
            ``"each"``: one edge per (edge, token position), named ``"{edge}@{position}"``,
            carrying the change at that position only (a run per position: ``seq`` times the
            work).
        edges: score only these edges (names of whole edges, or a :class:`Circuit`, e.g.
            ``fl.circuits.eap(...).top_k(1000)``); the others are not run. Default: every edge.

    Returns an :class:`EdgeScores` (``method="exact"``) with one row per edge (per edge and
    position, edge-major, with ``positions="each"``), or per edge of ``edges`` (in the edge
    graph's order; ``meta["subset"]`` is their number).
    """
    each = check_positions(positions)
    only = _subset(model, edges)
    meta: dict[str, Any] = {"direction": "noising", "positions": positions}
    if only is not None:
        meta["subset"] = len(only)
    return score_edges(
        "circuits.exact",
        model,
        data,
        passes=lambda eg, sub, per_pass: _passes(eg, per_pass, only) * (sub.seq_len if each else 1),
        chunk=partial(_chunk, each=each, only=only),  # picklable: Ray workers receive it
        method="exact",
        meta=meta,
        each=each,
        select=None if only is None else sorted(only),
        metric=metric,
        n_boot=n_boot,
        level=level,
        seed=seed,
        max_memory=max_memory,
        progress=progress,
        checkpoint=checkpoint,
    )


def _subset(model: Model, edges: Circuit | Sequence[str] | None) -> frozenset[str] | None:
    """The edge names ``edges=`` asks for, checked against the model's edge graph (None: all)."""
    if edges is None:
        return None
    why = "name whole edges (positions='each' scores each of their positions)"
    names = circuit_names(EdgeGraph(model), edges, arg="edges", whole=why)
    if not names:
        raise validate.fail("edges", names, "is empty", "name at least one edge, or pass None")
    if len(set(names)) != len(names):
        raise validate.fail("edges", names, "names an edge twice", "list each edge once")
    return frozenset(names)


def _blocks(n: int, size: int) -> int:
    return -(-n // size)


def _layer_heads(eg: EdgeGraph, layer: int) -> list[Reader]:
    return [r for r in eg.readers if r.kind == "head" and r.layer == layer]


def _passes(eg: EdgeGraph, per_pass: int, only: frozenset[str] | None = None) -> int:
    """The forward passes one chunk runs (for progress); ``only``: the edges scored."""

    def wanted(name: str) -> bool:
        return only is None or name in only

    total = 0
    for r in eg.readers:
        if r.kind != "head":
            total += _blocks(sum(wanted(e.name) for e in eg.into(r)), per_pass)
    for L in range(eg.n_layers):
        heads = _layer_heads(eg, L)
        senders = _senders(eg, heads, only)
        for k in range(0, len(senders), per_pass):
            batch = senders[k : k + per_pass]
            pairs = sum(wanted(f"{w}->{r.name}") for r in heads for w in batch)
            total += 1 + _blocks(pairs, per_pass)
    return total


def _senders(eg: EdgeGraph, heads: list[Reader], only: frozenset[str] | None) -> list[str]:
    """The writers whose edges into a layer's head ports are scored."""
    writers = [e.writer.name for e in eg.into(heads[0])]
    if only is None:
        return writers
    return [w for w in writers if any(f"{w}->{r.name}" in only for r in heads)]


def _chunk(
    eg: EdgeGraph,
    sub: Task,
    row_cap: int,
    tick: Callable[[], None],
    *,
    each: bool = False,
    only: frozenset[str] | None = None,
) -> Measured:
    """Every edge's values on one chunk of examples (``[n_edges, n]``; with ``each``, per
    position ``[n_edges, seq, n]``: the edges measured once per position with each writer's
    change kept at that position only)."""
    model = eg.model
    resid = [*(f"resid_pre.{L}" for L in range(eg.n_layers)), eg.reader("logits").residual]
    clean = model.run(sub.clean, cache=[*writer_sites(eg), *resid], logits_at=sub.positions)
    corrupt = model.run(sub.corrupt, cache=writer_sites(eg), logits_at=sub.positions)
    m_clean = metric_values(sub, clean).double()
    m_corrupt = metric_values(sub, corrupt).double()
    change = deltas(eg, clean, corrupt)
    del corrupt
    if each:
        seq = sub.seq_len
        values = np.stack(
            [
                _values(eg, sub, clean, mask_position(change, p), m_clean, row_cap, tick, only)
                for p in range(seq)
            ],
            axis=1,
        )
    else:
        values = _values(eg, sub, clean, change, m_clean, row_cap, tick, only)
    return Measured(values, m_clean.cpu().numpy(), m_corrupt.cpu().numpy())


def _values(
    eg: EdgeGraph,
    sub: Task,
    clean: RunOutput,
    change: dict[str, Tensor],
    m_clean: Tensor,
    row_cap: int,
    tick: Callable[[], None],
    only: frozenset[str] | None = None,
) -> np.ndarray:
    """Every edge's value ``[n_edges, n]`` when it carries ``change`` of its writer (with
    ``only``, those edges' values; the other rows stay 0)."""
    g = eg.graph
    ne = sub.n
    index = {e.name: i for i, e in enumerate(eg.edges)}
    values = np.zeros((len(eg), ne), dtype=np.float64)
    per_pass = max(1, row_cap // ne)

    def run(layer: int, hidden: Tensor, ivs: list[Intervention], c: int) -> Tensor:
        out = g.run_from(
            layer, hidden, sub.clean.repeat(c), ivs, [], None, logits_at=sub.positions.repeat(c)
        )
        tick()
        vals = metric_values(sub, out, c).double().reshape(c, ne) - m_clean
        return vals

    def base(site: str, c: int) -> Tensor:
        return clean.cache[site].repeat(c, 1, 1)

    for L in range(eg.n_layers):
        heads = _layer_heads(eg, L)
        senders = _senders(eg, heads, only)
        for k in range(0, len(senders), per_pass):
            batch = senders[k : k + per_pass]
            c = len(batch)
            hidden = base(f"resid_pre.{L}", c) + torch.cat([change[w] for w in batch])
            sites = [r.site for r in heads if r.site is not None]
            a = g.run_from(L, hidden, sub.clean.repeat(c), [], sites, f"head.{L}.0")
            tick()
            pairs = [
                (j, r)
                for r in heads
                for j in range(c)
                if only is None or f"{batch[j]}->{r.name}" in only
            ]
            for p in range(0, len(pairs), per_pass):
                part = pairs[p : p + per_pass]
                ivs: list[Intervention] = []
                for i, (j, r) in enumerate(part):
                    assert r.site is not None
                    src = a.cache[r.site][j * ne : (j + 1) * ne]
                    ivs.append(Patch(r.site, source=src, rows=slice(i * ne, (i + 1) * ne)))
                vals = run(L, base(f"resid_pre.{L}", len(part)), ivs, len(part))
                for i, (j, r) in enumerate(part):
                    values[index[f"{batch[j]}->{r.name}"]] = vals[i].cpu().numpy()
        for r in eg.readers:
            if r.kind == "mlp" and r.layer == L:
                _added(eg, r, change, values, index, per_pass, run, base, only)
    out_reader = eg.reader("logits")
    _added(eg, out_reader, change, values, index, per_pass, run, base, only)
    return values


def _added(
    eg: EdgeGraph,
    r: Reader,
    change: dict[str, Tensor],
    values: np.ndarray,
    index: dict[str, int],
    per_pass: int,
    run: Callable[[int, Tensor, list[Intervention], int], Tensor],
    base: Callable[[str, int], Tensor],
    only: frozenset[str] | None = None,
) -> None:
    """Edges into an MLP (the change added to its norm's input) or into the logits (added to
    the final residual), senders stacked in the batch."""
    edges = [e for e in eg.into(r) if only is None or e.name in only]
    g = eg.graph
    for k in range(0, len(edges), per_pass):
        batch = edges[k : k + per_pass]
        c = len(batch)
        vec = torch.cat([change[e.writer.name] for e in batch])
        if r.kind == "logits":
            vals = run(g.n_layers, base(r.residual, c) + vec, [], c)
        else:
            assert r.layer is not None
            add = Add(g.mlp_norm_input[r.layer], vector=vec)
            vals = run(r.layer, base(f"resid_pre.{r.layer}", c), [add], c)
        for i, e in enumerate(batch):
            values[index[e.name]] = vals[i].cpu().numpy()


__all__ = ["exact"]
