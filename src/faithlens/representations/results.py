"""Results of representation checks: steering effects, persistence, logit lens, writers, and the
faithfulness report that gathers them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ..errors import InputError
from ..results import Estimate, Result
from ..stats import Interval


@dataclass(frozen=True, eq=False)
class SteeringResult(Result):
    """A behaviour metric under several conditions, each compared with the unsteered baseline.

    ``values`` ``[n_conditions, n]`` holds the per-prompt metric of every condition and
    ``baseline`` ``[n]`` the unsteered one. ``effect`` is the mean paired difference
    ``mean(values[c] - baseline)`` with a bootstrap confidence interval over prompts
    (``effect_low`` / ``effect_high``) and its standard error ``effect_se``. ``kind`` groups the
    conditions (``"steer"``, ``"ablate"``, ``"random"``, ``"random_ablate"``...); ``coef`` is
    the steering coefficient of each (NaN for ablations). ``intervals()["effect"]`` and the frame
    columns ``effect, effect_se, effect_ci_low, effect_ci_high`` hold them.
    """

    conditions: list[str]
    kind: list[str]
    coef: list[float]
    values: np.ndarray
    baseline: np.ndarray
    effect: np.ndarray
    effect_se: np.ndarray
    effect_low: np.ndarray
    effect_high: np.ndarray
    metric: str = "margin"
    behaviour: str = ""
    model: str = ""
    level: float = 0.95
    n_boot: int = 1000
    seed: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    INTERVALS: ClassVar[dict[str, Estimate]] = {
        "effect": Estimate("effect", "effect_se", "effect_low", "effect_high")
    }

    @property
    def n(self) -> int:
        return int(self.baseline.shape[0])

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "condition": self.conditions,
                "kind": self.kind,
                "coef": self.coef,
                "mean": self.values.mean(1) if self.values.size else np.array([]),
                **self.interval_of("effect").columns("effect"),
                "level": self.level,
            }
        )

    def row(self, condition: str) -> dict[str, Any]:
        if condition not in self.conditions:
            raise InputError(f"no condition {condition!r}; conditions: {self.conditions}")
        return dict(self.to_frame().iloc[self.conditions.index(condition)])

    def of_kind(self, kind: str) -> np.ndarray:
        """The effects of every condition of one kind."""
        return np.asarray([e for e, k in zip(self.effect, self.kind) if k == kind])

    def summary(self) -> str:
        lines = [
            f"behaviour '{self.behaviour}' ({self.metric}) of {self.model}: baseline mean "
            f"{float(self.baseline.mean()):.3f} over n={self.n}; effect = mean paired "
            f"difference from baseline, {int(self.level * 100)}% bootstrap CI"
        ]
        effect = self.interval_of("effect")
        for i, c in enumerate(self.conditions):
            lines.append(f"  {c:<44} {effect[i]:+.3f}")
        return "\n".join(lines)


@dataclass(frozen=True, eq=False)
class PersistenceResult(Result):
    """Per-token log-probability of a reference continuation under injection schedules
    (Paper B's continual-injection test).

    ``values`` ``[n_schedules, n, T]``: teacher-forced log p of reference token ``t`` (NaN past a
    row's end). ``mean`` / ``low`` / ``high`` ``[n_schedules, T]``: the per-token mean of the
    difference from the first schedule (no injection) with bootstrap CIs: ``intervals()["effect"]``
    (its standard error is NaN: none is kept) and the frame columns ``effect, effect_se,
    effect_ci_low, effect_ci_high``.
    """

    schedules: list[str]
    values: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    reference: str = "unsteered generation"
    behaviour: str = ""
    model: str = ""
    level: float = 0.95
    seed: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    INTERVALS: ClassVar[dict[str, Estimate]] = {"effect": Estimate("mean", None, "low", "high")}

    @property
    def n_tokens(self) -> int:
        return int(self.values.shape[2])

    def late_ratio(self, one_shot: str = "one-shot", continual: str = "continual") -> float:
        """Effect of one-shot injection over the second half of the tokens divided by that of
        continual injection: near 1 the push persists, near 0 it fades."""
        i, j = self.schedules.index(one_shot), self.schedules.index(continual)
        half = self.n_tokens // 2
        with np.errstate(invalid="ignore", divide="ignore"):
            a = float(np.nanmean(self.mean[i, half:]))
            b = float(np.nanmean(self.mean[j, half:]))
            return a / b if b != 0 else float("nan")

    def to_frame(self) -> pd.DataFrame:
        rows = []
        effect = self.interval_of("effect")
        for s, name in enumerate(self.schedules):
            for t in range(self.n_tokens):
                with np.errstate(invalid="ignore"):
                    lp = float(np.nanmean(self.values[s, :, t]))
                cols = {k: float(v) for k, v in effect[s, t].columns("effect").items()}
                rows.append(
                    {"schedule": name, "token": t + 1, "logprob": lp, **cols, "level": self.level}
                )
        return pd.DataFrame(rows)

    def summary(self) -> str:
        lines = [
            f"persistence of '{self.behaviour}' on {self.model}: log p of the {self.reference} "
            f"per token, change from no injection ({int(self.level * 100)}% CIs)"
        ]
        half = self.n_tokens // 2
        effect = self.interval_of("effect")
        for s, name in enumerate(self.schedules[1:], 1):
            with np.errstate(invalid="ignore"):
                late = float(np.nanmean(self.mean[s, half:]))
            lines.append(
                f"  {name:<12} first token {effect[s, 0]:+.3f}, second half (mean) {late:+.3f}"
            )
        if "one-shot" in self.schedules and "continual" in self.schedules:
            lines.append(f"  late one-shot / continual effect: {self.late_ratio():.2f}")
        return "\n".join(lines)


@dataclass(frozen=True, eq=False)
class LogitLensResult(Result):
    """The direction read directly through the final norm and the unembedding.

    ``entropy`` of ``softmax(W_U norm(r))`` (nats; ``max_entropy = log V``), against the
    entropies of ``null`` random directions: ``p_value`` is the fraction of random directions
    whose distribution is at least as concentrated, ``readable`` when it is at most ``alpha``.
    ``top_tokens`` / ``top_probs``: the most likely tokens for ``+r``; ``bottom_*`` for ``-r``.
    """

    entropy: float
    max_entropy: float
    null: np.ndarray
    p_value: float
    readable: bool
    top_tokens: list[str]
    top_probs: list[float]
    bottom_tokens: list[str]
    bottom_probs: list[float]
    alpha: float = 0.05
    label: str = ""
    model: str = ""
    seed: int = 0

    @property
    def normalized(self) -> float:
        return self.entropy / self.max_entropy

    def to_frame(self) -> pd.DataFrame:
        k = max(len(self.top_tokens), len(self.bottom_tokens))

        def pad(xs: list[Any], fill: Any) -> list[Any]:
            return list(xs) + [fill] * (k - len(xs))

        return pd.DataFrame(
            {
                "rank": np.arange(1, k + 1),
                "token_plus": pad(self.top_tokens, ""),
                "prob_plus": pad(self.top_probs, np.nan),
                "token_minus": pad(self.bottom_tokens, ""),
                "prob_minus": pad(self.bottom_probs, np.nan),
            }
        )

    def summary(self) -> str:
        q = np.quantile(self.null, self.alpha) if self.null.size else float("nan")
        return "\n".join(
            [
                f"logit lens of {self.label or 'the direction'} ({self.model}): entropy "
                f"{self.entropy:.3f} nats = {self.normalized:.3f} of uniform; random directions "
                f"{float(np.mean(self.null)):.3f} (5% quantile {q:.3f}); p = {self.p_value:.3f} "
                f"-> {'readable' if self.readable else 'not readable'}",
                "  +r: "
                + ", ".join(f"{t!r} {p:.3f}" for t, p in zip(self.top_tokens, self.top_probs)),
                "  -r: "
                + ", ".join(
                    f"{t!r} {p:.3f}" for t, p in zip(self.bottom_tokens, self.bottom_probs)
                ),
            ]
        )


@dataclass(frozen=True, eq=False)
class WritersResult(Result):
    """Direct attribution of a direction's contrast to the components that write it.

    The read-out at ``site`` is the sum of the component outputs projected on ``r`` (the
    embedding stage, each attention head, each attention output bias, each MLP), so the contrast
    ``<h(x+) - h(x-), r>`` splits exactly into per-component contrasts. ``contribution`` is each
    component's mean contrast over pairs (bootstrap CI), ``share`` its fraction of the total
    ``total``; ``k80`` the fewest components (largest first) whose contributions reach 80% of the
    total, and ``gini`` the Gini coefficient of the absolute contributions (1: one component
    writes everything). ``residual`` is the largest gap between the sum of the parts and the
    read-out itself (a check; ~0). ``intervals()``: ``contribution`` (per component) and
    ``total``, bootstrap intervals whose standard errors are NaN (none is kept); the frame
    columns ``contribution, contribution_se, contribution_ci_low, contribution_ci_high``.
    """

    components: list[str]
    layer: list[int | None]
    head: list[int | None]
    contribution: np.ndarray
    low: np.ndarray
    high: np.ndarray
    per_pair: np.ndarray
    total: float
    total_low: float
    total_high: float
    k80: int
    gini: float
    residual: float
    site: str
    label: str = ""
    model: str = ""
    level: float = 0.95
    seed: int = 0

    INTERVALS: ClassVar[dict[str, Estimate]] = {
        "contribution": Estimate("contribution", None, "low", "high"),
        "total": Estimate("total", None, "total_low", "total_high"),
    }

    @property
    def share(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.asarray(self.contribution / self.total)

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "component": self.components,
                "layer": pd.array(self.layer, dtype="Int64"),
                "head": pd.array(self.head, dtype="Int64"),
                **self.interval_of("contribution").columns("contribution"),
                "share": self.share,
                "level": self.level,
            }
        )

    def top(self, k: int = 10) -> pd.DataFrame:
        df = self.to_frame()
        order = df["contribution"].abs().sort_values(ascending=False).index
        return df.loc[order].head(k).reset_index(drop=True)

    def summary(self, k: int = 8) -> str:
        lines = [
            f"who writes {self.label or 'the direction'} at {self.site} ({self.model}): contrast "
            f"{self.interval_of('total'):.3f} over "
            f"{len(self.components)} components; 80% from the top {self.k80}; Gini "
            f"{self.gini:.2f}; decomposition residual {self.residual:.2g}"
        ]
        for _, r in self.top(k).iterrows():
            iv = Interval.from_row(r, "contribution", self.level)
            lines.append(f"  {r['component']:<14} {iv:+.3f}  ({100 * r['share']:.1f}%)")
        return "\n".join(lines)


@dataclass(frozen=True, eq=False)
class FaithfulnessReport(Result):
    """Every faithfulness check of one representation, with the evidence behind each verdict.

    ``checks``: one row per check (``check``, ``criterion``, ``estimate``, ``ci_low``,
    ``ci_high``, ``reference``, ``passed``, ``note``). The other frames hold the evidence:
    ``reading`` (per-layer accuracy), ``steering`` (effects of steering, ablation and random
    directions), ``persistence``, ``logit_lens``, ``writers`` and ``divergence``; empty when a
    check was not run. ``intervals()``: each check's estimate by check name (no standard error
    is kept: NaN; the interval NaN where the check has none), at ``level`` (``meta["level"]``;
    NaN for reports saved before it was recorded); ``to_frame()`` is ``checks`` with the
    columns ``estimate, se, ci_low, ci_high, level``.
    """

    checks: pd.DataFrame
    reading: pd.DataFrame
    steering: pd.DataFrame
    persistence: pd.DataFrame
    logit_lens: pd.DataFrame
    writers: pd.DataFrame
    divergence: pd.DataFrame
    concept: str = ""
    behaviour: str = ""
    layers: list[int] = field(default_factory=list)
    layer: int = 0
    coef: float = 1.0
    model: str = ""
    seed: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def level(self) -> float:
        """The confidence level of the checks' intervals."""
        return float(self.meta.get("level", float("nan")))

    def _frame(self) -> pd.DataFrame:
        t = self.checks.copy()
        if "se" not in t.columns:
            t.insert(list(t.columns).index("estimate") + 1, "se", np.nan)
        return t.assign(level=self.level)

    def intervals(self) -> dict[str, Interval]:
        return {
            str(r["check"]): Interval.from_row(r, level=self.level)
            for _, r in self._frame().iterrows()
        }

    def to_frame(self) -> pd.DataFrame:
        return self._frame()

    def passed(self, check: str) -> bool:
        rows = self.checks[self.checks["check"] == check]
        if rows.empty:
            raise InputError(f"no check {check!r}; checks: {list(self.checks['check'])}")
        return bool(rows["passed"].iloc[0])

    def verdicts(self) -> dict[str, bool]:
        return {str(c): bool(p) for c, p in zip(self.checks["check"], self.checks["passed"])}

    def summary(self) -> str:
        lines = [
            f"faithfulness of the '{self.concept}' representation ({self.model}), behaviour "
            f"'{self.behaviour}', steering layers {self.layers} x{self.coef:g}, analysis layer "
            f"{self.layer}"
        ]
        for _, r in self._frame().iterrows():
            mark = "PASS" if r["passed"] else "fail"
            iv = Interval.from_row(r, level=self.level)
            lines.append(
                f"  {mark}  {r['check']:<24} {iv:+.3f}  {r['criterion']}"
                + (f"  ({r['note']})" if r["note"] else "")
            )
        return "\n".join(lines)


__all__ = [
    "FaithfulnessReport",
    "LogitLensResult",
    "PersistenceResult",
    "SteeringResult",
    "WritersResult",
]
