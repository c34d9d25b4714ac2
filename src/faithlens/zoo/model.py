"""``ZooTransformer``: faithlens' own small transformer, laid out for interpretability.

A pre-LayerNorm transformer whose modules are the canonical sites (read by the same
:class:`~faithlens.models.adapters.HFAdapter` machinery as Hugging Face models)::

    embed (tokens) --+-- pos_embed (learned) --> embed_drop   = resid_pre.0
    blocks[L]:  ln1 -> attn(q_proj, k_proj, v_proj -> pattern -> o_proj)      attn_in / q / k / v / head / attn_out
                ln2 -> mlp(fc_in -> act -> fc_out)   (absent in attention-only models)
    ln_final -> unembed                                                        ln_final / logits

- ``positions="shortformer"``: the positional embedding is added to the query and key inputs of
  every layer (after ``ln1``), never to the residual stream, so ``resid_pre.0`` is the token
  embedding alone. The q/k projections then read ``ln1(x) + pos`` (their raw ``:in`` sites).
- ``norm=False`` (tracr's compiled models, :mod:`faithlens.zoo.tracr`): ``ln1``, ``ln2`` and
  ``ln_final`` are identities, so every site reads the raw residual stream.
- ``attn.pattern`` is an identity module whose output is the attention pattern
  ``[batch, head, query, key]``: cache or patch it as the raw site
  ``module:blocks.L.attn.pattern``.
- Padding is masked out of the keys with ``attention_mask``; in a causal model each query also
  sees only earlier keys. Causal models take a key/value cache (``past_key_values``), which lets
  the run engine resume at a position.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InputError, ShapeError
from ..models.adapters import LAYOUTS, HFAdapter
from .config import ZooConfig


class ZooCache:
    """Keys and values per layer (``[batch, heads, positions, d_head]``) for causal models.

    It duck-types the part of ``transformers.DynamicCache`` that faithlens uses: ``update``,
    ``get_seq_length`` and ``layers[i].keys`` / ``.values``.
    """

    @dataclass
    class Layer:
        keys: Tensor
        values: Tensor

    def __init__(self, kv: Sequence[tuple[Tensor, Tensor]] | None = None) -> None:
        self.layers: list[ZooCache.Layer] = []
        for k, v in kv or ():
            if k.shape != v.shape or k.dim() != 4:
                raise ShapeError(
                    f"cached keys {tuple(k.shape)} and values {tuple(v.shape)} must both be "
                    "[batch, heads, positions, d_head]"
                )
            self.layers.append(ZooCache.Layer(k, v))

    def get_seq_length(self, layer_idx: int = 0) -> int:
        if not self.layers:
            return 0
        return int(self.layers[layer_idx].keys.shape[2])

    def update(self, keys: Tensor, values: Tensor, layer_idx: int) -> tuple[Tensor, Tensor]:
        """Append this pass's keys/values for ``layer_idx``; returns all of them."""
        while len(self.layers) <= layer_idx:
            self.layers.append(ZooCache.Layer(keys[:, :, :0], values[:, :, :0]))
        old = self.layers[layer_idx]
        k = torch.cat([old.keys.to(keys), keys], dim=2)
        v = torch.cat([old.values.to(values), values], dim=2)
        self.layers[layer_idx] = ZooCache.Layer(k, v)
        return k, v

    def to_list(self) -> list[tuple[Tensor, Tensor]]:
        return [(layer.keys, layer.values) for layer in self.layers]


@dataclass
class ZooOutput:
    """What :meth:`ZooTransformer.forward` returns."""

    logits: Tensor
    past_key_values: ZooCache | None = None


