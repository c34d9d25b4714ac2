"""Harmless vs potentially pernicious divergence: the reader's null space and row space.

If the next layer reads an activation ``h`` only through ``W h`` (``W`` is ``[out, width]``),
then any change of ``h`` inside the null space of ``W`` changes nothing downstream: such a
divergence is *harmless*. The part in the row space of ``W`` (the orthogonal complement) is what
the rest of the network can see: *potentially pernicious* (Grant et al. 2025, section 3.2).

- :func:`row_null_bases`: orthonormal bases of the row space and the null space (SVD, with a
  relative rank tolerance).
- :func:`visibility`: per displacement ``r``, ``|W r| / (|W|_2 |r|)`` in [0, 1]: 0 when the
  reader cannot see it at all, 1 when it lies along the reader's most amplified direction.
- :func:`split_divergences`: the divergence of the row-space part and of the null-space part of
  the activations, each against its own natural baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .. import stats
from ..errors import InputError, ShapeError
from . import distances as D
from .compare import split_values, summarize_splits


def as_reader(weight: Any, width: int | None = None) -> Tensor:
    """A reader matrix ``[out, width]`` as a float64 CPU tensor (a clear error otherwise)."""
    w = weight if isinstance(weight, Tensor) else torch.as_tensor(np.asarray(weight))
    if w.dim() != 2:
        raise ShapeError(f"a reader weight is a matrix [out, width]; got shape {tuple(w.shape)}")
    if width is not None and w.shape[1] != width:
        raise ShapeError(
            f"the reader weight reads {w.shape[1]} units but the activations have width {width}; "
            "pass the matrix that multiplies this site's activation (shape [out, width])"
        )
    w = w.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(w).all()):
        raise InputError("the reader weight contains NaN or infinite values")
    return w


def row_null_bases(weight: Any, *, rtol: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Orthonormal bases (columns) of the row space ``[width, r]`` and the null space
    ``[width, width - r]`` of ``weight``; singular values below ``rtol * s_max`` count as zero."""
    w = as_reader(weight)
    _, s, vh = torch.linalg.svd(w, full_matrices=True)
    smax = float(s.max()) if s.numel() else 0.0
    r = int((s > rtol * smax).sum()) if smax > 0 else 0
    v = vh.T
    return v[:, :r].contiguous(), v[:, r:].contiguous()


def row_basis(weight: Any, *, rtol: float = 1e-6) -> Tensor:
    """Orthonormal basis (columns, ``[width, r]``) of the row space of ``weight`` from a thin
    SVD (cheaper than :func:`row_null_bases` for wide readers: no null-space basis is built)."""
    w = as_reader(weight)
    _, s, vh = torch.linalg.svd(w, full_matrices=False)
    smax = float(s.max()) if s.numel() else 0.0
    r = int((s > rtol * smax).sum()) if smax > 0 else 0
    return vh[:r].T.contiguous()


def visibility(delta: Any, weight: Any, *, spectral_norm: float | None = None) -> np.ndarray:
    """``|W r| / (|W|_2 |r|)`` per row ``r`` of ``delta`` (NaN where ``r = 0``).
    ``spectral_norm``: ``|W|_2`` if already known."""
    r = D.as_points(delta, "delta").detach().to("cpu", torch.float64)
    w = as_reader(weight, r.shape[1])
    spec = (
        float(spectral_norm)
        if spectral_norm is not None
        else float(torch.linalg.matrix_norm(w, ord=2))
    )
    num = torch.linalg.vector_norm(r @ w.T, dim=1)
    den = torch.linalg.vector_norm(r, dim=1) * spec
    out = torch.where(den > 0, num / den.clamp_min(1e-300), torch.full_like(num, float("nan")))
    return out.numpy()


