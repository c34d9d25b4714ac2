"""Same seed, same bytes: results do not depend on PYTHONHASHSEED or on the free memory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import faithlens as fl
from faithlens import _memory
from faithlens.errors import ArgumentError

ROOT = Path(__file__).resolve().parents[2]

# A scrub of zoo:paren whose plan has many data: before the fix, the datum ids (and with them
# which copy is the base of a mixed input, hence the float32 summation order) followed the
# iteration order of a set of string-keyed tuples, and the losses changed by ~1e-7 with
# PYTHONHASHSEED.
SCRUB = """
import hashlib

import numpy as np

import faithlens as fl
from faithlens.scrubbing.metrics import BinaryCrossEntropy
from faithlens.tasks import paren as par
from faithlens.scrubbing import paren as hz

model = fl.load("zoo:paren")
pool = par.ParenData.sample(200, seed=0)
data = hz.paren_scrub_data(model, pool)
hyps = hz.paren_hypotheses(hz.open_direction(model, pool), n_ctx=pool.n_ctx)
beh = BinaryCrossEntropy("label", positions_column="pos0")
r = fl.scrub(model, data, hyps["claims 1+2"], n=40, behaviour=beh, seed=0, n_boot=50)
parts = [r.scrubbed, r.original, r.baseline_values, r.kl, r.references]
blob = b"".join(np.ascontiguousarray(p).tobytes() for p in parts) + r.table.to_csv().encode()
print(hashlib.sha256(blob).hexdigest())
"""


@pytest.mark.slow
def test_scrub_is_byte_identical_across_hash_seeds():
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    digests = []
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", SCRUB],
            env={**env, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
            timeout=900,
        )
        digests.append(out.stdout.strip().splitlines()[-1])
    assert len(digests[0]) == 64
    assert digests[0] == digests[1]


# ---- chunk sizes: from the configured budget, never from the free memory -------------------


def _free(monkeypatch, nbytes: int) -> None:
    monkeypatch.setattr(_memory, "available_bytes", lambda device: nbytes)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_budget_does_not_follow_free_memory(monkeypatch, device):
    monkeypatch.delenv("FAITHLENS_MEMORY", raising=False)
    dev = torch.device(device)
    got = []
    for free in (64 << 30, 1 << 40):
        _free(monkeypatch, free)
        got.append(
            (
                _memory.budget_bytes(dev),
                _memory.budget_bytes(dev, 0.5),
                _memory.rows_that_fit(10_000, dev, tokens_per_row=8),
            )
        )
    assert got[0] == got[1]
    assert got[0][0] == _memory.DEFAULT_MEMORY[device] // 4


def test_the_budget_is_configurable(monkeypatch):
    _free(monkeypatch, 1 << 40)
    monkeypatch.setenv("FAITHLENS_MEMORY", "2G")
    assert _memory.budget_bytes(torch.device("cpu")) == (2 << 30) // 4
    monkeypatch.setenv("FAITHLENS_MEMORY", "512MiB")
    assert _memory.configured_bytes(torch.device("cpu")) == 512 << 20
    monkeypatch.setenv("FAITHLENS_MEMORY", "lots")
    with pytest.raises(ArgumentError, match="FAITHLENS_MEMORY='lots'"):
        _memory.budget_bytes(torch.device("cpu"))


def test_a_budget_above_the_free_memory_shrinks_with_a_warning(monkeypatch):
    monkeypatch.delenv("FAITHLENS_MEMORY", raising=False)
    _free(monkeypatch, 1 << 30)
    with pytest.warns(_memory.MemoryBudgetWarning, match="FAITHLENS_MEMORY"):
        got = _memory.budget_bytes(torch.device("cpu"))
    assert got == 1 << 29


@pytest.fixture(scope="module")
def induction():
    from faithlens.tasks.induction import induction_task

    return fl.load("zoo:induction"), induction_task(48, seed=0)


def test_patch_is_bit_identical_whatever_the_free_memory(monkeypatch, induction):
    model, task = induction
    monkeypatch.delenv("FAITHLENS_MEMORY", raising=False)
    runs = []
    for free in (48 << 30, 1 << 40):
        _free(monkeypatch, free)
        runs.append(fl.patch(model, task, "head", n_boot=100))
    a, b = runs
    for k in ("patched", "base", "source", "effect", "se", "ci_low", "ci_high"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k))
