"""Every ``faithlens ...`` command the README and docs show parses as written: the command and
its subcommands exist, every option is spelled as the CLI spells it, values have the right types,
and the files it names exist in the repository (or are the user's own, listed in
``USERS_FILES``). Nothing is run: a documented command that takes minutes on SmolLM2 costs a
millisecond here, so the docs cannot rot silently when an option is renamed."""

from __future__ import annotations

import os
import re
import shlex
import time
from pathlib import Path
from typing import Any

import pytest
import typer

from faithlens.cli import app

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Inputs the docs show as the reader's own files (not shipped): they are not looked up.
USERS_FILES = {"acts.npy", "concepts.csv", "maps.npy", "masks.npy", "runs/x"}


def documented_commands(paths: list[Path]) -> list[tuple[str, str]]:
    """``(where, command line)`` for every ``faithlens`` line in a fenced shell block (``bash``,
    ``sh``, ``console`` or unlabelled), continuation lines joined and ``# comments`` dropped."""
    out = []
    for path in paths:
        lines = path.read_text().splitlines()
        in_fence = in_block = False
        i = 0
        while i < len(lines):
            line = lines[i]
            fence = re.match(r"\s*```(\w*)", line)
            if fence:
                in_fence = not in_fence
                in_block = in_fence and fence.group(1) in ("", "bash", "sh", "console", "shell")
                i += 1
                continue
            start = i
            if in_block:
                text = line.strip().removeprefix("$ ")
                while text.endswith("\\") and i + 1 < len(lines):
                    i += 1
                    text = text[:-1] + " " + lines[i].strip()
                text = " ".join(text.split(" #", 1)[0].split())
                if text.startswith("faithlens ") or text == "faithlens":
                    name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
                    out.append((f"{name}:{start + 1}", text))
            i += 1
    return out


def _inert(cmd: Any) -> None:
    """Replace every command's callback by one that does nothing (parsing, type conversion and
    the options' own validation callbacks still run)."""
    cmd.callback = lambda *a, **k: None
    for sub in getattr(cmd, "commands", {}).values():
        _inert(sub)


def parse(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run ``faithlens argv`` with inert commands: (exit code, stderr). 0 when it parses; 2, with
    click's usage message, when it does not."""
    cmd = typer.main.get_command(app)  # a fresh click command tree, ours to change
    _inert(cmd)
    capsys.readouterr()
    try:
        cmd.main(args=list(argv), prog_name="faithlens")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    else:  # pragma: no cover - click's standalone mode always exits
        code = 0
    return code, capsys.readouterr().err


COMMANDS = documented_commands(DOCS)


def test_the_docs_show_commands():
    where = {w.split(":")[0] for w, _ in COMMANDS}
    assert "README.md" in where and len(COMMANDS) >= 30, COMMANDS


@pytest.mark.parametrize(("where", "line"), COMMANDS, ids=[w for w, _ in COMMANDS])
def test_documented_command_parses(where, line, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    argv = shlex.split(line)[1:]
    for arg in argv:
        if (
            re.fullmatch(r"[\w./-]+\.(py|jsonl|json|csv|npy|npz|txt)", arg)
            and arg not in USERS_FILES
        ):
            assert (ROOT / arg).is_file(), f"{where}: {line!r} names {arg}, which is not shipped"
    if "--help" in argv or argv == ["--version"]:
        argv = [a for a in argv if a not in ("--help", "--version")]
    code, err = parse(argv, capsys)
    assert code == 0, f"{where}: {line!r} does not parse:\n{err}"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["patch", "--model", "zoo:induction", "--sitez", "head"], "--sitez"),
        (["no-such-command"], "no-such-command"),
        (["neurons", "explian"], "explian"),
        (["patch", "--model", "zoo:induction", "--n", "many"], "'--n'"),
    ],
)
def test_a_command_that_does_not_parse_is_caught(argv, message, capsys):
    code, err = parse(argv, capsys)
    assert code == 2 and message in err


