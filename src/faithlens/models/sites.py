"""Sites: the places where a run can read or write activations.

A *site* has a canonical name that is the same on every architecture (``resid_pre.3``,
``head.5.1``, ``mlp_post.2``, ...) or is a raw module path (``module:transformer.h.3.mlp``, its
output; ``module:transformer.h.3.mlp:in``, its first input). Each canonical name resolves, through
the model's adapter, to a :class:`SiteInfo`: a hook point on a real module (its input or output)
plus a contiguous slice of the last dimension (a head is a slice of the concatenated heads).

Position and unit selection belong to the site (:class:`Site`), not to the intervention:
``Site("resid_pre.3", positions=-1)``, ``Site("mlp_post.2", units=[5, 17])``, or in a string
``"resid_pre.3[:, -1]"`` / ``"mlp_post.2[:, :, 5:9]"``. Positions may be one index for every
example, a list, ``"last"`` (each example's last real token), or a tensor of per-example indices
(``[batch]`` or ``[batch, k]``).

Every activation a site exposes has the layout ``[batch, position, width]`` (``[batch, width]``
for modules without a sequence axis); a convolutional site (``HookPoint.spatial``) presents its
``[batch, channels, h, w]`` tensor as ``[batch, h * w, channels]``: channels are units, spatial
positions (row-major) are positions.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

import torch
from torch import Tensor, nn

from ..errors import InputError, ShapeError, SiteError

IO = Literal["in", "out"]

#: Order of canonical site kinds inside one layer (used to decide what a run reaches).
KIND_ORDER: dict[str, int] = {
    "resid_pre": 0,
    "attn_in": 1,
    "q": 2,
    "k": 2,
    "v": 2,
    "head": 3,
    "attn_out": 4,
    "resid_mid": 5,
    "mlp_in": 6,
    "mlp_post": 7,
    "mlp_out": 8,
    "resid_post": 9,
}
#: Kinds inside a mixture-of-experts MLP block (offered by :mod:`faithlens.models.moe` only): the
#: router's weights are read after the MLP's input, each expert's output before the block's.
MOE_KIND_ORDER: dict[str, int] = {"router": 6, "expert_out": 7}
#: Attention patterns (offered by :func:`faithlens.models.patterns.expose_patterns` only):
#: ``pattern.L.H`` one head's ``[batch, query, key]``, ``pattern.L`` every head's; read after
#: the queries and keys, before the heads' outputs.
PATTERN_KIND_ORDER: dict[str, int] = {"pattern": 2, "pattern_layer": 2}
#: An encoder-decoder's cross-attention (:mod:`faithlens.models.encdec`; its sites are not ordered).
CROSS_KINDS = ("cross_attn_in", "cross_q", "cross_k", "cross_v", "cross_head", "cross_attn_out")
KINDS = (
    "embed",
    *KIND_ORDER,
    *MOE_KIND_ORDER,
    *PATTERN_KIND_ORDER,
    *CROSS_KINDS,
    "ln_final",
    "logits",
)

#: Site groups accepted by sweeps (``fl.patch(sites="head")``).
SITE_GROUPS: dict[str, str] = {
    "head": "head",
    "heads": "head",
    "mlp": "mlp_out",
    "mlps": "mlp_out",
    "attn": "attn_out",
    "resid": "resid_pre",
    "resid_pre": "resid_pre",
    "resid_post": "resid_post",
    "mlp_post": "mlp_post",
    "q": "q",
    "k": "k",
    "v": "v",
    "experts": "expert_out",
    "expert_out": "expert_out",
    "router": "router",
    "cross_head": "cross_head",
    "cross_heads": "cross_head",
    "pattern": "pattern",
    "patterns": "pattern",
}


@dataclass(frozen=True)
class Call:
    """One call of a hooked module, as a :class:`View` sees it: the module, its positional
    arguments, its output (None before the call) and the run's batch size."""

    module: nn.Module
    args: tuple[Any, ...]
    output: Any
    batch: int


