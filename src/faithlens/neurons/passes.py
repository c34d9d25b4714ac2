"""The passes of :func:`faithlens.neurons.explain` over unit blocks: every metric on the probing set
itself (:func:`full_pass`), the finite-sample intervals where a theorem applies
(:func:`theory_intervals`) and the bootstrap ensemble (:func:`bootstrap_pass`: selection
frequencies, and the band for metrics without a theorem)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..executor import current_executor
from . import bounds as _b
from .checkpoint import ExplainCheckpoint
from .inputs import theory_available
from .kernels import (
    FAMILIES,
    Problem,
    UnitBlock,
    auprc,
    auroc,
    expand_weights,
    moments,
    resample_counts,
    softwpmi_log_given,
    threshold_metric,
    threshold_stats,
)


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
    checkpoint: ExplainCheckpoint | None = None,
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
    shared = BootShared(
        prob,
        metrics,
        counts,
        b_chunks,
        logp,
        prior_boot,
        masses,
        band_metrics,
        scores,
        n_boot,
        band_delta,
    )
    saved = [checkpoint.load(blk.start) if checkpoint is not None else None for blk in blocks]
    todo = [blk for blk, s in zip(blocks, saved) if s is None]
    step = tick if tick is not None else _no_tick
    # each unit block is a work item: executors with workers run it there (no model needed)
    fresh = current_executor().map_model(None, bootstrap_block, todo, shared, tick=step)
    for blk, s in zip(blocks, saved):
        if s is None:
            f_blk, lo_blk, hi_blk = next(fresh)
            freq[:, blk] = f_blk
            for j in band_metrics:
                lower[j, blk] = lo_blk[j]
                upper[j, blk] = hi_blk[j]
            if checkpoint is not None:
                checkpoint.save(
                    blk.start, freq=freq[:, blk], lower=lower[:, blk], upper=upper[:, blk]
                )
        else:
            freq[:, blk] = s["freq"]
            for j in band_metrics:
                lower[j, blk] = s["lower"][j]
                upper[j, blk] = s["upper"][j]
            step()
    return freq


def _no_tick() -> None:
    return None


@dataclass(frozen=True)
class BootShared:
    """What every unit block of the bootstrap shares (sent once per run to workers): the
    problem, the metrics, the resampling counts and their chunks, the softWPMI terms, the
    concept masses per resample chunk, the metrics with a bootstrap band, the point scores,
    ``n_boot`` and the band's ``delta``."""

    prob: Problem
    metrics: tuple[str, ...]
    counts: Tensor
    b_chunks: list[slice]
    logp: Tensor | None
    prior_boot: Tensor | None
    masses: dict[int, dict[bool, Tensor]]
    band_metrics: list[int]
    scores: np.ndarray
    n_boot: int
    band_delta: float


def bootstrap_block(
    _model: None, blk: slice, sh: BootShared, tick: Callable[[], None]
) -> tuple[np.ndarray, dict[int, np.ndarray], dict[int, np.ndarray]]:
    """One unit block of the bootstrap: its selection frequencies ``[K, size, M]`` and each
    band metric's lower and upper band ``[size, M]`` (by the metric's index). A work item of
    ``Executor.map_model`` with no model."""
    prob, metrics, n_boot = sh.prob, sh.metrics, sh.n_boot
    n_c = prob.n_concepts
    block = UnitBlock(prob, blk)
    size = block.size
    # resample draws are kept only where a bootstrap band needs them; winners are counted
    # on the fly
    boot = {j: np.empty((n_boot, size, n_c), dtype=np.float32) for j in sh.band_metrics}
    counts_t = torch.zeros(len(metrics), size, n_c, device=prob.device)
    for bsl in sh.b_chunks:
        w = expand_weights(sh.counts[bsl], prob.groups)
        block.use_masses(sh.masses.get(bsl.start))
        res = _block_scores(block, metrics, w, sh.logp)
        block.use_masses(None)
        for j, m in enumerate(metrics):
            r = res[m]
            if m == "softwpmi":
                assert sh.prior_boot is not None
                r = r - prob.softwpmi.lam * sh.prior_boot[bsl][:, None, :]
            counts_t[j] += _winner_counts(r)
            if j in boot:
                boot[j][bsl] = r.float().cpu().numpy()
    freq = (counts_t / n_boot).cpu().numpy()
    lower: dict[int, np.ndarray] = {}
    upper: dict[int, np.ndarray] = {}
    for j in sh.band_metrics:
        bands = [
            _b.bootstrap_band(
                sh.scores[j, blk.start + u], boot[j][:, u, :].astype(np.float64), sh.band_delta
            )
            for u in range(size)
        ]
        lower[j] = np.stack([np.asarray(lo, dtype=np.float64) for lo, _, _ in bands])
        upper[j] = np.stack([np.asarray(hi, dtype=np.float64) for _, hi, _ in bands])
    tick()
    return freq, lower, upper


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
    "BootShared",
    "FullPass",
    "bootstrap_block",
    "bootstrap_pass",
    "full_pass",
    "theory_intervals",
    "unit_blocks",
]
