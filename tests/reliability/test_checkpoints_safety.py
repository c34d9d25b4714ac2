"""Checkpoints and files faithlens reads: safe to load, keyed on model and data, resumable.

- a killed DAS run (in process, and a real SIGKILL of another process) resumes to exactly the
  result of an uninterrupted run; a kill while a checkpoint is written leaves the old one;
- a checkpoint of another model, other data or other arguments is refused, naming what differs;
- a crafted pickle (it would create a marker file when unpickled) is refused wherever faithlens
  reads a binary file, and the marker never appears;
- truncated or corrupted files raise an error naming the file and the fix, never a traceback;
- ``fl.das`` leaves no ``.grad`` on the model and its ``requires_grad`` flags as they were;
- ``faithlens scrub --help`` says that the hypothesis file is code run with the user's rights.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import faithlens as fl
import faithlens.neurons as N
from faithlens import safe_load, zoo
from faithlens.cli import app
from faithlens.das import Rotation, load_alignment
from faithlens.das.train import CHECKPOINT
from faithlens.errors import CheckpointError, InputError
from faithlens.tasks.interchange import InterchangeData
from faithlens.zoo import read_weights
from tests.helpers.das_toys import toy_data, toy_model

runner = CliRunner()

# ----------------------------------------------------------------------------------------------
# A toy DAS problem: a seeded MLP (its weights require grad, as a user's model would) and random
# interchange data. Training is a few milliseconds per epoch.
# ----------------------------------------------------------------------------------------------

KW = dict(dims=2, epochs=12, batch_size=16, checkpoint_every=4, seed=5, lr=0.05)


def run_toy(checkpoint_dir: str | None, *, sleep: float = 0.0, **kw) -> fl.DASResult:
    """The toy run; ``sleep`` seconds after each epoch (so another process can kill it)."""

    def slow(epoch, row):
        time.sleep(sleep)

    args = {**KW, **kw}
    return fl.das(
        toy_model(),
        toy_data(),
        "h",
        checkpoint_dir=checkpoint_dir,
        progress=slow if sleep else None,
        **args,
    )


class Killed(Exception):
    pass


def kill_at(epoch_to_die: int):
    def progress(epoch, row):
        if epoch == epoch_to_die:
            raise Killed

    return progress


def assert_same_result(a: fl.DASResult, b: fl.DASResult) -> None:
    """Bit for bit: parameters, history, selection, IIA and EMD."""
    assert np.array_equal(a.alignment_params, b.alignment_params)
    pd.testing.assert_frame_equal(a.history, b.history, check_exact=True)
    assert (a.selected_epoch, a.dims, a.iia, a.iia_low, a.iia_high) == (
        b.selected_epoch,
        b.dims,
        b.iia,
        b.iia_low,
        b.iia_high,
    )
    assert a.emd == b.emd or (np.isnan(a.emd) and np.isnan(b.emd))


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ----------------------------------------------------------------------------------------------
# Kill and resume
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["rotation", "boundless", "linear"])
def test_das_killed_mid_run_resumes_to_the_uninterrupted_result(tmp_path, method):
    full = run_toy(None, method=method)
    with pytest.raises(Killed):
        fl.das(
            toy_model(),
            toy_data(),
            "h",
            method=method,
            checkpoint_dir=tmp_path,
            progress=kill_at(9),
            **KW,
        )
    ck = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert ck["epoch"] == 8 and len(ck["history"]) == 8  # killed after the second checkpoint
    resumed = run_toy(str(tmp_path), method=method)
    assert_same_result(resumed, full)
    # a finished run's checkpoint returns the same result again, without training
    again = fl.das(
        toy_model(), toy_data(), "h", method=method, checkpoint_dir=tmp_path, progress=kill_at(0),
        **KW,
    )  # fmt: skip
    assert_same_result(again, full)


def test_das_killed_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    full = run_toy(None)
    real_save = torch.save
    calls = {"n": 0}

    def dies_mid_write(obj, f):
        calls["n"] += 1
        if calls["n"] == 2:  # the second checkpoint: half the bytes, then the process "dies"
            real_save(obj, f)
            f.seek(0)
            f.truncate(100)
            raise Killed
        real_save(obj, f)

    monkeypatch.setattr(torch, "save", dies_mid_write)
    with pytest.raises(Killed):
        run_toy(str(tmp_path))
    monkeypatch.setattr(torch, "save", real_save)
    assert sorted(p.name for p in tmp_path.iterdir()) == [CHECKPOINT]  # no temporary left
    assert torch.load(tmp_path / CHECKPOINT, weights_only=True)["epoch"] == 4
    assert_same_result(run_toy(str(tmp_path)), full)


def test_das_sigkilled_process_resumes_to_the_uninterrupted_result(tmp_path):
    """A real kill -9 of another process after its first checkpoints, resumed here."""
    kw = dict(epochs=40, checkpoint_every=2)
    script = (
        "import sys, torch; torch.set_num_threads(1); sys.path.insert(0, sys.argv[1]);"
        "import test_checkpoints_safety as t;"
        f"t.run_toy(sys.argv[2], sleep=0.1, **{kw!r})"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(Path(__file__).parent), str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 600
        ckpt = tmp_path / CHECKPOINT
        while not ckpt.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
        time.sleep(0.3)  # a few more epochs, so the kill may land during a write
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    saved = torch.load(tmp_path / CHECKPOINT, weights_only=True)["epoch"]
    assert 2 <= saved < kw["epochs"]
    resumed = run_toy(str(tmp_path), **kw)
    assert_same_result(resumed, run_toy(None, **kw))


def _small_recipe(steps: int = 4) -> zoo.Recipe:
    r = zoo.recipe("paren")
    r.schedule = dataclasses.replace(
        r.schedule, steps=steps, batch_size=16, warmup=2, eval_every=2, checkpoint_every=2,
        log_every=1,
    )  # fmt: skip
    r.eval_n = 64
    r.quick_n = 64
    return r


def test_zoo_training_killed_mid_run_resumes_to_the_uninterrupted_weights(tmp_path):
    straight = zoo.train(_small_recipe(), tmp_path / "a", seed=1, threads=1, evaluate=False)

    def die(step, total, numbers):
        if step == 3:
            raise Killed

    with pytest.raises(Killed):
        zoo.train(_small_recipe(), tmp_path / "b", seed=1, threads=1, progress=die)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["step"] == 2
    done = zoo.train(_small_recipe(), tmp_path / "b", seed=1, threads=1, evaluate=False)
    assert done.complete and done.resumed_from == 2
    assert straight.history["loss"].tolist() == done.history["loss"].tolist()
    wa = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    wb = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["model"]
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


# ----------------------------------------------------------------------------------------------
# Stale checkpoints: keyed on the arguments, the model's weights and the data
# ----------------------------------------------------------------------------------------------


def _other_model() -> fl.Model:
    m = toy_model()
    with torch.no_grad():
        m.module[2].bias[1] += 1e-3
    return m


def _other_data() -> InterchangeData:
    d = toy_data()
    labels = d.labels.clone()
    labels[7] = (labels[7] + 1) % 4
    return dataclasses.replace(d, labels=labels)


@pytest.mark.parametrize(
    "model, data, kw, match",
    [
        pytest.param(_other_model, toy_data, {}, r"different DAS run: another model", id="model"),
        pytest.param(toy_model, _other_data, {}, r"different DAS run: other data", id="data"),
        pytest.param(
            toy_model, toy_data, {"lr": 0.2}, r"other arguments \(lr 0\.05 -> 0\.2\)", id="args"
        ),
        pytest.param(
            _other_model,
            _other_data,
            {"seed": 6},
            r"other arguments \(seed 5 -> 6\), another model .*, other data",
            id="everything",
        ),
    ],
)
def test_a_checkpoint_of_another_run_is_refused_naming_what_differs(
    tmp_path, model, data, kw, match
):
    with pytest.raises(Killed):
        fl.das(toy_model(), toy_data(), "h", checkpoint_dir=tmp_path, progress=kill_at(5), **KW)
    before = (tmp_path / CHECKPOINT).read_bytes()
    with pytest.raises(CheckpointError, match=match) as err:
        fl.das(model(), data(), "h", checkpoint_dir=tmp_path, **{**KW, **kw})
    msg = str(err.value)
    assert str(tmp_path / CHECKPOINT) in msg and "use another checkpoint folder" in msg
    assert (tmp_path / CHECKPOINT).read_bytes() == before  # left as it was


def test_a_checkpoint_of_an_older_format_is_refused(tmp_path):
    run_toy(str(tmp_path), epochs=4)
    ck = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    for k in ("format", "model", "data"):
        del ck[k]
    torch.save(ck, tmp_path / CHECKPOINT)
    with pytest.raises(CheckpointError, match=r"older faithlens .* without the model and data"):
        run_toy(str(tmp_path), epochs=4)


# ----------------------------------------------------------------------------------------------
# Crafted pickles are refused, never run
# ----------------------------------------------------------------------------------------------


class Payload:
    """Unpickling this creates ``marker`` (a stand-in for arbitrary code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _craft(path: Path, marker: Path) -> None:
    torch.save({"key": "x", "alignment": Payload(marker), "data": torch.zeros(2)}, path)


def test_the_crafted_pickle_does_run_code_when_unpickled_unsafely(tmp_path):
    """The payload of the tests below is live: an unsafe load creates the marker."""
    marker = tmp_path / "pwned"
    _craft(tmp_path / "evil.pt", marker)
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


def _das_target(d: Path, marker: Path):
    _craft(d / CHECKPOINT, marker)
    return lambda: run_toy(str(d))


def _zoo_target(d: Path, marker: Path):
    _craft(d / "checkpoint.pt", marker)
    return lambda: zoo.train(_small_recipe(2), d, seed=0, until=1, threads=1)


def _alignment_target(d: Path, marker: Path):
    Rotation(4).save(d / "al")
    _craft(d / "al" / "alignment.pt", marker)
    return lambda: load_alignment(d / "al")


def _neurons_pt_target(d: Path, marker: Path):
    _craft(d / "acts.pt", marker)
    np.save(d / "con.npy", np.zeros((10, 2), dtype=np.float32))
    return lambda: _cli(["neurons", "explain", "-a", str(d / "acts.pt"), "-c", str(d / "con.npy")])


def _neurons_npy_target(d: Path, marker: Path):
    np.save(d / "acts.npy", np.array([Payload(marker), 1.0], dtype=object), allow_pickle=True)
    np.save(d / "con.npy", np.zeros((10, 2), dtype=np.float32))
    return lambda: _cli(["neurons", "explain", "-a", str(d / "acts.npy"), "-c", str(d / "con.npy")])


def _neurons_maps_target(d: Path, marker: Path):
    _craft(d / "maps.pt", marker)
    return lambda: _cli(["neurons", "dissect", "--maps", str(d / "maps.pt")])


def _neurons_block_target(d: Path, marker: Path):
    x, con = _neuron_data()
    N.explain(x, con, checkpoint=d / "ck", **NEURON_KW)
    block = sorted((d / "ck").glob("block_*.npz"))[0]
    np.savez(block, freq=np.array([Payload(marker)], dtype=object))
    return lambda: N.explain(x, con, checkpoint=d / "ck", **NEURON_KW)


def _cli(args: list[str]) -> None:
    """Run the CLI; its one-line error (exit 2) comes back as the InputError it reported."""
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    raise InputError(" ".join(r.output.split()))


NEURON_KW = dict(metric="iou", n_boot=20, seed=0, max_memory=20_000)


def _neuron_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 6, generator=g)
    con = (torch.rand(300, 3, generator=g) < 0.2).float()
    return x, con


