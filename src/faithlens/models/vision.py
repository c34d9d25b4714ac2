"""Vision models: ViT, the CLIP vision tower, ResNet, and any convolutional network.

Their inputs are tensors (pixels), not token ids: a task on them is built with
:meth:`faithlens.Task.from_tensors`, and a run takes ``Inputs(args=(pixels,))`` or the pixel
tensor itself.

- **ViT** (``ViTForImageClassification``, ``model_type`` ``vit``) and the **CLIP vision tower**
  (``CLIPVisionModel``, ``clip_vision_model``) are pre-norm transformers: the canonical sites of
  a language model (``resid_pre.L``, ``head.L.H``, ``q/k/v.L.H``, ``attn_out.L``,
  ``mlp_post.L``...), each ``[batch, positions, width]`` where position 0 is the CLS token and
  positions ``1..`` the image patches, row-major. ``embed`` is the patch embedding (patches
  only); ``resid_pre.0`` adds the CLS token and the position embeddings (and, in CLIP, the
  pre-layernorm). ViT's ``logits`` are its class logits ``[batch, classes]``; the CLIP tower's
  output is its pooled embedding (``ln_final``: the post-layernorm of the CLS token,
  ``[batch, width]``).
- **ResNet** (``ResNetForImageClassification``, ``resnet``): ``embed`` (the stem), ``block.S.B``
  (block ``B`` of stage ``S``), ``stage.S`` (the stage's output), ``pool`` and ``logits``.
- **Any CNN** through :class:`ConvAdapter`: the modules you name become sites.

A convolutional activation ``[batch, channels, h, w]`` is presented as
``[batch, h * w, channels]`` (:attr:`faithlens.models.sites.HookPoint.spatial`): the channels
are the units, the spatial positions (row-major: ``i * w + j``) the positions, so
``Site("block.1.0", positions=[5], units=[3])`` is channel 3 at row 1, column 1 of a 4-wide map,
and patching, caching and ablation work as on a transformer's residual stream.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InputError, SiteError, nearest
from .adapters import RAW_PREFIX, Adapter, HFAdapter
from .layouts import FACTORIES, Layout
from .probe import hooked_shape
from .sites import HookPoint, SiteInfo

#: ViTForImageClassification / ViTModel (transformers 5: ``vit.layers``, llama-like names).
VIT = Layout(
    arch="vit",
    base="vit",
    layers="layers",
    embed="embeddings.patch_embeddings",
    embed_out="embeddings",
    attn_out="attention",
    o_proj="attention.o_proj",
    qkv="separate",
    q="attention.q_proj",
    k="attention.k_proj",
    v="attention.v_proj",
    mlp_out="mlp",
    mlp_post="mlp.fc2",
    attn_in="layernorm_before",
    mlp_in="layernorm_after",
    resid_mid="layernorm_after",
    final_norm="layernorm",
    head="classifier",
    causal=False,
    mlp_in_proj=("mlp.fc1",),
)

#: CLIPVisionModel: the pre-layernorm's output is the residual stream layer 0 reads.
CLIP_VISION = replace(
    VIT,
    arch="clip_vision_model",
    base="vision_model",
    layers="encoder.layers",
    embed="embeddings.patch_embedding",
    embed_out="pre_layrnorm",
    attn_out="self_attn",
    o_proj="self_attn.out_proj",
    q="self_attn.q_proj",
    k="self_attn.k_proj",
    v="self_attn.v_proj",
    attn_in="layer_norm1",
    mlp_in="layer_norm2",
    resid_mid="layer_norm2",
    final_norm="post_layernorm",
    head=None,
)


class VisionTransformerAdapter(HFAdapter):
    """A Hugging Face vision transformer (ViT, the CLIP vision tower): the canonical sites of
    :class:`HFAdapter` on pixel inputs. The class head (ViT) reads the CLS token only, so its
    ``logits`` are ``[batch, classes]`` and no position of them is gathered."""

    #: It takes pixels, not token ids (a task on it is built with Task.from_tensors).
    token_inputs = False

    def __init__(self, module: nn.Module, layout: Layout) -> None:
        super().__init__(module, layout)
        cfg: Any = module.config
        self.d_vocab = int(getattr(cfg, "num_labels", 0) or 0) if self.has_head else 0
        embed = self._sites["embed"]
        if self.prefix + layout.embed + ".projection" not in self._module_names:
            # CLIP: the patch embedding is a Conv2d, [batch, width, h, w]
            self._sites["embed"] = replace(embed, hook=replace(embed.hook, spatial=True))
        else:  # ViT: the patch embedding module flattens the patches itself
            self._sites["embed"] = replace(embed, hook=HookPoint(embed.hook.module, "out"))
        if self.has_head:
            assert self.head_path is not None
            hook = HookPoint(self.head_path, "out", 0)
            self._sites["logits"] = SiteInfo("logits", "logits", hook, self.d_vocab or None)

    @property
    def unembed_module(self) -> str | None:
        return None  # the head reads [batch, width] (the CLS token): nothing to gather

    @property
    def takes_use_cache(self) -> bool:
        return False

    def logits_of(self, output: Any) -> Tensor | None:
        if getattr(output, "logits", None) is not None:
            return output.logits
        pooled = getattr(output, "pooler_output", None)
        if isinstance(pooled, Tensor):
            return pooled
        return super().logits_of(output)


def _vit(module: nn.Module) -> Adapter:
    return VisionTransformerAdapter(module, VIT)


def _clip_vision(module: nn.Module) -> Adapter:
    return VisionTransformerAdapter(module, CLIP_VISION)


class ConvAdapter(Adapter):
    """Named modules of any network as sites (a plain PyTorch CNN, through ``fl.wrap(module,
    adapter=ConvAdapter(module, {"conv2": "features.3"}, example=x[:1]))``).

    ``example`` (one batch of the module's inputs) is run once to read each named module's
    output: a ``[batch, channels, h, w]`` output becomes a spatial site of ``channels`` units at
    ``h * w`` positions (kind ``"conv"``), a ``[batch, width]`` or ``[batch, pos, width]``
    output a site of ``width`` units (kind ``"dense"``); ``logits`` names the module whose output
    the metric reads (default: the model's own output).
    """

    arch = "cnn"
    token_inputs = False

    def __init__(
        self,
        module: nn.Module,
        sites: Mapping[str, str],
        example: Tensor | tuple[Tensor, ...],
        *,
        logits: str | None = None,
    ) -> None:
        super().__init__(module)
        if not isinstance(sites, Mapping) or not sites:
            raise InputError(
                'ConvAdapter needs sites: a mapping of names to module paths ({"conv1": '
                '"features.0"})'
            )
        args = example if isinstance(example, tuple) else (example,)
        if not args or not all(isinstance(a, Tensor) for a in args):
            raise InputError(
                "ConvAdapter needs example: one batch of the module's input tensors (x[:1])"
            )
        device = next((p.device for p in module.parameters()), None)
        if device is not None:
            args = tuple(a.to(device) for a in args)
        modules = {n for n, _ in module.named_modules()}
        wanted = dict(sites)
        if logits is not None:
            wanted["logits"] = logits
        for alias, path in wanted.items():
            path = path[len(RAW_PREFIX) :] if path.startswith(RAW_PREFIX) else path
            if path not in modules:
                raise SiteError(
                    f"ConvAdapter site {alias!r}: no module named {path!r}; nearest module "
                    f"paths: {nearest(path, [m for m in modules if m])}"
                )
            shape = hooked_shape(module, HookPoint(path, "out"), args, {})
            if shape is None or len(shape) == 0:
                raise SiteError(
                    f"ConvAdapter site {alias!r}: module {path!r} gives no tensor output on "
                    "the example (is it called in the forward pass?)"
                )
            spatial = len(shape) >= 3
            kind = "logits" if alias == "logits" else ("conv" if spatial else "dense")
            hook = HookPoint(path, "out", 0, spatial=spatial)
            self._sites[alias] = SiteInfo(
                alias, kind, hook, int(shape[0] if spatial else shape[-1])
            )

    def site_info(self, name: str) -> SiteInfo:
        if name in self._sites or name.startswith(RAW_PREFIX):
            return super().site_info(name)
        raise SiteError(
            f"unknown site {name!r}; this network's sites are {sorted(self._sites)} (and raw "
            f"'module:PATH' sites). Nearest: {nearest(name, self._sites)}"
        )


class ResNetAdapter(Adapter):
    """Hugging Face ``ResNetForImageClassification`` / ``ResNetModel``: the stem (``embed``),
    every block (``block.S.B``) and stage (``stage.S``) output, the pooled features
    (``pool``) and the class logits, each convolutional site ``[batch, h * w, channels]``."""

    arch = "resnet"
    token_inputs = False

    def __init__(self, module: nn.Module) -> None:
        super().__init__(module)
        cfg: Any = module.config
        names = {n for n, _ in module.named_modules()}
        base = "resnet." if "resnet" in names else ""
        widths = [int(w) for w in cfg.hidden_sizes]
        depths = [int(d) for d in cfg.depths]
        self.n_layers = len(depths)

        def add(name: str, kind: str, path: str, width: int, layer: int | None = None) -> None:
            hook = HookPoint(path, "out", 0, spatial=kind != "logits")
            self._sites[name] = SiteInfo(name, kind, hook, width, layer=layer)

        add("embed", "embed", base + "embedder", int(cfg.embedding_size))
        for s, (width, depth) in enumerate(zip(widths, depths, strict=True)):
            stage = f"{base}encoder.stages.{s}"
            for b in range(depth):
                add(f"block.{s}.{b}", "block", f"{stage}.layers.{b}", width, s)
            add(f"stage.{s}", "stage", stage, width, s)
        add("pool", "pool", base + "pooler", widths[-1])
        if "classifier" in names:
            self.d_vocab = int(cfg.num_labels)
            add("logits", "logits", "classifier", self.d_vocab)

    def logits_of(self, output: Any) -> Tensor | None:
        if getattr(output, "logits", None) is not None:
            return output.logits
        pooled = getattr(output, "pooler_output", None)
        if isinstance(pooled, Tensor):
            return pooled.flatten(1)
        return super().logits_of(output)


def _resnet(module: nn.Module) -> Adapter:
    return ResNetAdapter(module)


FACTORIES.update({"vit": _vit, "clip_vision_model": _clip_vision, "resnet": _resnet})


def pixels(n: int, channels: int, size: int, *, seed: int = 0) -> Tensor:
    """``n`` random images ``[n, channels, size, size]`` (standard normal, seeded): inputs for
    examples and tests of vision models."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, channels, size, size, generator=g)


__all__ = [
    "CLIP_VISION",
    "VIT",
    "ConvAdapter",
    "ResNetAdapter",
    "VisionTransformerAdapter",
    "pixels",
]
