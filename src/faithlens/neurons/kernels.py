"""Vectorised similarity kernels over units x concepts x resamples.

Every kernel takes a block of units and a batch of *resampling weights* ``w`` (``[B, n]``: how
many times each probing sample appears in each resample; all ones for the data itself). A
bootstrap resample drawn with replacement is exactly a reweighting of the probing set, so one
kernel serves the full-data scores, the bootstrap ensemble (the same ``B`` resamples for every
unit and concept, as the SoftWPMI prior and any joint reading require) and cluster bootstraps
(weights shared within a group).

Thresholded metrics never touch the ``[units, n, concepts]`` product: a unit's firing samples in
a resample are a prefix of its sorted order (the top-α quantile of the resample: the prefix whose
cumulative weight reaches ``k_b = ceil(α W_b)``, with the boundary sample counted fractionally,
exactly as copies of it would be split), so the joint mass is a ``[B, R] @ [R, M]`` product per
unit with ``R`` about ``k``. Rank and moment metrics need one ``[B·U, n] @ [n, M]`` product per
resample. Work is split into unit blocks and resample chunks sized from the memory budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from ..executor import current_executor

#: metric -> family of kernels that computes it
FAMILIES: dict[str, str] = {
    "accuracy": "threshold",
    "precision": "threshold",
    "recall": "threshold",
    "f1": "threshold",
    "iou": "threshold",
    "auroc": "auroc",
    "auprc": "auprc",
    "correlation": "moments",
    "cosine": "moments",
    "softwpmi": "softwpmi",
}
METRICS = tuple(FAMILIES)


@dataclass(frozen=True)
class SoftWPMI:
    """CLIP-Dissect's SoftWPMI (Oikarinen & Weng 2023).

    ``p(t_m | x) = softmax_m(a · concept_m(x))``; a unit's top-``top_k`` samples ``E`` enter with
    soft memberships falling linearly from ``p_high`` to ``p_low``;
    ``log p(t | E) = Σ_r log(1 + π_r (p(t | x_(r)) - 1))``; the prior
    ``log p(t) = logsumexp_u log p(t | E_u) - log U`` runs over *all units passed* (pass a whole
    layer); ``SoftWPMI = log p(t | E) - lam · log p(t)``.
    """

    top_k: int = 100
    a: float = 10.0
    lam: float = 1.0
    p_high: float = 0.998
    p_low: float = 0.97


@dataclass
class Problem:
    """Everything the kernels need, validated and on the compute device."""

    x: Tensor  # [n, U] float32
    c: Tensor  # [n, M] float32, or [U, n, M] (paired: each unit has its own probing set)
    alpha: float | None  # top-alpha quantile, or None with fixed thresholds
    thresholds: Tensor | None  # [U] fixed thresholds
    direction: str
    groups: Tensor | None = None  # [n] long in 0..G-1
    n_groups: int = 0
    softwpmi: SoftWPMI = field(default_factory=SoftWPMI)
    perm: Tensor | None = None  # random tie-break order [n]

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def n_units(self) -> int:
        return int(self.x.shape[1])

    @property
    def n_concepts(self) -> int:
        return int(self.c.shape[-1])

    @property
    def paired(self) -> bool:
        """Each unit has its own concept labels (``c`` is ``[U, n, M]``): used to run many
        independent repetitions of a study at once."""
        return self.c.dim() == 3

    @property
    def device(self) -> torch.device:
        return self.x.device

    def k_for(self, total: Tensor) -> Tensor:
        """Number of firing samples for resamples of total weight ``total``."""
        assert self.alpha is not None
        return torch.ceil(self.alpha * total - 1e-9).clamp(min=1)


# --------------------------------------------------------------------------------------------
# Unit blocks: sort once, reuse for every resample
# --------------------------------------------------------------------------------------------


class UnitBlock:
    """A block of units with its sort orders, computed once and reused by every resample."""

    def __init__(self, prob: Problem, units: slice) -> None:
        self.prob = prob
        self.units = units
        xb = prob.x[:, units]  # [n, Uc]
        self.xb = xb
        self.c = prob.c[units] if prob.paired else prob.c  # [n, M] or [Uc, n, M]
        self.size = int(xb.shape[1])
        perm = prob.perm if prob.perm is not None else torch.arange(prob.n, device=prob.device)
        # descending order with random tie-breaks (a stable sort of a random permutation);
        # rows of a contiguous [Uc, n] copy sort much faster than columns
        srt = torch.sort(xb[perm].T.contiguous(), dim=-1, descending=True, stable=True)
        self.order = perm[srt.indices]  # [Uc, n]
        self.sorted_desc = srt.values  # [Uc, n]
        self.fire_count: Tensor | None = None
        if prob.thresholds is not None:
            t = prob.thresholds[units].to(xb.dtype)
            self.fire_count = (xb > t[None, :]).sum(0)  # [Uc]
        self._prefix: tuple[int, Tensor] | None = None
        self._masses: dict[bool, Tensor] | None = None
        self._asc: tuple[Tensor, Tensor | None, Tensor | None] | None = None
        self._asc_inverse: Tensor | None = None
        self._tied: tuple[Tensor, Tensor, Tensor, Tensor] | None = None
        self._tied_done = False
        self._desc_ties: Tensor | None = None

    # ---- thresholded metrics -------------------------------------------------------------
    def prefix_concepts(self, r: int) -> Tensor:
        """Concept rows of each unit's top-``r`` samples, ``[Uc, r, M]`` (cached)."""
        if self._prefix is None or self._prefix[0] != r:
            idx = self.order[:, :r]
            self._prefix = (r, self.gather_rows(idx))
        return self._prefix[1]

    def use_masses(self, masses: dict[bool, Tensor] | None) -> None:
        """Concept masses ``{square: Σ w c^(1 or 2)}`` of the weights about to be used
        (computed once per resample chunk and shared by every unit block), or ``None``."""
        self._masses = None if self.c.dim() == 3 else masses

    def gather_rows(self, idx: Tensor) -> Tensor:
        """Concept rows ``[Uc, r, M]`` of samples ``idx`` (``[Uc, r]``)."""
        if self.c.dim() == 2:
            return self.c[idx]
        return self.c.gather(1, idx[..., None].expand(-1, -1, self.c.shape[-1]))

    def concept_mass(self, w: Tensor, square: bool = False) -> Tensor:
        """``Σ w c`` (or ``Σ w c²``): ``[B, M]``, or ``[B, Uc, M]`` when paired. Shared
        concepts reuse the masses of the current weights when :meth:`use_masses` set them."""
        known = self._masses.get(square) if self._masses is not None else None
        if known is not None and known.shape[0] == w.shape[0]:
            return known
        c = self.c * self.c if square else self.c
        if c.dim() == 2:
            return w @ c
        return self.times_concepts(w[:, None, :].expand(-1, c.shape[0], -1))

    def times_concepts(self, v: Tensor) -> Tensor:
        """``Σ_i v[b, u, i] c[i, m]``: ``[B, Uc, M]`` for ``v`` ``[B, Uc, n]``."""
        bsz, uc, n = v.shape
        if self.c.dim() == 2:
            return (v.reshape(bsz * uc, n) @ self.c).reshape(bsz, uc, -1)
        if self.c.shape[-1] <= 8:  # a few concepts per unit: batched GEMMs are slow here
            return torch.stack(
                [(v * self.c[None, :, :, j]).sum(-1) for j in range(self.c.shape[-1])], -1
            )
        return torch.bmm(v.transpose(0, 1), self.c).transpose(0, 1)

    def default_prefix(self, k_max: float, grouped: bool) -> int:
        n = self.prob.n
        if self.fire_count is not None:
            return max(1, int(self.fire_count.max()))
        slack = 8.0 * math.sqrt(k_max) * (3.0 if grouped else 1.0) + 16
        return int(min(n, math.ceil(k_max + slack)))

    # ---- rank metrics --------------------------------------------------------------------
    def ascending(self) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Ascending order and, when there are ties, each position's tie-group start and end."""
        if self._asc is None:
            order = self.order.flip(-1)
            vals = self.sorted_desc.flip(-1)
            ties = (vals[:, 1:] == vals[:, :-1]).any()
            if not bool(ties):
                self._asc = (order, None, None)
            else:
                gs, ge = _tie_groups(vals)
                self._asc = (order, gs, ge)
        return self._asc

    def tied_positions(self) -> tuple[Tensor, Tensor, Tensor, Tensor] | None:
        """The positions of the ascending order that share their value with a neighbour, as
        ``(unit, position, group start, group end)`` index vectors, when they are few (at most
        1/16 of all positions: a continuous activation with the odd float32 collision); ``None``
        when there are no ties or too many (ReLU zeros), for which dense gathers are cheaper."""
        if not self._tied_done:
            self._tied_done = True
            _, gs, ge = self.ascending()
            if gs is not None and ge is not None:
                pos = torch.arange(gs.shape[-1], device=gs.device)
                tied = (gs != pos) | (ge != pos)
                if int(tied.sum()) * 16 <= tied.numel():
                    u, p = tied.nonzero(as_tuple=True)
                    self._tied = (u, p, gs[u, p], ge[u, p])
        return self._tied

    def ascending_inverse(self) -> Tensor:
        """Where each sample sits in its unit's ascending order, ``[Uc, n]`` (cached): gathering
        with it brings sorted values back to sample order."""
        if self._asc_inverse is None:
            self._asc_inverse = self.ascending()[0].argsort(-1)
        return self._asc_inverse

    def desc_group_end(self) -> Tensor:
        """For the descending order: the last position of each position's tie group."""
        if self._desc_ties is None:
            _, ge = _tie_groups(self.sorted_desc)
            self._desc_ties = ge
        return self._desc_ties


