"""``faithlens scrub`` end to end: the memory knob (``--max-memory``, and the deprecated
``--batch-size``) of the scrub and of the adversary."""

from __future__ import annotations

import importlib

import pytest
from typer.testing import CliRunner

from faithlens.cli import app
from faithlens.results import Result
from tests.helpers.scrub_toys import write_hypothesis_file

runner = CliRunner()


@pytest.fixture
def hypothesis_file(tmp_path):
    return write_hypothesis_file(tmp_path)


def _spy(monkeypatch, owner, name):
    """Wrap ``owner.name`` so that the keyword arguments of every call are recorded (the call
    itself goes through)."""
    real, calls = getattr(owner, name), []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, spy)
    return calls


def _scrub(path, out, *args):
    return runner.invoke(app, ["scrub", str(path), "--n", "60", "--out", str(out), *args])


def test_max_memory_is_the_scrubs_budget_and_keeps_the_numbers(
    hypothesis_file, tmp_path, monkeypatch
):
    calls = _spy(monkeypatch, importlib.import_module("faithlens.scrubbing.evaluate"), "finish")
    default = _scrub(hypothesis_file, tmp_path / "a")
    small = _scrub(hypothesis_file, tmp_path / "b", "--max-memory", "2K")
    assert default.exit_code == 0, default.output
    assert small.exit_code == 0, small.output
    assert [(c["max_memory"], c["batch_size"]) for c in calls] == [(None, None), (2048, None)]
    a, b = Result.load(tmp_path / "a"), Result.load(tmp_path / "b")
    assert b.to_frame().equals(a.to_frame())
    assert "deprecated" not in small.stderr


def test_batch_size_still_works_with_a_deprecation_note(hypothesis_file, tmp_path, monkeypatch):
    calls = _spy(monkeypatch, importlib.import_module("faithlens.scrubbing.evaluate"), "finish")
    default = _scrub(hypothesis_file, tmp_path / "a")
    old = _scrub(hypothesis_file, tmp_path / "b", "--batch-size", "7")
    assert old.exit_code == 0, old.output
    assert [(c["max_memory"], c["batch_size"]) for c in calls] == [(None, None), (None, 7)]
    note = [line for line in old.stderr.splitlines() if "deprecated" in line]
    assert len(note) == 1 and "--batch-size" in note[0] and "--max-memory" in note[0]
    assert "deprecated" not in default.stderr
    assert Result.load(tmp_path / "b").to_frame().equals(Result.load(tmp_path / "a").to_frame())


def test_max_memory_reaches_the_adversary(hypothesis_file, tmp_path, monkeypatch):
    calls = _spy(monkeypatch, importlib.import_module("faithlens.scrubbing"), "adversary")
    r = _scrub(
        hypothesis_file, tmp_path / "a", "--adversary", "--budget", "2", "--max-memory", "1M"
    )
    assert r.exit_code == 0, r.output
    assert [(c["max_memory"], c["batch_size"]) for c in calls] == [(1 << 20, None)]
    assert (tmp_path / "a" / "adversary" / "result.json").exists()


def test_batch_size_and_max_memory_together_are_refused(hypothesis_file, tmp_path):
    r = _scrub(hypothesis_file, tmp_path / "a", "--batch-size", "7", "--max-memory", "1M")
    out = " ".join(r.output.split())
    assert r.exit_code == 2, out
    assert "--batch-size=7: cannot be given together with --max-memory='1M'" in out
    assert not (tmp_path / "a").exists()
