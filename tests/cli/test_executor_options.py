"""The root options that choose where a command's chunks run (``faithlens --executor ray
--workers N COMMAND ...``, cli/__init__.py): bad combinations are one-line errors before any
work, and a command run on Ray workers writes the result the in-process run writes."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from typer.testing import CliRunner

import faithlens as fl
from faithlens.cli import app

runner = CliRunner()
# the tests that start a local Ray cluster run in one pytest-xdist process, one after another
pytestmark = pytest.mark.xdist_group("ray")
PATCH = ["patch", "--model", "zoo:induction", "--task", "induction", "--n", "6", "--n-boot", "50"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--executor", "dask", *PATCH], "is not an executor"),
        (["--workers", "2", *PATCH], "takes no options"),
        (["--executor", "inprocess", "--address", "auto", *PATCH], "takes no options"),
        (["--workers", "0", *PATCH], "takes no options"),
        (["--gpus-per-worker", "0", *PATCH], "takes no options"),
    ],
)
def test_bad_executor_options_are_refused_before_work(argv, message, tmp_path):
    res = runner.invoke(app, [*argv, "--out", str(tmp_path / "out")])
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert not (tmp_path / "out").exists()


def test_the_default_is_in_process_and_leaves_the_executor_as_it_was(tmp_path):
    from faithlens.executor import InProcess, current_executor

    res = runner.invoke(app, [*PATCH, "--out", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    assert isinstance(current_executor(), InProcess)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs faithlens[ray]")
def test_a_command_on_ray_workers_writes_the_in_process_result(tmp_path):
    import ray

    from faithlens.executor import InProcess, current_executor

    ray.init(num_cpus=2, include_dashboard=False, ignore_reinit_error=True)
    try:
        on_ray = runner.invoke(
            app, ["--executor", "ray", "--workers", "2", *PATCH, "--out", str(tmp_path / "ray")]
        )
    finally:
        ray.shutdown()
    assert on_ray.exit_code == 0, on_ray.output
    assert isinstance(current_executor(), InProcess)  # the block ended with the command
    here = runner.invoke(app, [*PATCH, "--out", str(tmp_path / "here")])
    assert here.exit_code == 0, here.output
    a, b = fl.Result.load(tmp_path / "ray"), fl.Result.load(tmp_path / "here")
    for field in ("effect", "se", "ci_low", "ci_high", "patched", "base", "source"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
