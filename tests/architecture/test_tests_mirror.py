"""The tests mirror the package tree (docs/ARCHITECTURE.md, "Tests").

- ``tests/<subpackage>/test_*.py`` tests ``faithlens/<subpackage>/`` (deeper folders mirror deeper
  subpackages), and every subpackage has such a folder with at least one test module;
- ``tests/test_<module>.py`` tests the top-level module ``faithlens/<module>.py``;
- suites that span many packages live in the cross-cutting folders named in ``CROSS_CUTTING``;
- shared code lives in ``tests/helpers/`` (no test modules there), fixtures in ``tests/conftest.py``;
- every folder is a package (``__init__.py``), so equal basenames in two folders do not collide;
- no module under ``tests/`` imports a test module or ``conftest.py``: what tests share is a
  helper (the model builders behind the fixtures are ``tests/helpers/builders.py``).

Each check is a function of the two roots, so the last test runs it on a small bad tree and shows
that it fails.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
PACKAGE = ROOT / "src" / "faithlens"
DOC = ROOT / "docs" / "ARCHITECTURE.md"

# Folders of tests that span many packages (documented in docs/ARCHITECTURE.md, "Tests").
CROSS_CUTTING = {
    "architecture": "the shape of the code: the layer contract, private names, the API table, "
    "this layout",
    "inputs": "bad inputs refused up front, tables across every method (API and CLI)",
    "reliability": "guarantees of docs/reliability.md across methods: determinism, checkpoints",
}
HELPERS = "helpers"


def _test_modules(tests: Path) -> list[Path]:
    return sorted(p for p in tests.rglob("test_*.py") if "__pycache__" not in p.parts)


def _is_package(path: Path) -> bool:
    return path.is_dir() and (path / "__init__.py").is_file()


def misplaced(tests: Path, package: Path) -> list[str]:
    """Test modules outside the mirror, and folders on their way that are not packages."""
    problems = []
    for path in _test_modules(tests):
        rel = path.relative_to(tests)
        folders = rel.parts[:-1]
        for i in range(len(folders) + 1):
            if not (tests.joinpath(*folders[:i]) / "__init__.py").is_file():
                problems.append(f"{rel}: tests/{'/'.join(folders[:i])} has no __init__.py")
        if not folders:
            module = path.stem.removeprefix("test_")
            if not (package / f"{module}.py").is_file():
                problems.append(f"{rel}: no top-level module faithlens/{module}.py")
        elif folders[0] in CROSS_CUTTING:
            if len(folders) > 1:
                problems.append(f"{rel}: cross-cutting folders are flat")
        elif not _is_package(package.joinpath(*folders)):
            problems.append(f"{rel}: no subpackage faithlens/{'/'.join(folders)}")
    return problems


def untested_packages(tests: Path, package: Path) -> list[str]:
    """Top-level subpackages of faithlens without a tests folder holding a test module."""
    return [
        sub.name
        for sub in sorted(package.iterdir())
        if _is_package(sub) and not _test_modules(tests / sub.name)
    ]


def _imported(tree: ast.AST, module: str, is_package: bool) -> list[str]:
    """Dotted names of the modules an import may load (relative imports resolved)."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                parent = parts[: len(parts) - node.level + is_package]
                base = ".".join([*parent, base] if base else parent)
            names.append(base)
            names += [
                f"{base}.{a.name}"
                for a in node.names
                if a.name.startswith("test_") or a.name == "conftest"
            ]
    return names


def _imports_under(tests: Path) -> list[tuple[str, str]]:
    """(importing module, imported module) for every import of every module under ``tests``."""
    found = []
    for path in sorted(p for p in tests.rglob("*.py") if "__pycache__" not in p.parts):
        parts = path.relative_to(tests.parent).with_suffix("").parts
        is_package = parts[-1] == "__init__"
        module = ".".join(parts[:-1] if is_package else parts)
        tree = ast.parse(path.read_text(), str(path))
        found += [(module, name) for name in _imported(tree, module, is_package)]
    return found


