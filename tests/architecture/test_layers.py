"""The layering is a contract (pyproject's ``[tool.importlinter]``, checked by ``make lint``).

These tests keep the contract from being emptied or outgrown: every top-level module of
faithlens must sit in a layer, the key orderings of docs/ARCHITECTURE.md must hold, every ignored
import must say why, and (where import-linter is installed, as in CI) the contracts must pass.
"""

from __future__ import annotations

import pkgutil
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = ROOT / "pyproject.toml"
PACKAGE = ROOT / "src" / "faithlens"


def _config() -> dict:
    with open(PYPROJECT, "rb") as fh:
        return tomllib.load(fh)["tool"]["importlinter"]


def _contract(cid: str) -> dict:
    found = [c for c in _config()["contracts"] if c.get("id") == cid]
    assert len(found) == 1, f"pyproject has no single import-linter contract with id {cid!r}"
    return found[0]


def _layer_names(layer: str) -> list[str]:
    """The module names of one layer entry (``a | b``, ``a : b``, optional ``(a)``)."""
    return [p.strip().strip("()") for p in re.split(r"[|:]", layer) if p.strip()]


def _layers() -> list[list[str]]:
    return [_layer_names(layer) for layer in _contract("stack")["layers"]]


def _top_level_modules() -> set[str]:
    return {m.name for m in pkgutil.iter_modules([str(PACKAGE)])}


def _level(name: str) -> int:
    """Index of ``name``'s layer, 0 at the top."""
    for i, names in enumerate(_layers()):
        if name in names:
            return i
    raise AssertionError(f"{name!r} is in no layer")


def test_stack_contract_covers_every_module():
    stack = _contract("stack")
    assert stack["type"] == "layers"
    assert stack["containers"] == ["faithlens"]
    assert stack.get("exhaustive") is True, "the stack must be exhaustive"
    declared = {n for names in _layers() for n in names}
    missing = _top_level_modules() - declared
    assert not missing, f"modules outside the layer contract: {sorted(missing)}"
    assert {"graph", "executor", "hooks"} <= declared


def test_stack_order():
    lvl = _level
    assert lvl("__main__") < lvl("cli") < lvl("report")
    methods = ["patching", "scrubbing", "divergence", "das", "neurons", "representations"]
    for m in methods:
        assert lvl("report") < lvl(m) < lvl("graph") < lvl("runs"), m
    assert lvl("runs") < lvl("interventions") < lvl("loading") < lvl("zoo") < lvl("models")
    assert lvl("zoo") < lvl("tasks") < lvl("models")
    utilities = ["errors", "validate", "stats", "results", "fingerprint", "safe_load", "_memory"]
    for u in [*utilities, "executor"]:
        assert lvl("models") < lvl(u), u
    # the four methods that use no other method share an independent layer
    top = _contract("stack")["layers"][lvl("das")]
    assert "|" in top and set(_layer_names(top)) == {
        "das",
        "representations",
        "patching",
        "scrubbing",
    }


def test_methods_independent():
    c = _contract("methods")
    assert c["type"] == "independence"
    assert set(c["modules"]) == {
        f"faithlens.{m}" for m in ("patching", "scrubbing", "divergence", "neurons")
    }
    f = _contract("das-no-neurons")
    assert f["type"] == "forbidden" and f["forbidden_modules"] == ["faithlens.neurons"]


def test_zoo_model_needs_no_training():
    c = _contract("zoo-model")
    assert c["type"] == "forbidden"
    assert {"faithlens.zoo.model", "faithlens.zoo.config", "faithlens.zoo.tokenizer"} <= set(
        c["source_modules"]
    )
    assert {"faithlens.tasks", "faithlens.zoo.recipes", "faithlens.zoo.training"} <= set(
        c["forbidden_modules"]
    )


def test_nothing_below_cli_imports_it():
    c = _contract("no-cli")
    assert c["type"] == "forbidden"
    assert set(c["forbidden_modules"]) == {"faithlens.cli", "faithlens.__main__"}
    below = {f"faithlens.{m}" for m in _top_level_modules() - {"cli", "__main__"}}
    missing = below - set(c["source_modules"])
    assert not missing, f"modules the no-cli contract does not check: {sorted(missing)}"


def test_no_contract_lists_an_exception():
    """The contracts hold with no ignored imports: an exception would have to be argued for in a
    change to this test."""
    for c in _config()["contracts"]:
        assert not c.get("ignore_imports"), f"contract {c['id']!r} ignores imports"


def test_contracts_pass():
    """The contracts hold (import-linter is a dev dependency; CI has it)."""
    cli = pytest.importorskip("importlinter.cli")
    assert cli.lint_imports(config_filename=str(PYPROJECT), no_cache=True, no_logo=True) == 0


def test_version_matches_pyproject():
    """``faithlens.__version__`` (in ``_version.py``, below results, which records it in every
    manifest) is the version pyproject declares."""
    from faithlens._version import __version__

    with open(PYPROJECT, "rb") as fh:
        assert tomllib.load(fh)["project"]["version"] == __version__


def test_model_run_is_the_run_engine():
    """``Model.run`` (in models, at the bottom of the stack) calls the engine that
    ``faithlens.runs`` registers when it is imported, with no upward import."""
    import faithlens.models.model as M
    import faithlens.runs as R

    assert M._ENGINE is R.run
