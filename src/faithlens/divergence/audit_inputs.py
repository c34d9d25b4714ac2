"""What an audit runs on: its conditions, the sources they name by reference (``"clean"`` /
``"corrupt"``), whether they can reach the audited site, the rows gathered from a run's cache and
the downstream units checked for dormancy."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError, ShapeError, SiteError
from ..interventions import Intervention
from ..models.model import Inputs, Model
from ..models.sites import Site, SiteLike, as_site
from ..tasks.base import Task

SOURCE_REFS = ("clean", "corrupt")
Conditions = Mapping[str, Sequence[Intervention]] | Sequence[Intervention] | Intervention


def as_conditions(interventions: Conditions) -> dict[str, list[Intervention]]:
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


def source_ref(iv: Intervention) -> str | None:
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
            source_ref(iv)  # a clear error for unknown references
        return list(task.bind(model, interventions))
    refs: dict[str, list[str]] = {}
    for iv in interventions:
        r = source_ref(iv)
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
        r = source_ref(iv)
        if r is None:
            bound.append(iv)
        else:
            bound.append(dataclasses.replace(iv, source=caches[r][iv.site_spec.name]))  # type: ignore[type-var]
    return bound


def gather_rows(act: Tensor, inputs: Inputs, positions: Any, site: Site) -> Tensor:
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


def gather_token_ids(act: Tensor, inputs: Inputs, positions: Any, site: Site) -> np.ndarray:
    """The example index of each row :func:`gather_rows` returns (same layout)."""
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


def select_rows(site: Site) -> tuple[Any, Any]:
    """The position selection of the audit site, for the units site (same positions)."""
    return site.positions, None


def mean_difference_vector(
    model: Model, a: Any, b: Any, site: SiteLike, *, positions: Any = "last"
) -> Tensor:
    """``delta_{B->A} = mean(h_A) - mean(h_B)`` at ``site`` (the mean-difference steering
    vector), over the given ``positions`` of inputs ``a`` and ``b``."""
    s = as_site(site)
    ai, bi = model.prepare(a), model.prepare(b)
    ha = gather_rows(model.run(ai, cache=[Site(s.name)]).cache[s.name], ai, positions, s)
    hb = gather_rows(model.run(bi, cache=[Site(s.name)]).cache[s.name], bi, positions, s)
    return ha.float().mean(0) - hb.float().mean(0)
