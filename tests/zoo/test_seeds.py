"""A zoo recipe trained over seeds (faithlens.zoo.seeds): each seed is the training
``zoo.train`` gives for that seed alone, in its own folder."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from faithlens import zoo
from faithlens.errors import ArgumentError
from faithlens.zoo.seeds import train_seeds


def tiny_recipe(steps: int = 3):
    r = zoo.recipe("induction")
    r.schedule = dataclasses.replace(r.schedule, steps=steps)
    return r


def test_each_seed_is_its_own_training(tmp_path):
    ticks: list[tuple[int, int]] = []
    runs = train_seeds(
        tiny_recipe(),
        tmp_path / "sweep",
        [1, 0],
        evaluate=False,
        progress=lambda d, t: ticks.append((d, t)),
    )
    assert [r.seed for r in runs] == [1, 0] and all(r.complete for r in runs)
    assert ticks == [(1, 2), (2, 2)]
    zoo.train(tiny_recipe(), tmp_path / "alone", seed=0, evaluate=False, threads=1)
    w0, alone, w1 = (
        zoo.read_weights(tmp_path / p / "induction.safetensors")[1]
        for p in ("sweep/seed_0", "alone", "sweep/seed_1")
    )
    assert same_weights(w0, alone)  # bit for bit
    assert not same_weights(w0, w1)


def same_weights(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bad_seeds_are_refused_before_any_training(tmp_path):
    for bad, match in (([], "non-empty"), (3, "non-empty"), ([0, 0], "repeats"), ([-1], "seeds")):
        with pytest.raises(ArgumentError, match=match):
            train_seeds(tiny_recipe(), tmp_path, bad)
    with pytest.raises(ArgumentError, match="threads"):
        train_seeds(tiny_recipe(), tmp_path, [0], threads=0)
    assert not any(tmp_path.iterdir())


def test_cli_seeds_train_one_model_per_seed(tmp_path):
    """``faithlens zoo train NAME --seeds 0,1`` writes OUT/seed_S with the weights
    train_seeds gives (each seed's own training), and refuses bad combinations before work."""
    from typer.testing import CliRunner

    from faithlens.cli import app

    runner = CliRunner()
    out = tmp_path / "cli"
    argv = ["zoo", "train", "induction", "--steps", "3", "--out", str(out)]
    res = runner.invoke(app, [*argv, "--seeds", "1,0"])
    assert res.exit_code == 0, res.output
    assert "seed 1:" in res.output and "seed 0:" in res.output
    train_seeds(tiny_recipe(), tmp_path / "lib", [0, 1])
    for s in (0, 1):
        got, ref = (
            zoo.read_weights(d / f"seed_{s}" / "induction.safetensors")[1]
            for d in (out, tmp_path / "lib")
        )
        assert same_weights(got, ref)
    assert not same_weights(
        *(zoo.read_weights(out / f"seed_{s}" / "induction.safetensors")[1] for s in (0, 1))
    )
    for extra, match in (
        (["--seeds", "0,0"], "repeats"),
        (["--seeds", "0,x"], "--seeds"),
        (["--seeds", ","], "names no seed"),
        (["--seeds", "0,1", "--seed", "3"], "--seed"),
        (["--seeds", "0,1", "--ship"], "--ship"),
        (["--seeds", "0,1", "--device", "cuda"], "--device"),
    ):
        bad = tmp_path / "bad"
        res = runner.invoke(app, ["zoo", "train", "induction", "--out", str(bad), *extra])
        assert res.exit_code == 2 and match in res.output, (extra, res.output)
        assert not bad.exists()