@pytest.mark.parametrize(
    "target, error, match",
    [
        pytest.param(_das_target, CheckpointError, "not a safe faithlens DAS checkpoint", id="das"),
        pytest.param(_zoo_target, CheckpointError, "not a safe zoo training checkpoint", id="zoo"),
        pytest.param(_alignment_target, InputError, "not a safe saved alignment", id="alignment"),
        pytest.param(_neurons_pt_target, InputError, "not a safe activations file", id="acts.pt"),
        pytest.param(_neurons_npy_target, InputError, "holds pickled Python obj", id="acts.npy"),
        pytest.param(_neurons_maps_target, InputError, "not a safe maps file", id="maps.pt"),
        pytest.param(
            _neurons_block_target, CheckpointError, "holding pickled objects", id="neurons-block"
        ),
    ],
)
def test_a_crafted_pickle_is_refused_and_never_run(tmp_path, target, error, match):
    marker = tmp_path / "pwned"
    call = target(tmp_path, marker)
    with pytest.raises(error, match=match) as err:
        call()
    assert not marker.exists()
    assert "never" in str(err.value) or "pickled" in str(err.value)


# ----------------------------------------------------------------------------------------------
# Truncated or corrupted files: an error naming the file and the fix
# ----------------------------------------------------------------------------------------------


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _das_truncated(d: Path):
    run_toy(str(d), epochs=4)
    return _truncate(d / CHECKPOINT), lambda: run_toy(str(d), epochs=4)


