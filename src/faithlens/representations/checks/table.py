"""The faithfulness checks as a table: one function per check, one signature.

Every check takes the :class:`CheckContext` that :func:`~faithlens.representations.faithfulness`
builds once (the model, the reading, the behaviour, the steerings and every setting) and returns
a :class:`CheckOutcome`: its verdict rows and the detail tables it fills in the report.
:data:`CHECK_TABLE` maps each check's name to its function; the checks run in the table's order
whatever order they are asked for in. The ``causal`` and ``specific`` checks share one
measurement (the behaviour under ``±coef`` steering and ablation), which the context computes at
its first use.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from torch import Tensor

from ...errors import InputError
from ...models.model import Model
from ...progress import Progress
from ..behaviour import Behaviour
from ..data import ContrastPairs, Prompt
from ..reading import ReadingResult, stability
from ..results import SteeringResult
from ..steering import Steering
from .distribution import on_distribution, site_tokens
from .lens import logit_lens
from .steer import Metric, compare, measure, persistence, specificity
from .writing import writers

#: The columns of ``FaithfulnessReport.checks`` (one row per verdict).
ROW_COLUMNS = [
    "check",
    "criterion",
    "estimate",
    "ci_low",
    "ci_high",
    "reference",
    "passed",
    "note",
]


def _row(
    check: str,
    criterion: str,
    estimate: float,
    low: float = float("nan"),
    high: float = float("nan"),
    reference: float = float("nan"),
    passed: bool = False,
    note: str = "",
) -> dict[str, Any]:
    return {
        "check": check,
        "criterion": criterion,
        "estimate": float(estimate),
        "ci_low": float(low),
        "ci_high": float(high),
        "reference": float(reference),
        "passed": bool(passed),
        "note": note,
    }


@dataclass(frozen=True)
class Settings:
    """The scalar settings of :func:`~faithlens.representations.faithfulness` (validated
    there)."""

    coef: float
    scale: str
    prompt: str
    metric: Metric
    min_effect: float
    n_random: int
    null: str
    n_stability: int
    stable_threshold: float
    max_divergence_ratio: float
    divergence_metrics: Sequence[str]
    persistence_tokens: int
    alpha: float
    n_boot: int
    level: float
    seed: int
    batch_size: int


@dataclass(frozen=True)
class Steered:
    """The shared measurement of ``causal`` and ``specific``: the unsteered metric and the
    comparison of ``+coef``, ``-coef`` and ablation with it."""

    base: np.ndarray
    result: SteeringResult


@dataclass
class CheckContext:
    """What the checks share: the inputs, the steering layers ``layers``, the analysis ``layer``
    and its unit direction ``r``, the three steerings (``plus``, ``minus``, ``ablate``), the
    settings, and the progress callback ``say``."""

    model: Model
    reading: ReadingResult
    behaviour: Behaviour
    pairs: ContrastPairs | None
    natural: Sequence[Prompt] | None
    layers: list[int]
    layer: int
    r: Tensor
    plus: Steering
    minus: Steering
    ablate: Steering
    settings: Settings
    say: Callable[[str], None]
    steered: Steered | None = field(default=None, repr=False)

    def steering(self) -> Steered:
        """The behaviour under steering and ablation (measured at the first call)."""
        if self.steered is None:
            o = self.settings
            self.say("behaviour under steering and ablation")
            base = measure(
                self.model, self.behaviour, None, metric=o.metric, batch_size=o.batch_size
            )
            res = compare(
                self.model,
                self.behaviour,
                [self.plus, self.minus, self.ablate],
                kinds=["steer", "steer", "ablate"],
                coefs=[o.coef, -o.coef, float("nan")],
                metric=o.metric,
                baseline=base,
                n_boot=o.n_boot,
                level=o.level,
                seed=o.seed,
                batch_size=o.batch_size,
            )
            self.steered = Steered(base, res)
        return self.steered


@dataclass(frozen=True)
class CheckOutcome:
    """A check's verdict rows, and its detail tables as ``(report table, frame)`` pairs (the
    ``"steering"`` table collects pieces from several checks)."""

    rows: list[dict[str, Any]]
    frames: tuple[tuple[str, pd.DataFrame], ...] = ()


#: The signature every check has.
Check = Callable[[CheckContext], CheckOutcome]


# --------------------------------------------------------------------------------------------
# the checks
# --------------------------------------------------------------------------------------------


def causal(ctx: CheckContext) -> CheckOutcome:
    """Ablation changes the behaviour; ``+coef`` raises the metric and ``-coef`` lowers it, each
    by at least ``min_effect`` standard deviations of the baseline."""
    o = ctx.settings
    st = ctx.steering()
    base, res = st.base, st.result
    e = res.effect
    lo, hi = res.effect_low, res.effect_high
    sd = float(np.std(base, ddof=1)) if len(base) > 1 else 0.0
    floor = max(o.min_effect * sd, 1e-6)
    big = np.abs(e) >= floor
    note = f"min |effect| {floor:.3g} ({o.min_effect:g} SD of the baseline)"
    coef = o.coef
    rows = [
        _row(
            "causal: ablation",
            "projecting r out changes the behaviour (CI excludes 0)",
            e[2],
            lo[2],
            hi[2],
            0.0,
            bool((lo[2] > 0 or hi[2] < 0) and big[2]),
            note,
        ),
        _row(
            "causal: steer +",
            f"+{coef:g} x r raises the metric (CI > 0)",
            e[0],
            lo[0],
            hi[0],
            0.0,
            bool(lo[0] > 0 and big[0]),
            note,
        ),
        _row(
            "causal: steer -",
            f"-{coef:g} x r lowers the metric (CI < 0)",
            e[1],
            lo[1],
            hi[1],
            0.0,
            bool(hi[1] < 0 and big[1]),
            note,
        ),
    ]
    return CheckOutcome(rows)


def random_draws_needed(alpha: float) -> int:
    """The fewest random directions whose empirical p-value ``1 / (n_random + 1)`` can reach
    ``alpha`` (19 for 0.05)."""
    return max(1, math.ceil(1.0 / alpha - 1.0 - 1e-9))


def specificity_caveat(n_random: int, alpha: float) -> str:
    """Why a specificity verdict with ``n_random`` draws is not the test at ``alpha`` (too few
    draws: it is a test at ``p <= 1 / (n_random + 1)``, beyond every draw), or ``""``."""
    need = random_draws_needed(alpha)
    if n_random >= need:
        return ""
    return (
        f"n_random={n_random} random directions cannot give p <= alpha={alpha:g} (the smallest "
        f"p is {1.0 / (n_random + 1):.3g}), so this verdict is the looser test p <= "
        f"{1.0 / (n_random + 1):.3g}; use n_random >= {need} for the test at alpha"
    )


def specific(ctx: CheckContext) -> CheckOutcome:
    """``-coef`` steering and ablation beat ``n_random`` random directions of the same norm."""
    o = ctx.settings
    model, behaviour, n_random, null = ctx.model, ctx.behaviour, o.n_random, o.null
    st = ctx.steering()
    base, res = st.base, st.result
    min_p = max(o.alpha, 1.0 / (n_random + 1))
    caveat = specificity_caveat(n_random, o.alpha)
    ctx.say(f"{n_random} {null} random directions (steering and ablation)")
    nat_acts = None
    if null == "covariance":
        nat_acts, _ = site_tokens(
            model, behaviour.prompts, ctx.minus.sites, batch_size=o.batch_size
        )
    rs, p_steer = specificity(
        model,
        behaviour,
        ctx.minus,
        n_random=n_random,
        null=null,
        natural=nat_acts,
        metric=o.metric,
        baseline=base,
        target=res.values[1],
        n_boot=o.n_boot,
        level=o.level,
        seed=o.seed,
        batch_size=o.batch_size,
    )
    ra, p_abl = specificity(
        model,
        behaviour,
        ctx.ablate,
        n_random=n_random,
        null=null,
        natural=nat_acts,
        metric=o.metric,
        baseline=base,
        target=res.values[2],
        n_boot=o.n_boot,
        level=o.level,
        seed=o.seed,
        draw_seed=o.seed + 2000,
        batch_size=o.batch_size,
    )
    rows = []
    for name, what, sr, p_val in (
        (
            "specific: steer -",
            f"beyond {n_random} random directions of the same norm",
            rs,
            p_steer,
        ),
        ("specific: ablation", f"beyond ablating {n_random} random directions", ra, p_abl),
    ):
        rows.append(
            _row(
                name,
                f"|effect| {what} ({null} null; p <= {min_p:.3g})",
                sr.effect[0],
                sr.effect_low[0],
                sr.effect_high[0],
                float(np.quantile(np.abs(sr.effect[1:]), 1 - o.alpha)),
                bool(p_val <= min_p),
                f"p = {p_val:.3f}" + (f"; CAVEAT: {caveat}" if caveat else ""),
            )
        )
    return CheckOutcome(
        rows, (("steering", rs.to_frame().iloc[1:]), ("steering", ra.to_frame().iloc[1:]))
    )


def stable(ctx: CheckContext) -> CheckOutcome:
    """Bootstrap refits over the pairs (or the reading's own) give nearly the same direction."""
    o = ctx.settings
    reading, pairs, an_layer = ctx.reading, ctx.pairs, ctx.layer
    ctx.say("stability")
    if pairs is not None:
        from ..reading import collect, fit_direction

        acts = collect(
            ctx.model,
            pairs,
            layers=[an_layer],
            site=reading.site,
            position=reading.position,
            batch_size=o.batch_size,
        )
        p_, q_ = acts.layer(an_layer)
        p_, q_ = p_.astype(np.float64), q_.astype(np.float64)
        full = fit_direction(p_, q_, reading.method, seed=o.seed)
        cos = stability(p_, q_, full, reading.method, n_boot=o.n_stability, seed=o.seed)
        agree = float(full @ ctx.r.numpy().astype(np.float64))
        qs = np.quantile(cos, [(1 - o.level) / 2, (1 + o.level) / 2])
        est, lo_s, hi_s = float(cos.mean()), float(qs[0]), float(qs[1])
        note = f"{o.n_stability} refits on {len(pairs)} pairs; cos with the reading = {agree:.3f}"
    else:
        j = reading.layers.index(an_layer)
        est, lo_s, hi_s = (
            float(reading.stability[j]),
            float(reading.stability_low[j]),
            float(reading.stability_high[j]),
        )
        note = f"{reading.n_stability} refits (from the reading)"
    row = _row(
        "stable",
        f"mean bootstrap cosine >= {o.stable_threshold:g}",
        est,
        lo_s,
        hi_s,
        o.stable_threshold,
        bool(est >= o.stable_threshold),
        note,
    )
    return CheckOutcome([row])


def on_distribution_check(ctx: CheckContext) -> CheckOutcome:
    """The steered activations are as close to natural ones as natural ones are to each other."""
    o = ctx.settings
    max_divergence_ratio = o.max_divergence_ratio
    ctx.say("divergence audit of the steered activations")
    site = f"{ctx.reading.site}.{ctx.layer}"
    div = on_distribution(
        ctx.model,
        ctx.minus,
        ctx.behaviour.prompts,
        natural=ctx.natural,
        site=site,
        metrics=o.divergence_metrics,
        seed=o.seed,
        batch_size=o.batch_size,
    )
    t = div.to_frame()
    if "nn_mse" not in set(t["metric"]):
        raise InputError("the on-distribution verdict reads the 'nn_mse' divergence; include it")
    nn = t[t["metric"] == "nn_mse"].iloc[0]
    ratio = float(nn["ratio"])
    notes = [f"nn_mse {nn['intervened']:.3g} vs natural {nn['baseline']:.3g}"]
    for mname in ("emd", "auroc"):
        extra = t[t["metric"] == mname]
        if not extra.empty:
            notes.append(
                f"{mname} {float(extra['intervened'].iloc[0]):.3g} (natural "
                f"{float(extra['baseline'].iloc[0]):.3g})"
            )
    row = _row(
        "on-distribution",
        f"steered/natural nearest-neighbour distance <= {max_divergence_ratio:g}x at {site}",
        ratio,
        float("nan"),
        float("nan"),
        max_divergence_ratio,
        bool(ratio <= max_divergence_ratio),
        "; ".join(notes),
    )
    return CheckOutcome([row], (("divergence", t),))


def readable(ctx: CheckContext) -> CheckOutcome:
    """The logit-lens entropy of the direction is lower than that of random directions."""
    o = ctx.settings
    alpha = o.alpha
    ctx.say("logit lens")
    ll = logit_lens(
        ctx.model,
        ctx.r,
        alpha=alpha,
        seed=o.seed,
        label=f"{ctx.reading.concept} @ layer {ctx.layer}",
    )
    row = _row(
        "readable",
        f"logit-lens entropy below random directions (p <= {alpha:g})",
        ll.normalized,
        float("nan"),
        float("nan"),
        float(np.quantile(ll.null, alpha)) / ll.max_entropy,
        ll.readable,
        f"p = {ll.p_value:.3f}; top +r: {', '.join(repr(t) for t in ll.top_tokens[:3])}",
    )
    return CheckOutcome([row], (("logit_lens", ll.to_frame()),))


def who_writes_it(ctx: CheckContext) -> CheckOutcome:
    """The writing of the direction is sparse: 80% of the contrast from at most 5% of the
    upstream components."""
    o = ctx.settings
    ctx.say("who writes it")
    assert ctx.pairs is not None
    w = writers(
        ctx.model,
        ctx.pairs,
        ctx.r,
        ctx.layer,
        site=ctx.reading.site,
        position=ctx.reading.position,
        n_boot=o.n_boot,
        level=o.level,
        seed=o.seed,
        batch_size=o.batch_size,
    )
    frame = w.to_frame()
    top = w.top(1).iloc[0]
    n_c = len(w.components)
    limit = max(1, int(0.05 * n_c))
    row = _row(
        "who writes it",
        f"80% of the contrast from <= {limit} of {n_c} components",
        float(w.k80),
        float("nan"),
        float("nan"),
        float(limit),
        bool(w.k80 <= limit),
        f"top: {top['component']} ({100 * top['share']:.0f}%); Gini {w.gini:.2f}",
    )
    return CheckOutcome([row], (("writers", frame),))


def persistent(ctx: CheckContext) -> CheckOutcome:
    """A one-shot push keeps at least half of the continual effect late in a generation."""
    o = ctx.settings
    ctx.say("persistence (one-shot vs continual injection)")
    pr = persistence(
        ctx.model,
        ctx.behaviour,
        ctx.minus,
        max_new_tokens=o.persistence_tokens,
        n_boot=o.n_boot,
        level=o.level,
        seed=o.seed,
        batch_size=o.batch_size,
    )
    frame = pr.to_frame()
    ratio = pr.late_ratio()
    row = _row(
        "persistent",
        "a one-shot push keeps >= 50% of the continual effect late in the generation",
        ratio,
        float("nan"),
        float("nan"),
        0.5,
        bool(np.isfinite(ratio) and ratio >= 0.5),
    )
    return CheckOutcome([row], (("persistence", frame),))


#: Every check by the name ``faithfulness(checks=...)`` selects it with, in the order they run.
CHECK_TABLE: dict[str, Check] = {
    "causal": causal,
    "specific": specific,
    "stable": stable,
    "on_distribution": on_distribution_check,
    "readable": readable,
    "writers": who_writes_it,
    "persistence": persistent,
}

CHECKS = tuple(CHECK_TABLE)

#: The report's detail tables, each empty unless a check fills it.
FRAMES = ("steering", "divergence", "logit_lens", "writers", "persistence")


def run_checks(
    ctx: CheckContext, checks: Sequence[str], *, progress: Progress | None = None
) -> tuple[list[dict[str, Any]], dict[str, list[pd.DataFrame]]]:
    """Run the selected checks in the table's order: their rows, and the pieces of each detail
    table (``"steering"`` first holds the shared steering comparison, when it was measured)."""
    rows: list[dict[str, Any]] = []
    pieces: dict[str, list[pd.DataFrame]] = {k: [] for k in FRAMES}
    chosen = [(name, check) for name, check in CHECK_TABLE.items() if name in checks]
    for done, (_, check) in enumerate(chosen, start=1):
        out = check(ctx)
        rows += out.rows
        for key, frame in out.frames:
            pieces[key].append(frame)
        if progress is not None:
            progress(done, len(chosen))
    if ctx.steered is not None:
        pieces["steering"].insert(0, ctx.steered.result.to_frame())
    return rows, pieces
