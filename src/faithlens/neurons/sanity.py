"""NeuronEval's sanity checks of similarity metrics (Oikarinen, Yan & Weng, ICML 2025).

Faithfulness bounds say whether the *best concept under a metric* is known; they do not say
whether the metric rewards the right explanation. NeuronEval's two checks do, on a unit that
equals its concept (``f = c + eps · N(0, 1)``):

- **missing labels**: remove about half of the concept's positive labels. The explanation has
  become worse (it misses half of what the unit does), so its score must drop.
- **extra labels**: add random positives so the expected number of positives doubles. The
  explanation now claims things the unit does not do, so its score must drop.

A metric passes a check at a concept frequency when the score drops by more than ``tol`` in at
least ``pass_rate`` of the seeds. NeuronEval reports that only correlation, cosine, AUPRC, F1 and
IoU pass both at every frequency; accuracy, precision, recall and AUROC each fail one.
Thresholded metrics fire on the unit's top ``p`` fraction (its activation frequency). Seeds run
as one batch (each seed is a unit with its own labels: the engine's paired mode).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from .. import stats
from .. import validate as V
from ..errors import InputError
from ..results import Result, with_intervals
from .explain import DIRECTIONS, as_metrics, full_pass, unit_blocks
from .kernels import FAMILIES, Problem, memory_budget, plan_chunks

CHECKABLE = (
    "accuracy",
    "precision",
    "recall",
    "f1",
    "iou",
    "auroc",
    "auprc",
    "correlation",
    "cosine",
)
FREQUENCIES = (0.499, 0.1, 0.01, 0.001, 0.0001)


def _frequencies(frequencies: Sequence[float] | None, n: int) -> tuple[float, ...]:
    """The concept frequencies to check at ``n`` inputs (see :func:`sanity_checks`)."""
    if frequencies is None:
        usable = tuple(f for f in FREQUENCIES if f * n >= 2)
        dropped = [f for f in FREQUENCIES if f * n < 2]
        if dropped:
            warnings.warn(
                f"n={n} gives fewer than 2 positives at the default frequencies "
                f"{', '.join(f'{f:g}' for f in dropped)}; they are left out (raise n to "
                f"{math.ceil(2 / min(dropped))} to check them)",
                stacklevel=3,
            )
        return usable
    freqs = tuple(float(f) for f in frequencies)
    if not freqs:
        raise V.fail("frequencies", frequencies, "is empty", "Give frequencies in (0, 0.5)")
    for f in freqs:
        if not 0 < f < 0.5:
            raise V.fail("frequencies", f, "must lie in (0, 0.5)", "Give frequencies in (0, 0.5)")
        if f * n < 2:
            raise V.fail(
                "frequencies",
                f,
                f"gives fewer than 2 positives at n={n}",
                f"Raise n to at least {math.ceil(2 / f)} or leave that frequency out",
            )
    return freqs


def sanity_checks(
    metrics: str | Sequence[str] = CHECKABLE,
    *,
    n: int = 100_000,
    seeds: int = 200,
    frequencies: Sequence[float] | None = None,
    eps: float = 1e-3,
    tol: float = 1e-3,
    pass_rate: float = 0.95,
    direction: str = "unit_predicts_concept",
    seed: int = 0,
    max_memory: int | None = None,
) -> SanityCheck:
    """Run the missing-labels and extra-labels checks for ``metrics``.

    NeuronEval used 500k inputs and 1000 seeds; the defaults (100k, 200) reach the same verdicts
    on a CPU in about a minute. ``frequencies`` defaults to :data:`FREQUENCIES`, less those that
    would give fewer than 2 positives at this ``n`` (dropped with a warning); frequencies given
    explicitly must all be usable.
    """
    ms = as_metrics(metrics)
    bad = [m for m in ms if m not in CHECKABLE]
    if bad:
        raise InputError(f"sanity checks support {list(CHECKABLE)}, not {bad}")
    if seeds < 2 or n < 100:
        raise InputError("sanity checks need seeds >= 2 and n >= 100")
    if not 0 < pass_rate <= 1:
        raise InputError("pass_rate must be in (0, 1]")
    V.positive_float("eps", eps)
    V.finite_float("tol", tol, low=0.0)
    V.nonnegative_int("seed", seed)
    V.choice("direction", direction, DIRECTIONS)
    if max_memory is not None:
        V.positive_int("max_memory", max_memory, fix="give a number of bytes")
    freqs = _frequencies(frequencies, n)
    gen = torch.Generator().manual_seed(seed)
    rows: list[dict[str, Any]] = []
    for f in freqs:
        c = (torch.rand(seeds, n, generator=gen) < f).float()
        # missing: drop each positive with probability 1/2; extra: add positives among the
        # negatives so that the expected number of positives doubles
        keep = (torch.rand(seeds, n, generator=gen) < 0.5).float()
        missing = c * keep
        add = (torch.rand(seeds, n, generator=gen) < f / (1 - f)).float()
        extra = torch.maximum(c, add)
        x = c + eps * torch.randn(seeds, n, generator=gen)
        labels = torch.stack([c, missing, extra], -1)  # [seeds, n, 3]
        prob = Problem(
            x=x.T.contiguous(),
            c=labels,
            alpha=f,
            thresholds=None,
            direction=direction,
            perm=torch.randperm(n, generator=gen),
        )
        families = {FAMILIES[m] for m in ms}
        per_block, _ = plan_chunks(prob, families, 0, 0, memory_budget(prob.device, max_memory))
        fp = full_pass(prob, ms, unit_blocks(prob, per_block))
        for j, m in enumerate(ms):
            s = fp.scores[j]  # [seeds, 3]
            drop_missing = s[:, 0] - s[:, 1]
            drop_extra = s[:, 0] - s[:, 2]
            rows.append(
                {
                    "metric": m,
                    "frequency": f,
                    "score": float(np.nanmean(s[:, 0])),
                    "drop_missing": float(np.nanmean(drop_missing)),
                    "drop_extra": float(np.nanmean(drop_extra)),
                    "missing_rate": float(np.mean(np.nan_to_num(drop_missing, nan=-1) > tol)),
                    "extra_rate": float(np.mean(np.nan_to_num(drop_extra, nan=-1) > tol)),
                }
            )
    table = pd.DataFrame(rows)
    table["passes_missing"] = table["missing_rate"] >= pass_rate
    table["passes_extra"] = table["extra_rate"] >= pass_rate
    return SanityCheck(
        table=table,
        metrics=ms,
        frequencies=freqs,
        n=int(n),
        seeds=int(seeds),
        eps=float(eps),
        tol=float(tol),
        pass_rate=float(pass_rate),
        direction=direction,
        seed=int(seed),
    )


@dataclasses.dataclass(frozen=True)
class SanityCheck(Result):
    """Verdicts of the missing-labels and extra-labels checks per metric and frequency.

    ``intervals()``: per row of ``table``, ``missing_rate`` and ``extra_rate`` (rates over the
    ``seeds`` seeds, with the binomial standard error and 95% Wilson interval) and ``score``,
    ``drop_missing``, ``drop_extra`` (means over the seeds, whose per-seed values are not kept:
    standard error and interval NaN); ``to_frame()`` is ``table`` with ``q, q_se, q_ci_low,
    q_ci_high, level``.
    """

    kind: ClassVar[str] = "neurons-sanity"

    table: pd.DataFrame
    metrics: tuple[str, ...]
    frequencies: tuple[float, ...]
    n: int
    seeds: int
    eps: float
    tol: float
    pass_rate: float
    direction: str
    seed: int

    def verdicts(self) -> pd.DataFrame:
        """Per metric: passes the missing-labels check, the extra-labels check, both (at every
        frequency)."""
        g = self.table.groupby("metric", sort=False)
        out = pd.DataFrame(
            {
                "missing_labels": g["passes_missing"].all(),
                "extra_labels": g["passes_extra"].all(),
            }
        )
        out["both"] = out["missing_labels"] & out["extra_labels"]
        return out.reset_index()

    def passing(self) -> list[str]:
        """The metrics that pass both checks at every frequency."""
        v = self.verdicts()
        return [str(m) for m in v.loc[v["both"], "metric"]]

    def intervals(self) -> dict[str, stats.Interval]:
        t = self.table

        def col(q: str) -> np.ndarray:
            return t[q].to_numpy(dtype=np.float64)

        out = {}
        for q in ("score", "drop_missing", "drop_extra"):
            nan = np.full(len(t), np.nan)
            out[q] = stats.Interval(col(q), nan, nan, nan, 0.95)
        for q in ("missing_rate", "extra_rate"):
            out[q] = stats.proportion_interval(np.round(col(q) * self.seeds), self.seeds)
        return out

    def to_frame(self) -> pd.DataFrame:
        return with_intervals(self.table, self.intervals())

    def summary(self) -> str:
        v = self.verdicts()
        rates = self.intervals()
        lines = [
            f"NeuronEval sanity checks: {self.n} inputs, {self.seeds} seeds, frequencies "
            f"{', '.join(f'{f:g}' for f in self.frequencies)}; a check passes when the score of "
            f"the correct explanation drops by more than {self.tol:g} in >= {self.pass_rate:.0%} "
            "of seeds",
            v.to_string(index=False),
            "rates of passing seeds (binomial SE, 95% Wilson interval):",
            *(
                f"  {r['metric']} at {r['frequency']:g}: missing labels {rates['missing_rate'][i]:.2f}, "
                f"extra labels {rates['extra_rate'][i]:.2f}"
                for i, r in enumerate(self.table.to_dict("records"))
            ),
            f"pass both: {', '.join(self.passing()) or 'none'}",
        ]
        return "\n".join(lines)


__all__ = ["CHECKABLE", "FREQUENCIES", "SanityCheck", "sanity_checks"]