def _tie_groups(vals: Tensor) -> tuple[Tensor, Tensor]:
    """Start and end positions of each element's run of equal values (rows sorted)."""
    n = vals.shape[-1]
    pos = torch.arange(n, device=vals.device).expand_as(vals)
    start = torch.ones_like(vals, dtype=torch.bool)
    start[:, 1:] = vals[:, 1:] != vals[:, :-1]
    gs = torch.where(start, pos, torch.zeros_like(pos)).cummax(-1).values
    end = torch.ones_like(start)
    end[:, :-1] = vals[:, 1:] != vals[:, :-1]
    big = torch.full_like(pos, n - 1)
    ge = torch.where(end, pos, big).flip(-1).cummin(-1).values.flip(-1)
    return gs.contiguous(), ge.contiguous()


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------


@dataclass
class ThresholdStats:
    """Sufficient statistics of the thresholded metrics for a block and resample batch."""

    tp: Tensor  # [B, Uc, M] concept mass among firing samples
    fired: Tensor  # [B, Uc] firing mass
    pos: Tensor  # [B, M] concept mass ([B, Uc, M] when paired)
    total: Tensor  # [B] total weight


def threshold_stats(block: UnitBlock, w: Tensor) -> ThresholdStats:
    """Joint, firing and concept masses for weights ``w`` (``[B, n]``)."""
    prob = block.prob
    total = w.sum(-1)
    pos = block.concept_mass(w)
    if block.fire_count is not None:
        r = block.default_prefix(0, False)
        idx = block.order[:, :r]
        ws = w[:, idx]  # [B, Uc, r]
        live = torch.arange(r, device=w.device)[None, :] < block.fire_count[:, None]
        act = ws * live[None].to(ws.dtype)
        cp = block.prefix_concepts(r)
    else:
        k = prob.k_for(total)  # [B]
        r = block.default_prefix(float(k.max()), prob.groups is not None)
        while True:
            idx = block.order[:, :r]
            ws = w[:, idx]
            cum = ws.cumsum(-1)
            if r >= prob.n or bool((cum[..., -1] >= k[:, None] - 1e-6).all()):
                break
            r = min(prob.n, 2 * r)
        before = cum - ws
        act = torch.minimum((k[:, None, None] - before).clamp(min=0), ws)
        cp = block.prefix_concepts(r)
    tp = torch.bmm(act.transpose(0, 1), cp).transpose(0, 1)  # [B, Uc, M]
    return ThresholdStats(tp=tp, fired=act.sum(-1), pos=pos, total=total)


