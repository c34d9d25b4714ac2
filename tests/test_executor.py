"""The executor seam plans exactly the chunks the methods planned before it existed.

Each ``old_*`` function below is the chunk-size formula a method had inlined (patching/exact.py,
patching/path.py, scrubbing/evaluate.py, neurons/kernels.py), copied verbatim; the executor must
give the same size for every size and budget in the table (bit-identical results depend on it).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from faithlens import _memory
from faithlens.errors import InputError
from faithlens.executor import (
    EXECUTORS,
    Executor,
    InProcess,
    Sizing,
    current_executor,
    executor,
)

DEVICES = ["cpu", "cuda"]
BUDGETS = [None, "64M", "1G", "3G", "40G"]  # FAITHLENS_MEMORY (None: the default per device)
ITEMS = [1, 2, 7, 24, 256, 5000]
BYTES = [0, 1, 3_000, 123_457, 10_000_000, 3 << 30]
TOKENS = [1, 6, 64, 1000, 9000]
LIMITS = [None, 1, 7, 100]


@pytest.fixture(params=list(itertools.product(DEVICES, BUDGETS)), ids=str)
def budget(request, monkeypatch):
    device, env = request.param
    monkeypatch.setattr(_memory, "available_bytes", lambda d: 1 << 50)
    if env is None:
        monkeypatch.delenv("FAITHLENS_MEMORY", raising=False)
    else:
        monkeypatch.setenv("FAITHLENS_MEMORY", env)
    return torch.device(device)


# ---- the formulas as they were inlined ----------------------------------------------------


def old_patch_examples(n, per_example, device):
    return max(1, min(n, _memory.budget_bytes(device) // max(1, per_example)))


def old_rows_per_pass(row_bytes, device, seq, max_rows):
    return _memory.rows_that_fit(row_bytes, device, tokens_per_row=seq, limit=max_rows)


def old_scrub_rows(n, per_row, device, seq):
    return min(n, _memory.rows_that_fit(per_row, device, tokens_per_row=seq))


def old_neurons_budget(device, max_memory):
    if max_memory is not None:
        return int(max_memory)
    return _memory.budget_bytes(device, 0.5 if device.type == "cuda" else 0.25)


def old_neurons_blocks(budget, u, per_u_store, per_bu):
    units = max(1, min(u, int(budget // 2 // max(per_u_store, 1))))
    chunk_b = max(1, int(budget // 2 // max(per_bu * units, 1)))
    return units, chunk_b


def old_slices(n, size):
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]


# ---- the table ------------------------------------------------------------------------------


def test_patch_examples_per_chunk(budget):
    ex = InProcess()
    for n, b in itertools.product(ITEMS, BYTES):
        assert ex.chunk_size(n, b, device=budget) == old_patch_examples(n, b, budget), (n, b)


def test_rows_per_forward_pass(budget):
    ex = InProcess()
    for b, seq, lim in itertools.product(BYTES, TOKENS, LIMITS):
        got = ex.chunk_size(None, b, device=budget, tokens_per_item=seq, limit=lim)
        assert got == old_rows_per_pass(b, budget, seq, lim), (b, seq, lim)


def test_scrub_rows_per_chunk(budget):
    ex = InProcess()
    for n, b, seq in itertools.product(ITEMS, BYTES, TOKENS):
        got = ex.chunk_size(n, b, device=budget, tokens_per_item=seq)
        assert got == old_scrub_rows(n, b, budget, seq), (n, b, seq)


@pytest.mark.parametrize("max_memory", [None, 1, 20_000, 60_000, 10**9])
def test_neurons_budget_and_blocks(budget, max_memory):
    ex = InProcess()
    frac = 0.5 if budget.type == "cuda" else 0.25
    b = ex.budget(budget, fraction=frac, max_memory=max_memory)
    assert b == old_neurons_budget(budget, max_memory)
    for u, store, per_bu in itertools.product([1, 3, 500], [0, 7, 40_000, 10**7], [0, 9, 10**5]):
        units = ex.chunk_size(u, store, max_memory=b // 2)
        chunk_b = ex.chunk_size(None, per_bu * units, max_memory=b // 2)
        assert (units, chunk_b) == old_neurons_blocks(b, u, store, per_bu), (u, store, per_bu)


def test_chunks_are_the_old_slices():
    ex = InProcess()
    for n, size in itertools.product([0, 1, 5, 24, 100], [1, 2, 7, 24, 1000]):
        assert ex.chunks(n, size) == old_slices(n, size)
    with pytest.raises(InputError):
        ex.chunks(5, 0)


def test_the_methods_ask_the_executor():
    """The chunking call sites read their sizes from the current executor."""
    import faithlens as fl
    from faithlens.neurons import kernels as neurons_kernels
    from faithlens.tasks.induction import induction_task

    calls: list[str] = []

    class Spy(InProcess):
        name = "spy"

        def budget(self, device, *, fraction=0.25, max_memory=None):
            calls.append("budget")
            return super().budget(device, fraction=fraction, max_memory=max_memory)

        def chunk_size(self, n_items, bytes_per_item, **kw):
            calls.append("chunk_size")
            return super().chunk_size(n_items, bytes_per_item, **kw)

    spy = Spy()
    with executor(spy):
        assert current_executor() is spy
        neurons_kernels.memory_budget(torch.device("cpu"), 123)
        assert calls == ["budget"]
        m = fl.load("zoo:induction")
        task = induction_task(n=4, seed=0)
        fl.patch(m, task, "head", n_boot=10)
        assert calls.count("chunk_size") == 2  # examples per chunk, rows per pass
        fl.path_patch(m, task, "head", "logits", n_boot=10)
        assert calls.count("chunk_size") == 3
    assert current_executor().name == "inprocess"


def test_executor_choice():
    assert isinstance(current_executor(), InProcess)
    assert isinstance(current_executor(), Executor)
    with executor("inprocess") as ex:
        assert current_executor() is ex
        assert list(ex.map(lambda x: x * 2, [1, 2, 3])) == [2, 4, 6]
    from faithlens.errors import ArgumentError

    with pytest.raises(ArgumentError, match=r"executor='dask'.*use one of"), executor("dask"):
        pass
    with pytest.raises(ArgumentError, match="takes no options"), executor("inprocess", workers=2):
        pass
    with pytest.raises(ArgumentError, match="already built"), executor(InProcess(), workers=2):
        pass
    assert "ray" in EXECUTORS  # registered by faithlens.distributed when faithlens is imported


def test_map_model_in_process():
    """``map_model`` calls ``fn(model, item, *args, tick)`` in order; ticks reach the caller."""
    ticks = []

    def fn(model, item, scale, tick):
        tick()
        return model + item * scale

    out = InProcess().map_model(10, fn, [1, 2, 3], 100, tick=lambda: ticks.append(1))
    assert list(out) == [110, 210, 310] and len(ticks) == 3
    assert list(InProcess().map_model(0, fn, [4], 1)) == [4]  # no tick given: a no-op


def test_map_sized_in_process_follows_the_budget():
    """``map_sized`` cuts the items into the chunks ``chunk_size`` plans for ``sizing`` and
    yields each chunk's rows with ``fn(model, data[rows], *args, tick)``, in order."""
    ticks = []

    def fn(model, part, scale, tick):
        tick()
        return [model + x * scale for x in part]

    sizing = Sizing(bytes_per_item=10, max_memory=25)  # two items per chunk
    out = list(
        InProcess().map_sized(1, fn, [1, 2, 3, 4, 5], sizing, 10, tick=lambda: ticks.append(1))
    )
    assert [r for r, _ in out] == [slice(0, 2), slice(2, 4), slice(4, 5)]
    assert [v for _, vs in out for v in vs] == [11, 21, 31, 41, 51] and len(ticks) == 3
    assert list(InProcess().map_sized(1, fn, [], sizing, 10)) == []


