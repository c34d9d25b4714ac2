"""`faithlens das-sweep`: the layer x position sweep with its controls, end to end."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

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
