"""Samplers: how an interpretation node's datum is drawn given the datum it is conditioned on.

Every sampler maps a vector of reference rows (indices into the :class:`~.data.Table`) to a
vector of drawn rows of the same length; row ``i`` is the datum for reference example ``i``.

- :class:`Exact`: the reference itself ("this path sees the same input").
- :class:`Random`: a uniform draw from the pool, ignoring the reference (unconditional).
- :class:`SameFeature`: a uniform draw (with replacement) among the pool rows whose features
  equal the reference's; the reference itself may be drawn unless ``exclude_self``.
- :class:`Kernel`: soft matching on a continuous feature: row ``j`` is drawn with probability
  proportional to ``k(|f(j) - f(ref)| / bandwidth)`` (generalised scrubbing).
- :class:`Generate`: builds matching rows on the fly (for equivalence classes so small that the
  pool holds nothing but the reference); generated rows are never drawn by other samplers.

Draws use *common random numbers*: each node has a stream of uniforms ``u``, and a draw picks
candidate ``floor(u * class_size)`` of the sorted class. Nodes in one "sampled together" group
share a stream, so wherever their references fall in the same class they get the same datum
(a pool of size 1, per example).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import validate as V
from ..errors import InputError
from .data import Feature, ScrubData, Table, feature_name


@dataclass(frozen=True)
class Draw:
    """A sampler's draw: ``idx`` (rows of the table) and, per row, how many candidates there
    were (``class_size``; the effective number for kernels; None when not meaningful)."""

    idx: np.ndarray
    class_size: np.ndarray | None = None


class Sampler:
    """Base class of samplers."""

    kind = "sampler"

    def describe(self) -> str:
        return type(self).__name__

    def features(self) -> tuple[Feature, ...]:
        return ()

    def draw(
        self, table: Table, ref: np.ndarray, u: np.ndarray, rng: np.random.Generator, where: str
    ) -> Draw:
        raise NotImplementedError

    def transition(self, table: Table, probs: np.ndarray, where: str) -> np.ndarray:
        """``P[x, x']``: the probability of drawing row ``x'`` given reference ``x`` when the pool
        rows have probabilities ``probs`` (exact enumeration on small domains)."""
        raise InputError(f"{self.describe()} has no exact transition matrix")

    def __repr__(self) -> str:
        return self.describe()


def _candidates(table: Table) -> np.ndarray:
    cand = np.nonzero(table.source)[0]
    if len(cand) == 0:
        raise InputError("the pool to sample from is empty")
    return cand


@dataclass(frozen=True, eq=False)
class Exact(Sampler):
    """The reference row itself."""

    kind = "exact"

    def describe(self) -> str:
        return "Exact()"

    def draw(
        self, table: Table, ref: np.ndarray, u: np.ndarray, rng: np.random.Generator, where: str
    ) -> Draw:
        return Draw(ref.copy(), np.ones(len(ref), dtype=np.int64))

    def transition(self, table: Table, probs: np.ndarray, where: str) -> np.ndarray:
        return np.eye(len(table))


@dataclass(frozen=True, eq=False)
class Random(Sampler):
    """A uniform draw from the pool, whatever the reference."""

    kind = "random"

    def describe(self) -> str:
        return "Random()"

    def draw(
        self, table: Table, ref: np.ndarray, u: np.ndarray, rng: np.random.Generator, where: str
    ) -> Draw:
        cand = _candidates(table)
        idx = cand[np.minimum((u * len(cand)).astype(np.int64), len(cand) - 1)]
        return Draw(idx, np.full(len(ref), len(cand), dtype=np.int64))

    def transition(self, table: Table, probs: np.ndarray, where: str) -> np.ndarray:
        p = probs * table.source
        return np.broadcast_to(p / p.sum(), (len(table), len(table))).copy()


def _combined_codes(table: Table, feats: Sequence[Feature], where: str) -> np.ndarray:
    cols = [table.codes(f, f"{where}: feature {feature_name(f)}") for f in feats]
    if len(cols) == 1:
        return cols[0]
    stacked = np.stack(cols, 1)
    _, inv = np.unique(stacked, axis=0, return_inverse=True)
    return inv.reshape(-1).astype(np.int64)


@dataclass(frozen=True, eq=False)
class SameFeature(Sampler):
    """A uniform draw among pool rows that agree with the reference on every feature."""

    feats: tuple[Feature, ...]
    exclude_self: bool = False
    kind = "feature"

    def __init__(self, *features: Feature, exclude_self: bool = False) -> None:
        if not features:
            raise InputError("SameFeature needs at least one feature")
        for f in features:
            if not callable(f):
                raise InputError(f"a feature must be a function of the data, not {f!r}")
        object.__setattr__(self, "feats", tuple(features))
        object.__setattr__(self, "exclude_self", bool(exclude_self))

    def describe(self) -> str:
        names = ", ".join(feature_name(f) for f in self.feats)
        return f"SameFeature({names}{', exclude_self' if self.exclude_self else ''})"

    def features(self) -> tuple[Feature, ...]:
        return self.feats

    def draw(
        self, table: Table, ref: np.ndarray, u: np.ndarray, rng: np.random.Generator, where: str
    ) -> Draw:
        codes = _combined_codes(table, self.feats, where)
        cand = _candidates(table)
        order = cand[np.argsort(codes[cand], kind="stable")]
        sorted_codes = codes[order]
        c_ref = codes[ref]
        start = np.searchsorted(sorted_codes, c_ref, "left")
        size = np.searchsorted(sorted_codes, c_ref, "right") - start
        if self.exclude_self:
            pos = np.full(len(table), -1, dtype=np.int64)
            pos[order] = np.arange(len(order))
            self_pos = pos[ref]
            mine = (self_pos >= 0).astype(np.int64)
            m = size - mine
        else:
            m = size
        empty = np.nonzero(m == 0)[0]
        if len(empty):
            rows = empty[:6].tolist()
            what = "other than the reference itself " if self.exclude_self else ""
            raise InputError(
                f"{where}: no pool row {what}matches the reference on {self.describe()} for "
                f"{len(empty)} of {len(ref)} examples (e.g. examples {rows}, table rows "
                f"{ref[empty[:6]].tolist()}). Use a bigger pool, a coarser feature, "
                "exclude_self=False, or a Generate sampler that builds matching data."
            )
        j = np.minimum((u * m).astype(np.int64), m - 1)
        if self.exclude_self:
            j = np.where((mine == 1) & (start + j >= self_pos), j + 1, j)
        return Draw(order[start + j], m.astype(np.int64))

    def transition(self, table: Table, probs: np.ndarray, where: str) -> np.ndarray:
        codes = _combined_codes(table, self.feats, where)
        same = codes[:, None] == codes[None, :]
        w = same * (probs * table.source)[None, :]
        if self.exclude_self:
            np.fill_diagonal(w, 0.0)
        tot = w.sum(1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(tot > 0, w / tot, 0.0)


@dataclass(frozen=True, eq=False)
class Kernel(Sampler):
    """Soft matching: draw row ``j`` with probability proportional to
    ``kernel(|f(j) - f(ref)| / bandwidth)`` (``gaussian``: exp(-d^2/2); ``box``: d <= 1)."""

    feature: Feature
    bandwidth: float
    kernel: str = "gaussian"
    exclude_self: bool = False
    kind = "kernel"

    def __post_init__(self) -> None:
        V.positive_float("bandwidth", self.bandwidth, fix="Kernel bandwidth must be positive")
        V.choice("kernel", self.kernel, ("gaussian", "box"))

    def describe(self) -> str:
        return f"Kernel({feature_name(self.feature)}, bandwidth={self.bandwidth:g}, {self.kernel})"

    def features(self) -> tuple[Feature, ...]:
        return (self.feature,)

    def _weights(self, vals: np.ndarray, rows: np.ndarray, cand: np.ndarray) -> np.ndarray:
        d2 = ((vals[rows][:, None, :] - vals[cand][None, :, :]) ** 2).sum(-1) / self.bandwidth**2
        w = np.exp(-0.5 * d2) if self.kernel == "gaussian" else (d2 <= 1.0).astype(np.float64)
        if self.exclude_self:
            w = np.where(rows[:, None] == cand[None, :], 0.0, w)
        return w

    def draw(
        self, table: Table, ref: np.ndarray, u: np.ndarray, rng: np.random.Generator, where: str
    ) -> Draw:
        vals = table.values(self.feature, f"{where}: feature {feature_name(self.feature)}")
        cand = _candidates(table)
        out = np.empty(len(ref), dtype=np.int64)
        ess = np.empty(len(ref), dtype=np.float64)
        step = max(1, 4_000_000 // max(len(cand), 1))
        for s in range(0, len(ref), step):
            rows = ref[s : s + step]
            w = self._weights(vals, rows, cand)
            tot = w.sum(1)
            if (tot <= 0).any():
                bad = np.nonzero(tot <= 0)[0][:6] + s
                raise InputError(
                    f"{where}: no pool row within the kernel of {self.describe()} for examples "
                    f"{bad.tolist()}; widen the bandwidth"
                )
            cdf = np.cumsum(w, 1)
            target = u[s : s + step] * tot
            pick = (cdf <= target[:, None]).sum(1)
            out[s : s + step] = cand[np.minimum(pick, len(cand) - 1)]
            ess[s : s + step] = tot**2 / (w**2).sum(1)
        return Draw(out, ess)

    def transition(self, table: Table, probs: np.ndarray, where: str) -> np.ndarray:
        vals = table.values(self.feature, f"{where}: feature {feature_name(self.feature)}")
        allrows = np.arange(len(table))
        w = self._weights(vals, allrows, allrows) * (probs * table.source)[None, :]
        tot = w.sum(1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(tot > 0, w / tot, 0.0)


@dataclass(frozen=True, eq=False)
class Generate(Sampler):
    """Build matching data on the fly: ``fn(parents, rng) -> ScrubData`` returns one new row per
    reference row (``parents`` are the rows the node is conditioned on). With ``features``, the
    new rows are checked to agree with their references on each of them. Generated rows join
    the table but are never drawn by other samplers (the data distribution is unchanged)."""

    fn: Callable[[ScrubData, np.random.Generator], ScrubData]
    feats: tuple[Feature, ...] = field(default=())
    name: str = ""
    kind = "generate"

    def describe(self) -> str:
        nm = self.name or getattr(self.fn, "__name__", "fn")
        chk = "".join(f", {feature_name(f)}" for f in self.feats)
        return f"Generate({nm}{chk})"

    def features(self) -> tuple[Feature, ...]:
        return self.feats

    def draw(
        self, table: Table, ref: np.ndarray, u: np.ndarray, rng: np.random.Generator, where: str
    ) -> Draw:
        parents = table.data.take(ref)
        try:
            new = self.fn(parents, rng)
        except Exception as e:
            raise InputError(f"{where}: the generator {self.describe()} failed: {e}") from e
        if not isinstance(new, ScrubData):
            new = ScrubData(new)
        if len(new) != len(ref):
            raise InputError(
                f"{where}: the generator returned {len(new)} rows for {len(ref)} references"
            )
        idx = table.add(new, source=False)
        for f in self.feats:
            codes = table.codes(f, f"{where}: feature {feature_name(f)}")
            bad = np.nonzero(codes[idx] != codes[ref])[0]
            if len(bad):
                raise InputError(
                    f"{where}: generated rows {bad[:6].tolist()} do not match their references "
                    f"on {feature_name(f)}"
                )
        return Draw(idx, None)


def conjoin(samplers: Sequence[Sampler], extra: Sequence[Feature] = ()) -> Sampler:
    """The sampler that permits a swap iff every sampler permits it (used by ``join``):
    Exact absorbs everything, Random adds nothing, features are conjoined."""
    if any(isinstance(s, Exact) for s in samplers):
        return Exact()
    rest = [s for s in samplers if not isinstance(s, Random)]
    feats: list[Feature] = []
    exclude = False
    for s in rest:
        if isinstance(s, SameFeature):
            feats.extend(s.feats)
            exclude = exclude or s.exclude_self
        else:
            if len(rest) == 1 and not extra:
                return s
            raise InputError(
                f"cannot conjoin {s.describe()} with other conditions: the join of generalised "
                "(kernel / generator) samplers is not uniquely defined"
            )
    feats.extend(extra)
    uniq: list[Feature] = []
    for f in feats:
        if all(f is not g for g in uniq):
            uniq.append(f)
    if not uniq:
        return Random()
    return SameFeature(*uniq, exclude_self=exclude)


def as_sampler(spec: Any, where: str) -> Sampler:
    """A sampler from a Sampler, a feature (SameFeature), or the names 'exact' / 'random'."""
    if isinstance(spec, Sampler):
        return spec
    if isinstance(spec, str):
        low = spec.lower()
        if low == "exact":
            return Exact()
        if low in ("random", "uncond", "unconditional"):
            return Random()
        raise InputError(f"{where}: unknown sampler {spec!r}; use 'exact', 'random' or a Sampler")
    if callable(spec):
        return SameFeature(spec)
    raise InputError(f"{where}: a sampler is a Sampler, a feature function, 'exact' or 'random'")


__all__ = [
    "Draw",
    "Exact",
    "Generate",
    "Kernel",
    "Random",
    "SameFeature",
    "Sampler",
    "as_sampler",
    "conjoin",
]
