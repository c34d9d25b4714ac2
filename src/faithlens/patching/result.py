"""``PatchingResult``: per-site effects of activation / attribution patching, with CIs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from .. import validate
from ..errors import InputError
from ..interventions import Patch
from ..models.sites import Site
from ..results import Estimate, Result
from ..stats import Interval


@dataclass(frozen=True, eq=False)
class PatchingResult(Result):
    """Effects of patching each site (one row per condition).

    ``effect = (mean m_patched - mean m_base) / (mean m_source - mean m_base)``: 1 means the site
    alone moves the metric all the way from the base run to the source run, 0 means it does
    nothing. Denoising patches clean activations into the corrupted run (base = corrupt); noising
    patches corrupted activations into the clean run (base = clean). ``ci_low``/``ci_high`` are a
    bootstrap confidence interval over examples (BCa; numerator and denominator resampled
    together), ``se`` its bootstrap standard error: ``intervals()["effect"]``, and the frame
    columns ``effect, effect_se, effect_ci_low, effect_ci_high``.

    ``patched`` holds the per-example metric of every condition ``[n_conditions, n]`` (for
    attribution patching: the first-order estimate ``m_base + grad . (source - base)``).
    """

    site: list[str]
    kind: list[str]
    layer: list[int | None]
    head: list[int | None]
    position: list[int | None]
    effect: np.ndarray
    se: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    patched: np.ndarray
    base: np.ndarray
    source: np.ndarray
    method: str = "exact"
    direction: str = "denoising"
    positions: str = "all"
    metric: str = "logit_diff"
    model: str = ""
    task: str = ""
    level: float = 0.95
    n_boot: int = 1000
    seed: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    INTERVALS: ClassVar[dict[str, Estimate]] = {
        "effect": Estimate("effect", "se", "ci_low", "ci_high")
    }

    @property
    def n(self) -> int:
        return int(self.base.shape[0])

    def to_frame(self) -> pd.DataFrame:
        df = pd.DataFrame(
            {
                "site": self.site,
                "kind": self.kind,
                "layer": pd.array(self.layer, dtype="Int64"),
                "head": pd.array(self.head, dtype="Int64"),
                "position": pd.array(self.position, dtype="Int64"),
                **self.interval_of("effect").columns("effect"),
                "level": self.level,
                "mean_patched": self.patched.mean(-1) if self.patched.size else np.array([]),
            }
        )
        return df

    def top(self, k: int = 10, by: str = "abs") -> pd.DataFrame:
        """The ``k`` sites with the largest effect (``by="abs"``) or most positive (``"value"``),
        with the site and its effect and confidence interval as the first columns (so that a
        display that elides middle columns, as pandas does, still shows them)."""
        k = validate.nonnegative_int("k", k, fix="the number of rows, e.g. 10")
        validate.choice("by", by, ("abs", "value"))
        df = self.to_frame()
        key = df["effect"].abs() if by == "abs" else df["effect"]
        first = ["site", "effect", "effect_ci_low", "effect_ci_high"]
        df = df[[*first, *(c for c in df.columns if c not in first)]]
        return df.loc[key.sort_values(ascending=False).index].head(k).reset_index(drop=True)

    def summary(self, k: int = 10) -> str:
        m_base, m_src = float(self.base.mean()), float(self.source.mean())
        if self.method == "path":
            what = (
                "into the logits (direct effect)"
                if self.meta.get("receivers") == ["logits"]
                else f"into {', '.join(self.meta.get('receivers', []))} "
                f"(ports {''.join(self.meta.get('receiver_ports', []))}, "
                f"positions={self.meta.get('receiver_positions')})"
            )
            head = (
                f"path patching ({self.direction}, sender positions={self.positions}) of "
                f"{self.model} on {self.task}, {what}: {len(self.site)} senders, n={self.n} "
                "examples"
            )
        else:
            head = (
                f"{self.method} activation patching ({self.direction}, positions="
                f"{self.positions}) of {self.model} on {self.task}: {len(self.site)} conditions, "
                f"n={self.n} examples"
            )
        lines = [
            head,
            f"metric {self.metric}: base (patched into) {m_base:.3f}, source {m_src:.3f}; "
            f"effect = (patched - base) / (source - base); {int(self.level * 100)}% bootstrap CIs",
        ]
        top = self.top(k)
        for _, r in top.iterrows():
            pos = "" if pd.isna(r["position"]) else f" @pos {int(r['position'])}"
            iv = Interval.from_row(r, "effect", self.level)
            lines.append(f"  {r['site']:<16}{pos:<10} {iv:+.3f}")
        return "\n".join(lines)

    def interventions(self, top: int | None = None, *, source: str | None = None) -> list[Patch]:
        """The patches this experiment applied, as interventions whose source is a reference to
        the task's clean (denoising) or corrupted (noising) run; bind them to data with
        ``task.bind(model, interventions)``. ``top``: only the ``top`` largest effects."""
        if self.method == "path":
            raise InputError(
                "a path patching result is not a list of single-site patches: each sender acts "
                "only through its edges into the receivers (rerun fl.path_patch to reproduce it)"
            )
        if top is not None:
            top = validate.positive_int("top", top, fix="the number of patches, e.g. 3")
        if source is not None:
            validate.choice("source", source, ("clean", "corrupt"))
        ref = source or ("clean" if self.direction == "denoising" else "corrupt")
        order = np.argsort(-np.abs(np.nan_to_num(self.effect)))
        idx = order[:top] if top is not None else np.arange(len(self.site))
        out = []
        for i in idx:
            pos: Any = None
            if self.positions == "last":
                pos = "last"
            elif self.position[i] is not None:
                pos = int(self.position[i])
            out.append(Patch(Site(self.site[i], positions=pos), source=ref))
        return out
