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

import hashlib
import json
import math
import numbers
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from .. import validate as V
from ..errors import CheckpointError, InputError, ShapeError
from . import bounds as _b
from .engine import (
    FAMILIES,
    METRICS,
    Problem,
    ProgressFn,
    SoftWPMI,
    UnitBlock,
    auprc,
    auroc,
    expand_weights,
    memory_budget,
    moments,
    plan_chunks,
    resample_counts,
    softwpmi_log_given,
    threshold_metric,
    threshold_stats,
)
from .probing import Activations, Concepts, as_concepts, collect

if TYPE_CHECKING:
    from ..models.model import Model
    from .result import NeuronExplanation

DIRECTIONS = ("unit_predicts_concept", "concept_predicts_unit")
BOUNDS = ("auto", "theory", "bootstrap")
#: metrics that read concept values as probabilities (must lie in [0, 1])
PROBABILITY_METRICS = {"accuracy", "precision", "recall", "f1", "iou", "auroc", "auprc"}
#: smallest bootstrap that may feed a bootstrap band
MIN_BOOT_FOR_BAND = 50


def as_metrics(metric: str | Sequence[str]) -> tuple[str, ...]:
    ms = (metric,) if isinstance(metric, str) else tuple(metric)
    if not ms:
        raise InputError(f"no metric given; choose from {list(METRICS)}")
    out = []
    for m in ms:
        key = m.lower().replace("-", "").replace("_", "")
        alias = {
            "auc": "auroc",
            "ap": "auprc",
            "pearson": "correlation",
            "corr": "correlation",
            "cos": "cosine",
            "acc": "accuracy",
            "wpmi": "softwpmi",
        }
        key = alias.get(key, key)
        if key not in FAMILIES:
            import difflib

            near = difflib.get_close_matches(m, METRICS, n=3)
            raise InputError(
                f"unknown metric {m!r}; choose from {list(METRICS)}"
                + (f" (did you mean {near}?)" if near else "")
            )
        if key not in out:
            out.append(key)
    return tuple(out)


def theory_available(metric: str, *, grouped: bool, binary: bool) -> bool:
    """Whether ``metric`` has a finite-sample bound for this kind of probing data."""
    fam = FAMILIES[metric]
    if fam == "threshold":
        return True
    if fam == "auroc":
        return binary and not grouped
    return False


def _as_activations(
    activations: Any, model: Model | None, inputs: Any, unit_names: Sequence[str] | None
) -> Activations:
    from ..models.sites import Site

    if isinstance(activations, str | Site):
        if model is None or inputs is None:
            raise InputError(
                f"explain({activations!r}, ...) reads a site: pass model= and inputs= as well"
            )
        acts = collect(model, inputs, activations)
    elif isinstance(activations, Activations):
        acts = activations
    elif isinstance(activations, Tensor | np.ndarray):
        v = torch.as_tensor(activations)
        if v.dim() == 1:
            v = v[:, None]
        if v.dim() != 2:
            raise ShapeError(
                f"activations must be [n_samples, n_units], got shape {tuple(v.shape)}; token "
                "activations [batch, pos, width] come from faithlens.neurons.collect (which masks "
                "padding), conv maps go to faithlens.neurons.dissect"
            )
        if not v.is_floating_point():
            v = v.float()
        acts = Activations(v)
    else:
        raise InputError(
            f"cannot read activations from a {type(activations).__name__}: pass a [n_samples, "
            "n_units] tensor or array, faithlens.neurons.Activations, or a site name with "
            "model= and inputs="
        )
    if unit_names is not None:
        acts = Activations(acts.values, tuple(unit_names), acts.groups, acts.tokens, acts.site)
    return acts


def _fingerprint(*parts: Any) -> str:
    h = hashlib.sha1()
    for p in parts:
        if isinstance(p, Tensor):
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
        elif isinstance(p, np.ndarray):
            h.update(np.ascontiguousarray(p).tobytes())
        else:
            h.update(repr(p).encode())
    return h.hexdigest()


