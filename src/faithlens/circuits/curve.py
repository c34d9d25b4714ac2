"""The faithfulness curve over circuit sizes and its areas, CPR and CMD, as MIB defines them.

For each size ``p`` (a fraction of the edge graph's edges) the circuit is the
``int(p * n_edges)`` edges with the largest ``|score|`` (MIB's ``apply_topn`` with
``absolute=True``; ``by="value"`` for the largest signed score), every edge outside it is
patched from the counterfactual (:func:`faithlens.circuits.faithfulness`) and its normalised
faithfulness is ``f(p) = (mean m(circuit) - mean m(corrupt)) / (mean m(clean) - mean m(corrupt))``.
On MIB's grid ``p = 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1`` the two areas are
trapezoidal sums over the (linear) size axis:

    CPR = sum_i (p_{i+1} - p_i) (f_i + f_{i+1}) / 2                 (higher is better)
    CMD = sum_i (p_{i+1} - p_i) (|1 - f_i| + |1 - f_{i+1}|) / 2     (0 is best)

(``MIB_circuit_track/evaluation.py``'s ``area_under`` and ``area_from_1``; the axis runs from the
first size to the last, so a perfect curve on MIB's grid has CPR = 0.999, not 1.) Unlike MIB, a
circuit is not pruned of edges that lie on no path from the input to the logits. Per-position
scores (``positions="each"``) rank the (edge, position) pairs, and the sizes are fractions of
those (``n_edges * seq`` of them): each circuit keeps its edges at its positions only.

Uncertainty: the examples are resampled with replacement (``n_boot`` times, seeded) and the
whole curve and both areas are recomputed from the stored per-example metrics of each resample
(no new forward pass); the intervals are percentile intervals of those resamples.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from torch import Tensor

from .. import validate
from ..errors import InputError
from ..executor import Executor, current_executor, on_executor
from ..models.model import Model
from ..progress import Progress
from ..results import Estimate, Result
from ..tasks.base import Task
from ..tasks.metrics import Metric
from .common import edge_graph, keep_graph, position_name, prepare
from .faithfulness import ABLATIONS, ablation_values, measure
from .scores import EdgeScores

#: MIB's circuit sizes (fractions of the edges) for the circuit-localization track.
MIB_SIZES: tuple[float, ...] = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def areas(sizes: Sequence[float] | np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CPR (trapezoidal area under ``f`` over ``sizes``) and CMD (the same area of
    ``|1 - f|``), over the last axis of ``f`` (``[..., len(sizes)]``)."""
    x = np.asarray(sizes, dtype=np.float64)
    f = np.asarray(f, dtype=np.float64)
    dx = np.diff(x)
    cpr = ((f[..., 1:] + f[..., :-1]) / 2 * dx).sum(-1)
    gap = np.abs(1.0 - f)
    cmd = ((gap[..., 1:] + gap[..., :-1]) / 2 * dx).sum(-1)
    return cpr, cmd


def sizes_to_counts(sizes: Sequence[float], n_edges: int) -> list[int]:
    """MIB's edge count for each size: ``int(p * n_edges)`` (rounded down; a product that is
    an integer up to float rounding counts as that integer)."""
    return [int(np.floor(p * n_edges + 1e-9)) for p in sizes]


@dataclass(frozen=True, eq=False)
class FaithfulnessCurve(Result):
    """A circuit's normalised faithfulness at each size (one row per size) and CPR / CMD.

    ``size`` are the fractions of edges, ``edges`` the edge counts; ``faithfulness`` with
    ``faithfulness_se``, ``faithfulness_ci_low``, ``faithfulness_ci_high`` per size, and ``cpr``
    and ``cmd`` with theirs (``level`` percentile intervals over resamples of the examples;
    module docstring). ``patched`` holds the metric per size and example ``[sizes, n]``,
    ``clean`` and ``corrupt`` per example ``[n]``; ``method`` is the scorer that ranked the
    edges.
    """

    size: np.ndarray
    edges: np.ndarray
    faithfulness: np.ndarray
    faithfulness_se: np.ndarray
    faithfulness_ci_low: np.ndarray
    faithfulness_ci_high: np.ndarray
    cpr: float
    cpr_se: float
    cpr_ci_low: float
    cpr_ci_high: float
    cmd: float
    cmd_se: float
    cmd_ci_low: float
    cmd_ci_high: float
    patched: np.ndarray
    clean: np.ndarray
    corrupt: np.ndarray
    n_graph_edges: int = 0
    method: str = ""
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
        ),
        "cpr": Estimate("cpr", "cpr_se", "cpr_ci_low", "cpr_ci_high"),
        "cmd": Estimate("cmd", "cmd_se", "cmd_ci_low", "cmd_ci_high"),
    }

    @property
    def n(self) -> int:
        return int(self.clean.shape[0])

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "size": self.size,
                "edges": self.edges,
                "faithfulness": self.faithfulness,
                "faithfulness_se": self.faithfulness_se,
                "faithfulness_ci_low": self.faithfulness_ci_low,
                "faithfulness_ci_high": self.faithfulness_ci_high,
                "level": np.full(len(self.size), self.level),
            }
        )

    def summary(self) -> str:
        pct = round(self.level * 100)
        lines = [
            f"faithfulness curve of {self.method} circuits of {self.model} on {self.task}: "
            f"{self.n_graph_edges} edges, n={self.n} examples",
            f"CPR {self.interval_of('cpr'):.3f}  CMD {self.interval_of('cmd'):.3f}  "
            f"({pct}% bootstrap CIs)",
        ]
        faith = self.interval_of("faithfulness")
        for i in range(len(self.size)):
            lines.append(f"  {self.size[i]:>6.3f} ({int(self.edges[i]):>5} edges)  {faith[i]:+.3f}")
        return "\n".join(lines)


