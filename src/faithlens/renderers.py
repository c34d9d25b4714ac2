"""Where a result finds the functions that draw and render it.

:mod:`faithlens.results` sits below the methods and :mod:`faithlens.report` above them, so a
result never imports the code that draws it: ``report`` registers, when it is imported, one
plotter per result class (:func:`register_plotter`) and the notebook renderer
(:func:`register_html`), and ``Result.plot`` / ``Result._repr_html_`` look them up here, along
the class' MRO (:func:`plotter_for`, :func:`html_for`). :func:`plot_writer` turns a result's
plot into a writer for ``Result.save(extras=...)``. Every name here is importable from
:mod:`faithlens.results` too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from .results import Result

#: ``module.qualname`` of a result class -> the function that draws it.
_PLOTTERS: dict[str, Callable[..., Figure]] = {}


def _class_key(cls: type | str) -> str:
    if isinstance(cls, str):
        return cls
    return f"{cls.__module__}.{cls.__qualname__}"


def register_plotter(cls: type | str, fn: Callable[..., Figure]) -> None:
    """Draw every result of class ``cls`` (and of its subclasses without a plotter of their own)
    with ``fn(result, ax=None, **options) -> Figure``; ``cls`` may also be another class that
    draws through this registry (``faithlens.circuits.Circuit``). ``cls`` is the class or its qualified
    name (``"faithlens.patching.result.PatchingResult"``); registering again replaces the
    plotter. :mod:`faithlens.report` registers the plotters of every faithlens result."""
    if not callable(fn):
        raise TypeError(f"register_plotter: {fn!r} is not callable")
    _PLOTTERS[_class_key(cls)] = fn


def plotter_for(cls: type) -> Callable[..., Figure] | None:
    """The plotter registered for ``cls`` or its nearest base class (along the MRO), or None."""
    for klass in cls.__mro__:
        fn = _PLOTTERS.get(_class_key(klass))
        if fn is not None:
            return fn
    return None


#: ``module.qualname`` of a result class -> the function that renders it as an HTML fragment.
_HTML: dict[str, Callable[[Any], str]] = {}


def register_html(cls: type[Result] | str, fn: Callable[[Any], str]) -> None:
    """Render every result of class ``cls`` (and of its subclasses without a renderer of their
    own) in a notebook with ``fn(result) -> str`` (an HTML fragment), which ``_repr_html_``
    calls. :mod:`faithlens.report` registers the one renderer of every faithlens result (the
    headline block and table of its HTML report), as it does the plotters."""
    if not callable(fn):
        raise TypeError(f"register_html: {fn!r} is not callable")
    _HTML[_class_key(cls)] = fn


def html_for(cls: type[Result]) -> Callable[[Any], str] | None:
    """The HTML renderer registered for ``cls`` or its nearest base class, or None."""
    return next((_HTML[k] for k in map(_class_key, cls.__mro__) if k in _HTML), None)


def plot_writer(result: Result, dpi: int = 150) -> Callable[[Path], None]:
    """A writer of ``result.plot()`` for ``Result.save(extras={"plot.png": ...})``."""

    def write(path: Path) -> None:
        result.plot().savefig(path, dpi=dpi)

    return write


__all__ = ["html_for", "plot_writer", "plotter_for", "register_html", "register_plotter"]