def imports_of_test_modules(tests: Path) -> list[str]:
    """Every import of a test module by a module under ``tests``."""
    return [
        f"{module} imports {name}"
        for module, name in _imports_under(tests)
        if any(part.startswith("test_") for part in name.split("."))
    ]


def imports_of_conftest(tests: Path) -> list[str]:
    """Every import of a ``conftest`` module (pytest loads those itself, for their fixtures)."""
    return [
        f"{module} imports {name}"
        for module, name in _imports_under(tests)
        if "conftest" in name.split(".")
    ]


def test_every_test_module_lives_in_the_mirror():
    assert misplaced(TESTS, PACKAGE) == []


def test_every_subpackage_has_a_tests_folder():
    assert untested_packages(TESTS, PACKAGE) == []


def test_no_module_under_tests_imports_a_test_module():
    assert imports_of_test_modules(TESTS) == []


def test_no_module_under_tests_imports_conftest():
    assert imports_of_conftest(TESTS) == []


def test_the_helpers_and_cross_cutting_folders_are_documented():
    assert not _test_modules(TESTS / HELPERS)
    assert (TESTS / HELPERS / "__init__.py").is_file()
    doc = DOC.read_text()
    for folder in [*CROSS_CUTTING, HELPERS]:
        assert (TESTS / folder).is_dir(), folder
        assert f"tests/{folder}/" in doc, f"docs/ARCHITECTURE.md does not name tests/{folder}/"


def test_the_checks_fail_on_a_tree_that_does_not_mirror(tmp_path):
    package, tests = tmp_path / "src" / "faithlens", tmp_path / "tests"
    for folder in [package / "alpha", package / "beta", tests, tests / "alpha"]:
        folder.mkdir(parents=True)
        (folder / "__init__.py").write_text("")
    (package / "stats.py").write_text("")
    (tests / "alpha" / "test_one.py").write_text("from tests.alpha.helper import x\n")
    assert misplaced(tests, package) == []
    assert untested_packages(tests, package) == ["beta"]
    assert imports_of_test_modules(tests) == []
    assert imports_of_conftest(tests) == []

    (tests / "test_stats.py").write_text("from tests.alpha import test_one\n")
    (tests / "test_nowhere.py").write_text("from .alpha.test_one import f\n")
    (tests / "gamma").mkdir()
    (tests / "gamma" / "test_two.py").write_text("import tests.test_stats\n")
    (tests / "alpha" / "test_three.py").write_text("from . import test_one\n")
    (tests / "alpha" / "__init__.py").write_text("from .test_one import x\n")
    assert misplaced(tests, package) == [
        "gamma/test_two.py: tests/gamma has no __init__.py",
        "gamma/test_two.py: no subpackage faithlens/gamma",
        "test_nowhere.py: no top-level module faithlens/nowhere.py",
    ]
    assert untested_packages(tests, package) == ["beta"]
    assert imports_of_test_modules(tests) == [
        "tests.alpha imports tests.alpha.test_one",
        "tests.alpha.test_three imports tests.alpha.test_one",
        "tests.gamma.test_two imports tests.test_stats",
        "tests.test_nowhere imports tests.alpha.test_one",
        "tests.test_stats imports tests.alpha.test_one",
    ]

    (tests / "conftest.py").write_text("from tests.alpha.helper import x\n")
    (tests / "alpha" / "helper.py").write_text("from tests.conftest import BUILDERS\n")
    (tests / "alpha" / "test_four.py").write_text("from .. import conftest\n")
    (tests / "test_five.py").write_text("import tests.conftest as c\nfrom .conftest import y\n")
    assert imports_of_conftest(tests) == [
        "tests.alpha.helper imports tests.conftest",
        "tests.alpha.test_four imports tests.conftest",
        "tests.test_five imports tests.conftest",
        "tests.test_five imports tests.conftest",
    ]
