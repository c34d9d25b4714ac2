"""Steering: :class:`Add` adds ``coef * vector`` to a site's activation."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .. import validate
from ..errors import ShapeError
from ..models.sites import SiteLike
from .base import HookContext, Intervention, Rows, check_finite


@dataclass(frozen=True, eq=False)
class Add(Intervention):
    """Add ``coef * vector`` (steering). ``vector`` is ``[width]`` or shaped like the selection."""

    site: SiteLike
    vector: Tensor
    coef: float = 1.0
    rows: Rows = None

    def __post_init__(self) -> None:
        # A NaN or infinite coefficient would give NaN logits: refuse it here.
        if isinstance(self.coef, Tensor):
            if not bool(torch.isfinite(self.coef).all()):
                raise validate.fail(
                    "coef",
                    self.coef,
                    "must be finite (not NaN or infinite)",
                    "fix the coefficients",
                )
        else:
            validate.finite_float("coef", self.coef, fix="use a finite steering coefficient")
        if not isinstance(self.vector, Tensor):
            raise validate.fail(
                "vector", type(self.vector).__name__, "must be a torch tensor", "pass a tensor"
            )

    def compute(self, current: Tensor, ctx: HookContext) -> Tensor:
        v = self.vector.to(current)
        return current + self.coef * v

    def validate(self, shape: tuple[int, ...], full_shape: tuple[int, ...]) -> None:
        check_finite(self.vector, self.site_spec, "steering vector")
        if self.vector.shape[-1] != shape[-1]:
            raise ShapeError(
                f"{self.site_spec}: steering vector has width {self.vector.shape[-1]}, the site has {shape[-1]}"
            )
        try:
            torch.broadcast_shapes(tuple(self.vector.shape), shape)
        except RuntimeError as e:
            raise ShapeError(
                f"{self.site_spec}: vector of shape {tuple(self.vector.shape)} does not broadcast to {shape}"
            ) from e


__all__ = ["Add"]
