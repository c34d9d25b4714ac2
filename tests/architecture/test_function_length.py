"""No function of faithlens is over ``LIMIT`` lines (docs/ARCHITECTURE.md: "no public entry
point over about 120 lines"; long ones become named steps).

The scan reads every module of ``src/faithlens`` (AST only, nothing is imported) and measures
every function and method, nested ones included, from its ``def`` line to its last line
(docstring, comments and blank lines count; decorators do not). ``ALLOWED`` names the few that
are still over, each with the issue that shortens it; an entry that is no longer over the limit
is stale and fails too, so the list only shrinks.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "faithlens"

LIMIT = 120

# "path relative to src/faithlens::qualified name" -> why it is still over.
ALLOWED: dict[str, str] = {}


def function_lengths(source: str) -> dict[str, int]:
    """Qualified name (``Class.method``, ``outer.inner``) -> lines of every function in
    ``source``."""
    out: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    end = child.end_lineno if child.end_lineno is not None else child.lineno
                    out[name] = end - child.lineno + 1
                visit(child, name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return out


def long_functions(package: Path, limit: int = LIMIT) -> dict[str, int]:
    """``path::name`` -> lines of every function of ``package`` over ``limit`` lines."""
    found: dict[str, int] = {}
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package).as_posix()
        for name, lines in function_lengths(path.read_text(encoding="utf-8")).items():
            if lines > limit:
                found[f"{rel}::{name}"] = lines
    return found


def test_no_function_over_the_limit():
    found = long_functions(PACKAGE)
    new = {k: v for k, v in found.items() if k not in ALLOWED}
    listed = ", ".join(f"{k} ({v} lines)" for k, v in sorted(new.items()))
    assert not new, f"functions over {LIMIT} lines (split them into named steps): {listed}"


def test_allowed_entries_are_still_over_the_limit():
    found = long_functions(PACKAGE)
    stale = sorted(k for k in ALLOWED if k not in found)
    assert not stale, f"no longer over {LIMIT} lines: remove them from ALLOWED: {stale}"


def test_the_scan_finds_a_long_function_a_method_and_a_nested_one(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(LIMIT))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "mod.py").write_text(
        f"def short():\n    return 1\n\n\ndef long():\n{body}\n\n"
        f"class C:\n    def method(self):\n{body.replace('    ', '        ')}\n\n"
        f"def outer():\n    def inner():\n{body.replace('    ', '        ')}    return inner\n"
    )
    found = long_functions(tmp_path)
    assert found == {
        "sub/mod.py::long": LIMIT + 1,
        "sub/mod.py::C.method": LIMIT + 1,
        "sub/mod.py::outer": LIMIT + 3,
        "sub/mod.py::outer.inner": LIMIT + 1,
    }
    assert long_functions(tmp_path, limit=LIMIT + 3) == {}


def test_decorators_do_not_count_and_the_docstring_does():
    src = '@decorator\n@other(\n    1,\n)\ndef f():\n    """Doc\n\n    more."""\n    return 1\n'
    assert function_lengths(src) == {"f": 5}
