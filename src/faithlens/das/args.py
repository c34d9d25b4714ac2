"""The arguments of :func:`~faithlens.das.das`: what each may be, checked before any forward
pass (:func:`check_das_args`, :func:`check_inputs`), then against the site's width once the source
activations are known (:func:`resolve_dims`)."""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from .. import validate as V
from ..errors import InputError, ShapeError
from ..models.model import Model
from ..models.sites import Site, SiteLike, as_site
from ..progress import Progress, annotated_done_total
from ..tasks.interchange import InterchangeData
from .alignment import Alignment

LOSSES = ("iia", "cl", "iia+cl")
SELECT = ("auto", "iia", "emd", "last", "settled")
METHODS = ("rotation", "boundless", "linear", "identity", "das")


def check_das_args(
    *,
    dims: Any = 1,
    method: Any = "rotation",
    loss: Any = "iia",
    cl_form: Any = "modified",
    cl_weight: Any = 100.0,
    cl_dims: Any = None,
    epochs: Any = 601,
    lr: Any = 0.01,
    boundary_lr: Any = 0.01,
    batch_size: Any = None,
    select: Any = "auto",
    eval_every: Any = 10,
    emd_dims: Any = None,
    temperature: Any = None,
    width_weight: Any = 1.0,
    checkpoint_every: Any = 100,
    seed: Any = 0,
    cli: bool = False,
) -> None:
    """Refuse every :func:`das` argument that makes no sense, before any forward pass.

    Checks what does not depend on the site (the site's width is checked once it is known).
    ``cli=True`` names the arguments as command-line options (``--batch-size``).
    """

    def nm(name: str) -> str:
        return "--" + name.replace("_", "-") if cli else name

    def index_list(name: str, value: Any, *, allow_empty: bool = False) -> list[int]:
        if isinstance(value, (str, bytes)):
            raise V.fail(nm(name), value, "must be a list of coordinates", "e.g. [0, 1]")
        if not isinstance(value, Sequence):
            try:
                value = list(value)
            except TypeError:
                raise V.fail(nm(name), value, "must be a list of coordinates") from None
        out = [V.nonnegative_int(nm(name), d, fix="coordinates count from 0") for d in value]
        if not out and not allow_empty:
            raise V.fail(nm(name), value, "is empty", "give at least one coordinate")
        if len(set(out)) != len(out):
            raise V.fail(nm(name), value, "repeats a coordinate", "list each coordinate once")
        return out

    V.choice(nm("method"), method, METHODS)
    V.choice(nm("loss"), loss, LOSSES)
    V.choice(nm("cl_form"), cl_form, ("modified", "mas"))
    V.choice(nm("select"), select, SELECT)
    if isinstance(dims, numbers.Integral) and not isinstance(dims, bool):
        V.positive_int(nm("dims"), dims, fix="give how many aligned coordinates carry the variable")
    else:
        index_list("dims", dims)
    uses_cl = loss in ("cl", "iia+cl")
    if uses_cl:
        V.positive_float(nm("cl_weight"), cl_weight, fix="the CL loss needs a weight > 0")
    else:
        V.finite_float(nm("cl_weight"), cl_weight, low=0.0)
    if cl_dims is not None:
        if isinstance(cl_dims, (str, bytes)) or not isinstance(cl_dims, Sequence) or not cl_dims:
            raise V.fail(nm("cl_dims"), cl_dims, "must be a non-empty list of coordinate lists")
        for group in cl_dims:
            index_list("cl_dims", group)
    V.positive_int(nm("epochs"), epochs)
    V.positive_float(nm("lr"), lr, fix="use a small positive learning rate such as 0.01")
    V.positive_float(nm("boundary_lr"), boundary_lr, fix="use e.g. 0.01")
    if batch_size is not None:
        V.positive_int(nm("batch_size"), batch_size, fix="omit it for full-batch training")
    V.positive_int(nm("eval_every"), eval_every, fix="evaluate the EMD every N >= 1 epochs")
    if emd_dims is not None:
        index_list("emd_dims", emd_dims, allow_empty=True)
    if temperature is not None:
        try:
            temps = tuple(temperature)
        except TypeError:
            temps = ()
        if isinstance(temperature, (str, bytes)) or len(temps) != 2:
            raise V.fail(
                nm("temperature"), temperature, "must be a pair (start, end)", "e.g. (2, 0.1)"
            )
        for t in temps:
            V.positive_float(
                nm("temperature"), t, fix="both temperatures must be > 0, e.g. (2, 0.1)"
            )
    V.finite_float(nm("width_weight"), width_weight, low=0.0)
    V.positive_int(nm("checkpoint_every"), checkpoint_every)
    V.nonnegative_int(nm("seed"), seed)


@dataclass(frozen=True)
class DASOptions:
    """The settings of one :func:`~faithlens.das.das` run (as given; :func:`check_inputs` normalises them)."""

    dims: int | Sequence[int]
    method: str
    loss: str
    cl_form: str
    cl_weight: float
    cl_dims: Sequence[Sequence[int]] | None
    epochs: int
    lr: float
    boundary_lr: float
    batch_size: int | None
    select: str
    eval_every: int
    emd_dims: Sequence[int] | None
    temperature: tuple[float, float] | None
    width_weight: float
    checkpoint_every: int
    seed: int


