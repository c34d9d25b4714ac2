"""examples/paren_heads.py runs and finds Redwood's roles in the shipped zoo:paren;
examples/paren_seeds.py runs the roles and the scrubbing model by model."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from faithlens.scrubbing.paren import ParenRoles

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "paren_heads.py"
SEEDS = EXAMPLE.with_name("paren_seeds.py")


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
    # ... which are the defaults of the scrubbing hypotheses
    assert roles.paren_roles() == ParenRoles()

    # ... and the evidence behind them, with confidence intervals.
    probe = roles.probe.set_index("head")
    assert probe.r2_p1["head.0.0"] > 0.85
    assert probe.r2_p1["head.0.0"] - probe.r2_p1.drop("head.0.0").max() > 0.3
    # unlike Redwood's suffix head, it does not carry the suffix proportion p_i (docs/zoo.md)
    assert probe.r2_suffix_p["head.0.0"] < 0.6 and probe.attn_share_at_or_after["head.0.0"] < 0.6
    dla = roles.dla.set_index("component")
    for h in roles.count_heads:
        assert dla.spec_low[h] > 0.5  # pushes to 'unbalanced' on count failures only
    assert dla.spec_high[roles.horizon_head] < 0

    pat = roles.patching.set_index("patched")
    base = pat.loc["(none)"]
    h = pat.loc[roles.horizon_head]
    assert h.acc_horizon_only_high < base.acc_horizon_only_low - 0.1  # horizon failures hidden
    # count failures still caught: 125 / 125 count-only strings, 95% Wilson low 0.970 (> 0.95
    # failed at 123 / 125); > 0.9 holds down to 121 / 125
    assert h.acc_count_only_low > 0.9
    joint = roles.joint.set_index("patched")
    c = joint.loc["count heads"]
    # the count heads carry count evidence: 105 / 125 (0.84) against 125 / 125. The old
    # c_high < base_low - 0.05 held by 4 strings (1 SE); as a two-proportion z with each SE
    # from its 95% interval's width: z = 4.8
    se = lambda r: (r.acc_count_only_high - r.acc_count_only_low) / 3.92  # noqa: E731
    z = (base.acc_count_only - c.acc_count_only) / (se(base) ** 2 + se(c) ** 2) ** 0.5
    assert z > 3, z
    both = joint.loc["all three"]
    assert both.acc_count_only < 0.2  # together they carry nearly all the count evidence


@pytest.mark.slow
def test_paren_seeds_example(example, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("paren_seeds_example", SEEDS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "seeds.csv"
    hyps = "claim 1,claim 1 (count only),claims 1+3,claims 1+3 (raw p)"
    argv = ["zoo:paren", "--n", "40", "--pool", "200", "--roles-n", "300", "--hypotheses", hyps]
    frame = module.main([*argv, "--out", str(out)])
    printed = capsys.readouterr().out
    assert "claim 1:" in printed and "'claims 1+3 (raw p)' - 'claims 1+3'" in printed
    row = frame.iloc[0]
    assert row.proportion_head == "head.0.0" and row.horizon_head == "2.1"
    assert row.count_heads == "1.0 1.1 2.0"
    # every estimate has its interval; the proportion head spreads its attention (share ~ 1/2)
    for col in ["share_at_or_after", "claim1", "adjusted_beats_raw", "open_beats_count_only"]:
        assert row[f"{col}_low"] <= row[col] <= row[f"{col}_high"], col
    assert 0.4 < row.share_at_or_after < 0.65
    assert row.r2_suffix_p < row.r2_p1
    assert "claim2_lowers" not in frame.columns  # claims 1+2 was not asked for
    assert out.exists() and len(out.read_text().splitlines()) == 2
    with pytest.raises(SystemExit):
        module.main(["no/such/model.safetensors"])
    with pytest.raises(SystemExit):
        module.main(["zoo:paren", "--hypotheses", "claim 9"])
