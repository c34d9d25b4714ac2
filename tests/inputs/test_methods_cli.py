"""Every bad option of ``faithlens das | scrub | represent | neurons | zoo`` is refused up front:
exit code 2, one line naming the option and the value, no traceback, and no expensive work (the
model loader, task builder, training loop or scrub engine is replaced by one that raises)."""

from __future__ import annotations

import importlib
import textwrap

import pytest
from typer.testing import CliRunner

from faithlens.cli import app

runner = CliRunner()


class Expensive(AssertionError):
    """Raised by the monkeypatched expensive function: validation came too late."""


def expensive(*_a, **_k):
    raise Expensive("expensive work ran")


def flat(r) -> str:
    return " ".join(r.output.split())  # rich wraps long lines


def assert_refused(r, *names: str) -> None:
    out = flat(r)
    assert r.exit_code == 2, out
    assert not isinstance(r.exception, Expensive), "expensive work ran"
    assert "Traceback" not in r.output
    for name in names:
        assert name in out, (name, out)


# ---------------------------------------------------------------- das


@pytest.fixture
def no_das_work(monkeypatch):
    import faithlens.loading
    import faithlens.tasks
    import faithlens.tasks.synthetic_das

    cli = importlib.import_module("faithlens.cli.das")
    monkeypatch.setattr(cli, "load_model", expensive)
    monkeypatch.setattr(faithlens.loading, "load", expensive)
    monkeypatch.setattr(faithlens.tasks, "build", expensive)
    monkeypatch.setattr(faithlens.tasks.synthetic_das, "synthetic_das", expensive)
    monkeypatch.setattr(importlib.import_module("faithlens.das.train"), "das", expensive)


LM = ["das", "--site", "resid_pre.1", "--model", "zoo:paren", "--task", "ioi"]
SYN = ["das", "--synthetic", "og_holdouts"]
DAS_CLI_BAD = [
    ([*LM, "--lr", "nan"], "--lr", "nan"),
    ([*LM, "--lr", "inf"], "--lr", "inf"),
    ([*LM, "--lr", "-1"], "--lr", "-1.0"),
    ([*LM, "--batch-size", "0"], "--batch-size", "0"),
    ([*LM, "--batch-size", "-4"], "--batch-size", "-4"),
    ([*LM, "--positions", "middle"], "--positions", "middle"),
    ([*LM, "--method", "rotatoin"], "--method", "rotatoin"),
    ([*LM, "--loss", "nope"], "--loss", "nope"),
    ([*LM, "--loss", "cl"], "--loss", "cl"),
    ([*LM, "--select", "emd"], "--select", "emd"),
    ([*LM, "--dims", "0"], "--dims", "0"),
    ([*LM, "--dims", "-1"], "--dims", "-1"),
    ([*LM, "--eval-every", "0"], "--eval-every", "0"),
    ([*LM, "--epochs", "0"], "--epochs", "0"),
    ([*LM, "--cl-form", "x"], "--cl-form", "x"),
    ([*LM, "--cl-weight", "nan"], "--cl-weight", "nan"),
    ([*LM, "--seed", "-1"], "--seed", "-1"),
    ([*LM, "--n", "1"], "--n", "1"),
    ([*LM, "--n", "0"], "--n", "0"),
    ([*LM, "--device", "gpu"], "--device", "gpu"),
    (["das", "--model", "zoo:paren"], "--site", "required"),
    (["das", "--site", "h", "--task", "nope"], "--task", "nope"),
    ([*SYN, "--classifier-epochs", "0"], "--classifier-epochs", "0"),
    ([*SYN, "--n-per-class", "1"], "--n-per-class", "1"),
    ([*SYN, "--lr", "nan"], "--lr", "nan"),
    ([*SYN, "--loss", "cl", "--cl-weight", "0"], "--cl-weight", "0.0"),
    (["das", "--synthetic", "og"], "--synthetic", "og"),
    ([*SYN, "--dims", "19"], "--dims", "19"),
]


