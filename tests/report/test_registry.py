"""The plot registry: ``Result.plot`` dispatches to the plotter that ``faithlens.report``
registered for the result's class (along the MRO), and no method module imports ``report``."""

from __future__ import annotations

import ast
import inspect
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

import faithlens
from faithlens import renderers
from faithlens.report import registry
from faithlens.results import Result, plotter_for, register_plotter

SRC = Path(faithlens.__file__).resolve().parent


def _subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_subclasses(sub))
    return out


def _library_results() -> list[type[Result]]:
    return [c for c in _subclasses(Result) if c.__module__.startswith("faithlens.")]


@pytest.fixture
def plotters(monkeypatch):
    """The registry, restored after the test."""
    monkeypatch.setattr(renderers, "_PLOTTERS", dict(renderers._PLOTTERS))
    return renderers._PLOTTERS


@dataclass(frozen=True)
class _RegistryToyBase(Result):
    tag: str = "base"


@dataclass(frozen=True)
class _RegistryToyChild(_RegistryToyBase):
    tag: str = "child"


@dataclass(frozen=True)
class _RegistryToyOptions(Result):
    tag: str = "options"

    def plot(self, ax=None, metric: str = "emd"):
        return self._plot(ax, metric=metric)


# -- every faithlens result can be drawn ------------------------------------------------------


def test_every_library_result_has_a_plotter():
    classes = _library_results()
    assert len(classes) >= 19  # 18 result classes with a plotter + Dissection, which inherits
    missing = [f"{c.__module__}.{c.__qualname__}" for c in classes if plotter_for(c) is None]
    assert not missing, f"no plotter registered for {missing}"


def test_plotters_live_in_report_and_none_is_left_on_the_classes():
    for cls in _library_results():
        fn = plotter_for(cls)
        assert fn is not None and fn.__module__.startswith("faithlens.report."), (cls, fn)
        own = cls.__dict__.get("plot")
        if own is not None:  # a signature with options, handed on to the plotter
            src = ast.unparse(ast.parse(_dedent_source(own)))
            assert "self._plot(" in src, f"{cls.__qualname__}.plot draws by itself"


def _dedent_source(fn) -> str:
    return textwrap.dedent(inspect.getsource(fn))


def test_registry_table_is_what_is_registered():
    for cls, fn in registry.PLOTTERS.items():
        assert plotter_for(cls) is fn
    from faithlens.neurons.dissect import Dissection
    from faithlens.neurons.result import NeuronExplanation

    assert Dissection not in registry.PLOTTERS
    assert plotter_for(Dissection) is registry.PLOTTERS[NeuronExplanation]


def test_every_plotter_takes_the_result_and_ax():
    # Result.plot calls fn(result, ax=ax, **options)
    for cls, fn in registry.PLOTTERS.items():
        inspect.signature(fn).bind(object(), ax=None)  # raises TypeError if not
        assert fn.__name__.endswith("_plot"), (cls, fn)


# -- dispatch ---------------------------------------------------------------------------------


def _fn(label):
    def draw(res, ax=None, **options):
        return (label, res.tag, ax, options)

    return draw


def test_dispatch_follows_the_mro(plotters):
    base = _fn("base")
    register_plotter(_RegistryToyBase, base)
    assert _RegistryToyBase().plot() == ("base", "base", None, {})
    assert _RegistryToyChild().plot(ax="AX") == ("base", "child", "AX", {})  # inherited
    register_plotter(_RegistryToyChild, _fn("child"))
    assert _RegistryToyChild().plot() == ("child", "child", None, {})
    assert _RegistryToyBase().plot() == ("base", "base", None, {})  # the base keeps its own


def test_register_by_qualified_name_and_options_pass_through(plotters):
    name = f"{__name__}._RegistryToyOptions"
    register_plotter(name, _fn("by name"))
    assert _RegistryToyOptions().plot("AX", metric="mmd") == (
        "by name",
        "options",
        "AX",
        {"metric": "mmd"},
    )


def test_an_unregistered_class_raises_naming_it(plotters):
    with pytest.raises(NotImplementedError, match=r"_RegistryToyChild.*register_plotter"):
        _RegistryToyChild().plot()


def test_register_refuses_a_non_callable(plotters):
    with pytest.raises(TypeError, match="not callable"):
        register_plotter(_RegistryToyBase, "draw")  # type: ignore[arg-type]


# -- no method imports report -----------------------------------------------------------------


def _imports_report(path: Path, root: Path) -> list[str]:
    """The lines of ``path`` (a module of the package at ``root``) that import
    ``faithlens.report``: absolute, relative or by name through importlib."""
    rel = path.relative_to(root).with_suffix("")
    package = ["faithlens", *rel.parts[:-1]]  # a module's package (an __init__'s is itself)
    tree = ast.parse(path.read_text(), str(path))
    hits = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            mod = ".".join([*base, *(node.module.split(".") if node.module else [])])
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and node.value.startswith("faithlens.report")
        ):
            targets = [node.value]
        if any(t == "faithlens.report" or t.startswith("faithlens.report.") for t in targets):
            hits.append(f"{path.relative_to(root)}:{node.lineno}")
    return hits


def report_importers(root: Path) -> list[str]:
    """Every import of ``faithlens.report`` below ``root`` outside report/, cli/ and the package's
    own ``__init__`` (which imports report so that the plotters are registered)."""
    hits = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[0] in ("report", "cli") or rel == Path("__init__.py"):
            continue
        hits.extend(_imports_report(path, root))
    return hits


def test_no_method_imports_report():
    assert report_importers(SRC) == []


@pytest.mark.parametrize(
    ("where", "line"),
    [
        ("patching/result.py", "from ..report.plots import patching_plot"),
        ("das/result.py", "from .. import report"),
        ("zoo/training.py", "from ..report import plots"),
        ("results.py", "from .report.plots import subplots"),
        ("neurons/sanity.py", "import faithlens.report.plots"),
        ("stats.py", "from faithlens.report import registry"),
        ("divergence/audit.py", "importlib.import_module('faithlens.report')"),
    ],
)
def test_the_import_check_can_fail(tmp_path, where, line):
    root = tmp_path / "faithlens"
    for ok in ("report/plots.py", "cli/core.py", "__init__.py"):
        (root / ok).parent.mkdir(parents=True, exist_ok=True)
        (root / ok).write_text("from faithlens.report import plots\nfrom . import report\n")
    target = root / where
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(f"import numpy\n\n\ndef f():\n    {line}\n")
    assert report_importers(root) == [f"{where}:5"]


def test_the_import_check_ignores_mentions(tmp_path):
    root = tmp_path / "faithlens"
    (root / "stats").mkdir(parents=True)
    (root / "stats" / "core.py").write_text(
        '"""Every number faithlens reports (see faithlens report)."""\n'
        "from ..reports import x\nfrom . import reporting\n"
    )
    assert report_importers(root) == []


@pytest.mark.slow
def test_import_faithlens_registers_the_plotters_without_matplotlib():
    code = (
        "import sys, faithlens\n"
        "from faithlens.patching.result import PatchingResult\n"
        "from faithlens.results import plotter_for\n"
        "assert plotter_for(PatchingResult).__name__ == 'patching_plot'\n"
        "assert 'matplotlib' not in sys.modules, 'import faithlens imported matplotlib'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC.parent)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr
