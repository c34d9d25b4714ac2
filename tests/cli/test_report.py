"""``faithlens report`` end to end: a command saves a result, ``report DIR`` writes its page, and
``report RUNS`` the index of a folder of runs; bad folders are one clear line."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

import faithlens as fl
from faithlens.cli import app

runner = CliRunner()


def test_report_of_a_saved_run_and_of_a_folder_of_runs(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    out = runs / "induction"
    args = ["patch", "--model", "zoo:induction", "--task", "induction", "--n", "8"]
    res = runner.invoke(app, [*args, "--sites", "head", "--n-boot", "50", "--out", str(out)])
    assert res.exit_code == 0, res.output

    res = runner.invoke(app, ["report", str(out)])
    assert res.exit_code == 0, res.output
    page = out / "report.html"
    assert f"wrote {page}" in res.output.replace("\n", "")
    text = page.read_text()
    assert "zoo:induction" in text and '<img src="data:image/png;base64,' in text
    assert fl.Result.load(out).model == "zoo:induction"  # still verifies: the page is a view

    res = runner.invoke(app, ["report", str(runs)])
    assert res.exit_code == 0, res.output
    index = (runs / "index.html").read_text()
    assert 'href="induction/report.html"' in index and "PatchingResult" in index


def test_bad_folders_are_one_clear_line(tmp_path: Path) -> None:
    res = runner.invoke(app, ["report", str(tmp_path / "nope")])
    said = " ".join(res.output.split())  # rich wraps long lines
    assert res.exit_code == 2
    assert "no such folder" in said and "Traceback" not in said
    (tmp_path / "empty").mkdir()
    res = runner.invoke(app, ["report", str(tmp_path / "empty")])
    assert res.exit_code == 2 and "holds no results folder" in " ".join(res.output.split())
