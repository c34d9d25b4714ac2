"""Attention patterns of Hugging Face models as sites.

A Hugging Face attention module computes its pattern inside a function (``softmax(q k^T)``),
not in a module, so no hook can see it. :func:`expose_patterns` gives every attention module of
a wrapped Hugging Face model an identity module, ``faithlens_pattern``, and switches the model
to ``"faithlens_eager"``: an attention function that calls the family's own eager attention
(``eager_attention_forward`` of its modeling file: its rotary embedding, scaling, grouped keys,
soft-capping and masks as they are) and passes the pattern it returns through that identity.
The pattern of layer ``L``, ``[batch, head, query, key]``, is then the raw site
``module:<attention path>.faithlens_pattern`` (the zoo's is ``module:blocks.L.attn.pattern``;
:func:`pattern_site` names either): cache it, or patch / ablate it like any raw site.

:func:`expose_patterns` also gives the model canonical pattern sites, on Hugging Face and zoo
models alike: ``pattern.L.H``, head ``H``'s pattern ``[batch, query, key]`` (positions are
queries, units are keys), and ``pattern.L``, every head's as ``[batch, query, head * key]``
(head-major: head ``H``'s keys are units ``H * key .. (H + 1) * key - 1``). They are views of the
same hook point (:class:`HeadPattern`, :class:`LayerPattern`), so ``fl.patch(model, task,
"pattern")`` patches every head's pattern, ``sites=["pattern.3.1"]`` one head's, and a run
resumed at layer ``L`` (exact patching) reads them like any site of that layer.

Reading is exact by construction (it is the family's own eager pattern; tested against
``output_attentions=True`` with ``attn_implementation="eager"``). Patching needs the attention
output to be ``pattern @ values``: when a pattern is changed, the output is recomputed as
``pattern' @ repeat_kv(values)``, after checking on the same call that this product gives the
family's own output for the unchanged pattern; a family where it does not (attention sinks, a
post-softmax transform) is refused with a :class:`~faithlens.errors.InputError`, never patched
approximately. Unchanged patterns return the family's own output untouched, so a model with
patterns exposed and nothing patched computes what eager attention computes.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InputError
from .model import Model
from .sites import Call, HookPoint, SiteInfo, View

IMPLEMENTATION = "faithlens_eager"
POINT = "faithlens_pattern"


class PatternPoint(nn.Identity):
    """The hook point of an attention pattern ``[batch, head, query, key]`` (an identity)."""


def _pattern_of(call: Call) -> Tensor:
    out = call.output
    if not isinstance(out, Tensor) or out.dim() != 4:
        raise InputError(
            f"{type(call.module).__name__} did not output an attention pattern [batch, head, "
            "query, key]"
        )
    return out


@dataclass(frozen=True)
class HeadPattern(View):
    """``pattern.L.H``: head ``head``'s pattern ``[batch, query, key]`` of the hooked
    ``[batch, head, query, key]``."""

    head: int

    def expose(self, call: Call) -> Tensor:
        return _pattern_of(call)[:, self.head]

    def absorb(self, call: Call, old: Tensor, new: Tensor) -> Any:
        out = _pattern_of(call).clone()
        out[:, self.head] = new.to(out.dtype)
        return out


@dataclass(frozen=True)
class LayerPattern(View):
    """``pattern.L``: every head's pattern as ``[batch, query, head * key]`` (head-major)."""

    def expose(self, call: Call) -> Tensor:
        out = _pattern_of(call)
        b, h, q, k = out.shape
        return out.transpose(1, 2).reshape(b, q, h * k)

    def absorb(self, call: Call, old: Tensor, new: Tensor) -> Any:
        out = _pattern_of(call)
        b, h, q, k = out.shape
        return new.reshape(b, q, h, k).transpose(1, 2).to(out.dtype).contiguous()


def _add_sites(model: Model, points: list[str]) -> None:
    """The canonical sites ``pattern.L`` and ``pattern.L.H`` on the hook points ``points``
    (module paths, one per layer)."""
    table = model.adapter.site_table
    for L, path in enumerate(points):
        table[f"pattern.{L}"] = SiteInfo(
            name=f"pattern.{L}",
            kind="pattern_layer",
            hook=HookPoint(path, "out", view=LayerPattern()),
            width=None,
            layer=L,
        )
        for H in range(model.n_heads):
            name = f"pattern.{L}.{H}"
            table[name] = SiteInfo(
                name=name,
                kind="pattern",
                hook=HookPoint(path, "out", view=HeadPattern(H)),
                width=None,
                layer=L,
                head=H,
            )


