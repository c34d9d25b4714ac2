"""The Ray executor: a method's chunks run on long-lived worker processes, on one machine or many.

``faithlens.executor.executor("ray", address=None, workers=2)`` runs the methods called in its
block with a :class:`RayExecutor`. It plans exactly the chunks :class:`~faithlens.executor.InProcess`
plans for the same memory budget (it delegates ``budget``, ``chunk_size`` and ``chunks`` to it),
so a method gives the same numbers on either. What it sends:

- **Work items.** A method hands its per-chunk work to :meth:`RayExecutor.map_model` as a
  module-level function and one picklable item per chunk. Each item travels as a small
  description: the model's :class:`ModelSpec` (the ``fl.load`` name or path, dtype, device type
  and weight fingerprint; never the weights), the function's qualified name
  (``"faithlens.patching.exact:_run_chunk"``) and the chunk's arguments.
- **Workers.** ``workers`` Ray actors, each with ``threads_per_worker`` CPUs (torch uses that
  many threads) and ``gpus_per_worker`` GPUs. A worker loads a model once per spec (``fl.load``
  on its own process) and keeps it; it checks that the weights it loaded have the fingerprint of
  the model in this process (weights changed after loading cannot be reproduced by a worker, so
  they are refused).
- **Chunks.** The chunks a method plans (:meth:`RayExecutor.map_model`) are the in-process
  ones. Work whose items are computed one by one (:meth:`RayExecutor.map_sized`) is cut into
  chunks by each worker's own memory (:meth:`Worker.memory`: its GPU's free memory, else the
  CPU budget of its node; ``worker_memory`` overrides it): a worker with more takes more.
- **Order and progress.** Each worker holds at most ``in_flight`` items; results come back in
  any order and are yielded in chunk order, with the progress ticks each chunk made on its
  worker replayed here.
- **Faults.** A worker that dies (killed, out of memory, a node lost) is replaced by a fresh
  one, and each chunk it held is sent again, to another worker where there is one; a chunk is
  tried at most ``max_retries + 1`` times. A chunk is a pure function of its description, so
  the result is unchanged. An error raised by the method's own code is raised here as it is.

:meth:`RayExecutor.map` (a closure, not picklable by name) runs in this process: methods not yet
ported to ``map_model`` run as they do in process (docs/scale.md lists which methods fan out).

``ray`` is an optional extra (``pip install 'faithlens[ray]'``); it is imported only when a
:class:`RayExecutor` is built, so this module imports without it.

This module sits above :mod:`faithlens.loading` (workers load models) and below the methods,
which never import it: they reach it through :func:`faithlens.executor.current_executor`.
"""

from __future__ import annotations

import collections
import importlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from . import _memory, validate
from .errors import FaithlensError, InputError, MissingExtraError
from .executor import EXECUTORS, InProcess, Sizing
from .fingerprint import model_fingerprint
from .models.model import Model

T = TypeVar("T")
R = TypeVar("R")

#: Testing only: a worker that finds the file this variable names (when the executor was built)
#: removes it and exits before running its chunk, once per file (the worker-kill test).
CRASH_ENV = "FAITHLENS_RAY_CRASH_ONCE"

_MISSING = "the Ray executor needs ray; install it with pip install 'faithlens[ray]'"


class WorkerError(FaithlensError, RuntimeError):
    """A chunk could not be run: its workers died more often than ``max_retries`` allows."""


def _ray() -> Any:
    try:
        import ray
    except ImportError as e:  # pragma: no cover - ray is installed in CI (the lock)
        raise MissingExtraError(_MISSING) from e
    return ray


@dataclass(frozen=True)
class ModelSpec:
    """What a worker needs to load the model a chunk runs on: ``fl.load(source, dtype=...)`` on
    ``device`` (``"cpu"`` or ``"cuda"``), or spread by ``device_map`` (module name, device)
    pairs when the model was, whose weights must hash to ``fingerprint``."""

    source: str
    dtype: str
    device: str
    fingerprint: str
    device_map: tuple[tuple[str, str], ...] | None = None


