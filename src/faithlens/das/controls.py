"""Selectivity of a learned alignment against a random-subspace control.

IIA alone overstates how well an alignment localises a variable: a high-dimensional site lets
almost any subspace of enough dimensions move the output. The control interchanges a **random
subspace of the same size** instead (the first ``k`` coordinates of seeded random rotations,
nothing trained) on the same pairs; **selectivity** is IIA minus control IIA. Both are per-example
correctness vectors over the same pairs, so the selectivity's interval is a paired bootstrap over
examples (:func:`faithlens.stats.mean_interval` of the per-example differences).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .. import stats
from .. import validate as V
from ..models.model import Model
from ..models.sites import SiteLike, as_site
from ..tasks.interchange import InterchangeData
from .alignment import Rotation
from .result import DASResult
from .train import evaluate_alignment, source_activations


@dataclass(frozen=True)
class Selectivity:
    """IIA, random-subspace control IIA and their difference, each with a 95% bootstrap CI.

    ``control_iia`` is the mean over ``draws`` random subspaces of ``len(dims)`` dimensions;
    ``selectivity = iia - control_iia`` (paired by example).
    """

    control: str
    dims: int
    draws: int
    n: int
    iia: float
    iia_low: float
    iia_high: float
    control_iia: float
    control_low: float
    control_high: float
    selectivity: float
    selectivity_low: float
    selectivity_high: float

    def to_frame(self) -> pd.DataFrame:
        rows = [
            ("iia", self.iia, self.iia_low, self.iia_high),
            ("control_iia", self.control_iia, self.control_low, self.control_high),
            ("selectivity", self.selectivity, self.selectivity_low, self.selectivity_high),
        ]
        return pd.DataFrame(rows, columns=["measure", "estimate", "low", "high"])

    def summary(self) -> str:
        return (
            f"IIA {self.iia:.3f} [{self.iia_low:.3f}, {self.iia_high:.3f}], control "
            f"({self.control}, {self.dims} dim(s), {self.draws} draws) {self.control_iia:.3f} "
            f"[{self.control_low:.3f}, {self.control_high:.3f}], selectivity "
            f"{self.selectivity:.3f} [{self.selectivity_low:.3f}, {self.selectivity_high:.3f}] "
            f"(n={self.n})"
        )


def random_subspace_correct(
    model: Model,
    data: InterchangeData,
    site: SiteLike,
    k: int,
    *,
    draws: int = 5,
    seed: int = 0,
) -> np.ndarray:
    """Per example: the fraction of ``draws`` random ``k``-dim subspaces whose interchange gives
    the counterfactual label (subspace ``j``: the first ``k`` coordinates of a :class:`Rotation`
    initialised with ``torch.manual_seed(seed + j)``)."""
    V.positive_int("draws", draws)
    V.positive_int("k", k)
    V.nonnegative_int("seed", seed)
    width = int(source_activations(model, data, as_site(site)).shape[-1])
    if k > width:
        raise V.fail("k", k, f"is more than the site width {width}", "use fewer dims")
    total = np.zeros(len(data))
    for j in range(draws):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + j)
            rot = Rotation(width)
        ev = evaluate_alignment(model, rot, data, site, dims=list(range(k)), seed=seed)
        total = total + np.asarray(ev.correct, dtype=np.float64)
    return total / draws


def selectivity(
    model: Model,
    data: InterchangeData,
    site: SiteLike,
    result: DASResult,
    *,
    draws: int = 5,
    seed: int = 0,
) -> Selectivity:
    """Selectivity of ``result`` (a :func:`~faithlens.das.das` alignment) on ``data`` against
    ``draws`` random subspaces of the same size."""
    if not isinstance(result, DASResult):
        raise V.fail(
            "result", type(result).__name__, "must be a DASResult", "train one with fl.das"
        )
    V.min_examples("len(data)", len(data), what="a selectivity with a confidence interval")
    k = len(result.dims)
    ev = evaluate_alignment(model, result.alignment, data, site, dims=list(result.dims), seed=seed)
    own = np.asarray(ev.correct, dtype=np.float64)
    ctrl = random_subspace_correct(model, data, site, k, draws=draws, seed=seed)
    ci_c = stats.mean_interval(ctrl, seed=seed)
    ci_d = stats.mean_interval(own - ctrl, seed=seed)
    return Selectivity(
        control="random_subspace",
        dims=k,
        draws=int(draws),
        n=len(data),
        iia=ev.iia,
        iia_low=ev.iia_low,
        iia_high=ev.iia_high,
        control_iia=float(ci_c.estimate),
        control_low=float(ci_c.low),
        control_high=float(ci_c.high),
        selectivity=float(ci_d.estimate),
        selectivity_low=float(ci_d.low),
        selectivity_high=float(ci_d.high),
    )


__all__ = ["Selectivity", "random_subspace_correct", "selectivity"]
