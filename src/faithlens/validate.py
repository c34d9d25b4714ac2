"""One validation layer: the argument checks every public method and CLI option shares.

Every helper takes the argument's ``name`` as the user wrote it (``"n_boot"`` in Python,
``"--n-boot"`` on the command line), checks ``value`` and returns it normalised (an ``int``, a
``float``, a ``Path``, a ``torch.device``), or raises :class:`~faithlens.errors.ArgumentError`
naming the argument, the value and the fix. They are cheap and are called before any expensive
work (model loading aside, nothing heavy should run before them).

API: :func:`positive_int`, :func:`nonnegative_int`, :func:`int_in_range`, :func:`finite_float`,
:func:`positive_float`, :func:`probability`, :func:`level`, :func:`n_boot`, :func:`choice`,
:func:`device`, :func:`output_dir`, :func:`output_file`, :func:`min_examples`,
:func:`max_memory`, :func:`replaced_knob`; the decorators :func:`renamed_argument` and
:func:`reordered_arguments` keep a renamed or reordered argument of a public method working for
one release.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from .errors import ArgumentError

__all__ = [
    "choice",
    "device",
    "fail",
    "finite_float",
    "int_in_range",
    "level",
    "max_memory",
    "min_examples",
    "n_boot",
    "nonnegative_int",
    "output_dir",
    "output_file",
    "positive_float",
    "positive_int",
    "probability",
    "renamed_argument",
    "reordered_arguments",
    "replaced_knob",
]

P = ParamSpec("P")
R = TypeVar("R")


def fail(name: str, value: Any, requirement: str, fix: str = "") -> ArgumentError:
    """The error for ``name=value``: ``"<name>=<value!r>: <requirement>. <fix>"``."""
    msg = f"{name}={value!r}: {requirement}"
    if fix:
        msg += f". {fix}"
    return ArgumentError(msg)


def _as_int(name: str, value: Any, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise fail(name, value, "must be an integer", fix)
    return int(value)


def positive_int(name: str, value: Any, *, fix: str = "") -> int:
    """An integer >= 1."""
    v = _as_int(name, value, fix)
    if v < 1:
        raise fail(name, value, "must be a positive integer (>= 1)", fix)
    return v


def nonnegative_int(name: str, value: Any, *, fix: str = "") -> int:
    """An integer >= 0."""
    v = _as_int(name, value, fix)
    if v < 0:
        raise fail(name, value, "must be a non-negative integer (>= 0)", fix)
    return v


def int_in_range(name: str, value: Any, low: int, high: int, *, fix: str = "") -> int:
    """An integer in ``low..high`` (both inclusive)."""
    v = _as_int(name, value, fix)
    if not low <= v <= high:
        raise fail(name, value, f"must be between {low} and {high}", fix)
    return v


def finite_float(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    fix: str = "",
) -> float:
    """A finite real number, optionally within bounds (closed unless ``*_open``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise fail(name, value, "must be a number", fix)
    v = float(value)
    if not math.isfinite(v):
        raise fail(name, value, "must be a finite number (not NaN or infinite)", fix)
    if low is not None and (v < low or (low_open and v == low)):
        raise fail(name, value, f"must be {'>' if low_open else '>='} {low}", fix)
    if high is not None and (v > high or (high_open and v == high)):
        raise fail(name, value, f"must be {'<' if high_open else '<='} {high}", fix)
    return v


def positive_float(name: str, value: Any, *, fix: str = "") -> float:
    """A finite number > 0."""
    return finite_float(name, value, low=0.0, low_open=True, fix=fix)


def probability(name: str, value: Any, *, open_: bool = True, fix: str = "") -> float:
    """A probability in (0, 1) (``open_=False``: in [0, 1])."""
    return finite_float(name, value, low=0.0, high=1.0, low_open=open_, high_open=open_, fix=fix)


def level(value: Any, name: str = "level") -> float:
    """A confidence level in (0, 1)."""
    return probability(name, value, fix="use a confidence level such as 0.95")


def n_boot(value: Any, name: str = "n_boot") -> int:
    """A number of bootstrap resamples (>= 2: one resample gives no spread)."""
    v = _as_int(name, value, "use e.g. 1000 resamples")
    if v < 2:
        raise fail(name, value, "must be at least 2 (a bootstrap needs resamples)", "use e.g. 1000")
    return v


def choice(name: str, value: Any, options: Iterable[Any], *, fix: str = "") -> Any:
    """One of ``options`` (compared with ``==``)."""
    opts = list(options)
    if value not in opts:
        listed = ", ".join(repr(o) for o in opts)
        raise fail(name, value, f"must be one of {listed}", fix)
    return value


def max_memory(value: Any, name: str = "max_memory") -> int | None:
    """The one memory knob of every method that chunks its work: ``None`` (the configured
    budget) or a positive number of bytes."""
    if value is None:
        return None
    return positive_int(name, value, fix="give a number of bytes")


def replaced_knob(
    fn: str,
    old_name: str,
    old_value: Any,
    new_name: str,
    new_value: Any,
    *,
    stacklevel: int = 3,
) -> None:
    """A deprecated keyword ``old_name`` (kept for one release): refuse it together with its
    replacement ``new_name``; warn (DeprecationWarning) when it is given alone. ``stacklevel``
    as for :func:`warnings.warn`, counted from this function (3: called by the public method)."""
    if old_value is None:
        return
    if new_value is not None:
        raise fail(
            old_name,
            old_value,
            f"cannot be given together with {new_name}={new_value!r}",
            f"give only {new_name} ({old_name} is deprecated)",
        )
    warnings.warn(
        f"{fn}: {old_name}= is deprecated and will be removed in the next release; "
        f"use {new_name}= instead",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


def renamed_argument(old: str, new: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator: ``old=`` is the deprecated keyword of the parameter ``new`` (kept for one
    release). A call with ``old=value`` warns (DeprecationWarning) and passes the value as
    ``new``; a call that also gives ``new`` (by keyword or by position) is an
    :class:`~faithlens.errors.ArgumentError` naming both. Positional calls are unaffected."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        params = list(inspect.signature(fn).parameters.values())
        names = [p.name for p in params]
        if new not in names or old in names:
            raise TypeError(f"{fn.__name__} must take {new!r} and not {old!r}")
        slot = names.index(new)
        if params[slot].kind not in (
            params[slot].POSITIONAL_ONLY,
            params[slot].POSITIONAL_OR_KEYWORD,
        ):
            slot = len(names) + 1  # keyword-only: never given by position

        @functools.wraps(fn)
        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            if old in kwargs:
                if new in kwargs or len(args) > slot:
                    raise ArgumentError(
                        f"{fn.__name__}: {old}= and {new} were both given: {old}= is the "
                        f"deprecated name of {new}. Give only {new}"
                    )
                warnings.warn(
                    f"{fn.__name__}: {old}= is deprecated and will be removed in the next "
                    f"release; use {new}= instead",
                    DeprecationWarning,
                    stacklevel=2,
                )
                kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        # what the deprecated names were, for docs (tests/helpers/api_table.py shows them)
        call.__dict__["renamed_arguments"] = {**getattr(fn, "renamed_arguments", {}), old: new}
        return call

    return decorate


def reordered_arguments(
    old: Sequence[str], is_old: Callable[[tuple[Any, ...]], bool]
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorator: the first ``len(old)`` parameters used to come in the order ``old`` (kept for
    one release). When ``is_old(args)`` says a call passed them positionally in the old order,
    it warns (DeprecationWarning) and passes them by name; keyword calls are unaffected."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        new = list(inspect.signature(fn).parameters)[: len(old)]
        if sorted(new) != sorted(old) or list(new) == list(old):
            raise TypeError(f"{fn.__name__}: {list(old)} must reorder its parameters {new}")

        @functools.wraps(fn)
        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            if not is_old(args):
                return fn(*args, **kwargs)
            shown = ", ".join(old[: len(args)])
            warnings.warn(
                f"{fn.__name__}({shown}, ...) is deprecated and will be removed in the next "
                f"release; call {fn.__name__}({', '.join(new)}, ...)",
                DeprecationWarning,
                stacklevel=2,
            )
            given = dict(zip(old, args))
            both = sorted(set(given) & set(kwargs))
            if both:
                raise TypeError(f"{fn.__name__}() got multiple values for argument {both[0]!r}")
            target: Callable[..., R] = fn  # called with the arguments in the new order
            if len(args) > len(old):
                return target(*(given[n] for n in new), *args[len(old) :], **kwargs)
            return target(**given, **kwargs)

        call.__dict__["old_order"] = tuple(old)  # for docs, as renamed_arguments above
        return call

    return decorate


def min_examples(
    name: str, n: int, minimum: int = 2, *, what: str = "a confidence interval"
) -> int:
    """At least ``minimum`` examples (a standard error needs two)."""
    v = _as_int(name, n, "")
    if v < minimum:
        raise fail(name, n, f"{what} needs at least {minimum} examples", f"use {name} >= {minimum}")
    return v


def device(value: Any, name: str = "device") -> Any:
    """A torch device that exists on this machine (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``)."""
    import torch

    try:
        dev = torch.device(value)
    except (RuntimeError, TypeError) as e:
        raise fail(
            name, value, "is not a torch device", "use 'cpu', 'cuda', 'cuda:N' or 'mps'"
        ) from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise fail(name, value, "CUDA is not available on this machine", "use device='cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise fail(
                name,
                value,
                f"this machine has {torch.cuda.device_count()} CUDA device(s)",
                "use an index below that",
            )
    elif dev.type == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise fail(name, value, "MPS is not available on this machine", "use device='cpu'")
    elif dev.type not in ("cpu", "meta"):
        raise fail(name, value, f"device type {dev.type!r} is not supported", "use 'cpu' or 'cuda'")
    return dev


def _writable_parent(name: str, path: Path) -> None:
    parent = path.parent if str(path.parent) else Path(".")
    # The nearest existing ancestor must be a writable directory (we create the rest).
    anc = parent
    while not anc.exists():
        if anc.parent == anc:
            break
        anc = anc.parent
    if not anc.is_dir():
        raise fail(name, str(path), f"{anc} is a file, not a folder", "choose another path")
    if not os.access(anc, os.W_OK | os.X_OK):
        raise fail(name, str(path), f"{anc} is not writable", "choose a writable location")


def output_dir(value: Any, name: str = "out") -> Path:
    """A folder a result can be written to: not a file, inside a writable location.

    Whether an existing folder may be replaced is the results layer's decision
    (``Result.save(..., overwrite=)``); this only checks that writing can succeed.
    """
    p = Path(value)
    if p.exists() and not p.is_dir():
        raise fail(name, str(p), "is a file, not a folder", "choose a folder path")
    if p.exists():
        if not os.access(p, os.W_OK | os.X_OK):
            raise fail(name, str(p), "is not writable", "choose a writable folder")
    else:
        _writable_parent(name, p)
    return p


def output_file(value: Any, name: str = "plot") -> Path:
    """A file path that can be written (its folder exists or can be created, and is writable)."""
    p = Path(value)
    if p.exists() and p.is_dir():
        raise fail(name, str(p), "is a folder, not a file", "give a file path such as plot.png")
    if p.exists() and not os.access(p, os.W_OK):
        raise fail(name, str(p), "is not writable", "choose a writable path")
    if not p.exists():
        _writable_parent(name, p)
    return p