def test_blocks_are_read_with_continuations_and_comments(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text(
        "faithlens outside a block\n```bash\nfaithlens zoo list   # the models\n"
        "faithlens patch --model m \\\n  --sites head\npip install x\n```\n"
        "```python\nfaithlens = 1\n```\n"
    )
    assert documented_commands([doc]) == [
        ("x.md:3", "faithlens zoo list"),
        ("x.md:4", "faithlens patch --model m --sites head"),
    ]


# ------------------------------------------------------------------ every command, run
#
# Parsing catches a renamed option; only running catches a command that no longer works as
# written (a missing example file, a model that cannot take the task, a crash after the work).
# Every documented command runs once, in order, in one temporary folder (a later command may
# read what an earlier one wrote: ``report runs/ioi``, ``neurons show runs/x``), at reduced sizes:
# the options below are shrunk, ``--n`` / ``--n-boot`` are added where a command takes them and
# the line does not give them. Nothing else is changed.

# option -> its reduced value (a callable gets the documented value)
REDUCED: dict[str, Any] = {
    "--n": lambda v: "100,300" if "," in v else str(min(int(v), 8)),
    "--n-texts": lambda v: "200",
    "--epochs": lambda v: "2",
    "--steps": lambda v: "20",
    "--reps": lambda v: "4",
    "--layers": lambda v: v.split("-")[0].split(",")[0],
    "--workers": lambda v: "2",
    "--n-random": lambda v: "4",
}
# options added when a command takes them and the line does not give them (``--n`` only on
# commands that take a model: elsewhere it is a sample size with its own floor)
ADDED = {"--n": "8", "--n-boot": "20", "--n-random": "4"}
# (command, option) -> (only with this model or None, value): a smaller piece of the same work
# (every head of SmolLM2 as a sender costs minutes; a zoo recipe trains for minutes by default)
NARROWED: dict[tuple[str, str], tuple[str | None, str]] = {
    ("path-patch", "--senders"): ("smollm2", "head.21.0,head.22.1,mlp.21"),
    ("train", "--steps"): (None, "20"),
    ("audit", "--n"): (None, "16"),  # its natural-vs-natural baseline needs 5 points a side
    ("audit", "--sweep-layers"): ("smollm2", "23,24"),  # --top-heads sweeps these layers only
    ("circuit", "--n"): (None, "16"),  # it audits the circuit too (the same floor)
    ("sanity", "--n"): (None, "2000"),
    ("sanity", "--seeds"): (None, "4"),
}
# options dropped: a cluster address needs a running cluster (scale.md says how to start one)
DROPPED = {"--address"}
# commands that are not run, with the reason (they are still parsed above)
NOT_RUN: dict[str, str] = {
    "faithlens zoo compile-tracr": "needs jax (the optional extra faithlens[tracr]); its outputs "
    "ship in the package and tests/zoo/test_tracr.py checks them",
}


def reduced(argv: list[str]) -> list[str]:
    """``argv`` at the sizes above (see the comment before :data:`REDUCED`)."""
    cmd: Any = typer.main.get_command(app)
    out: list[str] = []
    i = 0
    path = []
    while i < len(argv):
        a = argv[i]
        if a in DROPPED:
            i += 2
            continue
        if a in REDUCED and i + 1 < len(argv):
            out += [a, REDUCED[a](argv[i + 1])]
            i += 2
            continue
        sub = getattr(cmd, "commands", {}).get(a)
        if sub is not None and not a.startswith("-"):
            cmd = sub
            path.append(a)
        out.append(a)
        i += 1
    takes = {o for p in getattr(cmd, "params", []) for o in getattr(p, "opts", [])}
    for opt, value in ADDED.items():
        if opt in takes and opt not in argv and (opt != "--n" or "--model" in takes):
            out += [opt, value]
    for (name, opt), (only, value) in NARROWED.items():
        if path and path[-1] == name and (only is None or only in argv):
            if opt in out:
                out[out.index(opt) + 1] = value
            else:
                out += [opt, value]
    return out


def _users_files(folder: Path) -> None:
    """The reader's own files the docs name (:data:`USERS_FILES`), small and random."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    c = (rng.random((600, 5)) < 0.15).astype(np.float32)
    x = np.concatenate(
        [3 * c[:, :1] + rng.standard_normal((600, 1)), rng.standard_normal((600, 15))], 1
    )
    np.save(folder / "acts.npy", x.astype(np.float32))
    pd.DataFrame(c, columns=["red", "cat", "run", "big", "sad"]).to_csv(
        folder / "concepts.csv", index=False
    )
    np.save(folder / "maps.npy", rng.standard_normal((10, 3, 4, 4)).astype(np.float32))
    np.save(folder / "masks.npy", (rng.random((10, 2, 8, 8)) < 0.3).astype(np.float32))


@pytest.mark.slow
def test_every_documented_command_runs(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    (tmp_path / "examples").symlink_to(ROOT / "examples")
    _users_files(tmp_path)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    failed = []
    seen: set[tuple[str, ...]] = set()
    full = os.environ.get("FAITHLENS_DOCS_FULL") == "1"
    ran = 0
    for where, line in COMMANDS:
        argv = shlex.split(line)[1:]
        if any(line.startswith(p) for p in NOT_RUN):
            continue
        if not full and "smollm2" in argv:
            continue  # `make test-docs` runs these too (about 5 minutes more on 2 cores)
        if not full and argv[0] == "report" and not (tmp_path / argv[-1]).exists():
            continue  # a folder only a SmolLM2 command above writes
        args = reduced(argv)
        # the same command shown twice (README and a docs page) runs once, wherever it writes
        key = tuple(a for i, a in enumerate(args) if i == 0 or args[i - 1] != "--out")
        if key in seen:
            continue
        seen.add(key)
        ran += 1
        if "--out" in args and (tmp_path / args[args.index("--out") + 1]).exists():
            args.append("--overwrite")
        t0 = time.monotonic()
        r = runner.invoke(app, args)
        if os.environ.get("FAITHLENS_DOC_TIMES"):
            with open(os.environ["FAITHLENS_DOC_TIMES"], "a") as log:
                log.write(f"{time.monotonic() - t0:7.1f}s {r.exit_code} {' '.join(args)}\n")
        if r.exit_code != 0:
            tail = " ".join(r.output.split())[-600:]
            failed.append(
                f"{where}: faithlens {' '.join(args)} -> {r.exit_code}: {tail} {r.exception!r}"
            )
    assert not failed, "\n".join(failed)
    assert ran >= (40 if full else 25), ran  # the table above did not swallow the commands


def test_reduced_sizes_shrink_only_what_they_say():
    assert reduced(shlex.split("patch --model smollm2 --task ioi --n 400 --out runs/x")) == [
        *shlex.split("patch --model smollm2 --task ioi --n 8 --out runs/x --n-boot 20")
    ]
    # --n is a sample size with its own floor where there is no model: not added
    assert "--n" not in reduced(["neurons", "bound", "--metric", "iou"])
    assert reduced(["neurons", "sanity"]) == ["neurons", "sanity", "--n", "2000", "--seeds", "4"]
    assert reduced(shlex.split("neurons validate --n 100,300,1000"))[:4] == [
        "neurons",
        "validate",
        "--n",
        "100,300",
    ]
    path = reduced(shlex.split("path-patch --model smollm2 --task ioi --receivers head.23.3"))
    assert path[path.index("--senders") + 1] == "head.21.0,head.22.1,mlp.21"
    assert reduced(["zoo", "train", "paren"]) == ["zoo", "train", "paren", "--steps", "20"]
    assert "--address" not in reduced(
        shlex.split("--executor ray --address auto --workers 8 zoo list")
    )
