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

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .. import validate
from ..errors import InputError, ShapeError, SiteError
from ..interventions import Intervention
from ..models.model import Inputs, Model
from ..models.sites import Site, SiteLike, as_site
from ..results import Result
from ..tasks.base import Task
from .compare import (
    DivergenceResult,
    check_split_arguments,
    divergences,
    resolve_metrics,
)
from .dormant import dormant_units
from .subspace import displacement_summary, row_basis, split_divergences

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SOURCE_REFS = ("clean", "corrupt")
Conditions = Mapping[str, Sequence[Intervention]] | Sequence[Intervention] | Intervention


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _conditions(interventions: Conditions) -> dict[str, list[Intervention]]:
    if isinstance(interventions, Intervention):
        interventions = [interventions]
    if isinstance(interventions, Mapping):
        out = {
            str(k): list(v if not isinstance(v, Intervention) else [v])
            for k, v in interventions.items()
        }
    else:
        ivs = list(interventions)
        if not ivs:
            raise InputError("audit: no interventions given")
        name = " + ".join(iv.describe() for iv in ivs[:3]) + (
            f" + {len(ivs) - 3} more" if len(ivs) > 3 else ""
        )
        out = {name: ivs}
    for name, ivs in out.items():
        if not ivs:
            raise InputError(f"audit: condition {name!r} has no interventions")
        for iv in ivs:
            if not isinstance(iv, Intervention):
                raise InputError(
                    f"audit: condition {name!r} holds a {type(iv).__name__}, not a faithlens "
                    "intervention (fl.Patch, fl.Add, fl.Interchange, ...)"
                )
    return out


#: Kinds computed side by side in one layer: one never feeds another of the same order.
_PARALLEL = ("q", "k", "v", "head")


def cannot_reach(model: Model, target: SiteLike, source: SiteLike) -> bool:
    """Whether a change at ``source`` provably leaves ``target`` unchanged: ``target`` comes
    before ``source`` in the forward pass (or beside it: two heads of one layer). Raw module
    sites have no known order and are assumed reachable."""
    t, s = model.site_info(as_site(target)), model.site_info(as_site(source))
    n = model.n_layers
    to, so = t.order(n), s.order(n)
    if to is None or so is None:
        return False
    if to < so:
        return True
    return to == so and t.name != s.name and t.kind in _PARALLEL and s.kind in _PARALLEL


def _downstream_site(model: Model, sources: Sequence[str]) -> str | None:
    """A site every one of ``sources`` reaches (the residual stream after the last of them)."""
    layers = [model.site_info(as_site(x)).layer for x in sources]
    if any(L is None for L in layers):
        return None
    last = max(L for L in layers if L is not None)
    for name in (f"resid_post.{last}", "ln_final"):
        try:
            model.site_info(name)
        except SiteError:
            continue
        if not any(cannot_reach(model, name, x) for x in sources):
            return name
    return None


def check_reachable(
    model: Model, site: SiteLike, conditions: Mapping[str, Sequence[str]]
) -> list[str]:
    """Before any work: the audited ``site`` must be reachable from each condition's
    interventions (given by site name). A site upstream of every intervention of a condition
    never changes, so every divergence ratio would be ~1 and measure nothing: that is a
    :class:`SiteError` naming the site, the interventions and a reachable site. Returns notes for
    conditions where only some interventions can reach the site."""
    s = as_site(site).name
    notes = []
    for cname, sources in conditions.items():
        blocked = [x for x in sources if cannot_reach(model, s, x)]
        if not blocked:
            continue
        if len(blocked) == len(sources):
            alt = _downstream_site(model, sources)
            shown = ", ".join(list(dict.fromkeys(sources))[:6]) + (
                " ..." if len(set(sources)) > 6 else ""
            )
            raise SiteError(
                f"audit: site {s} is upstream of every intervention of {cname!r} ({shown}): "
                "they cannot change it, so the audit would measure nothing. Audit a site at or "
                "after the interventions" + (f", such as {alt}" if alt is not None else "")
            )
        notes.append(
            f"{cname}: {len(blocked)} of {len(sources)} interventions ({', '.join(blocked[:4])}"
            f"{' ...' if len(blocked) > 4 else ''}) are downstream of {s} and cannot change it"
        )
    return notes


def _source_ref(iv: Intervention) -> str | None:
    src = getattr(iv, "source", None)
    if isinstance(src, str):
        if src not in SOURCE_REFS:
            raise InputError(
                f"{iv.describe()}: source {src!r} is not a reference audit knows; use 'clean', "
                "'corrupt', a tensor or a run's cache"
            )
        return src
    return None


