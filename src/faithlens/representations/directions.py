"""Reading-vector directions from paired activations (see :mod:`faithlens.representations.reading`
for the methods), the pair AUROC of their read-outs, and their bootstrap stability."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .. import stats
from ..errors import InputError
from ..executor import Sizing, current_executor
from ..folders import NpzStore

METHODS = ("pca", "mean_diff", "logistic", "random")


# --------------------------------------------------------------------------------------------
# directions
# --------------------------------------------------------------------------------------------


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    if n == 0.0 or not np.isfinite(n):
        raise InputError("the fitted direction is zero or not finite (identical pair members?)")
    return np.asarray(v / n)


def fit_direction(
    pos: np.ndarray, neg: np.ndarray, method: str = "pca", *, seed: int = 0, C: float = 1.0
) -> np.ndarray:
    """A unit direction ``[d]`` from paired activations ``[n, d]`` (see the module docstring),
    oriented so that the positive member scores higher in most pairs."""
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}; choose from {METHODS}")
    pos = np.asarray(pos, dtype=np.float64)
    neg = np.asarray(neg, dtype=np.float64)
    if pos.shape != neg.shape or pos.ndim != 2:
        raise InputError(
            f"positive and negative activations must both be [n, d]; got {pos.shape}, {neg.shape}"
        )
    n, d = pos.shape
    rng = np.random.default_rng(seed)
    diff = pos - neg
    if method == "pca":
        signs = rng.choice([-1.0, 1.0], size=n)
        x = diff * signs[:, None]
        x = x - x.mean(0)
        _, _, vt = np.linalg.svd(x, full_matrices=False)
        r = vt[0]
    elif method == "mean_diff":
        r = diff.mean(0)
    elif method == "logistic":
        from sklearn.linear_model import LogisticRegression

        x = np.concatenate([pos, neg])
        x = x - x.mean(0)
        scale = float(x.std()) or 1.0
        y = np.concatenate([np.ones(n), np.zeros(n)])
        clf = LogisticRegression(C=C, max_iter=5000)
        clf.fit(x / scale, y)
        r = clf.coef_[0]
    else:
        r = rng.standard_normal(d)
    r = _unit(r)
    wins = float(np.mean(diff @ r > 0))
    return r if wins >= 0.5 else -r


def pair_auroc(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    """AUROC of scores ``a`` (positives) vs ``b`` (negatives) along the last axis:
    ``P(a_i > b_j) + P(a_i = b_j) / 2`` over all i, j (the Mann-Whitney statistic)."""
    a = np.moveaxis(np.asarray(a, dtype=np.float64), axis, -1)
    b = np.moveaxis(np.asarray(b, dtype=np.float64), axis, -1)
    gt = (a[..., :, None] > b[..., None, :]).mean((-2, -1))
    eq = (a[..., :, None] == b[..., None, :]).mean((-2, -1))
    return np.asarray(gt + 0.5 * eq)


def stability(
    pos: np.ndarray,
    neg: np.ndarray,
    direction: np.ndarray,
    method: str,
    *,
    n_boot: int = 100,
    seed: int = 0,
) -> np.ndarray:
    """Cosines between ``direction`` and the direction refitted on ``n_boot`` bootstrap
    resamples of the pairs (rows of ``pos`` / ``neg``)."""
    n = pos.shape[0]
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    for b in range(n_boot):
        idx = rng.integers(0, n, n)
        r = fit_direction(pos[idx], neg[idx], method, seed=seed + 1 + b)
        out[b] = float(r @ direction)
    return out


#: One layer of a reading sweep: its position ``k`` among the layers read, and the training and
#: held-out activations of both pair members there (``[n, d]`` each).
LayerPairs = tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def layer_bytes(n_train: int, n_test: int, d: int, n_stability: int) -> int:
    """Bytes :func:`fit_layers` needs per layer: the layer's float32 activations, their float64
    copies and centred stack, and one stability refit at a time."""
    n = n_train + n_test
    return (
        4 * 2 * n * d + 8 * d * (4 * n_train + 2 * n_test) + 8 * d * 2 * n_train * bool(n_stability)
    )


def fit_layers(
    model: None,
    layers: Sequence[LayerPairs],
    method: str,
    n_stability: int,
    n_boot: int,
    level: float,
    seed: int,
    tick: Callable[[], None],
) -> list[dict[str, Any]]:
    """Fit and score the reading direction of each layer on its own (a work item of
    :meth:`faithlens.executor.Executor.map_sized`: a chunk of layers, no model): the direction,
    the training mean, separation and spread, the held-out read-outs, the stability cosines'
    mean and interval and the AUROC's bootstrap interval. Seeds follow the layer's position
    ``k``, so a layer's numbers do not depend on the chunk it is in."""
    out = []
    for k, p32, q32, tp32, tq32 in layers:
        p, q = p32.astype(np.float64), q32.astype(np.float64)
        r = fit_direction(p, q, method, seed=seed + 7919 * k)
        mu = np.concatenate([p, q]).mean(0)
        tp, tq = tp32.astype(np.float64), tq32.astype(np.float64)
        row: dict[str, Any] = {
            "direction": r,
            "mean": mu,
            "separation": float(((p - q) @ r).mean()),
            "spread": float(np.std((np.concatenate([p, q]) - mu) @ r)),
            "test_pos": (tp - mu) @ r,
            "test_neg": (tq - mu) @ r,
            "stability": (np.nan, np.nan, np.nan),
        }
        if n_stability:
            cos = stability(p, q, r, method, n_boot=n_stability, seed=seed + 104729 * (k + 1))
            lo, hi = np.quantile(cos, [(1 - level) / 2, (1 + level) / 2])
            row["stability"] = (cos.mean(), lo, hi)
        iv = stats.bootstrap(
            pair_auroc,
            (row["test_pos"], row["test_neg"]),
            n_boot=n_boot,
            level=level,
            seed=seed + k,
        )
        row["auroc"] = (float(iv.estimate), float(iv.low), float(iv.high))
        out.append(row)
        tick()
    return out