def threshold_metric(metric: str, direction: str, st: ThresholdStats) -> Tensor:
    """A thresholded metric ``[B, Uc, M]`` from its sufficient statistics."""
    tp = st.tp
    a = st.fired[:, :, None]
    p = st.pos[:, None, :] if st.pos.dim() == 2 else st.pos
    n = st.total[:, None, None]
    unit_first = direction == "unit_predicts_concept"
    with torch.no_grad():
        if metric == "accuracy":
            return (n - a - p + 2 * tp) / n
        if metric == "iou":
            return tp / (a + p - tp)
        if metric == "f1":
            return 2 * tp / (a + p)
        if metric == "precision":
            return tp / a if unit_first else tp / p
        if metric == "recall":
            return tp / p if unit_first else tp / a
    raise InputError(f"unknown thresholded metric {metric!r}")


def auroc(block: UnitBlock, w: Tensor) -> Tensor:
    """AUROC of each unit's activations for each concept, ``[B, Uc, M]``.

    With weights ``w`` and centred weighted mid-ranks ``R̃_i = Σ_j w_j([f_j < f_i] +
    ½[f_j = f_i]) - W/2``: ``AUROC = ½ + Σ_i w_i c_i R̃_i / (P N)``, ``P = Σ w c``,
    ``N = Σ w (1 - c)`` (ties count one half; soft labels weight each pair by ``c_i (1 - c_j)``).
    Concepts with no positive or no negative mass give NaN.
    """
    order, gs, ge = block.ascending()
    bsz = w.shape[0]
    total = w.sum(-1)
    ws = w[:, order]  # [B, Uc, n], ascending activations
    cin = ws.cumsum(-1)  # weight at or below each position
    sparse = block.tied_positions()
    if gs is None or ge is None or sparse is not None:
        # mid-rank = weight below + half its own = cin - ws / 2 where a value is unique; a few
        # tied positions take their group's (weight below the group + weight up to its end) / 2
        fix = None
        if sparse is not None:
            u, p, s0, s1 = sparse
            fix = 0.5 * (cin[:, u, s0] - ws[:, u, s0] + cin[:, u, s1])  # [B, K]
        rt = cin.add_(ws, alpha=-0.5)
        if fix is not None:
            rt[:, u, p] = fix
    else:
        # ties share the mid-rank of their group: (weight below the group + weight up to its end) / 2
        below = cin.gather(-1, gs.expand(bsz, -1, -1)).sub_(ws.gather(-1, gs.expand(bsz, -1, -1)))
        rt = below.add_(cin.gather(-1, ge.expand(bsz, -1, -1))).mul_(0.5)
        del cin
    rt.sub_(0.5 * total[:, None, None]).mul_(ws)  # centred mid-rank times own weight
    del ws
    back = rt.gather(-1, block.ascending_inverse().expand(bsz, -1, -1))  # back to sample order
    del rt
    s = block.times_concepts(back)
    pos = block.concept_mass(w)
    if pos.dim() == 2:
        pos = pos[:, None, :]
    denom = pos * (total[:, None, None] - pos)
    out = 0.5 + s / denom
    return torch.where(denom > 0, out, torch.full_like(out, float("nan")))


