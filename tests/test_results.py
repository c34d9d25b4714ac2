"""Results folders: atomic saves, a verified manifest, the overwrite rule, two writers."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

from faithlens import folders as F
from faithlens import results as R
from faithlens.errors import ArgumentError, InputError, ResultError
from faithlens.results import Estimate, Result
from faithlens.stats import Interval

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class AtomicToy(Result):
    tag: str
    score: float
    values: np.ndarray
    table: pd.DataFrame

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"v": self.values[:5]})

    def summary(self) -> str:
        return self.tag


@dataclasses.dataclass(frozen=True)
class AtomicPlain(Result):
    tag: str
    values: np.ndarray

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({"v": self.values[:5]})

    def summary(self) -> str:
        return self.tag


def toy(tag: str = "a", k: int = 1, n: int = 50) -> AtomicToy:
    return AtomicToy(
        tag=tag,
        score=float(k) / 3,
        values=np.arange(n, dtype=np.float64) * k,
        table=pd.DataFrame({"x": [k, k + 1], "y": ["p", "q"]}),
    )


def same(a: AtomicToy, b: AtomicToy) -> bool:
    return (
        a.tag == b.tag
        and a.score == b.score
        and np.array_equal(a.values, b.values)
        and a.table.equals(b.table)
    )


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


# -- round trip, overwrite ----------------------------------------------------------------------


def test_round_trip_is_unchanged_and_manifest_lists_every_file(tmp_path):
    r = toy("a", 2)
    out = r.save(tmp_path / "res")
    back = Result.load(out)
    assert isinstance(back, AtomicToy) and same(back, r)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == R.FORMAT_VERSION
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == files - {"manifest.json"}
    assert {"result.json", "arrays.npz", "table.parquet", "frames/table.parquet"} <= files
    assert leftovers(tmp_path, "res") == []  # no temporary folder, no lock file


def test_existing_folder_is_refused_without_overwrite(tmp_path):
    out = toy("a", 1).save(tmp_path / "res")
    before = snapshot(out)
    with pytest.raises(ResultError, match="overwrite=True") as e:
        toy("b", 2).save(out)
    assert str(out) in str(e.value)
    assert snapshot(out) == before


def test_empty_existing_folder_is_used(tmp_path):
    (tmp_path / "res").mkdir()
    toy("a", 1).save(tmp_path / "res")
    assert Result.load(tmp_path / "res").tag == "a"


def test_overwrite_replaces_the_whole_folder(tmp_path):
    out = toy("a", 1).save(tmp_path / "res")
    (out / "notes.txt").write_text("stale")
    AtomicPlain("b", np.ones(3)).save(out, overwrite=True)
    back = Result.load(out)
    assert isinstance(back, AtomicPlain) and back.tag == "b"
    assert not (out / "frames").exists() and not (out / "notes.txt").exists()
    assert leftovers(tmp_path, "res") == []


def test_overwrite_never_deletes_a_folder_that_is_not_a_result(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "thesis.tex").write_text("years of work")
    with pytest.raises(ResultError, match="not a faithlens result"):
        toy().save(home, overwrite=True)
    assert (home / "thesis.tex").read_text() == "years of work"


@pytest.mark.parametrize(
    ("where", "make"),
    [
        ("a file", lambda p: (p.write_text("x"), p)[1]),
        ("under a file", lambda p: (p.write_text("x"), p / "sub")[1]),
    ],
)
def test_unwritable_target_is_an_argument_error_before_writing(tmp_path, where, make):
    target = make(tmp_path / "f")
    with pytest.raises(ArgumentError, match="path=") as e:
        toy().save(target)
    assert str(target) in str(e.value), where


def test_unwritable_parent_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(R.os, "access", lambda *a, **k: False)
    with pytest.raises(ArgumentError, match="not writable"):
        R.check_target(tmp_path / "res", name="--out")


# -- crashes ------------------------------------------------------------------------------------


def _boom(*a, **k):
    raise RuntimeError("disk on fire")


CRASH_POINTS = [
    (np, "savez_compressed"),
    (pd.DataFrame, "to_parquet"),
    (F, "_write_manifest"),
    (F, "_exchange"),
]


@pytest.mark.parametrize(("owner", "attr"), CRASH_POINTS, ids=[a for _, a in CRASH_POINTS])
def test_crash_mid_save_keeps_the_previous_result(tmp_path, monkeypatch, owner, attr):
    out = toy("old", 1).save(tmp_path / "res")
    before = snapshot(out)
    monkeypatch.setattr(owner, attr, _boom)
    with pytest.raises(RuntimeError, match="disk on fire"):
        toy("new", 2).save(out, overwrite=True)
    monkeypatch.undo()
    assert snapshot(out) == before
    assert same(Result.load(out), toy("old", 1))
    assert leftovers(tmp_path, "res") == []


@pytest.mark.parametrize(("owner", "attr"), CRASH_POINTS[:3], ids=[a for _, a in CRASH_POINTS[:3]])
def test_crash_on_a_first_save_leaves_nothing(tmp_path, monkeypatch, owner, attr):
    monkeypatch.setattr(owner, attr, _boom)
    with pytest.raises(RuntimeError):
        toy().save(tmp_path / "res")
    assert list(tmp_path.iterdir()) == []


def test_crash_between_the_two_renames_is_recovered(tmp_path, monkeypatch):
    """Without an atomic exchange, the old folder is renamed aside first; a crash right then
    leaves it aside, load says where it is, and the next save puts it back first."""
    out = toy("old", 1).save(tmp_path / "res")
    monkeypatch.setattr(F, "_exchange", lambda a, b: False)
    real_rename = os.rename
    calls: list[str] = []

    def rename(a, b):
        calls.append(str(b))
        if len(calls) == 2:  # the new folder onto the target
            raise OSError("power cut")
        real_rename(a, b)

    monkeypatch.setattr(R.os, "rename", rename)
    with pytest.raises(OSError, match="power cut"):
        toy("new", 2).save(out, overwrite=True)
    monkeypatch.setattr(R.os, "rename", real_rename)
    with pytest.raises(ResultError, match="interrupted") as e:
        Result.load(out)
    assert ".res.old-" in str(e.value)
    with pytest.raises(ResultError, match="already exists"):  # the old result is back
        toy("new", 2).save(out)
    assert same(Result.load(out), toy("old", 1))
    toy("new", 2).save(out, overwrite=True)  # the fallback path, to completion
    assert same(Result.load(out), toy("new", 2))
    assert leftovers(tmp_path, "res") == []


def test_a_killed_writer_leaves_nothing_that_stops_the_next(tmp_path):
    (tmp_path / ".res.tmp-abc").mkdir()  # what a SIGKILLed save leaves
    (tmp_path / ".res.tmp-abc" / "result.json").write_text("{}")
    (tmp_path / ".res.lock").write_text("")
    toy().save(tmp_path / "res")
    assert leftovers(tmp_path, "res") == []


# -- damaged folders ----------------------------------------------------------------------------


def _flip_byte(f: Path, at: int) -> None:
    data = bytearray(f.read_bytes())
    data[at % len(data)] ^= 0x01
    f.write_bytes(bytes(data))


def _edit_json(f: Path, **changes) -> None:
    meta = json.loads(f.read_text())
    meta.update(changes)
    f.write_text(json.dumps(meta))


def _replace(f: Path, old: bytes, new: bytes) -> None:
    data = f.read_bytes()
    assert old in data
    f.write_bytes(data.replace(old, new))


def _resign(out: Path) -> None:
    """Rewrite the manifest to match the (edited) files, as a forger would."""
    (out / "manifest.json").unlink()
    F._write_manifest(out)


def _symlink_frame(out: Path) -> None:
    outside = out.parent / "outside.parquet"
    pd.DataFrame({"x": [9, 9], "y": ["z", "z"]}).to_parquet(outside)
    (out / "frames" / "table.parquet").unlink()
    (out / "frames" / "table.parquet").symlink_to(outside)


def _bad_npy_header(out: Path) -> None:
    """An arrays.npz whose header declares 10**12 float64s over a few bytes of data."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "<f8", "fortran_order": False, "shape": (10**12,)}
    )
    buf.write(b"\0" * 64)
    with zipfile.ZipFile(out / "arrays.npz", "w") as zf:
        zf.writestr("values.npy", buf.getvalue())
    _resign(out)


