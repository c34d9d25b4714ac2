"""Encoder-decoder transformers (BART): the encoder's and the decoder's sites, self- and
cross-attention heads.

Site names carry their stack: ``enc.resid_pre.L``, ``enc.head.L.H``, ``dec.attn_out.L``,
``dec.mlp_post.L``, ... (the canonical kinds of a decoder-only model, one set per stack), plus the
decoder's cross-attention: ``dec.cross_head.L.H`` (head H's output, the cross-attention output
projection's input), ``dec.cross_q.L.H`` and ``dec.cross_k/cross_v.L.H`` (over the *encoder's*
positions), and ``dec.cross_attn_out.L``; ``logits`` is the model's output (BART adds its
``final_logits_bias`` outside any module). BART is post-LN, like BERT: ``attn_out`` and
``mlp_out`` are the blocks' outputs before the residual sum and its norm, ``resid_mid`` what the
MLP reads (after the last attention block's norm).

The decoder's tokens are ``decoder_input_ids`` in the inputs' keyword arguments (a mapping with
``input_ids``, ``attention_mask``, ``decoder_input_ids`` and optionally
``decoder_attention_mask``); without them BART shifts the input ids right itself. Decoder
sites' positions are decoder positions. In scope: sites, exact parity, ablation, caches,
patching (``fl.run``, ``fl.patch``). Not in scope: resuming a run at a layer or position
(``supports_resume`` is False), ``stop_at`` (the layers of the two stacks are not ordered for
it) and path-level methods (a :class:`~faithlens.graph.TransformerGraph` needs a pre-LN decoder's
residual stream, and has no cross-attention edges).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import InputError
from .adapters import Adapter
from .sites import HookPoint, SiteInfo

#: The Inputs keyword holding the decoder's token ids (the decoder sites' position axis).
DECODER_IDS = "decoder_input_ids"


class EncDecAdapter(Adapter):
    """BART (``BartForConditionalGeneration`` / ``BartModel``)."""

    arch = "bart"
    is_causal = False

    def __init__(self, module: nn.Module) -> None:
        super().__init__(module)
        cfg: Any = module.config
        if getattr(cfg, "normalize_before", False) or getattr(cfg, "add_final_layer_norm", False):
            raise InputError(
                "this BART-family model normalises before its blocks (mBART's layout); faithlens "
                "gives exact sites on BART's post-LN layout only. Use fl.wrap(model, sites=...)"
            )
        self.config = cfg
        self.n_layers = int(cfg.encoder_layers)
        self.n_decoder_layers = int(cfg.decoder_layers)
        self.n_heads = self.n_kv_heads = int(cfg.encoder_attention_heads)
        self.n_decoder_heads = int(cfg.decoder_attention_heads)
        self.d_model = int(cfg.d_model)
        self.d_head = self.d_model // self.n_heads
        self.d_mlp = int(cfg.encoder_ffn_dim)
        self.d_vocab = int(cfg.vocab_size)
        names = dict(module.named_modules())
        self.prefix = "model." if "model.encoder" in names else ""
        if f"{self.prefix}encoder.layers" not in names:
            raise InputError(f"this {type(module).__name__} has no encoder.layers")
        self._build("enc", "encoder", self.n_layers, self.n_heads, int(cfg.encoder_ffn_dim))
        self._build(
            "dec", "decoder", self.n_decoder_layers, self.n_decoder_heads, int(cfg.decoder_ffn_dim)
        )
        if "lm_head" in names:
            # the model's output: lm_head's plus final_logits_bias, added outside any module
            self._add("logits", "logits", HookPoint("", "out", 0), self.d_vocab, None)

    def _add(
        self, name: str, kind: str, hook: HookPoint, width: int | None, seq: str | None, **kw: Any
    ) -> None:
        self._sites[name] = SiteInfo(name, kind, hook, width, seq_key=seq, **kw)

    def _build(self, s: str, stack: str, n_layers: int, n_heads: int, d_mlp: int) -> None:
        d, dh = self.d_model, self.d_model // n_heads
        seq = DECODER_IDS if s == "dec" else None
        add = self._add
        for L in range(n_layers):
            lay = f"{self.prefix}{stack}.layers.{L}"
            add(f"{s}.resid_pre.{L}", "resid_pre", HookPoint(lay, "in", 0, "hidden_states"), d, seq)
            attns = [("", "self_attn", seq)]
            if s == "dec":
                attns.append(("cross_", "encoder_attn", None))  # keys, values: encoder positions
            for pre, mod, kv_seq in attns:
                out = f"{lay}.{mod}"
                add(f"{s}.{pre}attn_out.{L}", f"{pre}attn_out", HookPoint(out, "out", 0), d, seq)
                for H in range(n_heads):
                    kw: dict[str, Any] = {"start": H * dh, "head": H, "full": n_heads * dh}
                    hp = HookPoint(f"{out}.out_proj", "in", 0)
                    add(f"{s}.{pre}head.{L}.{H}", f"{pre}head", hp, dh, seq, **kw)
                    for w in "qkv":
                        hp = HookPoint(f"{out}.{w}_proj", "out", 0)
                        at = seq if w == "q" else kv_seq
                        add(f"{s}.{pre}{w}.{L}.{H}", f"{pre}{w}", hp, dh, at, **kw)
            add(f"{s}.resid_mid.{L}", "resid_mid", HookPoint(f"{lay}.fc1", "in", 0), d, seq)
            add(f"{s}.mlp_post.{L}", "mlp_post", HookPoint(f"{lay}.fc2", "in", 0), d_mlp, seq)
            add(f"{s}.mlp_out.{L}", "mlp_out", HookPoint(f"{lay}.fc2", "out", 0), d, seq)
            add(f"{s}.resid_post.{L}", "resid_post", HookPoint(lay, "out", 0), d, seq)


__all__ = ["DECODER_IDS", "EncDecAdapter"]