def _family_eager(module: nn.Module) -> Any:
    family = sys.modules.get(type(module).__module__)
    eager = getattr(family, "eager_attention_forward", None)
    if eager is None:
        raise InputError(
            f"{type(module).__name__} has no eager_attention_forward in its modeling file, so "
            "faithlens cannot expose its attention pattern"
        )
    return eager


def attention(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    **kwargs: Any,
) -> tuple[Tensor, Tensor]:
    """The ``"faithlens_eager"`` attention function (module docstring)."""
    out, weights = _family_eager(module)(module, query, key, value, attention_mask, **kwargs)
    point = getattr(module, POINT, None)
    if point is None or weights is None:
        return out, weights
    new = point(weights)
    if new is weights:
        return out, weights
    groups = int(getattr(module, "num_key_value_groups", 1) or 1)
    v = value.repeat_interleave(groups, dim=1) if groups > 1 else value
    same = torch.matmul(weights, v).transpose(1, 2)
    if same.shape != out.shape or not torch.allclose(same, out, rtol=1e-4, atol=1e-5):
        raise InputError(
            f"patching the attention pattern of {type(module).__name__} is not exact: its "
            "attention output is not pattern @ values (attention sinks or a post-softmax "
            "transform); read its pattern, but patch q, k, v or head sites instead"
        )
    return torch.matmul(new.to(v.dtype), v).transpose(1, 2).contiguous(), new


def _register() -> None:
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import eager_mask

    AttentionInterface.register(IMPLEMENTATION, attention)
    AttentionMaskInterface.register(IMPLEMENTATION, eager_mask)


def _attention_paths(model: Model) -> list[str]:
    """The attention module of every layer: the parent of the module ``head.L.0`` hooks."""
    paths = []
    for L in range(model.n_layers):
        hook = model.adapter.site_info(f"head.{L}.0").hook.module
        paths.append(hook.rsplit(".", 1)[0])
    return paths


def pattern_site(model: Model, layer: int) -> str:
    """The raw site of layer ``layer``'s attention pattern ``[batch, head, query, key]``: the
    zoo's own, or the one :func:`expose_patterns` attached (call it first)."""
    if not 0 <= layer < model.n_layers:
        raise InputError(f"layer {layer} is out of range 0..{model.n_layers - 1}")
    zoo = f"blocks.{layer}.attn.pattern"
    mods = dict(model.module.named_modules())
    if zoo in mods:
        return f"module:{zoo}"
    path = f"{_attention_paths(model)[layer]}.{POINT}"
    if path not in mods:
        raise InputError(
            f"{model.name} has no attention pattern site at layer {layer}; call "
            "fl.models.patterns.expose_patterns(model) first"
        )
    return f"module:{path}"


def expose_patterns(model: Model) -> list[str]:
    """Attach a pattern hook point to every attention module of a Hugging Face model and switch
    it to faithlens' eager attention (module docstring); the pattern site of every layer.
    A zoo model already has them (returned as they are). Either way the model gains the
    canonical sites ``pattern.L`` and ``pattern.L.H``. Calling it twice changes nothing."""
    if "blocks.0.attn.pattern" in dict(model.module.named_modules()):
        sites = [pattern_site(model, L) for L in range(model.n_layers)]
        _add_sites(model, [s.removeprefix("module:") for s in sites])
        return sites
    setter = getattr(model.module, "set_attn_implementation", None)
    if not callable(setter) or not model.n_layers:
        raise InputError(
            f"{model.name} is not a Hugging Face transformer with attention layers; attention "
            "patterns are exposed on Hugging Face models (the zoo's are sites already)"
        )
    paths = _attention_paths(model)
    for path in paths:
        _family_eager(model.module.get_submodule(path))
    _register()
    for path in paths:
        attn = model.module.get_submodule(path)
        if not isinstance(getattr(attn, POINT, None), PatternPoint):
            attn.add_module(POINT, PatternPoint())
    setter(IMPLEMENTATION)
    _add_sites(model, [f"{p}.{POINT}" for p in paths])
    return [f"module:{p}.{POINT}" for p in paths]


__all__ = [
    "IMPLEMENTATION",
    "POINT",
    "HeadPattern",
    "LayerPattern",
    "PatternPoint",
    "attention",
    "expose_patterns",
    "pattern_site",
]
