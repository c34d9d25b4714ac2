"""Result classes of causal scrubbing: :class:`ScrubResult` and :class:`AdversaryResult`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ..results import Estimate, Result, with_intervals
from ..stats import Interval


@dataclass(frozen=True)
class ScrubResult(Result):
    """One causal scrubbing experiment.

    Per-example arrays are aligned on the reference examples: ``scrubbed`` (the behaviour of the
    scrubbed model), ``original`` (of the model), ``baseline_values`` (``[B, n]``, one row per
    named baseline), ``kl`` (KL from the model's to the scrubbed model's output distribution,
    empty when the outputs are not logits) and ``references`` (the table rows of the reference
    examples). ``table`` holds every estimate with its standard error and confidence interval
    (one row per ``quantity``; ``intervals()`` by quantity, and ``to_frame()`` with the columns
    ``estimate, se, ci_low, ci_high, level``); ``nodes`` the sampling diagnostics of every
    interpretation node.
    """

    hypothesis: str
    description: str
    behaviour: str
    higher_is_better: bool
    n: int
    seed: int
    level: float
    scrubbed: np.ndarray
    original: np.ndarray
    baseline_names: list[str]
    baseline_values: np.ndarray
    kl: np.ndarray
    references: np.ndarray
    table: pd.DataFrame
    nodes: pd.DataFrame
    warnings: list[str] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    kind = "scrub"

    # -- numbers -------------------------------------------------------------------------------
    def _frame(self) -> pd.DataFrame:
        """``table`` with the uniform interval columns (saved tables name them low / high)."""
        t = self.table.rename(columns={"low": "ci_low", "high": "ci_high"})
        return t.assign(level=self.level)

    def _row(self, quantity: str) -> pd.Series:
        t = self._frame()
        hit = t[t["quantity"] == quantity]
        if hit.empty:
            raise KeyError(f"no {quantity!r} in this result; quantities: {list(t['quantity'])}")
        return hit.iloc[0]

    def intervals(self) -> dict[str, Interval]:
        """Every row of ``table`` (scrubbed, original, baselines, % recovered, ...) by quantity."""
        return {
            str(r["quantity"]): Interval.from_row(r, level=self.level)
            for _, r in self._frame().iterrows()
        }

    @property
    def expectation(self) -> float:
        """E_h: the mean behaviour of the scrubbed model."""
        return float(self._row("scrubbed")["estimate"])

    @property
    def se(self) -> float:
        return float(self._row("scrubbed")["se"])

    @property
    def original_expectation(self) -> float:
        return float(self._row("original")["estimate"])

    def recovered(self, baseline: str | None = None) -> float:
        """% loss recovered against a baseline (the first one by default)."""
        name = baseline or self.baseline_names[0]
        return float(self._row(f"% recovered vs {name}")["estimate"])

    def recovered_ci(self, baseline: str | None = None) -> tuple[float, float]:
        name = baseline or self.baseline_names[0]
        r = self._row(f"% recovered vs {name}")
        return float(r["ci_low"]), float(r["ci_high"])

    def baseline(self, name: str) -> np.ndarray:
        return self.baseline_values[self.baseline_names.index(name)]

    # -- Result API ----------------------------------------------------------------------------
    def to_frame(self) -> pd.DataFrame:
        """One row per quantity: ``quantity, estimate, se, ci_low, ci_high, level``."""
        return self._frame()

    def summary(self) -> str:
        lines = [
            f"causal scrubbing: {self.hypothesis!r} on {self.n} examples (seed {self.seed}); "
            f"behaviour {self.behaviour} ({'higher' if self.higher_is_better else 'lower'} is better)"
        ]
        lines.append(f"  {round(100 * self.level)}% confidence intervals")
        for q, iv in self.intervals().items():
            unit = " %" if q.startswith("%") else ""
            lines.append(f"  {q:<32} {iv:10.4f}{unit}")
        if self.kl.size:
            lines.append(f"  mean KL(model || scrubbed)       {float(self.kl.mean()):10.4f}")
        if self.warnings:
            lines.append("warnings:")
            lines.extend(f"  ! {w}" for w in self.warnings)
        return "\n".join(lines)

    def replace(self, **kw: Any) -> ScrubResult:
        return dataclasses.replace(self, **kw)


@dataclass(frozen=True)
class AdversaryResult(Result):
    """Adversarial validation: the candidate refinements tried, their effect on the metric, and
    the refinements chosen (greedily, one per step).

    ``intervals()["base_expectation"]``: the hypothesis' expectation with its standard error
    ``base_se``; its interval is the normal one (``base_expectation ± 1.96 base_se``), as the
    scrub it comes from reports no other. ``intervals()["delta"]``: how far each candidate moves
    the expectation, a mean of paired differences with its standard error (``se_delta`` in
    ``candidates``) and its normal 95% interval. The frame is the table of candidates with the
    columns ``delta, delta_se, delta_ci_low, delta_ci_high, level``.
    """

    hypothesis: str
    behaviour: str
    higher_is_better: bool
    original: float
    base_expectation: float
    base_se: float
    final_expectation: float
    candidates: pd.DataFrame
    chosen: list[str]
    evaluations: int
    budget: int
    final_description: str = ""
    recovered_before: float = float("nan")
    recovered_after: float = float("nan")
    kind = "adversary"

    INTERVALS: ClassVar[dict[str, Estimate]] = {
        "base_expectation": Estimate("base_expectation", "base_se", level=0.95)
    }

    @property
    def moved(self) -> float:
        """How far the chosen refinements moved the expectation (final - hypothesis)."""
        return self.final_expectation - self.base_expectation

    def intervals(self) -> dict[str, Interval]:
        c = self.candidates
        delta = Interval.from_se(c["delta"].to_numpy(float), c["se_delta"].to_numpy(float))
        return {**super().intervals(), "delta": delta}

    def to_frame(self) -> pd.DataFrame:
        """The candidates, ``delta`` with its uniform interval columns."""
        delta = self.interval_of("delta")
        return with_intervals(self.candidates, {"delta": delta}, drop=("se_delta",))

    def summary(self) -> str:
        lines = [
            f"adversarial validation of {self.hypothesis!r}: {self.evaluations} evaluations "
            f"(budget {self.budget}); behaviour {self.behaviour}",
            f"  model {self.original:.4f}; hypothesis {self.interval_of('base_expectation'):.4f}; "
            f"after the adversary {self.final_expectation:.4f} (moved {self.moved:+.4f})",
        ]
        if np.isfinite(self.recovered_before):
            lines.append(
                f"  % recovered: {self.recovered_before:.1f} % -> {self.recovered_after:.1f} %"
            )
        if self.chosen:
            lines.append("  chosen refinements: " + "; ".join(self.chosen))
        else:
            lines.append("  no refinement moved the metric beyond its noise")
        top = self.to_frame().sort_values("z", ascending=False).head(8)
        for _, r in top.iterrows():
            lines.append(
                f"    step {int(r['step'])}: {r['refinement']:<48} {r['expectation']:.4f} "
                f"(moves {Interval.from_row(r, 'delta'):+.4f}, z={r['z']:.1f})"
            )
        return "\n".join(lines)


__all__ = ["AdversaryResult", "ScrubResult"]