class View:
    """A tensor of ``[batch, pos, width]`` that a module call holds in another form (flattened
    positions, routed experts), and how a changed value is written back into the call.

    A hook point with a view exposes ``expose(call)`` to caches and interventions; when they
    change it, ``absorb(call, old, new)`` gives the call's new positional arguments (a hook on
    the module's input) or its new output (on its output). Views are immutable and compare by
    value, so that the sites sharing one hooked tensor share one hook.
    """

    def expose(self, call: Call) -> Tensor:
        raise NotImplementedError

    def absorb(self, call: Call, old: Tensor, new: Tensor) -> Any:
        raise NotImplementedError


@dataclass(frozen=True)
class Flat(View):
    """A tensor the module sees with batch and positions flattened into one axis, ``[batch *
    pos, width]`` (OPT's MLP), as ``[batch, pos, width]``: positional input ``index`` of the
    call (``io="in"``) or element ``index`` of its output (a tensor, or a tuple)."""

    io: IO
    index: int = 0

    def _get(self, call: Call) -> Tensor:
        if self.io == "in":
            if len(call.args) <= self.index:
                raise SiteError(
                    f"{type(call.module).__name__} was called without positional input "
                    f"#{self.index}, which this site views"
                )
            return call.args[self.index]
        out = call.output
        return out if isinstance(out, Tensor) else out[self.index]

    def expose(self, call: Call) -> Tensor:
        t = self._get(call)
        return t.reshape(call.batch, -1, *t.shape[1:])

    def absorb(self, call: Call, old: Tensor, new: Tensor) -> Any:
        flat = new.reshape(self._get(call).shape)
        if self.io == "in":
            return (*call.args[: self.index], flat, *call.args[self.index + 1 :])
        out = call.output
        if isinstance(out, Tensor):
            return flat
        return (*out[: self.index], flat, *out[self.index + 1 :])


@dataclass(frozen=True)
class HookPoint:
    """A tensor flowing into (``io="in"``) or out of (``io="out"``) a module.

    ``index`` picks the positional argument (inputs) or tuple element (outputs); ``kwarg`` names
    the keyword under which the input may be passed instead. ``spatial``: the tensor is a
    convolutional activation ``[batch, channels, *spatial]`` (``[batch, channels, h, w]``), which
    the site presents as ``[batch, positions, channels]``: the channels are the units and the
    spatial positions, flattened row-major (position ``i * w + j`` is row ``i``, column ``j``),
    are the positions (:mod:`faithlens.models.vision`). ``view`` (rarely set): the site's
    tensor is not that argument or output as it is but a :class:`View` of the call.
    """

    module: str
    io: IO = "out"
    index: int = 0
    kwarg: str | None = None
    spatial: bool = False
    view: View | None = None

    def __post_init__(self) -> None:
        if self.spatial and self.view is not None:
            raise ValueError("a HookPoint is either spatial or a view, not both")


@dataclass(frozen=True)
class SiteInfo:
    """What a canonical site is on a given model."""

    name: str
    kind: str
    hook: HookPoint
    width: int | None  # None: the whole last dimension (raw module sites)
    start: int = 0  # the site's slice of the hooked tensor's last dimension
    layer: int | None = None
    head: int | None = None
    full: int | None = None  # width of the whole hooked tensor, where sites are slices of it
    # the Inputs keyword whose tensor gives the position axis (an encoder-decoder's decoder
    # sites: "decoder_input_ids"); None: the input ids
    seq_key: str | None = None

    @property
    def stop(self) -> int | None:
        return None if self.width is None else self.start + self.width

    @property
    def is_raw(self) -> bool:
        return self.kind == "module"

    def order(self, n_layers: int) -> tuple[int, int] | None:
        """Position of the site in the forward pass, or None when unknown (raw sites)."""
        if self.kind == "embed":
            return (-1, 0)
        if self.kind in ("ln_final", "logits"):
            return (n_layers, 0 if self.kind == "ln_final" else 1)
        if self.kind in KIND_ORDER and self.layer is not None:
            return (self.layer, KIND_ORDER[self.kind])
        if self.kind in MOE_KIND_ORDER and self.layer is not None:
            return (self.layer, MOE_KIND_ORDER[self.kind])
        if self.kind in PATTERN_KIND_ORDER and self.layer is not None:
            return (self.layer, PATTERN_KIND_ORDER[self.kind])
        return None

    def first_layer(self, n_layers: int) -> int:
        """The first layer a run must recompute for a change at this site to take effect."""
        if self.kind == "embed":
            return 0
        if self.kind == "resid_post" and self.layer is not None:
            return self.layer + 1
        if self.kind in ("ln_final", "logits"):
            return n_layers
        if self.layer is None:
            return 0
        return self.layer


