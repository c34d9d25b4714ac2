"""Results of neuron explanation: per unit and metric, the winner *only when certified*."""

from __future__ import annotations

import dataclasses
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pandas as pd

from ..errors import InputError
from ..results import Estimate, Result
from ..stats import Interval
from . import bounds as _b

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SEP = " | "


def _fmt(v: float, digits: int = 3) -> str:
    return "nan" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


@dataclasses.dataclass(frozen=True)
class NeuronExplanation(Result):
    """Concept explanations of units with faithfulness bounds and bootstrap stability.

    Arrays are ``[n_metrics, n_units, n_concepts]``:

    - ``scores``: similarity on the probing set;
    - ``lower`` / ``upper``: simultaneous intervals for the *population* similarity (all
      concepts of a unit at once with probability ``1 - delta``; ``bounds`` names the theorem
      per metric, or says that it is a bootstrap band);
    - ``freq``: how often each concept won across the ``n_boot`` bootstrap resamples.

    A unit's explanation is **certified** when the provable set (every concept whose upper bound
    reaches the best lower bound) holds only the top-scoring concept: then it is the population
    best with probability ``1 - delta``. Otherwise the table says *not certified* and leaves
    ``concept`` empty; ``top_scoring`` still names the empirical argmax, for inspection only.

    ``intervals()["score"]``: ``scores`` with the interval ``lower``..``upper`` at level
    ``bound_level = 1 - delta`` (simultaneous over concepts; no standard error: NaN). The frame
    shows the top-scoring concept's as ``score, score_se, score_ci_low, score_ci_high, level``.
    """

    kind: ClassVar[str] = "neurons"

    metrics: tuple[str, ...]
    units: tuple[str, ...]
    concepts: tuple[str, ...]
    scores: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    freq: np.ndarray
    thresholds: np.ndarray
    bounds: tuple[str, ...]
    n_samples: int
    n_groups: int
    n_boot: int
    delta: float
    level: float
    alpha: float | None
    direction: str
    interval: str
    simultaneous: bool
    seed: int
    site: str | None = None
    skipped: tuple[int, ...] = ()
    holdout: float = 0.0

    INTERVALS: ClassVar[dict[str, Estimate]] = {
        "score": Estimate("scores", None, "lower", "upper", level="bound_level")
    }

    @property
    def bound_level(self) -> float:
        """The probability ``1 - delta`` with which the bounds ``lower``..``upper`` hold."""
        return 1.0 - float(self.delta)

    # -- lookups -------------------------------------------------------------------------------
    def metric_index(self, metric: str | None) -> int:
        if metric is None:
            return 0
        if metric not in self.metrics:
            raise InputError(f"this result has metrics {list(self.metrics)}, not {metric!r}")
        return self.metrics.index(metric)

    def unit_index(self, unit: int | str) -> int:
        if isinstance(unit, str):
            if unit not in self.units:
                raise InputError(f"unknown unit {unit!r}")
            return self.units.index(unit)
        if not -len(self.units) <= unit < len(self.units):
            raise InputError(f"unit {unit} out of range: {len(self.units)} units")
        return unit % len(self.units)

    @cached_property
    def _sets(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        return [
            _b.provable_sets(self.scores[j], self.lower[j], self.upper[j])
            for j in range(len(self.metrics))
        ]

    def top_scoring(self, metric: str | None = None) -> np.ndarray:
        """Index of the empirical best concept per unit (``-1`` when undefined)."""
        return self._sets[self.metric_index(metric)][0]

    def provable_set(self, metric: str | None = None) -> np.ndarray:
        """``[U, M]`` mask: concepts that may be the population best (probability ``1 - delta``)."""
        return self._sets[self.metric_index(metric)][1]

    def certified(self, metric: str | None = None) -> np.ndarray:
        """``[U]``: whether the top-scoring concept is certified as the population best."""
        return self._sets[self.metric_index(metric)][2]

    def be_set(self, metric: str | None = None) -> np.ndarray:
        """``[U, M]`` mask of the Bootstrap Explanation set at coverage ``level``."""
        if self.n_boot == 0:
            raise InputError("this explanation ran without a bootstrap (n_boot=0)")
        return _b.be_sets(self.freq[self.metric_index(metric)].astype(np.float64), self.level)

    def explanations(self, metric: str | None = None) -> dict[str, str | None]:
        """``{unit: certified concept or None}``."""
        win = self.top_scoring(metric)
        cert = self.certified(metric)
        return {u: (self.concepts[win[i]] if cert[i] else None) for i, u in enumerate(self.units)}

    def stability(self, metric: str | None = None) -> pd.DataFrame:
        """Per unit: mode frequency, agreement of the resamples with the full-data winner,
        entropy of the selection frequencies, number of distinct winners, and the Monte-Carlo
        error of the frequencies."""
        if self.n_boot == 0:
            raise InputError("this explanation ran without a bootstrap (n_boot=0)")
        j = self.metric_index(metric)
        f = self.freq[j].astype(np.float64)
        win = self.top_scoring(metric)
        agree = np.where(win >= 0, f[np.arange(len(win)), np.maximum(win, 0)], np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            ent = -np.nansum(np.where(f > 0, f * np.log(f), 0.0), axis=1)
        distinct = (f > 0).sum(1)
        return pd.DataFrame(
            {
                "unit": list(self.units),
                "mode": [
                    self.concepts[i] if f[k].sum() > 0 else None for k, i in enumerate(f.argmax(1))
                ],
                "mode_freq": f.max(1),
                "agreement": agree,
                "entropy": ent,
                "n_distinct": distinct,
                "mc_error": _b.frequency_error(distinct, self.n_boot),
            }
        )

    def unit(
        self, unit: int | str, metric: str | None = None, top: int | None = 10
    ) -> pd.DataFrame:
        """Every concept for one unit (best first): score with its interval (``score, score_se,
        score_ci_low, score_ci_high, level``), bootstrap frequency, and membership of the
        provable and BE sets."""
        j, u = self.metric_index(metric), self.unit_index(unit)
        df = pd.DataFrame(
            {
                "concept": list(self.concepts),
                **self.interval_of("score")[j, u].columns("score"),
                "level": self.bound_level,
                "freq": self.freq[j, u],
                "provable": self.provable_set(metric)[u],
            }
        )
        if self.n_boot:
            df["be_set"] = self.be_set(metric)[u]
        df = df.sort_values("score", ascending=False, na_position="last", kind="stable")
        return df.head(top).reset_index(drop=True) if top else df.reset_index(drop=True)

    # -- Result API ----------------------------------------------------------------------------
    def to_frame(self) -> pd.DataFrame:
        """One row per (metric, unit). ``concept`` is set only for certified units."""
        rows: list[dict[str, Any]] = []
        for j, m in enumerate(self.metrics):
            win, pset, cert = self._sets[j]
            be = self.be_set(m) if self.n_boot else None
            stab = self.stability(m) if self.n_boot else None
            s = self.scores[j]
            for u, name in enumerate(self.units):
                w = int(win[u])
                row: dict[str, Any] = {"metric": m, "unit": name}
                if u in self.skipped:
                    row["status"] = "skipped (constant)"
                elif w < 0:
                    row["status"] = "undefined"
                elif cert[u]:
                    row["status"] = "certified"
                else:
                    row["status"] = f"not certified ({int(pset[u].sum())} in provable set)"
                row["concept"] = self.concepts[w] if (w >= 0 and cert[u]) else None
                row["top_scoring"] = self.concepts[w] if w >= 0 else None
                row["score"] = float(s[u, w]) if w >= 0 else np.nan
                row["score_se"] = np.nan
                row["score_ci_low"] = float(self.lower[j, u, w]) if w >= 0 else np.nan
                row["score_ci_high"] = float(self.upper[j, u, w]) if w >= 0 else np.nan
                row["level"] = self.bound_level
                row["guaranteed"] = row["score_ci_low"] if (w >= 0 and cert[u]) else np.nan
                if w >= 0 and s.shape[1] > 1:
                    other = np.where(
                        np.arange(s.shape[1]) == w, -np.inf, np.nan_to_num(s[u], nan=-np.inf)
                    )
                    r = int(np.argmax(other))
                    row["runner_up"] = self.concepts[r] if np.isfinite(other[r]) else None
                    row["gap"] = float(s[u, w] - s[u, r]) if np.isfinite(other[r]) else np.nan
                else:
                    row["runner_up"], row["gap"] = None, np.nan
                members = np.nonzero(pset[u])[0]
                row["provable_set"] = SEP.join(
                    self.concepts[i] for i in members[np.argsort(-s[u, members])]
                )
                row["provable_size"] = len(members)
                if be is not None and stab is not None:
                    f = self.freq[j, u]
                    bm = np.nonzero(be[u])[0]
                    bm = bm[np.argsort(-f[bm], kind="stable")]
                    row["be_set"] = SEP.join(self.concepts[i] for i in bm)
                    row["be_size"] = len(bm)
                    row["be_mass"] = float(f[bm].sum())
                    row["agreement"] = float(stab["agreement"].iloc[u])
                    row["entropy"] = float(stab["entropy"].iloc[u])
                row["threshold"] = float(self.thresholds[u])
                row["bound"] = self.bounds[j]
                rows.append(row)
        return pd.DataFrame(rows)

    def summary(self, max_units: int = 15) -> str:
        lines = [
            f"Neuron explanations: {len(self.units)} units x {len(self.concepts)} concepts, "
            f"{self.n_samples} probing samples"
            + (f" in {self.n_groups} groups" if self.n_groups else "")
            + (f" (site {self.site})" if self.site else ""),
            f"bounds hold with probability {1 - self.delta:.2f} for all concepts of "
            + ("all units at once" if self.simultaneous else "each unit")
            + (
                f"; {self.n_boot} bootstrap resamples, BE sets at {self.level:.0%}"
                if self.n_boot
                else "; no bootstrap"
            ),
        ]
        if self.alpha is not None:
            lines.append(
                f"thresholded metrics: the top {self.alpha:g} of each unit's activations fire"
            )
        for j, m in enumerate(self.metrics):
            win, pset, cert = self._sets[j]
            lines.append("")
            lines.append(
                f"[{m}] {int(cert.sum())}/{len(self.units)} units certified; bound: {self.bounds[j]}"
            )
            be = self.be_set(m) if self.n_boot else None
            for u in range(min(max_units, len(self.units))):
                w = int(win[u])
                name = self.units[u]
                if u in self.skipped:
                    lines.append(f"  {name}: skipped (constant on the probing set)")
                    continue
                if w < 0:
                    lines.append(f"  {name}: undefined (no concept has a defined {m})")
                    continue
                sc, lo, hi = self.scores[j, u, w], self.lower[j, u, w], self.upper[j, u, w]
                be_txt = ""
                if be is not None:
                    members = [
                        self.concepts[i]
                        for i in np.nonzero(be[u])[0][
                            np.argsort(-self.freq[j, u][be[u]], kind="stable")
                        ]
                    ]
                    be_txt = f"; BE set {{{', '.join(members[:5])}{', ...' if len(members) > 5 else ''}}}"
                if cert[u]:
                    lines.append(
                        f"  {name}: certified {self.concepts[w]!r} ({m} {_fmt(sc)}, population >= {_fmt(lo)}){be_txt}"
                    )
                else:
                    mem = np.nonzero(pset[u])[0]
                    mem = mem[np.argsort(-self.scores[j, u, mem])]
                    shown = ", ".join(self.concepts[i] for i in mem[:5])
                    more = ", ..." if len(mem) > 5 else ""
                    lines.append(
                        f"  {name}: NOT certified: {len(mem)} concepts may be best "
                        f"{{{shown}{more}}}; top-scoring {self.concepts[w]!r} "
                        f"{Interval(sc, np.nan, lo, hi, self.bound_level):.3f}{be_txt}"
                    )
            if len(self.units) > max_units:
                lines.append(f"  ... {len(self.units) - max_units} more units (to_frame() has all)")
        return "\n".join(lines)

    def plot(
        self, ax: Any = None, *, metric: str | None = None, units: Any = None, top: int = 5
    ) -> Figure:
        """Stability and faithfulness per unit: the ``top`` concepts' scores with their
        intervals (left) and bootstrap selection frequencies with the BE set highlighted
        (right)."""
        return self._plot(ax, metric=metric, units=units, top=top)


__all__ = ["NeuronExplanation"]