def model_spec(model: Model) -> ModelSpec:
    """The :class:`ModelSpec` of a model ``fl.load`` loaded (its weights are hashed once here)."""
    if not isinstance(model, Model):
        raise InputError(
            f"the Ray executor runs chunks on a faithlens Model, not {type(model).__name__}"
        )
    if model.spec is None:
        raise validate.fail(
            "model",
            model.name,
            "was not loaded by fl.load, so Ray workers cannot load it",
            "load it with fl.load(name or path), or use the in-process executor",
        )
    return ModelSpec(
        source=model.spec,
        dtype=str(model.dtype).removeprefix("torch."),
        device=model.device.type,
        fingerprint=model_fingerprint(model.module),
        device_map=None if model.device_map is None else tuple(model.device_map.items()),
    )


def target_name(fn: Callable[..., Any]) -> str:
    """``"module:qualname"`` of a module-level function, checked to resolve back to ``fn``."""
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        raise InputError(
            f"{fn!r}: work sent to workers must be a module-level function (it is sent by name)"
        )
    name = f"{module}:{qualname}"
    if resolve(name) is not fn:
        raise InputError(f"{fn!r}: {name} does not name this function in a fresh process")
    return name


def resolve(name: str) -> Callable[..., Any]:
    """The function ``"module:qualname"`` names."""
    module, _, qualname = name.partition(":")
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not callable(obj):
        raise InputError(f"{name} is not a function")
    return obj


def load_checked(spec: ModelSpec) -> Model:
    """``spec``'s model, loaded in this process, refused unless its weights match."""
    from .loading import load

    dtype = getattr(torch, spec.dtype)
    if spec.device_map is not None:
        model = load(spec.source, device_map=dict(spec.device_map), dtype=dtype)
    else:
        model = load(spec.source, device=spec.device, dtype=dtype)
    got = model_fingerprint(model.module)
    if got != spec.fingerprint:
        raise InputError(
            f"a worker loaded {spec.source!r} ({spec.dtype}) with other weights than the model "
            "in the calling process (changed after fl.load?): save it and load the saved copy, "
            "or use the in-process executor"
        )
    return model


class Worker:
    """One long-lived worker (a Ray actor): loads each model once and runs chunks on it."""

    def __init__(
        self, threads: int, crash_flag: str | None = None, memory: int | None = None
    ) -> None:
        torch.set_num_threads(threads)
        self._models: dict[ModelSpec, Model] = {}
        self._crash_flag = crash_flag
        self._given = memory

    def pid(self) -> int:
        return os.getpid()

    def memory(self, spec: ModelSpec | None) -> int:
        """Bytes this worker's chunks may plan with: the ``memory`` it was given, else on a GPU
        the device memory free once ``spec``'s model is loaded, else the CPU budget
        (``FAITHLENS_MEMORY`` or the default, on this worker's node) capped by the memory
        available here."""
        if self._given is not None:
            return self._given
        if spec is not None and spec.device == "cuda":
            if spec not in self._models:
                self._models[spec] = load_checked(spec)
            return _memory.available_bytes(torch.device("cuda"))
        cpu = torch.device("cpu")
        return min(_memory.configured_bytes(cpu), _memory.available_bytes(cpu))

    def run(
        self, spec: ModelSpec | None, target: str, item: Any, args: tuple[Any, ...]
    ) -> tuple[Any, int]:
        """``target(model, item, *args, tick)`` and how many times it ticked (``model`` is
        ``None`` for work that needs none)."""
        if self._crash_flag is not None:
            try:
                os.unlink(self._crash_flag)
            except FileNotFoundError:
                pass
            else:
                os._exit(1)  # the worker-kill test: this process dies with the chunk
        model = None if spec is None else self._models.get(spec)
        if model is None and spec is not None:
            model = self._models[spec] = load_checked(spec)
        ticks = 0

        def tick() -> None:
            nonlocal ticks
            ticks += 1

        out = resolve(target)(model, item, *args, tick)
        return out, ticks