Positions: TypeAlias = int | Sequence[int] | Tensor | Literal["last"] | None
Units: TypeAlias = Sequence[int] | Tensor | slice | None


@dataclass(frozen=True, eq=False)
class Site:
    """A site name plus a selection of positions and units.

    ``positions``: None (all), an int (negative counts from the end of the tensor), a list of
    ints, ``"last"`` (each example's last non-padding token), or a tensor of per-example indices
    of shape ``[batch]`` or ``[batch, k]``. ``units``: None (all), a list / tensor of indices into
    the site's width, or a slice.
    """

    name: str
    positions: Positions = None
    units: Units = None

    def __str__(self) -> str:
        extra = []
        if self.positions is not None:
            p = self.positions
            extra.append(f"positions={p if not isinstance(p, Tensor) else tuple(p.shape)}")
        if self.units is not None:
            u = self.units
            extra.append(f"units={u if not isinstance(u, Tensor) else tuple(u.shape)}")
        return self.name + (f"({', '.join(extra)})" if extra else "")


SiteLike: TypeAlias = str | Site

_SEL = re.compile(r"^(?P<name>[^\[\]]+?)\s*\[(?P<sel>.*)\]\s*$")


def _parse_part(part: str) -> int | slice:
    part = part.strip()
    if ":" not in part:
        try:
            return int(part)
        except ValueError as e:
            raise InputError(
                f"cannot read {part!r} in a site selection; use ints or a:b slices"
            ) from e
    bits = [b.strip() for b in part.split(":")]
    if len(bits) > 3:
        raise InputError(f"bad slice {part!r} in a site selection")
    vals = [int(b) if b else None for b in bits]
    return slice(*vals)


def as_site(site: SiteLike) -> Site:
    """Turn a string such as ``"resid_pre.3[:, -1]"`` into a :class:`Site`."""
    if isinstance(site, Site):
        return site
    if not isinstance(site, str):
        raise InputError(f"a site is a name or a faithlens.Site, not {type(site).__name__}")
    m = _SEL.match(site)
    if not m:
        return Site(site.strip())
    name, sel = m.group("name").strip(), m.group("sel")
    parts = [_parse_part(p) for p in sel.split(",")]
    if not parts or parts[0] != slice(None):
        raise InputError(
            f"site selection {site!r} must start with ':' (all examples); select examples with "
            "an intervention's rows= instead"
        )
    positions: Positions = None
    units: Units = None
    if len(parts) >= 2:
        p = parts[1]
        if isinstance(p, int):
            positions = p
        elif p != slice(None):
            if p.step not in (None, 1) or p.start is None or p.stop is None:
                raise InputError(f"position slice in {site!r} needs explicit start and stop")
            positions = list(range(p.start, p.stop))
    if len(parts) >= 3:
        u = parts[2]
        units = [u] if isinstance(u, int) else (None if u == slice(None) else u)
    if len(parts) > 3:
        raise InputError(f"site selection {site!r} has more than [batch, position, unit] parts")
    return Site(name, positions, units)


