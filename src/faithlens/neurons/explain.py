"""``fl.neurons.explain``: which concept does each unit detect, how sure can we be, how stable?

One call computes, for every unit and every metric asked for:

1. the similarity of every concept on the probing set and the best concept (``ŝim``, ``ĉ``);
2. **faithfulness**: simultaneous intervals for every concept's *population* similarity
   (a finite-sample theorem where one exists, see :mod:`faithlens.neurons.bounds`), the
   guaranteed similarity of the chosen concept, the provable set (every concept that may still be
   the population best) and whether the winner is certified;
3. **stability**: a bootstrap ensemble over the probing set (the same ``B`` resamples for every
   unit and concept; whole groups when samples are grouped), each concept's selection frequency,
   and the Bootstrap Explanation (BE) prediction set with target coverage ``level``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from .. import validate as V
from ..errors import InputError
from ..executor import Executor, on_executor
from ..progress import Progress
from .checkpoint import ExplainCheckpoint, explain_fingerprint
from .inputs import (
    BOUNDS,
    DIRECTIONS,
    as_activations,
    as_metrics,
    check_explain_args,
    split_thresholds,
    theory_available,
    validate,
)
from .kernels import (
    FAMILIES,
    Problem,
    SoftWPMI,
    memory_budget,
    plan_chunks,
)
from .passes import FullPass, bootstrap_pass, full_pass, theory_intervals, unit_blocks
from .probing import Activations, Concepts, as_concepts

if TYPE_CHECKING:
    from ..models.model import Model
    from .result import NeuronExplanation


@on_executor
def explain(
    activations: Any,
    concepts: Any,
    metric: str | Sequence[str] = "iou",
    *,
    model: Model | None = None,
    inputs: Any = None,
    pool: str = "mean",
    alpha: float = 0.05,
    threshold: float | Sequence[float] | Tensor | None = None,
    holdout: float = 0.0,
    direction: str = "unit_predicts_concept",
    delta: float = 0.05,
    n_boot: int = 1000,
    level: float = 0.9,
    groups: Any = None,
    interval: str = "kl",
    bound: str = "auto",
    simultaneous: bool = False,
    unit_names: Sequence[str] | None = None,
    concept_names: Sequence[str] | None = None,
    skip_constant: bool = False,
    softwpmi: SoftWPMI | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    max_memory: int | None = None,
    checkpoint: str | Path | None = None,
    progress: Progress | None = None,
    executor: str | Executor | None = None,
) -> NeuronExplanation:
    """Explain units by concepts, with faithfulness bounds and bootstrap stability.

    Args:
        activations: ``[n_samples, n_units]`` tensor/array, :class:`Activations`, or a site name
            (then ``model`` and ``inputs`` are required; token sites keep every real token).
        inputs: token ids or prompts, pixels, or a :class:`~faithlens.tasks.Task` (its clean
            inputs). pool: ``"mean"`` or ``"max"`` over the positions of a site without tokens
            (a CNN's spatial site, a ViT's patches): one value per unit and image.
        concepts: ``[n_samples, n_concepts]`` labels in ``[0, 1]`` (tensor, array, DataFrame,
            ``{name: labels}`` or :class:`Concepts`).
        metric: one or several of ``accuracy, precision, recall, f1, iou, auroc, auprc,
            correlation, cosine, softwpmi``.
        alpha: the top quantile that fires for thresholded metrics (Network Dissection's rule:
            the ``ceil(α n)`` largest activations); ignored when ``threshold`` is given.
        threshold: fixed firing threshold(s) instead (a scalar, or one per unit).
        holdout: a fraction of the probing set (of its groups, when grouped) used only to set
            each unit's top-α threshold; the rest is explained with those thresholds fixed.
            The bounds then need no uniformity over thresholds, which makes grouped bounds
            markedly tighter; independent samples gain little (their top-α bound is exact).
        direction: ``"unit_predicts_concept"`` (precision = P(concept | unit fires), recall =
            P(fires | concept): the unit as a classifier) or ``"concept_predicts_unit"``
            (NeuronEval's reading, the two swapped).
        delta: the bounds hold for all concepts of a unit with probability ``1 - delta``.
        n_boot: bootstrap resamples (0 skips the stability analysis).
        level: target coverage of the BE prediction sets.
        groups: a group id per sample (sentence, image): groups are the independent draws.
            Defaults to ``activations.groups`` for :class:`Activations`.
        interval: ``"kl"`` (Chernoff, tight for rare concepts) or ``"hoeffding"``.
        bound: ``"auto"`` (a theorem where one exists, else the bootstrap band), ``"theory"``
            (error for metrics without one) or ``"bootstrap"`` (the band for every metric).
        simultaneous: make the bounds hold for all units at once (union over units).
        skip_constant: leave out constant units instead of raising.
        softwpmi: SoftWPMI settings (:class:`SoftWPMI`).
        seed: seeds the random tie-breaks and the resamples.
        device: where to compute (default: the activations' device).
        max_memory: bytes the kernels may use (default: a share of the memory budget).
        checkpoint: a folder where finished unit blocks of the bootstrap are kept; a rerun with
            the same data and settings resumes from it.
        progress: ``progress(done, total)`` is called as unit blocks finish.
        executor: where the chunks run for this call: ``"ray"`` (a Ray executor built
            for the call), an :class:`~faithlens.executor.Executor`, or ``None`` (the one
            in force: :func:`faithlens.executor.executor`); the numbers do not change.
    """
    metrics = as_metrics(metric)
    check_explain_args(
        alpha=alpha,
        threshold=threshold,
        holdout=holdout,
        direction=direction,
        delta=delta,
        n_boot=n_boot,
        level=level,
        interval=interval,
        bound=bound,
        seed=seed,
        max_memory=max_memory,
        progress=progress,
    )
    if device is not None:
        V.device(device)
    acts = as_activations(activations, model, inputs, unit_names, pool=pool)
    con = as_concepts(concepts, concept_names)
    grp = groups if groups is not None else acts.groups
    if holdout:
        if threshold is not None:
            raise InputError("holdout sets thresholds; do not pass threshold= as well")
        acts, con, grp, threshold = split_thresholds(acts, con, grp, alpha, holdout, seed)
    return run_explain(
        acts,
        con,
        metrics,
        alpha=alpha,
        threshold=threshold,
        direction=direction,
        delta=delta,
        n_boot=n_boot,
        level=level,
        groups=grp,
        interval=interval,
        bound=bound,
        simultaneous=simultaneous,
        skip_constant=skip_constant,
        softwpmi=softwpmi or SoftWPMI(),
        seed=seed,
        device=device,
        max_memory=max_memory,
        checkpoint=checkpoint,
        progress=progress,
        extra={"holdout": float(holdout), "alpha": float(alpha)} if holdout else None,
    )


def run_explain(
    acts: Activations,
    con: Concepts,
    metrics: tuple[str, ...],
    *,
    alpha: float,
    threshold: Any,
    direction: str,
    delta: float,
    n_boot: int,
    level: float,
    groups: Any,
    interval: str,
    bound: str,
    simultaneous: bool,
    skip_constant: bool,
    softwpmi: SoftWPMI,
    seed: int,
    device: str | torch.device | None,
    max_memory: int | None,
    checkpoint: str | Path | None,
    progress: Progress | None,
    result_cls: type[NeuronExplanation] | None = None,
    extra: dict[str, Any] | None = None,
) -> NeuronExplanation:
    """The explain pipeline on validated containers (shared with :func:`dissect`)."""
    from .result import NeuronExplanation

    x, c, thr, keep, g = validate(
        acts,
        con,
        metrics,
        alpha=alpha,
        threshold=threshold,
        groups=groups,
        skip_constant=skip_constant,
        n_boot=n_boot,
        bound=bound,
    )
    all_units = acts.unit_names or tuple(str(i) for i in range(acts.n_units))
    dev = torch.device(device) if device is not None else x.device
    prob = _problem(x, c, thr, keep, g, alpha, direction, softwpmi, seed, dev)
    blocks, per_chunk = _plan(prob, metrics, g, n_boot, bound, dev, max_memory)
    tick = _ticker(len(blocks) * (2 if n_boot else 1), progress)
    fp = full_pass(prob, metrics, blocks, tick)
    lower, upper, kinds, band_metrics = theory_intervals(
        prob, metrics, fp, bound=bound, delta=delta, interval=interval, simultaneous=simultaneous
    )
    freq = np.zeros((len(metrics), prob.n_units, prob.n_concepts), dtype=np.float32)
    if n_boot > 0:
        ck = None
        if checkpoint is not None:
            key = explain_fingerprint(
                prob.x,
                prob.c,
                prob.groups,
                prob.thresholds,
                metrics,
                alpha,
                direction,
                delta,
                n_boot,
                level,
                interval,
                bound,
                simultaneous,
                seed,
                softwpmi,
                keep,
            )
            ck = ExplainCheckpoint(checkpoint, key)
        freq = bootstrap_pass(
            prob,
            metrics,
            blocks,
            fp.scores,
            lower,
            upper,
            band_metrics,
            n_boot=n_boot,
            per_chunk=per_chunk,
            seed=seed,
            band_delta=delta / (prob.n_units if simultaneous else 1),
            checkpoint=ck,
            tick=tick,
        )
    cls = result_cls or NeuronExplanation
    fields = _result_fields(
        acts,
        con,
        metrics,
        prob,
        fp,
        lower,
        upper,
        freq,
        kinds,
        keep,
        all_units,
        thr=thr,
        n_boot=n_boot,
        delta=delta,
        level=level,
        alpha=alpha,
        direction=direction,
        interval=interval,
        simultaneous=simultaneous,
        seed=seed,
    )
    if extra:
        fields.update(extra)
    return cls(**fields)


def _problem(
    x: Tensor,
    c: Tensor,
    thr: Tensor | None,
    keep: list[int],
    g: Tensor | None,
    alpha: float,
    direction: str,
    softwpmi: SoftWPMI,
    seed: int,
    dev: torch.device,
) -> Problem:
    """The kept units on the compute device, with the seeded random tie-break order."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    n = int(x.shape[0])
    perm = torch.randperm(n, generator=gen).to(dev)
    xk = x[:, keep].float().to(dev)
    prob = Problem(
        x=xk,
        c=c.float().to(dev),
        alpha=None if thr is not None else float(alpha),
        thresholds=thr.to(dev) if thr is not None else None,
        direction=direction,
        groups=g.to(dev) if g is not None else None,
        n_groups=int(g.max()) + 1 if g is not None else 0,
        softwpmi=softwpmi,
        perm=perm,
    )
    return prob


def _plan(
    prob: Problem,
    metrics: tuple[str, ...],
    g: Tensor | None,
    n_boot: int,
    bound: str,
    dev: torch.device,
    max_memory: int | None,
) -> tuple[list[slice], int]:
    """Unit blocks and the resample chunk size that fit the memory budget."""
    families = {FAMILIES[m] for m in metrics}
    budget = memory_budget(dev, max_memory)
    binary = bool(((prob.c == 0) | (prob.c == 1)).all())
    n_band = sum(
        bound == "bootstrap" or not theory_available(m, grouped=g is not None, binary=binary)
        for m in metrics
    )
    per_block, per_chunk = plan_chunks(prob, families, n_boot, n_band, budget)
    blocks = unit_blocks(prob, per_block)
    return blocks, per_chunk


def _ticker(total_steps: int, progress: Progress | None) -> Callable[[], None]:
    """``tick()`` reports one more finished unit block to ``progress(done, total)``."""
    steps = 0

    def tick() -> None:
        nonlocal steps
        steps += 1
        if progress is not None:
            progress(steps, total_steps)

    return tick


def _result_fields(
    acts: Activations,
    con: Concepts,
    metrics: tuple[str, ...],
    prob: Problem,
    fp: FullPass,
    lower: np.ndarray,
    upper: np.ndarray,
    freq: np.ndarray,
    kinds: list[str],
    keep: list[int],
    all_units: Sequence[str],
    *,
    thr: Tensor | None,
    n_boot: int,
    delta: float,
    level: float,
    alpha: float,
    direction: str,
    interval: str,
    simultaneous: bool,
    seed: int,
) -> dict[str, Any]:
    """The result's fields, back on the full unit list (skipped constant units stay NaN)."""
    n = prob.n
    scores, thresholds = fp.scores, fp.thresholds

    # ---- back to the full unit list (skipped constant units stay NaN) ----------------------
    full_u = len(all_units)

    def widen(a: np.ndarray, fill: float) -> np.ndarray:
        out = np.full((a.shape[0], full_u, a.shape[2]), fill, dtype=np.float32)
        out[:, keep] = a
        return out

    th_full = np.full(full_u, np.nan)
    th_full[keep] = thresholds
    fields: dict[str, Any] = dict(
        metrics=metrics,
        units=tuple(all_units),
        concepts=tuple(con.names),
        scores=widen(scores, np.nan),
        lower=widen(lower, np.nan),
        upper=widen(upper, np.nan),
        freq=widen(freq, 0.0),
        thresholds=th_full,
        bounds=tuple(kinds),
        n_samples=n,
        n_groups=prob.n_groups,
        n_boot=int(n_boot),
        delta=float(delta),
        level=float(level),
        alpha=None if thr is not None else float(alpha),
        direction=direction,
        interval=interval,
        simultaneous=bool(simultaneous),
        seed=int(seed),
        site=acts.site,
        skipped=tuple(i for i in range(full_u) if i not in set(keep)),
    )
    return fields


__all__ = [
    "BOUNDS",
    "DIRECTIONS",
    "check_explain_args",
    "explain",
    "run_explain",
    "split_thresholds",
    "theory_available",
    "validate",
]
