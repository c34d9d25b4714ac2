"""``faithlens represent`` end to end (the planted model; one SmolLM2 run)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import faithlens as fl
from faithlens.cli import app
from faithlens.cli.representations import parse_layers
from faithlens.representations import FaithfulnessReport, ReadingResult, SteeringResult
from faithlens.results import Result

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, ["represent", *args], catch_exceptions=False)


def test_help_lists_the_commands():
    r = invoke("--help")
    assert r.exit_code == 0
    for cmd in ("read", "steer", "check"):
        assert cmd in r.output
    assert "represent" in runner.invoke(app, ["--help"]).output


def test_read_writes_a_loadable_result(tmp_path):
    out = tmp_path / "read"
    r = invoke(
        "read",
        "--model",
        "planted",
        "--concept",
        "planted",
        "--layers",
        "0,1",
        "--n",
        "32",
        "--n-stability",
        "5",
        "--n-boot",
        "100",
        "--out",
        str(out),
    )
    assert r.exit_code == 0, r.output
    assert "best layer" in r.output and (out / "reading.png").exists()
    res = Result.load(out)
    assert isinstance(res, ReadingResult) and res.layers == [0, 1]


def test_steer_shows_judged_generations(tmp_path):
    r = invoke(
        "steer",
        "--model",
        "planted",
        "--concept",
        "planted",
        "--layers",
        "1",
        "--coef",
        "-1",
        "--n",
        "6",
        "--show",
        "2",
        "--max-new-tokens",
        "2",
        "--n-boot",
        "100",
        "--out",
        str(tmp_path / "s"),
    )
    assert r.exit_code == 0, r.output
    assert "[negative]" in r.output and "[positive]" in r.output
    assert isinstance(Result.load(tmp_path / "s"), SteeringResult)


def test_check_on_the_decoy_fails_its_causal_checks(tmp_path):
    r = invoke(
        "check",
        "--model",
        "planted",
        "--concept",
        "decoy",
        "--layers",
        "1",
        "--n",
        "8",
        "--n-random",
        "3",
        "--checks",
        "causal,specific,readable",
        "--n-boot",
        "100",
        "--out",
        str(tmp_path / "c"),
    )
    assert r.exit_code == 0, r.output
    rep = Result.load(tmp_path / "c")
    assert isinstance(rep, FaithfulnessReport)
    v = rep.verdicts()
    assert not v["specific: steer -"] and not v["readable"] and not v["causal: steer +"]
    assert (tmp_path / "c" / "report.png").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["read", "--model", "planted", "--concept", "gravity"], "--concept='gravity'"),
        (["read", "--model", "planted", "--concept", "planted", "--layers", "5-9"], "out of range"),
        (
            ["read", "--model", "planted", "--concept", "planted", "--method", "svm"],
            "--method='svm'",
        ),
        (["read", "--model", "smollm2", "--concept", "decoy"], "only on '--model planted'"),
        (
            ["steer", "--model", "planted", "--concept", "planted", "--layers", "1", "--coef", "x"],
            "coefficients",
        ),
        (
            [
                "check",
                "--model",
                "planted",
                "--concept",
                "planted",
                "--checks",
                "vibes",
                "--layers",
                "1",
            ],
            "unknown checks",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    r = runner.invoke(app, ["represent", *args])
    assert r.exit_code == 2
    assert message in r.output and "Traceback" not in r.output


def test_parse_layers():
    assert parse_layers("all", 3) == [0, 1, 2]
    assert parse_layers("10-12, 4", 30) == [4, 10, 11, 12]
    assert parse_layers("-1", 30) == [29]
    with pytest.raises(fl.InputError, match="cannot read"):
        parse_layers("a-b", 30)


@pytest.mark.slow
def test_read_on_smollm2(smollm2, tmp_path):
    r = invoke(
        "read",
        "--model",
        "smollm2",
        "--concept",
        "truth",
        "--n",
        "24",
        "--layers",
        "14",
        "--n-stability",
        "0",
        "--n-boot",
        "100",
        "--out",
        str(tmp_path / "r"),
    )
    assert r.exit_code == 0, r.output
    res = Result.load(tmp_path / "r")
    assert res.layers == [14] and res.n_train + res.n_test == 24


def _spy(monkeypatch, owner, name):
    """Wrap ``owner.name`` so that the keyword arguments of every call are recorded (the call
    itself goes through)."""
    real, calls = getattr(owner, name), []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, spy)
    return calls


def test_read_takes_max_memory_and_keeps_the_numbers(tmp_path, monkeypatch):
    import numpy as np

    import faithlens.representations

    calls = _spy(monkeypatch, faithlens.representations, "read")
    args = ["read", "--model", "planted", "--concept", "planted", "--layers", "0,1", "--n", "32"]
    args += ["--n-stability", "0", "--n-boot", "100"]
    assert invoke(*args, "--out", str(tmp_path / "a")).exit_code == 0
    r = invoke(*args, "--max-memory", "200K", "--out", str(tmp_path / "b"))
    assert r.exit_code == 0, r.output
    assert [c["max_memory"] for c in calls] == [None, 200 << 10]
    a, b = Result.load(tmp_path / "a"), Result.load(tmp_path / "b")
    np.testing.assert_allclose(b.direction(1), a.direction(1), atol=1e-6)
    np.testing.assert_array_equal(b.accuracy, a.accuracy)


def test_check_takes_max_memory_for_the_reading_and_the_checks(tmp_path, monkeypatch):
    import faithlens.representations

    read = _spy(monkeypatch, faithlens.representations, "read")
    checks = _spy(monkeypatch, faithlens.representations, "faithfulness")
    args = ["check", "--model", "planted", "--concept", "decoy", "--layers", "1", "--n", "8"]
    args += ["--n-random", "3", "--checks", "causal,specific", "--n-boot", "100"]
    assert invoke(*args, "--out", str(tmp_path / "a")).exit_code == 0
    r = invoke(*args, "--max-memory", "1M", "--out", str(tmp_path / "b"))
    assert r.exit_code == 0, r.output
    assert [c["max_memory"] for c in read + checks] == [None, 1 << 20, None, 1 << 20]
    a, b = Result.load(tmp_path / "a"), Result.load(tmp_path / "b")
    assert b.verdicts() == a.verdicts()
