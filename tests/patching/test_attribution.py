"""Attribution patching in chunks of examples: the memory budget splits the examples, the
chunks' estimates agree with one pass over all of them, and a killed run resumes from its
checkpoint folder. (Its agreement with the plain-PyTorch reference is in test_exact.py.)"""

from __future__ import annotations

import numpy as np
import pytest

import faithlens as fl
from faithlens.errors import ArgumentError, CheckpointError
from faithlens.patching import attribution
from faithlens.tasks.induction import induction_task

FIELDS = ("effect", "se", "ci_low", "ci_high", "patched", "base", "source")
KW = {"n_boot": 50, "max_memory": 1 << 20}  # 1 MB: several chunks of examples


def test_chunks_agree_with_one_pass_and_count_progress():
    m = fl.load("zoo:induction")
    task = induction_task(16, seed=0)
    whole = fl.attribution_patch(m, task, "head", n_boot=50)
    ticks: list[tuple[int, int]] = []
    parts = fl.attribution_patch(m, task, "head", progress=lambda d, t: ticks.append((d, t)), **KW)
    n = len(ticks)
    assert n > 2 and ticks == [(i, n) for i in range(1, n + 1)]
    # other batch shapes: float32 rounding only
    np.testing.assert_allclose(parts.patched, whole.patched, atol=1e-4, rtol=0)
    np.testing.assert_allclose(parts.base, whole.base, atol=1e-4, rtol=0)
    assert np.abs(whole.patched - whole.base).max() > 1e-2  # the comparison can fail
    with pytest.raises(ArgumentError, match="max_memory"):
        fl.attribution_patch(m, task, "head", max_memory=0)


def test_killed_run_resumes_from_its_finished_chunks(tmp_path, monkeypatch):
    """A run killed on its fourth chunk and started again with the same folder runs only the
    chunks it had not finished, with the uninterrupted result and progress calls."""
    m = fl.load("zoo:induction")
    task = induction_task(16, seed=0)
    ticks: list[list[tuple[int, int]]] = [[], []]
    ref = fl.attribution_patch(m, task, "head", progress=lambda d, t: ticks[0].append((d, t)), **KW)
    real = attribution._run_chunk
    calls: list[int] = []
    kill = True

    def counted(model, sub, *args):
        calls.append(1)
        if len(calls) == 4 and kill:
            raise KeyboardInterrupt
        return real(model, sub, *args)

    monkeypatch.setattr(attribution, "_run_chunk", counted)
    folder = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        fl.attribution_patch(m, task, "head", checkpoint=folder, **KW)
    assert len(list(folder.glob("chunk_*.npz"))) == 3
    calls.clear()
    kill = False
    got = fl.attribution_patch(
        m, task, "head", checkpoint=folder, progress=lambda d, t: ticks[1].append((d, t)), **KW
    )
    n_chunks = len(list(folder.glob("chunk_*.npz")))
    assert n_chunks == len(ticks[0]) and len(calls) == n_chunks - 3
    for f in FIELDS:
        assert np.array_equal(getattr(ref, f), getattr(got, f), equal_nan=True), f
    assert ticks[0] == ticks[1]
    with pytest.raises(CheckpointError, match="belongs to another run"):
        fl.attribution_patch(m, task, "head", positions="last", checkpoint=folder, **KW)
    with pytest.raises(ArgumentError, match="checkpoint=3: must be a folder path"):
        fl.attribution_patch(m, task, "head", checkpoint=3, **KW)