def auprc(block: UnitBlock, w: Tensor) -> Tensor:
    """Average precision of each unit's activations for each concept, ``[B, Uc, M]``:
    ``Σ_i w_i c_i · prec(f_i) / Σ_i w_i c_i`` with ``prec(t) = Σ_{f_j >= t} w_j c_j /
    Σ_{f_j >= t} w_j`` (tied activations share one threshold, as in scikit-learn)."""
    bsz = w.shape[0]
    order = block.order
    ge = block.desc_group_end()
    ws = w[:, order]  # [B, Uc, n]
    cs = block.gather_rows(order)  # [Uc, n, M]
    pw = ws[..., None] * cs[None]  # [B, Uc, n, M]
    cum_p = pw.cumsum(2)
    cum_w = ws.cumsum(-1)
    idx = ge.expand(bsz, -1, -1)
    above = cum_w.gather(-1, idx)[..., None]
    prec = cum_p.gather(2, idx[..., None].expand_as(cum_p)) / above.clamp(min=1e-30)
    pos = block.concept_mass(w)
    if pos.dim() == 2:
        pos = pos[:, None, :]
    out = (pw * prec).sum(2) / pos
    return torch.where(pos > 0, out, torch.full_like(out, float("nan")))


def moments(block: UnitBlock, w: Tensor, want: Sequence[str]) -> dict[str, Tensor]:
    """Weighted Pearson correlation and cosine similarity, ``[B, Uc, M]`` each."""
    w.shape[0]
    xb = block.xb  # [n, Uc]
    mu = xb.mean(0, keepdim=True)
    xc = xb - mu  # centring first keeps the float32 sums well conditioned
    total = w.sum(-1)[:, None]  # [B, 1]
    sx = w @ xc  # [B, Uc]
    sxx = w @ (xc * xc)
    sc = block.concept_mass(w)  # [B, M] or [B, Uc, M]
    scc = block.concept_mass(w, square=True)
    if sc.dim() == 2:
        sc, scc = sc[:, None, :], scc[:, None, :]
    sxc = block.times_concepts(w[:, None, :] * xc.T[None])  # Σ w (x - mu) c
    tot = total[..., None]  # [B, 1, 1]
    out: dict[str, Tensor] = {}
    if "correlation" in want:
        cov = sxc / tot - (sx / total)[..., None] * (sc / tot)
        vx = (sxx / total - (sx / total) ** 2).clamp(min=0)
        vc = (scc / tot - (sc / tot) ** 2).clamp(min=0)
        den = torch.sqrt(vx[..., None] * vc)
        r = cov / den
        out["correlation"] = torch.where(den > 0, r, torch.full_like(r, float("nan")))
    if "cosine" in want:
        raw = sxc + mu.T[None] * sc  # Σ w x c
        sx_raw = sxx + 2 * mu * sx + mu * mu * total  # Σ w x²
        den = torch.sqrt(sx_raw[..., None].clamp(min=0) * scc)
        cs = raw / den
        out["cosine"] = torch.where(den > 0, cs, torch.full_like(cs, float("nan")))
    return out


