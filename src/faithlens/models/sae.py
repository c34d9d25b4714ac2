"""Sparse autoencoder latents as sites.

:func:`attach_sae` puts an encoder / decoder pair at a site of a wrapped model: the activation
``x`` there is replaced by ``decode(latents) + error``, where ``latents = act(encode(x))`` and
``error = x - decode(latents)`` is the reconstruction error of the untouched latents, kept as it
is. The latents pass through an identity module on the way, and the site ``sae.<name>``
(``[batch, pos, d_sae]``, units = latents) names it: cache it, ablate or patch latents like
neurons (``"sae.res3[:, :, 17:18]"``), explain them with ``fl.neurons`` on the cached values.
When no latent is changed the site's activation is ``x`` itself (the very tensor), so the
model's output is unchanged, bit for bit; a changed latent moves the activation by exactly its
change times its decoder row.

:func:`load_sae` reads the SAELens format from a local folder (nothing is downloaded):
``cfg.json`` (``d_in``, ``d_sae``, ``hook_name``, ``activation_fn_str`` ``"relu"`` or
``"topk"`` with ``activation_fn_kwargs.k``, ``apply_b_dec_to_input``) and
``sae_weights.safetensors`` (``W_enc [d_in, d_sae]``, ``b_enc``, ``W_dec [d_sae, d_in]``,
``b_dec``), read without unpickling. ``hook_name`` in TransformerLens' spelling
(``blocks.3.hook_resid_post``) is mapped to faithlens' (``resid_post.3``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InputError
from .model import Model
from .sites import HookPoint, SiteInfo

HOLDER = "faithlens_saes"
ACTIVATIONS = ("relu", "topk")
#: TransformerLens hook names -> faithlens site kinds.
TL_HOOKS = {
    "hook_resid_pre": "resid_pre",
    "hook_resid_mid": "resid_mid",
    "hook_resid_post": "resid_post",
    "hook_attn_out": "attn_out",
    "hook_mlp_out": "mlp_out",
    "mlp.hook_post": "mlp_post",
}


@dataclass(frozen=True)
class SAEConfig:
    d_in: int
    d_sae: int
    site: str
    activation: str = "relu"
    k: int | None = None
    apply_b_dec_to_input: bool = False


def site_from_hook_name(hook_name: str) -> str:
    """A faithlens site name from a TransformerLens hook name (or a faithlens name as is)."""
    m = re.fullmatch(r"blocks\.(\d+)\.(.+)", hook_name)
    if m and m.group(2) in TL_HOOKS:
        return f"{TL_HOOKS[m.group(2)]}.{m.group(1)}"
    return hook_name


class SAE(nn.Module):
    """An encoder / decoder pair whose latents pass through ``self.latents`` (an identity)."""

    handle: Any = None  # the hook that applies it at its site (attach_sae)
    W_enc: Tensor
    b_enc: Tensor
    W_dec: Tensor
    b_dec: Tensor

    def __init__(self, cfg: SAEConfig, weights: dict[str, Tensor]) -> None:
        super().__init__()
        self.cfg = cfg
        shapes = {
            "W_enc": (cfg.d_in, cfg.d_sae),
            "b_enc": (cfg.d_sae,),
            "W_dec": (cfg.d_sae, cfg.d_in),
            "b_dec": (cfg.d_in,),
        }
        for key, shape in shapes.items():
            if key not in weights:
                raise InputError(f"the SAE weights have no {key!r} (SAELens names: {list(shapes)})")
            if tuple(weights[key].shape) != shape:
                raise InputError(
                    f"the SAE's {key} has shape {tuple(weights[key].shape)}; cfg.json's d_in="
                    f"{cfg.d_in}, d_sae={cfg.d_sae} make it {shape}"
                )
            self.register_buffer(key, weights[key].detach().clone())
        self.latents = nn.Identity()

    def encode(self, x: Tensor) -> Tensor:
        b_dec, W_enc, b_enc = (t.to(x.dtype) for t in (self.b_dec, self.W_enc, self.b_enc))
        pre = (x - b_dec if self.cfg.apply_b_dec_to_input else x) @ W_enc + b_enc
        if self.cfg.activation == "topk":
            assert self.cfg.k is not None
            vals, idx = torch.topk(pre, self.cfg.k, dim=-1)
            return torch.zeros_like(pre).scatter(-1, idx, torch.relu(vals))
        return torch.relu(pre)

    def decode(self, z: Tensor) -> Tensor:
        return z @ self.W_dec.to(z.dtype) + self.b_dec.to(z.dtype)

    def forward(self, x: Tensor) -> Tensor:
        z = self.encode(x)
        new = self.latents(z)
        if new is z:
            return x  # nothing changed a latent: the activation itself
        return x + self.decode(new) - self.decode(z)  # decode(new) + (x - decode(z))


def load_sae(path: str | Path) -> tuple[SAEConfig, dict[str, Tensor]]:
    """The config and weights of an SAE saved in the SAELens format in folder ``path``."""
    from safetensors.torch import load_file

    folder = Path(path)
    cfg_file, weights_file = folder / "cfg.json", folder / "sae_weights.safetensors"
    for f in (cfg_file, weights_file):
        if not f.is_file():
            raise InputError(
                f"{f} does not exist; an SAE folder in the SAELens format holds cfg.json and "
                "sae_weights.safetensors"
            )
    raw: dict[str, Any] = json.loads(cfg_file.read_text())
    missing = [k for k in ("d_in", "d_sae", "hook_name") if k not in raw]
    if missing:
        raise InputError(
            f"{cfg_file} has no {missing}; SAELens configs name d_in, d_sae, hook_name"
        )
    act = str(raw.get("activation_fn_str", raw.get("activation_fn", "relu")))
    if act not in ACTIVATIONS:
        raise InputError(
            f"{cfg_file}: activation {act!r} is not supported; faithlens reads {ACTIVATIONS}"
        )
    k = (raw.get("activation_fn_kwargs") or {}).get("k") if act == "topk" else None
    if act == "topk" and not isinstance(k, int):
        raise InputError(f"{cfg_file}: a topk SAE needs activation_fn_kwargs.k (an int)")
    cfg = SAEConfig(
        d_in=int(raw["d_in"]),
        d_sae=int(raw["d_sae"]),
        site=site_from_hook_name(str(raw["hook_name"])),
        activation=act,
        k=k,
        apply_b_dec_to_input=bool(raw.get("apply_b_dec_to_input", False)),
    )
    return cfg, dict(load_file(str(weights_file)))


def attach_sae(model: Model, path: str | Path, name: str, *, site: str | None = None) -> str:
    """Attach the SAE saved at ``path`` (SAELens format) at its site (``cfg.json``'s
    ``hook_name``, or ``site``); returns the new site's name, ``sae.<name>``."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise InputError(f"SAE name {name!r}: use letters, digits and underscores")
    cfg, weights = load_sae(path)
    if site is not None:
        cfg = SAEConfig(**{**cfg.__dict__, "site": site})
    info = model.site_info(cfg.site)
    if info.hook.view is not None or info.hook.spatial:
        raise InputError(
            f"site {cfg.site!r}: an SAE attaches where the site is a slice of a hooked "
            "[batch, pos, width] tensor; this site is a view of a module call (an expert's "
            "output, the router) or a convolutional map, which is not supported"
        )
    if info.is_raw or info.width is None:
        raise InputError(f"site {cfg.site!r}: an SAE attaches at a canonical site, not a raw one")
    if info.width != cfg.d_in:
        raise InputError(
            f"the SAE reads d_in={cfg.d_in} but site {cfg.site!r} has width {info.width}"
        )
    key = f"sae.{name}"
    if key in model.adapter.site_table:
        raise InputError(f"{model.name} already has an SAE named {name!r}; detach_sae it first")
    holder = getattr(model.module, HOLDER, None)
    if not isinstance(holder, nn.ModuleDict):
        holder = nn.ModuleDict()
        model.module.add_module(HOLDER, holder)
    p = next(iter(model.module.parameters()), None)
    sae = SAE(cfg, weights).to(device=model.device, dtype=p.dtype if p is not None else None)
    holder[name] = sae
    handle = _hook(model, info, sae)
    sae.handle = handle
    model.adapter.site_table[key] = SiteInfo(
        name=key,
        kind="sae",
        hook=HookPoint(f"{HOLDER}.{name}.latents", "out"),
        width=cfg.d_sae,
        layer=info.layer,
    )
    return key