@pytest.mark.parametrize(
    ("args", "name", "value"), DAS_CLI_BAD, ids=[" ".join(c[0][1:]) for c in DAS_CLI_BAD]
)
def test_das_cli_refuses_bad_options_before_work(no_das_work, args, name, value):
    assert_refused(runner.invoke(app, args), name, value)


# ---------------------------------------------------------------- scrub

HYP_FILE = textwrap.dedent(
    """
    import torch
    from torch import nn
    import faithlens as fl
    from faithlens import scrubbing as sc

    class Op(nn.Module):
        def __init__(self, f):
            super().__init__()
            self.f = f
        def forward(self, *a):
            return self.f(*a)

    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.A = Op(lambda a: 2 * a)
            self.B = Op(lambda b: 3 * b)
            self.C = Op(lambda a, b: a + b)
        def forward(self, x0, x1):
            return self.C(self.A(x0), self.B(x1))

    def model():
        return fl.wrap(Toy())

    def data(model, n, seed):
        g = torch.Generator().manual_seed(seed)
        x = torch.randint(0, 10, (ROWS, 2), generator=g).float()
        return sc.ScrubData(x0=x[:, :1], x1=x[:, 1:], y=2 * x[:, :1] + 3 * x[:, 1:])

    behaviour = sc.MSE("y")
    hypothesis = sc.Hypothesis("A only")
    hypothesis.add("A", sc.to("A"), feature=lambda d: d["x0"][:, 0])
    features = {"x1": lambda d: d["x1"][:, 0]}
    """
)

SCRUB_CLI_BAD = [
    (["--n", "1"], "--n", "1"),
    (["--n", "0"], "--n", "0"),
    (["--n", "-5"], "--n", "-5"),
    (["--budget", "-1"], "--budget", "-1"),
    (["--adversary", "--budget", "0"], "--budget", "0"),
    (["--adversary", "--steps", "0"], "--steps", "0"),
    (["--steps", "-1"], "--steps", "-1"),
    (["--batch-size", "0"], "--batch-size", "0"),
    (["--seed", "-1"], "--seed", "-1"),
    (["--device", "tpu"], "--device", "tpu"),
]


@pytest.mark.parametrize(
    ("args", "name", "value"), SCRUB_CLI_BAD, ids=[" ".join(c[0]) for c in SCRUB_CLI_BAD]
)
def test_scrub_cli_refuses_bad_options_before_work(tmp_path, monkeypatch, args, name, value):
    cli = importlib.import_module("faithlens.cli.scrubbing")
    monkeypatch.setattr(cli, "load_hypothesis_file", expensive)
    monkeypatch.setattr(cli, "load_model", expensive)
    f = tmp_path / "hyp.py"
    f.write_text(HYP_FILE.replace("ROWS", "50"))
    assert_refused(runner.invoke(app, ["scrub", str(f), *args]), name, value)


def test_scrub_cli_refuses_a_one_row_pool_before_the_scrub(tmp_path, monkeypatch):
    engine = importlib.import_module("faithlens.scrubbing.evaluate")
    monkeypatch.setattr(engine, "finish", expensive)
    monkeypatch.setattr(engine, "run_prepared", expensive)
    f = tmp_path / "hyp.py"
    f.write_text(HYP_FILE.replace("ROWS", "1"))
    assert_refused(runner.invoke(app, ["scrub", str(f)]), "data", "1 row", "at least 2")
    # a dry run of one row still shows the plan
    r = runner.invoke(app, ["scrub", str(f), "--dry-run"])
    assert r.exit_code == 0, r.output


# ---------------------------------------------------------------- zoo

ZOO_CLI_BAD = [
    (["--threads", "0"], "--threads", "0"),
    (["--threads", "-1"], "--threads", "-1"),
    (["--steps", "0"], "--steps", "0"),
    (["--until", "-1"], "--until", "-1"),
    (["--seed", "-3"], "--seed", "-3"),
    (["--device", "gpu"], "--device", "gpu"),
]