#: What :func:`fit_layers` returns for one layer, as the arrays a checkpoint keeps.
FIT_FIELDS = (
    "direction",
    "mean",
    "separation",
    "spread",
    "test_pos",
    "test_neg",
    "stability",
    "auroc",
)


def fits_key(layers: Sequence[LayerPairs], *options: Any) -> str:
    """A fingerprint of the per-layer fits' inputs: every layer's training and held-out
    activations (their bytes, dtype and shape) and ``options`` (method, refits, resamples,
    level, seed, the layer numbers)."""
    h = hashlib.sha256(json.dumps([repr(o) for o in options]).encode())
    for item in layers:
        h.update(str(item[0]).encode())
        for a in item[1:]:
            arr = np.ascontiguousarray(a)
            h.update(f"{arr.dtype}{arr.shape}".encode())
            h.update(arr.tobytes())
    return h.hexdigest()


def fit_all_layers(
    layers: Sequence[LayerPairs],
    sizing: Sizing,
    args: tuple[Any, ...],
    checkpoint: str | os.PathLike[str] | None = None,
) -> list[dict[str, Any]]:
    """:func:`fit_layers` of every layer, in order, through the executor in force
    (:meth:`~faithlens.executor.Executor.map_sized`; ``args``: method, refits, resamples,
    level, seed). With ``checkpoint`` (a folder) each layer's fit is kept there as its chunk
    finishes (``layer_{k:07d}.npz``, atomic, keyed by :func:`fits_key`): a rerun reads the
    finished layers back and fits only the others, with the same numbers (each layer's seeds
    follow its position ``k``, not its chunk). A folder of other activations or options raises
    :class:`~faithlens.errors.CheckpointError`."""
    fits: list[dict[str, Any] | None] = [None] * len(layers)
    store = None
    if checkpoint is not None:
        store = NpzStore(
            checkpoint,
            fits_key(layers, *args),
            prefix="layer",
            what="reading checkpoint",
            other_run="a reading of other activations or options",
        )
        for k in range(len(layers)):
            kept = store.load(k)
            if kept is not None:
                fits[k] = {f: kept[f] for f in FIT_FIELDS}
    left = [k for k, f in enumerate(fits) if f is None]
    todo = [layers[k] for k in left]
    for rows, done in current_executor().map_sized(None, fit_layers, todo, sizing, *args):
        for k, f in zip(left[rows], done):
            fits[k] = f
            if store is not None:
                store.save(k, **{name: np.asarray(f[name]) for name in FIT_FIELDS})
    assert all(f is not None for f in fits)
    return [f for f in fits if f is not None]


__all__ = [
    "FIT_FIELDS",
    "METHODS",
    "LayerPairs",
    "fit_all_layers",
    "fit_direction",
    "fit_layers",
    "fits_key",
    "layer_bytes",
    "pair_auroc",
    "stability",
]
