"""The scrubbing examples run and tell their story."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_or_walkthrough(capsys):
    got = load("scrub_or_walkthrough").main(n=1000)
    right, wrong, no_b = got.values()
    assert right > 90 and wrong < right - 5 and no_b < right - 20
    assert "uniform d" in capsys.readouterr().out


def test_hash_game(capsys):
    before, after = load("scrub_hash_game").main(n=2000)
    assert before > 150 and after == pytest.approx(100, abs=10)
    assert "root also agrees on mode" in capsys.readouterr().out


def test_ioi_hypothesis_file_is_valid():
    from faithlens.cli.scrubbing import load_hypothesis_file

    mod = load_hypothesis_file(EXAMPLES / "scrub_ioi_hypothesis.py")
    assert len(mod.hypothesis.root.children) == 18 and set(mod.baselines) == {
        "random",
        "late heads disabled",
    }