@dataclass(frozen=True, eq=False)
class Selection:
    """A resolved site selection on a concrete run: which rows, positions and last-dim indices.

    ``rows``: None (all) or a 1-D LongTensor; ``positions``: None (all) or a LongTensor
    ``[r, k]``; ``dims``: a slice (contiguous) or a 1-D LongTensor of absolute indices.
    """

    info: SiteInfo
    rows: Tensor | None
    positions: Tensor | None
    dims: slice | Tensor
    row_slice: slice | None = None  # the rows as a contiguous slice, when they are one
    site: Site = field(default_factory=lambda: Site(""))

    def view_shape(self, batch: int, seq: int | None, full_width: int) -> tuple[int, ...]:
        r = batch if self.rows is None else int(self.rows.numel())
        if isinstance(self.dims, slice):
            u = len(range(*self.dims.indices(full_width)))
        else:
            u = int(self.dims.numel())
        if seq is None:
            return (r, u)
        k = seq if self.positions is None else int(self.positions.shape[1])
        return (r, k, u)

    # -- tensor access -------------------------------------------------------------------------
    def _index(self, t: Tensor) -> tuple[Tensor, ...]:
        b = t.shape[0]
        dev = t.device
        rows = torch.arange(b, device=dev) if self.rows is None else self.rows.to(dev)
        if isinstance(self.dims, slice):
            dims = torch.arange(t.shape[-1], device=dev)[self.dims]
        else:
            dims = self.dims.to(dev)
        if t.dim() == 2:
            return (rows[:, None], dims[None, :])
        pos = (
            torch.arange(t.shape[1], device=dev)[None, :]
            if self.positions is None
            else self.positions.to(dev)
        )
        return (rows[:, None, None], pos[:, :, None], dims[None, None, :])

    def _basic(self, t: Tensor) -> tuple[slice, ...] | None:
        """Basic (view) indexing when the selection is a box; None when it is not."""
        if self.positions is not None or not isinstance(self.dims, slice):
            return None
        rows = slice(None) if self.rows is None else self.row_slice
        if rows is None:
            return None
        if t.dim() == 2:
            return (rows, self.dims)
        if t.dim() == 3:
            return (rows, slice(None), self.dims)
        return None

    def get(self, t: Tensor) -> Tensor:
        self._check_dims(t)
        if t.dim() not in (2, 3):
            return t if self.rows is None else t[self.rows.to(t.device)]
        basic = self._basic(t)
        if basic is not None:
            return t[basic]
        return t[self._index(t)]

    def set(self, t: Tensor, value: Tensor) -> Tensor:
        """Write ``value`` into the selection of ``t`` (in place on ``t``; returns ``t``)."""
        if t.dim() not in (2, 3):
            if self.rows is None:
                return t.copy_(value)  # in place, as below: callers keep using ``t``
            t[self.rows.to(t.device)] = value
            return t
        basic = self._basic(t)
        if basic is not None:
            t[basic] = value
            return t
        return t.index_put_(self._index(t), value)

    def _check_dims(self, t: Tensor) -> None:
        if t.dim() not in (2, 3) and (self.positions is not None or not _is_full(self.dims)):
            raise ShapeError(
                f"site {self.info.name}: position/unit selection needs a [batch, pos, width] or "
                f"[batch, width] activation, but this one has shape {tuple(t.shape)}; for a "
                "convolutional [batch, channels, h, w] activation, name its module in "
                "fl.wrap(module, sites={name: path}, example=inputs[:1]) (a ConvAdapter, whose "
                "sites present it as [batch, h * w, channels])"
            )


def _is_full(dims: slice | Tensor) -> bool:
    return isinstance(dims, slice) and dims == slice(None)


def resolve_positions(
    positions: Positions,
    *,
    batch: int,
    rows: Tensor | None,
    seq: int,
    last: Tensor | None,
    offset: int,
    site: str,
) -> Tensor | None:
    """Per-row position indices ``[r, k]`` relative to the run's first position, or None (all).

    ``seq`` is the length of the tensor the run sees; ``offset`` is the absolute position of its
    first element (non-zero when a run resumes from cached keys and values); ``last`` holds the
    absolute index of each example's last real token.
    """
    if positions is None:
        return None
    r = batch if rows is None else int(rows.numel())
    full = offset + seq
    if isinstance(positions, str):
        if positions != "last":
            raise InputError(f"site {site}: positions must be an int, a list, a tensor or 'last'")
        if last is None:
            raise InputError(f"site {site}: positions='last' needs an attention mask")
        p = last if rows is None else last[rows.to(last.device)]
        p = p.reshape(-1, 1)
    elif isinstance(positions, int):
        p = torch.full((r, 1), positions, dtype=torch.long)
    elif isinstance(positions, Tensor):
        p = positions.long()
        if p.dim() == 0:
            p = p.reshape(1, 1).expand(r, 1)
        elif p.dim() == 1:
            p = p[:, None]
        if p.shape[0] not in (r, batch):
            raise ShapeError(
                f"site {site}: per-example positions have {p.shape[0]} rows but the run has "
                f"{batch} examples ({r} selected); pass one position per example"
            )
        if p.shape[0] != r and rows is not None:
            p = p[rows.to(p.device)]
    else:
        idx = [int(i) for i in positions]
        if not idx:
            raise InputError(f"site {site}: an empty list of positions selects nothing")
        p = torch.tensor(idx, dtype=torch.long)[None, :].expand(r, len(idx))
    p = torch.where(p < 0, p + full, p)
    if bool(((p < 0) | (p >= full)).any()):
        raise SiteError(
            f"site {site}: a position is out of range for a sequence of length {full} "
            f"(got {sorted(set(p.flatten().tolist()))[:8]})"
        )
    rel = p - offset
    if bool((rel < 0).any()):
        raise SiteError(
            f"site {site}: position {int(p.min())} lies before the first recomputed position "
            f"{offset}; this run resumes from cached keys and values there and never reaches it"
        )
    return rel.contiguous()


