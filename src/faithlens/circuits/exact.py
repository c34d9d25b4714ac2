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
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from torch import Tensor

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
    deltas,
    mask_position,
    metric_values,
    score_edges,
    writer_sites,
)
from .edges import EdgeGraph, Reader
from .scores import EdgeScores


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

    Returns an :class:`EdgeScores` (``method="exact"``) with one row per edge (per edge and
    position, edge-major, with ``positions="each"``).
    """
    each = check_positions(positions)
    return score_edges(
        "circuits.exact",
        model,
        data,
        passes=lambda eg, sub, per_pass: _passes(eg, per_pass) * (sub.seq_len if each else 1),
        chunk=partial(_chunk, each=each),  # picklable: Ray workers receive it
        method="exact",
        meta={"direction": "noising", "positions": positions},
        each=each,
        metric=metric,
        n_boot=n_boot,
        level=level,
        seed=seed,
        max_memory=max_memory,
        progress=progress,
        checkpoint=checkpoint,
    )


def _blocks(n: int, size: int) -> int:
    return -(-n // size)


def _layer_heads(eg: EdgeGraph, layer: int) -> list[Reader]:
    return [r for r in eg.readers if r.kind == "head" and r.layer == layer]


def _passes(eg: EdgeGraph, per_pass: int) -> int:
    """The forward passes one chunk runs (for progress)."""
    total = 0
    for r in eg.readers:
        if r.kind != "head":
            total += _blocks(len(eg.into(r)), per_pass)
    for L in range(eg.n_layers):
        heads = _layer_heads(eg, L)
        senders = len(eg.into(heads[0]))
        for k in range(0, senders, per_pass):
            c = min(per_pass, senders - k)
            total += 1 + _blocks(c * len(heads), per_pass)
    return total


def _chunk(
    eg: EdgeGraph, sub: Task, row_cap: int, tick: Callable[[], None], *, each: bool = False
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
                _values(eg, sub, clean, mask_position(change, p), m_clean, row_cap, tick)
                for p in range(seq)
            ],
            axis=1,
        )
    else:
        values = _values(eg, sub, clean, change, m_clean, row_cap, tick)
    return Measured(values, m_clean.cpu().numpy(), m_corrupt.cpu().numpy())


def _values(
    eg: EdgeGraph,
    sub: Task,
    clean: RunOutput,
    change: dict[str, Tensor],
    m_clean: Tensor,
    row_cap: int,
    tick: Callable[[], None],
) -> np.ndarray:
    """Every edge's value ``[n_edges, n]`` when it carries ``change`` of its writer."""
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
        senders = [e.writer for e in eg.into(heads[0])]
        for k in range(0, len(senders), per_pass):
            batch = senders[k : k + per_pass]
            c = len(batch)
            hidden = base(f"resid_pre.{L}", c) + torch.cat([change[w.name] for w in batch])
            sites = [r.site for r in heads if r.site is not None]
            a = g.run_from(L, hidden, sub.clean.repeat(c), [], sites, f"head.{L}.0")
            tick()
            pairs = [(j, r) for r in heads for j in range(c)]
            for p in range(0, len(pairs), per_pass):
                part = pairs[p : p + per_pass]
                ivs: list[Intervention] = []
                for i, (j, r) in enumerate(part):
                    assert r.site is not None
                    src = a.cache[r.site][j * ne : (j + 1) * ne]
                    ivs.append(Patch(r.site, source=src, rows=slice(i * ne, (i + 1) * ne)))
                vals = run(L, base(f"resid_pre.{L}", len(part)), ivs, len(part))
                for i, (j, r) in enumerate(part):
                    values[index[f"{batch[j].name}->{r.name}"]] = vals[i].cpu().numpy()
        for r in eg.readers:
            if r.kind == "mlp" and r.layer == L:
                _added(eg, r, change, values, index, per_pass, run, base)
    out_reader = eg.reader("logits")
    _added(eg, out_reader, change, values, index, per_pass, run, base)
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
) -> None:
    """Edges into an MLP (the change added to its norm's input) or into the logits (added to
    the final residual), senders stacked in the batch."""
    edges = eg.into(r)
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
