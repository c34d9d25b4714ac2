"""faithlens.neurons.engine: the deprecated path of faithlens.neurons.kernels (remove this file
with the alias)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from faithlens.neurons import kernels


def test_the_old_path_is_the_kernels_module_with_a_deprecation_warning(monkeypatch):
    monkeypatch.delitem(sys.modules, "faithlens.neurons.engine", raising=False)
    with pytest.warns(DeprecationWarning, match="faithlens.neurons.kernels"):
        old = importlib.import_module("faithlens.neurons.engine")
    assert old is kernels
    assert old.Problem is kernels.Problem and old.expand_weights is kernels.expand_weights


def test_faithlens_itself_imports_neither_old_path():
    """Importing faithlens (and its CLI) loads neither deprecated alias, so it never warns."""
    code = (
        "import sys, faithlens, faithlens.cli\n"
        "old = {'faithlens.neurons.engine', 'faithlens.scrubbing.exact'}\n"
        "assert not old & set(sys.modules), old & set(sys.modules)\n"
    )
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": src}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