def row_fraction(delta: Any, row_basis: Tensor) -> np.ndarray:
    """Fraction of each displacement's squared norm that lies in the row space."""
    r = D.as_points(delta, "delta").detach().to("cpu", torch.float64)
    inside = (r @ row_basis).pow(2).sum(1)
    total = r.pow(2).sum(1)
    return torch.where(total > 0, inside / total.clamp_min(1e-300), torch.nan).numpy()


def split_divergences(
    natural: Any,
    intervened: Any,
    weight: Any,
    *,
    metrics: str | Sequence[str] | None = ("emd", "nn_mse", "mmd"),
    n_splits: int = 5,
    max_points: int = 5000,
    paired: bool | None = None,
    seed: int = 0,
    rtol: float = 1e-6,
    options: dict[str, dict[str, Any]] | None = None,
    groups: tuple[Any, Any] | None = None,
    basis: Tensor | None = None,
) -> pd.DataFrame:
    """Divergence of the full activations, of their row-space part and of their null-space part
    (coordinates in orthonormal bases of each subspace), each against its natural baseline.

    Returns one row per (space, metric) with the columns of
    :func:`~faithlens.divergence.compare.summarize_splits` plus ``space`` and ``dim``. A space of
    dimension 0 gets no rows (nothing can diverge there). ``basis``: a precomputed
    :func:`row_basis` of ``weight``.
    """
    nat, itv = D.check_pair(natural, intervened, names=("natural", "intervened"))
    width = nat.shape[1]
    row = basis if basis is not None else row_basis(as_reader(weight, width), rtol=rtol)
    nat64 = nat.detach().to("cpu", torch.float64)
    itv64 = itv.detach().to("cpu", torch.float64)
    r = row.shape[1]
    frames = []
    # Row-space part: coordinates in the orthonormal row basis. Null-space part: the residual
    # h - h R R^T, kept in native coordinates (an isometric embedding of the null-space
    # coordinates, so every distance is the same, without building a null-space basis).
    parts: list[tuple[str, int, Tensor | None]] = [("full", width, None)]
    if r > 0:
        parts.append(("row", r, row))
    if r < width:
        parts.append(("null", width - r, row))
    for space, dim, b in parts:
        if space == "full":
            a, c = nat64, itv64
        elif space == "row":
            assert b is not None
            a, c = nat64 @ b, itv64 @ b
        else:
            assert b is not None
            a, c = nat64 - (nat64 @ b) @ b.T, itv64 - (itv64 @ b) @ b.T
        sv = split_values(
            a,
            c,
            metrics=metrics,
            n_splits=n_splits,
            max_points=max_points,
            paired=paired,
            seed=seed,
            options=options,
            groups=groups,
        )
        t = summarize_splits(sv)
        t.insert(0, "dim", dim)
        t.insert(0, "space", space)
        frames.append(t)
    return pd.concat(frames, ignore_index=True)


def displacement_summary(
    delta: Any,
    weight: Any,
    *,
    rtol: float = 1e-6,
    basis: Tensor | None = None,
    spectral_norm: float | None = None,
) -> dict[str, float]:
    """Mean ± SE over examples of the row-space fraction and the visibility of displacements."""
    w = as_reader(weight)
    row = basis if basis is not None else row_basis(w, rtol=rtol)
    fr = row_fraction(delta, row)
    vis = visibility(delta, w, spectral_norm=spectral_norm)
    fr, vis = fr[np.isfinite(fr)], vis[np.isfinite(vis)]
    out: dict[str, float] = {"row_dim": float(row.shape[1]), "width": float(w.shape[1])}
    for name, v in (("row_fraction", fr), ("visibility", vis)):
        if v.size:
            m, s = stats.mean_se(v)
            out[name], out[name + "_se"] = float(m), float(s)
        else:
            out[name], out[name + "_se"] = float("nan"), float("nan")
    return out


__all__ = [
    "as_reader",
    "displacement_summary",
    "row_fraction",
    "row_basis",
    "row_null_bases",
    "split_divergences",
    "visibility",
]
