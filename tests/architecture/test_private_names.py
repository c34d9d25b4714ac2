"""No private name crosses a module line: what two faithlens modules share has a public home.

The scan reads every module of ``src/faithlens`` (AST only, nothing is imported) and reports:

- ``from X import _name`` (absolute or relative), where ``X`` is another faithlens module (a
  sibling in the same package counts; so does a package's ``__init__`` importing a submodule's
  private name);
- ``mod._name`` where ``mod`` is another faithlens module imported under some name
  (``from . import distances as D; D._np(...)``);
- ``arg._name`` where ``arg`` is a function parameter annotated with a class imported from
  another faithlens module (``def f(model: Model): model._need_tokenizer()``).

Underscore *modules* (``faithlens._memory``, ``faithlens.cli._common``) are package-internal
helpers: they may be imported from anywhere inside the package that holds them, and nowhere
else. Dunder names (``__version__``) are not private.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "faithlens"


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def module_names(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``root`` (a package directory)."""
    out = {}
    for p in root.rglob("*.py"):
        parts = list(p.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` reads from."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _private_module_ok(importer: str, target: str) -> bool:
    """An underscore module may be used inside the package holding it."""
    parts = target.split(".")
    for i, part in enumerate(parts):
        if _private(part):
            owner = ".".join(parts[:i])
            if not (importer == owner or importer.startswith(owner + ".")):
                return False
    return True


def scan_source(
    source: str, module: str, modules: set[str], *, is_package: bool = False, top: str = "faithlens"
) -> list[str]:
    """Every private name of another module of ``modules`` that ``source`` (the text of
    ``module``) imports or reads."""
    tree = ast.parse(source)
    found: list[str] = []
    aliases: dict[str, str] = {}  # local name -> faithlens module
    classes: dict[str, str] = {}  # local name -> faithlens module it was imported from

    def ours(name: str) -> bool:
        return name == top or name.startswith(top + ".")

    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            src = _resolve(module, is_package, node)
            if not ours(src):
                continue
            if src != module and not _private_module_ok(module, src):
                found.append(f"{module}:{node.lineno}: imports from the private module {src}")
            for a in node.names:
                full = f"{src}.{a.name}"
                local = a.asname or a.name
                if full in modules:  # a submodule
                    aliases[local] = full
                    if not _private_module_ok(module, full):
                        found.append(f"{module}:{node.lineno}: imports the private module {full}")
                    continue
                if _private(a.name) and src != module:
                    found.append(f"{module}:{node.lineno}: from {src} import {a.name}")
                elif src != module:
                    classes[local] = src
        elif isinstance(node, ast.Import):
            for a in node.names:
                if ours(a.name):
                    if not _private_module_ok(module, a.name):
                        found.append(f"{module}:{node.lineno}: imports the private module {a.name}")
                    if a.asname:
                        aliases[a.asname] = a.name
                    else:
                        aliases[a.name.split(".")[0]] = a.name.split(".")[0]

    def annotated(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> dict[str, str]:
        out = {}
        args = [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]
        for arg in args:
            if arg.annotation is None:
                continue
            text = (
                arg.annotation.value
                if isinstance(arg.annotation, ast.Constant)
                and isinstance(arg.annotation.value, str)
                else ast.unparse(arg.annotation)
            )
            for part in text.replace("|", " ").replace("[", " ").replace("]", " ").split():
                if part in classes:
                    out[arg.arg] = classes[part]
        return out

    params: dict[int, dict[str, str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            typed = annotated(node)
            for inner in ast.walk(node):
                params.setdefault(id(inner), {}).update(typed)

    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and _private(node.attr)):
            continue
        chain: list[str] = []
        value = node.value
        while isinstance(value, ast.Attribute):
            chain.append(value.attr)
            value = value.value
        if not isinstance(value, ast.Name):
            continue
        if value.id in aliases:
            target = ".".join([aliases[value.id], *reversed(chain)])
            if target != module and (target in modules or not chain):
                found.append(f"{module}:{node.lineno}: {target}.{node.attr}")
        elif not chain and value.id in params.get(id(node), {}):
            owner = params[id(node)][value.id]
            found.append(f"{module}:{node.lineno}: {value.id}.{node.attr} (a {owner} object)")
    return found


def scan(root: Path = PACKAGE) -> list[str]:
    mods = module_names(root)
    found: list[str] = []
    for name, path in sorted(mods.items()):
        found += scan_source(
            path.read_text(encoding="utf-8"),
            name,
            set(mods),
            is_package=path.name == "__init__.py",
            top=root.name,
        )
    return found


def test_no_private_name_crosses_a_module_line():
    found = scan()
    assert not found, "private names used across modules (give them a public home):\n" + "\n".join(
        found
    )


# ---- the scanner itself -------------------------------------------------------------------

MODS = {
    "faithlens",
    "faithlens._memory",
    "faithlens.models",
    "faithlens.models.model",
    "faithlens.patching",
    "faithlens.patching.exact",
    "faithlens.patching.path",
    "faithlens.divergence",
    "faithlens.divergence.distances",
    "faithlens.divergence.compare",
    "faithlens.cli",
    "faithlens.cli._common",
    "faithlens.cli.core",
}


def _scan(source: str, module: str = "faithlens.patching.path", **kw) -> list[str]:
    return scan_source(source, module, MODS, **kw)


def test_scanner_finds_a_sibling_private_import():
    got = _scan("from .exact import _truncated, patch\n")
    assert got == ["faithlens.patching.path:1: from faithlens.patching.exact import _truncated"]
    assert _scan("from faithlens.patching.exact import _row_bytes\n")
    assert _scan("from ..models.model import _x\n")


def test_scanner_finds_a_package_init_importing_a_private_name():
    got = _scan("from .exact import _plan\n", "faithlens.patching", is_package=True)
    assert got == ["faithlens.patching:1: from faithlens.patching.exact import _plan"]


def test_scanner_finds_private_access_on_a_module():
    got = _scan("from . import distances as D\nD._np(x)\n", "faithlens.divergence.compare")
    assert got == ["faithlens.divergence.compare:2: faithlens.divergence.distances._np"]
    assert _scan("import faithlens.patching.exact as E\nE._row_bytes(1)\n")
    assert _scan("import faithlens\nfaithlens.patching.exact._truncated(t)\n")


def test_scanner_finds_private_access_on_an_annotated_parameter():
    src = "from ..models.model import Model\ndef f(model: Model | None):\n    model._need()\n"
    got = _scan(src)
    assert got == ["faithlens.patching.path:3: model._need (a faithlens.models.model object)"]


def test_scanner_allows_what_is_not_a_crossing():
    ok = (
        "from .exact import patch, Condition\n"
        "from .._memory import budget_bytes\n"  # an underscore module inside its package
        "from torch._C import _x\n"  # not ours
        "from faithlens import __version__\n"
        "def _own():\n    return 1\n"
        "class A:\n    def f(self, other: 'A'):\n        return self._x + other._y\n"
        "x = _own()\n"
    )
    assert _scan(ok) == []
    assert _scan("from . import _common\n", "faithlens.cli.core") == []


def test_scanner_finds_a_private_module_used_outside_its_package():
    got = _scan("from ..cli._common import console\n")
    assert got == [
        "faithlens.patching.path:1: imports from the private module faithlens.cli._common"
    ]
