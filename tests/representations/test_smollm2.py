"""SmolLM2-135M-Instruct: the example end to end (small), chat formatting and stopping."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from faithlens.representations import FaithfulnessReport, chat_prompt, generate, honesty_pairs
from faithlens.representations.data import HONEST_PERSONA, facts

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "represent_smollm2.py"


def _example():
    spec = importlib.util.spec_from_file_location("represent_smollm2", EXAMPLE)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_example_runs_small(smollm2, tmp_path):
    out = _example().main(["--small", "--out", str(tmp_path)])
    # the model shows the behaviour: it prefers the true completion
    assert float(np.mean(out["behaviour"])) > 2.0
    rd = out["reading"]
    j = rd.layers.index(rd.best_layer())
    assert rd.accuracy[j] >= 0.8 and rd.best_layer() >= 8
    # steering against the truth direction lowers the truthful margin
    sw = out["steering"]
    minus = next(i for i, (k, c) in enumerate(zip(sw.kind, sw.coef)) if k == "steer" and c < 0)
    assert sw.effect_high[minus] < 0
    rep = out["report"]
    assert isinstance(rep, FaithfulnessReport)
    assert {
        "causal: steer -",
        "stable",
        "on-distribution",
        "readable",
        "who writes it",
        "persistent",
    } <= set(rep.checks["check"])
    assert rep.passed("causal: steer -")
    expl = out["explanation"]
    assert expl.concepts[0] == "true" and len(expl.concepts) > 2
    for name in ("reading_pca", "steering", "report"):
        assert (tmp_path / name / "result.json").exists()
    assert (tmp_path / "report.png").exists()


def test_chat_prompts_and_stop_at_end_of_turn(smollm2):
    f = facts()[0]
    p = chat_prompt(smollm2, "Say hello.")
    assert p.endswith("<|im_start|>assistant\n")
    hp = honesty_pairs(smollm2, items=[f, facts()[1]])
    assert HONEST_PERSONA in hp.positive[0] and hp.positive[0].endswith(f.stem)
    g = generate(smollm2, [p], max_new_tokens=40)
    assert g.lengths[0] < 40 and "<|im_end|>" not in g.texts[0] and g.texts[0].strip()
