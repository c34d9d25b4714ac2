"""``ZooConfig``: the shape of a faithlens zoo transformer.

The config uses faithlens' own short names (``n_layers``, ``d_model``...) and also answers to the
Hugging Face attribute names (``num_hidden_layers``, ``hidden_size``, ``intermediate_size``...)
so that the same adapter machinery that serves Hugging Face models serves the zoo.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from ..errors import InputError

PositionKind = Literal["learned", "shortformer"]
Activation = Literal["relu", "gelu"]


@dataclass(frozen=True)
class ZooConfig:
    """Hyper-parameters of a :class:`~faithlens.zoo.ZooTransformer`.

    Args:
        n_layers: number of transformer blocks.
        n_heads: attention heads per block.
        d_model: residual stream width.
        d_vocab: number of input tokens.
        n_ctx: the longest sequence (size of the positional embedding).
        d_head: width of one head (default ``d_model // n_heads``).
        d_mlp: MLP hidden width; ``0`` makes an attention-only model (no MLP modules at all).
        d_out: width of the unembedding (default ``d_vocab``: a language model; ``2`` for a
            two-way classifier read at one position).
        causal: causal (left-to-right) attention, or bidirectional.
        positions: ``"learned"`` (absolute embedding added to the residual stream) or
            ``"shortformer"`` (added to the query and key inputs of every layer only, after the
            layer norm, as in Redwood's ``attn_2l`` models and TransformerLens).
        act: MLP activation, ``"relu"`` or ``"gelu"``.
        bias: biases in every linear map.
        ln_eps: layer-norm epsilon.
        dropout: dropout on the embedding output (training only; 0 by default).
        init_std: standard deviation of the normal initialisation of weights.
        pad_token_id: the padding token, if the model's data has one (informational: padding is
            masked by ``attention_mask``).
        norm: layer norms before attention, the MLP and the unembedding (``False``: the three
            norm modules are identities, as in tracr's compiled models).
    """

    n_layers: int
    n_heads: int
    d_model: int
    d_vocab: int
    n_ctx: int
    d_head: int | None = None
    d_mlp: int = 0
    d_out: int | None = None
    causal: bool = True
    positions: PositionKind = "learned"
    act: Activation = "relu"
    bias: bool = True
    ln_eps: float = 1e-5
    dropout: float = 0.0
    init_std: float = 0.02
    pad_token_id: int | None = None
    norm: bool = True

    model_type: ClassVar[str] = "faithlens_zoo"

    def __post_init__(self) -> None:
        for name in ("n_layers", "n_heads", "d_model", "d_vocab", "n_ctx"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise InputError(f"ZooConfig.{name} must be a positive int, got {v!r}")
        if self.d_head is None:
            if self.d_model % self.n_heads:
                raise InputError(
                    f"ZooConfig: d_model={self.d_model} is not divisible by n_heads="
                    f"{self.n_heads}; pass d_head explicitly"
                )
            object.__setattr__(self, "d_head", self.d_model // self.n_heads)
        elif self.d_head < 1:
            raise InputError(f"ZooConfig.d_head must be positive, got {self.d_head}")
        if self.d_mlp < 0:
            raise InputError(f"ZooConfig.d_mlp must be >= 0 (0: attention-only), got {self.d_mlp}")
        if self.d_out is None:
            object.__setattr__(self, "d_out", self.d_vocab)
        elif self.d_out < 1:
            raise InputError(f"ZooConfig.d_out must be positive, got {self.d_out}")
        if self.positions not in ("learned", "shortformer"):
            raise InputError(
                f"ZooConfig.positions must be 'learned' or 'shortformer', not {self.positions!r}"
            )
        if self.act not in ("relu", "gelu"):
            raise InputError(f"ZooConfig.act must be 'relu' or 'gelu', not {self.act!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise InputError(f"ZooConfig.dropout must be in [0, 1), got {self.dropout}")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.d_vocab:
            raise InputError(
                f"ZooConfig.pad_token_id={self.pad_token_id} is outside the vocabulary "
                f"0..{self.d_vocab - 1}"
            )

    # -- derived ---------------------------------------------------------------------------
    @property
    def attn_only(self) -> bool:
        return self.d_mlp == 0

    @property
    def head_width(self) -> int:
        assert self.d_head is not None
        return self.d_head

    # -- Hugging Face names (read by faithlens' adapters) --------------------------------------
    @property
    def num_hidden_layers(self) -> int:
        return self.n_layers

    @property
    def num_attention_heads(self) -> int:
        return self.n_heads

    @property
    def num_key_value_heads(self) -> int:
        return self.n_heads

    @property
    def hidden_size(self) -> int:
        return self.d_model

    @property
    def head_dim(self) -> int:
        return self.head_width

    @property
    def intermediate_size(self) -> int:
        return self.d_mlp

    @property
    def vocab_size(self) -> int:
        return self.d_vocab

    @property
    def max_position_embeddings(self) -> int:
        return self.n_ctx

    @property
    def is_decoder(self) -> bool:
        return self.causal

    # -- persistence ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ZooConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(
                f"unknown ZooConfig fields {unknown}; this faithlens knows {sorted(known)}"
            )
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> ZooConfig:
        return cls.from_dict(json.loads(text))

    def describe(self) -> str:
        """One line, e.g. ``3L 2H d56 mlp56 bidirectional learned-pos``."""
        mlp = "attn-only" if self.attn_only else f"mlp{self.d_mlp}"
        mlp += "" if self.norm else " no-norm"
        return (
            f"{self.n_layers}L {self.n_heads}H d{self.d_model} dh{self.d_head} {mlp} "
            f"{'causal' if self.causal else 'bidirectional'} {self.positions}-pos "
            f"ctx{self.n_ctx} vocab{self.d_vocab} out{self.d_out}"
        )
