"""End-to-end CLI: `faithlens das` (synthetic task) and `faithlens audit` (SmolLM2 IOI)."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

import faithlens as fl
from faithlens.cli import app

runner = CliRunner()


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_help_lists_the_commands():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    assert "audit" in res.output and "das" in res.output
    res = runner.invoke(app, ["das", "--help"])
    assert res.exit_code == 0 and "--cl-weight" in res.output


def test_das_synthetic_end_to_end(tmp_path):
    out = tmp_path / "das"
    args = [
        "das",
        "--synthetic",
        "og_holdouts",
        "--n-per-class",
        "20",
        "--classifier-epochs",
        "150",
        "--method",
        "linear",
        "--loss",
        "cl",
        "--epochs",
        "40",
        "--eval-every",
        "10",
        "--seed",
        "1",
        "--out",
        str(out),
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "IIA" in res.output and "OOD (task 2)" in res.output
    saved = fl.Result.load(out)
    assert isinstance(saved, fl.DASResult) and saved.loss == "cl" and saved.select == "emd"
    assert (out / "das.png").exists() and (out / "alignment" / "alignment.pt").exists()
    from faithlens.das import load_alignment

    al = load_alignment(out / "alignment")
    x = torch.randn(2, 18)
    assert torch.allclose(al.forward(x), saved.alignment.forward(x), atol=1e-6)


def test_bad_arguments_are_one_red_line():
    res = runner.invoke(app, ["das", "--synthetic", "nope", "--epochs", "1"])
    assert res.exit_code == 2 and "--synthetic='nope'" in res.output


@pytest.fixture
def cli_smollm2(smollm2, monkeypatch):
    """The CLI's model loader returns the session's SmolLM2 (loading is tested elsewhere)."""
    import faithlens.cli.das as cli_das
    import faithlens.cli.divergence as cli_div

    monkeypatch.setattr(cli_div, "load_model", lambda name, device=None, device_map=None: smollm2)
    monkeypatch.setattr(cli_das, "load_model", lambda name, device=None, device_map=None: smollm2)
    return smollm2


@pytest.mark.slow
def test_audit_smollm2_end_to_end(cli_smollm2, tmp_path):
    out = tmp_path / "audit"
    args = [
        "audit",
        "--site",
        "mlp_post.9",
        "--n",
        "8",
        "--patch",
        "head.9.6,head.9.7",
        "--steer",
        "resid_pre.9",
        "--metrics",
        "emd,nn_mse",
        "--splits",
        "2",
        "--out",
        str(out),
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "null space" in res.output and "row space" in res.output
    saved = fl.Result.load(out)
    assert isinstance(saved, fl.AuditResult)
    assert len(saved.conditions) == 2 and (out / "audit.png").exists()
    res = runner.invoke(app, ["audit", "--site", "mlp_post.9", "--n", "4"])
    assert res.exit_code == 2 and "nothing to audit" in res.output
    res = runner.invoke(app, ["audit", "--site", "mlp_pots.9", "--n", "4", "--zero", "head.1.1"])
    assert res.exit_code == 2 and "unknown site" in res.output


@pytest.mark.slow
def test_das_smollm2_then_audit_it(cli_smollm2, tmp_path):
    out = tmp_path / "das_lm"
    args = [
        "das",
        "--model",
        "smollm2",
        "--n",
        "8",
        "--site",
        "resid_pre.20",
        "--dims",
        "8",
        "--epochs",
        "3",
        "--lr",
        "0.01",
        "--out",
        str(out),
    ]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    saved = fl.Result.load(out)
    assert saved.site == "resid_pre.20" and saved.positions == "last" and len(saved.history) == 3
    res = runner.invoke(
        app,
        [
            "audit",
            "--site",
            "mlp_post.20",
            "--n",
            "8",
            "--das",
            str(out),
            "--metrics",
            "emd",
            "--splits",
            "2",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "DAS resid_pre.20" in res.output


def test_audit_in_a_log_shows_progress_each_number_once_and_no_meaningless_ratio(monkeypatch):
    # CliRunner's streams are not terminals: what a log, nohup or CI would get
    monkeypatch.delenv("COLUMNS", raising=False)
    args = ["audit", "--model", "zoo:induction", "--task", "induction", "--n", "16"]
    args += ["--site", "resid_post.1", "--top-heads", "2", "--splits", "2"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    # plain progress and status lines on stderr (no live bar that a file never shows)
    assert "loading zoo:induction..." in res.stderr and "auditing..." in res.stderr
    assert "patching heads: 28/28 (100%)" in res.stderr
    # the summary's "[condition]" line is text, not rich markup
    assert "[patch top-2 heads]" in res.stdout
    # each metric's line whole (never wrapped or cut in a log), each number printed once
    # (issue 19: the summary and then a table repeated every estimate)
    lines = {ln.split()[0]: ln for ln in res.stdout.splitlines() if "intervened" in ln}
    assert set(lines) >= {"emd", "mmd", "auroc"}, res.stdout
    assert "…" not in res.stdout and "│" not in res.stdout  # no second table of the same
    for metric, line in lines.items():
        assert "natural" in line and "excess" in line, line
        estimate = line.split("intervened", 1)[1].split()[0]
        assert res.stdout.count(f" {estimate} ") == 1, (metric, estimate)
    # no ratio where the natural baseline is not positive (here the unbiased MMD's), and why
    assert "no ratio (baseline <= 0)" in lines["mmd"]  # this seed's MMD baseline is negative
    assert all("ratio" in line for line in lines.values())
    assert fl.divergence.compare.NO_RATIO in res.stdout
