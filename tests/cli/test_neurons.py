"""``faithlens neurons ...`` end to end (typer's CliRunner)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from faithlens.cli import app
from faithlens.results import Result

runner = CliRunner()


def text(r):
    """The output with rich's line wrapping undone."""
    return " ".join(r.output.split())


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    n = 600
    c = (rng.random((n, 5)) < 0.15).astype(np.float32)
    x = np.stack([3 * c[:, 1] + rng.standard_normal(n), rng.standard_normal(n)], 1)
    np.save(tmp_path / "acts.npy", x.astype(np.float32))
    pd.DataFrame(c, columns=["red", "cat", "run", "big", "sad"]).to_csv(
        tmp_path / "con.csv", index=False
    )
    return tmp_path


def test_explain_from_files_saves_and_shows(files):
    out = files / "res"
    r = runner.invoke(
        app,
        [
            "neurons",
            "explain",
            "-a",
            str(files / "acts.npy"),
            "-c",
            str(files / "con.csv"),
            "--metric",
            "iou",
            "--metric",
            "auroc",
            "--alpha",
            "0.15",
            "--n-boot",
            "60",
            "--out",
            str(out),
            "--plot",
            str(files / "p.png"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "certified 'cat'" in text(r) and "NOT certified" in text(r)
    assert "[iou]" in text(r)  # summaries print verbatim (no rich markup)
    res = Result.load(out)
    assert res.metrics == ("iou", "auroc") and res.concepts[1] == "cat"
    assert (files / "p.png").stat().st_size > 0
    r = runner.invoke(app, ["neurons", "show", str(out), "--unit", "0", "--metric", "auroc"])
    assert r.exit_code == 0 and "cat" in text(r), r.output
    r = runner.invoke(app, ["neurons", "show", str(out)])
    assert r.exit_code == 0 and "units certified" in text(r)


def test_explain_reports_bad_input_without_traceback(files):
    bad = files / "short.csv"
    pd.read_csv(files / "con.csv").iloc[:100].to_csv(bad, index=False)
    r = runner.invoke(app, ["neurons", "explain", "-a", str(files / "acts.npy"), "-c", str(bad)])
    assert r.exit_code == 2 and "one label row per probing sample" in text(r)
    r = runner.invoke(app, ["neurons", "explain", "-a", str(files / "nope.npy"), "-c", str(bad)])
    assert r.exit_code == 2 and "does not exist" in text(r)
    r = runner.invoke(app, ["neurons", "explain"])
    assert r.exit_code == 2 and "--activations" in text(r)


def test_bound_and_required_n():
    r = runner.invoke(
        app, ["neurons", "bound", "--metric", "accuracy", "--n", "1000", "--concepts", "50"]
    )
    assert r.exit_code == 0 and "0.0616" in text(r)
    r = runner.invoke(
        app, ["neurons", "bound", "--metric", "accuracy", "--epsilon", "0.05", "--concepts", "1000"]
    )
    assert r.exit_code == 0 and "n >= 2120" in text(r)
    r = runner.invoke(app, ["neurons", "bound", "--metric", "iou", "--n", "100"])
    assert r.exit_code == 2 and "alpha" in text(r)


def test_validate_command(tmp_path):
    r = runner.invoke(
        app,
        [
            "neurons",
            "validate",
            "--metric",
            "iou",
            "--n",
            "100,300",
            "--reps",
            "30",
            "--out",
            str(tmp_path / "v"),
            "--plot",
            str(tmp_path / "v.png"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "coverage" in text(r) and (tmp_path / "v" / "result.json").exists()


def test_dissect_command(tmp_path):
    g = torch.Generator().manual_seed(0)
    np.save(tmp_path / "maps.npy", torch.randn(10, 3, 4, 4, generator=g).numpy())
    np.save(tmp_path / "masks.npy", (torch.rand(10, 2, 8, 8, generator=g) < 0.3).float().numpy())
    r = runner.invoke(
        app,
        [
            "neurons",
            "dissect",
            "--maps",
            str(tmp_path / "maps.npy"),
            "--masks",
            str(tmp_path / "masks.npy"),
            "--names",
            "sky,tree",
            "--quantile",
            "0.05",
            "--n-boot",
            "20",
            "--out",
            str(tmp_path / "d"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "Network Dissection" in text(r) and "sky" in text(r)
    assert Result.load(tmp_path / "d").concepts == ("sky", "tree")


def test_digits_command(tmp_path):
    r = runner.invoke(
        app,
        ["neurons", "digits", "--n-probe", "150", "--n-boot", "20", "--out", str(tmp_path / "dg")],
    )
    assert r.exit_code == 0, r.output
    # 150 digits identify every logit (single-concept BE sets) but are too few to certify
    assert "BE set {digit 0}" in text(r) and "Network Dissection" in text(r)
    assert (tmp_path / "dg" / "logits" / "result.json").exists()


@pytest.mark.smollm2
def test_explain_command_on_a_model(smollm2, monkeypatch, tmp_path):
    import faithlens.cli._common as common

    monkeypatch.setattr(common, "load_model", lambda name, device=None, device_map=None: smollm2)
    import faithlens.cli.neurons as cli_neurons

    monkeypatch.setattr(
        cli_neurons, "load_model", lambda name, device=None, device_map=None: smollm2
    )
    texts = tmp_path / "t.txt"
    texts.write_text("The red cat sat on the mat.\nMy mother is a doctor in Paris.\n" * 10)
    r = runner.invoke(
        app,
        [
            "neurons",
            "explain",
            "--model",
            "smollm2",
            "--site",
            "mlp_post.2",
            "--texts",
            str(texts),
            "--units",
            "0:16",
            "--n-boot",
            "20",
            "--alpha",
            "0.05",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "16 units" in text(r) and "20 groups" in text(r)


def test_sanity_command(tmp_path):
    r = runner.invoke(
        app,
        [
            "neurons",
            "sanity",
            "--metric",
            "iou",
            "--metric",
            "recall",
            "--n",
            "4000",
            "--seeds",
            "10",
            "--frequencies",
            "0.1,0.01",
            "--out",
            str(tmp_path / "s"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert "pass both: iou" in text(r)


def test_unreadable_comma_lists_name_the_option():
    r = runner.invoke(app, ["neurons", "validate", "--n", "100,abc"])
    assert r.exit_code == 2 and "--n takes comma-separated int values" in text(r)
    r = runner.invoke(app, ["neurons", "sanity", "--frequencies", "0.1,x"])
    assert r.exit_code == 2 and "--frequencies" in text(r) and "'x'" in text(r)


def _spy(monkeypatch, owner, name):
    """Wrap ``owner.name`` so that the keyword arguments of every call are recorded (the call
    itself goes through)."""
    real, calls = getattr(owner, name), []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, spy)
    return calls


def _dissect_files(folder):
    g = torch.Generator().manual_seed(0)
    np.save(folder / "maps.npy", torch.randn(10, 3, 4, 4, generator=g).numpy())
    np.save(folder / "masks.npy", (torch.rand(10, 2, 8, 8, generator=g) < 0.3).float().numpy())


# command, its arguments (FILES: the fixture's folder), where the method lives, its name
MEMORY_COMMANDS = {
    "explain": (
        ["-a", "FILES/acts.npy", "-c", "FILES/con.csv", "--alpha", "0.15", "--n-boot", "40"],
        "faithlens.neurons",
        "explain",
    ),
    "dissect": (
        ["--maps", "FILES/maps.npy", "--masks", "FILES/masks.npy", "--n-boot", "20"],
        "faithlens.neurons.dissect",
        "dissect",
    ),
    "validate": (
        ["--metric", "iou", "--n", "100,300", "--reps", "20"],
        "faithlens.neurons.simulate",
        "simulate",
    ),
    "sanity": (
        ["--metric", "iou", "--n", "4000", "--seeds", "10", "--frequencies", "0.1,0.01"],
        "faithlens.neurons.sanity",
        "sanity_checks",
    ),
}


@pytest.mark.parametrize("command", sorted(MEMORY_COMMANDS))
def test_max_memory_is_the_kernels_budget_and_keeps_the_numbers(files, monkeypatch, command):
    import importlib

    args, owner, name = MEMORY_COMMANDS[command]
    _dissect_files(files)
    args = [a.replace("FILES", str(files)) for a in args]
    calls = _spy(monkeypatch, importlib.import_module(owner), name)
    default = runner.invoke(app, ["neurons", command, *args, "--out", str(files / "a")])
    small = runner.invoke(
        app, ["neurons", command, *args, "--max-memory", "256K", "--out", str(files / "b")]
    )
    assert default.exit_code == 0, default.output
    assert small.exit_code == 0, small.output
    assert [c["max_memory"] for c in calls] == [None, 256 << 10]
    a, b = Result.load(files / "a").to_frame(), Result.load(files / "b").to_frame()
    pd.testing.assert_frame_equal(b, a, check_exact=False, rtol=1e-5, atol=1e-6)


def test_digits_takes_max_memory_for_both_of_its_methods(tmp_path, monkeypatch):
    import importlib

    import faithlens.neurons

    explained = _spy(monkeypatch, faithlens.neurons, "explain")
    dissected = _spy(monkeypatch, importlib.import_module("faithlens.neurons.dissect"), "dissect")
    r = runner.invoke(
        app, ["neurons", "digits", "--n-probe", "150", "--n-boot", "20", "--max-memory", "4M"]
    )
    assert r.exit_code == 0, r.output
    assert "Network Dissection" in text(r)
    assert [c["max_memory"] for c in explained + dissected] == [4 << 20, 4 << 20]


def test_show_unit_plots_that_unit(tmp_path, monkeypatch):
    # the issue: `neurons show --unit 3 --plot` plotted units 0-5
    from faithlens.neurons.result import NeuronExplanation

    rng = np.random.default_rng(1)
    c = (rng.random((300, 3)) < 0.3).astype(np.float32)
    x = rng.standard_normal((300, 8)) + 2 * c[:, [0, 1, 2, 0, 1, 2, 0, 1]]
    np.save(tmp_path / "acts.npy", x.astype(np.float32))
    pd.DataFrame(c, columns=["red", "cat", "run"]).to_csv(tmp_path / "con.csv", index=False)
    out = tmp_path / "res"
    args = ["neurons", "explain", "-a", str(tmp_path / "acts.npy"), "-c", str(tmp_path / "con.csv")]
    r = runner.invoke(app, [*args, "--n-boot", "30", "--out", str(out)])
    assert r.exit_code == 0, r.output
    figures = []
    plot = NeuronExplanation.plot

    def recording(self, *a, **k):
        figures.append(plot(self, *a, **k))
        return figures[-1]

    monkeypatch.setattr(NeuronExplanation, "plot", recording)
    png = tmp_path / "u3.png"
    r = runner.invoke(app, ["neurons", "show", str(out), "--unit", "3", "--plot", str(png)])
    assert r.exit_code == 0, r.output
    assert png.stat().st_size > 0
    units = Result.load(out).units
    titles = [ax.get_title() for ax in figures[0].axes if ax.get_title()]
    assert titles and all(t.startswith(f"{units[3]}:") for t in titles[:1])
    assert not any(t.startswith(f"{units[u]}:") for t in titles for u in (0, 1, 2, 4, 5))


def test_sanity_at_a_small_n_leaves_out_the_rare_default_frequencies(tmp_path):
    with pytest.warns(UserWarning, match=r"0\.0001; they are left out"):
        r = runner.invoke(
            app, ["neurons", "sanity", "--metric", "iou", "--n", "10000", "--seeds", "2"]
        )
    assert r.exit_code == 0, r.output
    assert "frequencies 0.499, 0.1, 0.01, 0.001;" in text(r)