def softwpmi_log_given(block: UnitBlock, w: Tensor, logp: Tensor) -> Tensor:
    """``log p(t_m | E_u)`` for weights ``w``: ``[B, Uc, M]``; ``logp`` is ``[n, M]``."""
    prob = block.prob
    if prob.paired:
        raise InputError("SoftWPMI couples the units of a layer; it has no paired mode")
    cfg = prob.softwpmi
    bsz = w.shape[0]
    total = w.sum(-1)
    k = int(min(cfg.top_k, float(total.min())))
    if k < 1:
        raise InputError("SoftWPMI needs at least one sample in every resample")
    r = min(prob.n, math.ceil(k + 8 * math.sqrt(k) * 3 + 16))
    while True:
        ws = w[:, block.order[:, :r]]
        cum = ws.cumsum(-1)
        if r >= prob.n or bool((cum[..., -1] >= k).all()):
            break
        r = min(prob.n, 2 * r)
    slots = torch.arange(k, device=w.device, dtype=cum.dtype)
    # slot j holds the first sorted sample whose cumulative weight exceeds j
    pos_in_prefix = torch.searchsorted(
        cum.contiguous(), slots.expand(bsz, block.size, k).contiguous(), right=True
    ).clamp(max=r - 1)
    items = block.order[:, :r].expand(bsz, -1, -1).gather(-1, pos_in_prefix)  # [B, Uc, k]
    pi = torch.linspace(cfg.p_high, cfg.p_low, cfg.top_k, device=w.device)[:k]
    p = logp.exp()
    out = torch.zeros(bsz, block.size, prob.n_concepts, device=w.device)
    for j in range(k):  # k gathers of [B, Uc, M]: memory stays at one slot
        pj = p[items[:, :, j]]
        out += torch.log1p(pi[j] * (pj - 1))
    return out