@pytest.mark.parametrize(
    ("args", "name", "value"), ZOO_CLI_BAD, ids=[" ".join(c[0]) for c in ZOO_CLI_BAD]
)
def test_zoo_train_cli_refuses_bad_options_before_training(
    tmp_path, monkeypatch, args, name, value
):
    import faithlens.zoo

    monkeypatch.setattr(faithlens.zoo, "train", expensive)
    r = runner.invoke(app, ["zoo", "train", "paren", "--out", str(tmp_path / "run"), *args])
    assert_refused(r, name, value)
    assert not (tmp_path / "run").exists()


def test_zoo_cli_refuses_an_unknown_model(tmp_path, monkeypatch):
    import faithlens.zoo

    monkeypatch.setattr(faithlens.zoo, "train", expensive)
    assert_refused(runner.invoke(app, ["zoo", "train", "gpt5"]), "gpt5")
    assert_refused(runner.invoke(app, ["zoo", "card", "gpt5"]), "gpt5")


# ---------------------------------------------------------------- neurons


@pytest.fixture
def neuron_files(tmp_path):
    import numpy as np
    import pandas as pd
    import torch

    rng = np.random.default_rng(0)
    np.save(tmp_path / "acts.npy", rng.standard_normal((60, 5)).astype(np.float32))
    pd.DataFrame((rng.random((60, 3)) < 0.3).astype(float), columns=["a", "b", "c"]).to_csv(
        tmp_path / "con.csv", index=False
    )
    np.save(tmp_path / "object.npy", np.array([{"x": 1}, None], dtype=object), allow_pickle=True)
    torch.save({"acts": torch.zeros(3, 2)}, tmp_path / "dict.pt")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("a,b\n")
    pd.DataFrame({"a": ["x", "y"], "b": [1, 0]}).to_csv(tmp_path / "text.csv", index=False)
    np.save(tmp_path / "nan.npy", np.array([[np.nan, 1.0], [0.0, 1.0]]))
    np.save(tmp_path / "vector.npy", np.zeros(60, dtype=np.float32))
    (tmp_path / "broken.npy").write_bytes(b"not a numpy file")
    return tmp_path


def _explain(files, acts="acts.npy", con="con.csv", *extra):
    return ["neurons", "explain", "-a", str(files / acts), "-c", str(files / con), *extra]


NEURON_FILES_BAD = [
    ("object.npy", "con.csv", "object.npy", "object array"),
    ("dict.pt", "con.csv", "dict.pt", "holds a dict, not a tensor"),
    ("acts.npy", "empty.csv", "empty.csv", "is empty"),
    ("acts.npy", "header.csv", "header.csv", "is empty"),
    ("acts.npy", "text.csv", "text.csv", "non-numeric columns ['a']"),
    ("nan.npy", "con.csv", "nan.npy", "NaN or inf"),
    ("vector.npy", "con.csv", "vector.npy", "2-D"),
    ("broken.npy", "con.csv", "broken.npy", "cannot read"),
]


@pytest.mark.parametrize(
    ("acts", "con", "name", "why"),
    NEURON_FILES_BAD,
    ids=[c[0] + "+" + c[1] for c in NEURON_FILES_BAD],
)
def test_neurons_explain_refuses_unreadable_files_before_explaining(
    neuron_files, monkeypatch, acts, con, name, why
):
    import faithlens.neurons

    monkeypatch.setattr(faithlens.neurons, "explain", expensive)
    assert_refused(runner.invoke(app, _explain(neuron_files, acts, con)), name, why)


