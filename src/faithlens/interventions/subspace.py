"""Subspace interventions: act on the component of an activation in a subspace.

- :func:`orthonormal`: orthonormal columns spanning a basis (refuses a rank-deficient one).
- :class:`Project`: keep only the component in the subspace (``mode="onto"``), remove it
  (``mode="out"``), or replace it with a source's component (``source=...``: subspace patching).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import InputError, ShapeError
from ..models.sites import SiteLike
from .base import HookContext, Intervention, Rows
from .sources import check_source, fit_source, source_tensor


def orthonormal(basis: Tensor) -> Tensor:
    """Orthonormal columns spanning ``basis`` (``[width, k]``; a ``[width]`` vector is k=1)."""
    b = basis[:, None] if basis.dim() == 1 else basis
    if b.shape[1] > b.shape[0]:
        raise ShapeError(f"a subspace basis has at most width columns; got {tuple(b.shape)}")
    q, r = torch.linalg.qr(b.double())
    if bool((r.diagonal().abs() < 1e-10 * max(1.0, float(r.abs().max()))).any()):
        raise InputError("the subspace basis is rank-deficient: its columns are linearly dependent")
    return q.to(basis.dtype)


@dataclass(frozen=True, eq=False)
class Project(Intervention):
    """Subspace intervention. With ``B`` an orthonormal basis of the subspace:

    - ``mode="onto"``: ``x -> x B Bᵀ`` (keep only the subspace);
    - ``mode="out"``: ``x -> x - x B Bᵀ`` (remove it);
    - with ``source``: ``x -> x - x B Bᵀ + s B Bᵀ`` (subspace patching).
    """

    site: SiteLike
    basis: Tensor
    mode: str = "out"
    source: Any = None
    rows: Rows = None

    def __post_init__(self) -> None:
        if self.mode not in ("onto", "out"):
            raise InputError(f"Project: mode must be 'onto' or 'out', not {self.mode!r}")
        object.__setattr__(self, "basis", orthonormal(self.basis))

    def compute(self, current: Tensor, ctx: HookContext) -> Tensor:
        b = self.basis.to(current)
        inside = (current @ b) @ b.T
        if self.source is not None:
            src = fit_source(
                source_tensor(self.source, self.site_spec).to(current.device),
                ctx,
                str(self.site_spec),
            ).to(current.dtype)
            return current - inside + (src @ b) @ b.T
        return inside if self.mode == "onto" else current - inside

    def validate(self, shape: tuple[int, ...], full_shape: tuple[int, ...]) -> None:
        if self.basis.shape[0] != shape[-1]:
            raise ShapeError(
                f"{self.site_spec}: basis has {self.basis.shape[0]} rows, the site has width {shape[-1]}"
            )
        if self.source is not None:
            check_source(self.source, self.site_spec, shape, full_shape)


__all__ = ["Project", "orthonormal"]