@on_executor
def faithfulness_curve(
    model: Model,
    data: Task,
    scores: EdgeScores,
    *,
    sizes: Sequence[float] = MIB_SIZES,
    ablation: str = "counterfactual",
    by: str = "abs",
    selection: str = "top",
    metric: str | Metric | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    max_memory: int | None = None,
    progress: Progress | None = None,
    executor: str | Executor | None = None,
) -> FaithfulnessCurve:
    """The faithfulness curve of the circuits ``scores`` ranks, at each of ``sizes``
    (increasing fractions of the edges in (0, 1]; MIB's grid by default), and its CPR and CMD
    with bootstrap intervals (module docstring). ``ablation`` is what the edges outside the
    circuit carry: ``"counterfactual"`` (the corrupted prompt's writers), ``"mean"``,
    ``"resample"`` or ``"zero"`` (:func:`faithlens.circuits.faithfulness`; the normalisation's
    baseline is then the empty circuit under that ablation).
    ``selection``: how each size's circuit is chosen: ``"top"`` (MIB's top-n by ``|score|``)
    or ``"greedy"`` (:meth:`EdgeScores.greedy`: grown from the logits backwards and pruned to
    the edges on a path from the input, as EAP-IG's code selects; a circuit may then hold fewer
    edges than its size, and ``edges`` records how many it holds).
    ``progress(done, total)`` is called once per size. Each size is a work item of the
    executor (``executor=``: :func:`faithlens.executor.on_executor`; on Ray workers the
    numbers do not change). Other arguments as :func:`faithlens.circuits.faithfulness`."""
    validate.choice("ablation", ablation, ABLATIONS)
    validate.choice("by", by, ("abs", "value"))
    validate.choice("selection", selection, SELECTIONS)
    if not isinstance(scores, EdgeScores):
        raise validate.fail(
            "scores", type(scores).__name__, "must be an EdgeScores", "pass fl.circuits.eap(...)"
        )
    grid = _check_sizes(sizes)
    task, eg = prepare(
        "circuits.faithfulness_curve", model, data, metric, n_boot, level, seed, max_memory
    )
    if "subset" in scores.meta:
        raise InputError(
            f"scores cover {len(scores.edge)} of the model's {len(eg)} edges (exact with "
            "edges=...): the curve ranks every edge; score every edge, or measure circuits of "
            "these edges with fl.circuits.faithfulness"
        )
    names = eg.names
    if scores.meta.get("positions") == "each":
        names = [position_name(e, p) for e in names for p in range(task.seq_len)]
    if list(scores.edge) != names:
        raise InputError(
            f"scores are for another edge graph ({len(scores.edge)} edges, model "
            f"{scores.model!r}) than {model.name!r}'s on this task ({len(names)} edges"
            f"{' at ' + str(task.seq_len) + ' positions' if len(names) != len(eg) else ''}): "
            "score this model on this task"
        )
    counts = sizes_to_counts(grid, len(names))
    order = scores.ranking(by)
    values = ablation_values(eg, task, ablation, seed)
    measured: dict[int, np.ndarray] = {}
    clean = corrupt = np.zeros(task.n)
    distinct = sorted(set(counts))
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, len(distinct))

    # each circuit size is a work item (its edges); executors with workers send it to one
    if selection == "top":
        keeps = [sorted(scores.edge[j] for j in order[:k].tolist()) for k in distinct]
    else:
        keeps = [sorted(scores.greedy(k, by=by).edges) if k else [] for k in distinct]
    held = dict(zip(distinct, (len(k) for k in keeps)))
    keep_graph(eg)
    runs = current_executor().map_model(
        model, measure_size, keeps, task, max_memory, values, tick=tick
    )
    for k, (p, c, e) in zip(distinct, runs):
        measured[k], clean, corrupt = p, c, e
    patched = np.stack([measured[k] for k in counts])
    boot = _bootstrap(grid, patched, clean, corrupt, n_boot=n_boot, level=level, seed=seed)
    return FaithfulnessCurve(
        size=np.asarray(grid, dtype=np.float64),
        edges=np.asarray([held[k] for k in counts], dtype=np.int64),
        patched=patched,
        clean=clean,
        corrupt=corrupt,
        n_graph_edges=len(names),
        method=scores.method,
        metric=task.metric.name,
        model=model.name,
        task=task.name,
        level=level,
        n_boot=n_boot,
        seed=seed,
        meta={
            "ablation": ablation,
            "by": by,
            "interval": "percentile",
            "positions": scores.meta.get("positions", "all"),
            "selection": selection,
        },
        **boot,
    )