def check_inputs(
    model: Model,
    data: InterchangeData,
    site: SiteLike,
    alignment: Alignment | None,
    progress: Any,
    o: DASOptions,
    on_epoch: Any = None,
) -> tuple[DASOptions, Site]:
    """Refuse bad arguments before any forward pass; the options with integer counts and the
    selection rule resolved, and the site."""
    check_das_args(
        dims=o.dims,
        method=o.method,
        loss=o.loss,
        cl_form=o.cl_form,
        cl_weight=o.cl_weight,
        cl_dims=o.cl_dims,
        epochs=o.epochs,
        lr=o.lr,
        boundary_lr=o.boundary_lr,
        batch_size=o.batch_size,
        select=o.select,
        eval_every=o.eval_every,
        emd_dims=o.emd_dims,
        temperature=o.temperature,
        width_weight=o.width_weight,
        checkpoint_every=o.checkpoint_every,
        seed=o.seed,
    )
    if not isinstance(model, Model):
        raise V.fail(
            "model", type(model).__name__, "must be a faithlens Model", "use fl.load or fl.wrap"
        )
    if not isinstance(data, InterchangeData):
        raise V.fail(
            "data",
            type(data).__name__,
            "must be an InterchangeData",
            "build it with fl.InterchangeData",
        )
    V.min_examples("len(data)", len(data), what="an IIA with a confidence interval")
    if alignment is not None and not isinstance(alignment, Alignment):
        raise V.fail("alignment", type(alignment).__name__, "must be a faithlens Alignment or None")
    if progress is not None and not callable(progress):
        raise V.fail("progress", progress, "must be a callable (epoch, row) or None")
    if on_epoch is not None and not callable(on_epoch):
        raise V.fail("on_epoch", on_epoch, "must be a callable (epoch, history_row) or None")
    epochs, eval_every, checkpoint_every = int(o.epochs), int(o.eval_every), int(o.checkpoint_every)
    s = as_site(site)
    uses_cl = o.loss in ("cl", "iia+cl")
    if uses_cl and data.cl_targets is None:
        raise InputError(
            "das: the CL loss needs natural counterfactual latents: build the data with "
            "cl_targets (e.g. faithlens.tasks.synthetic_das builds mean targets)"
        )
    select = o.select
    if select == "auto":
        select = "emd" if uses_cl and o.emd_dims else "iia"
    if select == "emd" and not o.emd_dims:
        raise InputError("das: select='emd' needs emd_dims (the native feature coordinates)")
    o = replace(
        o,
        epochs=epochs,
        eval_every=eval_every,
        checkpoint_every=checkpoint_every,
        select=select,
    )
    return o, s


def resolve_dims(
    o: DASOptions, data: InterchangeData, s: Site, src: Tensor
) -> tuple[list[int], Sequence[Sequence[int]] | None]:
    """The interchanged coordinates and the CL loss's coordinate groups, checked against the
    site's width (known from the source activations)."""
    dims, cl_dims, emd_dims, cl_form = o.dims, o.cl_dims, o.emd_dims, o.cl_form
    uses_cl = o.loss in ("cl", "iia+cl")
    width = int(src.shape[-1])
    if not bool(torch.isfinite(src).all()):
        raise InputError(f"das: the source activations at {s.name} contain NaN or inf")
    if isinstance(dims, int):
        if not 1 <= dims <= width:
            raise ShapeError(f"das: dims={dims} must be between 1 and the site width {width}")
        dim_list = list(range(dims))
    else:
        dim_list = [int(d) for d in dims]
        if not dim_list or any(not 0 <= d < width for d in dim_list):
            raise ShapeError(f"das: dims {dim_list} out of range for width {width}")
    k = len(dim_list)
    if uses_cl and cl_form == "modified":
        if cl_dims is None:
            cl_dims = [dim_list, list(range(k, 2 * k))] if 2 * k <= width else [dim_list]
        if data.cl_groups is not None and int(data.cl_groups.max()) >= len(cl_dims):
            raise InputError(
                f"das: cl_groups refers to variable {int(data.cl_groups.max())} but cl_dims has "
                f"{len(cl_dims)} groups"
            )
    if data.cl_targets is not None and uses_cl and data.cl_targets.shape[-1] != width:
        raise ShapeError(
            f"das: cl_targets have width {data.cl_targets.shape[-1]}, the site {width}"
        )
    if cl_dims is not None and any(not 0 <= d < width for g in cl_dims for d in g):
        raise ShapeError(
            f"das: cl_dims {[list(g) for g in cl_dims]} out of range for width {width}"
        )
    if emd_dims is not None and any(not 0 <= d < width for d in emd_dims):
        raise ShapeError(f"das: emd_dims {list(emd_dims)} out of range for width {width}")
    return dim_list, cl_dims


EpochCallback = Callable[[int, dict[str, float]], None]
"""``on_epoch(epoch, history_row)``: called after each training epoch."""


def split_progress(
    progress: Any, on_epoch: EpochCallback | None
) -> tuple[Progress | None, EpochCallback | None]:
    """The ``(done, total)`` progress callback and the ``(epoch, history_row)`` one.

    ``progress`` follows the one protocol of :mod:`faithlens.progress` when ``on_epoch`` is
    given too, or when its first two parameters are annotated ``int``. Any other ``progress``
    may be an old ``(epoch, history_row)`` callback (both shapes take two positional arguments,
    so an unannotated one cannot be told apart): it is called as before, with a
    DeprecationWarning (for one release).
    """
    if progress is None or on_epoch is not None or annotated_done_total(progress):
        return progress, on_epoch
    warnings.warn(
        "das: progress is called as (epoch, history_row) for one more release; pass "
        "on_epoch=(epoch, history_row) for the epoch rows, and a progress(done: int, total: int) "
        "callback (annotated, or together with on_epoch=) for the one progress protocol",
        DeprecationWarning,
        stacklevel=3,
    )
    return None, progress
