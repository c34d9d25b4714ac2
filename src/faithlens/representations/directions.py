"""Reading-vector directions from paired activations (see :mod:`faithlens.representations.reading`
for the methods), the pair AUROC of their read-outs, and their bootstrap stability."""

from __future__ import annotations

import numpy as np

from ..errors import InputError

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


__all__ = ["METHODS", "fit_direction", "pair_auroc", "stability"]
