"""The synthetic CL-loss experiment of Grant et al. (2025): DAS vs CL vs DAS+CL on the synthetic
DAS divisions, with cross-task (OOD) transfer.

For each division, seed and loss type, an alignment (the non-orthogonal invertible
parameterisation, one aligned dim) is trained on each task and evaluated on the other task. One
row per (division, seed, loss, direction) holds the training-task IIA and EMDs and the
cross-task ones. ``summarize`` aggregates mean ± SEM over seeds x directions, and
``regression`` fits OOD IIA on training-task feature EMD (the paper's inner_square regression).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import stats
from .. import validate as V
from ..divergence import distances as D
from ..tasks.synthetic_das import DIVISIONS, FEATURE_DIMS, SITE, synthetic_das
from .train import AlignmentEval, check_das_args, das

#: Loss names in the paper -> faithlens ``das(loss=...)``.
LOSS_TYPES = {"DAS": "iia", "CL": "cl", "DAS+CL": "iia+cl"}


def run_cl_synthetic(
    divisions: Sequence[str] = ("og_holdouts",),
    seeds: Sequence[int] = (11111, 22222, 33333, 44444, 55555),
    losses: Sequence[str] = ("DAS", "CL", "DAS+CL"),
    *,
    epochs: int = 601,
    eval_every: int = 10,
    lr: float = 0.01,
    cl_weight: float = 100.0,
    n_per_class: int = 100,
    extra_dims: int = 16,
    classifier_epochs: int = 1000,
    method: str = "linear",
    log: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Train and cross-evaluate every (division, seed, loss, direction); one row each."""
    # every argument is checked before the first classifier is trained
    for name, values in (("divisions", divisions), ("seeds", seeds), ("losses", losses)):
        if isinstance(values, (str, bytes)) or not list(values):
            raise V.fail(name, values, "must be a non-empty list")
    for d in divisions:
        V.choice("divisions", d, sorted(DIVISIONS))
    for sd in seeds:
        V.nonnegative_int("seeds", sd)
    for ln in losses:
        V.choice("losses", ln, list(LOSS_TYPES))
    check_das_args(
        epochs=epochs,
        eval_every=eval_every,
        lr=lr,
        cl_weight=cl_weight,
        method=method,
        loss="iia+cl" if any(LOSS_TYPES[ln] != "iia" for ln in losses) else "iia",
    )
    V.min_examples("n_per_class", n_per_class, what="the synthetic task")
    V.nonnegative_int("extra_dims", extra_dims)
    V.positive_int("classifier_epochs", classifier_epochs, fix="train for at least one epoch")
    if log is not None and not callable(log):
        raise V.fail("log", log, "must be a callable (line) or None")
    rows = []
    for division in divisions:
        for seed in seeds:
            t_build = time.perf_counter()
            tasks = synthetic_das(
                division,
                seed,
                n_per_class=n_per_class,
                extra_dims=extra_dims,
                classifier_epochs=classifier_epochs,
            )
            build_s = time.perf_counter() - t_build
            for loss_name in losses:
                loss = LOSS_TYPES[loss_name]
                for direction in (0, 1):
                    train, test = tasks[direction], tasks[1 - direction]
                    t0 = time.perf_counter()
                    res = das(
                        train.model,
                        train.data,
                        SITE,
                        dims=1,
                        method=method,
                        loss=loss,
                        cl_weight=cl_weight,
                        epochs=epochs,
                        lr=lr,
                        eval_every=eval_every,
                        emd_dims=list(FEATURE_DIMS),
                        seed=seed,
                    )
                    ood = res.evaluate(test.model, test.data, seed=seed)
                    own = res.evaluate(train.model, train.data, seed=seed)
                    row = {
                        "division": division,
                        "seed": seed,
                        "loss": loss_name,
                        "direction": f"task{direction + 1}->task{2 - direction}",
                        "iia": res.iia,
                        "emd": paper_emd(own),
                        "row_emd": paper_emd(own, FEATURE_DIMS),
                        "emd_exact": res.emd,
                        "row_emd_exact": res.emd_features,
                        "cross_iia": ood.iia,
                        "cross_correct": int(np.asarray(ood.correct).sum()),
                        "cross_n": int(np.asarray(ood.correct).size),
                        "cross_emd": paper_emd(ood),
                        "cross_row_emd": paper_emd(ood, FEATURE_DIMS),
                        "cross_emd_exact": ood.emd,
                        "cross_row_emd_exact": ood.emd_features,
                        "selected_epoch": res.selected_epoch,
                        "classifier_val_acc": train.classifier_val_acc,
                        "seconds": time.perf_counter() - t0,
                        "build_seconds": build_s,
                    }
                    rows.append(row)
                    if log is not None:
                        log(
                            f"{division} seed={seed} {loss_name:<6} {row['direction']}: "
                            f"IIA {row['iia']:.4f} OOD IIA {row['cross_iia']:.4f} "
                            f"row EMD {row['row_emd']:.4f} OOD row EMD {row['cross_row_emd']:.4f} "
                            f"(epoch {row['selected_epoch']}, {row['seconds']:.1f}s)"
                        )
    return pd.DataFrame(rows)


