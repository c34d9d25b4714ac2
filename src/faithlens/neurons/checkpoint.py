"""Resumable bootstrap of :func:`faithlens.neurons.explain`: finished unit blocks on disk, keyed by
a fingerprint of the data and settings."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from ..errors import CheckpointError


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


class ExplainCheckpoint:
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
