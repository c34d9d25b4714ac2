"""A circuit's faithfulness: the model run with every edge outside the circuit corrupted.

Every reader port ``v`` reads the outputs of its writers as this run computes them for the edges
in the circuit, and their outputs on the corrupted input for the edges outside it (as MIB and
EAP-IG evaluate circuits):

    input_v = residual(v) - sum over edges u->v outside the circuit of (u(this run) - u(corrupt))

where ``residual(v)`` is the residual stream this run reaches ``v`` with. A circuit may hold
per-position edges (``"u->v@p"``, :func:`faithlens.circuits.exact` with ``positions="each"``):
such an edge keeps ``u``'s contribution to ``v`` at token position ``p`` only, so the sum above
runs, for each edge, over the positions the circuit does not keep (a whole edge name keeps every
position). The whole edge graph
gives the clean run, the empty circuit the corrupted run, and the whole graph less one edge is
exact edge patching of that edge (:func:`faithlens.circuits.exact`). The normalised
faithfulness is ``(m(circuit) - m(corrupt)) / (m(clean) - m(corrupt))`` on means over examples,
with a paired bootstrap interval (``faithlens.stats.normalized_effect``). ``ablation="mean"``,
``"resample"`` or ``"zero"`` replaces ``u(corrupt)`` by the writer's per-position mean over the
clean prompts, another clean prompt's output (:func:`resample_order`) or zero; the
normalisation's baseline is then the empty circuit under that ablation.

How it runs, layer by layer on the clean input (all through the run engine, resumed at the
layer from this run's residual stream): the layer's query / key / value projections are computed
from each port's shifted residual (ports stacked in the batch, only those with an edge outside
the circuit); the heads run with those projections patched; then the whole layer runs again with
the same patches and the MLP's norm input shifted by its own edges outside the circuit (they may
come from this layer's heads, known only now); finally the unembedding reads the final residual
shifted by the logits' edges outside the circuit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .. import validate
from ..executor import Executor, current_executor, on_executor
from ..interventions import Add, Intervention, Patch
from ..models.model import Model
from ..progress import Progress
from ..results import Estimate, Result
from ..stats import normalized_effect
from ..tasks.base import Task
from ..tasks.metrics import Metric
from .common import (
    chunks,
    circuit_names,
    contribution,
    edge_graph,
    keep_graph,
    metric_values,
    prepare,
    writer_sites,
)
from .edges import EdgeGraph, Reader, split_position
from .scores import Circuit


@dataclass(frozen=True, eq=False)
class CircuitFaithfulness(Result):
    """How much of the model's behaviour a circuit keeps when every edge outside it is
    corrupted.

    ``faithfulness = (mean m_circuit - mean m_corrupt) / (mean m_clean - mean m_corrupt)``: 1
    when the circuit alone reproduces the clean behaviour, 0 when it does no better than the
    corrupted run; ``faithfulness_se``, ``faithfulness_ci_low`` and ``faithfulness_ci_high`` are
    the bootstrap standard error and ``level`` interval over examples (BCa, numerator and
    denominator resampled together). ``patched``, ``clean`` and ``corrupt`` hold the metric per
    example ``[n]``.
    """

    edges: list[str]
    n_graph_edges: int
    how: str
    faithfulness: float
    faithfulness_se: float
    faithfulness_ci_low: float
    faithfulness_ci_high: float
    patched: np.ndarray
    clean: np.ndarray
    corrupt: np.ndarray
    metric: str = "logit_diff"
    model: str = ""
    task: str = ""
    level: float = 0.95
    n_boot: int = 1000
    seed: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    INTERVALS: ClassVar[dict[str, Estimate]] = {
        "faithfulness": Estimate(
            "faithfulness", "faithfulness_se", "faithfulness_ci_low", "faithfulness_ci_high"
        )
    }

    @property
    def n(self) -> int:
        return int(self.clean.shape[0])

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "circuit": [self.how],
                "edges": [len(self.edges)],
                "of": [self.n_graph_edges],
                "faithfulness": [self.faithfulness],
                "faithfulness_se": [self.faithfulness_se],
                "faithfulness_ci_low": [self.faithfulness_ci_low],
                "faithfulness_ci_high": [self.faithfulness_ci_high],
                "level": [self.level],
                "mean_patched": [float(self.patched.mean())],
                "mean_clean": [float(self.clean.mean())],
                "mean_corrupt": [float(self.corrupt.mean())],
            }
        )

    def summary(self) -> str:
        return (
            f"circuit ({self.how}) of {self.model} on {self.task}: {len(self.edges)} of "
            f"{self.n_graph_edges} edges, n={self.n} examples\n"
            f"metric {self.metric}: clean {float(self.clean.mean()):.3f}, corrupted "
            f"{float(self.corrupt.mean()):.3f}, circuit {float(self.patched.mean()):.3f}\n"
            f"normalised faithfulness {self.interval_of('faithfulness'):+.3f} "
            f"({round(self.level * 100)}% bootstrap CI)"
        )


#: What the edges outside a circuit carry: the counterfactual prompt's writer outputs, their mean
#: over the task's clean prompts (per position), another clean prompt's (a seeded derangement of
#: the examples), or nothing.
ABLATIONS = ("counterfactual", "mean", "resample", "zero")


def resample_order(n: int, seed: int) -> np.ndarray:
    """The example whose writer outputs example ``i`` receives under ``ablation="resample"``:
    a seeded derangement (``order = rng.permutation(n)``; ``order[j]`` receives ``order[j+1]``,
    the last the first)."""
    order = np.random.default_rng(seed).permutation(n)
    src = np.empty(n, dtype=np.int64)
    src[order] = np.roll(order, -1)
    return src


def ablation_values(
    eg: EdgeGraph, task: Task, ablation: str, seed: int = 0
) -> dict[str, Tensor] | None:
    """Per writer, the ``[n, seq, width]`` output the edges outside a circuit carry under
    ``ablation`` (None for the counterfactual: each chunk's corrupted run), from one clean run of
    the whole task."""
    validate.choice("ablation", ablation, ABLATIONS)
    if ablation == "counterfactual":
        return None
    if ablation == "resample" and task.n < 2:
        raise validate.fail("ablation", ablation, "needs at least 2 examples", "use more")
    out = eg.model.run(task.clean, cache=writer_sites(eg))
    vals = {w.name: contribution(eg, w, out) for w in eg.writers}
    if ablation == "zero":
        return {k: torch.zeros_like(v) for k, v in vals.items()}
    if ablation == "resample":
        src = torch.as_tensor(
            resample_order(task.n, seed), device=out.cache[eg.writers[0].site].device
        )
        return {k: v[src] for k, v in vals.items()}
    first = vals[eg.writers[0].name]
    mask = task.clean.mask
    m = (torch.ones(first.shape[:2]) if mask is None else mask).to(first)[..., None]
    return {k: ((v * m).sum(0) / m.sum(0).clamp(min=1)).expand_as(v) for k, v in vals.items()}


@on_executor
def faithfulness(
    model: Model,
    data: Task,
    circuit: Circuit | Sequence[str],
    *,
    ablation: str = "counterfactual",
    metric: str | Metric | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    max_memory: int | None = None,
    progress: Progress | None = None,
    executor: str | Executor | None = None,
) -> CircuitFaithfulness:
    """The normalised faithfulness of ``circuit`` (a :class:`Circuit` or edge names) on
    ``data``, every edge outside it corrupted (module docstring). ``ablation``: what the edges
    outside the circuit carry (:data:`ABLATIONS`; ``"counterfactual"``, the corrupted prompt's
    writer outputs, by default); with another ablation, ``corrupt`` is the empty circuit's metric
    under it (the baseline of the normalisation). ``seed`` also draws ``"resample"``'s pairing.
    Each chunk of examples is a work item of the executor (``executor=``, as
    :func:`faithlens.circuits.exact`); other arguments as :func:`faithlens.circuits.exact`."""
    task, eg = prepare(
        "circuits.faithfulness", model, data, metric, n_boot, level, seed, max_memory
    )
    validate.choice("ablation", ablation, ABLATIONS)
    keep = set(circuit_names(eg, circuit, seq=task.seq_len))
    how = circuit.how if isinstance(circuit, Circuit) else f"{len(keep)} edges"
    values = ablation_values(eg, task, ablation, seed)
    patched, clean, corrupt = measure(eg, task, keep, max_memory, progress, values)
    est = normalized_effect(patched, corrupt, clean, n_boot=n_boot, level=level, seed=seed)
    each = any(split_position(e)[1] is not None for e in keep)
    return CircuitFaithfulness(
        edges=circuit_order(eg, keep),
        n_graph_edges=len(eg) * (task.seq_len if each else 1),
        how=how,
        faithfulness=float(np.asarray(est.estimate).reshape(-1)[0]),
        faithfulness_se=float(np.asarray(est.se).reshape(-1)[0]),
        faithfulness_ci_low=float(np.asarray(est.low).reshape(-1)[0]),
        faithfulness_ci_high=float(np.asarray(est.high).reshape(-1)[0]),
        patched=patched,
        clean=clean,
        corrupt=corrupt,
        metric=task.metric.name,
        model=model.name,
        task=task.name,
        level=level,
        n_boot=n_boot,
        seed=seed,
        meta={
            "ablation": "corrupt" if ablation == "counterfactual" else ablation,
            "positions": "each" if each else "all",
        },
    )


def measure(
    eg: EdgeGraph,
    task: Task,
    keep: set[str],
    max_memory: int | None = None,
    progress: Progress | None = None,
    ablated: dict[str, Tensor] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The metric per example ``[n]`` with every edge outside ``keep`` corrupted, and of the
    clean and the corrupted runs (``task`` already on the model's device, with its metric).
    With ``ablated`` (:func:`ablation_values`) the edges outside carry those values instead, and
    the third array is the empty circuit's metric under them."""
    model = eg.model
    parts, row_cap = chunks(model, task, max_memory)
    total = len(parts) * (3 + 3 * eg.n_layers)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    # each chunk of examples is a work item (its slice of the task and of the ablation
    # values); executors with workers send it to one, where the edge graph is rebuilt. A
    # generator: in process each chunk's slice of the values is made only when it runs
    items = (
        (
            sub,
            None
            if ablated is None
            else {k: v[rows.to(v.device)][:, : sub.seq_len] for k, v in ablated.items()},
        )
        for rows, sub in parts
    )
    keep_graph(eg)
    runs = current_executor().map_model(
        model, measure_chunk, items, sorted(keep), row_cap, tick=tick
    )
    n = task.n
    patched, clean, corrupt = np.zeros(n), np.zeros(n), np.zeros(n)
    for (rows, _), (p, c, k) in zip(parts, runs):
        cols = rows.cpu().numpy()
        patched[cols], clean[cols], corrupt[cols] = p, c, k
    return patched, clean, corrupt


def measure_chunk(
    model: Model,
    item: tuple[Task, dict[str, Tensor] | None],
    keep: list[str],
    row_cap: int,
    tick: Callable[[], None],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One chunk of examples of :func:`measure` (a work item of :meth:`Executor.map_model`):
    the circuit's, the clean and the corrupted (or, with ablation values, the empty circuit's)
    metric per example."""
    eg, (sub, vals) = edge_graph(model), item
    if vals is None:
        return _chunk(eg, sub, set(keep), row_cap, tick)
    p, c, _ = _chunk(eg, sub, set(keep), row_cap, tick, ablated=vals)
    e, _, _ = _chunk(eg, sub, set(), row_cap, lambda: None, ablated=vals)
    return p, c, e


def circuit_interventions(
    model: Model,
    data: Task,
    circuit: Circuit | Sequence[str],
    *,
    metric: str | Metric | None = None,
) -> list[Intervention]:
    """The interventions that make ``model`` run ``circuit`` on ``data``'s clean prompts (every
    edge outside it corrupted, as :func:`faithfulness` runs it): the patched query / key /
    value projections and the shifts added to the MLPs' norm inputs and to the final residual,
    computed once on the whole task (one batch, not truncated). Apply them with
    ``model.run(data.clean, interventions)``, or audit them with :func:`faithlens.audit`
    (``base="clean"``) for how far the circuit's run drifts off the natural distribution."""
    task, eg = prepare("circuits.circuit_interventions", model, data, metric, 2, 0.95, 0, None)
    keep = set(circuit_names(eg, circuit, seq=task.seq_len))
    out: list[Intervention] = []
    _chunk(eg, task, keep, task.n * eg.n_heads * 3, lambda: None, out)
    return out


