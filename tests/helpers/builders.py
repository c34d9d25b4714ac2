"""Tiny random-config models of every supported architecture, one builder function each.

``BUILDERS`` maps an architecture name (a suffix after "-" distinguishes variants of one
architecture) to its builder; ``tests/conftest.py`` makes fixtures of them (``tiny_hf``,
``tiny_causal``, ``tiny_llama``, ``tiny_gpt2``), and tests that need a fresh model, or one the
fixtures do not give, call a builder directly. Each builder seeds torch, so a build is the same
model every time.
"""

from __future__ import annotations

import torch

VOCAB = 97


def gpt2(**overrides):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    kw = {"n_layer": 3, "n_head": 4, "n_embd": 32, **overrides}
    cfg = GPT2Config(
        vocab_size=VOCAB,
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
        **kw,
    )
    return GPT2LMHeadModel(cfg).eval()


def llama(**overrides):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    kw = {"num_hidden_layers": 3, "num_attention_heads": 6, "num_key_value_heads": 2}
    kw |= {"hidden_size": 48, "intermediate_size": 80, **overrides}
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        **kw,
    )
    return LlamaForCausalLM(cfg).eval()


def neox(**overrides):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(2)
    kw = {"num_hidden_layers": 3, "num_attention_heads": 4, "hidden_size": 32, **overrides}
    cfg = GPTNeoXConfig(
        intermediate_size=64,
        vocab_size=VOCAB,
        **kw,
        rotary_pct=0.5,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPTNeoXForCausalLM(cfg).eval()


def bert():
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(3)
    cfg = BertConfig(
        num_hidden_layers=3,
        num_attention_heads=4,
        hidden_size=32,
        intermediate_size=64,
        vocab_size=VOCAB,
        max_position_embeddings=64,
    )
    return BertForMaskedLM(cfg).eval()


def zoo(**kw):
    from faithlens.zoo import ZooConfig, ZooTransformer

    kw = {"n_layers": 3, "n_heads": 4, "d_model": 32, "d_vocab": VOCAB, "n_ctx": 64, **kw}
    cfg = ZooConfig(init_std=0.2, **kw)
    model = ZooTransformer(cfg)
    model.reset_parameters(generator=torch.Generator().manual_seed(4))
    return model.eval()


def zoo_mlp():
    """faithlens' zoo transformer: bidirectional, MLPs, learned positions."""
    return zoo(d_mlp=48, causal=False, positions="learned")


def zoo_attn_only():
    """faithlens' zoo transformer: causal, attention-only, shortformer positions."""
    return zoo(d_mlp=0, causal=True, positions="shortformer")


# Keys are architecture names; a suffix after "-" distinguishes variants of one architecture.
BUILDERS = {
    "gpt2": gpt2,
    "llama": llama,
    "gpt_neox": neox,
    "bert": bert,
    "faithlens_zoo": zoo_mlp,
    "faithlens_zoo-attn_only": zoo_attn_only,
}

# Smaller models of the same architectures, for brute-force references that measure every edge
# or node from scratch (their cost grows with the square of the components): the shared sizes
# above cost minutes there. Grouped-query attention (Llama) and parallel blocks (GPT-NeoX) kept.
SMALL_BUILDERS = {
    "gpt2": lambda: gpt2(n_layer=2, n_head=2),
    "llama": lambda: llama(
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, hidden_size=32
    ),
    "gpt_neox": lambda: neox(num_hidden_layers=2, num_attention_heads=2),
    "faithlens_zoo": lambda: zoo(d_mlp=48, causal=False, positions="learned", n_heads=2),
    "faithlens_zoo-attn_only": lambda: zoo(
        d_mlp=0, causal=True, positions="shortformer", n_heads=2
    ),
}


__all__ = [
    "BUILDERS",
    "SMALL_BUILDERS",
    "VOCAB",
    "bert",
    "gpt2",
    "llama",
    "neox",
    "zoo",
    "zoo_attn_only",
    "zoo_mlp",
]
