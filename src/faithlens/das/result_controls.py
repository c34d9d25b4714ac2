"""The controls that every :func:`~faithlens.das.das` result carries.

``fl.das(..., controls=...)`` measures, after training, the alignment's IIA against controls on
the **same** pairs it reports its IIA on (the training pairs; :func:`~faithlens.das.das_controls`
holds pairs out and scores only those whose label changes the model's answer):

- ``"random_subspace"`` (always on by default; nothing is trained): ``draws`` random subspaces of
  the same size, interchanged on the same pairs (:func:`random_subspace_correct`);
- ``"task"`` (opt-in: a second training run): the same search on the control task with
  arbitrary label mappings (:func:`~faithlens.das.control_task`);
- ``"random_init"`` (opt-in: a second training run): the same search on a randomly initialised
  copy of the model (:func:`~faithlens.das.random_init`).

Each control's IIA and the selectivity ``iia - control_iia`` are bootstrap means over the pairs
(the selectivity paired: the mean of per-pair differences), with 95% intervals like the IIA's.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .. import stats
from .. import validate as V
from ..models.model import Model
from ..models.sites import SiteLike
from ..tasks.interchange import InterchangeData
from .alignment import Alignment
from .control_inputs import control_task, random_init
from .controls import random_subspace_correct
from .result import ALL_CONTROLS, DEFAULT_CONTROLS, DASResult


def check_das_controls(controls: Any, name: str = "controls") -> tuple[str, ...]:
    """``controls=`` of :func:`~faithlens.das.das` as a tuple in :data:`ALL_CONTROLS` order.

    Accepted: one control name, ``"all"``, ``"none"`` / ``None`` / an empty list (no control),
    or a list of names. Refused, naming the value and the fix: anything else (a number, a dict,
    a name that is no control, a repeated name, ``"all"`` inside a list). ``name``: the
    argument's name in the message (``--controls`` for the CLI)."""
    fix = f'use a name, a list of {list(ALL_CONTROLS)}, "all" or "none"'
    if controls is None:
        return ()
    if isinstance(controls, str):
        if controls == "all":
            return ALL_CONTROLS
        if controls == "none":
            return ()
        V.choice(name, controls, ALL_CONTROLS, fix=fix)
        return (controls,)
    if isinstance(controls, Mapping) or not isinstance(controls, Sequence):
        raise V.fail(name, controls, "must be a control name or a list of them", fix)
    for c in controls:
        if not isinstance(c, str):
            raise V.fail(name, controls, f"holds {c!r}, which is not a control name", fix)
        if c in ("all", "none"):
            raise V.fail(name, controls, f"{c!r} stands alone, not in a list", fix)
        V.choice(name, c, ALL_CONTROLS, fix=fix)
    if len(set(controls)) != len(controls):
        raise V.fail(name, controls, "repeats a control", "list each control once")
    return tuple(c for c in ALL_CONTROLS if c in controls)


@dataclass(frozen=True)
class Retrain:
    """How to train the alignment again for a trained control: the :func:`fit_alignment`
    keywords of the original run, its method, and (when one was given) a copy of the alignment
    it started from."""

    method: str
    start: Alignment | None
    values: Any
    keywords: Mapping[str, Any]

    def correct(self, model: Model, data: InterchangeData, site: SiteLike) -> np.ndarray:
        """Train on ``model`` / ``data`` as the original run did; per-pair correctness of the
        selected checkpoint on ``data``."""
        from .train import fit_alignment

        start = None if self.start is None else copy.deepcopy(self.start)
        _, ev = fit_alignment(
            model,
            data,
            site,
            method=self.method,
            alignment=start,
            values=self.values,
            **dict(self.keywords),
        )
        return np.asarray(ev.correct, dtype=np.float64)


def check_control_inputs(
    data: InterchangeData, controls: Sequence[str], draws: int, values: Any, seed: int
) -> None:
    """:func:`~faithlens.das.das`'s checks of ``draws`` and ``values`` (and the task control's
    labels), made before the training so that a bad one fails before the first epoch."""
    V.positive_int("draws", draws, fix="average over e.g. 5 random subspaces")
    if "task" in controls:  # cheap: its checks (labels, ``values``) fail before the training
        control_task(data, values=values, seed=seed)
    if values is not None and len(values) != len(data):
        raise V.fail("values", f"{len(values)} values", f"need one per example ({len(data)})")


def attach_controls(
    result: DASResult,
    own: np.ndarray,
    model: Model,
    data: InterchangeData,
    site: SiteLike,
    controls: Sequence[str],
    *,
    draws: int,
    seed: int,
    retrain: Retrain,
) -> DASResult:
    """``result`` with the control IIA and selectivity of each of ``controls`` (per-pair
    correctness ``own`` of the alignment on ``data``)."""
    rows = []
    for c in controls:
        if c == "random_subspace":
            got = random_subspace_correct(
                model, data, site, len(result.dims), draws=draws, seed=seed
            )
        elif c == "task":
            ctrl = control_task(data, values=retrain.values, seed=seed)
            got = retrain.correct(model, ctrl, site)
        else:
            got = retrain.correct(random_init(model, seed=seed), data, site)
        rows.append(got)
    if not rows:
        return replace(result, controls=(), draws=int(draws))
    ctl = [stats.mean_interval(r, seed=seed) for r in rows]
    sel = [stats.mean_interval(own - r, seed=seed) for r in rows]

    def parts(ivs: list[Any], i: int) -> np.ndarray:
        return np.array([float(np.asarray(iv.parts[i])) for iv in ivs], dtype=np.float64)

    return replace(
        result,
        controls=tuple(controls),
        draws=int(draws),
        control_iia=parts(ctl, 0),
        control_iia_se=parts(ctl, 1),
        control_iia_low=parts(ctl, 2),
        control_iia_high=parts(ctl, 3),
        selectivity=parts(sel, 0),
        selectivity_se=parts(sel, 1),
        selectivity_low=parts(sel, 2),
        selectivity_high=parts(sel, 3),
    )


__all__ = [
    "ALL_CONTROLS",
    "DEFAULT_CONTROLS",
    "Retrain",
    "attach_controls",
    "check_control_inputs",
    "check_das_controls",
]