def _das_garbage(d: Path):
    (d / CHECKPOINT).write_bytes(os.urandom(300))
    return d / CHECKPOINT, lambda: run_toy(str(d), epochs=4)


def _das_not_a_dict(d: Path):
    torch.save([torch.zeros(1)], d / CHECKPOINT)
    return d / CHECKPOINT, lambda: run_toy(str(d), epochs=4)


def _zoo_truncated(d: Path):
    zoo.train(_small_recipe(2), d, seed=0, until=1, threads=1)
    return _truncate(d / "checkpoint.pt"), lambda: zoo.train(
        _small_recipe(2), d, seed=0, threads=1, evaluate=False
    )


def _zoo_weights_truncated(d: Path):
    zoo.train(_small_recipe(2), d, seed=0, threads=1, evaluate=False)
    w = d / "paren.safetensors"
    return _truncate(w), lambda: read_weights(w)


def _alignment_truncated(d: Path):
    Rotation(4).save(d / "al")
    return _truncate(d / "al" / "alignment.pt"), lambda: load_alignment(d / "al")


def _alignment_spec_garbage(d: Path):
    Rotation(4).save(d / "al")
    (d / "al" / "alignment.json").write_text('{"kind": "rotation", "conf')
    return d / "al" / "alignment.json", lambda: load_alignment(d / "al")


