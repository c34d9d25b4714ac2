"""The common shape of every faithlens result.

A result is a frozen dataclass. Its fields are numbers, strings, lists/dicts of those, numpy
arrays, or pandas DataFrames. ``save(dir)`` writes

- ``result.json``: the class name, the scalar fields and metadata (human-readable),
- ``table.parquet``: ``to_frame()``, the tidy table a user analyses,
- ``arrays.npz``: every array field (per-example values, bootstrap draws...),
- ``frames/<field>.parquet``: any DataFrame field,

and ``Result.load(dir)`` rebuilds the same object (the class is looked up by name). Subclasses
implement ``to_frame``, ``summary`` and ``plot``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from matplotlib.figure import Figure

T = TypeVar("T", bound="Result")

_REGISTRY: dict[str, type[Result]] = {}
FORMAT_VERSION = 1


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return {"__tuple__": [_jsonable(v) for v in value]}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, float) and not np.isfinite(value):
        return {"__float__": repr(value)}
    return value


def _unjson(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__tuple__"}:
            return tuple(_unjson(v) for v in value["__tuple__"])
        if set(value) == {"__float__"}:
            return float(value["__float__"])
        return {k: _unjson(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unjson(v) for v in value]
    return value


@dataclasses.dataclass(frozen=True)
class Result:
    """Base class: frozen, savable, loadable, tabular, plottable."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _REGISTRY[cls.__name__] = cls

    # -- what subclasses provide -------------------------------------------------------------
    def to_frame(self) -> pd.DataFrame:
        raise NotImplementedError(f"{type(self).__name__} must implement to_frame()")

    def summary(self) -> str:
        raise NotImplementedError(f"{type(self).__name__} must implement summary()")

    def plot(self, ax: Any = None) -> Figure:
        raise NotImplementedError(f"{type(self).__name__} must implement plot()")

    def __str__(self) -> str:
        return self.summary()

    # -- persistence --------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the result to the folder ``path`` (created if needed); returns the folder."""
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        scalars: dict[str, Any] = {}
        arrays: dict[str, np.ndarray] = {}
        frames: dict[str, pd.DataFrame] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray):
                arrays[f.name] = v
            elif isinstance(v, pd.DataFrame):
                frames[f.name] = v
            else:
                scalars[f.name] = _jsonable(v)
        meta = {
            "format": FORMAT_VERSION,
            "class": type(self).__name__,
            "fields": scalars,
            "arrays": sorted(arrays),
            "frames": sorted(frames),
        }
        (out / "result.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        np.savez_compressed(out / "arrays.npz", **arrays)  # type: ignore[arg-type]
        if frames:
            (out / "frames").mkdir(exist_ok=True)
            for name, frame in frames.items():
                frame.to_parquet(out / "frames" / f"{name}.parquet")
        self.to_frame().to_parquet(out / "table.parquet")
        return out

    @classmethod
    def load(cls: type[T], path: str | Path) -> T:
        """Load a result saved by :meth:`save`. ``Result.load`` finds the right class."""
        src = Path(path)
        meta_file = src / "result.json"
        if not meta_file.exists():
            from .errors import InputError

            raise InputError(f"{src} is not a saved faithlens result: it has no result.json")
        meta = json.loads(meta_file.read_text())
        name = meta["class"]
        target = _REGISTRY.get(name)
        if target is None:
            _import_result_modules()
            target = _REGISTRY.get(name)
        if target is None:
            from .errors import InputError

            raise InputError(f"{src} holds a {name!r}, which this faithlens does not know")
        if not issubclass(target, cls):
            from .errors import InputError

            raise InputError(f"{src} holds a {name}, not a {cls.__name__}")
        values: dict[str, Any] = {k: _unjson(v) for k, v in meta["fields"].items()}
        with np.load(src / "arrays.npz", allow_pickle=False) as npz:
            for k in meta["arrays"]:
                values[k] = npz[k]
        for k in meta["frames"]:
            values[k] = pd.read_parquet(src / "frames" / f"{k}.parquet")
        return target(**values)


def _import_result_modules() -> None:
    """Importing the package imports every method module, which registers its result classes."""
    import faithlens  # noqa: F401