def bind_sources(
    model: Model, task: Task | None, interventions: Sequence[Intervention]
) -> list[Intervention]:
    """Replace ``source="clean"`` / ``"corrupt"`` by the task's cached activations at each
    intervention's site (one run per referenced input set, caching every site needed)."""
    if task is not None and callable(getattr(task, "bind", None)):
        for iv in interventions:
            _source_ref(iv)  # a clear error for unknown references
        return list(task.bind(model, interventions))
    refs: dict[str, list[str]] = {}
    for iv in interventions:
        r = _source_ref(iv)
        if r is not None:
            if task is None:
                raise InputError(
                    f"{iv.describe()}: source={r!r} refers to a task's run, but audit was given "
                    "plain inputs; pass a faithlens Task or concrete source activations"
                )
            refs.setdefault(r, []).append(iv.site_spec.name)
    caches: dict[str, dict[str, Tensor]] = {}
    for r, names in refs.items():
        assert task is not None
        inputs = task.clean if r == "clean" else task.corrupt
        out = model.run(inputs, cache=[Site(n) for n in dict.fromkeys(names)])
        caches[r] = out.cache
    bound: list[Intervention] = []
    for iv in interventions:
        r = _source_ref(iv)
        if r is None:
            bound.append(iv)
        else:
            bound.append(dataclasses.replace(iv, source=caches[r][iv.site_spec.name]))  # type: ignore[type-var]
    return bound


def _gather(act: Tensor, inputs: Inputs, positions: Any, site: Site) -> Tensor:
    """``[n_points, width]`` from a cached activation: the site's own selection if it has one,
    else the audit's ``positions``: ``"all"`` (every real token), an int/tensor per example."""
    if act.dim() == 2:
        return act
    if act.dim() != 3:
        return act.reshape(act.shape[0], -1)
    if site.positions is not None:
        return act.reshape(-1, act.shape[-1])
    if positions is None or (isinstance(positions, str) and positions == "all"):
        if inputs.mask is not None:
            m = inputs.mask.to(act.device).bool()
            if m.shape == act.shape[:2]:
                return act[m]
        return act.reshape(-1, act.shape[-1])
    n = act.shape[0]
    if isinstance(positions, str):
        if positions != "last":
            raise InputError(
                f"audit: positions must be 'all', 'last', an int or a tensor, not {positions!r}"
            )
        p = inputs.last
        assert p is not None
    elif isinstance(positions, int):
        p = torch.full((n,), positions, dtype=torch.long)
    else:
        p = torch.as_tensor(positions).long()
    p = p.to(act.device)
    if p.dim() == 1:
        p = p[:, None]
    if p.shape[0] != n:
        raise ShapeError(f"audit: positions has {p.shape[0]} rows but the run has {n} examples")
    rows = torch.arange(n, device=act.device)[:, None]
    return act[rows, p].reshape(-1, act.shape[-1])


def _gather_ids(act: Tensor, inputs: Inputs, positions: Any, site: Site) -> np.ndarray:
    """The example index of each row :func:`_gather` returns (same layout)."""
    n = act.shape[0]
    ex = torch.arange(n)
    if act.dim() == 2:
        return ex.numpy()
    if act.dim() != 3:
        return ex.numpy()
    k = act.shape[1]
    if site.positions is not None:
        return ex.repeat_interleave(k).numpy()
    if positions is None or (isinstance(positions, str) and positions == "all"):
        if inputs.mask is not None and tuple(inputs.mask.shape) == tuple(act.shape[:2]):
            return ex[:, None].expand(n, k)[inputs.mask.cpu().bool()].numpy()
        return ex.repeat_interleave(k).numpy()
    if isinstance(positions, (str, int)):
        return ex.numpy()
    p = torch.as_tensor(positions)
    per = 1 if p.dim() <= 1 else int(p.shape[1])
    return ex.repeat_interleave(per).numpy()


