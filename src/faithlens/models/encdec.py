"""Encoder-decoder transformers (BART, T5): the encoder's and the decoder's sites, self- and
cross-attention heads.

Site names carry their stack: ``enc.resid_pre.L``, ``enc.head.L.H``, ``dec.attn_out.L``,
``dec.mlp_post.L``, ... (the canonical kinds of a decoder-only model, one set per stack), plus the
decoder's cross-attention: ``dec.cross_head.L.H`` (head H's output, the cross-attention output
projection's input), ``dec.cross_q.L.H`` and ``dec.cross_k/cross_v.L.H`` (over the *encoder's*
positions), ``dec.cross_attn_out.L`` and (pre-norm T5) ``dec.cross_attn_in.L``; ``logits`` is the
model's output (BART adds its ``final_logits_bias`` outside any module). BART is post-LN, like
BERT: ``attn_out`` and ``mlp_out`` are the blocks' outputs before the residual sum and its norm,
``resid_mid`` what the MLP reads (after the last attention block's norm). T5 is pre-norm: each
stack's residual stream is the sum of its components' outputs (``enc.ln_final`` /
``dec.ln_final``: after the stacks' final norms).

The decoder's tokens are ``decoder_input_ids`` in the inputs' keyword arguments (a mapping with
``input_ids``, ``attention_mask``, ``decoder_input_ids`` and optionally
``decoder_attention_mask``; BART without them shifts the input ids right itself, T5 needs them).
Decoder sites' positions are decoder positions (``SiteInfo.seq_key``). In scope: sites, exact
parity, ablation, caches, patching (``fl.run``, ``fl.patch``). Refused with the reason: resuming
a run (``supports_resume`` is False), ``stop_at`` (the two stacks' sites have no single order,
``ordered`` is False) and path-level methods (a :class:`~faithlens.graph.TransformerGraph` has no
cross-attention edges).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import InputError
from .adapters import Adapter
from .sites import HookPoint, SiteInfo

#: The Inputs keyword holding the decoder's token ids (the decoder sites' position axis).
DECODER_IDS = "decoder_input_ids"


@dataclass(frozen=True)
class EncDecLayout:
    """Where things live in one encoder-decoder family (paths relative to a layer, except the
    stacks' layer lists and final norms; ``{ff}`` is the index of a layer's feed-forward part)."""

    arch: str
    layers: tuple[str, str]  # the encoder's and the decoder's layer lists
    self_attn: str
    cross_attn: str
    proj: tuple[str, str, str, str]  # q, k, v and output projections inside an attention
    resid_mid: str  # the module whose input is what the MLP reads from the residual stream
    mlp_in: str | None  # pre-norm: the norm whose output the MLP reads
    mlp_post: str  # the MLP's output projection (its input: the neurons)
    mlp_out: str  # the module whose output is the MLP's
    attn_norm: str | None = None  # pre-norm: the norms before self- and cross-attention
    cross_norm: str | None = None
    final_norm: str | None = None  # relative to a stack
    ff: tuple[int, int] = (0, 0)  # {ff}: the feed-forward part's index, encoder and decoder
    post_ln: bool = False


ENCDEC: dict[str, EncDecLayout] = {
    # post-LN: attn_out / mlp_out are the blocks' outputs before the residual sum and its norm
    "bart": EncDecLayout(
        arch="bart",
        layers=("encoder.layers", "decoder.layers"),
        self_attn="self_attn",
        cross_attn="encoder_attn",
        proj=("q_proj", "k_proj", "v_proj", "out_proj"),
        resid_mid="fc1",
        mlp_in=None,
        mlp_post="fc2",
        mlp_out="fc2",
        post_ln=True,
    ),
    # pre-norm (RMS): each block is layer.i = [norm, sublayer] added to the residual stream
    "t5": EncDecLayout(
        arch="t5",
        layers=("encoder.block", "decoder.block"),
        self_attn="layer.0.SelfAttention",
        cross_attn="layer.1.EncDecAttention",
        proj=("q", "k", "v", "o"),
        resid_mid="layer.{ff}.layer_norm",
        mlp_in="layer.{ff}.layer_norm",
        mlp_post="layer.{ff}.DenseReluDense.wo",
        mlp_out="layer.{ff}.DenseReluDense",
        attn_norm="layer.0.layer_norm",
        cross_norm="layer.1.layer_norm",
        final_norm="final_layer_norm",
        ff=(1, 2),
    ),
}


def _cfg(cfg: Any, *names: str) -> int:
    for n in names:
        v = getattr(cfg, n, None)
        if v is not None:
            return int(v)
    raise InputError(f"this {type(cfg).__name__} has none of {names}")


class EncDecAdapter(Adapter):
    """BART and T5 (``*ForConditionalGeneration`` or the bare ``*Model``)."""

    is_causal = False
    ordered = False

    def __init__(self, module: nn.Module, layout: EncDecLayout) -> None:
        super().__init__(module)
        cfg: Any = module.config
        if getattr(cfg, "normalize_before", False) or getattr(cfg, "add_final_layer_norm", False):
            raise InputError(
                "this BART-family model normalises before its blocks (mBART's layout); faithlens "
                "gives exact sites on BART's post-LN layout only. Use fl.wrap(model, sites=...)"
            )
        self.layout, self.arch, self.config = layout, layout.arch, cfg
        self.n_layers = _cfg(cfg, "encoder_layers", "num_layers")
        self.n_decoder_layers = _cfg(cfg, "decoder_layers", "num_decoder_layers", "num_layers")
        self.n_heads = self.n_kv_heads = _cfg(cfg, "encoder_attention_heads", "num_heads")
        self.n_decoder_heads = _cfg(cfg, "decoder_attention_heads", "num_heads")
        self.d_model = _cfg(cfg, "d_model")
        self.d_head = _cfg(cfg, "d_kv") if layout.arch == "t5" else self.d_model // self.n_heads
        self.d_mlp = _cfg(cfg, "encoder_ffn_dim", "d_ff")
        self.d_vocab = _cfg(cfg, "vocab_size")
        names = dict(module.named_modules())
        self._names = frozenset(names)
        self.prefix = "model." if "model.encoder" in names else ""
        if f"{self.prefix}{layout.layers[0]}" not in names:
            raise InputError(f"this {type(module).__name__} has no {layout.layers[0]}")
        self._build("enc", 0, self.n_layers, self.n_heads, self.d_mlp)
        dec_mlp = _cfg(cfg, "decoder_ffn_dim", "d_ff")
        self._build("dec", 1, self.n_decoder_layers, self.n_decoder_heads, dec_mlp)
        if "lm_head" in names:
            # the model's output (BART adds final_logits_bias outside any module)
            self._add("logits", "logits", HookPoint("", "out", 0), self.d_vocab, DECODER_IDS)

    def _add(
        self, name: str, kind: str, hook: HookPoint, width: int | None, seq: str | None, **kw: Any
    ) -> None:
        self._sites[name] = SiteInfo(name, kind, hook, width, seq_key=seq, **kw)

    def _build(self, s: str, i: int, n_layers: int, n_heads: int, d_mlp: int) -> None:
        lo, d, dh, add = self.layout, self.d_model, self.d_head, self._add
        seq = DECODER_IDS if s == "dec" else None
        stack = f"{self.prefix}{lo.layers[i]}"
        for L in range(n_layers):
            lay = f"{stack}.{L}"

            def at(rel: str, lay: str = lay) -> str:
                return f"{lay}.{rel.format(ff=lo.ff[i])}"

            add(f"{s}.resid_pre.{L}", "resid_pre", HookPoint(lay, "in", 0, "hidden_states"), d, seq)
            attns = [("", lo.self_attn, lo.attn_norm, seq)]
            if s == "dec":  # cross-attention: keys and values over the encoder's positions
                attns.append(("cross_", lo.cross_attn, lo.cross_norm, None))
            for pre, mod, norm, kv_seq in attns:
                if norm is not None:
                    add(f"{s}.{pre}attn_in.{L}", f"{pre}attn_in", HookPoint(at(norm)), d, seq)
                add(f"{s}.{pre}attn_out.{L}", f"{pre}attn_out", HookPoint(at(mod)), d, seq)
                q, k, v, o = (f"{at(mod)}.{p}" for p in lo.proj)
                for H in range(n_heads):
                    kw: dict[str, Any] = {"start": H * dh, "head": H, "full": n_heads * dh}
                    add(f"{s}.{pre}head.{L}.{H}", f"{pre}head", HookPoint(o, "in"), dh, seq, **kw)
                    for w, path in (("q", q), ("k", k), ("v", v)):
                        where = seq if w == "q" else kv_seq
                        add(f"{s}.{pre}{w}.{L}.{H}", f"{pre}{w}", HookPoint(path), dh, where, **kw)
            add(f"{s}.resid_mid.{L}", "resid_mid", HookPoint(at(lo.resid_mid), "in"), d, seq)
            if lo.mlp_in is not None:
                add(f"{s}.mlp_in.{L}", "mlp_in", HookPoint(at(lo.mlp_in)), d, seq)
            add(f"{s}.mlp_post.{L}", "mlp_post", HookPoint(at(lo.mlp_post), "in"), d_mlp, seq)
            add(f"{s}.mlp_out.{L}", "mlp_out", HookPoint(at(lo.mlp_out)), d, seq)
            add(f"{s}.resid_post.{L}", "resid_post", HookPoint(lay, "out", 0), d, seq)
        if lo.final_norm is not None:
            final = HookPoint(f"{self.prefix}{lo.layers[i].split('.')[0]}.{lo.final_norm}")
            add(f"{s}.ln_final", "ln_final", final, d, seq)


__all__ = ["DECODER_IDS", "ENCDEC", "EncDecAdapter", "EncDecLayout"]
