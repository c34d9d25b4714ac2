"""``faithlens demo`` end to end, at a small size (the default size is for humans)."""

from __future__ import annotations

from typer.testing import CliRunner

import faithlens as fl
from faithlens.cli import app

runner = CliRunner()


def test_demo_help():
    res = runner.invoke(app, ["demo", "--help"])
    assert res.exit_code == 0, res.output
    assert "--out" in res.output and "zoo:paren" in res.output


def test_demo_writes_results(tmp_path):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--n", "60", "--pool", "300", "--patch-n", "12"]
    res = runner.invoke(app, [*args, "--n-boot", "100"])
    assert res.exit_code == 0, res.output
    # the tables are printed, with their intervals
    assert "head.1.3" in res.output and "effect_ci_low" in res.output
    assert "claims 1+2+3" in res.output and "95% CI" in res.output
    text = (out / "summary.txt").read_text()
    assert "zoo:induction" in text and "claim 1" in text and "CPU time" in text
    for sub in ["patch_induction", "patch_paren", "paren_scrub"]:
        assert (out / sub / "result.json").exists(), sub
    assert (out / "patch_paren" / "heatmap.png").exists()
    assert (out / "paren_scrub" / "recovered.png").exists()
    rep = fl.Result.load(out / "paren_scrub")
    assert rep.n == 60 and len(rep.table) == 7
    assert isinstance(fl.Result.load(out / "paren_scrub" / "scrub0"), fl.ScrubResult)
    # the pages of every result and an index of them, written after the folder is in place
    assert f"report: {out / 'index.html'}" in " ".join(res.output.split())
    for sub in ["patch_induction", "patch_paren", "paren_scrub"]:
        assert "<table" in (out / sub / "report.html").read_text(), sub
    assert "patch_paren/report.html" in (out / "index.html").read_text()


def test_demo_bad_size_is_one_clear_line(tmp_path):
    res = runner.invoke(app, ["demo", "--out", str(tmp_path / "d"), "--n", "1", "--patch-n", "8"])
    assert res.exit_code == 2
    assert "n and pool must be at least 2" in res.output
    res = runner.invoke(app, ["demo", "--out", str(tmp_path / "d"), "--threads", "-1"])
    assert res.exit_code == 2 and "--threads" in res.output
