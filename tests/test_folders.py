"""faithlens.folders: atomic folders and files with a manifest, without a Result.

The Result-level behaviour (save/load, crashes mid-save, two writers) is in tests/test_results.py;
these check the module on its own and that faithlens.results still names it all.
"""

from __future__ import annotations

import json

import pytest

from faithlens import folders as F
from faithlens import results as R
from faithlens.errors import ResultError


def _boom(*a, **k):
    raise RuntimeError("disk on fire")


def test_results_reexports_the_same_objects():
    for name in [
        "FORMAT_VERSION",
        "MANIFEST",
        "atomic_file",
        "atomic_folder",
        "check_output_file",
        "check_target",
    ]:
        assert getattr(R, name) is getattr(F, name), name


def test_atomic_folder_writes_a_manifest_last_and_renames_into_place(tmp_path):
    with F.atomic_folder(tmp_path / "out") as tmp:
        (tmp / "a.txt").write_text("alpha")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.bin").write_bytes(b"\x00\x01")
        assert not (tmp_path / "out").exists()
    manifest = json.loads((tmp_path / "out" / F.MANIFEST).read_text())
    assert manifest["format"] == F.FORMAT_VERSION
    assert set(manifest["files"]) == {"a.txt", "sub/b.bin"}
    digest, size = F.file_sha256(tmp_path / "out" / "a.txt")
    assert manifest["files"]["a.txt"] == {"sha256": digest, "size": size} and size == 5
    assert R.verify(tmp_path / "out") == manifest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_folder_refuses_then_replaces_a_folder_whole(tmp_path):
    with F.atomic_folder(tmp_path / "out") as tmp:
        (tmp / "old.txt").write_text("old")
    with pytest.raises(ResultError, match="overwrite=True"), F.atomic_folder(tmp_path / "out"):
        pass
    with F.atomic_folder(tmp_path / "out", overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [F.MANIFEST, "new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_an_error_inside_leaves_nothing(tmp_path):
    with (
        pytest.raises(RuntimeError, match="disk on fire"),
        F.atomic_folder(tmp_path / "out") as tmp,
    ):
        (tmp / "a.txt").write_text("alpha")
        _boom()
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_is_not_output_is_never_replaced(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ResultError, match="not a faithlens result"):
        F.check_target(tmp_path / "mine", overwrite=True, name="--out")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_atomic_file_and_check_output_file(tmp_path):
    f = tmp_path / "plot.png"
    with F.atomic_file(f) as tmp:
        assert tmp.suffix == ".png" and tmp.parent == tmp_path
        tmp.write_text("one")
    assert f.read_text() == "one"
    with pytest.raises(ResultError, match="already exists"):
        F.check_output_file(f, name="--plot")
    assert F.check_output_file(f, overwrite=True, name="--plot") == f
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.png"]


def test_the_read_limits_set_on_faithlens_results_take_effect(tmp_path, monkeypatch):
    """The limits stay in faithlens.results (where the docs say to raise them): setting them
    there bounds what verify and load read."""
    with F.atomic_folder(tmp_path / "out") as tmp:
        (tmp / "a.txt").write_text("alpha")
    monkeypatch.setattr(R, "MAX_JSON_BYTES", 10)
    with pytest.raises(ResultError, match="more than a manifest can be"):
        R.verify(tmp_path / "out")


def test_npz_store_resumes_its_own_run_and_refuses_anything_else(tmp_path):
    import numpy as np

    from faithlens.errors import CheckpointError
    from faithlens.folders import NpzStore

    store = NpzStore(tmp_path / "ck", "key-a", prefix="block", what="test checkpoint")
    assert store.load(3) is None
    store.save(3, x=np.arange(4.0), y=np.array([1, 2]))
    again = NpzStore(tmp_path / "ck", "key-a", prefix="block")
    got = again.load(3)
    assert got is not None and np.array_equal(got["x"], np.arange(4.0))
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [
        "block_0000003.npz",
        "checkpoint.json",
    ]
    with pytest.raises(CheckpointError, match="belongs to another run"):
        NpzStore(tmp_path / "ck", "key-b")
    (tmp_path / "ck" / "block_0000004.npz").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match=r"block_0000004\.npz is not a readable"):
        again.load(4)
    np.savez(tmp_path / "ck" / "block_0000005.npz", o=np.array([{"a": 1}], dtype=object))
    with pytest.raises(CheckpointError, match="pickled"):
        again.load(5)