def paper_emd(ev: AlignmentEval, dims: Sequence[int] | None = None) -> float:
    """The paper's "EMD" of an evaluation: geomloss' debiased Sinkhorn divergence
    (:func:`~faithlens.divergence.distances.sinkhorn`, ``scaling=0.5``) of the intervened from
    the natural activations, on ``dims`` (all units when None). The replication reports it so
    its figures compare with the paper's; the ``*_exact`` columns hold the exact EMD."""
    return D.sinkhorn(ev.intervened, ev.natural, dims=None if dims is None else list(dims))


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and SEM over seeds x directions per (division, loss)."""
    out = []
    cols = ["iia", "cross_iia", "row_emd", "cross_row_emd", "emd", "cross_emd"]
    cols += [c + "_exact" for c in cols[2:] if c + "_exact" in df.columns]
    for (division, loss), g in df.groupby(["division", "loss"], sort=False):
        row: dict[str, object] = {"division": division, "loss": loss, "n": len(g)}
        for c in cols:
            m, s = stats.mean_se(g[c].to_numpy())
            row[c] = float(m)
            row[c + "_se"] = float(s)
        out.append(row)
    return pd.DataFrame(out)


@dataclass(frozen=True)
class Regression:
    """Ordinary least squares ``y = intercept + slope x``."""

    slope: float
    intercept: float
    r2: float
    f: float
    p: float
    n: int


def regression(df: pd.DataFrame, x: str = "row_emd", y: str = "cross_iia") -> Regression:
    """OLS of ``y`` on ``x`` (the paper: OOD IIA on training-task feature EMD, inner_square)."""
    from scipy.stats import linregress

    xs, ys = df[x].to_numpy(float), df[y].to_numpy(float)
    fit = linregress(xs, ys)
    r2 = float(fit.rvalue**2)
    n = len(xs)
    f = r2 / (1 - r2) * (n - 2) if r2 < 1 else float("inf")
    return Regression(float(fit.slope), float(fit.intercept), r2, float(f), float(fit.pvalue), n)


def og_ratio(summary: pd.DataFrame, division: str = "og_holdouts") -> float:
    """DAS / CL cross-task feature EMD (the paper: 0.032 / 0.007)."""
    s = summary[summary["division"] == division].set_index("loss")
    das_v = float(s.loc["DAS", "cross_row_emd"])  # type: ignore[arg-type]
    cl_v = float(s.loc["CL", "cross_row_emd"])  # type: ignore[arg-type]
    return das_v / cl_v


def _pm(r: pd.Series, c: str, p: int = 4) -> str:
    return f"{r[c]:.{p}f}±{r[c + '_se']:.{p}f}"


def table(summary: pd.DataFrame) -> str:
    """A plain-text table of :func:`summarize`'s output."""
    lines = [
        f"{'division':<14}{'loss':<8}{'n':>3}  {'IIA':>16}  {'OOD IIA':>16}  {'row EMD':>16}  "
        f"{'OOD row EMD':>16}  {'OOD EMD (all)':>16}"
    ]
    for _, r in summary.iterrows():
        lines.append(
            f"{r['division']:<14}{r['loss']:<8}{int(r['n']):>3}  {_pm(r, 'iia'):>16}  "
            f"{_pm(r, 'cross_iia'):>16}  {_pm(r, 'row_emd'):>16}  {_pm(r, 'cross_row_emd'):>16}  "
            f"{_pm(r, 'cross_emd', 3):>16}"
        )
    return "\n".join(lines)


def paper_seeds(n: int = 5) -> list[int]:
    """The paper's seeds: 11111 * k for k = 1..n."""
    return [11111 * k for k in range(1, n + 1)]


__all__ = [
    "LOSS_TYPES",
    "Regression",
    "og_ratio",
    "paper_seeds",
    "regression",
    "run_cl_synthetic",
    "summarize",
    "table",
]
