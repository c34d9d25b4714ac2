"""Datasets for causal scrubbing: named columns, features, and the table samplers draw from.

A :class:`ScrubData` is a set of equally long columns (token ids, attention masks, labels, any
per-example value a feature or a metric needs). The model reads the columns named like its
inputs (``ids`` / ``mask`` for a transformer, the forward arguments for a generic module).

A *feature* is a function of the data: ``feature(data) -> values`` with one value per row
(numbers, strings, tuples or rows of an array; rows are compared for exact equality). Features
are evaluated once on every row before any forward pass, and an exception or a NaN is an
error that names the interpretation node that uses the feature.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError, ShapeError
from ..fingerprint import data_fingerprint

Feature = Callable[["ScrubData"], Any]


def _column(name: str, value: Any) -> Tensor | np.ndarray:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "biuf":
            return torch.from_numpy(np.ascontiguousarray(value))
        return value
    if isinstance(value, (list, tuple)):
        arr = (
            np.asarray(value, dtype=object)
            if value and not isinstance(value[0], (int, float, bool))
            else np.asarray(value)
        )
        if arr.dtype.kind in "biuf":
            return torch.from_numpy(arr)
        out = np.empty(len(value), dtype=object)
        for i, v in enumerate(value):
            out[i] = v
        return out
    raise InputError(f"column {name!r}: cannot use a {type(value).__name__} as a data column")


class ScrubData(Mapping[str, Any]):
    """Equally long named columns (torch tensors, or numpy object arrays for strings).

    ``data["ids"]`` is a column, ``data.subset(rows)`` (or ``data.take(rows)``) the rows
    ``rows``, ``len(data)`` the number of rows, ``data.name`` the dataset's name (keyword
    ``name=``, default ``"data"``). Build one from tensors (``ScrubData(x=..., y=...)``), a
    dict, or a :class:`~faithlens.tasks.Task` (:meth:`from_task`). It is a
    :class:`~faithlens.tasks.data.Data`.
    """

    name: str

    def __init__(
        self, columns: Mapping[str, Any] | None = None, /, *, name: str = "data", **kw: Any
    ) -> None:
        if not isinstance(name, str):
            raise InputError(
                f"name= is the dataset's name (a string), not a {type(name).__name__}; a column "
                "called 'name' goes in the mapping: ScrubData({'name': ...})"
            )
        self.name = name
        cols = dict(columns or {})
        cols.update(kw)
        if not cols:
            raise InputError("ScrubData needs at least one column")
        self._cols: dict[str, Tensor | np.ndarray] = {k: _column(k, v) for k, v in cols.items()}
        lengths = {k: int(v.shape[0]) for k, v in self._cols.items()}
        if len(set(lengths.values())) != 1:
            raise ShapeError(f"ScrubData columns have different lengths: {lengths}")
        self._n = next(iter(lengths.values()))
        if self._n == 0:
            raise InputError("ScrubData has no rows")

    @classmethod
    def from_task(cls, task: Any, inputs: Sequence[str] | None = None) -> ScrubData:
        """The clean side of a :class:`~faithlens.tasks.Task`: ``ids``, ``mask``, ``answers``,
        ``positions`` (and ``prompt`` when the task has its text). A multi-token task is
        refused (scrubbing reads one position's answer logits).

        A task built from tensors (:meth:`faithlens.Task.from_tensors`: pixels, embeddings) has
        no token ids: its clean input tensors become the columns named ``inputs`` (the graph's
        input fields, in the order of the model's forward arguments), next to ``answers``,
        ``positions`` (zeros) and ``label`` (the correct class, ``answers[:, 0]``)."""
        if getattr(task, "is_multi_token", False):
            from ..tasks.multi_token import refusal

            raise InputError(refusal(task, "ScrubData.from_task (scrub)"))
        if getattr(task, "tokens", True) is False:
            return cls._from_tensor_task(task, inputs)
        clean = task.clean
        cols: dict[str, Any] = {
            "ids": clean.ids.cpu(),
            "mask": (clean.mask if clean.mask is not None else torch.ones_like(clean.ids)).cpu(),
            "answers": task.answers.cpu(),
            "positions": task.positions.cpu(),
        }
        if task.prompts is not None:
            cols["prompt"] = list(task.prompts)
        return cls(cols, name=str(task.name))

    @classmethod
    def _from_tensor_task(cls, task: Any, inputs: Sequence[str] | None) -> ScrubData:
        tensors = [a for a in task.clean.args if isinstance(a, Tensor)]
        if inputs is None:
            raise InputError(
                f"the task {task.name!r} is built from tensors: name the model inputs its "
                "tensors feed, ScrubData.from_task(task, inputs=graph.input_fields())"
            )
        names = list(inputs)
        if len(names) != len(tensors) or task.clean.kwargs:
            raise InputError(
                f"the task {task.name!r} holds {len(tensors)} positional input tensor(s) but the "
                f"graph's inputs are {names}: give one tensor per forward argument, in order "
                "(Task.from_tensors([x, y], ...)), or scrub a ScrubData with those columns"
            )
        cols: dict[str, Any] = {"answers": task.answers.cpu(), "positions": task.positions.cpu()}
        cols["label"] = task.answers[:, 0].cpu()
        clash = sorted(set(names) & set(cols))
        if clash:
            raise InputError(
                f"the model's forward arguments {clash} clash with the columns a task adds "
                f"({sorted(cols)}); scrub a ScrubData with your own column names instead"
            )
        cols.update({k: t.detach().cpu() for k, t in zip(names, tensors, strict=True)})
        return cls(cols, name=str(task.name))

    # -- mapping -------------------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        if key not in self._cols:
            raise InputError(f"the data have no column {key!r}; columns: {sorted(self._cols)}")
        return self._cols[key]

    def __contains__(self, key: object) -> bool:
        return key in self._cols

    def __iter__(self) -> Any:
        return iter(self._cols)

    def __len__(self) -> int:
        return self._n

    def __repr__(self) -> str:
        cols = ", ".join(f"{k}{tuple(v.shape)}" for k, v in self._cols.items())
        named = "" if self.name == "data" else f"{self.name!r}, "
        return f"ScrubData({named}{self._n} rows: {cols})"

    @property
    def columns(self) -> list[str]:
        return list(self._cols)

    def take(self, idx: Tensor | np.ndarray | Sequence[int]) -> ScrubData:
        """The rows ``idx`` (with repetition), as a new ScrubData."""
        ix = np.asarray(idx.cpu() if isinstance(idx, Tensor) else idx, dtype=np.int64)
        out = object.__new__(ScrubData)
        out.name = self.name
        out._cols = {
            k: (v[torch.from_numpy(ix)] if isinstance(v, Tensor) else v[ix])
            for k, v in self._cols.items()
        }
        out._n = len(ix)
        return out

    def subset(self, rows: Sequence[int] | Tensor | np.ndarray) -> ScrubData:
        """The rows ``rows`` (integer indices ``0..len - 1``, in that order, repetitions
        allowed), as a new ScrubData: :meth:`take` with the indices checked."""
        ix = np.asarray(rows.cpu() if isinstance(rows, Tensor) else rows, dtype=np.int64)
        bad = ix[(ix < 0) | (ix >= self._n)]
        if bad.size:
            raise InputError(
                f"{self.name}: rows {bad[:8].tolist()} are out of range for {self._n} rows "
                f"(0..{self._n - 1})"
            )
        return self.take(ix)

    def fingerprint(self) -> str:
        """sha256 of the name and every column (names, dtypes, shapes, values): the
        :class:`~faithlens.tasks.data.Data` fingerprint."""
        return data_fingerprint({"name": self.name, "columns": self._cols})

    def concat(self, other: ScrubData) -> ScrubData:
        if set(other.columns) != set(self.columns):
            raise InputError(
                f"generated rows have columns {sorted(other.columns)}, the data {sorted(self.columns)}"
            )
        cols: dict[str, Any] = {}
        for k, v in self._cols.items():
            w = other._cols[k]
            if isinstance(v, Tensor) != isinstance(w, Tensor):
                raise InputError(f"column {k!r}: generated rows have a different type")
            if isinstance(v, Tensor):
                assert isinstance(w, Tensor)
                if tuple(v.shape[1:]) != tuple(w.shape[1:]):
                    raise ShapeError(
                        f"column {k!r}: generated rows have shape {tuple(w.shape[1:])}, the data "
                        f"{tuple(v.shape[1:])} (token sequences must keep their length)"
                    )
                cols[k] = torch.cat([v, w.to(v.dtype)], 0)
            else:
                cols[k] = np.concatenate([v, np.asarray(w, dtype=object)])
        return ScrubData(cols, name=self.name)

    def tensors(self, names: Iterable[str], idx: Tensor, device: torch.device) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for k in names:
            if k not in self._cols:
                continue
            v = self._cols[k]
            if not isinstance(v, Tensor):
                raise InputError(f"model input column {k!r} must be a tensor")
            out[k] = v[idx.cpu()].to(device)
        return out


def field(name: str) -> Feature:
    """A feature that reads one column."""

    def feature(data: ScrubData) -> Any:
        return data[name]

    feature.__name__ = name
    feature.__qualname__ = f"field({name!r})"
    return feature


def rowwise(fn: Callable[[dict[str, Any]], Hashable], name: str | None = None) -> Feature:
    """A feature from a function of one row (a dict of that row's values); slower than a
    vectorised feature, but handy for hand-written interpretations."""

    def feature(data: ScrubData) -> list[Hashable]:
        out = []
        cols = {k: data[k] for k in data}
        for i in range(len(data)):
            row = {k: (v[i].tolist() if isinstance(v, Tensor) else v[i]) for k, v in cols.items()}
            out.append(fn(row))
        return out

    feature.__name__ = str(name or getattr(fn, "__name__", "rowwise"))
    return feature


def feature_name(f: Feature) -> str:
    """A short printable name: ``field('x')``, a function's name, or ``lambda``."""
    qual = str(getattr(f, "__qualname__", "") or "")
    name = str(getattr(f, "__name__", "") or "")
    if qual and "<locals>" not in qual and "<lambda>" not in qual:
        return qual
    if name and name != "<lambda>":
        return name
    return "lambda" if name == "<lambda>" else repr(f)


def _hashable_rows(values: Any, n: int, where: str) -> list[Hashable] | np.ndarray:
    """Per-row comparable keys: a 1-D numeric array (fast path) or a list of hashables."""
    if isinstance(values, Tensor):
        values = values.detach().cpu().numpy()
    if isinstance(values, np.ndarray) and values.dtype.kind in "biufc":
        if values.shape[:1] != (n,):
            raise ShapeError(
                f"{where} returned {values.shape[0] if values.ndim else 'a scalar'} values for {n} rows"
            )
        if values.dtype.kind in "fc" and np.isnan(values).any():
            bad = np.argwhere(np.isnan(values.reshape(n, -1)).any(-1)).flatten()[:8].tolist()
            raise InputError(
                f"{where} is NaN on rows {bad}; NaN never equals itself, so those rows would have no match"
            )
        if values.ndim == 1:
            return values
        flat = values.reshape(n, -1)
        return [tuple(r.tolist()) for r in flat]
    seq = list(values)
    if len(seq) != n:
        raise ShapeError(f"{where} returned {len(seq)} values for {n} rows")
    out: list[Hashable] = []
    for v in seq:
        if isinstance(v, np.ndarray):
            v = tuple(v.tolist())
        elif isinstance(v, Tensor):
            v = tuple(v.flatten().tolist()) if v.dim() else v.item()
        elif isinstance(v, list):
            v = tuple(v)
        try:
            hash(v)
        except TypeError as e:
            raise InputError(f"{where} returned an unhashable value {v!r}") from e
        if isinstance(v, float) and v != v:
            raise InputError(f"{where} is NaN on some row; NaN never equals itself")
        out.append(v)
    return out


class Table:
    """The rows samplers draw from: the data, plus rows that generators add while sampling.

    ``source`` marks the rows samplers may return (the pool); reference rows given separately
    are in the table but not in the source. Feature codes (equal values -> equal ints) are
    computed once per feature and extended when rows are added.
    """

    def __init__(self, data: ScrubData, source: np.ndarray | None = None) -> None:
        self.data = data
        self.source = np.ones(len(data), dtype=bool) if source is None else source.astype(bool)
        self._codes: dict[int, tuple[np.ndarray, dict[Hashable, int], Feature]] = {}
        self._values: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.data)

    def add(self, rows: ScrubData, *, source: bool = True) -> np.ndarray:
        start = len(self.data)
        self.data = self.data.concat(rows)
        self.source = np.concatenate([self.source, np.full(len(rows), source)])
        return np.arange(start, len(self.data))

    def codes(self, f: Feature, where: str) -> np.ndarray:
        """Integer codes of ``f`` on every row (equal feature values -> equal codes)."""
        key = id(f)
        got = self._codes.get(key)
        n = len(self.data)
        start = 0 if got is None else len(got[0])
        if got is not None and start == n:
            return got[0]
        mapping: dict[Hashable, int] = {} if got is None else got[1]
        part = self.data if start == 0 else self.data.take(np.arange(start, n))
        try:
            values = f(part)
        except Exception as e:
            raise InputError(f"{where} failed on the data: {type(e).__name__}: {e}") from e
        keys = _hashable_rows(values, len(part), where)
        if isinstance(keys, np.ndarray):
            uniq, inv = np.unique(keys, return_inverse=True)
            lut = np.empty(len(uniq), dtype=np.int64)
            for j, u in enumerate(uniq.tolist()):
                lut[j] = mapping.setdefault(u, len(mapping))
            new = lut[inv]
        else:
            new = np.fromiter(
                (mapping.setdefault(k, len(mapping)) for k in keys), np.int64, len(keys)
            )
        codes = new if got is None else np.concatenate([got[0], new])
        self._codes[key] = (codes, mapping, f)
        return codes

    def values(self, f: Feature, where: str) -> np.ndarray:
        """Float values of a numeric feature on every row (``[rows, dims]``), for kernels."""
        key = id(f)
        got = self._values.get(key)
        n = len(self.data)
        start = 0 if got is None else len(got)
        if got is not None and start == n:
            return got
        part = self.data if start == 0 else self.data.take(np.arange(start, n))
        try:
            v = f(part)
        except Exception as e:
            raise InputError(f"{where} failed on the data: {type(e).__name__}: {e}") from e
        arr = np.asarray(v.detach().cpu().numpy() if isinstance(v, Tensor) else v, dtype=np.float64)
        arr = arr.reshape(len(part), -1)
        if not np.isfinite(arr).all():
            raise InputError(f"{where} is NaN or infinite on some rows")
        full = arr if got is None else np.concatenate([got, arr])
        self._values[key] = full
        return full


__all__ = ["Feature", "ScrubData", "Table", "feature_name", "field", "rowwise"]