class ZooAttention(nn.Module):
    """Multi-head attention with separate q/k/v/o projections and an exposed pattern."""

    def __init__(self, cfg: ZooConfig, layer_idx: int) -> None:
        super().__init__()
        d, h, dh = cfg.d_model, cfg.n_heads, cfg.head_width
        self.n_heads, self.d_head, self.layer_idx = h, dh, layer_idx
        self.q_proj = nn.Linear(d, h * dh, bias=cfg.bias)
        self.k_proj = nn.Linear(d, h * dh, bias=cfg.bias)
        self.v_proj = nn.Linear(d, h * dh, bias=cfg.bias)
        self.o_proj = nn.Linear(h * dh, d, bias=cfg.bias)
        self.pattern = nn.Identity()  # hook point: [batch, head, query, key]
        self.scale = 1.0 / math.sqrt(dh)

    def forward(
        self,
        x: Tensor,
        qk_pos: Tensor | None = None,
        allowed: Tensor | None = None,
        cache: ZooCache | None = None,
    ) -> Tensor:
        b, t, _ = x.shape
        qk_in = x if qk_pos is None else x + qk_pos
        q = self.q_proj(qk_in).view(b, t, self.n_heads, self.d_head).transpose(1, 2)
        k = self.k_proj(qk_in).view(b, t, self.n_heads, self.d_head).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_heads, self.d_head).transpose(1, 2)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        scores = (q @ k.transpose(-1, -2)) * self.scale
        if allowed is not None:
            scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        pattern = self.pattern(torch.softmax(scores.float(), dim=-1).to(v.dtype))
        z = (pattern @ v).transpose(1, 2).reshape(b, t, self.n_heads * self.d_head)
        return self.o_proj(z)


