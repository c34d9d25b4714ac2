"""No module of faithlens is over ``LIMIT`` lines (docs/ARCHITECTURE.md: "no source file over
about 600 lines"; a long module gives a coherent part a module of its own).

The scan reads every ``.py`` file under ``src/faithlens`` and counts its lines (docstrings,
comments and blank lines count). ``ALLOWED`` names the files that are still over, each with the
issue that splits it; an entry that is no longer over the limit is stale and fails too, so the
list only shrinks.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "faithlens"

LIMIT = 600

# path relative to src/faithlens -> why it is still over.
ALLOWED: dict[str, str] = {}


def long_files(package: Path, limit: int = LIMIT) -> dict[str, int]:
    """Path relative to ``package`` -> lines of every ``.py`` file over ``limit`` lines."""
    found: dict[str, int] = {}
    for path in sorted(package.rglob("*.py")):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > limit:
            found[path.relative_to(package).as_posix()] = lines
    return found


def test_no_module_over_the_limit():
    new = {k: v for k, v in long_files(PACKAGE).items() if k not in ALLOWED}
    listed = ", ".join(f"{k} ({v} lines)" for k, v in sorted(new.items()))
    assert not new, f"modules over {LIMIT} lines (move a coherent part out): {listed}"


def test_allowed_entries_are_still_over_the_limit():
    found = long_files(PACKAGE)
    stale = sorted(k for k in ALLOWED if k not in found)
    assert not stale, f"no longer over {LIMIT} lines: remove them from ALLOWED: {stale}"


def test_the_scan_finds_a_long_module_at_any_depth(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "short.py").write_text("x = 1\n" * LIMIT)
    (tmp_path / "sub" / "long.py").write_text("x = 1\n" * (LIMIT + 1))
    (tmp_path / "sub" / "deeper" / "longer.py").write_text('"""doc"""\n\n' + "# c\n" * LIMIT)
    (tmp_path / "sub" / "notes.txt").write_text("x\n" * (2 * LIMIT))
    assert long_files(tmp_path) == {"sub/long.py": LIMIT + 1, "sub/deeper/longer.py": LIMIT + 2}
    assert long_files(tmp_path, limit=LIMIT + 2) == {}