def test_map_sized_does_not_warn_when_the_budget_shrinks(monkeypatch):
    """A budget above the free memory shrinks (a MemoryBudgetWarning elsewhere, since batched
    numbers would change); item-by-item work gives the same numbers, so it does not warn."""
    import warnings

    monkeypatch.setattr(_memory, "available_bytes", lambda d: 100 << 20)
    monkeypatch.setenv("FAITHLENS_MEMORY", "8G")
    cpu = torch.device("cpu")
    with pytest.warns(_memory.MemoryBudgetWarning):
        InProcess().chunk_size(10, 1 << 20, device=cpu)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = list(InProcess().map_sized(None, _halves, list(range(200)), Sizing(1 << 20, cpu)))
    # the shrunk budget: max(64 MB, half the free memory) = 64 items of 1 MB
    assert [r for r, _ in out] == [slice(0, 64), slice(64, 128), slice(128, 192), slice(192, 200)]
    assert [v for _, vs in out for v in vs] == [i / 2 for i in range(200)]


def _halves(model, part, tick):
    return [x / 2 for x in part]


def test_a_worker_with_the_budget_gets_the_in_process_chunks(budget):
    """``Sizing.rows`` (a worker's chunk from its own memory) is ``chunk_size``'s rule: a
    worker that reports the configured budget gets the in-process chunk sizes; one with more
    memory larger chunks, one with less smaller ones."""
    mem = _memory.configured_bytes(budget)
    if int(mem * 0.25) < 64 << 20:  # the in-process budget's floor binds: not comparable
        return
    plan = InProcess()
    for n, b, tok, lim in itertools.product(ITEMS, BYTES, [None, *TOKENS], LIMITS):
        sizing = Sizing(b, device=budget, tokens_per_item=tok, limit=lim)
        want = plan.chunk_size(n, b, device=budget, tokens_per_item=tok, limit=lim)
        assert sizing.rows(mem, budget.type, n) == want, (n, b, tok, lim)
    sizing = Sizing(1000)
    assert sizing.rows(4000 * 8, "cuda", 100) == 8 and sizing.rows(4000 * 2, "cuda", 100) == 2
    assert sizing.rows(1, "cpu", 100) == 1 and sizing.rows(1 << 40, "cuda", 100) == 100
    assert Sizing(1000, max_memory=3000).rows(1 << 40, "cuda", 100) == 3  # max_memory wins


