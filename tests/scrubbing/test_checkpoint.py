"""Resumable scrubbing (faithlens.scrubbing.checkpoint): a scrub with ``checkpoint=`` keeps its
finished chunks of reference rows, a killed run resumes from them with the same result, and a
folder of another run (other weights, hypothesis or chunk plan) is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import faithlens as fl
from faithlens import scrubbing as sc
from faithlens.errors import CheckpointError
from faithlens.graph import EvalStats
from faithlens.scrubbing import preparation
from faithlens.scrubbing.checkpoint import ScrubCheckpoint


class TwoBranches(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(1, 2, 3, padding=1)
        self.b = nn.Conv2d(1, 2, 3, padding=1)
        self.head = nn.Linear(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head((self.a(x[:, :1]) + self.b(x[:, 1:])).mean((2, 3)))


def _setup():
    g = torch.Generator().manual_seed(0)
    label = torch.arange(48) % 2
    x = torch.randn(48, 2, 6, 6, generator=g)
    x[:, 0] = (2 * label - 1).float()[:, None, None]
    task = fl.Task.from_tensors(
        x, torch.randn(48, 2, 6, 6, generator=g), labels=label, metric="loss"
    )
    m = fl.wrap(TwoBranches().eval(), sites={"a": "a", "b": "b"}, example=x[:1])
    h = sc.Hypothesis("a carries the label")
    h.add("a", sc.to("a"), feature=sc.field("label"))
    return m, task, h


def _count(monkeypatch, fail_after=None):
    real, calls = preparation.rows_chunk, [0]

    def chunk(*args):
        calls[0] += 1
        if fail_after is not None and calls[0] > fail_after:
            raise RuntimeError("killed")
        return real(*args)

    monkeypatch.setattr(preparation, "rows_chunk", chunk)
    return calls


def test_a_killed_scrub_resumes_with_the_same_result(tmp_path, monkeypatch):
    m, task, h = _setup()
    kw = {"n": 40, "batch_size": 8, "n_boot": 100}
    whole = sc.scrub(m, task, h, **kw)
    ck = tmp_path / "ck"
    with monkeypatch.context() as mp:
        _count(mp, fail_after=3)
        with pytest.raises(RuntimeError, match="killed"):
            sc.scrub(m, task, h, checkpoint=ck, **kw)
    assert len(list(ck.glob("chunk_*.npz"))) == 3
    with monkeypatch.context() as mp:
        calls = _count(mp)
        resumed = sc.scrub(m, task, h, checkpoint=ck, **kw)
    assert calls[0] == 2  # five chunks, three read back
    for f in ("scrubbed", "original", "baseline_values", "kl"):
        assert np.array_equal(getattr(whole, f), getattr(resumed, f)), f
    assert whole.to_frame().equals(resumed.to_frame()) and whole.stats == resumed.stats


def test_a_folder_of_another_run_is_refused(tmp_path):
    m, task, h = _setup()
    ck = tmp_path / "ck"
    sc.scrub(m, task, h, n=40, batch_size=8, n_boot=50, checkpoint=ck)
    with pytest.raises(CheckpointError, match="another scrub"):
        sc.scrub(m, task, h, n=40, batch_size=10, n_boot=50, checkpoint=ck)  # other chunks
    other = sc.Hypothesis("b carries the label")
    other.add("b", sc.to("b"), feature=sc.field("label"))
    with pytest.raises(CheckpointError, match="another scrub"):
        sc.scrub(m, task, other, n=40, batch_size=8, n_boot=50, checkpoint=ck)
    with torch.no_grad():
        m.module.head.bias.add_(1.0)
    with pytest.raises(CheckpointError, match="another scrub"):
        sc.scrub(m, task, h, n=40, batch_size=8, n_boot=50, checkpoint=ck)
    with pytest.raises(fl.errors.ArgumentError, match="checkpoint"):
        sc.scrub(m, task, h, n=40, checkpoint=3)  # type: ignore[arg-type]


def _first(out, ref):
    return out[:, 0]


def _second(out, ref):
    return out[:, 1] * 100


def test_another_behaviour_is_refused_and_the_same_one_resumes(tmp_path):
    """The key covers the behaviour's fields and a function's code, not only its name: a scrub
    with another ``Fn(fn=...)`` (both named "custom") must not read this one's chunks."""
    m, task, h = _setup()
    ck = tmp_path / "ck"
    kw = {"n": 40, "batch_size": 8, "n_boot": 50, "checkpoint": ck}
    first = sc.scrub(m, task, h, behaviour=sc.Fn(fn=_first), **kw)
    with pytest.raises(CheckpointError, match="another scrub"):
        sc.scrub(m, task, h, behaviour=sc.Fn(fn=_second), **kw)
    with pytest.raises(CheckpointError, match="another scrub"):
        sc.scrub(m, task, h, behaviour=sc.Fn(fn=_first, higher_is_better=True), **kw)
    with pytest.raises(CheckpointError, match="another scrub"):  # the same body, another name
        sc.scrub(m, task, h, behaviour=sc.Fn(fn=lambda out, ref: out[:, 0]), **kw)
    same = sc.scrub(m, task, h, behaviour=sc.Fn(fn=_first), **kw)
    assert np.array_equal(first.scrubbed, same.scrubbed)


def test_function_keys_follow_the_code():
    from faithlens.scrubbing.checkpoint import function_key

    def make(k):
        return lambda out, ref: out[:, 0] * k

    assert function_key(_first) == function_key(_first)
    assert function_key(_first) != function_key(_second)
    assert function_key(make(1)) != function_key(make(2))  # closure values count
    assert function_key(make(2)) == function_key(make(2))
    tok = object()  # a closure over something unhashable still keys, by its type

    def reads(out, ref):
        return out[:, 0] if tok else out[:, 1]

    assert function_key(reads) == function_key(reads)


def test_a_chunk_round_trips_with_and_without_kl(tmp_path):
    store = ScrubCheckpoint(tmp_path, "key")
    st = EvalStats(runs=3, rows=12, layer_rows=24, clean_runs=1, mixed_copies=2)
    store.save_chunk(0, ([np.arange(3.0), np.ones(3)], None, st))
    store.save_chunk(1, ([np.zeros(2)], np.array([0.5, 0.25]), EvalStats()))
    vals, kl, got = store.load_chunk(0)
    assert kl is None and got == st and np.array_equal(vals[0], np.arange(3.0))
    vals, kl, got = store.load_chunk(1)
    assert len(vals) == 1 and np.array_equal(kl, [0.5, 0.25]) and got == EvalStats()
    assert store.load_chunk(2) is None
