"""The steps of :func:`~faithlens.divergence.audit`: check the arguments, resolve the natural
inputs, the units site and the reader, run the natural inputs, then audit each condition (its
intervened run, its divergences in the full, row and null spaces, its displacement and the
dormant units it recruits)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .. import validate
from ..errors import InputError, ShapeError
from ..interventions import Intervention
from ..models.model import Inputs, Model
from ..models.sites import Site, SiteLike, as_site
from ..tasks.base import Task
from .audit_inputs import (
    Conditions,
    as_conditions,
    bind_sources,
    default_units,
    gather_rows,
    gather_token_ids,
    select_rows,
    source_ref,
)
from .compare import DivergenceResult, check_split_arguments, divergences, resolve_metrics
from .dormant import dormant_units
from .subspace import displacement_summary, split_divergences


def check_audit_arguments(
    model: Model,
    task: Task | Any,
    interventions: Conditions,
    site: SiteLike,
    *,
    base: Any,
    natural: Any,
    positions: Any,
    metrics: str | Sequence[str] | None,
    split_metrics: Sequence[str],
    rtol: float,
    threshold: float,
    n_splits: int,
    max_points: int,
    paired: bool | None,
    seed: int,
) -> tuple[dict[str, list[Intervention]], Site, tuple[str, ...], float]:
    """Refuse every argument that makes no sense, before any run: the conditions, the site, the
    metrics (resolved) and the threshold (as a float)."""
    conds = as_conditions(interventions)
    s = as_site(site)
    model.site_info(s)  # unknown site: SiteError with the nearest names, before any work
    names = resolve_metrics(metrics)
    if isinstance(split_metrics, str):
        raise validate.fail(
            "split_metrics", split_metrics, "must be a list of metric names", "e.g. ['emd']"
        )
    resolve_metrics(list(split_metrics))
    is_task = isinstance(task, Task)
    threshold = validate.finite_float(
        "threshold", threshold, fix="a unit is active above a finite threshold, e.g. 0.0"
    )
    validate.finite_float("rtol", rtol, low=0.0, high=1.0, low_open=True, high_open=True)
    check_split_arguments(n_splits, max_points, seed)
    if paired is not None and not isinstance(paired, bool):
        raise validate.fail("paired", paired, "must be True, False or None")
    if isinstance(positions, str):
        validate.choice("positions", positions, ("metric", "last", "all"))
    elif isinstance(positions, bool) or not isinstance(
        positions, (int, Tensor, np.ndarray, Sequence)
    ):
        raise validate.fail(
            "positions", positions, "must be 'metric', 'last', 'all', an int or [n] indices"
        )
    for arg, value in (("base", base), ("natural", natural)):
        if isinstance(value, str):
            allowed = ("clean", "corrupt", "auto" if arg == "base" else "both")
            validate.choice(arg, value, allowed)
    if is_task:
        task.check_model(model, "audit", logits=False)
    return conds, s, names, threshold


def _inputs_for(model: Model, task: Any, is_task: bool, which: Any) -> Inputs:
    """``"clean"`` / ``"corrupt"`` (a task's), or explicit inputs."""
    if is_task and isinstance(which, str):
        if which == "clean":
            return task.clean
        if which == "corrupt":
            return task.corrupt
        raise InputError(f"audit: expected 'clean', 'corrupt' or inputs, got {which!r}")
    if isinstance(which, str) and not is_task:
        raise InputError(f"audit: {which!r} needs a faithlens Task; pass inputs instead")
    return model.prepare(which)


def natural_inputs(model: Model, task: Any, is_task: bool, natural: Any) -> list[Inputs]:
    """The natural reference's input sets."""
    if is_task:
        if isinstance(natural, str) and natural == "both":
            return [task.clean, task.corrupt]
        return [_inputs_for(model, task, is_task, natural)]
    return [model.prepare(task if (isinstance(natural, str) and natural == "both") else natural)]


def resolve_units_site(model: Model, s: Site, units: str | None) -> str | None:
    """The site whose dormant units are checked (None: skip), checked to exist."""
    units_site: str | None
    if units == "auto":
        units_site = default_units(model, s)
    else:
        units_site = units
    if units_site is not None:
        model.site_info(as_site(units_site))
    return units_site


def resolve_reader(model: Model, s: Site, reader: Any, notes: list[str]) -> Tensor | None:
    """The ``[out, width]`` matrix that reads the site (None: no split; then a note says why)."""
    w: Tensor | None = None
    if isinstance(reader, str):
        if reader != "auto":
            raise InputError(f"audit: reader must be 'auto', None or a matrix, not {reader!r}")
        found = model.reader(s)
        if found is None:
            notes.append(
                f"no single linear map reads {s.name} (e.g. the residual stream), so there is no "
                "null/row-space split; pass reader=<[out, width] matrix> to choose one"
            )
        else:
            w = found[0].detach()
    elif reader is not None:
        w = torch.as_tensor(reader).detach()
    return w


@dataclass(frozen=True)
class AuditRun:
    """What every step of one audit shares: its inputs, settings, units site and reader."""

    model: Model
    task: Any
    is_task: bool
    site: Site
    positions: Any
    base: Any
    natural: Any
    metrics: tuple[str, ...]
    split_metrics: Sequence[str]
    rtol: float
    threshold: float
    n_splits: int
    max_points: int
    paired: bool | None
    seed: int
    options: dict[str, dict[str, Any]] | None
    units_site: str | None
    reader: Tensor | None

    @property
    def cache_sites(self) -> list[Site]:
        """The audited site, and the units site at the same positions."""
        s = self.site
        cache_sites = [Site(s.name, s.positions, s.units)]
        if self.units_site is not None:
            cache_sites.append(Site(as_site(self.units_site).name, *(select_rows(s))))
        return cache_sites

    def inputs_for(self, which: Any) -> Inputs:
        return _inputs_for(self.model, self.task, self.is_task, which)

    def pos_for(self, inputs: Inputs) -> Any:
        """The positions compared for ``inputs``."""
        if self.positions == "metric":
            if self.is_task and inputs.ids is not None and inputs.ids.shape[0] == self.task.n:
                return self.task.positions
            return "last" if inputs.ids is not None else None
        return self.positions

    def gather(self, act: Tensor, inputs: Inputs) -> Tensor:
        return gather_rows(act, inputs, self.pos_for(inputs), self.site)

    def gather_ids(self, act: Tensor, inputs: Inputs) -> np.ndarray:
        return gather_token_ids(act, inputs, self.pos_for(inputs), self.site)


@dataclass(frozen=True)
class NaturalActivations:
    """The natural activations at the site, the units site's, and each row's example."""

    acts: Tensor
    units: list[Tensor]
    ids: list[np.ndarray]


def natural_run(run: AuditRun, nat_sets: list[Inputs]) -> NaturalActivations:
    """Run the natural inputs and gather their activations (checked against the reader)."""
    s, w, cache_sites = run.site, run.reader, run.cache_sites
    nat_acts, nat_units, nat_ids = [], [], []
    for inp in nat_sets:
        out = run.model.run(inp, cache=cache_sites)
        nat_acts.append(run.gather(out.cache[s.name], inp))
        nat_ids.append(run.gather_ids(out.cache[s.name], inp))
        if run.units_site is not None:
            nat_units.append(run.gather(out.cache[cache_sites[1].name], inp))
    nat = torch.cat(nat_acts).float()
    if w is not None and w.shape[1] != nat.shape[1]:
        raise ShapeError(
            f"audit: the reader of {s.name} reads {w.shape[1]} units but the site has "
            f"{nat.shape[1]}"
        )
    return NaturalActivations(nat, nat_units, nat_ids)


@dataclass(frozen=True)
class ConditionOutcome:
    """One condition's table rows, displacement and dormancy rows, and notes."""

    table: pd.DataFrame
    displacement: dict[str, Any] | None
    dormant: dict[str, Any] | None
    notes: list[str]


def audit_condition(
    run: AuditRun,
    cname: str,
    ivs: list[Intervention],
    nat: NaturalActivations,
    row_b: Tensor | None,
    spec: float | None,
) -> ConditionOutcome:
    """Run one condition on its base inputs and compare it with the natural activations: every
    divergence in the full space, the row and null spaces, the displacement and the dormant
    units recruited."""
    model, task, s, base = run.model, run.task, run.site, run.base
    refs = {r for r in (source_ref(iv) for iv in ivs) if r is not None}
    if isinstance(base, str) and base == "auto":
        if run.is_task:
            base_inp = task.corrupt if "clean" in refs else task.clean
        else:
            base_inp = model.prepare(task)
    else:
        base_inp = run.inputs_for(base)
    bound = bind_sources(model, task if run.is_task else None, ivs)
    cache_sites = run.cache_sites
    out_i = model.run(base_inp, bound, cache=cache_sites)
    out_b = model.run(base_inp, cache=[cache_sites[0]])
    itv = run.gather(out_i.cache[s.name], base_inp).float()
    base_acts = run.gather(out_b.cache[s.name], base_inp).float()
    # For a task, rows are grouped by example: a clean prompt, its corrupted twin and the
    # intervened run of the same example never straddle a natural/natural comparison.
    groups = None
    if run.is_task and isinstance(run.natural, str) and (not isinstance(base, Inputs | Tensor)):
        gi = run.gather_ids(out_i.cache[s.name], base_inp)
        groups = (np.concatenate(nat.ids), gi)
    t, disp, notes = divergence_rows(run, cname, nat.acts, itv, base_acts, groups, row_b, spec)
    dorm = None
    if run.units_site is not None:
        iu = run.gather(out_i.cache[cache_sites[1].name], base_inp)
        rep = dormant_units(torch.cat(nat.units), iu, threshold=run.threshold)
        dorm = {
            "condition": cname,
            "n_units": rep.n_units,
            "n_dormant": int(rep.dormant.size),
            "n_recruited": int(rep.recruited.size),
            "recruited": [int(u) for u in rep.recruited],
            "max_activation": [float(v) for v in rep.max_activation],
            "fire_rate": [float(v) for v in rep.fire_rate],
            "examples_recruiting": rep.examples_recruiting,
            "examples_recruiting_se": rep.examples_recruiting_se,
        }
    return ConditionOutcome(t, disp, dorm, notes)


def divergence_rows(
    run: AuditRun,
    cname: str,
    nat: Tensor,
    itv: Tensor,
    base_acts: Tensor,
    groups: Any,
    row_b: Tensor | None,
    spec: float | None,
) -> tuple[pd.DataFrame, dict[str, Any] | None, list[str]]:
    """One condition's divergences (full space; row and null spaces when there is a reader) and
    the summary of its displacement in the row space."""
    w = run.reader
    res: DivergenceResult = divergences(
        nat,
        itv,
        metrics=run.metrics,
        n_splits=run.n_splits,
        max_points=run.max_points,
        paired=run.paired,
        seed=run.seed,
        options=run.options,
        groups=groups,
        label=cname,
    )
    t = res.table.copy()
    t.insert(0, "dim", nat.shape[1])
    t.insert(0, "space", "full")
    disp, notes = None, []
    if w is not None:
        sp = split_divergences(
            nat,
            itv,
            w,
            metrics=list(run.split_metrics),
            n_splits=run.n_splits,
            max_points=run.max_points,
            paired=run.paired,
            seed=run.seed,
            rtol=run.rtol,
            options=run.options,
            groups=groups,
            basis=row_b,
        )
        sp = sp[sp["space"] != "full"]
        t = pd.concat([t, sp], ignore_index=True)
        delta = itv - base_acts
        moved = delta.abs().amax(1) > 0
        if bool(moved.any()):
            ds = displacement_summary(
                delta[moved], w, rtol=run.rtol, basis=row_b, spectral_norm=spec
            )
            disp = {"condition": cname, "n_moved": int(moved.sum()), **ds}
        else:
            notes.append(
                f"{cname}: the interventions do not change {run.site.name} at the audited positions"
            )
    t.insert(0, "condition", cname)
    return t, disp, notes
