"""examples/paren_heads.py runs and finds Redwood's roles in the shipped zoo:paren."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "paren_heads.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("paren_heads_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_paren_heads_example(example, capsys):
    roles = example.main(["--n", "1000", "--seed", "0"])
    printed = capsys.readouterr().out
    assert "horizon head 2.1" in printed and "Direct logit attribution" in printed

    # The shipped model's roles (docs/zoo.md reports them).
    assert roles.proportion_head == "head.0.0"
    assert sorted(roles.count_heads) == ["head.1.0", "head.1.1"]
    assert roles.horizon_head == "head.2.1"

    # ... and the evidence behind them, with confidence intervals.
    probe = roles.probe.set_index("head")
    assert probe.r2_p1["head.0.0"] > 0.85
    assert probe.r2_p1["head.0.0"] - probe.r2_p1.drop("head.0.0").max() > 0.3
    dla = roles.dla.set_index("component")
    for h in roles.count_heads:
        assert dla.spec_low[h] > 0.5  # pushes to 'unbalanced' on count failures only
    assert dla.spec_high[roles.horizon_head] < 0

    pat = roles.patching.set_index("patched")
    base = pat.loc["(none)"]
    h = pat.loc[roles.horizon_head]
    assert h.acc_horizon_only_high < base.acc_horizon_only_low - 0.1  # horizon failures hidden
    assert h.acc_count_only_low > 0.95  # count failures still caught
    joint = roles.joint.set_index("patched")
    c = joint.loc["count heads"]
    assert c.acc_count_only_high < base.acc_count_only_low - 0.05
    both = joint.loc["all three"]
    assert both.acc_count_only < 0.2  # together they carry nearly all the count evidence
