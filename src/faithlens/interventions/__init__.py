"""Interventions: what to write at a site.

Each intervention is a small frozen object holding its site (with the position / unit selection)
and the batch ``rows`` it applies to (all rows by default, so several conditions can share one
batch). Its ``compute(current, ctx)`` is a pure function of tensors: it receives the selected
activation ``[rows, positions, units]`` and returns the replacement, same shape. Several
interventions at one site apply in the order given (the run engine composes them).

The whole public API, by module:

``base``
    - :class:`Intervention`: the base class (``site``, ``rows``, ``compute``, ``validate``).
    - :class:`HookContext`: what an intervention may know about the run it acts in.
    - :data:`Rows`: the batch rows an intervention applies to (``None``: all).
``ablation``
    - :class:`Zero`: zero ablation.
    - :class:`Mean`: mean ablation, with the mean over a reference dataset (:meth:`Mean.fit`).
    - :class:`Resample`: resampling ablation: each example gets the activation of a random
      example of a reference pool (seeded).
``patch``
    - :class:`Patch`: the activation of a source run, per example.
``steering``
    - :class:`Add`: add ``coef * vector`` (steering).
``subspace``
    - :class:`Project`: keep only the component in a subspace (``mode="onto"``), remove it
      (``mode="out"``), or replace it with a source's component (``source=...``).
    - :func:`orthonormal`: orthonormal columns spanning a basis.
``interchange``
    - :class:`Interchange`: in a given basis (rotation / any invertible map), swap chosen
      dimensions with a source's (distributed interchange intervention, DAS).
    - :class:`Invertible`: the protocol of such a map (``forward`` / ``inverse``).

Sources are tensors shaped like the selection, or like the whole site (then the same selection
is taken from them), or a cache (``RunOutput`` / mapping from site name to tensor); the module
``sources`` fits them to a selection, for every intervention that takes one.
"""

from __future__ import annotations

from .ablation import Mean, Resample, Zero
from .base import HookContext, Intervention, Rows
from .interchange import Interchange, Invertible
from .patch import Patch
from .steering import Add
from .subspace import Project, orthonormal

__all__ = [
    "Add",
    "HookContext",
    "Interchange",
    "Intervention",
    "Invertible",
    "Mean",
    "Patch",
    "Project",
    "Resample",
    "Rows",
    "Zero",
    "orthonormal",
]
