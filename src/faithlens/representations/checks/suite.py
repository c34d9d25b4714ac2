"""The driver of the faithfulness checks: validate, build the shared context, run the selected
checks from :data:`~faithlens.representations.checks.table.CHECK_TABLE`, assemble the report."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import pandas as pd

from ... import validate as V
from ...errors import InputError
from ...models.model import Model
from ...progress import Progress, annotated_done_total, positional_arity
from ..behaviour import Behaviour
from ..data import ContrastPairs, Prompt
from ..generation import encode, encode_continuations
from ..pair_activations import prompts_per_pass
from ..reading import ReadingResult
from ..results import FaithfulnessReport
from .steer import Metric, metric_name
from .table import (
    CHECKS,
    ROW_COLUMNS,
    CheckContext,
    Settings,
    random_draws_needed,
    run_checks,
    specificity_caveat,
)


def reading_first(args: tuple[Any, ...]) -> bool:
    """Whether positional arguments ``(model, reading, behaviour, ...)`` are in the order that
    ``faithfulness`` took before the data (the behaviour) became its second argument (one
    release: the old order still works, with a DeprecationWarning)."""
    return len(args) > 1 and isinstance(args[1], ReadingResult)


@V.reordered_arguments(("model", "reading", "data"), reading_first)
@V.renamed_argument("behaviour", "data")
def faithfulness(
    model: Model,
    data: Behaviour,
    reading: ReadingResult,
    *,
    layers: Sequence[int] | int,
    coef: float = 1.0,
    scale: str = "separation",
    prompt: str = "all",
    pairs: ContrastPairs | None = None,
    layer: int | None = None,
    checks: Sequence[str] = CHECKS,
    metric: Metric = "margin",
    min_effect: float = 0.1,
    n_random: int = 19,
    null: str = "covariance",
    n_stability: int = 50,
    stable_threshold: float = 0.9,
    max_divergence_ratio: float = 2.0,
    natural: Sequence[Prompt] | None = None,
    divergence_metrics: Sequence[str] = ("nn_mse", "emd"),
    persistence_tokens: int = 12,
    alpha: float = 0.05,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    batch_size: int | None = None,
    progress: Progress | None = None,
    on_check: Callable[[str], None] | None = None,
    max_memory: int | None = None,
) -> FaithfulnessReport:
    """Run the faithfulness checks of ``reading``'s direction on ``data`` (a :class:`Behaviour`).

    Steering adds ``±coef`` times the (``scale``-d) reading vector at ``layers``, at every prompt
    token (``prompt="all"``, RepE) or the last one (``"last"``) and at every generated token;
    ablation projects the direction out at the same layers and tokens. The analysis
    layer ``layer`` (default: the last steered layer) is where stability, readability and the
    writers are measured and where the divergence audit looks.

    Verdicts (one row each in ``report.checks``):

    - ``causal: ablation``: projecting the direction out changes the behaviour (CI excludes 0);
    - ``causal: steer +`` / ``causal: steer -``: ``+coef`` raises the metric, ``-coef`` lowers
      it (CIs exclude 0 on the right side).
      A causal effect must also be at least ``min_effect`` standard deviations of the baseline
      metric across prompts, so that a numerically tiny but consistent change does not count;
    - ``specific: steer -`` / ``specific: ablation``: the effect is larger than that of every
      random direction of the same norm, or p <= alpha when ``n_random >= 1/alpha - 1``;
      ``null="covariance"`` draws the random directions from the covariance of natural
      activations instead of isotropically (see :func:`specificity`);
    - ``stable``: mean bootstrap cosine >= ``stable_threshold`` (needs ``pairs`` unless the
      reading was fitted with ``n_stability``);
    - ``on-distribution``: the steered activations lie as close to natural ones as natural ones
      do to each other: the mean squared distance to the nearest natural activation (``nn_mse``
      of the divergence audit) is at most ``max_divergence_ratio`` times its natural-vs-natural
      baseline (the Sinkhorn divergence ``emd``, which also compares the *mixture* of states, is
      reported next to it);
    - ``readable``: the logit-lens entropy is lower than that of random directions (p <= alpha);
    - ``who writes it``: passes when the writing is sparse: 80% of the contrast comes from at
      most 5% of the components (at least 1);
    - ``persistent``: a one-shot push keeps at least half of the continual effect over the second
      half of a generation.

    ``readable``, ``who writes it`` and ``persistent`` describe *how* the representation is used;
    failing them does not make it unfaithful (Paper B's dishonesty direction fails all three).

    ``max_memory`` (bytes): prompts per forward pass from the executor's budget (default: 16);
    ``batch_size`` (prompts per pass), ``behaviour=`` and the old order ``(model, reading,
    behaviour)`` are deprecated for one release (the shape is ``scrub``'s: what is checked third).

    ``progress(done, total)`` is called after each check (``total``: the number of checks run;
    the one protocol of :mod:`faithlens.progress`); ``on_check(description)`` is called as
    each measurement starts. An old ``progress(description)`` callback (anything but a callable
    of two positional parameters) keeps working for one release, as ``on_check``, with a
    DeprecationWarning.
    """
    V.max_memory(max_memory)
    V.replaced_knob("faithfulness", "batch_size", batch_size, "max_memory", max_memory)
    settings = Settings(
        coef=coef,
        scale=scale,
        prompt=prompt,
        metric=metric,
        min_effect=min_effect,
        n_random=n_random,
        null=null,
        n_stability=n_stability,
        stable_threshold=stable_threshold,
        max_divergence_ratio=max_divergence_ratio,
        divergence_metrics=divergence_metrics,
        persistence_tokens=persistence_tokens,
        alpha=alpha,
        n_boot=n_boot,
        level=level,
        seed=seed,
        batch_size=16 if batch_size is None else batch_size,
    )
    _check_arguments(settings, checks, progress)
    if max_memory is not None and isinstance(data, Behaviour):
        settings = replace(
            settings,
            batch_size=_prompts_per_pass(model, data, max_memory, settings.persistence_tokens),
        )
    if on_check is not None and not callable(on_check):
        raise V.fail("on_check", on_check, "must be a callable (check name) or None")
    progress, on_check = split_progress(progress, on_check)
    ctx = _context(
        model,
        reading,
        data,
        settings,
        layers=layers,
        layer=layer,
        checks=checks,
        pairs=pairs,
        natural=natural,
        progress=on_check,
    )
    rows, pieces = run_checks(ctx, checks, progress=progress)
    return _report(ctx, rows, pieces)


def _prompts_per_pass(model: Model, behaviour: Behaviour, max_memory: int, generated: int) -> int:
    """Prompts per pass that fit ``max_memory``: the whole model on the longest prompt and its
    longest continuation (or the generated tokens), from the executor."""
    prompts = encode(model, behaviour.prompts)
    conts = encode_continuations(model, [*behaviour.positive, *behaviour.negative])
    extra = max([generated, *(len(c) for c in conts)])
    return prompts_per_pass(model, prompts, model.n_layers - 1, max_memory, extra_tokens=extra)


def split_progress(
    progress: Any, on_check: Callable[[str], None] | None
) -> tuple[Progress | None, Callable[[str], None] | None]:
    """The ``(done, total)`` progress callback and the ``(description)`` one: a ``progress`` of
    two positional parameters (or annotated ``(int, int)``) follows the one protocol; any other
    is an old ``(description)`` callback, still called that way with a DeprecationWarning."""
    if progress is None or positional_arity(progress) == 2 or annotated_done_total(progress):
        return progress, on_check
    if on_check is not None:
        raise V.fail(
            "progress",
            progress,
            "must take (done, total) when on_check is given",
            "pass the (description) callback as on_check only",
        )
    warnings.warn(
        "faithfulness: progress(description) is deprecated; pass it as on_check= (progress is "
        "called as progress(done, total), the protocol of every method)",
        DeprecationWarning,
        stacklevel=3,
    )
    return None, progress


def _check_arguments(o: Settings, checks: Sequence[str], progress: Any) -> None:
    """Refuse every setting that makes no sense, before any forward pass."""
    unknown = [c for c in checks if c not in CHECKS]
    if unknown:
        raise InputError(f"unknown checks {unknown}; choose from {CHECKS}")
    V.positive_float("coef", o.coef, fix="coef must be positive: both signs are tested")
    V.choice("prompt", o.prompt, ("all", "last"))
    if isinstance(o.metric, str):
        V.choice("metric", o.metric, ("margin", "margin_per_token", "rate"))
    V.finite_float("min_effect", o.min_effect, low=0.0)
    V.nonnegative_int("n_random", o.n_random)
    V.nonnegative_int("n_stability", o.n_stability)
    V.finite_float("stable_threshold", o.stable_threshold, low=-1.0, high=1.0)
    V.positive_float("max_divergence_ratio", o.max_divergence_ratio)
    V.positive_int("persistence_tokens", o.persistence_tokens, fix="generate >= 1 token")
    V.probability("alpha", o.alpha, fix="use e.g. 0.05")
    V.n_boot(o.n_boot)
    V.level(o.level)
    V.nonnegative_int("seed", o.seed)
    V.positive_int("batch_size", o.batch_size)
    if progress is not None and not callable(progress):
        raise V.fail("progress", progress, "must be a callable (check name) or None")
    if "specific" in checks:
        if o.n_random == 0:
            raise V.fail(
                "n_random",
                0,
                "the 'specific' check compares with random directions and needs at least one",
                f"use n_random >= {random_draws_needed(o.alpha)} (or leave 'specific' out of "
                "checks)",
            )
        caveat = specificity_caveat(o.n_random, o.alpha)
        if caveat:
            warnings.warn(f"faithfulness: {caveat}", UserWarning, stacklevel=3)


def _context(
    model: Model,
    reading: ReadingResult,
    behaviour: Behaviour,
    o: Settings,
    *,
    layers: Sequence[int] | int,
    layer: int | None,
    checks: Sequence[str],
    pairs: ContrastPairs | None,
    natural: Sequence[Prompt] | None,
    progress: Callable[[str], None] | None,
) -> CheckContext:
    """The layers, the analysis direction and the three steerings every check shares (refusing
    layers the reading lacks and checks that miss their inputs)."""
    ls = [layers] if isinstance(layers, int) else [int(x) for x in layers]
    if not ls:
        raise InputError("give at least one steering layer")
    for L in ls:
        reading.direction(L)  # errors for layers the reading does not have
    an_layer = ls[-1] if layer is None else int(layer)
    r = reading.direction(an_layer)
    if o.null not in ("isotropic", "covariance"):
        raise InputError(f"null must be 'isotropic' or 'covariance', not {o.null!r}")
    if "writers" in checks and pairs is None:
        raise InputError("the who-writes-it check needs the contrast pairs (pairs=...)")
    if "stable" in checks and pairs is None and reading.n_stability == 0:
        raise InputError(
            "the stability check needs the contrast pairs (pairs=...) or a reading fitted with "
            "n_stability > 0"
        )
    say = progress or (lambda s: None)
    coef, scale, prompt = o.coef, o.scale, o.prompt
    plus = reading.steering(ls, coef, scale=scale, prompt=prompt, label=f"steer +{coef:g}")
    minus = reading.steering(ls, -coef, scale=scale, prompt=prompt, label=f"steer -{coef:g}")
    ablate = reading.ablation(ls, prompt=prompt, label="ablate")
    return CheckContext(
        model=model,
        reading=reading,
        behaviour=behaviour,
        pairs=pairs,
        natural=natural,
        layers=ls,
        layer=an_layer,
        r=r,
        plus=plus,
        minus=minus,
        ablate=ablate,
        settings=o,
        say=say,
    )


def _report(
    ctx: CheckContext, rows: list[dict[str, Any]], pieces: dict[str, list[pd.DataFrame]]
) -> FaithfulnessReport:
    """The report: the verdict rows, the reading and every detail table."""
    o, reading = ctx.settings, ctx.reading
    steering = pieces["steering"]
    frames = {k: v[0] if v else pd.DataFrame() for k, v in pieces.items() if k != "steering"}
    base = ctx.steered.base if ctx.steered is not None else None
    return FaithfulnessReport(
        checks=pd.DataFrame(rows, columns=ROW_COLUMNS),
        reading=reading.to_frame(),
        steering=pd.concat(steering, ignore_index=True) if steering else pd.DataFrame(),
        persistence=frames["persistence"],
        logit_lens=frames["logit_lens"],
        writers=frames["writers"],
        divergence=frames["divergence"],
        concept=reading.concept,
        behaviour=ctx.behaviour.name,
        layers=ctx.layers,
        layer=ctx.layer,
        coef=float(o.coef),
        model=ctx.model.name,
        seed=o.seed,
        meta={
            "metric": metric_name(o.metric),
            "scale": o.scale,
            "n_random": o.n_random,
            "null": o.null,
            "prompt": o.prompt,
            "baseline_mean": float(base.mean()) if base is not None else float("nan"),
            "level": float(o.level),
        },
    )
