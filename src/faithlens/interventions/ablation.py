"""Ablations: replace a site's activation with something that carries no information about the
example.

- :class:`Zero`: zero ablation.
- :class:`Mean`: mean ablation, with the mean over a reference dataset (:meth:`Mean.fit`).
- :class:`Resample`: resampling ablation: each example gets the activation of a random example of
  a reference pool (seeded; :meth:`Resample.fit` builds the pool).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .. import validate
from ..errors import InputError, ShapeError
from ..models.sites import Selection, Site, SiteLike, as_site
from .base import HookContext, Intervention, Rows, check_finite
from .sources import source_tensor

if TYPE_CHECKING:
    from ..models.model import Model


@dataclass(frozen=True, eq=False)
class Zero(Intervention):
    """Zero ablation."""

    site: SiteLike
    rows: Rows = None

    def compute(self, current: Tensor, ctx: HookContext) -> Tensor:
        return torch.zeros_like(current)


@dataclass(frozen=True, eq=False)
class Mean(Intervention):
    """Mean ablation: replace with ``value`` (a ``[width]`` vector, or ``[positions, width]``
    for per-position means). Build it from data with :meth:`Mean.fit`."""

    site: SiteLike
    value: Tensor
    rows: Rows = None

    @classmethod
    def fit(
        cls,
        model: Model,
        site: SiteLike,
        data: Any,
        *,
        over: str = "tokens",
        rows: Rows = None,
    ) -> Mean:
        """The mean of ``site`` over a reference dataset.

        ``over="tokens"``: one vector, averaged over every real (non-padding) token of every
        example; ``over="examples"``: one vector per position (all examples must have the same
        length).
        """
        validate.choice("over", over, ("tokens", "examples"))
        s = as_site(site)
        plain = Site(s.name)
        inputs = model.prepare(data)
        out = model.run(inputs, cache=[plain])
        act = out.cache[s.name].float()
        if act.dim() == 2:
            value = act.mean(0)
        elif over == "examples":
            if inputs.mask is not None and not bool(inputs.mask.all()):
                raise InputError("Mean.fit(over='examples') needs examples of equal length")
            value = act.mean(0)
        elif over == "tokens":
            if inputs.mask is not None:
                m = inputs.mask.to(act.device, act.dtype)[..., None]
                value = (act * m).sum((0, 1)) / m.sum((0, 1)).clamp(min=1)
            else:
                value = act.mean((0, 1))
        else:
            raise InputError(f"Mean.fit: over must be 'tokens' or 'examples', not {over!r}")
        return cls(site=site, value=value.to(model.dtype), rows=rows)

    def compute(self, current: Tensor, ctx: HookContext) -> Tensor:
        v = self.value.to(current)
        if v.dim() == 1:
            if v.shape[0] == ctx.full.shape[-1] and v.shape[0] != current.shape[-1]:
                v = (
                    v[ctx.selection.dims]
                    if isinstance(ctx.selection.dims, slice)
                    else v[ctx.selection.dims.to(v.device)]
                )
            return v.expand_as(current)
        if v.dim() == 2 and current.dim() == 3:
            # per-position means [S, width]: take the selected positions
            sel = ctx.selection
            if sel.positions is None:
                start = ctx.offset
                v = v[start : start + current.shape[1]]
                return v[None].expand_as(current)
            idx = (sel.positions + ctx.offset).to(v.device)
            return v[idx]
        raise ShapeError(
            f"Mean value of shape {tuple(v.shape)} does not fit {tuple(current.shape)}"
        )

    def validate(self, shape: tuple[int, ...], full_shape: tuple[int, ...]) -> None:
        w = shape[-1]
        if self.value.shape[-1] not in (w, full_shape[-1]):
            raise ShapeError(
                f"{self.site_spec}: mean has width {self.value.shape[-1]}, the site has {w}"
            )
        check_finite(self.value, self.site_spec, "mean")


@dataclass(frozen=True, eq=False)
class Resample(Intervention):
    """Resampling ablation: each row receives the activation of an example drawn uniformly
    (with replacement, seeded) from ``pool`` (``[m, positions, width]`` or ``[m, width]``, or a
    run's cache). ``index`` fixes the draw instead (``[rows]`` indices into the pool)."""

    site: SiteLike
    pool: Any
    seed: int = 0
    index: Tensor | None = None
    rows: Rows = None

    @classmethod
    def fit(
        cls, model: Model, site: SiteLike, data: Any, *, seed: int = 0, rows: Rows = None
    ) -> Resample:
        """A pool of activations of ``site`` on a reference dataset."""
        s = as_site(site)
        out = model.run(data, cache=[Site(s.name)])
        return cls(site=site, pool=out.cache[s.name], seed=seed, rows=rows)

    def __post_init__(self) -> None:
        validate.nonnegative_int("seed", self.seed)

    def validate(self, shape: tuple[int, ...], full_shape: tuple[int, ...]) -> None:
        pool = source_tensor(self.pool, self.site_spec)
        if pool.dim() == 0 or pool.shape[0] == 0:
            raise InputError(
                f"{self.site_spec}: the resample pool is empty (shape {tuple(pool.shape)}); "
                "Resample needs at least one reference activation to draw from"
            )
        if pool.shape[-1] not in (shape[-1], full_shape[-1]):
            raise ShapeError(
                f"{self.site_spec}: pool rows have width {pool.shape[-1]}, the site has "
                f"{full_shape[-1]}"
            )
        check_finite(pool, self.site_spec, "resample pool")
        if self.index is not None:
            idx = self.index.long().flatten()
            if idx.numel() != shape[0]:
                raise ShapeError(
                    f"{self.site_spec}: resample index has {idx.numel()} rows, the selection "
                    f"{shape[0]}"
                )
            if bool(((idx < 0) | (idx >= pool.shape[0])).any()):
                raise ShapeError(
                    f"{self.site_spec}: resample index {idx.tolist()[:8]} is out of range for "
                    f"a pool of {pool.shape[0]} activations"
                )

    def draw(self, n: int) -> Tensor:
        pool = source_tensor(self.pool, self.site_spec)
        if pool.shape[0] == 0:
            raise InputError(f"{self.site_spec}: the resample pool is empty")
        if self.index is not None:
            if self.index.numel() != n:
                raise ShapeError(
                    f"{self.site_spec}: resample index has {self.index.numel()} rows, the selection {n}"
                )
            return self.index.long()
        g = torch.Generator().manual_seed(self.seed)
        return torch.randint(0, pool.shape[0], (n,), generator=g)

    def compute(self, current: Tensor, ctx: HookContext) -> Tensor:
        pool = source_tensor(self.pool, self.site_spec)
        idx = self.draw(current.shape[0]).to(pool.device)
        drawn = pool[idx]
        sel = ctx.selection
        # The drawn rows are whole-site activations: select positions and units like the site.
        local = Selection(sel.info, None, sel.positions, _local_dims(sel), None)
        if drawn.dim() == 3 and sel.positions is None and drawn.shape[1] != current.shape[1]:
            start = ctx.offset
            drawn = drawn[:, start : start + current.shape[1]]
        if tuple(drawn.shape) != tuple(current.shape):
            drawn = local.get(drawn)
        if tuple(drawn.shape) != tuple(current.shape):
            raise ShapeError(
                f"{self.site_spec}: pool rows of shape {tuple(pool.shape[1:])} do not fit {tuple(current.shape[1:])}"
            )
        return drawn.to(current)


def _local_dims(sel: Selection) -> slice | Tensor:
    info = sel.info
    if isinstance(sel.dims, slice):
        if sel.dims == slice(None):
            return sel.dims
        return slice((sel.dims.start or 0) - info.start, (sel.dims.stop or 0) - info.start)
    return sel.dims - info.start


__all__ = ["Mean", "Resample", "Zero"]