DAMAGE = {
    "array byte edited": (lambda o: _flip_byte(o / "arrays.npz", 40), "sha256"),
    "json value edited": (lambda o: _edit_json(o / "result.json", score=99.0), "edited"),
    "json byte edited": (
        lambda o: _replace(o / "result.json", b'"tag": "a"', b'"tag": "b"'),
        "sha256",
    ),
    "table truncated": (
        lambda o: (o / "table.parquet").write_bytes((o / "table.parquet").read_bytes()[:20]),
        "bytes",
    ),
    "arrays missing": (lambda o: (o / "arrays.npz").unlink(), "missing arrays.npz"),
    "frame missing": (lambda o: (o / "frames" / "table.parquet").unlink(), "missing frames"),
    "manifest missing": (lambda o: (o / "manifest.json").unlink(), "manifest.json"),
    "manifest not json": (lambda o: (o / "manifest.json").write_text("{oops"), "JSON"),
    "manifest format 99": (
        lambda o: _edit_json(o / "manifest.json", format=99),
        "upgrade faithlens",
    ),
    "result format 99": (
        lambda o: (_edit_json(o / "result.json", format=99), _resign(o)),
        "upgrade faithlens",
    ),
    "result format junk": (
        lambda o: (_edit_json(o / "result.json", format="2"), _resign(o)),
        "not a faithlens format",
    ),
    "manifest path traversal": (
        lambda o: _edit_json(
            o / "manifest.json", files={"../outside": {"sha256": "0" * 64, "size": 1}}
        ),
        "not inside the folder",
    ),
    "frame name traversal": (
        lambda o: (_edit_json(o / "result.json", frames=["../../etc/passwd"]), _resign(o)),
        "not a field name",
    ),
    "unknown field": (
        lambda o: (_edit_json(o / "result.json", arrays=["values", "bogus"]), _resign(o)),
        "bogus",
    ),
    "frame symlink out": (_symlink_frame, "symbolic link"),
    "huge array header": (_bad_npy_header, "larger than its data"),
    "unknown class": (
        lambda o: (_edit_json(o / "result.json", **{"class": "Nope"}), _resign(o)),
        "does not know",
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_folder_is_a_result_error(tmp_path, damage):
    out = toy("a", 1).save(tmp_path / "res")
    spoil, needle = DAMAGE[damage]
    spoil(out)
    with pytest.raises(ResultError) as e:
        Result.load(out)
    assert needle in str(e.value)
    assert str(out) in str(e.value) or "res" in str(e.value)


def test_array_total_is_bounded_before_reading(tmp_path, monkeypatch):
    out = toy("a", 1, n=10_000).save(tmp_path / "res")
    monkeypatch.setattr(R, "MAX_ARRAY_BYTES", 1000)
    monkeypatch.setattr(np, "load", _boom)  # nothing is read once the bound is hit
    with pytest.raises(ResultError, match="MAX_ARRAY_BYTES"):
        Result.load(out)


def test_missing_folder_and_plain_file_are_result_errors(tmp_path):
    with pytest.raises(ResultError, match="does not exist"):
        Result.load(tmp_path / "nothing")
    (tmp_path / "f").write_text("x")
    with pytest.raises(ResultError, match="not a folder"):
        Result.load(tmp_path / "f")


# -- the previous format ------------------------------------------------------------------------


def _legacy(out: Path, r: Result) -> Path:
    out.mkdir()
    r._write(out)
    _edit_json(out / "result.json", format=1)
    return out


def test_format_1_folder_loads_with_a_warning(tmp_path):
    out = _legacy(tmp_path / "old", toy("a", 3))
    with pytest.warns(UserWarning, match="cannot be checked"):
        back = Result.load(out)
    assert same(back, toy("a", 3))


@pytest.mark.parametrize(
    ("spoil", "needle"),
    [
        (lambda o: _edit_json(o / "result.json", frames=["../x"]), "not a field name"),
        (
            lambda o: (o / "arrays.npz").write_bytes((o / "arrays.npz").read_bytes()[:-30]),
            "arrays.npz",
        ),
        (lambda o: _edit_json(o / "result.json", format=2), "manifest.json"),
    ],
)
@pytest.mark.filterwarnings("ignore:.*older faithlens")
def test_format_1_folder_is_still_checked(tmp_path, spoil, needle):
    out = _legacy(tmp_path / "old", toy("a", 3))
    spoil(out)
    with pytest.raises(ResultError, match=needle):
        Result.load(out)


# -- extras -------------------------------------------------------------------------------------


def test_extras_are_part_of_the_atomic_write(tmp_path):
    out = toy().save(
        tmp_path / "res",
        extras={
            "plot.txt": lambda p: p.write_text("plot"),
            "sub": AtomicPlain("s", np.ones(2)).save,
        },
    )
    files = json.loads((out / "manifest.json").read_text())["files"]
    assert "plot.txt" in files and "sub/result.json" in files
    assert Result.load(out / "sub").tag == "s"


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "result.json", "frames", ""])
def test_extras_names_are_plain(tmp_path, name):
    with pytest.raises(ResultError, match="extras"):
        toy().save(tmp_path / "res", extras={name: lambda p: p.write_text("x")})
    assert not (tmp_path / "res").exists()