NEURON_OPTS_BAD = [
    (["--units", "999"], "--units", "999"),
    (["--units", "5:999"], "--units", "5:999"),
    (["--units", "3:3"], "--units", "selects no unit"),
    (["--units", "1,1"], "--units", "repeats"),
    (["--units", "-1"], "--units", "-1"),
    (["--units", "a:b"], "--units", "a:b"),
    (["--n-boot", "1"], "--n-boot", "1"),
    (["--n-boot", "-1"], "--n-boot", "-1"),
    (["--level", "1.5"], "--level", "1.5"),
    (["--delta", "0"], "--delta", "0.0"),
    (["--alpha", "nan"], "--alpha", "nan"),
    (["--alpha", "1"], "--alpha", "1.0"),
    (["--threshold", "inf"], "--threshold", "inf"),
    (["--holdout", "1"], "--holdout", "1.0"),
    (["--holdout", "-0.2"], "--holdout", "-0.2"),
    (["--direction", "both"], "--direction", "both"),
    (["--interval", "wald"], "--interval", "wald"),
    (["--bound", "exact"], "--bound", "exact"),
    (["--seed", "-1"], "--seed", "-1"),
    (["--metric", "bleu"], "bleu"),
    (["--show", "-1"], "--show", "-1"),
]


@pytest.mark.parametrize("case", NEURON_OPTS_BAD, ids=[" ".join(c[0]) for c in NEURON_OPTS_BAD])
def test_neurons_explain_refuses_bad_options_before_explaining(neuron_files, monkeypatch, case):
    import faithlens.neurons

    args, *names = case
    monkeypatch.setattr(faithlens.neurons, "explain", expensive)
    assert_refused(runner.invoke(app, _explain(neuron_files, "acts.npy", "con.csv", *args)), *names)


def test_neurons_explain_model_options_checked_before_loading(monkeypatch):
    cli = importlib.import_module("faithlens.cli.neurons")
    monkeypatch.setattr(cli, "load_model", expensive)
    base = ["neurons", "explain", "--model", "zoo:paren", "--site", "mlp_post.0"]
    assert_refused(runner.invoke(app, [*base, "--n-texts", "0"]), "--n-texts", "0")
    assert_refused(runner.invoke(app, [*base, "--n-boot", "1"]), "--n-boot", "1")


# ---------------------------------------------------------------- represent

REP = ["--model", "planted", "--concept", "planted"]
REPRESENT_CLI_BAD = [
    (["read", *REP, "--n", "0"], "--n", "0"),
    (["read", *REP, "--n", "1"], "--n", "1"),
    (["read", *REP, "--n-stability", "-1"], "--n-stability", "-1"),
    (["read", *REP, "--n-boot", "1"], "--n-boot", "1"),
    (["read", *REP, "--position", "first"], "--position", "first"),
    (["read", *REP, "--position", "2"], "--position", "2"),
    (["read", *REP, "--layers", "a-b"], "--layers", "a-b"),
    (["read", *REP, "--layers", "5-2"], "--layers", "5-2"),
    (["read", *REP, "--seed", "-1"], "--seed", "-1"),
    (["read", *REP, "--method", "svm"], "--method", "svm"),
    (["read", "--model", "planted", "--concept", "gravity"], "--concept", "gravity"),
    (["read", *REP, "--device", "gpu"], "--device", "gpu"),
    (["steer", *REP, "--max-new-tokens", "-1"], "--max-new-tokens", "-1"),
    (["steer", *REP, "--max-new-tokens", "0"], "--max-new-tokens", "0"),
    (["steer", *REP, "--coef", "nan"], "--coef", "nan"),
    (["steer", *REP, "--coef", "x"], "coefficients", "'x'"),
    (["steer", *REP, "--when", "later"], "--when", "later"),
    (["steer", *REP, "--metric", "bleu"], "--metric", "bleu"),
    (["steer", *REP, "--n", "1"], "--n", "1"),
    (["steer", *REP, "--n-pairs", "0"], "--n-pairs", "0"),
    (["steer", *REP, "--show", "-1"], "--show", "-1"),
    (["check", *REP, "--coef", "0"], "--coef", "0.0"),
    (["check", *REP, "--coef", "nan"], "--coef", "nan"),
    (["check", *REP, "--prompt", "first"], "--prompt", "first"),
    (["check", *REP, "--n-random", "-1"], "--n-random", "-1"),
    (["check", *REP, "--tokens", "0"], "--tokens", "0"),
    (["check", *REP, "--checks", "vibes"], "--checks", "vibes"),
    (["check", *REP, "--n-boot", "0"], "--n-boot", "0"),
]