class ZooMLP(nn.Module):
    def __init__(self, cfg: ZooConfig) -> None:
        super().__init__()
        self.fc_in = nn.Linear(cfg.d_model, cfg.d_mlp, bias=cfg.bias)
        self.act: nn.Module = nn.ReLU() if cfg.act == "relu" else nn.GELU()
        self.fc_out = nn.Linear(cfg.d_mlp, cfg.d_model, bias=cfg.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_out(self.act(self.fc_in(x)))


def _norm(cfg: ZooConfig) -> nn.Module:
    """A layer norm, or an identity in a model without norms (``norm=False``)."""
    return nn.LayerNorm(cfg.d_model, eps=cfg.ln_eps) if cfg.norm else nn.Identity()


class ZooBlock(nn.Module):
    """Pre-LN block: ``x + attn(ln1(x))``, then ``+ mlp(ln2(.))`` unless attention-only."""

    def __init__(self, cfg: ZooConfig, layer_idx: int) -> None:
        super().__init__()
        self.ln1 = _norm(cfg)
        self.attn = ZooAttention(cfg, layer_idx)
        self.ln2: nn.Module | None = None
        self.mlp: ZooMLP | None = None
        if not cfg.attn_only:
            self.ln2 = _norm(cfg)
            self.mlp = ZooMLP(cfg)

    def forward(
        self,
        hidden_states: Tensor,
        qk_pos: Tensor | None = None,
        allowed: Tensor | None = None,
        cache: ZooCache | None = None,
    ) -> Tensor:
        x = hidden_states + self.attn(self.ln1(hidden_states), qk_pos, allowed, cache)
        if self.mlp is not None and self.ln2 is not None:
            x = x + self.mlp(self.ln2(x))
        return x


class ZooTransformer(nn.Module):
    """A small transformer (see the module docstring for its layout)."""

    def __init__(self, config: ZooConfig) -> None:
        super().__init__()
        if not isinstance(config, ZooConfig):
            raise InputError(f"ZooTransformer needs a ZooConfig, not {type(config).__name__}")
        self.config = config
        d = config.d_model
        self.embed = nn.Embedding(config.d_vocab, d)
        self.pos_embed = nn.Embedding(config.n_ctx, d)
        self.embed_drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(ZooBlock(config, i) for i in range(config.n_layers))
        self.ln_final = _norm(config)
        assert config.d_out is not None
        self.unembed = nn.Linear(d, config.d_out, bias=True)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Normal(0, init_std) weights (output projections scaled by 1/sqrt(2 n_layers)), zero
        biases, unit layer norms. Shortformer positional embeddings, which are added to the
        unit-scale layer-norm outputs feeding queries and keys, start at unit scale too."""
        std = self.config.init_std
        deep = std / math.sqrt(2 * self.config.n_layers)
        for name, p in self.named_parameters():
            with torch.no_grad():
                if name.endswith("bias"):
                    p.zero_()
                elif ".ln" in name or name.startswith("ln_"):
                    p.fill_(1.0)
                elif name == "pos_embed.weight" and self.config.positions == "shortformer":
                    p.normal_(0.0, 1.0, generator=generator)
                elif name.endswith(("o_proj.weight", "fc_out.weight")):
                    p.normal_(0.0, deep, generator=generator)
                else:
                    p.normal_(0.0, std, generator=generator)

    def faithlens_adapter(self) -> ZooAdapter:
        return ZooAdapter(self)

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _allowed(
        self, attention_mask: Tensor | None, b: int, t: int, past: int, device: torch.device
    ) -> Tensor | None:
        """Boolean ``[batch, 1, query, key]``: which keys each query may attend to."""
        s = past + t
        allowed: Tensor | None = None
        if attention_mask is not None:
            m = attention_mask
            if m.dim() != 2 or m.shape[0] != b:
                raise ShapeError(
                    f"attention_mask must be [batch={b}, positions], got {tuple(m.shape)}"
                )
            if m.shape[1] == t and past:
                m = torch.cat([m.new_ones(b, past), m], dim=1)
            if m.shape[1] != s:
                raise ShapeError(
                    f"attention_mask covers {m.shape[1]} positions but the keys are {s} "
                    f"({past} cached + {t} new)"
                )
            allowed = m.to(device=device).bool()[:, None, None, :]
        if self.config.causal:
            qpos = torch.arange(past, s, device=device)[:, None]
            kpos = torch.arange(s, device=device)[None, :]
            causal = (kpos <= qpos)[None, None]
            allowed = causal if allowed is None else allowed & causal
        return allowed

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        past_key_values: Any = None,
        use_cache: bool = False,
    ) -> ZooOutput:
        """Logits ``[batch, positions, d_out]`` for token ids ``[batch, positions]``.

        ``attention_mask`` (``[batch, positions]``, 1 = real token) masks padding out of the
        keys. ``past_key_values`` (causal models): a :class:`ZooCache` or a list of
        ``(keys, values)`` per layer for the positions before ``input_ids``.
        """
        if input_ids.dim() != 2:
            raise ShapeError(f"input_ids must be [batch, positions], got {tuple(input_ids.shape)}")
        cfg = self.config
        b, t = input_ids.shape
        cache: ZooCache | None = None
        if past_key_values is not None:
            if not cfg.causal:
                raise InputError("a bidirectional zoo model cannot take cached keys and values")
            cache = (
                past_key_values
                if isinstance(past_key_values, ZooCache)
                else ZooCache(list(past_key_values))
            )
        elif use_cache:
            if not cfg.causal:
                raise InputError("use_cache: a bidirectional zoo model has no key/value cache")
            cache = ZooCache()
        past = cache.get_seq_length() if cache is not None else 0
        if past + t > cfg.n_ctx:
            raise ShapeError(
                f"sequence of {past + t} positions is longer than this model's context "
                f"n_ctx={cfg.n_ctx}"
            )
        if int(input_ids.max()) >= cfg.d_vocab or int(input_ids.min()) < 0:
            raise InputError(
                f"token ids must be in 0..{cfg.d_vocab - 1}; got ids from {int(input_ids.min())} "
                f"to {int(input_ids.max())}"
            )
        x = self.embed(input_ids)
        pos = self.pos_embed(torch.arange(past, past + t, device=input_ids.device))[None]
        qk_pos: Tensor | None = None
        if cfg.positions == "learned":
            x = x + pos
        else:
            qk_pos = pos
        x = self.embed_drop(x)
        allowed = self._allowed(attention_mask, b, t, past, x.device)
        for block in self.blocks:
            x = block(x, qk_pos, allowed, cache)
        x = self.ln_final(x)
        logits = self.unembed(x)
        return ZooOutput(logits=logits, past_key_values=cache if use_cache or cache else None)


class ZooAdapter(HFAdapter):
    """The canonical sites of a :class:`ZooTransformer` (its :class:`Layout` is in
    ``faithlens.models.adapters.LAYOUTS['faithlens_zoo']``).

    Causal or bidirectional and with or without MLPs, as its config says; the key/value cache
    is the zoo's own :class:`ZooCache`.
    """

    def __init__(self, module: nn.Module) -> None:
        if not isinstance(module, ZooTransformer):
            raise InputError(f"ZooAdapter wraps a ZooTransformer, not {type(module).__name__}")
        super().__init__(module, LAYOUTS["faithlens_zoo"])
        self.zoo_config: ZooConfig = module.config
        self.is_causal = bool(module.config.causal)
        self.positions = module.config.positions
        self.d_out = int(module.config.d_out or 0)

    def make_kv_cache(self, kv: Sequence[tuple[Tensor, Tensor]]) -> Any:
        if not self.is_causal:
            raise InputError(
                "this zoo model is bidirectional: a run cannot resume from cached keys"
            )
        return ZooCache(list(kv))


__all__ = [
    "ZooAdapter",
    "ZooAttention",
    "ZooBlock",
    "ZooCache",
    "ZooMLP",
    "ZooOutput",
    "ZooTransformer",
]
