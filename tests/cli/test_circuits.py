"""``faithlens circuit`` end to end on zoo:induction with a tiny n."""

from __future__ import annotations

import numpy as np
from typer.testing import CliRunner

import faithlens as fl
from faithlens.circuits import CircuitFaithfulness, EdgeScores, FaithfulnessCurve
from faithlens.cli import app

runner = CliRunner()


def test_circuit_writes_reloadable_results(tmp_path):
    out = tmp_path / "c"
    args = ["circuit", "--model", "zoo:induction", "--task", "induction", "--n", "6"]
    args += ["--method", "eap-ig", "--steps", "2", "--top-k", "12", "--n-boot", "50"]
    res = runner.invoke(app, [*args, "--max-memory", "64M", "--scrub", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "CPR" in res.output and "normalised faithfulness" in res.output
    scores = EdgeScores.load(out / "scores")
    curve = FaithfulnessCurve.load(out / "curve")
    chosen = CircuitFaithfulness.load(out / "circuit")
    assert scores.method == "eap-ig" and scores.meta["steps"] == 2 and scores.n == 6
    assert len(chosen.edges) == 12 and chosen.edges == list(scores.top_k(12).edges)
    assert curve.method == "eap-ig" and curve.size.tolist() == list(fl.circuits.MIB_SIZES)
    assert curve.faithfulness[-1] == np.float64(1.0) or abs(curve.faithfulness[-1] - 1) < 1e-6
    assert all((out / d / "plot.png").exists() for d in ("scores", "curve", "circuit", "scrub"))
    scrubbed = fl.Result.load(out / "scrub")
    assert type(scrubbed).__name__ == "ScrubResult" and "% recovered" in res.output
    # the same numbers as the library
    model = fl.load("zoo:induction")
    task = fl.tasks.build("induction", model, n=6, seed=0)
    lib = fl.circuits.eap_ig(model, task, steps=2, n_boot=50)
    np.testing.assert_allclose(scores.values, lib.values, rtol=0, atol=1e-6)
    # an existing folder is refused without --overwrite; without --scrub there is no scrub/
    again = runner.invoke(app, [*args, "--out", str(out)])
    assert again.exit_code != 0 and "--overwrite" in again.output
    plain = runner.invoke(app, [*args, "--method", "exact", "--out", str(tmp_path / "p")])
    assert plain.exit_code == 0, plain.output
    assert not (tmp_path / "p" / "scrub").exists()
    assert EdgeScores.load(tmp_path / "p" / "scores").method == "exact"


def test_circuit_bad_options():
    res = runner.invoke(app, ["circuit", "--method", "acdc"])
    assert res.exit_code == 2 and "--method" in res.output
    res = runner.invoke(app, ["circuit", "--top-k", "0"])
    assert res.exit_code == 2 and "--top-k" in res.output
    res = runner.invoke(app, ["circuit", "--n", "4", "--top-k", "500", "--n-boot", "20"])
    assert res.exit_code == 2 and "--top-k" in res.output
