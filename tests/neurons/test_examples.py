"""The neuron-explanation examples run end to end (small settings)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.smollm2
@pytest.mark.slow
def test_smollm2_example_runs_small(smollm2, tmp_path, capsys):
    res = load("neurons_smollm2").main(
        [
            "--n-texts",
            "40",
            "--units",
            "32",
            "--n-boot",
            "30",
            "--alpha",
            "0.05",
            "--out",
            str(tmp_path / "r"),
        ]
    )
    text = capsys.readouterr().out
    assert "most selective neurons" in text and "single-concept 90% BE set" in text
    assert len(res.units) == 32 and res.holdout == 0.2
    assert (tmp_path / "r" / "stability.png").exists()


@pytest.mark.slow
def test_digits_example_runs_small(capsys):
    out = load("neurons_digits").main(["--quick", "--n-boot", "30"])
    text = capsys.readouterr().out
    assert "(a) logits" in text and "(b) Network Dissection" in text and "(c) planted unit" in text
    logits = {(n, m): (ok, cert) for n, m, ok, cert, _ in out["logits"]}
    # certified: 9 of 10 in test_neurons_dissect, two of them within 1.5 images of the edge
    assert logits[(597, "iou")][0] == 10 and logits[(597, "iou")][1] >= 7
    assert out["planted_coverage"] >= 0.8
