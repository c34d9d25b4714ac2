"""The one progress protocol every method reports through.

Every public method that takes a ``progress=`` argument calls it as ``progress(done, total)``:

* ``total`` is the number of work units (chunks of examples, passes, epochs, unit blocks, training
  steps, checks ...) the call will do; it is fixed for the whole call;
* ``done`` is how many are finished; it never decreases and its last value is ``total``;
* the callback returns nothing and should be cheap (it runs between chunks of work); an
  exception it raises ends the call.

Methods with richer per-step information hand it to a separate keyword-only callback (e.g.
``on_epoch=`` of :func:`faithlens.das` with each epoch's history row, ``on_check=`` of
:func:`faithlens.faithfulness` with each check's name, ``on_step=`` of the zoo training loop with
each step's numbers), so that one progress bar (the CLI's rich bars) drives every method.

This is a utility module: it imports only the standard library.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Protocol


class Progress(Protocol):
    """``progress(done, total)``: ``done`` of ``total`` work units are finished (see the module)."""

    def __call__(self, done: int, total: int, /) -> None: ...


def positional_arity(fn: Callable[..., Any]) -> int | None:
    """How many positional arguments ``fn`` requires, or ``None`` when it cannot be told
    (no signature, or ``*args``).

    Methods whose old callbacks took another shape use this to recognise an old-shape callback
    passed as ``progress`` (and warn), without calling it.
    """
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    required = 0
    for p in sig.parameters.values():
        if p.kind is inspect.Parameter.VAR_POSITIONAL:
            return None
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        if p.kind in positional and p.default is inspect.Parameter.empty:
            required += 1
    return required


def annotated_done_total(fn: Callable[..., Any]) -> bool:
    """Whether ``fn``'s first two parameters are both annotated ``int`` (as objects or, under
    ``from __future__ import annotations``, as the string ``"int"``): then it is certainly a
    ``(done, total)`` callback, whatever other shape a method's old callback had."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    if len(params) < 2:
        return False
    return all(p.annotation in (int, "int") for p in params[:2])
