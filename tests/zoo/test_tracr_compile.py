"""The tracr recipe's jax-free parts: the export of haiku weights, the varying labels, and the
clear error without the extra."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from faithlens.errors import InputError
from faithlens.zoo import tracr as T
from faithlens.zoo import tracr_compile as C


def _fake_assembled(rng: np.random.Generator, d=7, layers=2, heads=2, dk=3, mlp=4, vocab=5, ctx=6):
    """An object shaped like tracr's AssembledTransformerModel, with random weights."""
    params: dict[str, dict[str, np.ndarray]] = {
        "token_embed": {"embeddings": rng.normal(size=(vocab, d))},
        "pos_embed": {"embeddings": rng.normal(size=(ctx, d))},
    }
    for L in range(layers):
        for name, shape in (
            ("query", (d, heads * dk)),
            ("key", (d, heads * dk)),
            ("value", (d, heads * dk)),
            ("linear", (heads * dk, d)),
        ):
            params[f"transformer/layer_{L}/attn/{name}"] = {
                "w": rng.normal(size=shape),
                "b": rng.normal(size=shape[1]) * 0.1,
            }
        for name, shape in (("linear_1", (d, mlp)), ("linear_2", (mlp, d))):
            params[f"transformer/layer_{L}/mlp/{name}"] = {
                "w": rng.normal(size=shape),
                "b": rng.normal(size=shape[1]) * 0.1,
            }
    cfg = SimpleNamespace(num_layers=layers, num_heads=heads, key_size=dk, mlp_hidden_size=mlp)
    labels = [f"x:{i}" for i in range(d)]
    return SimpleNamespace(model_config=cfg, params=params, residual_labels=labels)


def _reference(a, ids: np.ndarray, out_idx: list[int]) -> np.ndarray:
    """tracr's forward pass (model.py: no norms, ReLU, softmax(QK^T / sqrt(key_size))) in
    numpy, on one unpadded sequence."""
    p, cfg = a.params, a.model_config
    x = p["token_embed"]["embeddings"][ids] + p["pos_embed"]["embeddings"][np.arange(len(ids))]
    h, dk = cfg.num_heads, cfg.key_size
    for L in range(cfg.num_layers):

        def lin(name, v, L=L):
            q = p[f"transformer/layer_{L}/{name}"]
            return v @ q["w"] + q["b"]

        q, k, v = (lin(f"attn/{n}", x).reshape(len(ids), h, dk) for n in ("query", "key", "value"))
        logits = np.einsum("thd,shd->hts", q, k) / np.sqrt(dk)
        w = np.exp(logits - logits.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        z = np.einsum("hts,shd->thd", w, v).reshape(len(ids), h * dk)
        x = x + lin("attn/linear", z)
        x = x + lin("mlp/linear_2", np.maximum(lin("mlp/linear_1", x), 0.0))
    return x[:, out_idx]


def test_export_matches_tracrs_forward_pass():
    rng = np.random.default_rng(0)
    a = _fake_assembled(rng)
    spec = T.TracrProgram("fake", "", ("a",), 5)
    out_labels = ["x:2", "x:5", "x:0"]
    model = C.export(a, spec, out_labels)
    ids = np.array([0, 3, 1, 4, 2])
    want = _reference(a, ids, [2, 5, 0])
    with torch.no_grad():
        got = model(torch.from_numpy(ids[None])).logits[0].double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert not model.config.norm and model.config.d_out == 3


def test_export_of_a_numerical_program_adds_a_zero_column():
    a = _fake_assembled(np.random.default_rng(1))
    spec = T.TracrProgram("fake", "", ("a",), 5, categorical=False)
    model = C.export(a, spec, ["x:4"])
    w = model.unembed.weight.detach()
    assert w.shape == (2, 7) and float(w[0, 4]) == 1.0 and float(w.abs().sum()) == 1.0


def test_varying_labels():
    sops = {"tokens": True, "indices": False, "length_5": False, "reverse_1": True}
    labels = [
        "indices:0",
        "length_5:2",
        "length_5_selector_width_attn_output",
        "one",
        "reverse_1:a",
        "tokens:BOS",
        "tokens:a",
        "tokens:compiler_pad",
    ]
    assert C.varying_labels(labels, sops) == ["reverse_1:a", "tokens:a"]
    with pytest.raises(InputError, match="names no SOp"):
        C.varying_labels(["mystery:1"], sops)


def test_without_tracr_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tracr", None)
    monkeypatch.setitem(sys.modules, "tracr.compiler", None)
    with pytest.raises(InputError, match=r"faithlens\[tracr\]"):
        C.require_tracr()
    with pytest.raises(InputError, match=r"faithlens\[tracr\]"):
        C.compile_tracr(["reverse"])


def test_cli_compile_tracr_checks_before_work(monkeypatch):
    from typer.testing import CliRunner

    from faithlens.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["zoo", "list"])
    assert res.exit_code == 0 and "zoo:tracr_reverse" in res.output, res.output
    res = runner.invoke(app, ["zoo", "compile-tracr", "nope"])
    assert res.exit_code == 2 and "no tracr model named 'nope'" in res.output
    res = runner.invoke(app, ["zoo", "compile-tracr", "reverse", "--seed", "-1"])
    assert res.exit_code == 2 and "--seed" in res.output
    monkeypatch.setitem(sys.modules, "tracr", None)
    monkeypatch.setitem(sys.modules, "tracr.compiler", None)
    res = runner.invoke(app, ["zoo", "compile-tracr", "reverse"])
    assert res.exit_code == 2 and "optional extra 'tracr'" in res.output