def _neurons_block_truncated(d: Path):
    x, con = _neuron_data()
    N.explain(x, con, checkpoint=d / "ck", **NEURON_KW)
    block = sorted((d / "ck").glob("block_*.npz"))[0]
    return _truncate(block), lambda: N.explain(x, con, checkpoint=d / "ck", **NEURON_KW)


def _neurons_record_garbage(d: Path):
    x, con = _neuron_data()
    N.explain(x, con, checkpoint=d / "ck", **NEURON_KW)
    rec = d / "ck" / "checkpoint.json"
    rec.write_text('{"key": ')
    return rec, lambda: N.explain(x, con, checkpoint=d / "ck", **NEURON_KW)


def _neurons_npy_truncated(d: Path):
    np.save(d / "acts.npy", np.ones((300, 4), dtype=np.float32))
    np.save(d / "con.npy", np.zeros((300, 2), dtype=np.float32))
    return _truncate(d / "acts.npy"), lambda: _cli(
        ["neurons", "explain", "-a", str(d / "acts.npy"), "-c", str(d / "con.npy")]
    )


@pytest.mark.parametrize(
    "setup, error, fix",
    [
        pytest.param(_das_truncated, CheckpointError, "delete this file", id="das-truncated"),
        pytest.param(_das_garbage, CheckpointError, "delete this file", id="das-garbage"),
        pytest.param(_das_not_a_dict, CheckpointError, "delete this file", id="das-not-a-dict"),
        pytest.param(_zoo_truncated, CheckpointError, "--no-resume", id="zoo-checkpoint"),
        pytest.param(_zoo_weights_truncated, InputError, "train the model again", id="zoo-weights"),
        pytest.param(_alignment_truncated, InputError, "save the alignment again", id="al.pt"),
        pytest.param(_alignment_spec_garbage, InputError, "save the alignment again", id="al.json"),
        pytest.param(
            _neurons_block_truncated, CheckpointError, "delete the checkpoint", id="block"
        ),
        pytest.param(
            _neurons_record_garbage, CheckpointError, "delete the checkpoint", id="record"
        ),
        pytest.param(_neurons_npy_truncated, InputError, "numpy.save", id="acts.npy"),
    ],
)
def test_a_truncated_or_corrupted_file_names_itself_and_the_fix(tmp_path, setup, error, fix):
    path, call = setup(tmp_path)
    with pytest.raises(error) as err:
        call()
    msg = " ".join(str(err.value).split())
    assert "".join(str(path).split()) in "".join(msg.split())  # rich may wrap a long path
    assert fix in msg
    assert any(w in msg for w in ("truncated", "corrupted", "readable", "not a "))


