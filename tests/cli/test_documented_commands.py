"""Every ``faithlens ...`` command the README and docs show parses as written: the command and
its subcommands exist, every option is spelled as the CLI spells it, values have the right types,
and the files it names exist in the repository (or are the user's own, listed in
``USERS_FILES``). Nothing is run: a documented command that takes minutes on SmolLM2 costs a
millisecond here, so the docs cannot rot silently when an option is renamed."""

from __future__ import annotations

import re
import shlex
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
