"""Reading and writing faithlens' own binary files safely.

- :func:`torch_load` loads with ``weights_only=True`` (tensors and plain containers only: a
  crafted pickle that would run code is refused, not executed) and turns every failure (a
  missing, truncated, corrupted or unsafe file) into one error that names the file and the fix.
- :func:`torch_save` writes through a temporary file in the same folder, flushed to disk, then
  ``os.replace``: a kill at any moment leaves either the old file or the new one, never half of
  one.
- :func:`require` checks that a loaded checkpoint has the entries faithlens needs.

Nothing here unpickles arbitrary objects, and nothing evaluates text read from disk.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError, FaithlensError

__all__ = ["require", "torch_load", "torch_save"]


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def torch_load(
    path: str | Path,
    *,
    what: str,
    fix: str,
    map_location: str | torch.device | None = "cpu",
    error: type[FaithlensError] = CheckpointError,
) -> Any:
    """``torch.load(path, weights_only=True)``; any failure raises ``error`` naming ``path``,
    ``what`` it should have been and the ``fix``."""
    p = Path(path)
    if not p.is_file():
        raise error(f"{what} {p} does not exist (or is not a file); {fix}")
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower() or "unsupported global" in str(e).lower():
            raise error(
                f"{p} is not a safe {what}: it holds Python objects that only running code "
                f"could rebuild, and faithlens never runs code from a file "
                f"({_first_line(e)}); {fix}"
            ) from None
        raise error(
            f"{p} is not a readable {what} (truncated or corrupted: {_first_line(e)}); {fix}"
        ) from None
    except Exception as e:  # zip / EOF / storage errors of a truncated or foreign file
        raise error(
            f"{p} is not a readable {what} (truncated or corrupted: {_first_line(e)}); {fix}"
        ) from None


def torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` atomically: write ``path``'s temporary sibling, fsync, ``os.replace``."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return p


def require(
    obj: Any, keys: Iterable[str], path: str | Path, *, what: str, fix: str
) -> dict[str, Any]:
    """``obj`` as a dict holding every key in ``keys``, else :class:`CheckpointError`."""
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{path} is not a {what} (it holds a {type(obj).__name__}, not a dict); {fix}"
        )
    missing = [k for k in keys if k not in obj]
    if missing:
        raise CheckpointError(f"{path} is not a complete {what} (no {', '.join(missing)}); {fix}")
    return obj
