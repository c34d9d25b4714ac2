"""A command killed as a whole resumes from its ``--out`` folder (faithlens.cli._resume): the
finished chunks kept in ``.OUT.partial`` beside it are read back, the result is the one of an
uninterrupted run, and the partial folder is gone once the result is saved."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import faithlens as fl
from faithlens.circuits import common
from faithlens.cli import app
from faithlens.cli._resume import RECORD, partial_folder
from faithlens.patching import exact, path
from tests.helpers.scrub_toys import write_hypothesis_file

runner = CliRunner()

PATCH = ["patch", "--model", "zoo:induction", "--task", "induction", "--n", "8", "--n-boot", "20"]
PATCH += ["--max-memory", "1M"]  # several chunks of examples
PATH = ["path-patch", "--receivers", "logits", "--model", "zoo:induction", "--task", "induction"]
PATH += ["--n", "8", "--n-boot", "20", "--max-memory", "512K"]


def _kill_after(monkeypatch, module, name, k):
    """``module.name`` (a chunk's work item) raises from its ``k+1``-th call on: the run dies
    as a whole after ``k`` finished chunks."""
    real = getattr(module, name)
    calls = [0]

    def chunk(*args, **kwargs):
        calls[0] += 1
        if calls[0] > k:
            raise RuntimeError("killed")  # no error handler of the command catches it
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, chunk)
    return calls


def _same(a, b, fields):
    for f in fields:
        x, y = np.asarray(getattr(a, f)), np.asarray(getattr(b, f))
        assert np.array_equal(x, y, equal_nan=True), f


@pytest.mark.parametrize(
    ("args", "module", "name"),
    [
        (PATCH, exact, "_run_chunk"),
        ([*PATCH, "--attribution"], None, None),
        (PATH, path, "_run_chunk"),
    ],
    ids=["patch", "attribution", "path-patch"],
)
def test_killed_command_resumes_from_its_out_folder(tmp_path, monkeypatch, args, module, name):
    if module is None:
        from faithlens.patching import attribution as module

        name = "_run_chunk"
    whole = runner.invoke(app, [*args, "--out", str(tmp_path / "whole")])
    assert whole.exit_code == 0, whole.output
    assert not partial_folder(tmp_path / "whole").exists()  # removed after the save

    out = tmp_path / "killed"
    with monkeypatch.context() as mp:
        calls = _kill_after(mp, module, name, 2)
        dead = runner.invoke(app, [*args, "--out", str(out)])
    assert dead.exit_code != 0 and calls[0] == 3 and not out.exists()
    partial = partial_folder(out)
    assert json.loads((partial / RECORD).read_text())["command"] == args[0]
    kept = sorted(partial.rglob("chunk_*.npz"))
    assert len(kept) == 2  # the two chunks that finished

    with monkeypatch.context() as mp:
        calls = _kill_after(mp, module, name, 10**6)
        again = runner.invoke(app, [*args, "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert "resuming from the finished chunks" in again.output
    ran = calls[0]
    assert ran > 0 and not partial.exists()
    a, b = fl.PatchingResult.load(tmp_path / "whole"), fl.PatchingResult.load(out)
    _same(a, b, ("effect", "se", "ci_low", "ci_high", "patched", "base", "source"))

    # an uninterrupted run computes every chunk: the resumed one computed two fewer
    with monkeypatch.context() as mp:
        calls = _kill_after(mp, module, name, 10**6)
        assert runner.invoke(app, [*args, "--out", str(tmp_path / "count")]).exit_code == 0
    assert calls[0] == ran + 2


def test_another_command_starts_afresh_with_a_message(tmp_path, monkeypatch):
    """The partial folder of other options is not resumed: the command says so, removes it and
    computes every chunk; an explicit --checkpoint is used instead of a partial folder."""
    out = tmp_path / "run"
    with monkeypatch.context() as mp:
        _kill_after(mp, exact, "_run_chunk", 1)
        assert runner.invoke(app, [*PATCH, "--out", str(out)]).exit_code != 0
    assert partial_folder(out).is_dir()
    res = runner.invoke(app, [*PATCH, "--seed", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "starting afresh" in res.output and "resuming" not in res.output
    assert not partial_folder(out).exists()
    ref = runner.invoke(app, [*PATCH, "--seed", "1", "--out", str(tmp_path / "ref")])
    assert ref.exit_code == 0, ref.output
    _same(
        fl.PatchingResult.load(out), fl.PatchingResult.load(tmp_path / "ref"), ("effect", "ci_low")
    )

    ck = tmp_path / "ck"
    res = runner.invoke(app, [*PATCH, "--out", str(tmp_path / "x"), "--checkpoint", str(ck)])
    assert res.exit_code == 0 and (ck / "checkpoint.json").exists()
    assert not partial_folder(tmp_path / "x").exists()


def test_partial_checkpoint_of_other_weights_starts_afresh(tmp_path, monkeypatch):
    """Same options, but the checkpoint inside the partial folder belongs to another run (as
    when a local model folder's weights changed): a note, then a fresh run."""
    out = tmp_path / "run"
    with monkeypatch.context() as mp:
        _kill_after(mp, exact, "_run_chunk", 1)
        assert runner.invoke(app, [*PATCH, "--out", str(out)]).exit_code != 0
    meta = partial_folder(out) / "exact" / "checkpoint.json"
    meta.write_text(json.dumps({"key": "another run"}))
    res = runner.invoke(app, [*PATCH, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "not resuming exact" in res.output and "starting it afresh" in res.output
    assert not partial_folder(out).exists()


def test_killed_circuit_command_resumes_its_edge_scores(tmp_path, monkeypatch):
    args = ["circuit", "--model", "zoo:induction", "--task", "induction", "--method", "eap"]
    args += ["--n", "12", "--n-boot", "20", "--max-memory", "256K", "--no-scrub", "--no-audit"]
    whole = runner.invoke(app, [*args, "--out", str(tmp_path / "whole")])
    assert whole.exit_code == 0, whole.output
    out = tmp_path / "killed"
    with monkeypatch.context() as mp:
        _kill_after(mp, common, "run_chunk", 1)
        assert runner.invoke(app, [*args, "--out", str(out)]).exit_code != 0
    assert len(list(partial_folder(out).rglob("chunk_*.npz"))) == 1
    again = runner.invoke(app, [*args, "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert "resuming from the finished chunks" in again.output
    assert not partial_folder(out).exists()
    a = fl.circuits.EdgeScores.load(tmp_path / "whole" / "scores")
    b = fl.circuits.EdgeScores.load(out / "scores")
    _same(a, b, ("score", "score_ci_low", "score_ci_high", "values", "clean", "corrupt"))


def test_killed_scrub_resumes_its_chunks_of_reference_rows(tmp_path, monkeypatch):
    from faithlens.scrubbing import preparation

    # the toy graph has no per-row memory estimate: --batch-size makes five chunks
    args = ["scrub", str(write_hypothesis_file(tmp_path)), "--n", "60", "--batch-size", "12"]
    whole = runner.invoke(app, [*args, "--out", str(tmp_path / "whole")])
    assert whole.exit_code == 0, whole.output
    assert not partial_folder(tmp_path / "whole").exists()
    out = tmp_path / "killed"
    with monkeypatch.context() as mp:
        calls = _kill_after(mp, preparation, "rows_chunk", 2)
        dead = runner.invoke(app, [*args, "--out", str(out)])
    assert dead.exit_code != 0 and calls[0] == 3 and not out.exists()
    assert len(list(partial_folder(out).rglob("chunk_*.npz"))) == 2
    with monkeypatch.context() as mp:
        calls = _kill_after(mp, preparation, "rows_chunk", 10**6)
        again = runner.invoke(app, [*args, "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert "resuming from the finished chunks" in again.output
    assert not partial_folder(out).exists()
    with monkeypatch.context() as mp:
        every = _kill_after(mp, preparation, "rows_chunk", 10**6)
        assert runner.invoke(app, [*args, "--out", str(tmp_path / "count")]).exit_code == 0
    assert every[0] == calls[0] + 2 and every[0] > 3
    a, b = fl.ScrubResult.load(tmp_path / "whole"), fl.ScrubResult.load(out)
    _same(a, b, ("scrubbed", "original", "baseline_values", "kl", "references"))
    assert a.to_frame().equals(b.to_frame()) and a.stats == b.stats


def test_scrub_of_another_model_is_not_resumed(tmp_path, monkeypatch):
    """The scrub checkpoint is keyed on the model's weights: a partial folder whose chunks were
    computed with other weights (same command and options) is refused, then run afresh."""
    from faithlens.scrubbing import preparation

    path = write_hypothesis_file(tmp_path)
    args = ["scrub", str(path), "--n", "60", "--batch-size", "12"]
    out = tmp_path / "run"
    with monkeypatch.context() as mp:
        _kill_after(mp, preparation, "rows_chunk", 1)
        assert runner.invoke(app, [*args, "--out", str(out)]).exit_code != 0
    from faithlens.scrubbing import checkpoint

    with monkeypatch.context() as mp:
        mp.setattr(checkpoint, "model_fingerprint", lambda m: "other weights")
        res = runner.invoke(app, [*args, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "not resuming scrub" in res.output and "another scrub" in res.output
    assert not partial_folder(out).exists()


DAS = ["das", "--synthetic", "og_noholdouts", "--n-per-class", "20", "--classifier-epochs"]
DAS += ["60", "--epochs", "30", "--checkpoint-every", "10", "--lr", "0.05"]


def test_killed_das_resumes_its_training(tmp_path, monkeypatch):
    """Killed at epoch 25, the training resumes from its epoch-20 state in the partial folder
    and ends with the uninterrupted run's alignment and history, bit for bit."""
    from faithlens.das import loop

    whole = runner.invoke(app, [*DAS, "--out", str(tmp_path / "whole")])
    assert whole.exit_code == 0, whole.output
    out = tmp_path / "killed"
    with monkeypatch.context() as mp:
        calls = _kill_after(mp, loop, "train_epoch", 25)
        dead = runner.invoke(app, [*DAS, "--out", str(out)])
    assert dead.exit_code != 0 and calls[0] == 26 and not out.exists()
    assert len(list(partial_folder(out).rglob("das_checkpoint.pt"))) == 1
    with monkeypatch.context() as mp:
        calls = _kill_after(mp, loop, "train_epoch", 10**6)
        again = runner.invoke(app, [*DAS, "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert "resuming from the finished chunks" in again.output
    assert calls[0] == 10 and not partial_folder(out).exists()  # epochs 20 to 29
    a, b = fl.Result.load(tmp_path / "whole"), fl.Result.load(out)
    assert a.to_frame().equals(b.to_frame())
    assert a.history.equals(b.history)
    assert a.iia == b.iia and a.emd == b.emd


@pytest.mark.parametrize(
    "other", [["--seed", "1"], ["--controls", "none"], ["--draws", "2"]], ids=lambda o: o[0]
)
def test_das_with_other_arguments_starts_afresh(tmp_path, monkeypatch, other):
    """Another seed or other controls (what the result reports beside the alignment) is
    another run: the killed run's training state is not resumed."""
    from faithlens.das import loop

    out = tmp_path / "run"
    with monkeypatch.context() as mp:
        _kill_after(mp, loop, "train_epoch", 15)
        assert runner.invoke(app, [*DAS, "--out", str(out)]).exit_code != 0
    res = runner.invoke(app, [*DAS, *other, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "starting afresh" in res.output and "resuming" not in res.output


SWEEP = ["das-sweep", "--model", "zoo:induction", "--task", "induction", "--n", "16"]
SWEEP += ["--layers", "0,1", "--positions", "last,0", "--controls", "random_subspace"]
SWEEP += ["--epochs", "4", "--n-boot", "50"]


def test_killed_das_sweep_resumes_its_finished_cells(tmp_path, monkeypatch):
    from faithlens.das import sweep

    whole = runner.invoke(app, [*SWEEP, "--out", str(tmp_path / "whole")])
    assert whole.exit_code == 0, whole.output
    out = tmp_path / "killed"
    with monkeypatch.context() as mp:
        calls = _kill_after(mp, sweep, "sweep_cell", 2)
        dead = runner.invoke(app, [*SWEEP, "--out", str(out)])
    assert dead.exit_code != 0 and calls[0] == 3 and not out.exists()
    assert len(list(partial_folder(out).rglob("cell_*.npz"))) == 2
    with monkeypatch.context() as mp:
        calls = _kill_after(mp, sweep, "sweep_cell", 10**6)
        again = runner.invoke(app, [*SWEEP, "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert "resuming from the finished chunks" in again.output
    assert calls[0] == 2 and not partial_folder(out).exists()  # four cells, two read back
    a, b = fl.Result.load(tmp_path / "whole"), fl.Result.load(out)
    _same(a, b, ("iia", "iia_low", "iia_high", "selectivity", "control_iia", "n_dims"))


def _neuron_files(tmp_path, seed=0):
    import pandas as pd

    rng = np.random.default_rng(seed)
    c = (rng.random((300, 4)) < 0.2).astype(np.float32)
    x = np.concatenate([c * 2 + rng.standard_normal((300, 4)), rng.standard_normal((300, 4))], 1)
    np.save(tmp_path / "acts.npy", x.astype(np.float32))
    pd.DataFrame(c, columns=list("abcd")).to_csv(tmp_path / "con.csv", index=False)
    explain = ["neurons", "explain", "-a", str(tmp_path / "acts.npy"), "-c"]
    return [*explain, str(tmp_path / "con.csv"), "--n-boot", "100", "--max-memory", "16K"]


def test_killed_neurons_explain_resumes_its_unit_blocks(tmp_path, monkeypatch):
    """Eight units in eight blocks: killed after three, the rerun bootstraps the other five."""
    from faithlens.neurons import passes

    args = _neuron_files(tmp_path)
    whole = runner.invoke(app, [*args, "--out", str(tmp_path / "whole")])
    assert whole.exit_code == 0, whole.output
    out = tmp_path / "killed"
    with monkeypatch.context() as mp:
        calls = _kill_after(mp, passes, "bootstrap_block", 3)
        dead = runner.invoke(app, [*args, "--out", str(out)])
    assert dead.exit_code != 0 and calls[0] == 4 and not out.exists()
    assert len(list(partial_folder(out).rglob("block_*.npz"))) == 3
    with monkeypatch.context() as mp:
        calls = _kill_after(mp, passes, "bootstrap_block", 10**6)
        again = runner.invoke(app, [*args, "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert "resuming from the finished chunks" in again.output
    assert calls[0] == 5 and not partial_folder(out).exists()
    a, b = fl.Result.load(tmp_path / "whole"), fl.Result.load(out)
    _same(a, b, ("scores", "lower", "upper", "freq"))
    assert a.to_frame().equals(b.to_frame())


def test_neurons_explain_of_changed_data_is_not_resumed(tmp_path, monkeypatch):
    """Same command and options, but the activation file now holds other numbers: the unit
    blocks of the old data are refused (the checkpoint key covers the data), then run afresh."""
    from faithlens.neurons import passes

    args = _neuron_files(tmp_path)
    out = tmp_path / "run"
    with monkeypatch.context() as mp:
        _kill_after(mp, passes, "bootstrap_block", 2)
        assert runner.invoke(app, [*args, "--out", str(out)]).exit_code != 0
    _neuron_files(tmp_path, seed=1)
    with monkeypatch.context() as mp:
        calls = _kill_after(mp, passes, "bootstrap_block", 10**6)
        res = runner.invoke(app, [*args, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "not resuming explain" in res.output and "starting it afresh" in res.output
    assert calls[0] == 8 and not partial_folder(out).exists()
    ref = runner.invoke(app, [*args, "--out", str(tmp_path / "ref")])
    assert ref.exit_code == 0, ref.output
    _same(fl.Result.load(out), fl.Result.load(tmp_path / "ref"), ("scores", "lower", "upper"))


READ = ["represent", "read", "--model", "planted", "--concept", "planted", "--n-stability", "5"]
READ += ["--n-boot", "50"]


def test_killed_represent_read_resumes_its_per_layer_fits(tmp_path, monkeypatch):
    """`represent read` keeps each layer's fit (direction, read-outs, stability and AUROC
    intervals) in the partial folder as its chunk finishes; killed after the first layer, the
    rerun fits only the second and saves the uninterrupted result bit for bit. Other options
    start afresh, with a message."""
    from faithlens.representations import directions, reading

    # one layer per chunk of fits: each layer needs more than the whole budget
    monkeypatch.setattr(reading, "layer_bytes", lambda *a: 1 << 60)
    whole = runner.invoke(app, [*READ, "--out", str(tmp_path / "whole")])
    assert whole.exit_code == 0, whole.output
    out = tmp_path / "killed"
    with monkeypatch.context() as mp:
        calls = _kill_after(mp, directions, "fit_layers", 1)
        dead = runner.invoke(app, [*READ, "--out", str(out)])
    assert dead.exit_code != 0 and calls[0] == 2 and not out.exists()
    partial = partial_folder(out)
    assert json.loads((partial / RECORD).read_text())["command"] == "represent read"
    assert [f.name for f in sorted(partial.rglob("layer_*.npz"))] == ["layer_0000000.npz"]

    with monkeypatch.context() as mp:
        calls = _kill_after(mp, directions, "fit_layers", 10**6)
        again = runner.invoke(app, [*READ, "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert "resuming from the finished chunks" in again.output
    assert calls[0] == 1 and not partial.exists()  # only the second layer was fitted
    a, b = fl.Result.load(tmp_path / "whole"), fl.Result.load(out)
    fields = ["directions", "means", "separation", "spread", "accuracy", "accuracy_low"]
    fields += ["auroc", "auroc_low", "auroc_high", "stability", "stability_low", "test_pos"]
    _same(a, b, fields)

    other = tmp_path / "other"
    with monkeypatch.context() as mp:
        _kill_after(mp, directions, "fit_layers", 1)
        assert runner.invoke(app, [*READ, "--out", str(other)]).exit_code != 0
    res = runner.invoke(app, [*READ, "--seed", "1", "--out", str(other)])
    assert res.exit_code == 0, res.output
    assert "starting afresh" in res.output and "resuming" not in res.output
    assert not partial_folder(other).exists()


def test_killed_represent_steer_resumes_its_reading(tmp_path, monkeypatch):
    """`represent steer` killed while steering (after its reading finished) keeps the reading's
    per-layer fits: the rerun fits no layer again and saves the uninterrupted result."""
    import faithlens.representations as R
    from faithlens.representations import directions

    args = ["represent", "steer", "--model", "planted", "--concept", "planted", "--layers", "1"]
    args += ["--n", "8", "--n-boot", "50", "--show", "0", "--max-new-tokens", "2"]
    whole = runner.invoke(app, [*args, "--out", str(tmp_path / "whole")])
    assert whole.exit_code == 0, whole.output
    out = tmp_path / "killed"
    with monkeypatch.context() as mp:
        _kill_after(mp, R, "compare", 0)
        assert runner.invoke(app, [*args, "--out", str(out)]).exit_code != 0
    assert sorted(partial_folder(out).rglob("layer_*.npz"))
    with monkeypatch.context() as mp:
        calls = _kill_after(mp, directions, "fit_layers", 10**6)
        again = runner.invoke(app, [*args, "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert "resuming from the finished chunks" in again.output and calls[0] == 0
    a, b = fl.Result.load(tmp_path / "whole"), fl.Result.load(out)
    assert a.to_frame().equals(b.to_frame())