def resolve_units(units: Units, info: SiteInfo, full_width: int | None) -> slice | Tensor:
    """Absolute last-dim indices of a site's units (a slice when contiguous)."""
    start = info.start
    stop = info.stop if info.stop is not None else full_width
    if units is None:
        if info.width is None:
            return slice(None)
        return slice(start, stop)
    width = info.width if info.width is not None else full_width
    if isinstance(units, slice):
        if width is None:
            raise InputError(f"site {info.name}: unit slices need a known width")
        _check_unit_slice(units, info.name, width)
        rng = range(*units.indices(width))
        if len(rng) == 0:
            raise InputError(
                f"site {info.name}: the unit slice {_slice_text(units)} selects no unit of "
                f"{width}; give start < stop"
            )
        if rng.step == 1:
            return slice(start + rng.start, start + rng.stop)
        idx = torch.tensor(list(rng), dtype=torch.long)
    elif isinstance(units, Tensor):
        idx = units.long().flatten()
    else:
        idx = torch.tensor([int(u) for u in units], dtype=torch.long)
    if idx.numel() == 0:
        raise InputError(f"site {info.name}: an empty unit selection selects nothing")
    if width is not None and bool(((idx < 0) | (idx >= width)).any()):
        raise SiteError(
            f"site {info.name} has {width} units; unit indices {idx[(idx < 0) | (idx >= width)].tolist()[:8]} are out of range"
        )
    return idx + start


def _slice_text(s: slice) -> str:
    text = f"{'' if s.start is None else s.start}:{'' if s.stop is None else s.stop}"
    return text + (f":{s.step}" if s.step is not None else "")


def _check_unit_slice(units: slice, site: str, width: int) -> None:
    """A unit slice must lie within the site's width: ``50:99`` on a 64-wide site is an error,
    not silently the units ``50:64``."""
    for end in ("start", "stop"):
        v = getattr(units, end)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int):
            raise InputError(f"site {site}: unit slice bounds must be ints, not {v!r}")
        if not -width <= v <= width:
            raise SiteError(
                f"site {site} has {width} units (0..{width - 1}); the unit slice "
                f"{_slice_text(units)} reaches {v}, out of range. Use units within 0:{width}"
            )
    if units.step is not None and (not isinstance(units.step, int) or units.step < 1):
        raise InputError(f"site {site}: unit slice step must be a positive int, not {units.step!r}")


def as_rows(
    rows: slice | Sequence[int] | Tensor | None, batch: int
) -> tuple[Tensor | None, slice | None]:
    """Normalise an intervention's ``rows`` to (index tensor or None, contiguous slice or None)."""
    if rows is None:
        return None, None
    if isinstance(rows, slice):
        rng = range(*rows.indices(batch))
        if len(rng) == 0:
            raise InputError(f"rows={rows} selects no example of a batch of {batch}")
        idx = torch.arange(rng.start, rng.stop, rng.step)
        return idx, (slice(rng.start, rng.stop) if rng.step == 1 else None)
    idx = (
        rows.long().flatten()
        if isinstance(rows, Tensor)
        else torch.tensor(list(rows), dtype=torch.long)
    )
    if idx.numel() == 0:
        raise InputError("rows selects no example")
    if bool(((idx < 0) | (idx >= batch)).any()):
        raise ShapeError(
            f"rows {idx.tolist()[:8]}... are out of range for a batch of {batch} examples"
        )
    contiguous = None
    if idx.numel() > 0 and bool((idx[1:] - idx[:-1] == 1).all()):
        contiguous = slice(int(idx[0]), int(idx[-1]) + 1)
    return idx, contiguous
