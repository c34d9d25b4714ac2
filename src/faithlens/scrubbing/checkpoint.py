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

import dataclasses
import functools
import os
import types
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
        behaviour_key(prep.behaviour),
        prep.graph.kind,
        [str(r) for r in prep.graph.rewrites],
        len(prep.plan.roots),
        len(prep.plan.copies),
        [(c.start, c.stop) for c in chunks],
    )


def behaviour_key(behaviour: Any) -> list[Any]:
    """What identifies a scrub behaviour in a checkpoint key: its class and every field, a
    function field by its code (:func:`function_key`), so that another behaviour (another
    ``Fn(fn=...)``, answers column, metric or positions) never resumes this one's chunks."""
    if dataclasses.is_dataclass(behaviour):
        parts = _value_key(behaviour)
    else:
        parts = [type(behaviour).__qualname__, behaviour.name, bool(behaviour.higher_is_better)]
    try:
        data_fingerprint(*parts)
    except TypeError as e:
        raise V.fail(
            "checkpoint",
            type(behaviour).__name__,
            f"cannot key this behaviour's fields ({e})",
            "use a behaviour of numbers, strings and functions, or run without checkpoint=",
        ) from e
    return parts


def _value_key(value: Any) -> Any:
    """A field's value for a key: a function by its code, a dataclass (a metric) field by
    field, anything else as it is."""
    if isinstance(value, types.FunctionType | functools.partial):
        return function_key(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [type(value).__module__, type(value).__qualname__] + [
            [f.name, _value_key(getattr(value, f.name))] for f in dataclasses.fields(value)
        ]
    return value


def function_key(fn: Any) -> list[Any]:
    """A function by its module, name, bytecode, constants, names and closure values (a
    ``functools.partial`` by its function and arguments): the same source gives the same key
    in any process, an edited body another one."""
    if isinstance(fn, functools.partial):
        return ["partial", function_key(fn.func), list(fn.args), dict(fn.keywords)]
    code = getattr(fn, "__code__", None)
    if code is None:
        raise V.fail(
            "checkpoint",
            repr(fn),
            "is a callable without code to key a checkpoint on",
            "pass a plain function or a lambda, or run without checkpoint=",
        )
    cells = [c.cell_contents for c in (fn.__closure__ or ())]
    return [
        getattr(fn, "__module__", None) or "",
        getattr(fn, "__qualname__", ""),
        _code_key(code),
        [_cell_key(c) for c in cells],
    ]


def _cell_key(value: Any) -> Any:
    """A closure value for a key; one that cannot be fingerprinted (a tokenizer, a model)
    counts by its type only, so that such a closure still keys a checkpoint."""
    key = _value_key(value)
    try:
        data_fingerprint(key)
    except TypeError:
        return ["unhashed", type(value).__module__, type(value).__qualname__]
    return key


def _code_key(code: types.CodeType) -> list[Any]:
    consts = [
        _code_key(c)
        if isinstance(c, types.CodeType)
        else sorted(map(repr, c))
        if isinstance(c, frozenset)
        else repr(c)  # a literal: its repr is stable across processes
        for c in code.co_consts
    ]
    return [code.co_code, consts, list(code.co_names)]


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
