"""The induction replication (examples/induction_scrub.py) at a small size: each single claim
beats the naive combination, and the refinements recover more."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

import faithlens as fl

ROOT = Path(__file__).resolve().parents[2]


def _example(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_induction_replication_pattern(tmp_path):
    rep = _example("induction_scrub").main(
        ["--n", "200", "--pool", "400", "--out", str(tmp_path / "ind")]
    )
    t = rep.table.set_index("hypothesis")
    assert rep.baseline_loss > rep.original_loss + 0.5  # the induction heads matter
    naive = "naive: V, Q, K together"
    for single in ["V from embeddings", "Q from embeddings", "K from previous-token heads"]:
        # each single claim scores higher than the combination, beyond their intervals' overlap
        assert t.loc[single, "recovered"] > t.loc[naive, "recovered"]
    comp = rep.comparisons.set_index(["better", "worse"])
    # paired: the naive combination loses more than every single claim, and refinements recover
    assert (comp["low"] > 0).all(), comp
    assert t.loc["refined: Q, and V and K refined", "low"] > t.loc[naive, "high"]
    back = fl.Result.load(tmp_path / "ind")
    assert back.table.equals(rep.table)
    assert "naive" in back.summary()
    assert back.plot().axes
