"""A trained alignment as an MIB-style featurizer / inverse featurizer pair.

The MIB causal-variable track describes a localisation by a *featurizer* ``x -> (features,
error)`` and an *inverse featurizer* ``(features, error) -> x`` with ``inverse(featurizer(x)) ==
x``; interchanging the ``features`` of a source into a base is the intervention. For an alignment
``z = x W`` aligned on coordinates ``dims``:

- :class:`Featurizer`: ``features = (x W)[..., dims]``, ``error = (x W)[..., rest]`` (``rest``:
  every other aligned coordinate, in order);
- :class:`InverseFeaturizer`: scatter ``features`` and ``error`` back into ``z`` and return
  ``z W^-1`` (``W`` and ``W^-1`` in float64, the inverse computed from ``W``).

So the round trip is exact up to float error for every invertible alignment, and swapping
``features`` is the interchange :class:`~faithlens.interventions.Interchange` does with
``basis=alignment, dims=dims``.

``export_featurizer(alignment, dims, folder)`` writes ``featurizer.safetensors`` (``W``,
``W^-1``, ``features``, ``rest``) and ``featurizer.json`` (format, width, feature indices, the
alignment kind and the site); :func:`load_featurizer` (plain safetensors + JSON, no pickle) turns
the folder back into the pair.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .. import validate as V
from ..errors import InputError
from .alignment import Alignment

#: The ``format`` of ``featurizer.json``.
FORMAT = "faithlens-featurizer/1"


def _indices(name: str, values: Sequence[int], width: int) -> list[int]:
    out = [V.int_in_range(name, v, 0, width - 1, fix=f"use indices 0..{width - 1}") for v in values]
    if not out:
        raise V.fail(name, values, "is empty", "give at least one feature index")
    if len(set(out)) != len(out):
        raise V.fail(name, values, "repeats an index", "list each index once")
    return out


class Featurizer(nn.Module):
    """``x [..., width] -> (features [..., k], error [..., width - k])``: the aligned
    coordinates ``features`` of ``x W`` and the rest."""

    matrix: Tensor
    features: Tensor
    rest: Tensor

    def __init__(self, matrix: Tensor, features: Sequence[int]) -> None:
        super().__init__()
        width = int(matrix.shape[0])
        idx = _indices("features", features, width)
        rest = [i for i in range(width) if i not in set(idx)]
        self.register_buffer("matrix", matrix.detach().clone())
        self.register_buffer("features", torch.tensor(idx, dtype=torch.long))
        self.register_buffer("rest", torch.tensor(rest, dtype=torch.long))
        self.width = width

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.shape[-1] != self.width:
            raise InputError(f"the featurizer takes width {self.width}, got {x.shape[-1]}")
        z = x @ self.matrix.to(x.dtype)
        return z[..., self.features], z[..., self.rest]


class InverseFeaturizer(nn.Module):
    """``(features, error) -> x``: the inverse of :class:`Featurizer`."""

    inverse: Tensor
    features: Tensor
    rest: Tensor

    def __init__(self, inverse: Tensor, features: Sequence[int]) -> None:
        super().__init__()
        width = int(inverse.shape[0])
        idx = _indices("features", features, width)
        rest = [i for i in range(width) if i not in set(idx)]
        self.register_buffer("inverse", inverse.detach().clone())
        self.register_buffer("features", torch.tensor(idx, dtype=torch.long))
        self.register_buffer("rest", torch.tensor(rest, dtype=torch.long))
        self.width = width

    def forward(self, features: Tensor, error: Tensor) -> Tensor:
        k = int(self.features.numel())
        if features.shape[-1] != k or error.shape[-1] != self.width - k:
            raise InputError(
                f"the inverse featurizer takes {k} features and {self.width - k} error "
                f"coordinates, got {features.shape[-1]} and {error.shape[-1]}"
            )
        z = features.new_zeros((*features.shape[:-1], self.width))
        z[..., self.features] = features
        z[..., self.rest] = error.to(features.dtype)
        return z @ self.inverse.to(z.dtype)


@dataclass(frozen=True)
class FeaturizerPair:
    """The exported pair, the aligned feature indices, and what the export recorded."""

    featurizer: Featurizer
    inverse_featurizer: InverseFeaturizer
    features: list[int]
    meta: dict[str, Any]

    def interchange(self, base: Tensor, source: Tensor) -> Tensor:
        """``base`` with its features replaced by ``source``'s (the distributed interchange)."""
        _, err = self.featurizer(base)
        feats, _ = self.featurizer(source)
        out: Tensor = self.inverse_featurizer(feats, err)
        return out


