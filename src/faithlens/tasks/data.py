"""``Data``: what every dataset a method takes has in common.

Each method takes its data as its second argument (``method(model, data, ...)``), and each has
its own kind: a :class:`~faithlens.tasks.Task` (patching, the audit), a
:class:`~faithlens.scrubbing.ScrubData` (scrubbing), an
:class:`~faithlens.tasks.interchange.InterchangeData` (DAS), a
:class:`~faithlens.representations.ContrastPairs` (reading). Where they overlap they share one
protocol:

- ``name``: the dataset's name, for reports;
- ``len(data)``: the number of examples;
- ``data.subset(rows)``: the examples ``rows`` (integer indices ``0..len - 1``, in that order,
  repetitions allowed: a bootstrap resample or one side of a split), as a dataset of the same
  kind; an index out of range is an :class:`~faithlens.errors.InputError`;
- ``data.fingerprint()``: a sha256 (hex) of the name and of every field that defines the
  examples (:func:`faithlens.fingerprint.data_fingerprint`; ``meta`` is left out): equal in any
  process for equal data, different when one example changes. Checkpoints are keyed on it.
  Raises ``TypeError`` for contents it cannot hash stably (an arbitrary Python object).

This module needs nothing but the standard library; it sits in ``tasks`` so that every method
package (all above ``tasks`` in the layer stack) can name it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, Self, runtime_checkable


@runtime_checkable
class Data(Protocol):
    """A dataset a method takes: named, sized, subsettable and fingerprinted (module docstring)."""

    @property
    def name(self) -> str: ...

    def __len__(self) -> int: ...

    def subset(self, rows: Sequence[int]) -> Self: ...

    def fingerprint(self) -> str: ...


__all__ = ["Data"]
