"""Architectures without a hand-written faithlens layout, built tiny from a config: what layout
inference (``faithlens.models.infer``) makes of each. ``docs/models.md``'s section "Inferred
architectures" is generated from :func:`results` (``python -m tests.helpers.models_coverage``),
and ``tests/models/test_infer.py`` checks that the committed table is what inference gives now.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch

from tests.helpers.builders import VOCAB

# Small enough for a CPU in well under a second each; every config takes these names (directly
# or through its attribute map).
TINY: dict[str, Any] = {
    "vocab_size": VOCAB,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 64,
    "head_dim": 8,
    "max_position_embeddings": 64,
    "pad_token_id": 0,
    "bos_token_id": 1,
    "eos_token_id": 2,
}

# model_type -> config overrides (on top of TINY).
ARCHS: dict[str, dict[str, Any]] = {
    "apertus": {},
    "arcee": {},
    "biogpt": {},
    "bitnet": {},
    "bloom": {},
    "codegen": {"rotary_dim": 4},
    "cohere": {},
    "ctrl": {},
    "cwm": {},
    "diffllama": {},
    "doge": {},
    "exaone4": {},
    "glm": {},
    "glm4": {},
    "gpt_bigcode": {},
    "gpt_neo": {"attention_types": [[["global", "local"], 1]]},
    "gpt_neox_japanese": {},
    "hyperclovax": {},
    "internlm3": {},
    "jais2": {},
    "helium": {},
    "hunyuan_v1_dense": {},
    "ministral": {},
    "ministral3": {},
    "modernbert-decoder": {},
    "mpt": {},
    "nemotron": {},
    "olmo2": {},
    "olmo3": {},
    "openai-gpt": {},
    "persimmon": {},
    "phi": {},
    "qwen2_moe": {},
    "roberta": {},
    "seed_oss": {},
    "vaultgemma": {},
    "xglm": {},
}


@dataclass(frozen=True)
class Outcome:
    """What inference made of one architecture."""

    model_type: str
    verified: bool
    detail: str  # the layout's shape when verified, else the part that failed and why


def build(model_type: str) -> Any:
    """A tiny randomly initialised model of ``model_type`` (no download)."""
    import transformers

    torch.manual_seed(0)
    cfg = transformers.AutoConfig.for_model(model_type, **{**TINY, **ARCHS[model_type]})
    try:
        return transformers.AutoModelForCausalLM.from_config(cfg).eval()
    except ValueError:  # an encoder without a causal-LM class
        return transformers.AutoModelForMaskedLM.from_config(cfg).eval()


def describe(layout: Any) -> str:
    """A layout in a few words: blocks, q/k/v storage, norms."""
    block = "parallel" if layout.resid_mid is None else "sequential"
    if layout.post_norm:
        norms = "post-norms"
    elif layout.attn_in:
        norms = "pre-norms"
    else:
        norms = "post-LN" if layout.resid_mid else "no norms"
    qkv = {"separate": "q/k/v", "gpt2": "fused qkv (q, k, v blocks)", "neox": "fused qkv per head"}
    return f"{block}, {qkv[layout.qkv]}, {norms}"


def outcome(model_type: str) -> Outcome:
    from faithlens.models.infer import InferenceError, infer_adapter

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build(model_type)
    try:
        adapter = infer_adapter(model)
    except InferenceError as e:
        return Outcome(model_type, False, f"{e.part}: {e.reason}")
    return Outcome(model_type, True, describe(adapter.layout))


def results() -> list[Outcome]:
    return [outcome(m) for m in sorted(ARCHS)]


def render(outcomes: list[Outcome]) -> list[str]:
    """The "Inferred architectures" section of docs/models.md."""
    ok = [o.model_type for o in outcomes if o.verified]
    lines = [
        "## Inferred architectures",
        "",
        "A Hugging Face model whose `model_type` has no hand-written layout gets one inferred",
        "from its module tree (`faithlens.models.infer`): the block list, the token embedding,",
        "the q/k/v (separate or fused) and output projections, the MLP projections, the norms,",
        "the final norm and `lm_head`, with parallel or sequential blocks and post-norms told",
        "apart by which tensors a traced forward pass shows equal. `fl.load` / `fl.wrap` verify it",
        "on a small random input before use: `resid_pre` equals `output_hidden_states` and the",
        "`logits` site the logits (exactly); `resid_post = resid_pre + attn_out + mlp_out` (and",
        "`resid_mid = resid_pre + attn_out`) at every layer; the head concatenation point",
        "(zeroing a value head zeroes exactly the heads that read it, and `attn_out` is the sum",
        "of the per-head outputs); resuming at a layer reproduces the logits. If a check fails,",
        "the warning names the part that could not be inferred and the model gets raw",
        '`module:PATH` sites only (`infer="strict"` refuses instead, `infer="off"` refuses any',
        "unknown `model_type`). Post-LN blocks (BERT, GPT-1) are recognised too: there the",
        "check is `resid_mid = norm1(resid_pre + attn_out)`, `resid_post = norm2(resid_mid +",
        "mlp_out)`. Every family in the table above is also inferred, with its model_type",
        "ignored, to exactly the same sites and widths (`tests/models/test_infer.py`), except",
        "those with an adapter of their own (the mixture-of-experts rows and OPT), where",
        "inference names the part it cannot reach. Encoder-decoders are not inferred.",
        "",
        f"Verified here ({len(ok)} of {len(outcomes)} tried): "
        + ", ".join(f"`{m}`" for m in ok)
        + ".",
        "",
        "| model_type | inferred | layout, or the part that could not be inferred |",
        "|---|---|---|",
    ]
    for o in outcomes:
        detail = o.detail.replace("|", "\\|")
        lines.append(f"| `{o.model_type}` | {'verified' if o.verified else 'no'} | {detail} |")
    return [*lines, ""]


if __name__ == "__main__":
    for m in ARCHS:
        print(outcome(m), flush=True)