class _Checkpoint:
    """Per-unit-block bootstrap results on disk, keyed by a fingerprint of data and settings.

    Blocks are ``.npz`` files read with ``allow_pickle=False`` and written atomically; a
    truncated or foreign file raises :class:`CheckpointError` naming it."""

    FIX = "delete the checkpoint folder (or that file) or use a new folder"

    def __init__(self, path: str | Path, key: str) -> None:
        self.dir = Path(path)
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "checkpoint.json"
        if meta.exists():
            try:
                old = json.loads(meta.read_text()).get("key")
            except (ValueError, UnicodeDecodeError, AttributeError) as e:
                raise CheckpointError(
                    f"{meta} is not a readable neurons checkpoint record ({type(e).__name__}: "
                    f"{e}); {self.FIX}"
                ) from None
            if old != key:
                raise CheckpointError(
                    f"checkpoint folder {self.dir} belongs to a different run (other data or "
                    "settings); use a new folder or delete it"
                )
        else:
            tmp = self.dir / ".checkpoint.json.tmp"
            tmp.write_text(json.dumps({"key": key}) + "\n")
            tmp.replace(meta)

    def _file(self, start: int) -> Path:
        return self.dir / f"block_{start:07d}.npz"

    def load(self, start: int) -> dict[str, np.ndarray] | None:
        f = self._file(start)
        if not f.exists():
            return None
        try:
            with np.load(f, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except Exception as e:  # truncated zip, object arrays (pickle), foreign file
            raise CheckpointError(
                f"{f} is not a readable neurons checkpoint block (truncated, corrupted or "
                f"holding pickled objects: {type(e).__name__}: {e}); {self.FIX}"
            ) from None

    def save(self, start: int, **arrays: np.ndarray) -> None:
        tmp = self.dir / f".tmp_{start:07d}.npz"
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)  # type: ignore[arg-type]
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self._file(start))


def check_explain_args(
    *,
    alpha: Any = 0.05,
    threshold: Any = None,
    holdout: Any = 0.0,
    direction: Any = "unit_predicts_concept",
    delta: Any = 0.05,
    n_boot: Any = 1000,
    level: Any = 0.9,
    interval: Any = "kl",
    bound: Any = "auto",
    seed: Any = 0,
    max_memory: Any = None,
    progress: Any = None,
    cli: bool = False,
) -> None:
    """Refuse a bad :func:`explain` argument before any activation is read or collected
    (``cli=True`` names the command-line options)."""

    def nm(name: str) -> str:
        return "--" + name.replace("_", "-") if cli else name

    V.choice(nm("direction"), direction, DIRECTIONS)
    V.choice(nm("interval"), interval, _b.INTERVALS)
    V.choice(nm("bound"), bound, BOUNDS)
    V.probability(nm("delta"), delta, fix="bounds hold with probability 1 - delta, e.g. 0.05")
    V.level(level, nm("level"))
    nb = V.nonnegative_int(nm("n_boot"), n_boot, fix="0 skips the stability analysis")
    if nb == 1:
        raise V.fail(nm("n_boot"), n_boot, "one resample gives no spread", "use 0 or e.g. 1000")
    if threshold is None:
        V.probability(nm("alpha"), alpha, fix="the top quantile that fires, e.g. 0.05")
    elif isinstance(threshold, numbers.Real):
        V.finite_float(nm("threshold"), threshold)
    V.finite_float(nm("holdout"), holdout, low=0.0, high=1.0, high_open=True)
    V.nonnegative_int(nm("seed"), seed)
    if max_memory is not None:
        V.positive_int(nm("max_memory"), max_memory, fix="give a number of bytes")
    if progress is not None and not callable(progress):
        raise V.fail(nm("progress"), progress, "must be a callable (done, total) or None")


