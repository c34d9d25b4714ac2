"""A tiny Llama with a planted direction: ground truth for every representation method.

:func:`planted_model` builds a 2-layer Hugging Face ``LlamaForCausalLM`` (random weights, then
a few planted ones) and a word-level tokenizer over a small vocabulary:

- two *mode* words, ``truthful`` and ``deceptive``, whose embeddings differ only along a marker
  direction ``m`` (``+a m`` / ``-a m``);
- in layer 1's MLP, two planted neurons read ``m`` and write the planted direction ``u``:
  ``+c u`` at a ``truthful`` token, ``-c u`` at a ``deceptive`` one (nothing elsewhere). So ``u``
  is present from ``resid_mid.1`` on, at the mode token, and **mlp_out.1 writes it**;
- the unembedding reads ``u``: ``W_U[yes] = k u``, ``W_U[no] = -k u``, and every other row is
  orthogonal to ``u``. After a ``truthful`` token the model says ``yes``, after ``deceptive``
  ``no`` (the behaviour); the logit lens of ``u`` puts its mass on ``yes`` (readable);
- a *decoy* direction ``w``: the words ``sunny`` and ``rainy`` differ only along ``w`` (``+-b w``)
  and nothing reads ``w``. It is perfectly readable from contrast pairs, but steering along it or
  ablating it does nothing, and its logit lens is flat.

Every other token's embedding lies in the orthogonal complement of ``u``, ``w`` and ``m``. The
random layers (Hugging Face initialisation, std 0.02) add small noise. With default settings the
margin ``log p(yes) - log p(no)`` after ``truthful`` is about +7 nats, after ``deceptive`` about
-7, and about 0 after a filler word. Nothing here is trained: it builds in well under a second.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from ..models.model import Model, wrap
from .behaviour import Behaviour
from .data import ContrastPairs

POSITIVE, NEGATIVE = "truthful", "deceptive"
DECOY_POS, DECOY_NEG = "sunny", "rainy"
YES, NO = "yes", "no"
N_FILLER = 16


@dataclass(frozen=True, eq=False)
class PlantedModel:
    """The planted model and its ground truth (see the module docstring)."""

    model: Model
    direction: Tensor  # u: the planted, causal, readable direction (unit)
    decoy: Tensor  # w: readable from pairs, used by nothing (unit)
    marker: Tensor  # m: what layer 1's MLP reads to write u (unit)
    writer: str  # the site that writes u: "mlp_out.1"
    layer: int  # the first layer whose output holds u: 1
    seed: int

    @property
    def fillers(self) -> list[str]:
        return [f"w{i}" for i in range(N_FILLER)]

    def _prefixes(self, n: int, seed: int, length: tuple[int, int] = (2, 6)) -> list[str]:
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(n):
            k = int(rng.integers(length[0], length[1] + 1))
            out.append(" ".join(rng.choice(self.fillers, k).tolist()))
        return out

    def pairs(self, n: int = 64, seed: int = 0) -> ContrastPairs:
        """``n`` pairs of random filler prefixes ending in ``truthful`` vs ``deceptive``."""
        pre = self._prefixes(n, seed)
        return ContrastPairs(
            tuple(f"{p} {POSITIVE}" for p in pre),
            tuple(f"{p} {NEGATIVE}" for p in pre),
            concept=POSITIVE,
            name="planted",
        )

    def decoy_pairs(self, n: int = 64, seed: int = 0) -> ContrastPairs:
        """``n`` pairs ending in ``sunny`` vs ``rainy`` (they differ only along the decoy)."""
        pre = self._prefixes(n, seed + 1)
        return ContrastPairs(
            tuple(f"{p} {DECOY_POS}" for p in pre),
            tuple(f"{p} {DECOY_NEG}" for p in pre),
            concept=DECOY_POS,
            name="decoy",
        )

    def behaviour(self, n: int = 32, seed: int = 0, mode: str = POSITIVE) -> Behaviour:
        """Prompts ending in ``mode``; the positive continuation is ``yes``, the negative ``no``."""
        if mode not in (POSITIVE, NEGATIVE):
            raise InputError(f"mode must be {POSITIVE!r} or {NEGATIVE!r}, not {mode!r}")
        pre = self._prefixes(n, seed + 2)
        return Behaviour(
            prompts=tuple(f"{p} {mode}" for p in pre),
            positive=tuple(f" {YES}" for _ in pre),
            negative=tuple(f" {NO}" for _ in pre),
            name="says yes",
        )

    def natural_prompts(self, n: int = 64, seed: int = 0) -> list[str]:
        """Prompts of every kind (mode words, decoy words, fillers only), for on-distribution
        references."""
        pre = self._prefixes(n, seed + 3)
        ends = [POSITIVE, NEGATIVE, DECOY_POS, DECOY_NEG, *self.fillers[:4]]
        rng = np.random.default_rng(seed + 4)
        return [f"{p} {ends[int(rng.integers(len(ends)))]}" for p in pre]

    def token(self, word: str) -> int:
        return self.model.token_id(word)


def _tokenizer(words: list[str]) -> object:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(words)}
    t = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    t.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    t.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=t, pad_token="<pad>", eos_token="<eos>", unk_token="<pad>"
    )


def planted_model(
    seed: int = 0,
    *,
    d_model: int = 64,
    mode_scale: float = 0.5,
    write_scale: float = 4.0,
    readout: float = 0.5,
    decoy_scale: float = 2.0,
) -> PlantedModel:
    """Build the planted model (see the module docstring). ``mode_scale`` (a), ``write_scale``
    (c), ``readout`` (k) and ``decoy_scale`` (b) set the planted magnitudes."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if d_model < 16 or d_model % 4:
        raise InputError(f"d_model must be a multiple of 4 and at least 16, got {d_model}")
    words = ["<pad>", "<eos>", YES, NO, POSITIVE, NEGATIVE, DECOY_POS, DECOY_NEG]
    words += [f"w{i}" for i in range(N_FILLER)]
    V = len(words)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        hidden_size=d_model,
        intermediate_size=2 * d_model,
        vocab_size=V,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=1,
        rms_norm_eps=1e-6,
        tie_word_embeddings=False,
        max_position_embeddings=64,
    )
    hf = LlamaForCausalLM(cfg).eval()
    q, _ = torch.linalg.qr(torch.randn(d_model, d_model, generator=g, dtype=torch.float64))
    u, w, m, rest = q[:, 0], q[:, 1], q[:, 2], q[:, 3:]
    k = rest.shape[1]
    with torch.no_grad():
        emb = torch.randn(V, k, generator=g, dtype=torch.float64) / np.sqrt(k)
        E = emb @ rest.T  # every token in the complement of u, w, m
        idx = {w_: i for i, w_ in enumerate(words)}
        base = E[idx[POSITIVE]].clone()
        E[idx[POSITIVE]] = base + mode_scale * m
        E[idx[NEGATIVE]] = base - mode_scale * m
        dbase = E[idx[DECOY_POS]].clone()
        E[idx[DECOY_POS]] = dbase + decoy_scale * w
        E[idx[DECOY_NEG]] = dbase - decoy_scale * w
        hf.model.embed_tokens.weight.copy_(E.float())

        # Layer 1's MLP: neuron 0 fires on +m and writes +u, neuron 1 fires on -m and writes -u.
        mlp = hf.model.layers[1].mlp
        # the normalised mode token carries about mode_scale * sqrt(d) / |e| along m
        e_norm = float(E[idx[POSITIVE]].norm())
        along = mode_scale * np.sqrt(d_model) / e_norm
        gain = 1.0 / max(along, 1e-3)
        for j, sgn in ((0, 1.0), (1, -1.0)):
            mlp.gate_proj.weight[j] = (sgn * 3.0 * gain * m).float()
            mlp.up_proj.weight[j] = (sgn * 3.0 * gain * m).float()
        # silu(3) * 3 = 8.57: scale the write so the neuron adds about write_scale * u
        act = 3.0 / (1 + np.exp(-3.0)) * 3.0
        mlp.down_proj.weight[:, 0] = (write_scale / act * u).float()
        mlp.down_proj.weight[:, 1] = (-write_scale / act * u).float()
        # no other neuron of any MLP reads m or writes u
        for layer in hf.model.layers:
            mm = layer.mlp
            for W in (mm.gate_proj.weight, mm.up_proj.weight):
                rows = W[2:] if layer is hf.model.layers[1] else W
                rows -= (rows.double() @ m)[:, None].float() * m.float()
            cols = (
                mm.down_proj.weight[:, 2:] if layer is hf.model.layers[1] else mm.down_proj.weight
            )
            cols -= u.float()[:, None] * (u.float() @ cols)[None, :]
            # attention writes nothing along u either
            o = layer.self_attn.o_proj.weight
            o -= u.float()[:, None] * (u.float() @ o)[None, :]

        # Unembedding: yes / no read +-u; every other row is orthogonal to u, w and m.
        U = (torch.randn(V, k, generator=g, dtype=torch.float64) / np.sqrt(k)) @ rest.T
        U[idx[YES]] = readout * u
        U[idx[NO]] = -readout * u
        hf.lm_head.weight.copy_(U.float())
    tok = _tokenizer(words)
    model = wrap(hf, tok, name="planted")
    return PlantedModel(
        model=model,
        direction=u.float(),
        decoy=w.float(),
        marker=m.float(),
        writer="mlp_out.1",
        layer=1,
        seed=seed,
    )


__all__ = ["PlantedModel", "planted_model"]
