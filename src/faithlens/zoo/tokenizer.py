"""A tiny vocabulary tokenizer with the interface ``faithlens.Model`` uses.

``Model.tokenize`` calls ``tokenizer(text, add_special_tokens=...)["input_ids"]``, reads
``pad_token_id`` / ``eos_token_id`` and decodes with ``decode([id])``; this class provides
exactly that for the zoo's symbolic vocabularies (characters for parens, ``t17``-style names for
the induction model's tokens).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from ..errors import InputError


class VocabTokenizer:
    """Maps symbols to ids over a fixed vocabulary.

    Args:
        tokens: the vocabulary, in id order.
        split: ``"chars"`` (every character is a token) or ``"space"`` (whitespace-separated).
        bos / eos / pad: special tokens (members of ``tokens``) added around a text when
            ``add_special_tokens`` is true (``bos`` first, ``eos`` last), and used for padding.
    """

    def __init__(
        self,
        tokens: Sequence[str],
        *,
        split: Literal["chars", "space"] = "chars",
        bos: str | None = None,
        eos: str | None = None,
        pad: str | None = None,
    ) -> None:
        self.tokens = tuple(tokens)
        if len(set(self.tokens)) != len(self.tokens):
            raise InputError("VocabTokenizer: the vocabulary has duplicate tokens")
        if split not in ("chars", "space"):
            raise InputError(f"VocabTokenizer: split must be 'chars' or 'space', not {split!r}")
        self.split = split
        self.index = {t: i for i, t in enumerate(self.tokens)}
        for name, tok in (("bos", bos), ("eos", eos), ("pad", pad)):
            if tok is not None and tok not in self.index:
                raise InputError(f"VocabTokenizer: {name} token {tok!r} is not in the vocabulary")
        self.bos_token_id = self.index[bos] if bos is not None else None
        self.eos_token_id = self.index[eos] if eos is not None else None
        self.pad_token_id = self.index[pad] if pad is not None else None

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        pieces = list(text) if self.split == "chars" else text.split()
        ids = []
        for i, p in enumerate(pieces):
            if p not in self.index:
                shown = ", ".join(repr(t) for t in self.tokens[:8])
                raise InputError(
                    f"token {p!r} (piece {i} of {text!r}) is not in this model's vocabulary "
                    f"({len(self.tokens)} tokens: {shown}{', ...' if len(self.tokens) > 8 else ''})"
                )
            ids.append(self.index[p])
        if add_special_tokens:
            if self.bos_token_id is not None:
                ids = [self.bos_token_id, *ids]
            if self.eos_token_id is not None:
                ids = [*ids, self.eos_token_id]
        return ids

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": self.encode(text, add_special_tokens=add_special_tokens)}

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        specials = {self.bos_token_id, self.eos_token_id, self.pad_token_id} - {None}
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.tokens):
                raise InputError(
                    f"token id {i} is outside the vocabulary 0..{len(self.tokens) - 1}"
                )
            if skip_special_tokens and i in specials:
                continue
            out.append(self.tokens[i])
        return ("" if self.split == "chars" else " ").join(out)

    def __repr__(self) -> str:
        return f"VocabTokenizer({len(self.tokens)} tokens, split={self.split!r})"
