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
