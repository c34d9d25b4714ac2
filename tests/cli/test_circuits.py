"""``faithlens circuit`` end to end on zoo:induction with a tiny n."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

import faithlens as fl
from faithlens.circuits import CircuitFaithfulness, EdgeScores, FaithfulnessCurve
from faithlens.cli import app

runner = CliRunner()


def test_circuit_writes_reloadable_results(tmp_path):
    out = tmp_path / "c"
    args = ["circuit", "--model", "zoo:induction", "--task", "induction", "--n", "10"]
    args += ["--method", "eap-ig", "--steps", "2", "--top-k", "12", "--n-boot", "50"]
    res = runner.invoke(app, [*args, "--max-memory", "64M", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "CPR" in res.output and "normalised faithfulness" in res.output
    scores = EdgeScores.load(out / "scores")
    curve = FaithfulnessCurve.load(out / "curve")
    chosen = CircuitFaithfulness.load(out / "circuit")
    assert scores.method == "eap-ig" and scores.meta["steps"] == 2 and scores.n == 10
    assert len(chosen.edges) == 12 and chosen.edges == list(scores.top_k(12).edges)
    assert curve.method == "eap-ig" and curve.size.tolist() == list(fl.circuits.MIB_SIZES)
    assert curve.faithfulness[-1] == np.float64(1.0) or abs(curve.faithfulness[-1] - 1) < 1e-6
    dirs = ("scores", "curve", "circuit", "scrub", "audit")
    assert all((out / d / "plot.png").exists() for d in dirs)
    assert (out / "circuit" / "circuit.png").stat().st_size > 1000
    scrubbed = fl.Result.load(out / "scrub")
    assert type(scrubbed).__name__ == "ScrubResult" and "% recovered" in res.output
    audited = fl.Result.load(out / "audit")
    assert type(audited).__name__ == "AuditResult" and audited.conditions == ("circuit",)
    assert audited.site == "resid_post.1" and (audited.table["condition"] == "circuit").all()
    # the same numbers as the library
    model = fl.load("zoo:induction")
    task = fl.tasks.build("induction", model, n=10, seed=0)
    lib = fl.circuits.eap_ig(model, task, steps=2, n_boot=50)
    np.testing.assert_allclose(scores.values, lib.values, rtol=0, atol=1e-6)
    # an existing folder is refused without --overwrite; with --no-scrub / --no-audit there is
    # no scrub/ or audit/
    again = runner.invoke(app, [*args, "--out", str(out)])
    assert again.exit_code != 0 and "--overwrite" in again.output
    plain = [*args, "--method", "exact", "--no-scrub", "--no-audit"]
    done = runner.invoke(app, [*plain, "--out", str(tmp_path / "p")])
    assert done.exit_code == 0, done.output
    assert not (tmp_path / "p" / "scrub").exists() and not (tmp_path / "p" / "audit").exists()
    assert EdgeScores.load(tmp_path / "p" / "scores").method == "exact"


def test_circuit_eap_ig_on_activations(tmp_path):
    out = tmp_path / "act"
    args = ["circuit", "--model", "zoo:induction", "--task", "induction", "--n", "8"]
    args += ["--method", "eap-ig", "--ig", "activations", "--steps", "2", "--n-boot", "20"]
    res = runner.invoke(app, [*args, "--no-scrub", "--no-audit", "--out", str(out)])
    assert res.exit_code == 0, res.output
    scores = EdgeScores.load(out / "scores")
    assert scores.meta["ig"] == "activations" and scores.meta["steps"] == 2
    model = fl.load("zoo:induction")
    task = fl.tasks.build("induction", model, n=8, seed=0)
    lib = fl.circuits.eap_ig(model, task, steps=2, n_boot=20, ig="activations")
    np.testing.assert_allclose(scores.values, lib.values, rtol=0, atol=1e-6)
    inputs = fl.circuits.eap_ig(model, task, steps=2, n_boot=20)
    assert np.abs(lib.values - inputs.values).max() > 1e-4


RESULTS = ((EdgeScores, "scores"), (CircuitFaithfulness, "circuit"), (FaithfulnessCurve, "curve"))


def _induction_circuit(out, n, *options):
    """``faithlens circuit`` on zoo:induction with ``options``, and the scores, chosen circuit
    and curve it wrote."""
    args = ["circuit", "--model", "zoo:induction", "--task", "induction", "--n", str(n)]
    res = runner.invoke(app, [*args, *options, "--out", str(out)])
    assert res.exit_code == 0, res.output
    loaded = [kind.load(out / d) for kind, d in RESULTS]
    return res, *loaded


def test_circuit_acdc_keeps_its_own_circuit(tmp_path):
    options = ["--method", "acdc", "--tau", "0.02", "--n-boot", "50", "--no-scrub", "--no-audit"]
    _, scores, chosen, _ = _induction_circuit(tmp_path / "a", 8, *options)
    assert scores.method == "acdc" and chosen.edges == list(scores.kept().edges)
    assert 0 < len(chosen.edges) < 81


def test_circuit_per_position_edges(tmp_path):
    """--positions each: per-position scores, curve and chosen circuit; the audit runs, the
    scrub is left out with a note (scrubbing routes whole activations)."""
    out = tmp_path / "e"
    options = ["--method", "eap", "--positions", "each", "--top-k", "30", "--n-boot", "20"]
    res, scores, chosen, curve = _induction_circuit(out, 10, *options)
    assert scores.meta["positions"] == "each" and len(scores.edge) % 81 == 0
    assert len(chosen.edges) == 30 and all("@" in e for e in chosen.edges)
    assert curve.n_graph_edges == len(scores.edge) and curve.meta["positions"] == "each"
    assert "no causal scrubbing" in res.output and not (out / "scrub").exists()
    assert (out / "audit" / "plot.png").exists()
    model = fl.load("zoo:induction")
    task = fl.tasks.build("induction", model, n=10, seed=0)
    lib = fl.circuits.eap(model, task, n_boot=20, positions="each")
    np.testing.assert_allclose(scores.values, lib.values, rtol=0, atol=1e-6)
    assert len(lib.edge) == 81 * task.seq_len


def test_circuit_greedy_selection(tmp_path):
    options = ["--method", "exact", "--selection", "greedy", "--top-k", "20", "--n-boot", "20"]
    _, scores, chosen, curve = _induction_circuit(
        tmp_path / "g", 10, *options, "--no-scrub", "--no-audit"
    )
    assert chosen.edges == list(scores.greedy(20).edges) and chosen.how == "greedy=20"
    assert curve.meta["selection"] == "greedy"


def test_circuit_bad_options():
    res = runner.invoke(app, ["circuit", "--method", "nope"])
    assert res.exit_code == 2 and "--method" in res.output
    res = runner.invoke(app, ["circuit", "--n", "6"])
    assert res.exit_code == 2 and "--no-audit" in res.output
    res = runner.invoke(app, ["circuit", "--tau", "nan"])
    assert res.exit_code == 2 and "--tau" in res.output
    res = runner.invoke(app, ["circuit", "--top-k", "0"])
    assert res.exit_code == 2 and "--top-k" in res.output
    res = runner.invoke(app, ["circuit", "--selection", "best"])
    assert res.exit_code == 2 and "--selection" in res.output and "greedy" in res.output
    res = runner.invoke(app, ["circuit", "--positions", "last"])
    assert res.exit_code == 2 and "--positions" in res.output and "each" in res.output
    res = runner.invoke(app, ["circuit", "--ig", "hidden"])
    assert res.exit_code == 2 and "--ig" in res.output and "activations" in res.output
    res = runner.invoke(
        app, ["circuit", "--n", "4", "--top-k", "500", "--n-boot", "20", "--no-audit"]
    )
    assert res.exit_code == 2 and "--top-k" in res.output


def test_circuit_too_deep_for_the_tree_is_scrubbed_as_one_dag(tmp_path, monkeypatch):
    """A circuit with more paths from the logits than the per-node tree allows is scrubbed in
    the global mode as one DAG (fl.circuits.scrub), with a note, and writes scrub/."""
    import faithlens.circuits.hypothesis as hyp

    monkeypatch.setattr(hyp, "MAX_NODES", 3)  # zoo:induction's circuits are small
    out = tmp_path / "d"
    args = ["circuit", "--model", "zoo:induction", "--task", "induction", "--n", "10"]
    args += ["--method", "eap", "--top-k", "12", "--n-boot", "50", "--no-audit"]
    res = runner.invoke(app, [*args, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "unimportant='global'" in res.output and "fl.circuits.scrub" in res.output
    scrubbed = fl.Result.load(out / "scrub")
    assert scrubbed.stats["evaluation"] == "circuit DAG"
    model = fl.load("zoo:induction")
    task = fl.tasks.build("induction", model, n=10, seed=0)
    circuit = fl.circuits.eap(model, task, n_boot=50).top_k(12)
    assert hyp.tree_size(circuit.edges) > 3
    lib = fl.circuits.scrub(model, task, circuit, n_boot=50)
    np.testing.assert_allclose(scrubbed.scrubbed, lib.scrubbed, rtol=0, atol=1e-6)
    assert scrubbed.interval_of("% recovered vs random").estimate == pytest.approx(
        lib.interval_of("% recovered vs random").estimate, abs=1e-6
    )


def test_prompts_of_several_lengths_are_scrubbed_against_prompts_of_their_length(
    tmp_path, monkeypatch
):
    """A task whose prompts differ in length (right-padded): every resampled prompt, the
    baseline's too, is one of the reference's length (a note says so), in the tree and in the
    one-DAG path alike, so no edge carries another position's activations."""
    import json

    import faithlens.circuits.hypothesis as hyp
    from faithlens.scrubbing import Hypothesis, SameFeature, field
    from faithlens.tasks.prompts_file import read_task_file

    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        ids = rng.integers(1, 60, 5 + i % 2).tolist()
        a, w = int(rng.integers(1, 60)), int(rng.integers(1, 60))
        w = w if w != a else (a % 59) + 1
        rows.append({"clean_ids": ids, "corrupt_ids": ids[::-1], "answer_id": a, "wrong_id": w})
    path = tmp_path / "lengths.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = fl.load("zoo:induction")
    task = read_task_file(path).build(model)
    assert task.positions.unique().numel() == 2
    circuit = fl.circuits.eap(model, task, n_boot=50).top_k(8)
    same = SameFeature(field("positions"))
    base = {"random": Hypothesis("random input of the same length", sampler=same)}
    args = ["circuit", "--model", "zoo:induction", "--task", str(path), "--method", "eap"]
    args += ["--top-k", "8", "--n-boot", "50", "--no-audit"]
    for deep in (False, True):
        with monkeypatch.context() as mp:
            if deep:
                mp.setattr(hyp, "MAX_NODES", 1)
            out = tmp_path / f"run{deep}"
            res = runner.invoke(app, [*args, "--out", str(out)])
        assert res.exit_code == 0, res.output
        assert "drawn among those of the reference's length" in res.output
        got = fl.Result.load(out / "scrub")
        if deep:
            ref = fl.circuits.scrub(model, task, circuit, other=same, baselines=base, n_boot=50)
            assert got.stats["variable_lengths_share"] == 0.0
            assert not any("VARIABLE LENGTHS" in w for w in got.warnings)
        else:
            h = circuit.to_hypothesis(model=model, other=same)
            ref = fl.scrub(model, hypothesis=h, data=task, baselines=base, n_boot=50)
        np.testing.assert_allclose(got.scrubbed, ref.scrubbed, rtol=0, atol=1e-6)
        assert got.interval_of("% recovered vs random").estimate == pytest.approx(
            ref.interval_of("% recovered vs random").estimate, abs=1e-6
        )
