"""What the edge scorers share: a killed scorer resumes from its checkpoint folder
(``score_edges(checkpoint=)`` through :func:`faithlens.circuits.common.measure_chunks`)."""

from __future__ import annotations

import numpy as np
import pytest

import faithlens as fl
from faithlens.circuits import common
from faithlens.errors import ArgumentError, CheckpointError
from faithlens.tasks.induction import induction_task

FIELDS = ("values", "clean", "corrupt", "score", "score_se", "score_ci_low", "score_ci_high")
KW = {"n_boot": 50, "max_memory": 1 << 21}  # several chunks of examples


def test_killed_scorer_resumes_from_its_finished_chunks(tmp_path, monkeypatch):
    """Exact edge patching killed on its fourth chunk and started again with the same folder
    runs only the chunks it had not finished: same scores, same progress calls."""
    m = fl.load("zoo:induction")
    task = induction_task(8, seed=0)
    ticks: list[list[tuple[int, int]]] = [[], []]
    ref = fl.circuits.exact(m, task, progress=lambda d, t: ticks[0].append((d, t)), **KW)
    real = common.run_chunk
    calls: list[int] = []
    kill = True

    def counted(model, sub, *args):
        calls.append(1)
        if len(calls) == 4 and kill:
            raise KeyboardInterrupt
        return real(model, sub, *args)

    monkeypatch.setattr(common, "run_chunk", counted)
    folder = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        fl.circuits.exact(m, task, checkpoint=folder, **KW)
    assert len(list(folder.glob("chunk_*.npz"))) == 3
    calls.clear()
    kill = False
    got = fl.circuits.exact(
        m, task, checkpoint=folder, progress=lambda d, t: ticks[1].append((d, t)), **KW
    )
    n_chunks = len(list(folder.glob("chunk_*.npz")))
    assert n_chunks > 4 and len(calls) == n_chunks - 3
    assert got.edge == ref.edge
    for f in FIELDS:
        assert np.array_equal(getattr(ref, f), getattr(got, f), equal_nan=True), f
    assert ticks[0] == ticks[1]
    # another scorer or metric is another run; a bad path is refused
    with pytest.raises(CheckpointError, match="belongs to another run"):
        fl.circuits.eap(m, task, checkpoint=folder, **KW)
    with pytest.raises(CheckpointError, match="belongs to another run"):
        fl.circuits.exact(m, task, metric="logprob", checkpoint=folder, **KW)
    with pytest.raises(ArgumentError, match="checkpoint=3: must be a folder path"):
        fl.circuits.exact(m, task, checkpoint=3, **KW)
    # a subset of the edges is another run; its own folder resumes to the same rows
    some = ref.edge[::7]
    with pytest.raises(CheckpointError, match="belongs to another run"):
        fl.circuits.exact(m, task, checkpoint=folder, edges=some, **KW)
    sub = fl.circuits.exact(m, task, checkpoint=tmp_path / "sub", edges=some, **KW)
    again = fl.circuits.exact(m, task, checkpoint=tmp_path / "sub", edges=some, **KW)
    rows = [ref.edge.index(e) for e in some]
    assert sub.edge == again.edge == some
    assert np.array_equal(sub.values, again.values) and np.allclose(
        sub.values, ref.values[rows], atol=1e-5
    )
