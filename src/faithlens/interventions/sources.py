"""Sources: the activations that patch-like interventions write, and how they are fitted.

A source is a tensor shaped like the selection, or like the whole site (then the same rows,
positions and units are taken from it), or a run's cache (a ``RunOutput`` or a mapping from site
name to tensor). :class:`~faithlens.interventions.patch.Patch`,
:class:`~faithlens.interventions.subspace.Project` (with ``source=``),
:class:`~faithlens.interventions.interchange.Interchange` and
:class:`~faithlens.interventions.ablation.Resample` (its pool) share these functions:

- :func:`source_tensor`: the tensor of a source at a site (from a cache if need be);
- :func:`check_source`: before the run, a source's shape against the selection or the site;
- :func:`fit_source`: during the run, a source brought to the selection's shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from ..errors import InputError, ShapeError
from ..models.sites import Selection, Site
from .base import HookContext, check_finite


def source_tensor(source: Any, site: Site) -> Tensor:
    """The tensor a source holds for ``site``: the source itself, or its cache's entry."""
    if isinstance(source, Tensor):
        return source
    cache = getattr(source, "cache", source)
    if isinstance(cache, Mapping):
        key = site.name
        if key not in cache:
            raise InputError(
                f"the source run did not cache {key!r}; run it with cache=[{key!r}] "
                f"(it cached {sorted(cache)[:6]})"
            )
        return cache[key]
    raise InputError(f"a source must be a tensor or a run's cache, not {type(source).__name__}")


def check_source(
    source: Any, site: Site, shape: tuple[int, ...], site_shape: tuple[int, ...]
) -> None:
    """A source must match the selection, or the whole site (rows: the batch or the selection)."""
    src = source_tensor(source, site)
    check_finite(src, site, "source")
    got = tuple(src.shape)
    if got == shape:
        return
    if len(got) == len(site_shape) and got[0] in (site_shape[0], shape[0]):
        # whole-site sources: every position (absolute), or the positions this run recomputes
        seq_ok = len(got) < 3 or got[1] in (site_shape[1], shape[1])
        if seq_ok and got[-1] == site_shape[-1]:
            return
    raise ShapeError(
        f"{site}: patch source has shape {got}; expected {shape} (the selected rows, positions "
        f"and units) or {(site_shape[0], *site_shape[1:])} (the whole site, to select from)"
    )


def fit_source(src: Tensor, ctx: HookContext, site: str) -> Tensor:
    """Bring a source to the selection's shape (it may be given per selection or per site)."""
    if ctx.full.dim() not in (2, 3):
        # A raw site of another rank (an attention pattern [batch, head, query, key]): its
        # selection is whole rows, so the source is those rows or the whole batch.
        rows = ctx.selection.rows
        n = ctx.full.shape[0] if rows is None else int(rows.numel())
        if tuple(src.shape) == (n, *ctx.full.shape[1:]):
            return src
        if rows is not None and tuple(src.shape) == tuple(ctx.full.shape):
            return src[rows.to(src.device)]
        raise ShapeError(
            f"{site}: source has shape {tuple(src.shape)}; expected {(n, *ctx.full.shape[1:])}"
        )
    want = tuple(ctx.selection.view_shape(ctx.batch, _seq(ctx.full), ctx.full.shape[-1]))
    if tuple(src.shape) == want:
        return src
    seq = _seq(ctx.full)
    if ctx.offset and src.dim() == 3 and seq is not None and src.shape[1] == ctx.offset + seq:
        # A whole-sequence source in a run that resumes at position `offset`.
        src = src[:, ctx.offset :]
        if tuple(src.shape) == want:
            return src
    sel = ctx.selection
    # Per-site source: the same rows/positions/units are taken from it.
    if src.dim() == ctx.full.dim() and src.shape[0] in (ctx.batch, want[0]):
        # Site-shaped (its width is the site's width, not the hooked tensor's).
        info = sel.info
        if isinstance(sel.dims, slice):
            start = sel.dims.start or 0
            stop = sel.dims.stop if sel.dims.stop is not None else ctx.full.shape[-1]
            local: slice | Tensor = slice(start - info.start, stop - info.start)
        else:
            local = sel.dims - info.start
        rows = sel.rows if src.shape[0] == ctx.batch else None
        sub = Selection(
            info, rows, sel.positions, local, sel.row_slice if rows is not None else None
        )
        if src.dim() == 3 and sel.positions is None and src.shape[1] != want[1]:
            raise ShapeError(
                f"{site}: the source has {src.shape[1]} positions but the run has {want[1]}"
            )
        out = sub.get(src)
        if tuple(out.shape) == want:
            return out
    raise ShapeError(
        f"{site}: source has shape {tuple(src.shape)}; expected {want} (the selection) or the "
        f"whole site [{ctx.batch}, positions, width] to select from"
    )


def _seq(t: Tensor) -> int | None:
    return int(t.shape[1]) if t.dim() == 3 else None


__all__ = ["check_source", "fit_source", "source_tensor"]
