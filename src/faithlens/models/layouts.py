"""Per-architecture :class:`Layout` records: where each canonical site lives in a Hugging Face
transformer's module tree (read by :class:`faithlens.models.adapters.HFAdapter`), the layouts that
depend on the config, the architectures refused with a reason, and the aliases."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class Layout:
    """Where things live in one transformer architecture (paths relative to the base model)."""

    arch: str
    base: str  # attribute holding the base model inside the *ForX wrapper
    layers: str
    embed: str  # token embedding module
    embed_out: str  # module whose output is resid_pre.0
    attn_out: str  # relative to a layer: output is the attention block's output (before residual)
    o_proj: str  # relative to a layer: input is the concatenated head outputs
    qkv: str  # 'separate' | 'gpt2' | 'neox'
    q: str  # module producing q (or the fused qkv)
    k: str
    v: str
    mlp_out: str  # relative to a layer; output is the MLP block's output
    mlp_post: str  # relative to a layer; input is the neuron activations
    attn_in: str | None
    mlp_in: str | None
    resid_mid: str | None  # relative to a layer; input is the residual after attention
    final_norm: str | None  # relative to the base model
    head: str | None  # relative to the top module (lm_head); 'a|b': the first that exists
    causal: bool = True
    conv1d: bool = False  # GPT-2 stores Linear weights transposed (Conv1D)
    mlp_in_proj: tuple[str, ...] = ()  # relative to a layer: the linear maps reading mlp_in
    # attn_in / mlp_in may end in ':in': the *input* of that module (a parallel block whose one
    # norm feeds both attention and MLP: each site is then what only its own block reads).
    # mlp_norm: the norm whose input is the residual the MLP reads (default: mlp_in's module).
    mlp_norm: str | None = None
    # post_norm: attention and MLP outputs are normalised before they are added to the residual
    # stream (Gemma 2/3): attn_out / mlp_out are the post-norm outputs, and heads (the output
    # projection's input) are not additive components of the residual stream.
    post_norm: bool = False
    kv_heads: int | None = None  # key/value heads, where the config does not say it directly


LAYOUTS: dict[str, Layout] = {
    "llama": Layout(
        arch="llama",
        base="model",
        layers="layers",
        embed="embed_tokens",
        embed_out="embed_tokens",
        attn_out="self_attn",
        o_proj="self_attn.o_proj",
        qkv="separate",
        q="self_attn.q_proj",
        k="self_attn.k_proj",
        v="self_attn.v_proj",
        mlp_out="mlp",
        mlp_post="mlp.down_proj",
        attn_in="input_layernorm",
        mlp_in="post_attention_layernorm",
        resid_mid="post_attention_layernorm",
        final_norm="norm",
        head="lm_head",
        mlp_in_proj=("mlp.gate_proj", "mlp.up_proj"),
    ),
    "gpt2": Layout(
        arch="gpt2",
        base="transformer",
        layers="h",
        embed="wte",
        embed_out="drop",
        attn_out="attn",
        o_proj="attn.c_proj",
        qkv="gpt2",
        q="attn.c_attn",
        k="attn.c_attn",
        v="attn.c_attn",
        mlp_out="mlp",
        mlp_post="mlp.c_proj",
        attn_in="ln_1",
        mlp_in="ln_2",
        resid_mid="ln_2",
        final_norm="ln_f",
        head="lm_head",
        conv1d=True,
        mlp_in_proj=("mlp.c_fc",),
    ),
    "gpt_neox": Layout(
        arch="gpt_neox",
        base="gpt_neox",
        layers="layers",
        embed="embed_in",
        embed_out="emb_dropout",
        attn_out="attention",
        o_proj="attention.dense",
        qkv="neox",
        q="attention.query_key_value",
        k="attention.query_key_value",
        v="attention.query_key_value",
        mlp_out="mlp",
        mlp_post="mlp.dense_4h_to_h",
        attn_in="input_layernorm",
        mlp_in="post_attention_layernorm",
        resid_mid=None,
        final_norm="final_layer_norm",
        head="lm_head|embed_out",  # transformers 5 renamed GPT-NeoX's embed_out to lm_head
        mlp_in_proj=("mlp.dense_h_to_4h",),
    ),
    "bert": Layout(
        arch="bert",
        base="bert",
        layers="encoder.layer",
        embed="embeddings.word_embeddings",
        embed_out="embeddings",
        attn_out="attention.output.dense",
        o_proj="attention.output.dense",
        qkv="separate",
        q="attention.self.query",
        k="attention.self.key",
        v="attention.self.value",
        mlp_out="output.dense",
        mlp_post="output.dense",
        attn_in=None,
        mlp_in=None,
        resid_mid="intermediate.dense",
        final_norm=None,
        head="cls.predictions.decoder",  # BertForMaskedLM's unembedding; absent in BertModel
        causal=False,
    ),
    # faithlens' own small transformer (faithlens.zoo). It may be causal or bidirectional and
    # attention-only (no MLP modules): its adapter (faithlens.zoo.model.ZooAdapter) takes both
    # from the model's config, and sites whose module is absent are simply not offered.
    "faithlens_zoo": Layout(
        arch="faithlens_zoo",
        base="",
        layers="blocks",
        embed="embed",
        embed_out="embed_drop",
        attn_out="attn",
        o_proj="attn.o_proj",
        qkv="separate",
        q="attn.q_proj",
        k="attn.k_proj",
        v="attn.v_proj",
        mlp_out="mlp",
        mlp_post="mlp.fc_out",
        attn_in="ln1",
        mlp_in="ln2",
        resid_mid="ln2",
        final_norm="ln_final",
        head="unembed",
        mlp_in_proj=("mlp.fc_in",),
    ),
}
_LLAMA = LAYOUTS["llama"]
# Gemma 1 is Llama's layout: the sqrt(d_model) embedding scale is inside its embedding module
# (GemmaTextScaledWordEmbedding), so the embedding's output is the residual layer 0 reads.
LAYOUTS["gemma"] = replace(_LLAMA, arch="gemma")
# Gemma 2 / 3: a norm before and after both attention and MLP. attn_out / mlp_out are what is
# added to the residual stream (after the post-norms); head.L.H is still the o_proj input.
LAYOUTS["gemma2"] = replace(
    _LLAMA,
    arch="gemma2",
    attn_out="post_attention_layernorm",
    mlp_out="post_feedforward_layernorm",
    mlp_in="pre_feedforward_layernorm",
    resid_mid="pre_feedforward_layernorm",
    post_norm=True,
)
LAYOUTS["gemma3_text"] = replace(LAYOUTS["gemma2"], arch="gemma3_text")
# Qwen3: Llama plus per-head q/k norms inside attention (q/k sites are the projection outputs,
# before the norms and the rotary embedding, as on every architecture).
LAYOUTS["qwen3"] = replace(_LLAMA, arch="qwen3")
# Phi-3: fused qkv_proj ([q heads | k heads | v heads]) and fused gate_up_proj.
LAYOUTS["phi3"] = replace(
    _LLAMA,
    arch="phi3",
    qkv="gpt2",
    q="self_attn.qkv_proj",
    k="self_attn.qkv_proj",
    v="self_attn.qkv_proj",
    mlp_in_proj=("mlp.gate_up_proj",),
)
# Llama's module tree under other names: OLMo (non-parametric norms), SmolLM3 (no-RoPE layers),
# StarCoder2 (a two-matrix MLP), StableLM (sequential; its parallel variant is in _stablelm).
LAYOUTS["olmo"] = replace(_LLAMA, arch="olmo")
LAYOUTS["smollm3"] = replace(_LLAMA, arch="smollm3")
LAYOUTS["starcoder2"] = replace(
    _LLAMA, arch="starcoder2", mlp_post="mlp.c_proj", mlp_in_proj=("mlp.c_fc",)
)
LAYOUTS["stablelm"] = replace(_LLAMA, arch="stablelm")
# GPT-J: parallel blocks reading one norm (ln_1): attn_in / mlp_in are the inputs of the
# attention and MLP modules, so patching one does not change what the other reads.
LAYOUTS["gptj"] = Layout(
    arch="gptj",
    base="transformer",
    layers="h",
    embed="wte",
    embed_out="drop",
    attn_out="attn",
    o_proj="attn.out_proj",
    qkv="separate",
    q="attn.q_proj",
    k="attn.k_proj",
    v="attn.v_proj",
    mlp_out="mlp",
    mlp_post="mlp.fc_out",
    attn_in="attn:in",
    mlp_in="mlp:in",
    resid_mid=None,
    final_norm="ln_f",
    head="lm_head",
    mlp_in_proj=("mlp.fc_in",),
    mlp_norm="ln_1",
)
# Falcon: fused query_key_value; the variant (parallel / sequential block, one or two norms,
# multi-query / grouped / full attention) is read from the config by _falcon below.
LAYOUTS["falcon"] = Layout(
    arch="falcon",
    base="transformer",
    layers="h",
    embed="word_embeddings",
    embed_out="word_embeddings",
    attn_out="self_attention",
    o_proj="self_attention.dense",
    qkv="neox",
    q="self_attention.query_key_value",
    k="self_attention.query_key_value",
    v="self_attention.query_key_value",
    mlp_out="mlp",
    mlp_post="mlp.dense_4h_to_h",
    attn_in="self_attention:in",
    mlp_in="mlp:in",
    resid_mid=None,
    final_norm="ln_f",
    head="lm_head",
    mlp_in_proj=("mlp.dense_h_to_4h",),
    mlp_norm="input_layernorm",
)


def _falcon(cfg: Any) -> Layout:
    """Falcon's variants. Fused q/k/v: with ``new_decoder_architecture`` (grouped) or without
    multi-query, each key/value group is ``[its query heads | key | value]`` (the "neox"
    interleaving, generalised to groups); multi-query is ``[query heads | key | value]``."""
    lo = LAYOUTS["falcon"]
    new_arch = bool(getattr(cfg, "new_decoder_architecture", False))
    multi_query = bool(getattr(cfg, "multi_query", False))
    n_heads = int(cfg.num_attention_heads)
    if new_arch:
        kv = int(getattr(cfg, "num_kv_heads", None) or n_heads)
        lo = replace(lo, kv_heads=kv)
        # the decoder layer sets num_ln_in_parallel_attn to 2 when it is None
        if getattr(cfg, "num_ln_in_parallel_attn", None) in (None, 2):
            lo = replace(lo, attn_in="ln_attn", mlp_in="ln_mlp", mlp_norm=None)
        return lo
    lo = replace(lo, kv_heads=1, qkv="gpt2") if multi_query else replace(lo, kv_heads=n_heads)
    if not getattr(cfg, "parallel_attn", True):
        lo = replace(
            lo,
            attn_in="input_layernorm",
            mlp_in="post_attention_layernorm",
            resid_mid="post_attention_layernorm",
            mlp_norm=None,
        )
    return lo


def _stablelm(cfg: Any) -> Layout:
    """StableLM with ``use_parallel_residual``: attention and MLP read one norm's output."""
    lo = LAYOUTS["stablelm"]
    if getattr(cfg, "use_parallel_residual", False):
        return replace(
            lo,
            attn_in="self_attn:in",
            mlp_in="mlp:in",
            resid_mid=None,
            mlp_norm="input_layernorm",
        )
    return lo


