"""Results of the logit lens over layers and of direct logit attribution
(:mod:`faithlens.representations.lenses`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from ..errors import InputError
from ..results import Estimate, Result

QUANTITIES = ("logit_diff", "prob", "rank")


@dataclass(frozen=True, eq=False)
class LayerLensResult(Result):
    """The logit lens at each layer: the residual stream ``site.L`` at each example's metric
    position read through the final norm and the unembedding.

    Per layer (``layers``), the mean over examples of the answer's logit difference (correct
    minus the mean of the wrong answers), the correct answer's probability and its rank (0: the
    top token), each with a bootstrap CI (``intervals()["logit_diff"]``, ``["prob"]``,
    ``["rank"]``; frame columns ``q, q_se, q_ci_low, q_ci_high``). ``per_example`` is
    ``[3, n_layers, n]`` (the three quantities in that order). ``model_logit_diff`` is the
    model's own logit difference (its output logits), the value the last layer's
    ``resid_post`` reads.
    """

    layers: list[int]
    site: str
    logit_diff: np.ndarray
    logit_diff_se: np.ndarray
    logit_diff_low: np.ndarray
    logit_diff_high: np.ndarray
    prob: np.ndarray
    prob_se: np.ndarray
    prob_low: np.ndarray
    prob_high: np.ndarray
    rank: np.ndarray
    rank_se: np.ndarray
    rank_low: np.ndarray
    rank_high: np.ndarray
    per_example: np.ndarray
    model_logit_diff: float
    model_logit_diff_se: float
    model_logit_diff_low: float
    model_logit_diff_high: float
    which: str = "clean"
    model: str = ""
    task: str = ""
    level: float = 0.95
    n_boot: int = 1000
    seed: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    INTERVALS: ClassVar[dict[str, Estimate]] = {
        **{q: Estimate(q, f"{q}_se", f"{q}_low", f"{q}_high") for q in QUANTITIES},
        "model_logit_diff": Estimate(
            "model_logit_diff",
            "model_logit_diff_se",
            "model_logit_diff_low",
            "model_logit_diff_high",
        ),
    }

    @property
    def n(self) -> int:
        return int(self.per_example.shape[-1])

    def to_frame(self) -> pd.DataFrame:
        cols: dict[str, Any] = {
            "layer": self.layers,
            "site": [f"{self.site}.{L}" for L in self.layers],
        }
        for q in QUANTITIES:
            cols.update(self.interval_of(q).columns(q))
        cols["level"] = self.level
        return pd.DataFrame(cols)

    def at(self, layer: int) -> dict[str, Any]:
        """The frame's row of one layer."""
        if layer not in self.layers:
            raise InputError(f"no layer {layer} in this lens; layers: {self.layers}")
        return dict(self.to_frame().iloc[self.layers.index(layer)])

    def summary(self) -> str:
        pct = round(self.level * 100)
        # a multi-token task: its teacher-forced metric (meta["metric"]), not a logit diff
        name = str(self.meta.get("metric", "logit diff"))
        lines = [
            f"logit lens of {self.model} on {self.task!r} ({self.which}, n={self.n}, "
            f"{self.site}, {pct}% bootstrap CI): model's {name} "
            f"{self.interval_of('model_logit_diff'):.3f}",
            f"  {'layer':>5}  {name:<30} {'p(correct)':<28} rank",
        ]
        ld, p, r = (self.interval_of(q) for q in QUANTITIES)
        for i, L in enumerate(self.layers):
            lines.append(f"  {L:>5}  {ld[i].format():<30} {p[i].format():<28} {r[i]:.1f}")
        return "\n".join(lines)


@dataclass(frozen=True, eq=False)
class DirectLogitAttribution(Result):
    """Each component's direct contribution to the answer's logit difference through the
    final norm (scale frozen) and the unembedding.

    ``components`` are ``embed``, ``head.L.H``, ``attn_bias.L``, ``mlp_out.L`` and ``bias``
    (the final norm's and the unembedding's biases); ``contribution`` their mean over examples
    with a bootstrap CI (``intervals()["contribution"]``), ``per_example`` ``[C, n]``. ``total``
    is the logit difference read from the final residual (the model's own), with its CI; the
    parts add up to it per example up to ``residual`` (the largest gap, float error).
    """

    components: list[str]
    layer: list[int | None]
    head: list[int | None]
    contribution: np.ndarray
    contribution_se: np.ndarray
    contribution_low: np.ndarray
    contribution_high: np.ndarray
    per_example: np.ndarray
    total: float
    total_se: float
    total_low: float
    total_high: float
    residual: float = 0.0
    which: str = "clean"
    model: str = ""
    task: str = ""
    level: float = 0.95
    n_boot: int = 1000
    seed: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    INTERVALS: ClassVar[dict[str, Estimate]] = {
        "contribution": Estimate(
            "contribution", "contribution_se", "contribution_low", "contribution_high"
        ),
        "total": Estimate("total", "total_se", "total_low", "total_high"),
    }

    @property
    def n(self) -> int:
        return int(self.per_example.shape[-1])

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "component": self.components,
                "layer": pd.array(self.layer, dtype="Int64"),
                "head": pd.array(self.head, dtype="Int64"),
                **self.interval_of("contribution").columns("contribution"),
                "level": self.level,
            }
        )

    def top(self, k: int = 10) -> pd.DataFrame:
        """The ``k`` components of largest |contribution|."""
        df = self.to_frame()
        return df.reindex(df["contribution"].abs().sort_values(ascending=False).index).head(k)

    def of(self, component: str) -> dict[str, Any]:
        """The frame's row of one component."""
        if component not in self.components:
            raise InputError(f"no component {component!r}; e.g. {self.components[:5]}")
        return dict(self.to_frame().iloc[self.components.index(component)])

    def summary(self, k: int = 10) -> str:
        pct = round(self.level * 100)
        lines = [
            f"direct logit attribution of {self.model} on {self.task!r} ({self.which}, "
            f"n={self.n}, {pct}% bootstrap CI): logit diff {self.interval_of('total'):.3f}; "
            f"the {len(self.components)} parts add up to it within {self.residual:.2g}",
        ]
        c = self.interval_of("contribution")
        for i in self.top(k).index:
            lines.append(f"  {self.components[i]:<16} {c[int(i)]:.3f}")
        return "\n".join(lines)


__all__ = ["QUANTITIES", "DirectLogitAttribution", "LayerLensResult"]
