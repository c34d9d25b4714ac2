"""The executor seam: where a batch of work items runs, and how large each chunk is.

A method says *what* runs (a function of one chunk of examples, reference rows, units or
resamples); the executor says *where* it runs and *how much* goes into one chunk. Every method
that splits its work into chunks asks the current executor for the chunk size and the chunks
(:meth:`Executor.chunk_size`, :meth:`Executor.chunks`) and hands it the per-chunk work
(:meth:`Executor.map`); no method knows where its chunks ran.

:class:`InProcess` runs chunks one after another in this process, in order, and sizes them from
the fixed memory budget of :mod:`faithlens._memory` (never the free memory, so that results are
machine-independent). Another executor implements the same :class:`Executor` protocol and must
plan the same chunks for the same budget, so that it gives the same numbers: the Ray executor
(:mod:`faithlens.distributed`, registered here as ``"ray"`` when faithlens is imported) sends
the chunks a method hands to :meth:`Executor.map_model` to long-lived worker processes.

Two ways to hand over chunks:

- :meth:`Executor.map` takes any function (a closure over the model is fine); it runs in this
  process on every executor.
- :meth:`Executor.map_model` takes a module-level function ``fn(model, item, *args, tick)`` and
  the model it runs on; an executor with workers sends each worker the model's spec (how
  ``fl.load`` loaded it), ``fn``'s qualified name and the item, so ``fn``, ``item`` and ``args``
  must be picklable and ``fn`` importable by name. The method plans the items (its chunks),
  so batched work gives the same numbers on every executor.
- :meth:`Executor.map_sized` takes the same kind of function and a sequence of items that
  ``fn`` computes one by one (a chunk's numbers do not depend on its size): the executor
  chooses the chunks, in process from the budget, on Ray workers from each worker's own
  memory.

``faithlens.executor.executor("inprocess")`` or ``executor("ray", workers=2)`` (a context
manager) chooses the executor for a block of code; :func:`current_executor` returns the one in
force. The methods that fan out also take ``executor=`` (a name or an :class:`Executor`) for
one call (:func:`on_executor`).

This is a utility module below the models: it imports only torch, the standard library,
``_memory``, ``validate`` and ``errors``.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ParamSpec, Protocol, TypeVar, runtime_checkable

import torch

from . import _memory
from .errors import InputError

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")


@dataclass(frozen=True)
class Sizing:
    """How many items of :meth:`Executor.map_sized` fit one chunk: the arguments of
    :meth:`Executor.chunk_size` (bytes one item needs while its chunk runs, the device, the
    share of the budget, a ``max_memory`` that replaces the budget, tokens per item for a
    forward pass, and a cap on the items)."""

    bytes_per_item: int
    device: torch.device | None = None
    fraction: float = 0.25
    max_memory: int | None = None
    tokens_per_item: int | None = None
    limit: int | None = None

    def rows(self, memory: int, device: str, n_items: int) -> int:
        """Items per chunk on a worker with ``memory`` bytes on a ``device`` (``"cpu"``,
        ``"cuda"``): ``fraction`` of it (``max_memory`` instead, when given) over the bytes per
        item, capped as :meth:`InProcess.chunk_size` caps (tokens per pass on a CPU, ``limit``,
        ``n_items``)."""
        budget = int(memory * self.fraction) if self.max_memory is None else int(self.max_memory)
        rows = budget // max(1, self.bytes_per_item)
        if self.tokens_per_item is not None and self.max_memory is None and device == "cpu":
            rows = min(rows, max(1, _memory.CPU_TOKENS_PER_PASS // max(1, self.tokens_per_item)))
        if self.limit is not None:
            rows = min(rows, self.limit)
        return max(1, min(n_items, int(rows)))


@runtime_checkable
class Executor(Protocol):
    """Where chunks of work run, and how large they are."""

    name: str

    def budget(
        self,
        device: torch.device | None,
        *,
        fraction: float = 0.25,
        max_memory: int | None = None,
    ) -> int:
        """Bytes one batched computation may use: ``max_memory``, else ``fraction`` of the
        configured budget of ``device``'s type."""
        ...

    def chunk_size(
        self,
        n_items: int | None,
        bytes_per_item: int,
        *,
        device: torch.device | None = None,
        fraction: float = 0.25,
        max_memory: int | None = None,
        tokens_per_item: int | None = None,
        limit: int | None = None,
    ) -> int:
        """Items per chunk: as many as fit the budget, at least one, at most ``limit`` and
        ``n_items``. ``tokens_per_item`` (a forward pass) also caps the tokens per pass on a CPU,
        as part of the default budget: ``max_memory`` replaces both."""
        ...

    def chunks(self, n_items: int, size: int) -> list[slice]:
        """``range(n_items)`` in consecutive chunks of ``size`` (the last may be shorter)."""
        ...

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """``fn`` of every item, in order (in this process)."""
        ...

    def map_model(
        self,
        model: Any,
        fn: Callable[..., R],
        items: Iterable[T],
        *args: Any,
        tick: Callable[[], None] | None = None,
    ) -> Iterator[R]:
        """``fn(model, item, *args, tick)`` of every item, in order. ``fn`` calls ``tick()``
        after each step of progress; executors with workers replay the worker's calls here, in
        item order. ``fn`` must be a module-level function and ``items`` and ``args``
        picklable (workers receive them by name and by value). ``model`` may be ``None``
        for work that needs no model (``fn`` receives ``None``; workers load nothing)."""
        ...

    def map_sized(
        self,
        model: Any,
        fn: Callable[..., R],
        data: Sequence[Any],
        sizing: Sizing,
        *args: Any,
        tick: Callable[[], None] | None = None,
    ) -> Iterator[tuple[slice, R]]:
        """``(rows, fn(model, data[rows], *args, tick))`` for consecutive chunks ``rows`` that
        cover ``range(len(data))``, in order. ``fn`` computes each item of its chunk on its own
        (its numbers never depend on which items share the chunk), so the executor chooses the
        chunks: in process from ``sizing`` and the budget (:meth:`chunk_size`); an executor
        with workers may size each chunk from the memory of the worker it runs on. ``fn``,
        ``data[rows]`` and ``args`` obey :meth:`map_model`'s rules."""
        ...

    def close(self) -> None:
        """Release what the executor holds (workers); :func:`executor` calls it at the end of
        its block for an executor it created."""
        ...