def _gemma3_text(cfg: Any) -> Layout:
    lo = LAYOUTS["gemma3_text"]
    if getattr(cfg, "use_bidirectional_attention", False):
        return replace(lo, causal=False)
    return lo


# Mixture-of-experts decoders (faithlens.models.moe.MoEAdapter): Llama's attention and norms;
# the MLP block is a router plus routed experts (Qwen-MoE: and a shared expert). mlp_post and
# the MLP's input projections are those of the dense layers some of these models also have.
LAYOUTS["mixtral"] = replace(_LLAMA, arch="mixtral")
LAYOUTS["qwen2_moe"] = replace(_LLAMA, arch="qwen2_moe")
LAYOUTS["qwen3_moe"] = replace(_LLAMA, arch="qwen3_moe")
# OPT (faithlens.models.opt.OPTAdapter): the MLP sites are views of flattened tensors.
LAYOUTS["opt"] = Layout(
    arch="opt",
    base="model.decoder",
    layers="layers",
    embed="embed_tokens",
    embed_out="embed_tokens",  # not resid_pre.0 (positions are added outside): see OPTAdapter
    attn_out="self_attn",
    o_proj="self_attn.out_proj",
    qkv="separate",
    q="self_attn.q_proj",
    k="self_attn.k_proj",
    v="self_attn.v_proj",
    mlp_out="fc2",
    mlp_post="fc2",
    attn_in="self_attn_layer_norm",
    mlp_in="final_layer_norm",
    resid_mid="final_layer_norm",
    final_norm="final_layer_norm",
    head="lm_head",
    mlp_in_proj=("fc1",),
)


