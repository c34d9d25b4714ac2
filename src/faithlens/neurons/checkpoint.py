"""Resumable bootstrap of :func:`faithlens.neurons.explain`: finished unit blocks on disk, keyed by
a fingerprint of the data and settings."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from ..folders import NpzStore


def explain_fingerprint(*parts: Any) -> str:
    h = hashlib.sha1()
    for p in parts:
        if isinstance(p, Tensor):
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
        elif isinstance(p, np.ndarray):
            h.update(np.ascontiguousarray(p).tobytes())
        else:
            h.update(repr(p).encode())
    return h.hexdigest()


class ExplainCheckpoint(NpzStore):
    """Per-unit-block bootstrap results on disk, keyed by a fingerprint of data and settings
    (:class:`faithlens.folders.NpzStore`; block ``start`` is ``block_{start:07d}.npz``).

    Blocks are ``.npz`` files read with ``allow_pickle=False`` and written atomically; a
    truncated or foreign file raises :class:`CheckpointError` naming it."""

    def __init__(self, path: str | Path, key: str) -> None:
        super().__init__(
            path,
            key,
            prefix="block",
            what="neurons checkpoint",
            other_run="a different run (other data or settings)",
        )