def _no_tick() -> None:
    return None


class InProcess:
    """Chunks run in this process, one after another, in order; sizes from the memory budget."""

    name = "inprocess"

    def budget(
        self,
        device: torch.device | None,
        *,
        fraction: float = 0.25,
        max_memory: int | None = None,
    ) -> int:
        if max_memory is not None:
            return int(max_memory)
        if device is None:
            raise InputError("a memory budget needs a device or max_memory")
        return _memory.budget_bytes(device, fraction)

    def chunk_size(
        self,
        n_items: int | None,
        bytes_per_item: int,
        *,
        device: torch.device | None = None,
        fraction: float = 0.25,
        max_memory: int | None = None,
        tokens_per_item: int | None = None,
        limit: int | None = None,
    ) -> int:
        if tokens_per_item is not None and max_memory is None and device is not None:
            # a forward pass: the budget and, on a CPU, the tokens-per-pass cap
            rows = _memory.rows_that_fit(
                bytes_per_item,
                device,
                tokens_per_row=tokens_per_item,
                fraction=fraction,
                limit=limit,
            )
        else:  # max_memory replaces the default budget and its tokens-per-pass cap
            budget = self.budget(device, fraction=fraction, max_memory=max_memory)
            rows = int(budget // max(1, bytes_per_item))
            if limit is not None:
                rows = min(rows, limit)
            rows = max(1, rows)
        return rows if n_items is None else max(1, min(n_items, rows))

    def chunks(self, n_items: int, size: int) -> list[slice]:
        if size < 1:
            raise InputError(f"a chunk holds at least one item, not {size}")
        return [slice(i, min(n_items, i + size)) for i in range(0, n_items, size)]

    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        for item in items:
            yield fn(item)

    def map_model(
        self,
        model: Any,
        fn: Callable[..., R],
        items: Iterable[T],
        *args: Any,
        tick: Callable[[], None] | None = None,
    ) -> Iterator[R]:
        step = _no_tick if tick is None else tick
        for item in items:
            yield fn(model, item, *args, step)

    def map_sized(
        self,
        model: Any,
        fn: Callable[..., R],
        data: Sequence[Any],
        sizing: Sizing,
        *args: Any,
        tick: Callable[[], None] | None = None,
    ) -> Iterator[tuple[slice, R]]:
        n = len(data)
        if not n:
            return
        with warnings.catch_warnings():
            # a budget shrunk to the free memory cuts other chunks, but item-by-item work gives
            # the same numbers whatever the cut: nothing to warn about
            warnings.simplefilter("ignore", _memory.MemoryBudgetWarning)
            size = self.chunk_size(
                n,
                sizing.bytes_per_item,
                device=sizing.device,
                fraction=sizing.fraction,
                max_memory=sizing.max_memory,
                tokens_per_item=sizing.tokens_per_item,
                limit=sizing.limit,
            )
        step = _no_tick if tick is None else tick
        for rows in self.chunks(n, size):
            yield rows, fn(model, data[rows], *args, step)

    def close(self) -> None:
        return None


#: Executor name -> constructor (its keyword options are :func:`executor`'s). Modules above this
#: one add theirs when faithlens is imported (``"ray"``: :mod:`faithlens.distributed`).
EXECUTORS: dict[str, Callable[..., Executor]] = {"inprocess": InProcess}

_CURRENT: contextvars.ContextVar[Executor | None] = contextvars.ContextVar(
    "faithlens_executor", default=None
)
_DEFAULT = InProcess()


def current_executor() -> Executor:
    """The executor in force (:class:`InProcess` unless :func:`executor` chose another)."""
    ex = _CURRENT.get()
    return _DEFAULT if ex is None else ex


@contextmanager
def executor(which: str | Executor = "inprocess", **options: Any) -> Iterator[Executor]:
    """Run the methods called in this block on ``which``: a name in :data:`EXECUTORS`, built
    with ``options`` and closed at the end of the block (``executor("ray", address="auto",
    workers=2)``: :class:`faithlens.distributed.RayExecutor`), or an :class:`Executor` (used
    as it is, not closed)."""
    from .validate import fail

    if isinstance(which, str):
        if which not in EXECUTORS:
            raise fail("executor", which, "is not an executor", f"use one of {sorted(EXECUTORS)}")
        if which == "inprocess" and options:
            raise fail(
                "executor",
                which,
                f"takes no options (got {sorted(options)})",
                "leave them out, or use executor('ray', ...)",
            )
        ex = EXECUTORS[which](**options)
        owned = True
    elif isinstance(which, Executor):
        if options:
            raise fail(
                "executor",
                which.name,
                f"is already built; options {sorted(options)} cannot apply",
                "pass the options to its constructor",
            )
        ex, owned = which, False
    else:
        raise InputError(f"executor must be a name or an Executor, not {type(which).__name__}")
    token = _CURRENT.set(ex)
    try:
        yield ex
    finally:
        _CURRENT.reset(token)
        if owned:
            ex.close()


def on_executor(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorator of a method with a keyword argument ``executor`` (``None``, a name in
    :data:`EXECUTORS` or an :class:`Executor`): a call that gives one runs inside
    ``executor(which)`` (a name builds the executor for this call and closes it after; an
    executor is used as it is), so ``fl.patch(..., executor=ex)`` is ``with executor(ex):
    fl.patch(...)``. ``None`` (the default) keeps the executor in force."""
    if "executor" not in inspect.signature(fn).parameters:
        raise TypeError(f"{fn.__name__} must take an executor argument")

    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        which: Any = kwargs.get("executor")
        if which is None:
            return fn(*args, **kwargs)
        with executor(which):
            return fn(*args, **kwargs)

    return call


__all__ = [
    "EXECUTORS",
    "Executor",
    "InProcess",
    "Sizing",
    "current_executor",
    "executor",
    "on_executor",
]