def test_executor_closes_what_it_built(monkeypatch):
    closed = []

    class Closing(InProcess):
        name = "closing"

        def __init__(self, **options):
            self.options = options

        def close(self):
            closed.append(self.options)

    monkeypatch.setitem(EXECUTORS, "closing", Closing)
    with executor("closing", workers=3) as ex:
        assert current_executor() is ex and not closed
    assert closed == [{"workers": 3}]
    mine = Closing()
    with executor(mine):
        pass
    assert closed == [{"workers": 3}]  # an executor passed in is the caller's to close


def test_executor_argument_of_a_method():
    """``executor=`` runs one call on that executor (the one in force is unchanged after it);
    a bad one is refused before any work, naming the argument."""
    import faithlens as fl
    from faithlens.errors import ArgumentError
    from faithlens.tasks.induction import induction_task

    seen: list[Executor] = []

    class Spy(InProcess):
        def map_model(self, model, fn, items, *args, tick=None):
            seen.append(self)
            return super().map_model(model, fn, items, *args, tick=tick)

    m = fl.load("zoo:induction")
    task = induction_task(6, seed=0)
    ref = fl.attribution_patch(m, task, n_boot=20)
    spy = Spy()
    got = fl.attribution_patch(m, task, n_boot=20, executor=spy)
    assert seen == [spy] and isinstance(current_executor(), InProcess)
    assert np.array_equal(ref.effect, got.effect)
    fl.circuits.exact(m, task, n_boot=20, executor=spy)
    assert seen[-1] is spy and len(seen) == 2
    assert np.array_equal(fl.patch(m, task, executor="inprocess").effect, fl.patch(m, task).effect)
    with pytest.raises(ArgumentError, match=r"executor='dask'.*use one of"):
        fl.patch(m, task, executor="dask")