@pytest.mark.parametrize(
    ("args", "name", "value"), REPRESENT_CLI_BAD, ids=[" ".join(c[0]) for c in REPRESENT_CLI_BAD]
)
def test_represent_cli_refuses_bad_options_before_loading(monkeypatch, args, name, value):
    import faithlens.representations

    cli = importlib.import_module("faithlens.cli.representations")
    monkeypatch.setattr(cli, "load_model", expensive)
    monkeypatch.setattr(faithlens.representations, "planted_model", expensive)
    assert_refused(runner.invoke(app, ["represent", *args]), name, value)


NEURON_OTHER_BAD = [
    (["dissect", "--maps", "MAPS", "--quantile", "0"], "--quantile", "0.0"),
    (["dissect", "--maps", "MAPS", "--n-boot", "1"], "--n-boot", "1"),
    (["dissect", "--maps", "MAPS", "--level", "2"], "--level", "2.0"),
    (["dissect", "--maps", "MAPS", "--seed", "-1"], "--seed", "-1"),
    (["digits", "--quantile", "1.5"], "--quantile", "1.5"),
    (["digits", "--n-boot", "1"], "--n-boot", "1"),
    (["digits", "--n-probe", "0"], "--n-probe", "0"),
    (["validate", "--reps", "1"], "--reps", "1"),
    (["validate", "--n-boot", "1"], "--n-boot", "1"),
    (["validate", "--level", "0"], "--level", "0.0"),
    (["validate", "--p", "1.5"], "--p", "1.5"),
    (["bound", "--n", "0"], "--n", "0"),
    (["bound", "--epsilon", "nan"], "--epsilon", "nan"),
    (["bound", "--n", "100", "--delta", "1"], "--delta", "1.0"),
    (["bound", "--n", "100", "--concepts", "0"], "--concepts", "0"),
    (["sanity", "--seed", "-1"], "--seed", "-1"),
    (["show", "MAPS", "--show", "-1"], "--show", "-1"),
]


@pytest.mark.parametrize("case", NEURON_OTHER_BAD, ids=[" ".join(c[0]) for c in NEURON_OTHER_BAD])
def test_neurons_commands_refuse_bad_options_before_work(tmp_path, monkeypatch, case):
    import numpy as np

    def mod(name):
        return importlib.import_module(f"faithlens.neurons.{name}")

    args, *names = case
    maps = tmp_path / "maps.npy"
    np.save(maps, np.zeros((2, 1, 2, 2), dtype=np.float32))
    args = [str(maps) if a == "MAPS" else a for a in args]
    cli = importlib.import_module("faithlens.cli.neurons")
    monkeypatch.setattr(cli, "read_array", expensive)
    monkeypatch.setattr(mod("dissect"), "dissect", expensive)
    monkeypatch.setattr(mod("digits"), "digits_model", expensive)
    monkeypatch.setattr(mod("simulate"), "simulate", expensive)
    monkeypatch.setattr(mod("sanity"), "sanity_checks", expensive)
    monkeypatch.setattr(mod("bounds"), "faithfulness_bound", expensive)
    monkeypatch.setattr(mod("bounds"), "required_n", expensive)
    monkeypatch.setattr(importlib.import_module("faithlens.results").Result, "load", expensive)
    assert_refused(runner.invoke(app, ["neurons", *args]), *names)