class RayExecutor:
    """Chunks run on ``workers`` Ray actors (see the module docstring); sizes as in process.

    Args:
        address: the cluster, when ``ray.init`` has not joined one in this process yet:
            ``None`` lets Ray choose (``RAY_ADDRESS``, else the latest cluster ``ray start``
            started on this machine, else a new local one, stopped by :meth:`close`),
            ``"auto"`` joins a running one on this machine, ``"ray://host:10001"`` a remote
            one.
        workers: how many actors (default: as many as the cluster's CPUs, or GPUs with
            ``gpus_per_worker``, allow).
        gpus_per_worker: GPUs per actor; more than 0 when the model is on a GPU, 0 otherwise.
        threads_per_worker: CPUs (torch threads) per actor.
        max_retries: how many times a chunk is sent again after its worker died.
        in_flight: chunks queued per worker (2: the next one is there when one finishes).
        worker_memory: bytes each worker's chunks of :meth:`map_sized` plan with, one for all
            or one per worker, instead of what each worker reports (:meth:`Worker.memory`).
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        workers: int | None = None,
        gpus_per_worker: float = 0,
        threads_per_worker: int = 1,
        max_retries: int = 3,
        in_flight: int = 2,
        worker_memory: int | Sequence[int] | None = None,
    ) -> None:
        if address is not None and not isinstance(address, str):
            raise validate.fail("address", address, "must be None, 'auto' or 'ray://host:port'")
        if workers is not None:
            workers = validate.positive_int("workers", workers)
        threads_per_worker = validate.positive_int("threads_per_worker", threads_per_worker)
        max_retries = validate.nonnegative_int("max_retries", max_retries)
        in_flight = validate.positive_int("in_flight", in_flight)
        if isinstance(gpus_per_worker, bool) or not (
            isinstance(gpus_per_worker, (int, float)) and gpus_per_worker >= 0
        ):
            raise validate.fail("gpus_per_worker", gpus_per_worker, "must be a number >= 0")
        _worker_memory(worker_memory, workers)  # checked before a cluster starts
        ray = _ray()
        self._ray = ray
        self._owns_cluster = not ray.is_initialized()
        if self._owns_cluster:
            ray.init(address=address, include_dashboard=False, configure_logging=False)
        if workers is None:
            res = ray.cluster_resources()
            if gpus_per_worker:
                workers = max(1, int(res.get("GPU", 0) // gpus_per_worker))
            else:
                workers = max(1, int(res.get("CPU", 1) // threads_per_worker))
        self.workers = workers
        self.gpus_per_worker = gpus_per_worker
        self.threads_per_worker = threads_per_worker
        self.max_retries = max_retries
        self.in_flight = in_flight
        self._given = _worker_memory(worker_memory, workers)
        self._plan = InProcess()
        self._crash_flag = os.environ.get(CRASH_ENV) or None
        self._actor_class = ray.remote(Worker).options(
            num_cpus=threads_per_worker, num_gpus=gpus_per_worker, max_restarts=0
        )
        self._actors: list[Any] = [self._new_actor(slot) for slot in range(workers)]
        #: how many workers died and were replaced (for tests and progress reports)
        self.replaced = 0
        #: (worker slot, item rows) of every chunk the last :meth:`map_sized` sent, in the
        #: order sent (a retried chunk again)
        self.sent: list[tuple[int, slice]] = []

    def _new_actor(self, slot: int) -> Any:
        return self._actor_class.remote(
            self.threads_per_worker, self._crash_flag, self._given[slot]
        )

    # -- chunk planning: exactly InProcess' --------------------------------------------------
    def budget(
        self,
        device: torch.device | None,
        *,
        fraction: float = 0.25,
        max_memory: int | None = None,
    ) -> int:
        return self._plan.budget(device, fraction=fraction, max_memory=max_memory)

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
        return self._plan.chunk_size(
            n_items,
            bytes_per_item,
            device=device,
            fraction=fraction,
            max_memory=max_memory,
            tokens_per_item=tokens_per_item,
            limit=limit,
        )

    def chunks(self, n_items: int, size: int) -> list[slice]:
        return self._plan.chunks(n_items, size)

    # -- running -----------------------------------------------------------------------------
    def map(self, fn: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
        """In this process (a closure cannot be sent by name): methods not ported to
        :meth:`map_model` run as they do in process."""
        return self._plan.map(fn, items)

    def map_model(
        self,
        model: Any,
        fn: Callable[..., R],
        items: Iterable[T],
        *args: Any,
        tick: Callable[[], None] | None = None,
    ) -> Iterator[R]:
        work = list(items)
        if not work:
            return iter(())
        return self._run(self._spec(model), target_name(fn), work, args, tick)

    def _spec(self, model: Any) -> ModelSpec | None:
        """``model``'s spec (``None`` for work that needs no model), checked against the
        workers' GPUs."""
        if model is None:  # work that needs no model (the neuron bootstrap's unit blocks)
            return None
        spec = model_spec(model)
        if (spec.device == "cuda") != bool(self.gpus_per_worker):
            raise validate.fail(
                "gpus_per_worker",
                self.gpus_per_worker,
                f"must be more than 0 exactly when the model is on a GPU (it is on {spec.device})",
                "give GPU models GPUs per worker, and CPU models none",
            )
        return spec

    def map_sized(
        self,
        model: Any,
        fn: Callable[..., R],
        data: Sequence[Any],
        sizing: Sizing,
        *args: Any,
        tick: Callable[[], None] | None = None,
    ) -> Iterator[tuple[slice, R]]:
        """As in process, but each chunk holds as many items as fit the memory of the worker
        it is sent to (:meth:`Worker.memory`, asked once per call): a worker with more memory
        takes larger chunks. ``fn`` computes each item on its own, so the numbers are the
        in-process ones; the chunks come back in item order."""
        self.sent = []
        if not len(data):
            return iter(())
        spec = self._spec(model)
        target = target_name(fn)
        device = "cpu" if spec is None else spec.device
        actors = list(self._actors)
        memory = self._ray.get([a.memory.remote(spec) for a in actors])

        def rows(slot: int) -> int:
            if self._actors[slot] is not actors[slot]:  # replaced: ask the new worker
                actors[slot] = self._actors[slot]
                memory[slot] = self._ray.get(actors[slot].memory.remote(spec))
            return sizing.rows(int(memory[slot]), device, len(data))

        return self._run_sized(spec, target, data, rows, args, tick)

    def _run(
        self,
        spec: ModelSpec | None,
        target: str,
        work: list[Any],
        args: tuple[Any, ...],
        tick: Callable[[], None] | None,
    ) -> Iterator[Any]:
        ray = self._ray
        args_ref = ray.put(args)
        pending = collections.deque(range(len(work)))
        tries: dict[int, int] = {}
        avoid: dict[int, int] = {}  # chunk -> the slot whose worker died running it
        running: dict[Any, tuple[int, int, Any]] = {}  # ref -> (chunk, slot, actor)
        done: dict[int, tuple[Any, int]] = {}
        next_out = 0
        try:
            while next_out < len(work):
                self._submit(pending, running, avoid, spec, target, work, args_ref)
                ready, _ = ray.wait(list(running), num_returns=1)
                for ref in ready:
                    i, slot, actor = running.pop(ref)
                    got = self._outcome(ref, f"chunk {i} of {len(work)}", tries, i, slot, actor)
                    if got is None:  # its worker died: again, elsewhere where possible
                        avoid[i] = slot
                        pending.appendleft(i)
                    else:
                        done[i] = got
                while next_out in done:
                    out, ticks = done.pop(next_out)
                    if tick is not None:
                        for _ in range(ticks):
                            tick()
                    next_out += 1
                    yield out
        finally:
            for ref in running:
                ray.cancel(ref, force=False)

    def _outcome(
        self, ref: Any, what: str, tries: dict[int, int], key: int, slot: int, actor: Any
    ) -> tuple[Any, int] | None:
        """A finished chunk's (result, ticks), or ``None`` when its worker died (the worker is
        replaced; a :class:`WorkerError` after ``max_retries`` losses). An error of the
        method's own code is raised as itself."""
        from ray.exceptions import RayActorError, RayTaskError

        try:
            out: tuple[Any, int] = self._ray.get(ref)
        except RayActorError as e:
            tries[key] = tries.get(key, 0) + 1
            if tries[key] > self.max_retries:
                raise WorkerError(
                    f"{what} lost its worker {tries[key]} times "
                    f"(max_retries={self.max_retries}): {e}"
                ) from e
            if self._actors[slot] is actor:
                self._replace(slot)
            return None
        except RayTaskError as e:
            cause = getattr(e, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise
        return out

    def _run_sized(
        self,
        spec: ModelSpec | None,
        target: str,
        data: Sequence[Any],
        rows: Callable[[int], int],
        args: tuple[Any, ...],
        tick: Callable[[], None] | None,
    ) -> Iterator[tuple[slice, Any]]:
        """:meth:`_run` for :meth:`map_sized`: the items not yet sent are one range that each
        free worker cuts its next chunk from (``rows(slot)`` items); a chunk whose worker died
        goes back to the front of the queue, to be cut again by the worker that takes it."""
        ray = self._ray
        args_ref = ray.put(args)
        n = len(data)
        pending: collections.deque[tuple[int, int]] = collections.deque([(0, n)])
        tries: dict[int, int] = {}
        avoid: dict[int, int] = {}  # chunk start -> the slot whose worker died running it
        running: dict[Any, tuple[int, int, int, Any]] = {}  # ref -> (start, stop, slot, actor)
        done: dict[int, tuple[int, Any, int]] = {}
        next_out = 0
        try:
            while next_out < n:
                load = [0] * len(self._actors)
                for *_, slot, actor in running.values():
                    load[slot] += self._actors[slot] is actor
                while pending:
                    a, b = pending[0]
                    slots = [s for s in range(len(load)) if s != avoid.get(a)] or list(
                        range(len(load))
                    )
                    slot = min(slots, key=load.__getitem__)
                    if load[slot] >= self.in_flight:
                        break
                    stop = min(b, a + rows(slot))
                    if stop < b:
                        pending[0] = (stop, b)
                    else:
                        pending.popleft()
                    actor = self._actors[slot]
                    ref = actor.run.remote(spec, target, data[a:stop], args_ref)
                    running[ref] = (a, stop, slot, actor)
                    self.sent.append((slot, slice(a, stop)))
                    load[slot] += 1
                ready, _ = ray.wait(list(running), num_returns=1)
                for ref in ready:
                    a, stop, slot, actor = running.pop(ref)
                    got = self._outcome(ref, f"items {a}:{stop} of {n}", tries, a, slot, actor)
                    if got is None:  # its worker died: again, elsewhere where possible
                        avoid[a] = slot
                        pending.appendleft((a, stop))
                    else:
                        done[a] = (stop, *got)
                while next_out in done:
                    stop, out, ticks = done.pop(next_out)
                    if tick is not None:
                        for _ in range(ticks):
                            tick()
                    yield slice(next_out, stop), out
                    next_out = stop
        finally:
            for ref in running:
                ray.cancel(ref, force=False)

    def _submit(
        self,
        pending: collections.deque[int],
        running: dict[Any, tuple[int, int, Any]],
        avoid: dict[int, int],
        spec: ModelSpec | None,
        target: str,
        work: list[Any],
        args_ref: Any,
    ) -> None:
        """Queue pending chunks on the least busy workers (never back on a slot whose worker
        died running that chunk, where there is another), up to ``in_flight`` each."""
        load = [0] * len(self._actors)
        for _, slot, actor in running.values():
            if self._actors[slot] is actor:
                load[slot] += 1
        while pending:
            i = pending[0]
            slots = [s for s in range(len(load)) if s != avoid.get(i)] or list(range(len(load)))
            slot = min(slots, key=load.__getitem__)
            if load[slot] >= self.in_flight:
                return
            pending.popleft()
            actor = self._actors[slot]
            running[actor.run.remote(spec, target, work[i], args_ref)] = (i, slot, actor)
            load[slot] += 1

    def _replace(self, slot: int) -> None:
        self._ray.kill(self._actors[slot], no_restart=True)
        self._actors[slot] = self._new_actor(slot)
        self.replaced += 1

    def worker_pids(self) -> list[int]:
        """The process id of every worker (starts them if they are not yet running)."""
        return [int(p) for p in self._ray.get([a.pid.remote() for a in self._actors])]

    def close(self) -> None:
        """Stop the workers, and the local cluster if this executor started it."""
        for actor in self._actors:
            self._ray.kill(actor, no_restart=True)
        self._actors = []
        if self._owns_cluster:
            self._ray.shutdown()
            self._owns_cluster = False


def _worker_memory(given: int | Sequence[int] | None, workers: int | None) -> list[int | None]:
    """``worker_memory`` per worker slot (``None``: the worker reports its own); a list needs
    ``workers`` (``None``: not known yet, only checked)."""
    n = 1 if workers is None else workers
    if given is None:
        return [None] * n
    fix = "give bytes (an int > 0) for every worker, or a list with one per worker and workers=N"
    if isinstance(given, int) and not isinstance(given, bool):
        return [validate.positive_int("worker_memory", given, fix=fix)] * n
    if isinstance(given, (str, bytes)) or not isinstance(given, Sequence) or len(given) != n:
        raise validate.fail("worker_memory", given, f"must be an int or {workers} ints", fix)
    return [validate.positive_int("worker_memory", m, fix=fix) for m in given]


EXECUTORS["ray"] = RayExecutor

__all__ = [
    "CRASH_ENV",
    "ModelSpec",
    "RayExecutor",
    "Worker",
    "WorkerError",
    "load_checked",
    "model_spec",
    "resolve",
    "target_name",
]
