"""The hooks of a run: what runs at each hooked tensor, registered on the model's modules.

:func:`faithlens.runs.run` plans a run (which interventions, caches and gradient sites share
each hooked tensor) and registers these hooks around one forward pass; they apply the
interventions in order, record the caches and gradient leaves, and stop the pass early.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .errors import InputError, ShapeError, SiteError
from .interventions import HookContext, Intervention
from .models.model import Model
from .models.sites import Call, HookPoint, Selection

if TYPE_CHECKING:
    from torch.utils.hooks import RemovableHandle


class Stop(Exception):
    """Raised by the stop hook to end a forward pass early."""


@dataclass(eq=False)
class Op:
    """One thing a hook does to its tensor: intervene on, cache or take the gradient at a
    selection of it."""

    kind: str  # "intervene" | "cache" | "grad"
    selection: Selection
    name: str
    intervention: Intervention | None = None


@dataclass(eq=False)
class HookState:
    """What the hooks of one run share: the batch, the first computed position, whether autograd
    is on, and what they record (caches, gradient leaves, the hook points that fired)."""

    batch: int
    offset: int
    grad: bool
    cache: dict[str, Tensor] = field(default_factory=dict)
    deltas: dict[HookPoint, Tensor] = field(default_factory=dict)
    fired: set[HookPoint] = field(default_factory=set)


def process(t: Tensor, hp: HookPoint, ops: list[Op], state: HookState) -> Tensor:
    """Apply ``ops`` to the hooked tensor ``t``; a spatial hook point's ``[batch, channels,
    *spatial]`` tensor is seen by them as ``[batch, positions, channels]`` and handed back in
    its own layout."""
    if hp.spatial and t.dim() >= 3:
        flat = t.flatten(2).transpose(1, 2)
        out = process_flat(flat, hp, ops, state)
        if out is flat:
            return t
        return out.transpose(1, 2).reshape(t.shape)
    return process_flat(t, hp, ops, state)


def process_flat(t: Tensor, hp: HookPoint, ops: list[Op], state: HookState) -> Tensor:
    state.fired.add(hp)
    ivs = [op for op in ops if op.kind == "intervene"]
    if ivs:
        t = t.clone()
        for op in ivs:
            assert op.intervention is not None
            sel = op.selection
            current = sel.get(t)
            if state.grad:
                # ``current`` may be a view of ``t``, which ``sel.set`` overwrites in place
                # below; autograd needs the value the intervention saw (e.g. a basis change).
                current = current.clone()
            ctx = HookContext(selection=sel, full=t, batch=state.batch, offset=state.offset)
            new = op.intervention.compute(current, ctx)
            if tuple(new.shape) != tuple(current.shape):
                raise ShapeError(
                    f"{op.intervention.describe()} returned shape {tuple(new.shape)} for a "
                    f"selection of shape {tuple(current.shape)}"
                )
            sel.set(t, new.to(t.dtype))
    if any(op.kind == "grad" for op in ops):
        delta = torch.zeros_like(t, requires_grad=True)
        state.deltas[hp] = delta
        t = t + delta
    for op in ops:
        if op.kind == "cache":
            v = op.selection.get(t)
            state.cache[op.name] = v if state.grad else v.detach().clone()
    return t


def register(
    module: nn.Module, hp: HookPoint, ops: list[Op], state: HookState, *, stop: bool
) -> RemovableHandle:
    target = module.get_submodule(hp.module) if hp.module else module
    if hp.view is not None:
        return _register_view(target, hp, ops, state, stop=stop)

    if hp.io == "in":

        def pre(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if stop:
                raise Stop()
            if len(args) > hp.index:
                t = args[hp.index]
                new = process(t, hp, ops, state)
                return (*args[: hp.index], new, *args[hp.index + 1 :]), kwargs
            if hp.kwarg is not None and hp.kwarg in kwargs:
                kwargs = dict(kwargs)
                kwargs[hp.kwarg] = process(kwargs[hp.kwarg], hp, ops, state)
                return args, kwargs
            raise SiteError(f"module {hp.module!r} was called without input #{hp.index}")

        return target.register_forward_pre_hook(pre, with_kwargs=True)

    def post(_m: nn.Module, _args: tuple[Any, ...], _kwargs: dict[str, Any], output: Any) -> Any:
        if stop:
            raise Stop()
        if isinstance(output, Tensor):
            return process(output, hp, ops, state)
        if isinstance(output, tuple):
            new = process(output[hp.index], hp, ops, state)
            return (*output[: hp.index], new, *output[hp.index + 1 :])
        if isinstance(output, list):
            lst = list(output)
            lst[hp.index] = process(lst[hp.index], hp, ops, state)
            return lst
        if hasattr(output, "to_tuple"):
            key = list(output.keys())[hp.index]
            output[key] = process(output[key], hp, ops, state)
            return output
        raise SiteError(f"cannot hook the output of {hp.module!r} (a {type(output).__name__})")

    return target.register_forward_hook(post, with_kwargs=True)


def _register_view(
    target: nn.Module, hp: HookPoint, ops: list[Op], state: HookState, *, stop: bool
) -> RemovableHandle:
    """Hooks for a hook point whose tensor is a :class:`~faithlens.models.sites.View` of the
    module call: the call is left untouched unless an intervention (or a gradient leaf)
    changes the tensor."""
    view = hp.view
    assert view is not None

    if hp.io == "in":

        def pre(m: nn.Module, args: tuple[Any, ...]) -> Any:
            if stop:
                raise Stop()
            call = Call(m, args, None, state.batch)
            old = view.expose(call)
            new = process(old, hp, ops, state)
            return None if new is old else view.absorb(call, old, new)

        return target.register_forward_pre_hook(pre)

    def post(m: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        if stop:
            raise Stop()
        call = Call(m, args, output, state.batch)
        old = view.expose(call)
        new = process(old, hp, ops, state)
        return None if new is old else view.absorb(call, old, new)

    return target.register_forward_hook(post)


@contextmanager
def vocab_subset(model: Model, tokens: Tensor) -> Iterator[None]:
    """Give the unembedding only the rows of ``tokens`` for the duration of a run (the
    original parameters, and any weight tying, are restored afterwards)."""
    path = model.adapter.unembed_module
    lin = model.module.get_submodule(path) if path is not None else None
    if not isinstance(lin, nn.Linear):
        raise InputError(
            "logit_tokens needs a model whose unembedding is an nn.Linear; this one has "
            f"{type(lin).__name__ if lin is not None else 'none'}"
        )
    tokens = torch.as_tensor(tokens, dtype=torch.long, device=lin.weight.device).flatten()
    if tokens.numel() == 0 or int(tokens.min()) < 0 or int(tokens.max()) >= lin.out_features:
        raise InputError(f"logit_tokens must be token ids in [0, {lin.out_features})")
    weight, bias = lin.weight, lin.bias
    lin.weight = nn.Parameter(weight[tokens], requires_grad=weight.requires_grad)
    if bias is not None:
        lin.bias = nn.Parameter(bias[tokens], requires_grad=bias.requires_grad)
    try:
        yield
    finally:
        lin.weight = weight
        lin.bias = bias


def gather_hook(module: nn.Module, path: str, positions: Tensor) -> RemovableHandle:
    """Feed the unembedding only the positions a metric reads."""
    target = module.get_submodule(path)

    def pre(_m: nn.Module, args: tuple[Any, ...]) -> Any:
        h = args[0]
        rows = torch.arange(h.shape[0], device=h.device)[:, None]
        return (h[rows, positions.to(h.device)], *args[1:])

    return target.register_forward_pre_hook(pre)


__all__ = ["HookState", "Op", "Stop", "gather_hook", "process", "register", "vocab_subset"]
