"""`faithlens das` and `faithlens das-sweep`: the controls of an alignment, end to end."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

import faithlens as fl
from faithlens.cli import app

runner = CliRunner()


def test_das_sweep_synthetic_end_to_end(tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "sweep"
    args = [
        "das-sweep",
        "--synthetic",
        "og_noholdouts",
        "--n-per-class",
        "20",
        "--classifier-epochs",
        "60",
        "--layers",
        "h",
        "--positions",
        "all",
        "--controls",
        "task,random_subspace",
        "--epochs",
        "20",
        "--lr",
        "0.05",
        "--n-boot",
        "200",
        "--out",
        str(out),
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "most selective" in res.output
    assert (out / "sweep.png").exists()
    meta = json.loads((out / "result.json").read_text())
    assert "DASSweep" in json.dumps(meta)


def test_das_sweep_refuses_bad_options_before_work():
    res = runner.invoke(app, ["das-sweep", "--layers", "h", "--controls", "nope"])
    assert res.exit_code != 0 and "controls" in res.output
    res = runner.invoke(app, ["das-sweep", "--layers", ",", "--synthetic", "xor"])
    assert res.exit_code != 0 and "--layers" in res.output


def test_das_reports_the_controls_it_is_asked_for(tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "das"
    args = [
        "das",
        "--synthetic",
        "og_noholdouts",
        "--n-per-class",
        "20",
        "--classifier-epochs",
        "60",
        "--epochs",
        "20",
        "--lr",
        "0.05",
        "--controls",
        "task,random_subspace",
        "--draws",
        "2",
        "--out",
        str(out),
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "control task" in res.output and "control random_subspace (2 draws)" in res.output
    assert "controls not run: random_init" in res.output
    saved = fl.Result.load(out)
    assert saved.controls == ("task", "random_subspace")
    assert saved.controls_frame()["status"].tolist() == ["run", "not run", "run"]


def test_das_refuses_bad_controls_before_work():
    for bad, said in (("nope", "--controls='nope'"), ("task,task", "repeats"), (",", "--controls")):
        res = runner.invoke(app, ["das", "--synthetic", "xor", "--controls", bad])
        assert res.exit_code != 0 and said in res.output, (bad, res.output)
    res = runner.invoke(app, ["das", "--synthetic", "xor", "--draws", "0"])
    assert res.exit_code != 0 and "--draws" in res.output
