"""Interventions: what to write at a site.

Each intervention is a small frozen object holding its site (with the position / unit selection)
and the batch ``rows`` it applies to (all rows by default, so several conditions can share one
batch). Its ``compute(current, ctx)`` is a pure function of tensors: it receives the selected
activation ``[rows, positions, units]`` and returns the replacement, same shape.

- :class:`Zero`: zero ablation.
- :class:`Mean`: mean ablation, with the mean over a reference dataset (:meth:`Mean.fit`).
- :class:`Resample`: resampling ablation: each example gets the activation of a random example
  of a reference pool (seeded).
- :class:`Patch`: the activation of a source run, per example.
- :class:`Add`: add ``coef * vector`` (steering).
- :class:`Project`: keep only the component in a subspace (``mode="onto"``), remove it
  (``mode="out"``), or replace it with a source's component (``source=...``).
- :class:`Interchange`: in a given basis (rotation / any invertible map), swap chosen dimensions
  with a source's (distributed interchange intervention, DAS).

Sources are tensors shaped like the selection, or like the whole site (then the same selection
is taken from them), or a cache (``RunOutput`` / mapping from site name to tensor).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from .. import validate
from ..errors import InputError, ShapeError
from ..models.sites import Selection, Site, SiteLike, as_site

if TYPE_CHECKING:
    from ..models.model import Model

Rows = slice | Sequence[int] | Tensor | None


@dataclass(frozen=True, eq=False)
class HookContext:
    """What an intervention may know about the run it acts in."""

    selection: Selection
    full: Tensor  # the whole hooked tensor (before this intervention), [batch, pos, width]
    batch: int
    offset: int  # absolute position of the run's first position


@runtime_checkable
class Invertible(Protocol):
    """A change of basis for :class:`Interchange`: ``forward`` maps into the basis."""

    def forward(self, x: Tensor) -> Tensor: ...

    def inverse(self, y: Tensor) -> Tensor: ...


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


def _source_tensor(source: Any, site: Site) -> Tensor:
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


def _check_finite(t: Tensor, site: Site, what: str) -> None:
    if t.is_floating_point() and not bool(torch.isfinite(t).all()):
        raise InputError(f"{site}: the {what} contains NaN or inf values; fix it before patching")


def _check_source(
    source: Any, site: Site, shape: tuple[int, ...], site_shape: tuple[int, ...]
) -> None:
    """A source must match the selection, or the whole site (rows: the batch or the selection)."""
    src = _source_tensor(source, site)
    _check_finite(src, site, "source")
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


def _fit_source(src: Tensor, ctx: HookContext, site: str) -> Tensor:
    """Bring a source to the selection's shape (it may be given per selection or per site)."""
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
        _check_finite(self.value, self.site_spec, "mean")


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
        pool = _source_tensor(self.pool, self.site_spec)
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
        _check_finite(pool, self.site_spec, "resample pool")
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
        pool = _source_tensor(self.pool, self.site_spec)
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
        pool = _source_tensor(self.pool, self.site_spec)
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


@dataclass(frozen=True, eq=False)
class Patch(Intervention):
    """Activation patching: write the source run's activation, example by example."""

    site: SiteLike
    source: Any
    rows: Rows = None

    def compute(self, current: Tensor, ctx: HookContext) -> Tensor:
        src = _source_tensor(self.source, self.site_spec)
        return _fit_source(src.to(current.device), ctx, str(self.site_spec)).to(current.dtype)

    def validate(self, shape: tuple[int, ...], full_shape: tuple[int, ...]) -> None:
        _check_source(self.source, self.site_spec, shape, full_shape)


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
        _check_finite(self.vector, self.site_spec, "steering vector")
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
            src = _fit_source(
                _source_tensor(self.source, self.site_spec).to(current.device),
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
            _check_source(self.source, self.site_spec, shape, full_shape)


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
        src = _fit_source(
            _source_tensor(self.source, self.site_spec).to(current.device), ctx, str(self.site_spec)
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
        _check_source(self.source, self.site_spec, shape, full_shape)
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
    "Zero",
    "orthonormal",
]