def explain(
    activations: Any,
    concepts: Any,
    metric: str | Sequence[str] = "iou",
    *,
    model: Model | None = None,
    inputs: Any = None,
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
    progress: ProgressFn | None = None,
) -> NeuronExplanation:
    """Explain units by concepts, with faithfulness bounds and bootstrap stability.

    Args:
        activations: ``[n_samples, n_units]`` tensor/array, :class:`Activations`, or a site name
            (then ``model`` and ``inputs`` are required; token sites keep every real token).
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
    acts = _as_activations(activations, model, inputs, unit_names)
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


def split_thresholds(
    acts: Activations, con: Concepts, groups: Any, alpha: float, holdout: float, seed: int
) -> tuple[Activations, Concepts, Any, Tensor]:
    """Set each unit's top-``alpha`` threshold on a random ``holdout`` share of the samples (of
    the groups, when grouped) and return the rest with those thresholds."""
    if not 0 < holdout < 1:
        raise InputError(f"holdout must be in (0, 1), got {holdout}")
    if not 0 < alpha < 1:
        raise InputError(f"alpha (the firing quantile) must be in (0, 1), got {alpha}")
    n = acts.n_samples
    if con.n_samples != n:
        raise ShapeError(f"concept labels have {con.n_samples} rows but the activations {n}")
    rng = np.random.default_rng(seed + 7)
    if groups is not None:
        g = torch.unique(torch.as_tensor(np.asarray(groups)).reshape(-1), return_inverse=True)[1]
        n_g = int(g.max()) + 1
        held_groups = torch.from_numpy(rng.random(n_g) < holdout)
        held = held_groups[g]
    else:
        held = torch.from_numpy(rng.random(n) < holdout)
    if int(held.sum()) < 2 or int((~held).sum()) < 2:
        raise InputError(f"holdout={holdout} leaves too few samples on one side of the split")
    x_h = acts.values[held].float()
    k = max(1, math.ceil(alpha * x_h.shape[0] - 1e-9))
    thr = torch.topk(x_h, k, dim=0).values[-1]
    # fire strictly above: the k-th largest held-out value itself does not fire
    keep = ~held
    rest = Activations(
        acts.values[keep],
        acts.unit_names,
        acts.groups[keep] if acts.groups is not None else None,
        acts.tokens[keep] if acts.tokens is not None else None,
        acts.site,
    )
    grp = torch.as_tensor(np.asarray(groups)).reshape(-1)[keep] if groups is not None else None
    left = con.values[keep]
    gone = (left.amax(0) == left.amin(0)).nonzero().flatten().tolist()
    if gone:
        raise InputError(
            f"after setting thresholds on a held-out {holdout:.0%}, concepts "
            f"{_names(gone, con.names)} take one value on the rest of the probing set; use a "
            "smaller holdout, more data, or drop these concepts"
        )
    return rest, Concepts(left, con.names), grp, thr


def _names(seq: Sequence[int], names: Sequence[str], k: int = 5) -> str:
    shown = [names[i] for i in list(seq)[:k]]
    more = f" and {len(seq) - k} more" if len(seq) > k else ""
    return ", ".join(repr(s) for s in shown) + more


def validate(
    acts: Activations,
    con: Concepts,
    metrics: tuple[str, ...],
    *,
    alpha: float,
    threshold: Any,
    groups: Any,
    skip_constant: bool,
    n_boot: int,
    bound: str,
) -> tuple[Tensor, Tensor, Tensor | None, list[int], Tensor | None]:
    """Check everything before any expensive work; returns ``(x, c, thresholds, kept units,
    groups)``."""
    x = acts.values
    n, n_units = int(x.shape[0]), int(x.shape[1])
    unames = acts.unit_names or tuple(str(i) for i in range(n_units))
    if n < 2:
        raise InputError(f"the probing set has {n} samples; explanations need at least 2")
    if n_units == 0:
        raise InputError("no units to explain (activations have 0 columns)")
    c = con.values
    if int(c.shape[0]) != n:
        raise ShapeError(
            f"concept labels have {c.shape[0]} rows but the activations have {n} samples: there "
            "must be one label row per probing sample (for token sites: one per real token, "
            "padding removed; faithlens.neurons.probe_tokens builds both aligned)"
        )
    if con.n_concepts == 0:
        raise InputError("the concept set is empty: pass at least one concept")
    xf = x.float()
    bad_x = (~torch.isfinite(xf)).any(0).nonzero().flatten().tolist()
    if bad_x:
        raise InputError(
            f"activations contain NaN or inf in units {_names(bad_x, unames)}; clean or drop them"
        )
    cf = c.float()
    bad_c = (~torch.isfinite(cf)).any(0).nonzero().flatten().tolist()
    if bad_c:
        raise InputError(f"concept labels contain NaN or inf in {_names(bad_c, con.names)}")
    if any(m in PROBABILITY_METRICS for m in metrics):
        out = ((cf < 0) | (cf > 1)).any(0).nonzero().flatten().tolist()
        if out:
            raise InputError(
                f"concepts {_names(out, con.names)} have values outside [0, 1]; labels are "
                "presence probabilities (only correlation, cosine and softwpmi take raw scores)"
            )
    const_c = (cf.amax(0) == cf.amin(0)).nonzero().flatten().tolist()
    if const_c:
        raise InputError(
            f"concepts {_names(const_c, con.names)} take one value on every probing sample "
            "(never or always present), so no unit can be compared with them; drop them "
            "(Concepts.drop_empty())"
        )
    const_u = (xf.amax(0) == xf.amin(0)).nonzero().flatten().tolist()
    keep = list(range(n_units))
    if const_u:
        if not skip_constant:
            raise InputError(
                f"units {_names(const_u, unames)} are constant on the probing set, so they have "
                "no top activations to explain; drop them or pass skip_constant=True"
            )
        keep = [u for u in keep if u not in set(const_u)]
        if not keep:
            raise InputError("every unit is constant on the probing set")
    thr: Tensor | None = None
    if threshold is not None:
        t = torch.as_tensor(threshold, dtype=torch.float32).reshape(-1)
        if t.numel() == 1:
            t = t.expand(n_units).clone()
        if t.numel() != n_units:
            raise ShapeError(
                f"{t.numel()} thresholds for {n_units} units: give one, or one per unit"
            )
        if not bool(torch.isfinite(t).all()):
            raise InputError("thresholds must be finite")
        thr = t[keep]
    elif any(FAMILIES[m] == "threshold" for m in metrics):
        if not 0 < alpha < 1:
            raise InputError(f"alpha (the firing quantile) must be in (0, 1), got {alpha}")
        k = math.ceil(alpha * n - 1e-9)
        if not 1 <= k <= n - 1:
            raise InputError(
                f"alpha={alpha} makes {k} of {n} samples fire; choose alpha so that between 1 "
                f"and {n - 1} samples fire"
            )
    g: Tensor | None = None
    if groups is not None:
        g0 = torch.as_tensor(np.asarray(groups)).reshape(-1)
        if int(g0.shape[0]) != n:
            raise ShapeError(f"groups has {g0.shape[0]} entries but there are {n} samples")
        g = torch.unique(g0, return_inverse=True)[1].long()
        if int(g.max()) + 1 < 2:
            raise InputError("all samples are in one group: bounds and bootstrap need at least 2")
    binary = bool(((cf == 0) | (cf == 1)).all())
    for m in metrics:
        has = theory_available(m, grouped=g is not None, binary=binary)
        if bound == "theory" and not has:
            raise InputError(
                f"{m} has no finite-sample bound for this data"
                + (" (grouped samples)" if g is not None else "")
                + "; use bound='auto' for a bootstrap band"
            )
        if (bound == "bootstrap" or not has) and n_boot < MIN_BOOT_FOR_BAND:
            raise InputError(
                f"{m} gets a bootstrap band here, which needs n_boot >= {MIN_BOOT_FOR_BAND} "
                f"(got {n_boot})"
            )
    return x, c, thr, keep, g


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
    progress: ProgressFn | None,
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
    n_m = len(metrics)
    families = {FAMILIES[m] for m in metrics}
    budget = memory_budget(dev, max_memory)
    binary = bool(((prob.c == 0) | (prob.c == 1)).all())
    n_band = sum(
        bound == "bootstrap" or not theory_available(m, grouped=g is not None, binary=binary)
        for m in metrics
    )
    per_block, per_chunk = plan_chunks(prob, families, n_boot, n_band, budget)
    blocks = unit_blocks(prob, per_block)
    total_steps = len(blocks) * (2 if n_boot else 1)
    steps = 0

    def tick() -> None:
        nonlocal steps
        steps += 1
        if progress is not None:
            progress(steps, total_steps)

    fp = full_pass(prob, metrics, blocks, tick)
    lower, upper, kinds, band_metrics = theory_intervals(
        prob, metrics, fp, bound=bound, delta=delta, interval=interval, simultaneous=simultaneous
    )
    freq = np.zeros((n_m, prob.n_units, prob.n_concepts), dtype=np.float32)
    if n_boot > 0:
        ck = None
        if checkpoint is not None:
            key = _fingerprint(
                xk,
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
            ck = _Checkpoint(checkpoint, key)
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
    scores, thresholds = fp.scores, fp.thresholds

    # ---- back to the full unit list (skipped constant units stay NaN) ----------------------
    full_u = len(all_units)

    def widen(a: np.ndarray, fill: float) -> np.ndarray:
        out = np.full((a.shape[0], full_u, a.shape[2]), fill, dtype=np.float32)
        out[:, keep] = a
        return out

    th_full = np.full(full_u, np.nan)
    th_full[keep] = thresholds
    cls = result_cls or NeuronExplanation
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
    if extra:
        fields.update(extra)
    return cls(**fields)


def unit_blocks(prob: Problem, per_block: int) -> list[slice]:
    """Consecutive unit blocks of at most ``per_block`` units."""
    u = prob.n_units
    return [slice(i, min(u, i + per_block)) for i in range(0, u, per_block)]


@dataclass
class FullPass:
    """Scores on the probing set and the statistics the bounds need."""

    scores: np.ndarray  # [K, U, M]
    tp: np.ndarray  # [U, M] concept mass among firing samples
    fired: np.ndarray  # [U] number of firing samples
    pos: np.ndarray  # [U, M] concept mass (the same row for every unit unless paired)
    boundary: np.ndarray  # [U, M] concept values of the k-th sample (top-alpha)
    thresholds: np.ndarray  # [U] firing thresholds (NaN when no thresholded metric)


def full_pass(
    prob: Problem,
    metrics: tuple[str, ...],
    blocks: list[slice],
    tick: Callable[[], None] | None = None,
) -> FullPass:
    """Every metric on the probing set itself (weights all one)."""
    n, n_u, n_c = prob.n, prob.n_units, prob.n_concepts
    families = {FAMILIES[m] for m in metrics}
    logp = _softwpmi_logp(prob) if "softwpmi" in metrics else None
    scores = np.full((len(metrics), n_u, n_c), np.nan, dtype=np.float64)
    tp = np.zeros((n_u, n_c))
    fired = np.zeros(n_u)
    boundary = np.zeros((n_u, n_c))
    thresholds = np.full(n_u, np.nan)
    pos = np.zeros((n_u, n_c))
    ones = torch.ones(1, n, device=prob.device)
    for blk in blocks:
        block = UnitBlock(prob, blk)
        res = _block_scores(block, metrics, ones, logp)
        for j, m in enumerate(metrics):
            scores[j, blk] = res[m][0].double().cpu().numpy()
        mass = block.concept_mass(ones)[0].double().cpu().numpy()
        pos[blk] = mass
        if "threshold" in families:
            st = threshold_stats(block, ones)
            tp[blk] = st.tp[0].double().cpu().numpy()
            fired[blk] = st.fired[0].double().cpu().numpy()
            if prob.alpha is not None:
                k = int(prob.k_for(torch.tensor(float(n))).item())
                bidx = block.order[:, k - 1 : k]
                boundary[blk] = block.gather_rows(bidx)[:, 0].double().cpu().numpy()
                thresholds[blk] = block.sorted_desc[:, k - 1].double().cpu().numpy()
            else:
                assert prob.thresholds is not None
                thresholds[blk] = prob.thresholds[blk].double().cpu().numpy()
        if tick is not None:
            tick()
    if "softwpmi" in metrics:
        j = metrics.index("softwpmi")
        log_given = scores[j]
        prior = _logmeanexp(log_given, axis=0)
        scores[j] = log_given - prob.softwpmi.lam * prior[None, :]
    return FullPass(scores, tp, fired, pos, boundary, thresholds)


def theory_intervals(
    prob: Problem,
    metrics: tuple[str, ...],
    fp: FullPass,
    *,
    bound: str,
    delta: float,
    interval: str,
    simultaneous: bool,
) -> tuple[np.ndarray, np.ndarray, list[str], list[int]]:
    """Finite-sample intervals where a theorem applies; returns ``(lower, upper, bound names,
    metrics left for the bootstrap band)``."""
    n = prob.n
    grouped = prob.groups is not None
    binary = bool(((prob.c == 0) | (prob.c == 1)).all())
    lower = np.full_like(fp.scores, np.nan)
    upper = np.full_like(fp.scores, np.nan)
    kinds: list[str] = []
    band: list[int] = []
    scale_units = prob.n_units if simultaneous else 1
    for j, m in enumerate(metrics):
        has = theory_available(m, grouped=grouped, binary=binary)
        if bound == "bootstrap" or not has:
            band.append(j)
            kinds.append("bootstrap max-t band (asymptotic, not a theorem)")
            continue
        if FAMILIES[m] == "threshold":
            kind = _b.core_kind(m, prob.direction)
            if grouped:
                assert prob.groups is not None
                sizes = torch.bincount(prob.groups)
                iv = _b.threshold_intervals_grouped(
                    kind,
                    n_groups=prob.n_groups,
                    scale=float(sizes.max()),
                    size=float(n),
                    fired=fp.fired,
                    tp=fp.tp,
                    pos=fp.pos,
                    top_k=prob.alpha is not None,
                    alpha=prob.alpha,
                    delta=delta,
                    n_events_scale=scale_units,
                    method=interval,
                )
            else:
                iv = _b.threshold_intervals_iid(
                    kind,
                    n=n,
                    fired=fp.fired,
                    tp=fp.tp,
                    pos=fp.pos,
                    boundary=fp.boundary if prob.alpha is not None else None,
                    top_k=prob.alpha is not None,
                    delta=delta,
                    n_events_scale=scale_units,
                    method=interval,
                )
            lower[j], upper[j] = iv.lower, iv.upper
            kinds.append(iv.method)
        else:  # auroc, independent samples, binary labels
            eps = _b.auroc_epsilon(fp.pos, n - fp.pos, prob.n_concepts * scale_units, delta)
            lower[j] = np.clip(fp.scores[j] - eps, 0.0, 1.0)
            upper[j] = np.clip(fp.scores[j] + eps, 0.0, 1.0)
            kinds.append("mcdiarmid (two-sample U-statistic, conditional on labels)")
    return lower, upper, kinds, band


def bootstrap_pass(
    prob: Problem,
    metrics: tuple[str, ...],
    blocks: list[slice],
    scores: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    band_metrics: list[int],
    *,
    n_boot: int,
    per_chunk: int,
    seed: int,
    band_delta: float,
    checkpoint: _Checkpoint | None = None,
    tick: Callable[[], None] | None = None,
    keep_draws: bool = False,
) -> np.ndarray:
    """The bootstrap ensemble: selection frequencies ``[K, U, M]``; fills the band rows of
    ``lower``/``upper``. The ``n_boot`` resamples (of samples, or of groups) are drawn once from
    ``seed`` and shared by every unit and concept."""
    n_m, n_c = len(metrics), prob.n_concepts
    freq = np.zeros((n_m, prob.n_units, n_c), dtype=np.float32)
    n_items = prob.n_groups if prob.groups is not None else prob.n
    counts = torch.from_numpy(resample_counts(n_items, n_boot, seed + 1)).to(prob.device)
    b_chunks = [slice(i, min(n_boot, i + per_chunk)) for i in range(0, n_boot, per_chunk)]
    logp = _softwpmi_logp(prob) if "softwpmi" in metrics else None
    prior_boot = None
    if logp is not None:
        prior_boot = _softwpmi_prior(prob, blocks, counts, b_chunks, logp)
    # concept masses per resample are the same for every unit block: compute them once
    masses: dict[int, dict[bool, Tensor]] = {}
    if not prob.paired and len(blocks) > 1:
        squares = any(FAMILIES[m] == "moments" for m in metrics)
        for bsl in b_chunks:
            w = expand_weights(counts[bsl], prob.groups)
            masses[bsl.start] = {False: w @ prob.c}
            if squares:
                masses[bsl.start][True] = w @ (prob.c * prob.c)
    for blk in blocks:
        saved = checkpoint.load(blk.start) if checkpoint is not None else None
        if saved is not None:
            freq[:, blk] = saved["freq"]
            for j in band_metrics:
                lower[j, blk] = saved["lower"][j]
                upper[j, blk] = saved["upper"][j]
            if tick is not None:
                tick()
            continue
        block = UnitBlock(prob, blk)
        size = block.size
        # resample draws are kept only where a bootstrap band needs them; winners are counted
        # on the fly
        boot = {j: np.empty((n_boot, size, n_c), dtype=np.float32) for j in band_metrics}
        counts_t = torch.zeros(n_m, size, n_c, device=prob.device)
        for bsl in b_chunks:
            w = expand_weights(counts[bsl], prob.groups)
            block.use_masses(masses.get(bsl.start))
            res = _block_scores(block, metrics, w, logp)
            block.use_masses(None)
            for j, m in enumerate(metrics):
                r = res[m]
                if m == "softwpmi":
                    assert prior_boot is not None
                    r = r - prob.softwpmi.lam * prior_boot[bsl][:, None, :]
                counts_t[j] += _winner_counts(r)
                if j in boot:
                    boot[j][bsl] = r.float().cpu().numpy()
        freq[:, blk] = (counts_t / n_boot).cpu().numpy()
        for j in band_metrics:
            for u in range(size):
                lo, hi, _ = _b.bootstrap_band(
                    scores[j, blk.start + u], boot[j][:, u, :].astype(np.float64), band_delta
                )
                lower[j, blk.start + u] = lo
                upper[j, blk.start + u] = hi
        if checkpoint is not None:
            checkpoint.save(blk.start, freq=freq[:, blk], lower=lower[:, blk], upper=upper[:, blk])
        if tick is not None:
            tick()
    return freq


def _softwpmi_logp(prob: Problem) -> Tensor:
    """``log p(t_m | x_i) = log_softmax_m(a · c_im)``."""
    return torch.log_softmax(prob.softwpmi.a * prob.c, dim=-1)


def _logmeanexp(a: np.ndarray, axis: int) -> np.ndarray:
    mx = np.max(a, axis=axis, keepdims=True)
    return np.squeeze(mx, axis) + np.log(np.mean(np.exp(a - mx), axis=axis))


def _winner_counts(r: Tensor) -> Tensor:
    """How often each concept wins: ``r`` is ``[B, U, M]`` -> counts ``[U, M]`` (resamples in
    which every score is undefined count for no concept; ties go to the lower index)."""
    best, win = torch.where(torch.isnan(r), -torch.inf, r).max(-1)  # [B, U]
    valid = (best > -torch.inf).to(r.dtype)
    out = torch.zeros(r.shape[1], r.shape[2], device=r.device, dtype=r.dtype)
    return out.scatter_add_(1, win.T, valid.T)


def _block_scores(
    block: UnitBlock, metrics: tuple[str, ...], w: Tensor, logp: Tensor | None
) -> dict[str, Tensor]:
    """Every requested metric for one unit block and one weight batch (``[B, Uc, M]`` each;
    SoftWPMI is returned as ``log p(t | E)``, before the prior)."""
    prob = block.prob
    out: dict[str, Tensor] = {}
    fams = {FAMILIES[m] for m in metrics}
    if "threshold" in fams:
        st = threshold_stats(block, w)
        for m in metrics:
            if FAMILIES[m] == "threshold":
                out[m] = threshold_metric(m, prob.direction, st)
    if "auroc" in fams:
        out["auroc"] = auroc(block, w)
    if "auprc" in fams:
        out["auprc"] = auprc(block, w)
    if "moments" in fams:
        out.update(moments(block, w, [m for m in metrics if FAMILIES[m] == "moments"]))
    if "softwpmi" in fams:
        assert logp is not None
        out["softwpmi"] = softwpmi_log_given(block, w, logp)
    return out


def _softwpmi_prior(
    prob: Problem,
    blocks: list[slice],
    counts: Tensor,
    b_chunks: list[slice],
    logp: Tensor,
) -> Tensor:
    """Per resample, ``log p(t) = logsumexp_u log p(t | E_u) - log U`` over every unit."""
    n_boot = counts.shape[0]
    acc = torch.full((n_boot, prob.n_concepts), -math.inf, device=prob.device)
    for blk in blocks:
        block = UnitBlock(prob, blk)
        for bsl in b_chunks:
            w = expand_weights(counts[bsl], prob.groups)
            lg = softwpmi_log_given(block, w, logp)
            acc[bsl] = torch.logaddexp(acc[bsl], torch.logsumexp(lg, dim=1))
    return acc - math.log(prob.n_units)


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
