"""Dormant-unit recruitment: downstream units that no natural input activates but an
intervention does (a hidden pathway, Grant et al. 2025 section 3.3).

A unit is *dormant* when its activation never exceeds ``threshold`` on any natural example (a
ReLU unit that never fires: threshold 0). It is *recruited* when it exceeds ``threshold +
margin`` on at least one intervened example.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from .. import stats
from ..errors import ShapeError
from ..results import Estimate, Result
from . import distances as D


@dataclass(frozen=True)
class DormantReport(Result):
    """Which downstream units an intervention recruits from dormancy.

    ``dormant``: indices of units never active on natural data; ``recruited``: the dormant units
    active on some intervened example; ``fire_rate[j]``: the fraction of intervened examples on
    which ``recruited[j]`` fires; ``max_activation[j]``: its largest intervened activation;
    ``examples_recruiting`` (± ``examples_recruiting_se``): the fraction of intervened examples
    that recruit at least one dormant unit: ``intervals()["examples_recruiting"]``, a mean over
    examples with its normal 95% interval. The frame lists the recruited units (no estimates
    with intervals).
    """

    n_units: int
    threshold: float
    dormant: np.ndarray
    recruited: np.ndarray
    fire_rate: np.ndarray
    max_activation: np.ndarray
    examples_recruiting: float
    examples_recruiting_se: float
    flagged_examples: np.ndarray

    INTERVALS: ClassVar[dict[str, Estimate]] = {
        "examples_recruiting": Estimate("examples_recruiting", "examples_recruiting_se", level=0.95)
    }

    @property
    def flagged(self) -> bool:
        return bool(self.recruited.size)

    def to_frame(self) -> pd.DataFrame:
        """One row per recruited unit: its index, fire rate and largest intervened activation."""
        return pd.DataFrame(
            {
                "unit": np.asarray(self.recruited, dtype=np.int64),
                "fire_rate": np.asarray(self.fire_rate, dtype=np.float64),
                "max_activation": np.asarray(self.max_activation, dtype=np.float64),
            }
        )

    def summary(self) -> str:
        head = (
            f"dormant units: {self.dormant.size} of {self.n_units} never exceed "
            f"{self.threshold:g} on natural data; the intervention recruits "
            f"{self.recruited.size}"
        )
        if not self.flagged:
            return head + " (no hidden pathway flagged)"
        return head + (
            f"; {self.interval_of('examples_recruiting'):.1%} of the "
            f"intervened examples recruit at least one (units {self.recruited[:10].tolist()}"
            f"{' ...' if self.recruited.size > 10 else ''})"
        )


def dormant_units(
    natural: Any, intervened: Any, *, threshold: float = 0.0, margin: float = 1e-6
) -> DormantReport:
    """Find dormant units recruited by an intervention (``[n, units]`` activations each)."""
    nat, itv = D.check_pair(natural, intervened, names=("natural units", "intervened units"))
    a, b = D.to_numpy(nat), D.to_numpy(itv)
    if a.shape[0] < 1 or b.shape[0] < 1:
        raise ShapeError("dormant_units needs at least one natural and one intervened example")
    active_nat = (a > threshold).any(0)
    dormant = np.flatnonzero(~active_nat)
    fires = b[:, dormant] > threshold + margin
    hit = fires.any(0)
    recruited = dormant[hit]
    fire_rate = fires[:, hit].mean(0) if hit.any() else np.zeros(0)
    max_act = b[:, recruited].max(0) if recruited.size else np.zeros(0)
    per_example = fires.any(1).astype(np.float64) if dormant.size else np.zeros(b.shape[0])
    m, s = stats.mean_se(per_example)
    return DormantReport(
        n_units=int(a.shape[1]),
        threshold=float(threshold),
        dormant=dormant,
        recruited=recruited,
        fire_rate=np.asarray(fire_rate, dtype=np.float64),
        max_activation=np.asarray(max_act, dtype=np.float64),
        examples_recruiting=float(m),
        examples_recruiting_se=float(s),
        flagged_examples=np.flatnonzero(per_example > 0),
    )


__all__ = ["DormantReport", "dormant_units"]
