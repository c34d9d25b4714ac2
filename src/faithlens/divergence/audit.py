"""``fl.audit``: how far do interventions push activations off the natural distribution, and is
the divergence harmless or potentially pernicious?

For each condition (a list of interventions applied together), the audit

1. runs the model on natural inputs and on intervened inputs, collecting the activations at the
   audit ``site`` (which may be the intervened site or any site downstream of it);
2. reports every divergence metric against the natural-vs-natural baseline
   (:func:`~faithlens.divergence.compare.divergences`);
3. splits the divergence into the null space (harmless) and row space (potentially pernicious)
   of the linear map that reads the site (``Model.reader``), and summarises the displacement
   each intervention makes (row-space fraction and visibility ``|W r| / (|W| |r|)``);
4. flags dormant-unit recruitment at a downstream ``units`` site.

Interventions may name their source by reference: ``source="clean"`` / ``"corrupt"`` is the
task's clean / corrupted run (resolved into cached activations before any intervened run).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from .. import validate
from ..errors import InputError
from ..interventions import Intervention
from ..models.model import Model
from ..models.sites import SiteLike
from ..results import Result, with_intervals
from ..stats import Interval
from ..tasks.base import Task
from .audit_inputs import (
    SOURCE_REFS,
    Conditions,
    bind_sources,
    cannot_reach,
    check_reachable,
    default_units,
    mean_difference_vector,
)
from .audit_steps import (
    AuditRun,
    ConditionOutcome,
    NaturalActivations,
    audit_condition,
    check_audit_arguments,
    natural_inputs,
    natural_run,
    resolve_reader,
    resolve_units_site,
)
from .compare import SPLIT_LEVEL, split_intervals
from .subspace import row_basis

if TYPE_CHECKING:
    from matplotlib.figure import Figure


# --------------------------------------------------------------------------------------------
# result
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditResult(Result):
    """The divergence audit of one or more intervention conditions at one site.

    ``table``: one row per (condition, space, metric): ``space`` is ``"full"`` (all units),
    ``"row"`` (the reader's row space: what downstream can see) or ``"null"`` (its null space:
    harmless), with intervened and natural-baseline values (mean ± SE over splits), their
    ``excess`` and ``ratio``. ``displacement``: per condition, the mean fraction of each
    intervention's displacement in the row space and its visibility ``|W r| / (|W|_2 |r|)``
    (± SE). ``dormant``: per condition, how many downstream units never active on natural data
    the intervention recruits, and on what fraction of examples.

    ``intervals()``: ``intervened``, ``baseline`` and ``excess`` (one element per row of
    ``table``; the Student t interval over the splits, ``compare.split_intervals``),
    ``row_fraction`` and ``visibility`` (per row of ``displacement``) and
    ``examples_recruiting`` (per row of ``dormant``), these three means over examples with their
    normal 95% intervals. ``to_frame()`` is ``table`` with ``q, q_se, q_ci_low, q_ci_high,
    level``.
    """

    site: str
    conditions: tuple[str, ...]
    table: pd.DataFrame
    displacement: pd.DataFrame
    dormant: pd.DataFrame
    n_natural: int
    reader_shape: tuple[int, ...]
    units_site: str
    threshold: float
    seed: int
    n_splits: int
    notes: tuple[str, ...] = ()

    kind = "audit"

    def intervals(self) -> dict[str, Interval]:
        out = split_intervals(self.table, self.n_splits)
        for frame, names in (
            (self.displacement, ("row_fraction", "visibility")),
            (self.dormant, ("examples_recruiting",)),
        ):
            for q in names:
                est, se = (frame[c].to_numpy(dtype=np.float64) for c in (q, f"{q}_se"))
                out[q] = Interval.from_se(est, se, SPLIT_LEVEL)
        return out

    def to_frame(self) -> pd.DataFrame:
        ivs = split_intervals(self.table, self.n_splits)
        return with_intervals(self.table, ivs, drop=tuple(f"{q}_se" for q in ivs))

    def divergence(self, condition: str | None = None, space: str = "full") -> pd.DataFrame:
        """The rows of one condition (the first by default) and space."""
        cond = condition if condition is not None else self.conditions[0]
        t = self.table
        return t[(t["condition"] == cond) & (t["space"] == space)].reset_index(drop=True)

    def value(
        self, metric: str, condition: str | None = None, space: str = "full"
    ) -> dict[str, float]:
        rows = self.divergence(condition, space)
        row = rows[rows["metric"] == metric]
        if row.empty:
            raise InputError(f"no {metric!r} in space {space!r} for this condition")
        return {
            str(k): float(v)
            for k, v in row.iloc[0].items()
            if k not in ("condition", "space", "metric")
        }

    def flagged(self, condition: str | None = None) -> bool:
        """Whether the condition recruits any dormant unit."""
        cond = condition if condition is not None else self.conditions[0]
        d = self.dormant[self.dormant["condition"] == cond]
        return bool(len(d)) and int(d["n_recruited"].iloc[0]) > 0

    def summary(self) -> str:
        lines = [f"Divergence audit at {self.site} ({self.n_natural} natural points)"]
        for cond in self.conditions:
            lines.append(f"\n[{cond}]")
            for space in ("full", "row", "null"):
                rows = self.divergence(cond, space)
                if rows.empty:
                    continue
                label = {
                    "full": "all units",
                    "row": "row space (visible downstream)",
                    "null": "null space (harmless)",
                }[space]
                lines.append(f"  {label}, dim {int(rows['dim'].iloc[0])}:")
                ivs = split_intervals(rows, self.n_splits)
                for i, rec in enumerate(rows.to_dict("records")):
                    lines.append(
                        f"    {rec['metric']:<10} intervened {ivs['intervened'][i]:.4g}   natural "
                        f"{ivs['baseline'][i]:.4g}   excess {ivs['excess'][i]:+.3g}"
                        f"{_ratio_text(rec['ratio'], rec['baseline'])}"
                    )
            d = self.displacement[self.displacement["condition"] == cond]
            if len(d):
                r = d.iloc[0]
                frac, vis = (
                    Interval.from_se(r[q], r[f"{q}_se"], SPLIT_LEVEL)
                    for q in ("row_fraction", "visibility")
                )
                lines.append(
                    f"  displacement: {frac:.3f} of |delta|^2 in the row space; visibility "
                    f"{vis:.3f}"
                )
            d = self.dormant[self.dormant["condition"] == cond]
            if len(d):
                r = d.iloc[0]
                flag = "FLAG" if int(r["n_recruited"]) else "ok"
                share = Interval.from_se(
                    r["examples_recruiting"], r["examples_recruiting_se"], SPLIT_LEVEL
                )
                lines.append(
                    f"  dormant units at {self.units_site}: {int(r['n_dormant'])} of "
                    f"{int(r['n_units'])} never active naturally; {int(r['n_recruited'])} "
                    f"recruited {list(r['recruited'])[:10]} on {share:.3f} of examples  [{flag}]"
                )
        for n in self.notes:
            lines.append(f"note: {n}")
        return "\n".join(lines)

    def plot(self, ax: Any = None, metric: str = "emd") -> Figure:
        """Per condition, ``metric`` for the intervened set vs the natural baseline, in the full
        space, the row space and the null space."""
        return self._plot(ax, metric=metric)


# --------------------------------------------------------------------------------------------
# the audit
# --------------------------------------------------------------------------------------------


@validate.renamed_argument("task", "data")
def audit(
    model: Model,
    data: Task | Any,
    interventions: Conditions,
    site: SiteLike,
    *,
    base: str | Any = "auto",
    natural: str | Any = "both",
    positions: Any = "metric",
    metrics: str | Sequence[str] | None = None,
    split_metrics: Sequence[str] = ("emd", "nn_mse", "mmd"),
    reader: Any = "auto",
    rtol: float = 1e-6,
    units: str | None = "auto",
    threshold: float = 0.0,
    n_splits: int = 5,
    max_points: int = 5000,
    paired: bool | None = None,
    seed: int = 0,
    options: dict[str, dict[str, Any]] | None = None,
) -> AuditResult:
    """Audit interventions for divergence from the natural distribution at ``site``.

    Args:
        data: a faithlens ``Task`` (natural inputs: its clean and/or corrupted prompts) or any
            inputs the model takes (a tensor of activations for a toy module, token ids, ...).
        interventions: a list of interventions applied together (one condition), or a mapping
            ``name -> list`` (several conditions). ``source="clean"`` / ``"corrupt"`` refers to
            the task's runs.
        site: where activations are compared: the intervened site or any site downstream.
        base: the inputs the interventions run on. ``"auto"``: for a task, the corrupted prompts
            when a source is ``"clean"``, the clean prompts otherwise; for plain inputs, the
            inputs themselves. Or ``"clean"`` / ``"corrupt"`` / explicit inputs.
        natural: the natural reference: ``"both"`` (clean and corrupted runs), ``"clean"``,
            ``"corrupt"``, or explicit inputs (plain-input audits: the inputs by default).
        positions: for sequence models, which positions' activations are compared:
            ``"metric"`` (the task's metric positions), ``"last"``, ``"all"`` (every real
            token), an int or ``[n]`` indices. A site with its own position selection wins.
        metrics: divergence metrics (default: :data:`~faithlens.divergence.DEFAULT_METRICS`;
            ``"all"`` adds local PCA, LLE and KDE).
        split_metrics: the metrics reported in the row and null spaces.
        reader: the ``[out, width]`` matrix that reads the site (``"auto"``: ``Model.reader``;
            None: no split).
        units: the downstream site whose dormant units are checked (``"auto"``:
            :func:`default_units`; None: skip). ``threshold``: a unit is active above it.
        n_splits, max_points, paired, seed, options: see :func:`~faithlens.divergence.divergences`.
    """
    conds, s, names, threshold = check_audit_arguments(
        model,
        data,
        interventions,
        site,
        base=base,
        natural=natural,
        positions=positions,
        metrics=metrics,
        split_metrics=split_metrics,
        rtol=rtol,
        threshold=threshold,
        n_splits=n_splits,
        max_points=max_points,
        paired=paired,
        seed=seed,
    )
    is_task = isinstance(data, Task)
    notes: list[str] = check_reachable(
        model, s, {c: [iv.site_spec.name for iv in ivs] for c, ivs in conds.items()}
    )
    nat_sets = natural_inputs(model, data, is_task, natural)
    units_site = resolve_units_site(model, s, units)
    w = resolve_reader(model, s, reader, notes)
    run = AuditRun(
        model=model,
        task=data,
        is_task=is_task,
        site=s,
        positions=positions,
        base=base,
        natural=natural,
        metrics=names,
        split_metrics=split_metrics,
        rtol=rtol,
        threshold=threshold,
        n_splits=n_splits,
        max_points=max_points,
        paired=paired,
        seed=seed,
        options=options,
        units_site=units_site,
        reader=w,
    )
    nat = natural_run(run, nat_sets)
    row_b = row_basis(w, rtol=rtol) if w is not None else None
    spec = float(torch.linalg.svdvals(w.double().cpu()).max()) if w is not None else None
    outcomes = []
    for cname, ivs in conds.items():
        out = audit_condition(run, cname, ivs, nat, row_b, spec)
        notes += out.notes
        outcomes.append(out)
    return _assemble(run, conds, nat, outcomes, notes)


def _assemble(
    run: AuditRun,
    conds: dict[str, list[Intervention]],
    nat: NaturalActivations,
    outcomes: list[ConditionOutcome],
    notes: list[str],
) -> AuditResult:
    """The :class:`AuditResult` of every condition."""
    w = run.reader
    return AuditResult(
        site=str(run.site),
        conditions=tuple(conds),
        table=pd.concat([o.table for o in outcomes], ignore_index=True),
        displacement=pd.DataFrame(
            [o.displacement for o in outcomes if o.displacement is not None],
            columns=[
                "condition",
                "n_moved",
                "row_dim",
                "width",
                "row_fraction",
                "row_fraction_se",
                "visibility",
                "visibility_se",
            ],
        ),
        dormant=pd.DataFrame(
            [o.dormant for o in outcomes if o.dormant is not None],
            columns=[
                "condition",
                "n_units",
                "n_dormant",
                "n_recruited",
                "recruited",
                "max_activation",
                "fire_rate",
                "examples_recruiting",
                "examples_recruiting_se",
            ],
        ),
        n_natural=int(nat.acts.shape[0]),
        reader_shape=tuple(int(x) for x in w.shape) if w is not None else (),
        units_site=run.units_site or "",
        threshold=float(run.threshold),
        seed=run.seed,
        n_splits=run.n_splits,
        notes=tuple(notes),
    )


def _ratio_text(ratio: float, baseline: float) -> str:
    """The ratio, when it means something (a positive baseline), else why there is none."""
    if baseline > 0 and np.isfinite(ratio):
        return f"   ratio {ratio:.2f}"
    return "   no ratio (baseline <= 0)" if baseline <= 0 else ""


__all__ = [
    "SOURCE_REFS",
    "AuditResult",
    "Conditions",
    "audit",
    "bind_sources",
    "cannot_reach",
    "check_reachable",
    "default_units",
    "mean_difference_vector",
]
