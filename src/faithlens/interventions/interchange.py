"""Interchange interventions in a basis (distributed interchange intervention, DAS).

- :class:`Invertible`: the protocol of a change of basis (``forward`` into it, ``inverse`` back),
  for example a learned DAS rotation.
- :class:`Interchange`: in a given basis (an orthogonal matrix or any :class:`Invertible` map),
  swap chosen dimensions with a source's, or mix them by a soft mask (Boundless DAS).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from ..errors import InputError, ShapeError
from ..models.sites import SiteLike
from .base import HookContext, Intervention, Rows
from .sources import check_source, fit_source, source_tensor


@runtime_checkable
class Invertible(Protocol):
    """A change of basis for :class:`Interchange`: ``forward`` maps into the basis."""

    def forward(self, x: Tensor) -> Tensor: ...

    def inverse(self, y: Tensor) -> Tensor: ...


@dataclass(frozen=True, eq=False)
class Interchange(Intervention):
    """Interchange intervention in a basis: rotate base and source, copy ``dims`` from the
    source, rotate back. ``basis`` is an orthogonal matrix ``[width, width]`` (columns are the new
    basis vectors; ``x -> x R``), or any :class:`Invertible` map (for example a learned DAS
    rotation). The identity basis gives ordinary coordinate patching of ``dims``.

    Instead of ``dims``, a soft ``mask`` (``[basis width]``, values in [0, 1]; Boundless DAS)
    mixes each basis coordinate: ``z = (1 - m) * z_base + m * z_source``. Pass ``dims=None``
    then. Gradients flow through the basis and the mask when the run has ``grad=True``.
    """

    site: SiteLike
    basis: Any
    dims: Sequence[int] | Tensor | None
    source: Any
    rows: Rows = None
    mask: Tensor | None = None

    def _fwd(self, x: Tensor) -> Tensor:
        if isinstance(self.basis, Tensor):
            return x @ self.basis.to(x)
        return self.basis.forward(x)

    def _inv(self, y: Tensor) -> Tensor:
        if isinstance(self.basis, Tensor):
            return y @ self.basis.to(y).T
        return self.basis.inverse(y)

    def compute(self, current: Tensor, ctx: HookContext) -> Tensor:
        src = fit_source(
            source_tensor(self.source, self.site_spec).to(current.device), ctx, str(self.site_spec)
        ).to(current.dtype)
        xr, sr = self._fwd(current), self._fwd(src)
        if self.mask is not None:
            m = self.mask.to(device=xr.device, dtype=xr.dtype)
            if m.shape[-1] != xr.shape[-1]:
                raise ShapeError(
                    f"{self.site_spec}: the interchange mask has {m.shape[-1]} entries but the "
                    f"basis has {xr.shape[-1]} coordinates"
                )
            return self._inv(xr + m * (sr - xr))
        assert self.dims is not None
        d = torch.as_tensor(self.dims, dtype=torch.long, device=current.device)
        mask = torch.zeros(xr.shape[-1], dtype=torch.bool, device=current.device)
        mask[d] = True
        mixed = torch.where(mask, sr, xr)
        return self._inv(mixed)

    def validate(self, shape: tuple[int, ...], full_shape: tuple[int, ...]) -> None:
        if isinstance(self.basis, Tensor):
            w = shape[-1]
            if tuple(self.basis.shape) != (w, w):
                raise ShapeError(
                    f"{self.site_spec}: basis must be [{w}, {w}], got {tuple(self.basis.shape)}"
                )
            eye = self.basis.double().T @ self.basis.double()
            if not torch.allclose(eye, torch.eye(w, dtype=torch.float64), atol=1e-4):
                raise InputError(
                    f"{self.site_spec}: an Interchange basis tensor must be orthogonal; pass an "
                    "Invertible (forward/inverse) for a non-orthogonal map"
                )
        elif not isinstance(self.basis, Invertible):
            raise InputError(
                "Interchange basis must be an orthogonal tensor or have forward/inverse"
            )
        check_source(self.source, self.site_spec, shape, full_shape)
        if self.mask is not None:
            if self.dims is not None:
                raise InputError(f"{self.site_spec}: give Interchange dims or a mask, not both")
            if self.mask.dim() != 1:
                raise ShapeError(
                    f"{self.site_spec}: the interchange mask must be a vector, got shape "
                    f"{tuple(self.mask.shape)}"
                )
            return
        if self.dims is None:
            raise InputError(f"{self.site_spec}: Interchange needs dims (or a soft mask)")
        d = torch.as_tensor(self.dims).long()
        if d.numel() == 0 or bool(((d < 0) | (d >= shape[-1])).any()):
            raise ShapeError(
                f"{self.site_spec}: dims {d.tolist()} out of range for width {shape[-1]}"
            )


__all__ = ["Interchange", "Invertible"]
