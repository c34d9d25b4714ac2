"""The base of every intervention: what it is given and what it must provide.

An intervention is a small frozen object holding its site (with the position / unit selection) and
the batch ``rows`` it applies to (``None``: all rows, so several conditions can share one batch).
The run engine (``faithlens.hooks``) hands its ``compute(current, ctx)`` the selected activation
``[rows, positions, units]`` and a :class:`HookContext`; ``compute`` returns the replacement, same
shape. Before any forward pass the engine calls ``validate(shape, full_shape)`` with the shape of
the selection and of the whole hooked tensor.

- :data:`Rows`: which batch rows an intervention applies to.
- :class:`HookContext`: what an intervention may know about the run it acts in.
- :class:`Intervention`: the base class (``site_spec``, ``compute``, ``validate``, ``describe``).
- :func:`check_finite`: refuse a NaN or infinite tensor, naming the site and what it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import InputError
from ..models.sites import Selection, Site, SiteLike, as_site

Rows = slice | Sequence[int] | Tensor | None


@dataclass(frozen=True, eq=False)
class HookContext:
    """What an intervention may know about the run it acts in."""

    selection: Selection
    full: Tensor  # the whole hooked tensor (before this intervention), [batch, pos, width]
    batch: int
    offset: int  # absolute position of the run's first position


class Intervention:
    """Base class. Subclasses are frozen dataclasses with ``site`` and ``rows`` fields."""

    site: SiteLike
    rows: Rows

    @property
    def site_spec(self) -> Site:
        return as_site(self.site)

    def compute(self, current: Tensor, ctx: HookContext) -> Tensor:
        raise NotImplementedError

    def validate(self, shape: tuple[int, ...], full_shape: tuple[int, ...]) -> None:
        """Check sources against the selection's shape before any forward pass."""

    def describe(self) -> str:
        return f"{type(self).__name__}({self.site_spec})"


def check_finite(t: Tensor, site: Site, what: str) -> None:
    """Refuse a tensor with NaN or inf values (``what`` names it in the error)."""
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise InputError(f"{site}: the {what} contains NaN or inf values; fix it before patching")


__all__ = ["HookContext", "Intervention", "Rows", "check_finite"]
