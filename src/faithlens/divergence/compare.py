"""Divergence of an intervened set from a natural one, against a natural-vs-natural baseline.

A distance between two finite samples is never zero, even when both come from the same
distribution, so every number is reported next to the same distance between two disjoint halves
of the natural set (the *baseline*), over repeated random splits, as mean and standard error.

Protocol of :func:`divergences` (one split; ``n_splits`` of them, seeded):

1. shuffle the natural rows and cut two disjoint halves ``A`` and ``B`` of ``h`` rows each
   (``h = min(n_natural // 2, n_intervened, max_points // 2)``);
2. the intervened half ``I``: when the sets are *paired* (row ``i`` of the intervened set is the
   intervened version of natural row ``i``) it is the intervened rows of ``B``, so ``B`` and
   ``I`` differ only by the intervention; otherwise ``h`` random intervened rows;
3. every metric on (``I`` vs ``A``) and on the baseline (``B`` vs ``A``).

This differs from the paper's code, whose baseline halves may overlap (biasing it low); here the
baseline and the intervened comparison use the same sizes and disjoint natural rows.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from .. import stats, validate
from ..errors import InputError, ShapeError
from ..results import Estimate, Result, with_intervals
from ..stats import Interval
from . import distances as D


@dataclass(frozen=True)
class MetricSpec:
    """A named divergence: ``fn(intervened, natural) -> float`` (larger = more divergent)."""

    name: str
    fn: Callable[..., float]
    description: str
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    needs_seed: bool = False


METRICS: dict[str, MetricSpec] = {
    "emd": MetricSpec("emd", D.emd, "exact earth mover's distance W2^2/2 (POT)"),
    "emd_norm": MetricSpec(
        "emd_norm",
        D.emd_normalized,
        "exact EMD of per-set z-scored data / sqrt(D)",
    ),
    "sinkhorn": MetricSpec(
        "sinkhorn",
        D.sinkhorn,
        "the paper's 'EMD': debiased Sinkhorn (geomloss, scaling 0.5; under-converged)",
    ),
    "sinkhorn_norm": MetricSpec(
        "sinkhorn_norm",
        D.sinkhorn_normalized,
        "the paper's normalised 'EMD': Sinkhorn of per-set z-scored data / sqrt(D)",
    ),
    "match_mse": MetricSpec(
        "match_mse",
        D.matching_cost,
        "optimal one-to-one matching, mean squared difference",
        {"cost": "mse"},
    ),
    "match_corr": MetricSpec(
        "match_corr",
        D.matching_cost,
        "optimal one-to-one matching, 1 - Pearson r",
        {"cost": "corr"},
    ),
    "nn_mse": MetricSpec(
        "nn_mse", D.nn_cost, "nearest natural neighbour, mean squared difference", {"cost": "mse"}
    ),
    "nn_corr": MetricSpec(
        "nn_corr", D.nn_cost, "nearest natural neighbour, 1 - Pearson r", {"cost": "corr"}
    ),
    "local_pca": MetricSpec(
        "local_pca", D.local_pca_residual, "residual off the local PCA subspace (k=20, 95%)"
    ),
    "lle": MetricSpec("lle", D.lle_residual, "locally-linear reconstruction residual (k=20)"),
    "kde": MetricSpec("kde", D.kde_score, "-log p under a Gaussian KDE (bandwidth 0.4)"),
    "mmd": MetricSpec("mmd", D.mmd, "unbiased MMD^2, Gaussian kernel, median bandwidth"),
    "auroc": MetricSpec(
        "auroc",
        D.classifier_auroc,
        "classifier two-sample test AUROC (0.5 = same)",
        needs_seed=True,
    ),
}

#: Computed by default: cheap enough for thousands of points.
DEFAULT_METRICS = (
    "emd",
    "emd_norm",
    "match_mse",
    "match_corr",
    "nn_mse",
    "nn_corr",
    "mmd",
    "auroc",
)
ALL_METRICS = tuple(METRICS)


def resolve_metrics(metrics: str | Sequence[str] | None) -> tuple[str, ...]:
    """``None`` / ``"default"``: :data:`DEFAULT_METRICS`; ``"all"``: every metric; or names."""
    if metrics is None or metrics == "default":
        return DEFAULT_METRICS
    if metrics == "all":
        return ALL_METRICS
    names = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    bad = [m for m in names if m not in METRICS]
    if bad or not names:
        raise InputError(f"unknown divergence metric(s) {bad}; choose from {list(METRICS)}")
    return names


def _metric_min_points(name: str) -> int:
    if name in ("local_pca", "lle"):
        return 20
    if name == "auroc":
        return 5
    return 2


@dataclass(frozen=True)
class SplitValues:
    """Per-split metric values: ``values[m, s, 0]`` intervened, ``values[m, s, 1]`` baseline."""

    metrics: tuple[str, ...]
    values: np.ndarray
    n_per_split: int


def split_values(
    natural: Any,
    intervened: Any,
    *,
    metrics: str | Sequence[str] | None = None,
    n_splits: int = 5,
    max_points: int = 5000,
    paired: bool | None = None,
    seed: int = 0,
    options: dict[str, dict[str, Any]] | None = None,
    groups: tuple[Any, Any] | None = None,
) -> SplitValues:
    """The raw split protocol of :func:`divergences` (see the module docstring)."""
    names = resolve_metrics(metrics)
    nat, itv = D.check_pair(natural, intervened, names=("natural", "intervened"))
    nat_np, itv_np = D.to_numpy(nat), D.to_numpy(itv)
    n_nat, n_itv = len(nat_np), len(itv_np)
    if n_splits < 1:
        raise InputError(f"n_splits must be at least 1, got {n_splits}")
    if groups is not None:
        return _grouped_split_values(
            names,
            nat_np,
            itv_np,
            groups,
            n_splits=n_splits,
            max_points=max_points,
            seed=seed,
            options=options or {},
        )
    if paired is None:
        paired = n_nat == n_itv
    if paired and n_nat != n_itv:
        raise ShapeError(
            f"paired=True needs as many intervened rows ({n_itv}) as natural rows ({n_nat})"
        )
    h = min(n_nat // 2, n_itv, max(max_points // 2, 1))
    opts = options or {}
    need = _need(names, opts)
    if h < need:
        raise ShapeError(
            f"the natural-vs-natural baseline splits the natural set in halves of {h} points, but "
            f"the metrics {list(names)} need at least {need} per half: pass at least "
            f"{2 * need} natural and {need} intervened points"
        )
    rng = np.random.default_rng(seed)
    out = np.empty((len(names), n_splits, 2))
    for s in range(n_splits):
        perm = rng.permutation(n_nat)
        a_idx, b_idx = perm[:h], perm[h : 2 * h]
        i_idx = b_idx if paired else rng.permutation(n_itv)[:h]
        a, b, i = nat_np[a_idx], nat_np[b_idx], itv_np[i_idx]
        for mi, m in enumerate(names):
            spec = METRICS[m]
            kw = {**spec.kwargs, **opts.get(m, {})}
            if spec.needs_seed:
                kw.setdefault("seed", seed + s)
            out[mi, s, 0] = spec.fn(i, a, **kw)
            out[mi, s, 1] = spec.fn(b, a, **kw)
    return SplitValues(names, out, h)


def _need(names: Sequence[str], opts: dict[str, dict[str, Any]]) -> int:
    need = max(_metric_min_points(m) for m in names)
    for m in names:
        if m in ("local_pca", "lle"):
            need = max(need, int(opts.get(m, {}).get("k", 20)))
    return need


def _spread(idx: np.ndarray, groups: np.ndarray, h: int, rng: np.random.Generator) -> np.ndarray:
    """``h`` random rows of ``idx``, spread over as many groups as possible: every group's first
    (random) row before any group's second, so a sample has at most one row per example when
    ``h`` allows (no near-duplicates inside a set, e.g. for the classifier's cross-validation)."""
    perm = rng.permutation(idx)
    g = groups[perm]
    rank = pd.Series(g).groupby(g).cumcount().to_numpy()
    return np.asarray(perm[np.argsort(rank, kind="stable")[:h]])


def _grouped_split_values(
    names: tuple[str, ...],
    nat: np.ndarray,
    itv: np.ndarray,
    groups: tuple[Any, Any],
    *,
    n_splits: int,
    max_points: int,
    seed: int,
    options: dict[str, dict[str, Any]],
) -> SplitValues:
    """Split by *group* (e.g. the prompt each activation came from): halves of the group ids;
    ``A`` = natural rows of the first half, ``B`` = natural rows of the second, ``I`` =
    intervened rows of the second, each subsampled to a common size spreading over examples
    (:func:`_spread`). Near-duplicate rows of one example (a clean prompt and its corrupted twin,
    several positions) never straddle the two sides of a comparison."""
    gn = np.asarray(groups[0]).reshape(-1)
    gi = np.asarray(groups[1]).reshape(-1)
    if len(gn) != len(nat) or len(gi) != len(itv):
        raise ShapeError(
            f"groups must give one id per row: {len(gn)} ids for {len(nat)} natural rows, "
            f"{len(gi)} for {len(itv)} intervened rows"
        )
    ids = np.unique(gn)
    if not np.isin(np.unique(gi), ids).all():
        raise InputError("every intervened row's group must also have natural rows")
    rng = np.random.default_rng(seed)
    need = _need(names, options)
    out = np.empty((len(names), n_splits, 2))
    h_min = None
    for s in range(n_splits):
        perm = rng.permutation(ids)
        ga, gb = perm[: len(ids) // 2], perm[len(ids) // 2 :]
        a_idx = np.flatnonzero(np.isin(gn, ga))
        b_idx = np.flatnonzero(np.isin(gn, gb))
        i_idx = np.flatnonzero(np.isin(gi, gb))
        h = min(len(a_idx), len(b_idx), len(i_idx), max(max_points // 2, 1))
        if h < need:
            raise ShapeError(
                f"the grouped natural-vs-natural baseline leaves {h} points per side, but the "
                f"metrics {list(names)} need at least {need}: use more examples"
            )
        h_min = h if h_min is None else min(h_min, h)
        a = nat[_spread(a_idx, gn, h, rng)]
        b = nat[_spread(b_idx, gn, h, rng)]
        i = itv[_spread(i_idx, gi, h, rng)]
        for mi, m in enumerate(names):
            spec = METRICS[m]
            kw = {**spec.kwargs, **options.get(m, {})}
            if spec.needs_seed:
                kw.setdefault("seed", seed + s)
            out[mi, s, 0] = spec.fn(i, a, **kw)
            out[mi, s, 1] = spec.fn(b, a, **kw)
    assert h_min is not None
    return SplitValues(names, out, h_min)


#: The estimates of a table of split means (:func:`summarize_splits`), each with its ``_se``.
SPLIT_ESTIMATES = ("intervened", "baseline", "excess")
#: The level of the intervals of divergences (Student t over the splits).
SPLIT_LEVEL = 0.95


def split_intervals(table: pd.DataFrame, n_splits: int) -> dict[str, Interval]:
    """The intervals of a table of split means: ``intervened``, ``baseline`` and ``excess``
    (one element per row), each its mean ± SE over ``n_splits`` splits with the Student t
    interval at :data:`SPLIT_LEVEL` (``n_splits - 1`` degrees of freedom)."""
    df = max(1, int(n_splits) - 1)
    return {
        q: Interval.from_se(
            table[q].to_numpy(dtype=np.float64),
            table[f"{q}_se"].to_numpy(dtype=np.float64),
            SPLIT_LEVEL,
            df=df,
        )
        for q in SPLIT_ESTIMATES
        if q in table.columns
    }


#: Why a divergence table shows no ratio on some rows.
NO_RATIO = (
    "no ratio where the natural baseline is not positive: estimates such as the unbiased MMD "
    "can be negative and a ratio of two of them means nothing; read the excess instead"
)


def summarize_splits(sv: SplitValues) -> pd.DataFrame:
    """One row per metric: intervened and baseline (mean, SE over splits), their difference
    (``excess``, SE of the per-split differences) and ratio (NaN where the baseline is not
    positive: :data:`NO_RATIO` says why)."""
    rows = []
    for mi, m in enumerate(sv.metrics):
        v = sv.values[mi]
        im, ise = stats.mean_se(v[:, 0])
        bm, bse = stats.mean_se(v[:, 1])
        em, ese = stats.mean_se(v[:, 0] - v[:, 1])
        # A ratio only where the baseline is positive: some estimates (the unbiased MMD, the
        # debiased Sinkhorn EMD) can be negative, and a ratio of two such numbers means nothing.
        ratio = float(im / bm) if bm > 0 else float("nan")
        rows.append(
            {
                "metric": m,
                "intervened": float(im),
                "intervened_se": float(ise),
                "baseline": float(bm),
                "baseline_se": float(bse),
                "excess": float(em),
                "excess_se": float(ese),
                "ratio": ratio,
            }
        )
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class DivergenceResult(Result):
    """Divergences of an intervened set from a natural one, with a natural-vs-natural baseline.

    ``table``: one row per metric (``intervened``, ``baseline``, ``excess`` with standard errors
    over ``n_splits`` random splits, and ``ratio``). ``values``: the raw per-split numbers
    ``[metric, split, (intervened, baseline)]``. ``mse`` (paired sets only): mean squared
    difference between each intervened row and its natural row, with its SE over rows.

    ``intervals()``: ``intervened``, ``baseline`` and ``excess`` (one element per metric; the
    Student t interval over the splits, :func:`split_intervals`) and ``mse`` (its normal 95%
    interval); ``to_frame()`` is ``table`` with ``q, q_se, q_ci_low, q_ci_high, level``.
    """

    table: pd.DataFrame
    values: np.ndarray
    metrics: tuple[str, ...]
    n_natural: int
    n_intervened: int
    n_per_split: int
    n_splits: int
    paired: bool
    seed: int
    mse: float = float("nan")
    mse_se: float = float("nan")
    label: str = ""

    kind = "divergence"

    INTERVALS: ClassVar[dict[str, Estimate]] = {"mse": Estimate("mse", "mse_se", level=SPLIT_LEVEL)}

    def intervals(self) -> dict[str, Interval]:
        return {**split_intervals(self.table, self.n_splits), **super().intervals()}

    def to_frame(self) -> pd.DataFrame:
        ivs = split_intervals(self.table, self.n_splits)
        return with_intervals(self.table, ivs, drop=tuple(f"{q}_se" for q in ivs))

    def __getitem__(self, metric: str) -> dict[str, float]:
        row = self.table[self.table["metric"] == metric]
        if row.empty:
            raise InputError(f"no metric {metric!r} in this result; it has {list(self.metrics)}")
        return {str(k): float(v) for k, v in row.iloc[0].drop("metric").items()}

    def summary(self) -> str:
        head = (
            f"Divergence{f' ({self.label})' if self.label else ''}: {self.n_intervened} "
            f"intervened vs {self.n_natural} natural points, {self.n_splits} splits of "
            f"{self.n_per_split}{', paired' if self.paired else ''}"
        )
        lines = [head]
        if self.paired and np.isfinite(self.mse):
            lines.append(f"  paired mse = {self.interval_of('mse'):.4g}")
        lines.append(f"  mean ± SE over splits [{SPLIT_LEVEL:.0%} t interval]; ratio")
        ivs = split_intervals(self.table, self.n_splits)
        for i, r in enumerate(self.table.to_dict("records")):
            ratio = f"; ratio {r['ratio']:.2f}" if r["baseline"] > 0 else ""
            lines.append(
                f"  {r['metric']:<11} intervened {ivs['intervened'][i]:.4g}; natural baseline "
                f"{ivs['baseline'][i]:.4g}; excess {ivs['excess'][i]:+.3g}{ratio}"
            )
        if (self.table["baseline"] <= 0).any():
            lines.append(f"  ({NO_RATIO})")
        return "\n".join(lines)


def check_split_arguments(n_splits: Any, max_points: Any, seed: Any) -> None:
    """The split protocol's arguments: a standard error over splits needs at least two."""
    v = validate.positive_int("n_splits", n_splits, fix="use e.g. 5 splits")
    if v < 2:
        raise validate.fail(
            "n_splits",
            n_splits,
            "a standard error over splits needs at least 2 splits",
            "use e.g. 5 splits",
        )
    m = validate.positive_int("max_points", max_points, fix="use e.g. 5000")
    if m < 2:
        raise validate.fail(
            "max_points",
            max_points,
            "each split needs two halves of at least one point",
            "use e.g. 5000",
        )
    validate.nonnegative_int("seed", seed)


def divergences(
    natural: Any,
    intervened: Any,
    *,
    metrics: str | Sequence[str] | None = None,
    n_splits: int = 5,
    max_points: int = 5000,
    paired: bool | None = None,
    seed: int = 0,
    options: dict[str, dict[str, Any]] | None = None,
    groups: tuple[Any, Any] | None = None,
    label: str = "",
) -> DivergenceResult:
    """Every divergence of ``intervened`` from ``natural``, against the natural-vs-natural
    baseline, as mean ± SE over ``n_splits`` seeded random splits.

    Args:
        natural, intervened: ``[n, D]`` activations (numpy or torch, any device).
        metrics: names from :data:`METRICS`, ``"default"`` (:data:`DEFAULT_METRICS`) or ``"all"``.
        paired: row ``i`` of ``intervened`` is the intervened version of natural row ``i``
            (default: when the sets have the same size). Enables the paired ``mse``.
        max_points: at most this many points per comparison (two halves of ``max_points/2``).
        options: per-metric keyword arguments, e.g. ``{"kde": {"bandwidth": 1.0}}``.
        groups: ``(natural_ids, intervened_ids)``, one id per row (e.g. the example each
            activation came from): split by id instead of by row, so rows of one example (a
            clean prompt and its corrupted twin, several positions) stay on one side.
    """
    check_split_arguments(n_splits, max_points, seed)
    nat, itv = D.check_pair(natural, intervened, names=("natural", "intervened"))
    sv = split_values(
        nat,
        itv,
        metrics=metrics,
        n_splits=n_splits,
        max_points=max_points,
        paired=paired,
        seed=seed,
        options=options,
        groups=groups,
    )
    is_paired = groups is None and bool(paired if paired is not None else len(nat) == len(itv))
    mse = mse_se = float("nan")
    if is_paired:
        per_row = ((D.to_numpy(nat) - D.to_numpy(itv)) ** 2).mean(1)
        m, s = stats.mean_se(per_row)
        mse, mse_se = float(m), float(s)
    return DivergenceResult(
        table=summarize_splits(sv),
        values=sv.values,
        metrics=sv.metrics,
        n_natural=len(nat),
        n_intervened=len(itv),
        n_per_split=sv.n_per_split,
        n_splits=n_splits,
        paired=is_paired,
        seed=seed,
        mse=mse,
        mse_se=mse_se,
        label=label,
    )


__all__ = [
    "ALL_METRICS",
    "DEFAULT_METRICS",
    "METRICS",
    "DivergenceResult",
    "NO_RATIO",
    "MetricSpec",
    "SplitValues",
    "divergences",
    "resolve_metrics",
    "split_values",
    "summarize_splits",
]
