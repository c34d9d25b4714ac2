"""Alignments read off the data instead of trained by interchange: mean difference, PCA, probe.

CausalGym compares DAS with these cheaper localisations; here each gives a ``k``-dim subspace
of the site, completed to an orthonormal basis (:class:`FixedBasis`, nothing trained), so it
plugs into :func:`~faithlens.das.das` (one epoch measures it) and into
:func:`~faithlens.das.selectivity.das_controls` and the sweep like every trained method. All read
the site's activations on the **source** inputs (where the variable's value comes from), one
row per example (the mean over the selected positions), with ``values`` (default: the
counterfactual labels) as the variable's value per example:

- ``"mean_diff"``: the difference of the class means (two values); with more values, the top
  ``k`` principal directions of the centred class means;
- ``"pca"``: the top ``k`` principal components of the activations (no labels);
- ``"probe"``: a multinomial logistic-regression probe on the values (Adam, seeded); the top
  ``k`` right singular vectors of its centred weight matrix (for two values: its direction).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import validate as V
from ..models.model import Model
from ..models.sites import SiteLike, as_site
from ..tasks.interchange import InterchangeData
from .alignment import Alignment
from .train import source_activations

#: The methods of this module.
DIRECTION_METHODS = ("mean_diff", "pca", "probe")


class FixedBasis(Alignment):
    """An orthonormal change of basis given as a matrix (a buffer: nothing is trained)."""

    kind = "fixed"

    basis: Tensor

    def __init__(self, width: int, matrix: Tensor | None = None) -> None:
        super().__init__(width)
        m = torch.eye(width) if matrix is None else matrix.detach().float().clone()
        self.register_buffer("basis", m)

    def matrix(self) -> Tensor:
        return self.basis

    def inverse_matrix(self) -> Tensor:
        return self.basis.T


def _complete(directions: Tensor, seed: int) -> Tensor:
    """An orthonormal ``[width, width]`` whose first ``k`` columns span ``directions``
    (``[width, k]``); the rest is a seeded random completion."""
    width, k = directions.shape
    g = torch.Generator().manual_seed(seed)
    full = torch.cat([directions.double(), torch.randn(width, width - k, generator=g).double()], 1)
    q, r = torch.linalg.qr(full)
    sign = torch.sign(torch.diagonal(r))
    sign[sign == 0] = 1
    return (q * sign[None]).float()


def _rows(model: Model, data: InterchangeData, site: SiteLike) -> Tensor:
    acts = source_activations(model, data, as_site(site)).float()
    if acts.dim() == 3:
        acts = acts.mean(1)
    return acts.reshape(len(data), -1).cpu()


def _top(matrix: Tensor, k: int) -> Tensor:
    """The top ``k`` right singular vectors of ``matrix`` ``[m, width]`` as ``[width, k]``."""
    _, _, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
    return vh[:k].T


def _probe(x: Tensor, y: Tensor, seed: int, steps: int = 300) -> Tensor:
    classes, yi = torch.unique(y, return_inverse=True)
    mu, sd = x.mean(0), x.std(0).clamp_min(1e-6)
    xs = (x - mu) / sd
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lin = torch.nn.Linear(x.shape[1], len(classes))
        opt = torch.optim.Adam(lin.parameters(), lr=0.05, weight_decay=1e-3)
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(lin(xs), yi)
            opt.zero_grad()
            loss.backward()
            opt.step()
    w = lin.weight.detach() / sd[None]  # back to the site's own coordinates
    return w - w.mean(0, keepdim=True)


def direction_alignment(
    method: str,
    model: Model,
    data: InterchangeData,
    site: SiteLike,
    k: int,
    *,
    values: Any = None,
    seed: int = 0,
) -> FixedBasis:
    """The :class:`FixedBasis` of ``method`` (one of :data:`DIRECTION_METHODS`) whose first
    ``k`` coordinates are its subspace, read off ``data`` at ``site``."""
    V.choice("method", method, DIRECTION_METHODS)
    V.positive_int("dims", k)
    x = _rows(model, data, site)
    width = x.shape[1]
    if values is None:
        y = data.labels.cpu()
    else:
        keys = [v.item() if isinstance(v, (Tensor, np.generic)) else v for v in values]
        codes = {v: i for i, v in enumerate(sorted(set(keys), key=repr))}
        y = torch.tensor([codes[v] for v in keys])
    n_values = int(torch.unique(y).numel())
    limit = min(width, len(data) - 1) if method == "pca" else min(width, max(1, n_values - 1))
    if k > limit:
        raise V.fail(
            "dims",
            k,
            f"is more than {method} gives here ({limit}: {n_values} values, width {width})",
            f"use dims <= {limit}",
        )
    if method != "pca" and n_values < 2:
        raise V.fail("data", data.name, f"{method} needs at least two values of the variable")
    if method == "pca":
        d = _top(x - x.mean(0), k)
    elif method == "mean_diff":
        means = torch.stack([x[y == c].mean(0) for c in torch.unique(y)])
        d = _top(means - means.mean(0), k)
    else:
        d = _top(_probe(x, y, seed), k)
    return FixedBasis(width, _complete(d, seed))


__all__ = ["DIRECTION_METHODS", "FixedBasis", "direction_alignment"]