def default_units(model: Model, site: SiteLike) -> str | None:
    """The downstream units whose dormancy the audit checks by default: the output of the
    linear layer reading the site (raw sites: its pre-activations), or the next MLP's neurons
    (``mlp_post``) for canonical transformer sites; None when there is none."""
    s = as_site(site)
    info = model.site_info(s)
    if info.kind == "module":
        if info.hook.io == "in" and model.reader(s.name) is not None:
            return f"module:{info.hook.module}"
        return None
    n = model.n_layers
    if info.layer is None:
        return None
    same_layer_before_mlp = info.kind in (
        "resid_pre",
        "attn_in",
        "q",
        "k",
        "v",
        "head",
        "attn_out",
        "resid_mid",
        "mlp_in",
    )
    layer = info.layer if same_layer_before_mlp else info.layer + 1
    if layer >= n:
        return None
    name = f"mlp_post.{layer}"
    try:
        model.site_info(name)
    except SiteError:
        return None
    return name


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

    def to_frame(self) -> pd.DataFrame:
        return self.table.copy()

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
                for _, r in rows.iterrows():
                    lines.append(
                        f"    {r['metric']:<10} intervened {r['intervened']:.4g} ± "
                        f"{r['intervened_se']:.2g}   natural {r['baseline']:.4g} ± "
                        f"{r['baseline_se']:.2g}   excess {r['excess']:+.3g} ± "
                        f"{r['excess_se']:.2g}{_ratio_text(r['ratio'], r['baseline'])}"
                    )
            d = self.displacement[self.displacement["condition"] == cond]
            if len(d):
                r = d.iloc[0]
                lines.append(
                    f"  displacement: {r['row_fraction']:.3f} ± {r['row_fraction_se']:.3f} of "
                    f"|delta|^2 in the row space; visibility {r['visibility']:.3f} ± "
                    f"{r['visibility_se']:.3f}"
                )
            d = self.dormant[self.dormant["condition"] == cond]
            if len(d):
                r = d.iloc[0]
                flag = "FLAG" if int(r["n_recruited"]) else "ok"
                lines.append(
                    f"  dormant units at {self.units_site}: {int(r['n_dormant'])} of "
                    f"{int(r['n_units'])} never active naturally; {int(r['n_recruited'])} "
                    f"recruited {list(r['recruited'])[:10]} on {r['examples_recruiting']:.3f} ± "
                    f"{r['examples_recruiting_se']:.3f} of examples  [{flag}]"
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


def audit(
    model: Model,
    task: Task | Any,
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
        task: a faithlens ``Task`` (natural inputs: its clean and/or corrupted prompts) or any
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
    conds = _conditions(interventions)
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
    notes: list[str] = check_reachable(
        model, s, {c: [iv.site_spec.name for iv in ivs] for c, ivs in conds.items()}
    )

    def inputs_for(which: Any) -> Inputs:
        if is_task and isinstance(which, str):
            if which == "clean":
                return task.clean
            if which == "corrupt":
                return task.corrupt
            raise InputError(f"audit: expected 'clean', 'corrupt' or inputs, got {which!r}")
        if isinstance(which, str) and not is_task:
            raise InputError(f"audit: {which!r} needs a faithlens Task; pass inputs instead")
        return model.prepare(which)

    # natural inputs
    if is_task:
        if isinstance(natural, str) and natural == "both":
            nat_sets = [task.clean, task.corrupt]
        else:
            nat_sets = [inputs_for(natural)]
    else:
        nat_sets = [
            model.prepare(task if (isinstance(natural, str) and natural == "both") else natural)
        ]

    def pos_for(inputs: Inputs) -> Any:
        if positions == "metric":
            if is_task and inputs.ids is not None and inputs.ids.shape[0] == task.n:
                return task.positions
            return "last" if inputs.ids is not None else None
        return positions

    units_site: str | None
    if units == "auto":
        units_site = default_units(model, s)
    else:
        units_site = units
    if units_site is not None:
        model.site_info(as_site(units_site))
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

    cache_sites = [Site(s.name, s.positions, s.units)]
    if units_site is not None:
        cache_sites.append(Site(as_site(units_site).name, *(_sel(s))))

    # natural runs
    nat_acts, nat_units, nat_ids = [], [], []
    for inp in nat_sets:
        out = model.run(inp, cache=cache_sites)
        nat_acts.append(_gather(out.cache[s.name], inp, pos_for(inp), s))
        nat_ids.append(_gather_ids(out.cache[s.name], inp, pos_for(inp), s))
        if units_site is not None:
            nat_units.append(_gather(out.cache[cache_sites[1].name], inp, pos_for(inp), s))
    nat = torch.cat(nat_acts).float()
    if w is not None and w.shape[1] != nat.shape[1]:
        raise ShapeError(
            f"audit: the reader of {s.name} reads {w.shape[1]} units but the site has "
            f"{nat.shape[1]}"
        )

    row_b = row_basis(w, rtol=rtol) if w is not None else None
    spec = float(torch.linalg.svdvals(w.double().cpu()).max()) if w is not None else None
    frames, disp_rows, dorm_rows = [], [], []
    for cname, ivs in conds.items():
        refs = {r for r in (_source_ref(iv) for iv in ivs) if r is not None}
        if isinstance(base, str) and base == "auto":
            if is_task:
                base_inp = task.corrupt if "clean" in refs else task.clean
            else:
                base_inp = model.prepare(task)
        else:
            base_inp = inputs_for(base)
        bound = bind_sources(model, task if is_task else None, ivs)
        out_i = model.run(base_inp, bound, cache=cache_sites)
        out_b = model.run(base_inp, cache=[cache_sites[0]])
        itv = _gather(out_i.cache[s.name], base_inp, pos_for(base_inp), s).float()
        base_acts = _gather(out_b.cache[s.name], base_inp, pos_for(base_inp), s).float()
        # For a task, rows are grouped by example: a clean prompt, its corrupted twin and the
        # intervened run of the same example never straddle a natural/natural comparison.
        groups = None
        if is_task and isinstance(natural, str) and (not isinstance(base, Inputs | Tensor)):
            gi = _gather_ids(out_i.cache[s.name], base_inp, pos_for(base_inp), s)
            groups = (np.concatenate(nat_ids), gi)
        res: DivergenceResult = divergences(
            nat,
            itv,
            metrics=names,
            n_splits=n_splits,
            max_points=max_points,
            paired=paired,
            seed=seed,
            options=options,
            groups=groups,
            label=cname,
        )
        t = res.table.copy()
        t.insert(0, "dim", nat.shape[1])
        t.insert(0, "space", "full")
        if w is not None:
            sp = split_divergences(
                nat,
                itv,
                w,
                metrics=list(split_metrics),
                n_splits=n_splits,
                max_points=max_points,
                paired=paired,
                seed=seed,
                rtol=rtol,
                options=options,
                groups=groups,
                basis=row_b,
            )
            sp = sp[sp["space"] != "full"]
            t = pd.concat([t, sp], ignore_index=True)
            delta = itv - base_acts
            moved = delta.abs().amax(1) > 0
            if bool(moved.any()):
                ds = displacement_summary(
                    delta[moved], w, rtol=rtol, basis=row_b, spectral_norm=spec
                )
                disp_rows.append({"condition": cname, "n_moved": int(moved.sum()), **ds})
            else:
                notes.append(
                    f"{cname}: the interventions do not change {s.name} at the audited positions"
                )
        t.insert(0, "condition", cname)
        frames.append(t)
        if units_site is not None:
            iu = _gather(out_i.cache[cache_sites[1].name], base_inp, pos_for(base_inp), s)
            rep = dormant_units(torch.cat(nat_units), iu, threshold=threshold)
            dorm_rows.append(
                {
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
            )
    return AuditResult(
        site=str(s),
        conditions=tuple(conds),
        table=pd.concat(frames, ignore_index=True),
        displacement=pd.DataFrame(
            disp_rows,
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
            dorm_rows,
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
        n_natural=int(nat.shape[0]),
        reader_shape=tuple(int(x) for x in w.shape) if w is not None else (),
        units_site=units_site or "",
        threshold=float(threshold),
        seed=seed,
        n_splits=n_splits,
        notes=tuple(notes),
    )


def _ratio_text(ratio: float, baseline: float) -> str:
    """The ratio, when it means something (a positive baseline)."""
    return f"   ratio {ratio:.2f}" if baseline > 0 and np.isfinite(ratio) else ""


def _sel(site: Site) -> tuple[Any, Any]:
    """The position selection of the audit site, for the units site (same positions)."""
    return site.positions, None


def mean_difference_vector(
    model: Model, a: Any, b: Any, site: SiteLike, *, positions: Any = "last"
) -> Tensor:
    """``delta_{B->A} = mean(h_A) - mean(h_B)`` at ``site`` (the mean-difference steering
    vector), over the given ``positions`` of inputs ``a`` and ``b``."""
    s = as_site(site)
    ai, bi = model.prepare(a), model.prepare(b)
    ha = _gather(model.run(ai, cache=[Site(s.name)]).cache[s.name], ai, positions, s)
    hb = _gather(model.run(bi, cache=[Site(s.name)]).cache[s.name], bi, positions, s)
    return ha.float().mean(0) - hb.float().mean(0)


__all__ = [
    "AuditResult",
    "audit",
    "bind_sources",
    "cannot_reach",
    "check_reachable",
    "default_units",
    "mean_difference_vector",
]
