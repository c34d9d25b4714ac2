"""Causal scrubbing's sampling: seeded random streams, the deduplicated datum vectors and the
graph's data feed, drawing every datum of a planned hypothesis, and the concrete (hash-consed)
plan built from the sampled symbolic plans. Used by :mod:`.preparation`; see :mod:`.evaluate`
for the whole pipeline.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from ..graph import CopyRef, Feed, Mixed, MixedCopy, Uniform
from .data import ScrubData, Table
from .plan import Planner, SymMixed, SymPlan, SymUniform, UnionFind
from .samplers import Random, Sampler, conjoin

# ---------------------------------------------------------------------------------------------
# Random streams
# ---------------------------------------------------------------------------------------------


def stream(seed: int, name: str, n: int) -> tuple[np.ndarray, np.random.Generator]:
    """Seeded uniforms for a named stream (stable across runs and Python versions)."""
    h = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")
    rng = np.random.default_rng([seed, h])
    return rng.random(n), rng


# ---------------------------------------------------------------------------------------------
# Data table and feed
# ---------------------------------------------------------------------------------------------


class DataVectors:
    """Distinct datum vectors (``[n]`` table rows each), deduplicated; id 0 is the reference."""

    def __init__(self, ref: np.ndarray) -> None:
        self.vectors: list[np.ndarray] = []
        self.labels: list[list[str]] = []
        self._ids: dict[bytes, int] = {}
        self.add(ref, "reference")

    def add(self, v: np.ndarray, label: str) -> int:
        key = np.ascontiguousarray(v, dtype=np.int64).tobytes()
        got = self._ids.get(key)
        if got is None:
            got = len(self.vectors)
            self._ids[key] = got
            self.vectors.append(np.asarray(v, dtype=np.int64))
            self.labels.append([])
        if label not in self.labels[got]:
            self.labels[got].append(label)
        return got

    def __len__(self) -> int:
        return len(self.vectors)


@dataclass
class TableFeed:
    """The graph's ``DataFeed``, reading datum vectors from a :class:`~.data.Table`."""

    table: Table
    data: DataVectors
    fields_names: tuple[str, ...]
    device: torch.device

    def fields(self, datum: int, rows: Tensor) -> dict[str, Tensor]:
        idx = torch.from_numpy(self.data.vectors[datum][rows.cpu().numpy()])
        got = self.table.data.tensors(self.fields_names, idx, self.device)
        if not got:
            raise InputError(
                f"the data have none of the model's input columns {list(self.fields_names)}"
            )
        return got

    def rows(self, datum: int, rows: Tensor) -> ScrubData:
        return self.table.data.take(self.data.vectors[datum][rows.cpu().numpy()])


# ---------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------


@dataclass
class Sampled:
    """The data of one planned hypothesis: datum keys -> ids, and per-node diagnostics."""

    sym: SymPlan
    key_ids: dict[tuple[Hashable, ...], int]
    diagnostics: list[dict[str, Any]] = field(default_factory=list)
    vectors: dict[tuple[str, ...], np.ndarray] = field(default_factory=dict)


def _pair_name(sym: SymPlan, owners: tuple[str, ...]) -> str:
    return sym.pairs[owners].name(sym.trees)


