"""ACDC (Conmy et al. 2023): greedy pruning of the edge graph from the logits backwards.

Start from the whole edge graph (the clean run). Visit the reader ports from the logits
backwards (``EdgeGraph.readers`` reversed: the logits, the last MLP, the last layer's value,
key and query ports, ...) and, for each port, its edges from the latest writer to the earliest.
Remove the edge (it carries its writer's output on the corrupted input, as the edges outside a
circuit do in :func:`faithlens.circuits.faithfulness`) and measure the objective against the
circuit before the removal:

- ``objective="kl"`` (ACDC's default): the mean over examples of ``KL(clean || circuit)`` of the
  next-token distributions at the metric position; the edge is removed for good when the KL
  rises by less than ``tau``;
- ``objective="metric"``: the task metric; the edge is removed when the metric (mean over
  examples) drops by less than ``tau`` (a rise always removes it).

A port whose component has lost every outgoing edge (a head or MLP whose output no kept edge
reads) has all its edges removed without a run: nothing downstream reads what they change, so
their effect is exactly 0 (ACDC never visits such a node either).

How it runs: every circuit ACDC measures differs from the clean run only in edges into ports at
or after the port being visited, so each run resumes at that port's layer from the clean run's
cached residual stream and goes layer by layer as :func:`faithfulness` does (the layer's ports
computed from their shifted residuals, the heads with those projections patched, the layer with
the MLP's input shifted, the unembedding from the shifted final residual). Candidate circuits
are stacked in the batch *speculatively*: row ``i`` removes the port's next ``i + 1`` edges on
top of the current circuit (the outcome if every one of them is removed); the rows are read in
order until an edge is kept, and the rows after it are measured again. This is exactly the
sequential greedy algorithm, with one batched run per kept edge (and per port).

With ``positions="each"`` the units pruned are per-position edges (``"u->v@p"``: the writer's
contribution to the port at token position ``p`` alone, as
:func:`faithlens.circuits.faithfulness` runs them), visited port by port and edge by edge as
above and, within an edge, from the last position to the first; a position that no chunk of
examples holds (after every metric position, in a causal model) is removed without a run (its
effect is exactly 0).

The result is an :class:`EdgeScores` (``method="acdc"``): an edge's per-example value is the
change of the objective (``kl``: the KL divergence, ``metric``: the task metric) when it was
removed, in the circuit of that moment; ``meta["kept"]`` lists the kept edges
(:meth:`EdgeScores.kept` returns them as a :class:`Circuit`). The bootstrap intervals are over
examples with the greedy decisions held fixed.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .. import validate
from ..interventions import Add, Intervention, Patch
from ..models.model import Model
from ..progress import Progress
from ..tasks.base import Task
from ..tasks.metrics import Metric
from .common import (
    Measured,
    build_scores,
    check_positions,
    chunks,
    contribution,
    metric_values,
    position_name,
    prepare,
    writer_sites,
)
from .edges import EdgeGraph, Reader
from .nodes import NodeScores, build_node_scores
from .scores import EdgeScores

OBJECTIVES = ("kl", "metric")


@dataclass
class _Chunk:
    """What the resumed runs of one chunk of examples share (from its clean and corrupted
    runs)."""

    sub: Task
    resid: list[Tensor]  # the clean residual entering each layer, then the final residual
    ablated: dict[str, Tensor]  # each writer's output on the corrupted input
    early: Tensor  # each writer's clean output minus its ablated output [writers, n, seq, d]
    logp_clean: Tensor  # clean log-probabilities at the metric position [n, vocab]
    m_clean: Tensor
    m_corrupt: Tensor


def _prepare_chunk(eg: EdgeGraph, sub: Task) -> _Chunk:
    model = eg.model
    resid = [*(f"resid_pre.{L}" for L in range(eg.n_layers)), eg.reader("logits").residual]
    sites = writer_sites(eg)
    clean = model.run(sub.clean, cache=[*sites, *resid], logits_at=sub.positions)
    corrupt = model.run(sub.corrupt, cache=sites, logits_at=sub.positions)
    ablated = {w.name: contribution(eg, w, corrupt) for w in eg.writers}
    early = torch.stack([contribution(eg, w, clean) - ablated[w.name] for w in eg.writers])
    assert clean.logits is not None
    return _Chunk(
        sub,
        [clean.cache[s] for s in resid],
        ablated,
        early,
        torch.log_softmax(clean.logits[:, 0].double(), -1),
        metric_values(sub, clean).double(),
        metric_values(sub, corrupt).double(),
    )


def run_rows(
    eg: EdgeGraph, ch: _Chunk, start: int, removed: Tensor, row_cap: int
) -> tuple[Tensor, Tensor]:
    """The task metric ``[c, n]`` and ``KL(clean || circuit)`` ``[c, n]`` of ``c`` circuits
    (``removed [c, n_edges]``, True for an edge outside the circuit; ``[c, n_edges, seq]`` per
    position) that differ from the clean run only in edges into ports at layer ``start`` or
    later (``n_layers``: only the logits')."""
    g, sub = eg.graph, ch.sub
    c, ne = removed.shape[0], sub.n
    inputs = sub.clean.repeat(c)
    rm = removed.to(ch.resid[0].device, ch.resid[0].dtype)
    if rm.dim() == 3:  # per position: the positions this chunk holds
        rm = rm[:, :, : sub.seq_len]
    index = _index(eg)
    # the writers recomputed in this run (at layer ``start`` or later), in the order computed:
    # their positions among the writers, and their changes [k, c, n, seq, d] in one store
    fresh = _Fresh(eg, index.writer_at, start, c, ch.early)
    tail = "s" if rm.dim() == 3 else ""  # per position: the masks have a position axis

    def shifts(readers: list[Reader]) -> list[Tensor | None]:
        """For each reader port, ``-sum`` over its edges outside each circuit of the writer's
        change ``[c, n, seq, d]`` (None: no such edge), all ports at once: one product with the
        changes of the writers computed before ``start`` (their clean-run changes, the same in
        every row) and one with those computed in this run, each change read once."""
        masks = []
        for r in readers:
            edge_cols, writer_pos = index.ports[r.name]
            full = rm.new_zeros((c, len(eg.writers), *rm.shape[2:]))
            full[:, writer_pos] = rm[:, edge_cols]
            masks.append(full)
        m = torch.stack(masks)  # [ports, c, writers(, seq)]
        live = m.flatten(1).any(1).tolist()
        if not any(live):
            return [None] * len(readers)
        early = m.clone()
        early[:, :, fresh.pos] = 0
        if bool((early == early[:, :1]).all()):  # the same in every row: one product
            one = torch.einsum(f"pw{tail},wnsd->pnsd", early[:, 0], ch.early)
            out = one.unsqueeze(1).expand(-1, c, -1, -1, -1)
        else:
            out = torch.einsum(f"pcw{tail},wnsd->pcnsd", early, ch.early)
        part = m[:, :, fresh.pos]  # [ports, c, k(, seq)]
        if bool(part.any()):  # an edge out of a writer recomputed in this run is removed
            store = fresh.store[: fresh.k]
            if bool((part == part[:, :1]).all()):  # the same in every row
                out = out + torch.einsum(f"pk{tail},kcnsd->pcnsd", part[:, 0], store)
            else:
                out = out + torch.einsum(f"pck{tail},kcnsd->pcnsd", part, store)
        return [-out[i] if live[i] else None for i in range(len(readers))]

    def rows(t: Tensor) -> Tensor:
        return t.reshape(c * ne, *t.shape[2:])

    hidden = ch.resid[start].unsqueeze(0).expand(c, *ch.resid[start].shape)
    for L in range(start, eg.n_layers):
        ports = [r for r in eg.readers if r.kind == "head" and r.layer == L]
        shifted = [(r, s) for r, s in zip(ports, shifts(ports)) if s is not None]
        patches: list[Intervention] = []
        step = max(1, row_cap // (c * ne))
        for k in range(0, len(shifted), step):
            part = shifted[k : k + step]
            x = torch.cat([rows(hidden + s) for _, s in part])
            sites = [r.site for r, _ in part if r.site is not None]
            a = g.run_from(L, x, inputs.repeat(len(part)), [], sites, f"head.{L}.0")
            for i, (r, _) in enumerate(part):
                assert r.site is not None
                src = a.cache[r.site][i * c * ne : (i + 1) * c * ne]
                patches.append(Patch(r.site, source=src))
        flat = rows(hidden)
        heads = [w for w in eg.writers if w.kind == "head" and w.layer == L]
        if patches or start < L:  # the heads read a changed port, or a changed stream
            b = g.run_from(L, flat, inputs, patches, [w.site for w in heads], f"attn_out.{L}")
            changes = []
            for w in heads:
                out = contribution(eg, w, b)
                changes.append(out.reshape(c, ne, *out.shape[1:]) - ch.ablated[w.name])
            fresh.add([w.name for w in heads], torch.stack(changes))
        mlp = [r for r in eg.readers if r.kind == "mlp" and r.layer == L]
        ivs = list(patches)
        if mlp and (s := shifts(mlp[:1])[0]) is not None:
            ivs.append(Add(g.mlp_norm_input[L], vector=rows(s)))
        cache = [f"resid_post.{L}", *([f"mlp_out.{L}"] if mlp else [])]
        run = g.run_from(L, flat, inputs, ivs, cache, f"resid_post.{L}")
        if mlp:
            out = run.cache[f"mlp_out.{L}"]
            change = out.reshape(c, ne, *out.shape[1:]) - ch.ablated[f"m{L}"]
            fresh.add([f"m{L}"], change.unsqueeze(0))
        post = run.cache[f"resid_post.{L}"]
        hidden = post.reshape(c, ne, *post.shape[1:])
    s = shifts([eg.reader("logits")])[0]
    final = hidden if s is None else hidden + s
    last = g.run_from(
        eg.n_layers, rows(final), inputs, [], [], None, logits_at=sub.positions.repeat(c)
    )
    assert last.logits is not None
    logits = last.logits[:, 0]
    m = metric_values(sub, last, c).double().reshape(c, ne)
    logp = torch.log_softmax(logits.double(), -1).reshape(c, ne, -1)
    kl = (ch.logp_clean.exp() * (ch.logp_clean - logp)).sum(-1)
    return m, kl


@dataclass(frozen=True)
class _Index:
    """Where a run finds an edge graph's pieces: for each reader port, its edges' columns in
    the edge order and their writers' positions in ``eg.writers``; each writer's position."""

    ports: dict[str, tuple[Tensor, Tensor]]
    writer_at: dict[str, int]


def _index(eg: EdgeGraph) -> _Index:
    """The graph's :class:`_Index` (computed once per graph)."""
    cached = _INDEX.get(eg)
    if cached is None:
        edge_at = {e.name: i for i, e in enumerate(eg.edges)}
        writer_at = {w.name: i for i, w in enumerate(eg.writers)}
        ports = {
            r.name: (
                torch.tensor([edge_at[e.name] for e in eg.into(r)], dtype=torch.long),
                torch.tensor([writer_at[e.writer.name] for e in eg.into(r)], dtype=torch.long),
            )
            for r in eg.readers
        }
        cached = _INDEX[eg] = _Index(ports, writer_at)
    return cached


_INDEX: weakref.WeakKeyDictionary[EdgeGraph, _Index] = weakref.WeakKeyDictionary()


class _Fresh:
    """The changes of the writers one run recomputes (at layer ``start`` or later), kept in
    one preallocated store ``[k, c, n, seq, d]`` (``like``: the clean changes ``[writers, n,
    seq, d]``) in the order computed, with their positions among ``eg.writers`` (``pos``)."""

    def __init__(
        self, eg: EdgeGraph, writer_at: dict[str, int], start: int, c: int, like: Tensor
    ) -> None:
        self.writer_at = writer_at
        most = sum(1 for w in eg.writers if w.layer is not None and w.layer >= start)
        self.store = like.new_empty((most, c, *like.shape[1:]))
        self.pos = torch.zeros(0, dtype=torch.long)
        self.k = 0

    def add(self, names: list[str], changes: Tensor) -> None:
        k = len(names)
        self.store[self.k : self.k + k] = changes
        self.pos = torch.cat([self.pos, torch.tensor([self.writer_at[n] for n in names])])
        self.k += k


def _consumers(eg: EdgeGraph, r: Reader) -> list[str] | None:
    """The writers computed from reader port ``r`` (None for the logits, always needed)."""
    if r.kind == "logits":
        return None
    if r.kind == "mlp":
        return [f"m{r.layer}"]
    if eg.grouped and r.port != "q":
        group = eg.n_heads // eg.n_kv
        assert r.head is not None
        return [f"a{r.layer}.h{h}" for h in range(r.head * group, (r.head + 1) * group)]
    return [f"a{r.layer}.h{r.head}"]


def acdc(
    model: Model,
    data: Task,
    *,
    tau: float = 0.01,
    objective: str = "kl",
    metric: str | Metric | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    max_memory: int | None = None,
    progress: Progress | None = None,
    positions: str = "all",
) -> EdgeScores:
    """ACDC's circuit and every edge's effect when it was pruned (module docstring).

    Args:
        model: a faithlens model whose residual stream is a sum of component outputs.
        data: a :class:`~faithlens.Task` (clean and corrupted prompts, answers, positions).
        tau: the pruning threshold: an edge is removed when removing it raises the KL divergence
            (``objective="kl"``) or lowers the task metric (``"metric"``) by less than ``tau``.
        objective: ``"kl"`` (to the clean run's next-token distribution; ACDC's default) or
            ``"metric"`` (the task's metric).
        metric: the task metric (default: the task's own), e.g. ``"logit_diff"``.
        n_boot, level, seed: the bootstrap over examples.
        max_memory: bytes one forward pass may use (default: the configured memory budget).
        progress: called as ``progress(done, total)`` after each edge is decided.
        positions: ``"all"`` (whole edges) or ``"each"``: prune per-position edges
            ``"{edge}@{position}"`` (one per edge and token position of the padded prompts,
            edge-major, as :func:`faithlens.circuits.exact` names them).

    Returns an :class:`EdgeScores` (``method="acdc"``; ``meta`` holds ``tau``, ``objective``
    and ``kept``) whose ``kept()`` is the circuit.
    """
    tau = validate.finite_float("tau", tau, fix="a pruning threshold, e.g. 0.01")
    validate.choice("objective", objective, OBJECTIVES)
    each = check_positions(positions)
    task, eg = prepare("circuits.acdc", model, data, metric, n_boot, level, seed, max_memory)
    parts, row_cap = chunks(model, task, max_memory)
    seq = task.seq_len if each else None
    with torch.no_grad():
        prepared = [(rows, _prepare_chunk(eg, sub)) for rows, sub in parts]
        values, kept = _greedy(eg, task.n, prepared, row_cap, tau, objective, progress, seq)
    clean, corrupt = _metrics(prepared, task.n)
    scores = build_scores(
        eg,
        task,
        Measured(values, clean, corrupt),
        method="acdc",
        n_boot=n_boot,
        level=level,
        seed=seed,
        meta={
            "direction": "noising",
            "tau": tau,
            "objective": objective,
            "positions": "each" if each else "all",
            "kept": [e for e in scores_names(eg, seq) if e in kept],
        },
    )
    return scores


def scores_names(eg: EdgeGraph, seq: int | None) -> list[str]:
    """The edge names in score order: whole edges, or edge-major per position."""
    if seq is None:
        return eg.names
    return [position_name(e, p) for e in eg.names for p in range(seq)]


def _greedy(
    eg: EdgeGraph,
    n: int,
    prepared: list[tuple[Tensor, _Chunk]],
    row_cap: int,
    tau: float,
    objective: str,
    progress: Progress | None,
    seq: int | None = None,
) -> tuple[np.ndarray, set[str]]:
    """The greedy pruning: per-example values ``[n_edges, n]`` (per position: ``[n_edges,
    seq, n]``) and the kept edges' names."""
    index = {e.name: i for i, e in enumerate(eg.edges)}
    shape = (len(eg),) if seq is None else (len(eg), seq)
    values = np.zeros((*shape, n), dtype=np.float64)
    removed = torch.zeros(shape, dtype=torch.bool)
    alive = {w.name for w in eg.writers}
    width = max(1, row_cap // max(ch.sub.n for _, ch in prepared))
    held = max(ch.sub.seq_len for _, ch in prepared)  # positions any chunk's runs hold
    positions: list[int | None] = [None] if seq is None else list(range(seq - 1, -1, -1))
    # the objective per example of the current circuit (the clean run: KL 0)
    current = np.zeros(n) if objective == "kl" else _clean(prepared, n)
    done = 0
    total = len(eg) * len(positions)

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    def at(i: int, p: int | None) -> tuple[int, ...]:
        return (i,) if p is None else (i, p)

    for r in reversed(eg.readers):
        users = _consumers(eg, r)
        dead = users is not None and not any(u in alive for u in users)
        units = []
        for e in reversed(eg.into(r)):
            for p in positions:
                if dead or (p is not None and p >= held):  # nothing it changes is read
                    removed[at(index[e.name], p)] = True
                    tick()
                else:
                    units.append(at(index[e.name], p))
        j = 0
        while j < len(units):
            batch = units[j : j + width]
            rows = removed.unsqueeze(0).repeat(len(batch), *([1] * removed.dim()))
            for i, u in enumerate(batch):
                cell: tuple[slice | int, ...] = (slice(i, None), *u)
                rows[cell] = True
            start = eg.n_layers if r.layer is None else r.layer
            measured = _measure(eg, n, prepared, start, rows, row_cap, objective)
            for i, u in enumerate(batch):
                change = measured[i] - current
                values[u] = change
                tick()
                cost = float(change.mean()) if objective == "kl" else -float(change.mean())
                j += 1
                if cost < tau:
                    removed[u] = True
                    current = measured[i]
                else:
                    break
        gone = removed if seq is None else removed.all(1)
        alive = {e.writer.name for e in eg.edges if not bool(gone[index[e.name]])}
    if seq is None:
        kept = {e.name for e in eg.edges if not bool(removed[index[e.name]])}
    else:
        kept = {
            position_name(e.name, p)
            for e in eg.edges
            for p in range(seq)
            if not bool(removed[index[e.name], p])
        }
    return values, kept


def _metrics(prepared: list[tuple[Tensor, _Chunk]], n: int) -> tuple[np.ndarray, np.ndarray]:
    """The clean and corrupted metric per example, in example order."""
    clean, corrupt = np.zeros(n), np.zeros(n)
    for rows, ch in prepared:
        cols = rows.cpu().numpy()
        clean[cols] = ch.m_clean.cpu().numpy()
        corrupt[cols] = ch.m_corrupt.cpu().numpy()
    return clean, corrupt


def acdc_nodes(
    model: Model,
    data: Task,
    *,
    tau: float = 0.01,
    objective: str = "kl",
    metric: str | Metric | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    max_memory: int | None = None,
    progress: Progress | None = None,
) -> NodeScores:
    """ACDC over nodes: the same greedy pruning as :func:`acdc` with every head and MLP as one
    unit. Visit the nodes from the last backwards (the last MLP, the last layer's heads from the
    highest index down, ...; the embedding is never pruned) and remove each (every reader then
    receives its output on the corrupted input: all its outgoing edges removed at once, i.e.
    activation patching of its output) when the objective worsens by less than ``tau``.
    Arguments as :func:`acdc`; the runs are :func:`acdc`'s (resumed at the node's layer,
    candidates stacked speculatively in the batch).

    Returns a :class:`~faithlens.circuits.NodeScores` (``method="acdc"``): a node's
    per-example value is the change of the objective when it was removed, in the circuit of
    that moment; ``meta["kept"]`` lists the kept nodes.
    """
    tau = validate.finite_float("tau", tau, fix="a pruning threshold, e.g. 0.01")
    validate.choice("objective", objective, OBJECTIVES)
    task, eg = prepare("circuits.acdc_nodes", model, data, metric, n_boot, level, seed, max_memory)
    parts, row_cap = chunks(model, task, max_memory)
    nodes = [w for w in eg.writers if w.kind != "input"]
    with torch.no_grad():
        prepared = [(rows, _prepare_chunk(eg, sub)) for rows, sub in parts]
        values, kept = _greedy_nodes(eg, task.n, prepared, row_cap, tau, objective, progress)
    clean, corrupt = _metrics(prepared, task.n)
    return build_node_scores(
        [w.name for w in nodes],
        [w.kind for w in nodes],
        values,
        clean,
        corrupt,
        method="acdc",
        metric=task.metric.name,
        model=model.name,
        task=task.name,
        n_boot=n_boot,
        level=level,
        seed=seed,
        meta={
            "direction": "noising",
            "tau": tau,
            "objective": objective,
            "kept": [w.name for w in nodes if w.name in kept],
        },
    )


def _greedy_nodes(
    eg: EdgeGraph,
    n: int,
    prepared: list[tuple[Tensor, _Chunk]],
    row_cap: int,
    tau: float,
    objective: str,
    progress: Progress | None,
) -> tuple[np.ndarray, set[str]]:
    """The greedy pruning over nodes: per-example values ``[n_nodes, n]`` (in forward order)
    and the kept nodes."""
    nodes = [w for w in eg.writers if w.kind != "input"]
    row = {w.name: i for i, w in enumerate(nodes)}
    out_edges: dict[str, list[int]] = {w.name: [] for w in nodes}
    for i, e in enumerate(eg.edges):
        if e.writer.name in out_edges:
            out_edges[e.writer.name].append(i)
    values = np.zeros((len(nodes), n), dtype=np.float64)
    removed = torch.zeros(len(eg), dtype=torch.bool)
    kept = {w.name for w in nodes}
    width = max(1, row_cap // max(ch.sub.n for _, ch in prepared))
    current = np.zeros(n) if objective == "kl" else _clean(prepared, n)
    order = list(reversed(nodes))
    j = 0
    while j < len(order):
        batch = order[j : j + width]
        rows = removed.unsqueeze(0).repeat(len(batch), 1)
        for i, w in enumerate(batch):
            rows[i:, out_edges[w.name]] = True
        start = min(int(w.layer) for w in batch if w.layer is not None)
        measured = _measure(eg, n, prepared, start, rows, row_cap, objective)
        for i, w in enumerate(batch):
            change = measured[i] - current
            values[row[w.name]] = change
            j += 1
            if progress is not None:
                progress(j, len(order))
            cost = float(change.mean()) if objective == "kl" else -float(change.mean())
            if cost < tau:
                removed[out_edges[w.name]] = True
                kept.discard(w.name)
                current = measured[i]
            else:
                break
    return values, kept


def _clean(prepared: list[tuple[Tensor, _Chunk]], n: int) -> np.ndarray:
    out = np.zeros(n)
    for rows, ch in prepared:
        out[rows.cpu().numpy()] = ch.m_clean.cpu().numpy()
    return out


def _measure(
    eg: EdgeGraph,
    n: int,
    prepared: list[tuple[Tensor, _Chunk]],
    start: int,
    removed: Tensor,
    row_cap: int,
    objective: str,
) -> np.ndarray:
    """The objective per candidate circuit and example ``[c, n]``, every chunk resumed at layer
    ``start`` (no removed edge reads a port before it)."""
    out = np.zeros((removed.shape[0], n))
    for rows, ch in prepared:
        m, kl = run_rows(eg, ch, start, removed, row_cap)
        out[:, rows.cpu().numpy()] = (kl if objective == "kl" else m).cpu().numpy()
    return out


__all__ = ["OBJECTIVES", "acdc", "acdc_nodes", "run_rows"]
