"""Probing data: unit activations, concept labels, and collecting them from a model.

- :class:`Activations`: ``[n_samples, n_units]`` values, with optional unit names, a group id per
  sample (the sentence a token came from, the image a pixel came from: the i.i.d. unit for the
  guarantees and the cluster bootstrap) and token ids.
- :class:`Concepts`: ``[n_samples, n_concepts]`` labels in ``[0, 1]`` (binary or soft) with
  names; built from arrays, DataFrames or ``{name: labels}``.
- :func:`collect`: run a faithlens model over inputs and read a site, one row per real token
  (padding masked out) or per example.
- :func:`probe_tokens`: the activations of a site at every token of some texts, together with
  token-level concepts from a word list (the one shipped with faithlens by default), aligned row
  by row.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .. import validate as V
from ..errors import InputError, ShapeError

if TYPE_CHECKING:
    from ..models.model import Model
    from ..models.sites import SiteLike


@dataclass(frozen=True, eq=False)
class Activations:
    """Unit activations on a probing set: ``values`` is ``[n_samples, n_units]``.

    ``groups`` (``[n_samples]``, any integer ids) marks samples that are not independent of each
    other (tokens of one text, pixels of one image): bounds and bootstraps then treat each group
    as one draw. ``tokens`` holds token ids for token-level data.
    """

    values: Tensor
    unit_names: tuple[str, ...] | None = None
    groups: Tensor | None = None
    tokens: Tensor | None = None
    site: str | None = None

    def __post_init__(self) -> None:
        if self.values.dim() != 2:
            raise ShapeError(
                f"Activations.values must be [n_samples, n_units], got {tuple(self.values.shape)}"
            )
        n = int(self.values.shape[0])
        if self.groups is not None and int(self.groups.shape[0]) != n:
            raise ShapeError(f"groups has {self.groups.shape[0]} entries for {n} samples")
        if self.unit_names is not None and len(self.unit_names) != self.values.shape[1]:
            raise ShapeError(f"{len(self.unit_names)} unit names for {self.values.shape[1]} units")

    @property
    def n_samples(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_units(self) -> int:
        return int(self.values.shape[1])

    def units(self, index: Sequence[int] | slice) -> Activations:
        """The same probing set restricted to some units."""
        n = self.n_units
        if isinstance(index, slice):
            for end in (index.start, index.stop):
                if end is not None and not -n <= int(end) <= n:
                    raise V.fail(
                        "units",
                        f"{index.start}:{index.stop}",
                        f"runs past the {n} units",
                        f"use indices between 0 and {n}",
                    )
            idx = list(range(n))[index]
        else:
            idx = [V.int_in_range("units", i, 0, n - 1, fix=f"there are {n} units") for i in index]
        if not idx:
            raise V.fail("units", index, "selects no unit", f"choose among the {n} units")
        if len(set(idx)) != len(idx):
            raise V.fail("units", index, "repeats a unit", "list each unit once")
        names = tuple(self.unit_names[i] for i in idx) if self.unit_names else None
        return Activations(self.values[:, idx], names, self.groups, self.tokens, self.site)


@dataclass(frozen=True, eq=False)
class Concepts:
    """Concept labels on a probing set: ``values`` is ``[n_samples, n_concepts]`` in ``[0, 1]``
    (1 = present; soft values are probabilities), ``names`` one per column."""

    values: Tensor
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.values.dim() != 2:
            raise ShapeError(
                f"concepts must be [n_samples, n_concepts], got {tuple(self.values.shape)}"
            )
        if len(self.names) != self.values.shape[1]:
            raise ShapeError(f"{len(self.names)} concept names for {self.values.shape[1]} columns")
        if len(set(self.names)) != len(self.names):
            dup = sorted({x for x in self.names if self.names.count(x) > 1})
            raise InputError(f"concept names must be unique; repeated: {dup[:5]}")

    @property
    def n_samples(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_concepts(self) -> int:
        return int(self.values.shape[1])

    def select(self, names: Sequence[str]) -> Concepts:
        """Only the named concepts, in that order."""
        missing = [x for x in names if x not in self.names]
        if missing:
            raise InputError(f"unknown concepts {missing[:5]}; known: {list(self.names)[:10]}...")
        idx = [self.names.index(x) for x in names]
        return Concepts(self.values[:, idx], tuple(names))

    def drop_empty(self) -> Concepts:
        """Drop concepts that are never (or always) present in this probing set."""
        v = self.values
        keep = ((v > 0).any(0) & (v < 1).any(0)).nonzero().flatten().tolist()
        return Concepts(v[:, keep], tuple(self.names[i] for i in keep))

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.values.cpu().numpy(), columns=list(self.names))


def as_concepts(concepts: Any, names: Sequence[str] | None = None) -> Concepts:
    """Normalise arrays, tensors, DataFrames, ``{name: labels}`` or :class:`Concepts`."""
    if isinstance(concepts, Concepts):
        if names is not None:
            return Concepts(concepts.values, tuple(names))
        return concepts
    if isinstance(concepts, pd.DataFrame):
        vals = torch.as_tensor(concepts.to_numpy(dtype=np.float32, copy=True))
        return Concepts(
            vals, tuple(str(c) for c in concepts.columns) if names is None else tuple(names)
        )
    if isinstance(concepts, Mapping):
        if not concepts:
            raise InputError("the concept set is empty: pass at least one concept")
        cols = [
            torch.as_tensor(np.asarray(v, dtype=np.float32)).reshape(-1) for v in concepts.values()
        ]
        lengths = {int(c.shape[0]) for c in cols}
        if len(lengths) > 1:
            raise ShapeError(f"concept label vectors have different lengths: {sorted(lengths)}")
        return Concepts(torch.stack(cols, 1), tuple(str(k) for k in concepts))
    if isinstance(concepts, np.ndarray | Tensor | list | tuple):
        vals = (
            torch.as_tensor(np.asarray(concepts, dtype=np.float32))
            if not isinstance(concepts, Tensor)
            else concepts
        )
        if vals.dim() == 1:
            vals = vals[:, None]
        if vals.dim() != 2:
            raise ShapeError(
                f"concepts must be [n_samples, n_concepts], got shape {tuple(vals.shape)}"
            )
        nm = tuple(names) if names is not None else tuple(f"c{i}" for i in range(vals.shape[1]))
        return Concepts(vals.float(), nm)
    raise InputError(
        f"cannot read concepts from a {type(concepts).__name__}: pass a [n_samples, n_concepts] "
        "tensor or array, a DataFrame (one column per concept), a {name: labels} dict or "
        "faithlens.neurons.Concepts"
    )


# --------------------------------------------------------------------------------------------
# Collecting activations from a model
# --------------------------------------------------------------------------------------------


def _batches(n: int, size: int) -> list[slice]:
    return [slice(i, min(n, i + size)) for i in range(0, n, size)]


def task_inputs(inputs: Any) -> Any:
    """The inputs to run: a task's clean inputs (for a task built from tensors, its one input
    tensor, e.g. the pixels), anything else as given."""
    from ..tasks.base import Task

    if not isinstance(inputs, Task):
        return inputs
    if inputs.tokens:
        return inputs.clean
    tensors = [a for a in inputs.clean.args if isinstance(a, Tensor)]
    return tensors[0] if len(tensors) == 1 and not inputs.clean.kwargs else inputs.clean


def collect(
    model: Model,
    inputs: Any,
    site: SiteLike,
    *,
    batch_size: int | None = None,
    pool: str | None = None,
    drop_special: bool = True,
) -> Activations:
    """Read ``site`` on ``inputs``: one row per real token (language models) or per example.

    Token-level sites (``[batch, pos, width]``) keep every non-padding token, batch-major, and
    record the example each token came from in ``groups`` (so that bounds and bootstraps treat
    each text as one draw); ``drop_special`` removes BOS/CLS/SEP-style tokens. Spatial sites
    (``[batch, channels, h, w]``, or a vision adapter's ``[batch, h * w, channels]``) and a
    vision transformer's sites on pixels need ``pool="mean"`` or ``"max"`` to give one value per
    unit, pooled over the positions (use :func:`faithlens.neurons.dissect` to explain the maps
    themselves). ``inputs`` may be a :class:`~faithlens.tasks.Task`: its clean inputs (the
    pixels of a task built with :meth:`faithlens.Task.from_tensors`).
    """
    from ..models.model import Inputs
    from ..models.sites import as_site

    inputs = task_inputs(inputs)

    if pool not in (None, "mean", "max"):
        raise InputError(f"pool must be None, 'mean' or 'max', not {pool!r}")
    if batch_size is not None and batch_size < 1:
        raise InputError("batch_size must be at least 1")
    s = as_site(site)
    model.site_info(s.name)  # unknown sites fail here, before any forward pass
    prepared = model.prepare(inputs)
    n = prepared.batch_size
    if n == 0:
        raise InputError("no inputs to probe")
    if batch_size is None:
        from ..executor import current_executor

        seq = prepared.seq_len or 1
        width = max(model.d_model, 1) if model.adapter.site_table else 1024
        batch_size = current_executor().chunk_size(
            None, seq * width * 4 * 16, device=model.device, tokens_per_item=seq
        )
    special: set[int] = set()
    tok = model.tokenizer
    if drop_special and tok is not None:
        special = {int(i) for i in getattr(tok, "all_special_ids", []) or []}
    rows: list[Tensor] = []
    groups: list[Tensor] = []
    tokens: list[Tensor] = []
    for sl in _batches(n, batch_size):
        part: Inputs = prepared.select(sl)
        try:
            out = model.run(part, cache=[s], stop_at=s.name)
        except Exception:  # sites the engine cannot stop at (raw modules): run to the end
            out = model.run(part, cache=[s])
        act = out.cache[s.name].detach()
        if part.ids is not None and act.dim() == 3 and act.shape[1] == part.ids.shape[1]:
            mask = part.mask if part.mask is not None else torch.ones_like(part.ids)
            keep = mask.bool()
            if special:
                sp = torch.tensor(sorted(special), device=part.ids.device)
                keep &= ~torch.isin(part.ids, sp)
            b_idx, p_idx = keep.nonzero(as_tuple=True)
            rows.append(act[b_idx, p_idx].float().cpu())
            groups.append((b_idx + sl.start).cpu())
            tokens.append(part.ids[b_idx, p_idx].cpu())
            continue
        info = model.site_info(s.name)
        if act.dim() == 3 and (info.hook.spatial or info.width is not None):
            # a site's [batch, positions, units] (a CNN's h * w, a ViT's patches): units first,
            # so that pooling is over the positions
            act = act.transpose(1, 2)
        if act.dim() > 2:
            if pool is None:
                raise ShapeError(
                    f"site {s.name} gives {tuple(act.shape[1:])} per example; collect it with "
                    "faithlens.neurons.collect(model, inputs, site, pool='mean' or 'max') for one "
                    "value per channel, or explain the maps with faithlens.neurons.dissect"
                )
            flat = act.flatten(2)
            act = flat.mean(-1) if pool == "mean" else flat.amax(-1)
        rows.append(act.reshape(act.shape[0], -1).float().cpu())
    values = torch.cat(rows, 0)
    width = values.shape[1]
    names = tuple(f"{s.name}:{i}" for i in range(width))
    return Activations(
        values,
        names,
        torch.cat(groups) if groups else None,
        torch.cat(tokens) if tokens else None,
        site=str(s),
    )


# --------------------------------------------------------------------------------------------
# Token-level concepts from a word list
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def word_lists() -> dict[str, tuple[str, ...]]:
    """The word list shipped with faithlens: ``{concept: words}`` (lower case)."""
    text = resources.files("faithlens").joinpath("data", "word_concepts.json").read_text("utf-8")
    raw = json.loads(text)["concepts"]
    return {k: tuple(w.lower() for w in v) for k, v in raw.items()}


#: Concepts read from the token's own characters rather than from the word list.
SHAPE_CONCEPTS = ("punctuation", "digits", "capitalised")

_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)?|\d+|[^\sA-Za-z\d]")


def _word_spans(text: str) -> list[tuple[int, int, str]]:
    return [(m.start(), m.end(), m.group(0)) for m in _WORD.finditer(text)]


def token_concepts(
    model: Model,
    texts: Sequence[str],
    *,
    words: Mapping[str, Sequence[str]] | None = None,
    shapes: Sequence[str] = SHAPE_CONCEPTS,
    drop_special: bool = True,
    drop_empty: bool = True,
) -> Concepts:
    """Token-level concept labels for ``texts``, aligned with :func:`collect` on the same texts.

    A token carries concept ``X`` when it overlaps a word of ``X``'s list (case-insensitive,
    whole words, a possessive ``'s`` ignored; default: the shipped list, :func:`word_lists`). Shape concepts: ``punctuation``
    (a token made only of punctuation), ``digits`` (a token containing a digit), ``capitalised``
    (a token inside a word that starts with a capital letter). With ``drop_empty`` the concepts
    that never occur in these texts are dropped.
    """
    tok = model.tokenizer
    if tok is None:
        raise InputError(f"{model.name} has no tokenizer: token concepts need one")
    if not getattr(tok, "is_fast", False):
        raise InputError("token concepts need a fast tokenizer (offset mappings)")
    if isinstance(texts, str):
        texts = [texts]
    vocab = dict(word_lists() if words is None else {k: tuple(v) for k, v in words.items()})
    if not vocab and not shapes:
        raise InputError("the concept set is empty: give a word list or shape concepts")
    bad = [x for x in shapes if x not in SHAPE_CONCEPTS]
    if bad:
        raise InputError(f"unknown shape concepts {bad}; known: {list(SHAPE_CONCEPTS)}")
    lookup: dict[str, list[int]] = {}
    names = list(vocab) + [s for s in shapes if s not in vocab]
    for j, (_concept, ws) in enumerate(vocab.items()):
        for w in ws:
            lookup.setdefault(w.lower(), []).append(j)
    special = {int(i) for i in getattr(tok, "all_special_ids", []) or []} if drop_special else set()
    add_special = not model.is_causal
    prepared = model.tokenize(list(texts))
    rows: list[np.ndarray] = []
    for i, text in enumerate(texts):
        enc = tok(text, add_special_tokens=add_special, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        assert prepared.ids is not None
        length = int(prepared.mask[i].sum()) if prepared.mask is not None else len(ids)
        if ids != prepared.ids[i, :length].tolist():
            raise InputError(
                f"text {i}: the tokenizer's offsets do not match the model's tokenisation"
            )
        spans = _word_spans(text)
        for tid, (a, b) in zip(ids, enc["offset_mapping"]):
            if tid in special:
                continue
            row = np.zeros(len(names), dtype=np.float32)
            piece = text[a:b]
            for s0, s1, word in spans:
                if s1 <= a or s0 >= b:
                    continue
                key = word.lower()
                for j in lookup.get(key, lookup.get(key.split("'")[0], ())):
                    row[j] = 1.0
                if "capitalised" in shapes and word[:1].isupper():
                    row[names.index("capitalised")] = 1.0
            core = piece.strip()
            if "punctuation" in shapes and core and all(not ch.isalnum() for ch in core):
                row[names.index("punctuation")] = 1.0
            if "digits" in shapes and any(ch.isdigit() for ch in core):
                row[names.index("digits")] = 1.0
            rows.append(row)
    if not rows:
        raise InputError("the texts produced no tokens")
    out = Concepts(torch.from_numpy(np.stack(rows)), tuple(names))
    return out.drop_empty() if drop_empty else out


def probe_tokens(
    model: Model,
    texts: Sequence[str],
    site: SiteLike,
    *,
    words: Mapping[str, Sequence[str]] | None = None,
    shapes: Sequence[str] = SHAPE_CONCEPTS,
    batch_size: int | None = None,
) -> tuple[Activations, Concepts]:
    """Activations of ``site`` at every real token of ``texts`` and token-level concepts, row
    for row (special tokens dropped; each text is one group)."""
    if isinstance(texts, str):
        texts = [texts]
    if len(texts) == 0:
        raise InputError("no texts to probe")
    concepts = token_concepts(model, texts, words=words, shapes=shapes)
    acts = collect(model, list(texts), site, batch_size=batch_size)
    if acts.n_samples != concepts.n_samples:
        raise ShapeError(
            f"{acts.n_samples} token activations but {concepts.n_samples} token labels; the "
            "tokenizer and the model disagree about special tokens"
        )
    return acts, concepts


# --------------------------------------------------------------------------------------------
# A small probing corpus built from the word list
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _templates() -> tuple[str, ...]:
    text = resources.files("faithlens").joinpath("data", "word_concepts.json").read_text("utf-8")
    return tuple(json.loads(text)["templates"])


_SLOT = re.compile(r"\{([a-z_]+)\}")


def word_corpus(n: int, seed: int = 0) -> list[str]:
    """``n`` sentences from the shipped templates, with slots filled from the word list.

    A probing corpus that needs no download: each template slot ``{concept}`` is filled with a
    random word of that concept (capitalised at the start of a sentence); seeded.
    """
    if n < 1:
        raise InputError("word_corpus needs n >= 1")
    rng = np.random.default_rng(seed)
    lists = word_lists()
    templates = _templates()
    out = []
    for _ in range(n):
        t = templates[int(rng.integers(len(templates)))]

        def fill(m: re.Match[str]) -> str:
            options = lists[m.group(1)]
            return options[int(rng.integers(len(options)))]

        s = _SLOT.sub(fill, t)
        out.append(s[0].upper() + s[1:])
    return out


__all__ = [
    "SHAPE_CONCEPTS",
    "Activations",
    "Concepts",
    "as_concepts",
    "collect",
    "probe_tokens",
    "token_concepts",
    "word_corpus",
    "word_lists",
]