def _hook(model: Model, info: SiteInfo, sae: SAE) -> Any:
    """Replace the site's slice of the hooked tensor by the SAE's output, on every call."""
    hp = info.hook
    target = model.module.get_submodule(hp.module) if hp.module else model.module
    lo, hi = info.start, info.stop

    def apply(t: Tensor) -> Tensor:
        part = t[..., lo:hi]
        new = sae(part)
        if new is part:
            return t
        t = t.clone()
        t[..., lo:hi] = new
        return t

    if hp.io == "in":

        def pre(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if len(args) > hp.index:
                return (*args[: hp.index], apply(args[hp.index]), *args[hp.index + 1 :]), kwargs
            if hp.kwarg is not None and hp.kwarg in kwargs:
                return args, {**kwargs, hp.kwarg: apply(kwargs[hp.kwarg])}
            return None

        return target.register_forward_pre_hook(pre, with_kwargs=True)

    def post(_m: nn.Module, _args: Any, output: Any) -> Any:
        if isinstance(output, Tensor):
            return apply(output)
        if isinstance(output, tuple):
            return (*output[: hp.index], apply(output[hp.index]), *output[hp.index + 1 :])
        raise InputError(f"cannot attach an SAE to the output of {hp.module!r}")

    return target.register_forward_hook(post)


def detach_sae(model: Model, name: str) -> None:
    """Remove the SAE ``name``: its hook, its module and its site."""
    holder = getattr(model.module, HOLDER, None)
    if not isinstance(holder, nn.ModuleDict) or name not in holder:
        raise InputError(f"{model.name} has no SAE named {name!r}")
    sae = holder[name]
    assert isinstance(sae, SAE)
    sae.handle.remove()
    del holder[name]
    del model.adapter.site_table[f"sae.{name}"]


__all__ = [
    "ACTIVATIONS",
    "SAE",
    "SAEConfig",
    "attach_sae",
    "detach_sae",
    "load_sae",
    "site_from_hook_name",
]