def circuit_order(eg: EdgeGraph, keep: set[str]) -> list[str]:
    """The circuit's members in edge-graph order (a whole edge before its positions, positions
    in order)."""

    def key(name: str) -> tuple[int, int]:
        edge, pos = split_position(name)
        return eg.index(edge), -1 if pos is None else pos

    return sorted(keep, key=key)


def outside_masks(keep: set[str]) -> tuple[set[str], dict[str, list[int]]]:
    """The whole edges a circuit keeps, and for each edge kept only at some positions, those
    positions."""
    whole: set[str] = set()
    at: dict[str, list[int]] = {}
    for name in keep:
        edge, pos = split_position(name)
        if pos is None:
            whole.add(edge)
        else:
            at.setdefault(edge, []).append(pos)
    return whole, at


def _chunk(
    eg: EdgeGraph,
    sub: Task,
    keep: set[str],
    row_cap: int,
    tick: Callable[[], None],
    collect: list[Intervention] | None = None,
    ablated: dict[str, Tensor] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The circuit's, the clean and the corrupted metric per example of one chunk (with
    ``collect``, the interventions that run the circuit are appended to it)."""
    model, g = eg.model, eg.graph
    ne = sub.n
    inputs, pos = sub.clean, sub.positions
    clean = model.run(inputs, cache=["resid_pre.0"], logits_at=pos)
    corrupt = model.run(sub.corrupt, cache=writer_sites(eg), logits_at=pos)
    tick()
    tick()
    m_clean = metric_values(sub, clean).double().cpu().numpy()
    m_corrupt = metric_values(sub, corrupt).double().cpu().numpy()
    if ablated is None:
        ablated = {w.name: contribution(eg, w, corrupt) for w in eg.writers}
    del corrupt
    # this run's writer outputs minus their corrupted outputs, filled in layer by layer
    diff: dict[str, Tensor] = {"input": clean.cache["resid_pre.0"] - ablated["input"]}
    hidden = clean.cache["resid_pre.0"]
    del clean

    whole, at = outside_masks(keep)

    def shift(r: Reader) -> Tensor | None:
        out = []
        for e in eg.into(r):
            if e.name in whole:
                continue
            d = diff[e.writer.name]  # [n, seq, width]
            kept = [p for p in at.get(e.name, ()) if p < d.shape[1]]
            if kept:  # the positions the circuit keeps carry this run's output
                m = torch.ones(d.shape[1], dtype=d.dtype, device=d.device)
                m[kept] = 0
                d = d * m[:, None]
            out.append(d)
        return -torch.stack(out).sum(0) if out else None

    per_pass = max(1, row_cap // ne)
    for L in range(eg.n_layers):
        ports = [r for r in eg.readers if r.kind == "head" and r.layer == L]
        patches: list[Intervention] = []
        shifted = [(r, s) for r in ports if (s := shift(r)) is not None]
        for k in range(0, len(shifted), per_pass):
            part = shifted[k : k + per_pass]
            x = torch.cat([hidden + s for _, s in part])
            sites = [r.site for r, _ in part if r.site is not None]
            a = g.run_from(L, x, inputs.repeat(len(part)), [], sites, f"head.{L}.0")
            for i, (r, _) in enumerate(part):
                assert r.site is not None
                patches.append(Patch(r.site, source=a.cache[r.site][i * ne : (i + 1) * ne]))
        tick()
        heads = [w for w in eg.writers if w.kind == "head" and w.layer == L]
        b = g.run_from(L, hidden, inputs, patches, [w.site for w in heads], f"attn_out.{L}")
        for w in heads:
            diff[w.name] = contribution(eg, w, b) - ablated[w.name]
        tick()
        mlp = [r for r in eg.readers if r.kind == "mlp" and r.layer == L]
        ivs = list(patches)
        if mlp and (s := shift(mlp[0])) is not None:
            ivs.append(Add(g.mlp_norm_input[L], vector=s))
        if collect is not None:
            collect.extend(ivs)
        cache = [f"resid_post.{L}", *([f"mlp_out.{L}"] if mlp else [])]
        c = g.run_from(L, hidden, inputs, ivs, cache, f"resid_post.{L}")
        if mlp:
            diff[f"m{L}"] = c.cache[f"mlp_out.{L}"] - ablated[f"m{L}"]
        hidden = c.cache[f"resid_post.{L}"]
        tick()
    out_shift = shift(eg.reader("logits"))
    final = hidden if out_shift is None else hidden + out_shift
    if collect is not None and out_shift is not None:
        collect.append(Add(eg.reader("logits").residual, vector=out_shift))
    out = g.run_from(eg.n_layers, final, inputs, [], [], None, logits_at=pos)
    tick()
    m_circuit = metric_values(sub, out).double().cpu().numpy()
    return m_circuit, m_clean, m_corrupt


__all__ = [
    "ABLATIONS",
    "ablation_values",
    "resample_order",
    "CircuitFaithfulness",
    "circuit_interventions",
    "circuit_order",
    "measure_chunk",
    "outside_masks",
    "faithfulness",
    "measure",
]
