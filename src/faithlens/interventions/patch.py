"""Activation patching: :class:`Patch` writes a source run's activation, example by example (the
source may be given per selection or per site, or as a run's cache: :mod:`.sources`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ..models.sites import SiteLike
from .base import HookContext, Intervention, Rows
from .sources import check_source, fit_source, source_tensor


@dataclass(frozen=True, eq=False)
class Patch(Intervention):
    """Activation patching: write the source run's activation, example by example."""

    site: SiteLike
    source: Any
    rows: Rows = None

    def compute(self, current: Tensor, ctx: HookContext) -> Tensor:
        src = source_tensor(self.source, self.site_spec)
        return fit_source(src.to(current.device), ctx, str(self.site_spec)).to(current.dtype)

    def validate(self, shape: tuple[int, ...], full_shape: tuple[int, ...]) -> None:
        check_source(self.source, self.site_spec, shape, full_shape)


__all__ = ["Patch"]
