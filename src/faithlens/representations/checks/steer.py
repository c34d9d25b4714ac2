"""Behaviour under conditions: the metric, paired comparisons with the unsteered baseline, the
dose-response sweep, specificity against random directions (**causal**, **specific**) and
persistence over a generation (Paper B's continual-injection test)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ... import stats
from ... import validate as V
from ...errors import InputError
from ...models.model import Model
from ...progress import Progress
from ..behaviour import Behaviour
from ..data import Prompt
from ..generation import generate
from ..reading import ReadingResult
from ..results import PersistenceResult, SteeringResult
from ..steering import Steering, as_steerings
from .distribution import site_tokens

Metric = str | Callable[[Model, Any], np.ndarray]


# --------------------------------------------------------------------------------------------
# behaviour under conditions
# --------------------------------------------------------------------------------------------


def measure(
    model: Model,
    behaviour: Behaviour,
    steering: Steering | Sequence[Steering] | None = None,
    *,
    metric: Metric = "margin",
    batch_size: int = 16,
    **gen_kwargs: Any,
) -> np.ndarray:
    """One number per prompt: ``"margin"`` (teacher-forced ``log p(pos) - log p(neg)``),
    ``"margin_per_token"``, ``"rate"`` (1 where the judged generation shows the behaviour;
    ``gen_kwargs`` go to :func:`generate`), or ``metric(model, steering) -> [n]``."""
    if callable(metric):
        out = np.asarray(metric(model, steering), dtype=np.float64)
        if out.shape != (len(behaviour),):
            raise InputError(
                f"the metric returned shape {out.shape}; it must return one number per prompt "
                f"({len(behaviour)})"
            )
    elif metric == "margin":
        out = behaviour.margin(model, steering, batch_size=batch_size)
    elif metric == "margin_per_token":
        out = behaviour.margin(model, steering, per_token=True, batch_size=batch_size)
    elif metric == "rate":
        gen_kwargs.setdefault("batch_size", batch_size)
        out = behaviour.rate(model, steering, **gen_kwargs)
    else:
        raise InputError(
            f"metric must be 'margin', 'margin_per_token', 'rate' or a callable, not {metric!r}"
        )
    if not np.all(np.isfinite(out)):
        from ...errors import MetricError

        bad = np.flatnonzero(~np.isfinite(out))[:8].tolist()
        raise MetricError(f"the behaviour metric is NaN or infinite for prompts {bad}")
    return out


def metric_name(metric: Metric) -> str:
    return metric if isinstance(metric, str) else getattr(metric, "__name__", "custom")


def _diff_mean(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.asarray((a - b).mean(axis=axis))


def compare(
    model: Model,
    behaviour: Behaviour,
    conditions: Sequence[Steering | Sequence[Steering]],
    *,
    kinds: Sequence[str] | None = None,
    coefs: Sequence[float] | None = None,
    metric: Metric = "margin",
    baseline: np.ndarray | None = None,
    precomputed: dict[int, np.ndarray] | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    batch_size: int = 16,
    progress: Progress | None = None,
    **gen_kwargs: Any,
) -> SteeringResult:
    """The behaviour under each condition (a :class:`Steering` or several applied together),
    paired with the unsteered baseline: mean effect with a bootstrap CI over prompts.
    ``baseline`` / ``precomputed`` (``{condition index: values}``) reuse metric values that
    were already measured."""
    V.n_boot(n_boot)
    V.level(level)
    V.nonnegative_int("seed", seed)
    V.positive_int("batch_size", batch_size)
    if isinstance(metric, str):
        V.choice("metric", metric, ("margin", "margin_per_token", "rate"))
    if "max_new_tokens" in gen_kwargs:
        V.positive_int("max_new_tokens", gen_kwargs["max_new_tokens"], fix="generate >= 1 token")
    conds = [as_steerings(c) for c in conditions]
    if not conds:
        raise InputError("compare needs at least one condition")
    for c in conds:
        if not c:
            raise InputError("every condition needs at least one Steering")
        for s in c:
            s.check(model)
    n_c = len(conds)
    if kinds is not None and len(kinds) != n_c:
        raise InputError(f"{len(kinds)} kinds for {n_c} conditions")
    if coefs is not None and len(coefs) != n_c:
        raise InputError(f"{len(coefs)} coefficients for {n_c} conditions")
    if baseline is None:
        baseline = measure(
            model, behaviour, None, metric=metric, batch_size=batch_size, **gen_kwargs
        )
    base = np.asarray(baseline, dtype=np.float64)
    if base.shape != (len(behaviour),):
        raise InputError(f"baseline has shape {base.shape}; expected ({len(behaviour)},)")
    values = np.empty((n_c, len(behaviour)))
    pre = precomputed or {}
    for i, c in enumerate(conds):
        if i in pre:
            v = np.asarray(pre[i], dtype=np.float64)
            if v.shape != (len(behaviour),):
                raise InputError(f"precomputed values for condition {i} have shape {v.shape}")
            values[i] = v
        else:
            values[i] = measure(
                model, behaviour, c, metric=metric, batch_size=batch_size, **gen_kwargs
            )
        if progress is not None:
            progress(i + 1, n_c)
    iv = stats.bootstrap(_diff_mean, (values, base), n_boot=n_boot, level=level, seed=seed)
    labels = [" + ".join(s.label for s in c) for c in conds]
    return SteeringResult(
        conditions=labels,
        kind=list(kinds) if kinds is not None else ["steer"] * n_c,
        coef=[float(x) for x in coefs] if coefs is not None else [float("nan")] * n_c,
        values=values,
        baseline=base,
        effect=np.asarray(iv.estimate).reshape(-1),
        effect_se=np.asarray(iv.se).reshape(-1),
        effect_low=np.asarray(iv.low).reshape(-1),
        effect_high=np.asarray(iv.high).reshape(-1),
        metric=metric_name(metric),
        behaviour=behaviour.name,
        model=model.name,
        level=level,
        n_boot=n_boot,
        seed=seed,
    )


def steering_sweep(
    model: Model,
    reading: ReadingResult,
    behaviour: Behaviour,
    layers: Sequence[int] | int,
    coefs: Sequence[float] = (-2.0, -1.0, -0.5, 0.5, 1.0, 2.0),
    *,
    scale: str = "separation",
    when: str = "all",
    metric: Metric = "margin",
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    batch_size: int = 16,
    progress: Progress | None = None,
    **gen_kwargs: Any,
) -> SteeringResult:
    """Dose-response: the behaviour under ``coef * reading vector`` for each coefficient."""
    if not coefs:
        raise InputError("give at least one coefficient")
    conds = [reading.steering(layers, float(c), scale=scale, when=when) for c in coefs]
    return compare(
        model,
        behaviour,
        conds,
        kinds=["steer"] * len(conds),
        coefs=list(coefs),
        metric=metric,
        n_boot=n_boot,
        level=level,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
        **gen_kwargs,
    )


def specificity(
    model: Model,
    behaviour: Behaviour,
    steering: Steering,
    *,
    n_random: int = 19,
    null: str = "covariance",
    natural: dict[str, Any] | None = None,
    draw_seed: int | None = None,
    metric: Metric = "margin",
    baseline: np.ndarray | None = None,
    target: np.ndarray | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    batch_size: int = 16,
    progress: Progress | None = None,
    **gen_kwargs: Any,
) -> tuple[SteeringResult, float]:
    """The steering's effect next to ``n_random`` random directions of the same norms at the
    same sites and schedule. Returns the effects (first condition: the steering itself) and the
    empirical two-sided p-value ``(1 + #{|random| >= |effect|}) / (1 + n_random)``.

    ``null="covariance"`` (default): directions drawn from the covariance of natural activations
    at each site (``natural``: ``{site: [N, width]}``; default: every token of the behaviour's
    prompts), then scaled to the same norm. Like a concept direction, they lie along directions
    the activations actually vary in, so removing or adding them is as disruptive as removing or
    adding a typical feature. ``"isotropic"``: directions uniform on the sphere, the classic but
    weaker null (in a language model's residual stream almost every isotropic direction has
    little variance, and ablating it does nothing). Random direction ``i`` is drawn with seed
    ``draw_seed + i`` (default ``seed + 1000``); ``seed`` seeds the bootstrap. ``baseline`` and
    ``target`` reuse already measured metric values (unsteered, and under ``steering``)."""
    if n_random < 1:
        raise InputError(f"n_random must be at least 1, got {n_random}")
    if null not in ("isotropic", "covariance"):
        raise InputError(f"null must be 'isotropic' or 'covariance', not {null!r}")
    if null == "covariance" and natural is None:
        natural, _ = site_tokens(model, behaviour.prompts, steering.sites, batch_size=batch_size)
    nat_t = (
        {k: torch.as_tensor(np.asarray(v)) for k, v in natural.items()}
        if null == "covariance" and natural is not None
        else None
    )
    rand = [
        steering.random_like(
            seed=(seed + 1000 if draw_seed is None else draw_seed) + i,
            natural=nat_t,
            label=f"{null} random #{i}",
        )
        for i in range(n_random)
    ]
    res = compare(
        model,
        behaviour,
        [steering, *rand],
        kinds=["target"] + ["random" if steering.operator == "add" else "random_ablate"] * n_random,
        metric=metric,
        baseline=baseline,
        precomputed=None if target is None else {0: target},
        n_boot=n_boot,
        level=level,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
        **gen_kwargs,
    )
    p = float(stats.empirical_p(res.effect[0], res.effect[1:], alternative="two-sided"))
    return res, p


# --------------------------------------------------------------------------------------------
# persistence (Paper B's continual-injection test)
# --------------------------------------------------------------------------------------------


def persistence(
    model: Model,
    behaviour: Behaviour,
    steering: Steering,
    *,
    max_new_tokens: int = 12,
    reference: Sequence[Prompt] | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    batch_size: int = 16,
) -> PersistenceResult:
    """Per-token log-probability of a reference continuation with no injection, one-shot
    injection (prompt only) and continual injection (prompt and every generated token).

    The reference is the unsteered model's own greedy continuation of each prompt (Paper B
    compared "output log probabilities at every token position both with and without the
    injection"), or the continuations given in ``reference``.
    """
    from ..generation import continuation_logprobs

    if reference is None:
        gens = generate(
            model, behaviour.prompts, max_new_tokens=max_new_tokens, stop=[], batch_size=batch_size
        )
        refs: list[Prompt] = [tuple(int(t) for t in row if t >= 0) for row in gens.tokens]
        ref_name = "unsteered generation"
    else:
        if len(reference) != len(behaviour):
            raise InputError(
                f"{len(reference)} reference continuations for {len(behaviour)} prompts"
            )
        refs = list(reference)
        ref_name = "reference continuation"
    schedules = {
        "none": None,
        "one-shot": steering.at("prompt", label=f"{steering.label} (one-shot)"),
        "continual": steering.at("all", label=f"{steering.label} (continual)"),
    }
    vals = []
    for s in schedules.values():
        vals.append(continuation_logprobs(model, behaviour.prompts, refs, s, batch_size=batch_size))
    values = np.stack(vals)  # [S, n, T]
    S, _n, T = values.shape
    mean = np.full((S, T), np.nan)
    low = np.full((S, T), np.nan)
    high = np.full((S, T), np.nan)
    for t in range(T):
        ok = np.all(np.isfinite(values[:, :, t]), axis=0)
        if ok.sum() < 2:
            continue
        d = values[:, ok, t] - values[0, ok, t]
        iv = stats.bootstrap(
            lambda a, axis=-1: np.asarray(a.mean(axis=axis)),
            (d,),
            n_boot=n_boot,
            level=level,
            seed=seed + t,
        )
        mean[:, t], low[:, t], high[:, t] = iv.estimate, iv.low, iv.high
    return PersistenceResult(
        schedules=list(schedules),
        values=values,
        mean=mean,
        low=low,
        high=high,
        reference=ref_name,
        behaviour=behaviour.name,
        model=model.name,
        level=level,
        seed=seed,
        meta={"steering": steering.describe()},
    )