def test_safe_save_is_atomic_and_leaves_no_temporary(tmp_path):
    p = safe_load.torch_save({"a": torch.arange(3)}, tmp_path / "x.pt")
    assert torch.equal(torch.load(p, weights_only=True)["a"], torch.arange(3))
    assert [q.name for q in tmp_path.iterdir()] == ["x.pt"]


# ----------------------------------------------------------------------------------------------
# fl.das leaves the model as it found it
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("interrupted", [False, True], ids=["finished", "interrupted"])
def test_das_leaves_no_grad_and_the_requires_grad_flags_as_they_were(interrupted):
    model = toy_model()
    net = model.module
    net[2].bias.requires_grad_(False)
    net[0].bias.grad = torch.full_like(net[0].bias, 7.0)  # the user's own gradient stays
    flags = {n: p.requires_grad for n, p in net.named_parameters()}
    if interrupted:
        with pytest.raises(Killed):
            fl.das(model, toy_data(), "h", progress=kill_at(2), **KW)
    else:
        fl.das(model, toy_data(), "h", **KW)
    assert {n: p.requires_grad for n, p in net.named_parameters()} == flags
    for n, p in net.named_parameters():
        if n == "0.bias":
            assert torch.equal(p.grad, torch.full_like(p, 7.0))
        else:
            assert p.grad is None, n


# ----------------------------------------------------------------------------------------------
# The hypothesis file of `faithlens scrub` is code: the help says so
# ----------------------------------------------------------------------------------------------


def test_scrub_help_says_the_hypothesis_file_is_code_run_with_the_users_rights():
    r = runner.invoke(app, ["scrub", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    text = " ".join(r.output.replace("│", " ").split())
    assert "HYPOTHESIS_FILE is Python code and is run with your rights, also with --dry-run" in text
    assert "Only give files you trust" in text
    docs = (Path(__file__).parents[2] / "docs" / "scrubbing.md").read_text()
    assert "The hypothesis file is Python code, run with your rights." in docs
    assert "`--dry-run` too" in " ".join(docs.split())


def test_checkpoint_metadata_is_plain_data(tmp_path):
    """What a DAS checkpoint holds loads with weights_only=True and its config is JSON."""
    run_toy(str(tmp_path), epochs=4)
    ck = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    assert ck["format"] == 2 and len(ck["model"]) == len(ck["data"]) == 64
    assert json.loads(json.dumps(ck["config"])) == ck["config"]


def test_faithlens_das_refuses_a_crafted_checkpoint_before_running_it(tmp_path):
    """The issue's case: `faithlens das --checkpoint DIR` with a pickle in DIR."""
    marker = tmp_path / "pwned"
    ck = tmp_path / "ck"
    ck.mkdir()
    _craft(ck / CHECKPOINT, marker)
    args = ["das", "--synthetic", "og_holdouts", "--n-per-class", "4", "--classifier-epochs"]
    args += ["5", "--epochs", "3", "--checkpoint", str(ck)]
    r = runner.invoke(app, args)
    text = " ".join(r.output.split())
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and "not a safe faithlens DAS checkpoint" in text
    assert "use another checkpoint folder" in text
    assert not marker.exists()