#: How :func:`faithfulness_curve` chooses each size's circuit: MIB's top-n by score, or the
#: greedy selection from the logits (:meth:`EdgeScores.greedy`, pruned).
SELECTIONS = ("top", "greedy")


def measure_size(
    model: Model,
    keep: list[str],
    task: Task,
    max_memory: int | None,
    ablated: dict[str, Tensor] | None,
    tick: Callable[[], None],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One circuit size of the curve (a work item of :meth:`Executor.map_model`): the metric
    per example with every edge outside ``keep`` ablated, and of the clean and the corrupted
    (or empty-circuit) runs (:func:`faithlens.circuits.faithfulness.measure`); ``tick()`` once."""
    out = measure(edge_graph(model), task, set(keep), max_memory, None, ablated)
    tick()
    return out


def _check_sizes(sizes: Sequence[float]) -> list[float]:
    fix = "increasing fractions of the edges in (0, 1], e.g. fl.circuits.MIB_SIZES"
    try:
        grid = [float(p) for p in sizes]
    except (TypeError, ValueError):
        raise validate.fail("sizes", sizes, "must be a sequence of numbers", fix) from None
    if len(grid) < 2:
        raise validate.fail("sizes", sizes, "needs at least two sizes for an area", fix)
    if not all(np.isfinite(p) and 0 < p <= 1 for p in grid) or any(
        b <= a for a, b in pairwise(grid)
    ):
        raise validate.fail("sizes", sizes, "must increase strictly within (0, 1]", fix)
    return grid


def _normalised(patched: np.ndarray, clean: np.ndarray, corrupt: np.ndarray) -> np.ndarray:
    """``(mean patched - mean corrupt) / (mean clean - mean corrupt)``: ``patched`` is
    ``[..., sizes, n]``, ``clean`` and ``corrupt`` ``[..., n]``; returns ``[..., sizes]``."""
    base = corrupt.mean(-1)[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray((patched.mean(-1) - base) / (clean.mean(-1)[..., None] - base))


def _bootstrap(
    grid: list[float],
    patched: np.ndarray,
    clean: np.ndarray,
    corrupt: np.ndarray,
    *,
    n_boot: int,
    level: float,
    seed: int,
) -> dict[str, Any]:
    """The curve and its areas, with standard errors and percentile intervals over
    resamples of the examples (each resample recomputes the whole curve and both areas)."""
    n = clean.shape[0]
    f = _normalised(patched, clean, corrupt)
    cpr, cmd = areas(grid, f)
    rng = np.random.default_rng(seed)
    thetas: list[np.ndarray] = []
    step = max(1, (16 << 20) // max(1, 8 * n * (patched.shape[0] + 2)))
    for start in range(0, n_boot, step):
        idx = rng.integers(0, n, (min(step, n_boot - start), n))  # [b, n]
        fb = _normalised(np.moveaxis(patched[:, idx], 0, 1), clean[idx], corrupt[idx])
        thetas.append(np.column_stack([fb, *areas(grid, fb)]))
    theta = np.concatenate(thetas)  # [n_boot, sizes + 2]
    alpha = (1 - level) / 2
    with np.errstate(invalid="ignore"):
        se = np.std(theta, axis=0, ddof=1)
        low, high = np.nanquantile(theta, [alpha, 1 - alpha], axis=0)
    s = len(grid)
    out: dict[str, Any] = {
        "faithfulness": f,
        "faithfulness_se": se[:s],
        "faithfulness_ci_low": low[:s],
        "faithfulness_ci_high": high[:s],
    }
    for j, (name, value) in enumerate((("cpr", cpr), ("cmd", cmd))):
        out[name] = float(value)
        out[f"{name}_se"] = float(se[s + j])
        out[f"{name}_ci_low"] = float(low[s + j])
        out[f"{name}_ci_high"] = float(high[s + j])
    return out


__all__ = [
    "MIB_SIZES",
    "SELECTIONS",
    "FaithfulnessCurve",
    "areas",
    "faithfulness_curve",
    "measure_size",
    "sizes_to_counts",
]
