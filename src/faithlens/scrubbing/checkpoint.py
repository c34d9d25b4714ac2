"""Resumable scrubbing: the finished chunks of reference rows on disk.

``scrub(..., checkpoint=folder)`` (and :func:`~faithlens.scrubbing.preparation.run_prepared`)
saves each chunk's per-example values, KL and work counts as it finishes
(:class:`ScrubCheckpoint`, a :class:`~faithlens.folders.NpzStore`); a killed run started again
with the same folder reads the finished chunks back and evaluates only the others, with the
same result. The folder is keyed on the model's weights and dtype, the data table, the
reference rows and every sampled datum vector, the hypothesis, its baselines, the behaviour,
the graph's rewrites and the chunk plan (:func:`scrub_key`): a folder written for another run
is refused with :class:`~faithlens.errors.CheckpointError`, never resumed.
"""

from __future__ import annotations

import os
from dataclasses import fields
from typing import Any

import numpy as np

from .. import validate as V
from ..fingerprint import data_fingerprint, model_fingerprint
from ..folders import NpzStore
from ..graph import EvalStats

#: What one chunk returns: every root's values, the KL of root 1 (or None), the work done.
Chunk = tuple[list[np.ndarray], np.ndarray | None, EvalStats]


def scrub_key(prep: Any, chunks: list[slice]) -> str:
    """The fingerprint of everything that decides a prepared scrub's chunk values."""
    return data_fingerprint(
        "faithlens.scrub",
        model_fingerprint(prep.model.module),
        str(prep.model.dtype),
        dict(prep.table.data.items()),
        np.asarray(prep.ref),
        list(prep.data.vectors),
        prep.hypothesis.describe(),
        list(prep.baselines),
        prep.behaviour.name,
        bool(prep.behaviour.higher_is_better),
        prep.graph.kind,
        [str(r) for r in prep.graph.rewrites],
        len(prep.plan.roots),
        len(prep.plan.copies),
        [(c.start, c.stop) for c in chunks],
    )


class ScrubCheckpoint(NpzStore):
    """The finished chunks of one scrub (chunk ``i`` is ``chunk_{i:07d}.npz``)."""

    def __init__(self, path: str | os.PathLike[str], key: str) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise V.fail("checkpoint", path, "must be a folder path", "give a str or a Path")
        super().__init__(
            path,
            key,
            prefix="chunk",
            what="scrub checkpoint",
            other_run="another scrub (another model, data, hypothesis, arguments or chunk plan)",
        )

    def load_chunk(self, i: int) -> Chunk | None:
        """Chunk ``i``'s (values, KL, stats), or ``None`` when it has not finished."""
        z = self.load(i)
        if z is None:
            return None
        n_roots = int(z["n_roots"])
        vals = [z[f"value_{j}"] for j in range(n_roots)]
        kl = z["kl"] if bool(z["has_kl"]) else None
        counts = z["stats"]
        stats = EvalStats(**{f.name: int(c) for f, c in zip(fields(EvalStats), counts)})
        return vals, kl, stats

    def save_chunk(self, i: int, chunk: Chunk) -> None:
        """Write chunk ``i`` atomically."""
        vals, kl, stats = chunk
        self.save(
            i,
            n_roots=np.int64(len(vals)),
            has_kl=np.bool_(kl is not None),
            kl=np.zeros(0) if kl is None else np.asarray(kl),
            stats=np.array([getattr(stats, f.name) for f in fields(EvalStats)], dtype=np.int64),
            **{f"value_{j}": np.asarray(v) for j, v in enumerate(vals)},
        )


__all__ = ["Chunk", "ScrubCheckpoint", "scrub_key"]
