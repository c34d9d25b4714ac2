"""``faithlens logit-lens`` and ``faithlens dla`` end to end on zoo:induction with a tiny n."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

import faithlens as fl
from faithlens.cli import app

runner = CliRunner()
BASE = ["--model", "zoo:induction", "--task", "induction", "--n", "6", "--n-boot", "50"]


def test_logit_lens_writes_the_library_result(tmp_path):
    out = tmp_path / "lens"
    res = runner.invoke(app, ["logit-lens", *BASE, "--layers", "1", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "logit lens of zoo:induction" in res.output
    saved = fl.LayerLensResult.load(out)
    assert (out / "plot.png").exists() and (out / "report.html").exists()
    model = fl.load("zoo:induction")
    task = fl.tasks.build("induction", model, n=6, seed=0)
    lib = fl.logit_lens(model, task, layers=[1], n_boot=50)
    assert saved.layers == [1]
    np.testing.assert_allclose(saved.per_example, lib.per_example, rtol=0, atol=1e-6)
    again = runner.invoke(app, ["logit-lens", *BASE, "--out", str(out)])
    assert again.exit_code != 0 and "--overwrite" in again.output


def test_dla_writes_the_library_result(tmp_path):
    out = tmp_path / "dla"
    res = runner.invoke(app, ["dla", *BASE, "--top", "4", "--which", "corrupt", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "direct logit attribution" in res.output and "head." in res.output
    saved = fl.DirectLogitAttribution.load(out)
    model = fl.load("zoo:induction")
    task = fl.tasks.build("induction", model, n=6, seed=0)
    lib = fl.direct_logit_attribution(model, task, which="corrupt", n_boot=50)
    assert saved.components == lib.components and saved.which == "corrupt"
    np.testing.assert_allclose(saved.per_example, lib.per_example, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "args, needle",
    [
        (["logit-lens", "--site", "mlp_out"], "--site"),
        (["logit-lens", "--layers", "one"], "--layers"),
        (["logit-lens", "--which", "both"], "--which"),
        (["dla", "--top", "0"], "--top"),
        (["dla", "--n-boot", "0"], "--n-boot"),
    ],
)
def test_bad_options_are_refused_before_the_model_loads(args, needle):
    res = runner.invoke(app, args)
    assert res.exit_code == 2 and needle in res.output
    assert "loading" not in res.output
