"""Errors that faithlens raises for bad input.

Every error names the bad thing and says how to fix it. They are raised before any expensive work
starts (validation happens before the first forward pass), and they subclass ``ValueError`` so
that generic handlers keep working.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class FaithlensError(ValueError):
    """Base class of every error faithlens raises for bad input."""


class SiteError(FaithlensError, KeyError):
    """An unknown site, or a site that a run cannot reach."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain.
        return str(self.args[0]) if self.args else ""


class ShapeError(FaithlensError):
    """A tensor whose shape does not fit where it is used."""


class InputError(FaithlensError):
    """Inputs (prompts, tokens, answers, datasets) that cannot be used as given."""


class MetricError(FaithlensError):
    """A metric that produced NaN / inf or cannot be computed."""


class MissingExtraError(FaithlensError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""


def nearest(name: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """The valid names closest to ``name`` (for 'did you mean' messages)."""
    pool = list(candidates)
    close = difflib.get_close_matches(name, pool, n=n, cutoff=0.5)
    if close:
        return close
    # Fall back to names sharing the same prefix family (e.g. 'head.' for 'head.99.1').
    family = name.split(".")[0]
    same = [c for c in pool if c.split(".")[0] == family]
    return same[:n] if same else pool[:n]


class ArgumentError(InputError):
    """An argument (of a function or a command-line option) with a value it cannot take.

    The message names the argument, the value given and the fix; raised by the helpers in
    :mod:`faithlens.validate` before any expensive work starts.
    """


class ResultError(FaithlensError):
    """A results folder that cannot be written or read back as it is (partial, corrupted,
    edited, from a future format, or already holding another result)."""


class CheckpointError(FaithlensError):
    """A checkpoint that is unreadable, unsafe, truncated or belongs to another run."""
