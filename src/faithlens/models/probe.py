"""How many positions a site has on inputs without token ids (pixels, embeddings).

A language model's sites have as many positions as its inputs have tokens. A model that takes
other tensors (an image classifier's pixels) has as many as its own modules make: a ViT's patches
plus its CLS token, a CNN block's ``h * w`` spatial positions. :func:`site_positions` finds them
once per module, hook point and input shape, with one forward pass on one example, and keeps
them (the shapes depend on the architecture and the input shape, never on the weights).
"""

from __future__ import annotations

import math
import weakref
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InputError
from .sites import HookPoint

_SHAPES: weakref.WeakKeyDictionary[nn.Module, dict[tuple[Any, ...], tuple[int, ...] | None]] = (
    weakref.WeakKeyDictionary()
)


class _Seen(Exception):
    """Ends a probing forward pass once the hooked tensor has been seen."""


def _signature(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    def one(x: Any) -> Any:
        return ("t", tuple(x.shape[1:]), str(x.dtype)) if isinstance(x, Tensor) else type(x)

    return (tuple(one(a) for a in args), tuple(sorted((k, one(v)) for k, v in kwargs.items())))


def _tensor_at(hp: HookPoint, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Any:
    if hp.io == "in":
        if len(args) > hp.index:
            return args[hp.index]
        return kwargs.get(hp.kwarg) if hp.kwarg is not None else None
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)) and len(out) > hp.index:
        return out[hp.index]
    return None


def hooked_shape(
    module: nn.Module, hp: HookPoint, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[int, ...] | None:
    """The shape (without the batch axis) of the tensor at ``hp`` when ``module`` runs on
    ``args`` / ``kwargs`` (a batch; only its first example runs), or None when the forward pass
    never reaches it or it is not a tensor."""
    key = (hp, _signature(args, kwargs))
    table = _SHAPES.setdefault(module, {})
    if key in table:
        return table[key]
    one_args = tuple(a[:1] if isinstance(a, Tensor) and a.dim() > 0 else a for a in args)
    one_kwargs = {
        k: (v[:1] if isinstance(v, Tensor) and v.dim() > 0 else v) for k, v in kwargs.items()
    }
    target = module.get_submodule(hp.module) if hp.module else module
    seen: list[tuple[int, ...] | None] = []

    def record(t: Any) -> None:
        seen.append(tuple(t.shape[1:]) if isinstance(t, Tensor) else None)
        raise _Seen()

    if hp.io == "in":
        handle = target.register_forward_pre_hook(
            lambda _m, a, k: record(_tensor_at(hp, a, k, None)), with_kwargs=True
        )
    else:
        handle = target.register_forward_hook(
            lambda _m, a, k, o: record(_tensor_at(hp, a, k, o)), with_kwargs=True
        )
    try:
        with torch.no_grad():
            module(*one_args, **one_kwargs)
    except _Seen:
        pass
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        shapes = [tuple(a.shape[1:]) for a in args if isinstance(a, Tensor)]
        raise InputError(
            f"{type(module).__name__} cannot run on inputs of per-example shape {shapes}: {e} "
            "Give "
            "inputs of the shape the model takes (for an image model: [n, channels, h, w] "
            "with its number of channels and image size)"
        ) from e
    finally:
        handle.remove()
    shape = seen[0] if seen else None
    table[key] = shape
    return shape


def site_positions(
    module: nn.Module, hp: HookPoint, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> int | None:
    """The number of positions the site at ``hp`` has on these inputs: ``h * w`` for a spatial
    hook point (``[batch, channels, h, w]``), the second axis of a ``[batch, pos, width]``
    tensor, None for a tensor without a position axis (``[batch, width]``) or one never
    reached."""
    if not args:
        raise InputError(
            "these inputs hold neither token ids nor the module's input tensors; pass the "
            "tensors the model takes (Inputs(args=(pixels,)))"
        )
    shape = hooked_shape(module, hp, args, kwargs)
    if shape is None:
        return None
    if hp.spatial:
        return math.prod(shape[1:]) if len(shape) >= 2 else None
    return int(shape[0]) if len(shape) == 2 else None


def spatial_maps(
    module: nn.Module, hp: HookPoint, act: Tensor, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Tensor:
    """A spatial site's cached ``[batch, h * w, channels]`` activation back in its module's own
    layout ``[batch, channels, h, w]`` (a map per channel, as Network Dissection reads them);
    any other activation as it is."""
    if not hp.spatial or act.dim() != 3:
        return act
    shape = hooked_shape(module, hp, args, kwargs)
    if shape is None:
        return act
    return act.transpose(1, 2).reshape(act.shape[0], *shape)


__all__ = ["hooked_shape", "site_positions", "spatial_maps"]
