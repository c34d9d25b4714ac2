"""DAS trainings: one training per (site, seed) through the executor, each the plain ``fl.das``
result; a killed sweep resumes from its trainings' checkpoints."""

from __future__ import annotations

import numpy as np
import pytest

import faithlens as fl
from faithlens.das import trainings as S
from faithlens.errors import ArgumentError
from faithlens.tasks.induction import induction_task
from faithlens.tasks.interchange import InterchangeData
from tests.helpers.das_compare import same_das

OPTIONS = {"dims": 2, "epochs": 4, "eval_every": 2, "checkpoint_every": 2}
SITES = ["resid_pre.1", "attn_out.0"]


@pytest.fixture(scope="module")
def case():
    m = fl.load("zoo:induction")
    data = InterchangeData.from_task(induction_task(8, seed=0))
    return m, data


def test_sweep_is_one_das_per_site_and_seed(case):
    m, data = case
    ticks: list[tuple[int, int]] = []
    got = S.das_trainings(
        m, data, SITES, seeds=[0, 1], progress=lambda d, t: ticks.append((d, t)), **OPTIONS
    )
    assert [(r.site, r.seed) for r in got] == [(s, k) for s in SITES for k in (0, 1)]
    assert ticks == [(i, 4) for i in range(1, 5)]
    for r in got:
        same_das(r, fl.das(m, data, r.site, seed=r.seed, **OPTIONS))
    assert not np.array_equal(got[0].alignment_params, got[1].alignment_params)  # seeds differ


def test_killed_sweep_resumes_from_its_checkpoints(case, tmp_path, monkeypatch):
    m, data = case
    ref = S.das_trainings(m, data, SITES, **OPTIONS)
    real = S.das
    calls: list[str] = []

    def killed_on_the_second(*args, **kw):
        calls.append(kw["checkpoint_dir"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(S, "das", killed_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        S.das_trainings(m, data, SITES, checkpoint=tmp_path / "ck", **OPTIONS)
    monkeypatch.setattr(S, "das", real)
    assert (tmp_path / "ck" / "000" / "das_checkpoint.pt").exists()
    assert not (tmp_path / "ck" / "001").exists()
    got = S.das_trainings(m, data, SITES, checkpoint=tmp_path / "ck", **OPTIONS)
    for a, b in zip(ref, got):
        same_das(a, b)


def test_bad_sweeps_are_refused_before_any_training(case):
    m, data = case
    with pytest.raises(ArgumentError, match=r"sites='resid_pre\.1': must be a non-empty list"):
        S.das_trainings(m, data, "resid_pre.1")
    with pytest.raises(ArgumentError, match=r"seeds=.*non-empty list"):
        S.das_trainings(m, data, SITES, seeds=[])
    with pytest.raises(ArgumentError, match="set by the sweep per training"):
        S.das_trainings(m, data, SITES, seed=3)
    with pytest.raises(ArgumentError, match="checkpoint=3: must be a folder path"):
        S.das_trainings(m, data, SITES, checkpoint=3)