def sample(
    sym: SymPlan, table: Table, ref: np.ndarray, data: DataVectors, seed: int, label: str
) -> Sampled:
    """Draw every datum of a planned hypothesis (before any forward pass)."""
    out = Sampled(sym, {})
    n = len(ref)
    uf = sym.uf
    # sampled-together groups: labels that share a node (in a join) are one group
    labels = UnionFind()
    for pn in sym.pairs.values():
        gs = sorted(pn.groups)
        for g in gs:
            labels.union(gs[0], g)
    for pn in sorted(sym.pairs.values(), key=lambda p: (p.depth, repr(p.owners))):
        parent = ref if pn.parent is None else out.vectors[pn.parent]
        name = _pair_name(sym, pn.owners)
        where = f"hypothesis {label!r}, node {name!r}"
        sampler = Planner.sampler_of(pn, where)
        if pn.groups:
            sname = "group:" + str(labels.find(sorted(pn.groups)[0]))
        else:
            sname = "node:" + "|".join(pn.owners)
        u, rng = stream(seed, sname, n)
        draw = sampler.draw(table, parent, u, rng, where)
        out.vectors[pn.owners] = draw.idx
        cs = draw.class_size
        out.diagnostics.append(
            {
                "node": name,
                "sampler": sampler.describe(),
                "mean_class_size": float(np.mean(cs)) if cs is not None else float("nan"),
                "min_class_size": float(np.min(cs)) if cs is not None else float("nan"),
                "self_share": float(np.mean(draw.idx == parent)),
                "ref_share": float(np.mean(draw.idx == ref)),
                "distinct": len(np.unique(draw.idx)),
                "conditioned": not isinstance(sampler, Random) and sampler.kind != "exact",
            }
        )
    keys = sym.datum_keys()
    # unimportant inputs: one datum per union-find group of "other" keys
    groups: dict[Hashable, list[Hashable]] = {}
    for k in sym.other_samplers:
        groups.setdefault(uf.find(k), []).append(k)
    other_vec: dict[Hashable, np.ndarray] = {}
    for key in sorted({k for k in (sym.canonical(k) for k in keys) if k[0] == "other"}, key=repr):
        root = key[1]
        members = groups.get(root, [])
        samplers: list[Sampler] = [sym.other_samplers[m][0] for m in members]
        conditioned = [m for m in members if not isinstance(sym.other_samplers[m][0], Random)]
        refs = {sym.other_reference(m) for m in conditioned}
        where = f"hypothesis {label!r}, unimportant inputs {root!r}"
        if len(refs) > 1:
            raise InputError(
                f"{where}: these unimportant inputs are sampled together but conditioned on "
                f"different nodes' data ({sorted(_pair_name(sym, r) for r in refs)})"
            )
        reference = out.vectors[next(iter(refs))] if refs else ref
        sampler = conjoin(samplers) if samplers else Random()
        u, rng = stream(seed, "other:" + repr(root), n)
        other_vec[root] = sampler.draw(table, reference, u, rng, where).idx
    for key in keys:
        ck = sym.canonical(key)
        if ck[0] == "ds":
            owners = ck[1]
            assert isinstance(owners, tuple)
            out.key_ids[key] = data.add(out.vectors[owners], f"{label}:{_pair_name(sym, owners)}")
        else:
            out.key_ids[key] = data.add(
                other_vec[ck[1]], f"{label}:unimportant({_other_label(sym, ck[1])})"
            )
    for owners, v in out.vectors.items():
        out.key_ids.setdefault(("ds", owners), data.add(v, f"{label}:{_pair_name(sym, owners)}"))
    return out


def _other_label(sym: SymPlan, root: Hashable) -> str:
    if isinstance(root, tuple) and len(root) >= 2 and isinstance(root[0], int):
        i, owner = root[0], root[1]
        if owner == "*":
            return "all"
        node = sym.trees[i].nodes.get(str(owner))
        name = node.name if node is not None else str(owner)
        return name + (f" via {root[2]}<-{root[4]}" if len(root) > 2 else "")
    return str(root)


# ---------------------------------------------------------------------------------------------
# Concrete plans
# ---------------------------------------------------------------------------------------------


class PlanBuilder:
    """Concrete, hash-consed copies from symbolic plans (several hypotheses share copies)."""

    def __init__(self) -> None:
        self.copies: dict[int, MixedCopy] = {}
        self._sig: dict[Hashable, CopyRef] = {}

    def add(self, sampled: Sampled) -> CopyRef:
        sym = sampled.sym
        ids = sampled.key_ids
        local: dict[int, CopyRef] = {}

        def conv(ref: SymUniform | SymMixed) -> CopyRef:
            if isinstance(ref, SymUniform):
                return Uniform(ref.node, ids[ref.datum])
            return local[ref.id]

        for c in sym.copies.values():  # post-order: children first
            inputs = ids[("ds", c.owners)]
            feeds = [(p, s, atom, conv(ch)) for p, s, atom, ch in c.feeds]
            counts = Counter(ch.datum for _, _, _, ch in feeds if isinstance(ch, Uniform))
            base = max(counts, key=lambda d: (counts[d], d == inputs, -d)) if counts else inputs
            kept = tuple(
                sorted(
                    (
                        Feed(p, s, ch, atom)
                        for p, s, atom, ch in feeds
                        if not (isinstance(ch, Uniform) and ch.datum == base)
                    ),
                    key=repr,
                )
            )
            if not kept and base == inputs:
                local[c.ref.id] = Uniform(c.ref.node, base)
                continue
            sig = (c.ref.node, base, inputs, kept)
            got = self._sig.get(sig)
            if got is None:
                mid = len(self.copies)
                got = Mixed(mid, c.ref.node)
                self.copies[mid] = MixedCopy(got, base, kept, inputs)
                self._sig[sig] = got
            local[c.ref.id] = got
        return conv(sym.root)