# --------------------------------------------------------------------------------------------
# Chunk planning
# --------------------------------------------------------------------------------------------


def memory_budget(device: torch.device, max_memory: int | None = None) -> int:
    """Bytes the kernels may use at once: ``max_memory``, else a quarter of the configured
    memory budget (half on a GPU; ``faithlens._memory``), never a share of free memory."""
    return current_executor().budget(
        device, fraction=0.5 if device.type == "cuda" else 0.25, max_memory=max_memory
    )


def plan_chunks(
    prob: Problem, families: set[str], n_boot: int, n_metrics: int, budget: int
) -> tuple[int, int]:
    """(units per block, resamples per chunk) that keep the working set inside ``budget``;
    ``n_metrics`` counts the metrics whose resample draws are kept (bootstrap bands)."""
    n, m, u = prob.n, prob.n_concepts, prob.n_units
    f = 4  # float32
    # bytes per (resample, unit) in the largest kernel
    per_bu = 0
    if "threshold" in families:
        alpha = prob.alpha if prob.alpha is not None else 0.5
        r = min(n, alpha * n + 8 * math.sqrt(alpha * n) * 3 + 16)
        per_bu = max(per_bu, int(r * f * 4 + m * f * 2))
    if "auroc" in families or "moments" in families:
        per_bu = max(per_bu, int(n * f * 6 + m * f * 2))
    if "auprc" in families:
        per_bu = max(per_bu, int(n * m * f * 4))
    if "softwpmi" in families:
        per_bu = max(per_bu, int(m * f * 4 + prob.softwpmi.top_k * 8))
    # bytes per unit held for the whole block: stored bootstrap scores and the concept prefix
    per_u_store = max(n_boot, 1) * m * f * n_metrics + m * f * 4
    if "threshold" in families:
        alpha = prob.alpha if prob.alpha is not None else 0.5
        per_u_store += int(min(n, alpha * n * 2 + 64)) * m * f
    per_u_store += n * 8 * 3  # orders and tie groups
    ex = current_executor()
    units = ex.chunk_size(u, per_u_store, max_memory=budget // 2)
    chunk_b = ex.chunk_size(None, per_bu * units, max_memory=budget // 2)
    return units, min(chunk_b, max(n_boot, 1))


# --------------------------------------------------------------------------------------------
# Resampling weights
# --------------------------------------------------------------------------------------------


def resample_counts(
    n_items: int, n_boot: int, seed: int, *, probs: np.ndarray | None = None
) -> np.ndarray:
    """``[n_boot, n_items]`` multinomial counts: resampling ``n_items`` items with replacement
    (the standard bootstrap), from a seeded generator independent of chunking."""
    rng = np.random.default_rng(seed)
    p = np.full(n_items, 1.0 / n_items) if probs is None else probs
    return rng.multinomial(n_items, p, size=n_boot).astype(np.float32)


def expand_weights(counts: Tensor, groups: Tensor | None) -> Tensor:
    """Sample weights from resampling counts (per sample, or per group for a cluster
    bootstrap)."""
    if groups is None:
        return counts
    return counts[:, groups]


__all__ = [
    "FAMILIES",
    "METRICS",
    "Problem",
    "SoftWPMI",
    "ThresholdStats",
    "UnitBlock",
    "auprc",
    "auroc",
    "expand_weights",
    "memory_budget",
    "moments",
    "plan_chunks",
    "resample_counts",
    "softwpmi_log_given",
    "threshold_metric",
    "threshold_stats",
]