# Architectures with an adapter of their own (an HFAdapter subclass): its module in models/.
OWN_ADAPTERS = {"mixtral": "moe", "qwen2_moe": "moe", "qwen3_moe": "moe", "opt": "opt"}

# Layouts that depend on the config (model_type -> the layout of this model).
VARIANTS: dict[str, Callable[[Any], Layout]] = {
    "falcon": _falcon,
    "gemma3_text": _gemma3_text,
    "stablelm": _stablelm,
}

# Architectures whose adapter is not an HFAdapter over a Layout alone (model_type -> a factory
# of the adapter): the vision models, registered by faithlens.models.vision.
FACTORIES: dict[str, Callable[[Any], Any]] = {}


def has_sliding_layers(config: Any) -> bool:
    """Whether Hugging Face's cache for this config has sliding-window layers."""
    try:
        from transformers.cache_utils import get_layer_types_and_kwargs

        text = config.get_text_config(decoder=True)
        types, _ = get_layer_types_and_kwargs(text)
    except Exception:  # an older transformers, or a config without layer structure
        types = getattr(config, "layer_types", None) or []
    return any("sliding" in str(t) or "chunked" in str(t) for t in types)


# Architectures refused with a reason (not merely unknown).
REFUSED = {
    "granite": (
        "Granite scales the embeddings and every residual update by multipliers outside any "
        "module, so neither resid_pre.0 nor attn_out / mlp_out would be what the residual "
        "stream receives"
    ),
}

# Architectures that share a layout with a supported one.
ALIASES = {"mistral": "llama", "qwen2": "llama", "smollm": "llama", "pythia": "gpt_neox"}


__all__ = [
    "ALIASES",
    "FACTORIES",
    "LAYOUTS",
    "OWN_ADAPTERS",
    "REFUSED",
    "VARIANTS",
    "Layout",
    "has_sliding_layers",
]
