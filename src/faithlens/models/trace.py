"""Tracing one forward pass: every module's first call, with copies of what it read and
returned (what :mod:`faithlens.models.infer` reads a layout from)."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .layout_check import first_tensor


@dataclass
class Call:
    """One module's first call in the traced forward pass."""

    order: int  # when it started
    done: int  # when it returned
    inp: Tensor | None  # first positional argument, or the ``hidden_states`` keyword
    out: Tensor | None  # the output, or its first element
    # the tensor objects themselves: two norms initialised alike return equal values, but only
    # one of them returns the very tensor a module reads
    raw_in: Any = None
    raw_out: Any = None


@contextlib.contextmanager
def tracing(root: nn.Module) -> Iterator[dict[str, Call]]:
    """Record the first call of every module while the body runs."""
    calls: dict[str, Call] = {}
    clock = [0]
    handles = []

    def pre(name: str) -> Any:
        def hook(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            if name not in calls:
                x = args[0] if args else kwargs.get("hidden_states")
                inp = x.detach().clone() if isinstance(x, Tensor) else None
                calls[name] = Call(clock[0], -1, inp, None, raw_in=x)
                clock[0] += 1

        return hook

    def post(name: str) -> Any:
        def hook(_m: nn.Module, _a: Any, out: Any) -> None:
            call = calls.get(name)
            if call is not None and call.done < 0:
                t = first_tensor(out)  # cloned: a block may add to it in place (Falcon)
                call.out, call.done = None if t is None else t.detach().clone(), clock[0]
                call.raw_out = t
                clock[0] += 1

        return hook

    for name, mod in root.named_modules():
        handles.append(mod.register_forward_pre_hook(pre(name), with_kwargs=True))
        handles.append(mod.register_forward_hook(post(name)))
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()


def trace_model(module: nn.Module, ids: Tensor) -> tuple[dict[str, Call], Any]:
    """Run ``module`` on ``ids`` (with its hidden states), recording every module's first call."""
    kwargs: dict[str, Any] = {"output_hidden_states": True}
    with contextlib.suppress(TypeError, ValueError):
        if "use_cache" in inspect.signature(module.forward).parameters:
            kwargs["use_cache"] = False
    with torch.no_grad(), tracing(module) as calls:
        out = module(input_ids=ids, **kwargs)
    return calls, out


def io_dims(mod: nn.Module) -> tuple[int, int] | None:
    """(in, out) features of an ``nn.Linear`` or a GPT-2 ``Conv1D``; None otherwise."""
    w = getattr(mod, "weight", None)
    if not isinstance(w, Tensor) or w.dim() != 2:
        return None
    if isinstance(mod, nn.Linear):
        return int(w.shape[1]), int(w.shape[0])
    if type(mod).__name__ == "Conv1D":
        return int(w.shape[0]), int(w.shape[1])
    return None


def is_causal(module: nn.Module, ids: Tensor) -> bool:
    """Whether changing the last token leaves the first position's output unchanged."""
    other = ids.clone()
    other[:, -1] = (other[:, -1] + 1) % max(2, int(ids.max()) + 1)
    with torch.no_grad():
        a = first_tensor(module(input_ids=ids, use_cache=False))
        b = first_tensor(module(input_ids=other, use_cache=False))
    if a is None or b is None:
        raise ValueError("the model's output holds no tensor to compare")
    return bool(torch.equal(a[:, 0], b[:, 0]))


__all__ = ["Call", "io_dims", "is_causal", "trace_model", "tracing"]