def featurizer_pair(
    alignment: Alignment, dims: Sequence[int], *, meta: dict[str, Any] | None = None
) -> FeaturizerPair:
    """The featurizer / inverse featurizer of ``alignment`` aligned on ``dims`` (in memory)."""
    if not isinstance(alignment, Alignment):
        raise V.fail("alignment", type(alignment).__name__, "must be a faithlens Alignment")
    with torch.no_grad():
        w = alignment.matrix().detach().to("cpu", torch.float64)
        # the inverse of the float64 matrix, not the alignment's own (a float32 rotation's W^T
        # is its inverse only to ~1e-7): the round trip is then exact to float64 precision
        w_inv = torch.linalg.inv(w)
    idx = _indices("dims", list(dims), alignment.width)
    info = {"alignment": alignment.kind, "width": alignment.width, **(meta or {})}
    return FeaturizerPair(Featurizer(w, idx), InverseFeaturizer(w_inv, idx), idx, info)


def export_featurizer(
    alignment: Alignment,
    dims: Sequence[int],
    folder: str | Path,
    *,
    site: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the pair to ``folder``: ``featurizer.safetensors`` (float64 ``matrix``,
    ``inverse``, int64 ``features``, ``rest``) and ``featurizer.json`` (``format``, ``width``,
    ``features``, ``n_features``, ``alignment``, ``site``). Refuses an existing export unless
    ``overwrite``."""
    from safetensors.torch import save_file

    pair = featurizer_pair(alignment, dims, meta={"site": site})
    out = V.output_dir(folder, "folder")
    spec = out / "featurizer.json"
    if spec.exists() and not overwrite:
        raise V.fail("folder", str(out), "already holds a featurizer", "pass overwrite=True")
    out.mkdir(parents=True, exist_ok=True)
    tensors = {
        "matrix": pair.featurizer.matrix.contiguous(),
        "inverse": pair.inverse_featurizer.inverse.contiguous(),
        "features": pair.featurizer.features.contiguous(),
        "rest": pair.featurizer.rest.contiguous(),
    }
    tmp = out / f".featurizer.safetensors.tmp{os.getpid()}"
    save_file(tensors, str(tmp))
    os.replace(tmp, out / "featurizer.safetensors")
    doc = {
        "format": FORMAT,
        "width": alignment.width,
        "features": pair.features,
        "n_features": len(pair.features),
        "alignment": alignment.kind,
        "site": site,
    }
    tmp_json = out / f".featurizer.json.tmp{os.getpid()}"
    tmp_json.write_text(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp_json, spec)
    return out


def load_featurizer(folder: str | Path) -> FeaturizerPair:
    """The pair :func:`export_featurizer` wrote (safetensors and JSON only; nothing unpickled)."""
    from safetensors.torch import load_file

    src = Path(folder)
    spec_path, weights = src / "featurizer.json", src / "featurizer.safetensors"
    if not spec_path.is_file() or not weights.is_file():
        raise InputError(
            f"{src} holds no exported featurizer (featurizer.json and featurizer.safetensors); "
            "write one with export_featurizer"
        )
    try:
        doc = json.loads(spec_path.read_text())
        if doc.get("format") != FORMAT:
            raise ValueError(f"format {doc.get('format')!r}, expected {FORMAT!r}")
        t = load_file(str(weights))
        w, w_inv, feats = t["matrix"], t["inverse"], t["features"].tolist()
    except (ValueError, KeyError, OSError, UnicodeDecodeError) as e:
        raise InputError(
            f"{src} is not a readable featurizer export ({e}); export it again"
        ) from None
    if feats != list(doc["features"]) or tuple(w.shape) != (doc["width"], doc["width"]):
        raise InputError(f"{src}: featurizer.json does not match featurizer.safetensors")
    meta = {k: doc[k] for k in ("alignment", "width", "site")}
    return FeaturizerPair(Featurizer(w, feats), InverseFeaturizer(w_inv, feats), feats, meta)


__all__ = [
    "FORMAT",
    "Featurizer",
    "FeaturizerPair",
    "InverseFeaturizer",
    "export_featurizer",
    "featurizer_pair",
    "load_featurizer",
]