def test_a_failing_extra_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        toy().save(tmp_path / "res", extras={"plot.png": _boom})
    assert list(tmp_path.iterdir()) == []


def test_atomic_file_refuses_an_existing_file(tmp_path):
    f = tmp_path / "plot.png"
    f.write_text("old")
    with pytest.raises(ResultError, match="--overwrite"), R.atomic_file(f, name="--plot") as tmp:
        tmp.write_text("new")
    assert f.read_text() == "old"
    with R.atomic_file(f, overwrite=True, name="--plot") as tmp:
        tmp.write_text("new")
    assert f.read_text() == "new" and leftovers(tmp_path, "plot.png") == []


# -- two writers --------------------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import dataclasses, json, sys, time
    from pathlib import Path
    import numpy as np, pandas as pd
    from faithlens.errors import ResultError
    from faithlens.results import Result

    @dataclasses.dataclass(frozen=True)
    class AtomicToy(Result):
        tag: str
        score: float
        values: np.ndarray
        table: pd.DataFrame
        def to_frame(self):
            return pd.DataFrame({"v": self.values[:5]})
        def summary(self):
            return self.tag

    root, tag, k, rounds, mode = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    other = "b" if tag == "a" else "a"
    r = AtomicToy(tag=tag, score=k / 3, values=np.arange(20000, dtype=np.float64) * k,
                  table=pd.DataFrame({"x": [k, k + 1], "y": ["p", "q"]}))
    outcomes = []
    for i in range(rounds):
        (root / f"ready-{tag}-{i}").touch()
        deadline = time.time() + 60
        while not (root / f"ready-{other}-{i}").exists() and time.time() < deadline:
            time.sleep(0.001)
        path = root / (f"r{i}" if mode == "fresh" else "same")
        try:
            r.save(path, overwrite=(mode == "same"))
            outcomes.append("ok")
        except ResultError as e:
            outcomes.append("ResultError: " + str(e))
    print(json.dumps(outcomes))
    sys.exit(0 if all(o == "ok" for o in outcomes) else 3)
    """
)


def _run_writers(root: Path, rounds: int, mode: str) -> list[subprocess.Popen[str]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), tag, str(k), str(rounds), mode],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for tag, k in (("a", 1), ("b", 2))
    ]


def _expected(tag: str) -> AtomicToy:
    k = 1 if tag == "a" else 2
    return toy(tag, k, n=20000)


def _finish(procs: list[subprocess.Popen[str]]) -> list[tuple[int, list[str]]]:
    done = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        assert p.returncode in (0, 3), stderr
        done.append((p.returncode, json.loads(stdout.strip().splitlines()[-1])))
    return done


@pytest.mark.slow
def test_two_processes_on_fresh_folders_one_wins_one_is_refused(tmp_path):
    rounds = 20
    (_, a), (_, b) = _finish(_run_writers(tmp_path, rounds, "fresh"))
    for i in range(rounds):
        oks = [o == "ok" for o in (a[i], b[i])]
        assert sum(oks) == 1, (i, a[i], b[i])  # exactly one writer, the other told so
        loser = b[i] if oks[0] else a[i]
        assert loser.startswith("ResultError") and f"r{i}" in loser
        back = Result.load(tmp_path / f"r{i}")
        assert same(back, _expected("a" if oks[0] else "b")), i  # never mixed
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_folder_replaced_twice_while_read_is_read_again(tmp_path, monkeypatch):
    """Two saves replacing the folder during one load: the second save's folder may get the
    first one's inode number back (this filesystem reuses it at once), which an identity check
    without holding the folder open would take for "unchanged", returning result.json of one
    save with arrays.npz of another. The load must read again and return one whole save."""
    target = tmp_path / "r"
    toy("a", 1).save(target)
    real = R._read_arrays
    calls = {"n": 0}

    def replace_twice_then_read(src, listed, keys):
        calls["n"] += 1
        if calls["n"] == 1:  # after result.json of save "a" was read
            toy("b", 2).save(target, overwrite=True)
            toy("c", 3).save(target, overwrite=True)
        return real(src, listed, keys)

    monkeypatch.setattr(R, "_read_arrays", replace_twice_then_read)
    back = Result.load(target)
    assert calls["n"] == 2  # read again
    assert same(back, toy("c", 3))


@pytest.mark.slow
def test_two_processes_overwriting_one_folder_never_mix(tmp_path):
    rounds = 30
    procs = _run_writers(tmp_path, rounds, "same")
    seen = set()
    while any(p.poll() is None for p in procs):
        if (tmp_path / "same").exists():
            try:
                back = Result.load(tmp_path / "same")
            except ResultError as e:
                assert "kept being replaced" in str(e)
            else:
                assert same(back, _expected(back.tag)), back.tag  # a whole save, never mixed
                seen.add(back.tag)
        time.sleep(0.005)
    outcomes = [o for _, out in _finish(procs) for o in out]
    assert outcomes.count("ok") >= 1
    for o in outcomes:
        assert o == "ok" or ("ResultError" in o and "another process" in o), o
    final = Result.load(tmp_path / "same")
    assert same(final, _expected(final.tag))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


# -- the command line: --out and --plot are checked before any work ----------------------------

CLI_OUT = {
    "patch": ["patch", "--model", "zoo:paren", "--task", "paren"],
    "path-patch": ["path-patch", "--receivers", "logits", "--model", "zoo:paren"],
    "audit": ["audit", "--model", "zoo:paren", "--site", "resid_post.0", "--zero", "head.0.0"],
    "das": ["das", "--synthetic", "xor"],
    "represent read": ["represent", "read", "--model", "zoo:paren"],
    "represent steer": ["represent", "steer", "--model", "zoo:paren"],
    "represent check": ["represent", "check", "--model", "zoo:paren"],
    "scrub": ["scrub", "hypothesis.py", "--model", "zoo:paren"],
    "neurons explain": ["neurons", "explain", "-a", "acts.npy", "-c", "concepts.npy"],
    "neurons dissect": ["neurons", "dissect", "--maps", "maps.npy"],
    "neurons digits": ["neurons", "digits"],
    "neurons validate": ["neurons", "validate"],
    "neurons sanity": ["neurons", "sanity"],
    "demo": ["demo"],
}


def _no_work(*a, **k):
    raise AssertionError("expensive work ran before --out was checked")


@pytest.fixture
def cli(tmp_path, monkeypatch):
    """Run the CLI in ``tmp_path`` (short relative paths) with every expensive entry point
    replaced by one that fails the test."""
    import importlib

    from typer.testing import CliRunner

    from faithlens.cli import app

    monkeypatch.chdir(tmp_path)
    for mod, name in [
        ("faithlens.loading", "load"),
        ("faithlens.neurons.digits", "digits_model"),
        ("faithlens.neurons.simulate", "simulate"),
        ("faithlens.neurons.sanity", "sanity_checks"),
        ("faithlens.tasks.synthetic_das", "synthetic_das"),
    ]:
        monkeypatch.setattr(importlib.import_module(mod), name, _no_work)
    runner = CliRunner()

    def invoke(args: list[str]):
        r = runner.invoke(app, args)
        return r, " ".join(r.output.split())

    return invoke


def _a_file(tmp: Path) -> str:
    Path("taken").write_text("x")
    return "taken"


def _under_a_file(tmp: Path) -> str:
    Path("taken").write_text("x")
    return "taken/out"


def _existing_result(tmp: Path) -> str:
    toy().save("prev")
    return "prev"


BAD_OUT = {
    "a file": (_a_file, "is a file"),
    "under a file": (_under_a_file, "is a file"),
    "existing result": (_existing_result, "--overwrite"),
}


@pytest.mark.parametrize("bad", list(BAD_OUT))
@pytest.mark.parametrize("command", list(CLI_OUT))
def test_cli_bad_out_fails_before_work(cli, tmp_path, command, bad):
    make, needle = BAD_OUT[bad]
    path = make(tmp_path)
    before = snapshot(tmp_path)
    r, text = cli([*CLI_OUT[command], "--out", path])
    assert r.exit_code == 2, (r.output, r.exception)
    assert f"--out='{path}'" in text and needle in text
    assert snapshot(tmp_path) == before  # nothing written, nothing replaced


@pytest.mark.parametrize("command", ["patch", "neurons validate", "demo"])
def test_cli_unwritable_out_fails_before_work(cli, monkeypatch, command):
    import faithlens.validate

    monkeypatch.setattr(faithlens.validate.os, "access", lambda *a, **k: False)
    r, text = cli([*CLI_OUT[command], "--out", "out"])
    assert r.exit_code == 2, (r.output, r.exception)
    assert "--out='out'" in text and "not writable" in text


PLOT_COMMANDS = {
    "neurons explain": CLI_OUT["neurons explain"],
    "neurons validate": CLI_OUT["neurons validate"],
    "neurons sanity": CLI_OUT["neurons sanity"],
    "neurons show": ["neurons", "show", "prev"],
}


@pytest.mark.parametrize(
    ("plot", "needle"), [("taken/p.png", "is a file"), ("old.png", "--overwrite")]
)
@pytest.mark.parametrize("command", list(PLOT_COMMANDS))
def test_cli_bad_plot_fails_before_work(cli, tmp_path, monkeypatch, command, plot, needle):
    Path("taken").write_text("x")
    Path("old.png").write_text("old")
    _existing_result(tmp_path)
    monkeypatch.setattr(Result, "load", _no_work)
    r, text = cli([*PLOT_COMMANDS[command], "--plot", plot])
    assert r.exit_code == 2, (r.output, r.exception)
    assert f"--plot='{plot}'" in text and needle in text
    assert Path("old.png").read_text() == "old"


def test_cli_existing_out_refused_then_replaced_with_overwrite(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from faithlens.cli import app

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    args = ["neurons", "validate", "--metric", "iou", "--n", "100", "--reps", "5"]
    first = runner.invoke(app, [*args, "--out", "v", "--plot", "v.png"])
    assert first.exit_code == 0, first.output
    saved = snapshot(tmp_path / "v")
    assert "manifest.json" in saved
    again = runner.invoke(app, [*args, "--seed", "1", "--out", "v"])
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert snapshot(tmp_path / "v") == saved
    forced = runner.invoke(app, [*args, "--seed", "1", "--out", "v", "--overwrite"])
    assert forced.exit_code == 0, forced.output
    assert snapshot(tmp_path / "v") != saved
    assert Result.load(tmp_path / "v").seed == 1
    plot = runner.invoke(app, ["neurons", "show", "v", "--plot", "v.png", "--overwrite"])
    assert plot.exit_code == 0, plot.output
    assert leftovers(tmp_path, "v") == [] and leftovers(tmp_path, "v.png") == []


def test_atomic_folder_of_several_results(tmp_path):
    with R.atomic_folder(tmp_path / "bundle") as tmp:
        toy("a", 1).save(tmp / "first")
        (tmp / "summary.txt").write_text("two results")
        assert not (tmp_path / "bundle").exists()  # nothing visible until the end
    assert set(R.verify(tmp_path / "bundle")["files"]) >= {"first/result.json", "summary.txt"}
    assert same(Result.load(tmp_path / "bundle" / "first"), toy("a", 1))
    with pytest.raises(ResultError, match=r"folder of results.*first"):
        Result.load(tmp_path / "bundle")
    (tmp_path / "bundle" / "summary.txt").write_text("edited")
    with pytest.raises(ResultError, match=r"summary\.txt"):
        R.verify(tmp_path / "bundle")


def test_names_with_glob_characters(tmp_path):
    out = toy("a", 1).save(tmp_path / "run[1]*")
    toy("b", 2).save(out, overwrite=True)
    assert same(Result.load(out), toy("b", 2)) and leftovers(tmp_path, "run[1]*") == []


def test_saved_folder_and_plot_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        out = toy().save(tmp_path / "res")
        with R.atomic_file(tmp_path / "p.png") as tmp:
            tmp.write_text("png")
    finally:
        os.umask(old)
    assert (out.stat().st_mode & 0o777) == 0o755  # not a private 0o700 temporary folder
    assert ((tmp_path / "p.png").stat().st_mode & 0o777) == 0o644


def test_a_missing_folder_is_a_plain_result_error(tmp_path):
    """The error names the folder and chains to nothing (no FileNotFoundError from holding the
    folder open)."""
    with pytest.raises(ResultError) as e:
        Result.load(tmp_path / "nope")
    assert e.value.__context__ is None and e.value.__cause__ is None


# -- one interval type in every result -----------------------------------------------------------

#: A field or frame column that holds a piece of an estimate: a standard error or an interval end.
ESTIMATE_PIECE = re.compile(r"(^|_)(se|low|high|lower|upper)$")
#: The columns an estimate ``q`` has in a frame (``Interval.column_names``), and in a long table.
UNIFORM = ("_se", "_ci_low", "_ci_high")
LONG = ("estimate", "se", "ci_low", "ci_high", "level")


def _subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out += [sub, *_subclasses(sub)]
    return out


def library_results() -> list[type[Result]]:
    """Every result class faithlens defines (not the toys of the tests)."""
    import faithlens  # noqa: F401  (imports every method, which defines every class)

    return sorted(
        {c for c in _subclasses(Result) if c.__module__.startswith("faithlens.")},
        key=lambda c: c.__name__,
    )


def undeclared_estimates(cls: type[Result]) -> list[str]:
    """Fields of ``cls`` that look like a piece of an estimate (``se``, ``x_se``, ``x_low``,
    ``x_high``, ``lower``, ``upper``) but that no ``Estimate`` of ``cls.INTERVALS`` names, so
    ``intervals()`` would not report them."""
    named = {f for est in cls.INTERVALS.values() for f in est[:4] if f}
    return sorted(
        f.name
        for f in dataclasses.fields(cls)
        if ESTIMATE_PIECE.search(f.name) and f.name not in named
    )


def frame_problems(result: Result) -> list[str]:
    """Where ``to_frame()`` breaks the uniform columns: an estimate per row without its
    ``_se``, ``_ci_low``, ``_ci_high`` or ``level`` columns, a long table without ``estimate,
    se, ci_low, ci_high, level``, or a column that looks like a piece of an estimate but is none.
    (A scalar estimate is not a column: a column of its name in a frame of other rows, such as
    DAS's per-epoch ``iia`` in its training history, is another quantity.)"""
    cols = set(result.to_frame().columns)
    problems = []
    for q, iv in result.intervals().items():
        if q in cols and np.ndim(iv.estimate) > 0:
            problems += [f"{q}: no {q}{s}" for s in UNIFORM if f"{q}{s}" not in cols]
            problems += [] if "level" in cols else [f"{q}: no level column"]
    if "estimate" in cols:
        problems += [f"long table: no {c}" for c in LONG if c not in cols]
    for c in sorted(cols):
        if not ESTIMATE_PIECE.search(c) or c in LONG:
            continue
        base = re.sub(r"_(se|ci_low|ci_high)$", "", c)
        if base == c or base not in cols:
            problems.append(f"column {c!r} is not q_se / q_ci_low / q_ci_high of a column q")
    return problems


@pytest.fixture(scope="module")
def builders():
    from tests.helpers.result_builders import BUILDERS

    return BUILDERS


def test_every_result_class_has_a_builder(builders):
    assert sorted(builders) == [c.__name__ for c in library_results()]


@pytest.mark.parametrize("cls", library_results(), ids=lambda c: c.__name__)
def test_every_estimate_piece_is_declared(cls):
    assert undeclared_estimates(cls) == []


@pytest.mark.parametrize("name", [c.__name__ for c in library_results()])
def test_intervals_and_frame_columns_are_uniform(builders, name):
    res = builders[name]()
    ivs = res.intervals()
    assert isinstance(ivs, dict)
    for q, iv in ivs.items():
        assert isinstance(iv, Interval), q
        est, se, lo, hi = (np.asarray(v, dtype=np.float64) for v in iv.parts)
        np.broadcast_shapes(est.shape, se.shape, lo.shape, hi.shape)
        ok = np.isfinite(est) & np.isfinite(lo) & np.isfinite(hi)
        assert (lo[ok] <= est[ok]).all() and (est[ok] <= hi[ok]).all(), q
        assert (se[np.isfinite(se)] >= 0).all(), q
        assert np.isnan(iv.level) or 0 < iv.level < 1, q
        assert res.interval_of(q) is not None
    assert frame_problems(res) == []
    text = res.summary()
    if any(np.isfinite(np.asarray(iv.se, dtype=np.float64)).any() for iv in ivs.values()):
        assert " ± " in text


def test_interval_of_names_the_estimates(builders):
    res = builders["PatchingResult"]()
    iv = res.interval_of("effect")
    np.testing.assert_array_equal(iv.estimate, res.effect)
    np.testing.assert_array_equal(iv.ci_low, res.ci_low)
    assert iv.level == res.level
    with pytest.raises(InputError, match=r"name='iia'.*\['effect'\]"):
        res.interval_of("iia")
    assert builders["Generations"]().intervals() == {}


def test_the_declaration_checks_can_fail():
    @dataclasses.dataclass(frozen=True)
    class Undeclared(Result):
        rate: np.ndarray
        rate_se: np.ndarray
        rate_low: np.ndarray
        rate_high: np.ndarray

    assert undeclared_estimates(Undeclared) == ["rate_high", "rate_low", "rate_se"]

    @dataclasses.dataclass(frozen=True)
    class Declared(Undeclared):
        INTERVALS: ClassVar[dict[str, Estimate]] = {
            "rate": Estimate("rate", "rate_se", "rate_low", "rate_high", level=0.9)
        }

        def to_frame(self) -> pd.DataFrame:
            return pd.DataFrame({"rate": self.rate, "rate_low": self.rate_low})

    assert undeclared_estimates(Declared) == []
    d = Declared(*(np.array([v]) for v in (0.5, 0.1, 0.3, 0.7)))
    iv = d.interval_of("rate")
    assert [float(v[0]) for v in iv.parts] == [0.5, 0.1, 0.3, 0.7] and iv.level == 0.9
    problems = frame_problems(d)
    assert "rate: no rate_ci_low" in problems and "rate: no level column" in problems
    assert any("'rate_low'" in p for p in problems)


def test_a_missing_interval_is_the_normal_one_and_a_missing_se_is_nan():
    @dataclasses.dataclass(frozen=True)
    class Pieces(Result):
        m: float
        m_se: float
        p: float
        p_low: float
        p_high: float
        INTERVALS: ClassVar[dict[str, Estimate]] = {
            "m": Estimate("m", "m_se", level=0.95),
            "p": Estimate("p", None, "p_low", "p_high", level=0.95),
        }

    ivs = Pieces(1.0, 0.5, 0.2, 0.1, 0.4).intervals()
    assert ivs["m"].ci_low == pytest.approx(1.0 - 1.959964 * 0.5)
    assert np.isnan(ivs["p"].se) and ivs["p"].high == 0.4


OLD = ROOT / "tests" / "helpers" / "old_results"


@pytest.mark.parametrize("name", sorted(p.name for p in OLD.iterdir()))
def test_folders_saved_before_the_uniform_columns_load(builders, name):
    """Folders written by faithlens before the uniform interval columns (the builders' results,
    saved with that code) load, give the same intervals and the uniform frame."""
    old = Result.load(OLD / name)
    new = builders[name]()
    assert type(old) is type(new)
    for q, iv in new.intervals().items():
        for a, b in zip(old.interval_of(q).parts, iv.parts, strict=True):
            np.testing.assert_allclose(np.asarray(a, float), np.asarray(b, float), equal_nan=True)
    assert frame_problems(old) == []
    saved = pd.read_parquet(OLD / name / "table.parquet")
    assert any(c in saved.columns for c in ("ci_low", "low", "accuracy_low")), "not an old folder"
    assert old.summary()
    import matplotlib

    matplotlib.use("Agg")
    assert old.plot().axes
