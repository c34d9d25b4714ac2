"""Distances between a natural and an intervened set of activations.

Every function takes two point clouds ``x`` (here: intervened) and ``y`` (natural), each
``[n, D]`` (numpy arrays or tensors on any device), validates them (same width, finite, enough
points) and returns a float. Conventions follow Grant et al. (2025), "Addressing divergent
representations from causal interventions on neural networks":

- :func:`emd` is the exact earth mover's distance between the two empirical measures (uniform
  weights) with ground cost ``|x - y|^2 / 2``, i.e. ``W_2^2 / 2``, solved by POT's network
  simplex (``ot.emd2``) in float64: exact up to the solver's float64 round-off (agrees with an
  independent assignment solver to 1e-9 relative, tested). ``normalize=True`` z-scores each set
  separately per dimension (its own mean and std, + 1e-5) and divides by ``sqrt(D)``: the LLM
  convention, blind to per-dimension affine shifts.
- :func:`sinkhorn` is the debiased Sinkhorn divergence of geomloss
  (``SamplesLoss("sinkhorn", p=2, blur=0.05, scaling=0.5, debias=True)``), what the paper and
  its code call "EMD": same cost, entropic regularisation ``blur^2``, and eps-scaling stopped
  early (``scaling=0.5``), so it is an *under-converged approximation*, 1-20 % below
  :func:`emd` on small clouds (up to ~50 % in one dimension). Kept for comparison with the
  paper's numbers and because it is differentiable (:func:`sinkhorn_tensor`).
- :func:`matching_cost`: optimal one-to-one matching (Hungarian) with a per-pair cost of mean
  squared difference (``"mse"``) or ``1 - Pearson correlation`` across dimensions (``"corr"``).
- :func:`nn_cost`: mean over ``x`` of the cost to the nearest point of ``y``.
- :func:`local_pca_residual`, :func:`lle_residual`: off-manifold residuals against the ``k``
  nearest natural neighbours.
- :func:`kde_score`: mean ``-log p(x)`` under a Gaussian kernel density fitted on ``y``.
- :func:`mmd`: the unbiased squared maximum mean discrepancy with a Gaussian kernel.
- :func:`classifier_auroc`: a classifier two-sample test, the cross-validated AUROC of telling
  ``x`` from ``y`` (0.5: indistinguishable).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError, MissingExtraError, ShapeError

ArrayLike = Any

#: geomloss' defaults as used by the paper.
DEFAULT_BLUR = 0.05


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------


def as_points(a: ArrayLike, name: str, *, min_points: int = 1) -> Tensor:
    """A ``[n, D]`` floating tensor; clear errors for the wrong rank, NaN/inf or too few points."""
    t = a if isinstance(a, Tensor) else torch.as_tensor(np.asarray(a))
    if t.dim() == 1:
        raise ShapeError(
            f"{name} is a vector of shape {tuple(t.shape)}; a point set is [n_points, width] "
            "(use x[:, None] for one-dimensional points)"
        )
    if t.dim() != 2:
        raise ShapeError(
            f"{name} has shape {tuple(t.shape)}; a point set is [n_points, width] (flatten the "
            "batch and position axes first)"
        )
    if not t.is_floating_point():
        t = t.double()
    if t.shape[0] < min_points:
        raise ShapeError(f"{name} has {t.shape[0]} points; this needs at least {min_points}")
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        rows = bad.any(-1).nonzero().flatten().tolist()[:8]
        raise InputError(
            f"{name} contains NaN or infinite values (rows {rows}); drop or fix them first"
        )
    return t


def check_pair(
    x: ArrayLike, y: ArrayLike, *, min_points: int = 1, names: tuple[str, str] = ("x", "y")
) -> tuple[Tensor, Tensor]:
    """Validate two point sets of the same width (moved to the first one's device)."""
    xt = as_points(x, names[0], min_points=min_points)
    yt = as_points(y, names[1], min_points=min_points)
    if xt.shape[1] != yt.shape[1]:
        raise ShapeError(
            f"{names[0]} has width {xt.shape[1]} but {names[1]} has width {yt.shape[1]}: both "
            "sets must be activations of the same site (same units)"
        )
    return xt, yt.to(xt.device)


def to_numpy(t: Tensor) -> np.ndarray:
    """``t`` as a float64 numpy array on the CPU (detached)."""
    return t.detach().to("cpu", torch.float64).numpy()


# --------------------------------------------------------------------------------------------
# exact EMD and the paper's Sinkhorn "EMD"
# --------------------------------------------------------------------------------------------

#: Largest ``n_x * n_y`` :func:`emd` solves by default (5000 x 5000: a 200 MB cost matrix;
#: measured 6 s for 2500 x 2500 points of width 64 on one busy core).
EMD_MAX_PAIRS = 25_000_000


def _restrict(xt: Tensor, yt: Tensor, dims: ArrayLike | None, what: str) -> tuple[Tensor, Tensor]:
    if dims is None:
        return xt, yt
    idx = torch.as_tensor(np.asarray(dims), dtype=torch.long).flatten()
    if idx.numel() == 0 or bool(((idx < 0) | (idx >= xt.shape[1])).any()):
        raise ShapeError(f"{what}: dims {idx.tolist()} out of range for width {xt.shape[1]}")
    idx = idx.to(xt.device)
    return xt[:, idx], yt[:, idx]


def emd(
    x: ArrayLike,
    y: ArrayLike,
    *,
    normalize: bool = False,
    dims: ArrayLike | None = None,
    max_pairs: int = EMD_MAX_PAIRS,
) -> float:
    """Exact earth mover's distance ``W_2^2 / 2`` between the empirical measures of ``x`` and
    ``y`` (uniform weights, ground cost ``|x - y|^2 / 2``).

    Solved by POT's network simplex (``ot.emd2``) on the CPU in float64; exact up to round-off.
    ``normalize=True``: z-score each set per dimension first and divide by ``sqrt(D)``.
    ``dims``: restrict both sets to these native coordinates first. ``max_pairs``: refuse
    problems with more than this many point pairs (time and memory grow with ``n_x * n_y``);
    subsample first, or raise it.
    """
    xt, yt = check_pair(x, y, min_points=2 if normalize else 1)
    xt, yt = _restrict(xt, yt, dims, "emd")
    n, m = xt.shape[0], yt.shape[0]
    if n * m > max_pairs:
        raise ShapeError(
            f"emd: {n} x {m} points is more than max_pairs={max_pairs} point pairs for the exact "
            "solver; subsample the sets, raise max_pairs, or use sinkhorn() (approximate)"
        )
    a, b = to_numpy(xt), to_numpy(yt)
    d = a.shape[1]
    if normalize:
        a, b = to_numpy(zscore(torch.from_numpy(a))), to_numpy(zscore(torch.from_numpy(b)))
    try:
        import ot
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise MissingExtraError(
            "the exact EMD needs POT: pip install 'faithlens[divergence]'"
        ) from e
    cost = np.maximum((a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T, 0.0) / 2.0
    wa, wb = np.full(n, 1.0 / n), np.full(m, 1.0 / m)
    value, log = ot.emd2(
        wa, wb, cost, numItermax=min(2**31 - 1, max(100_000, 50 * (n + m) ** 2)), log=True
    )
    if log.get("result_code", 1) != 1:
        raise InputError(f"emd: POT's network simplex did not converge ({log.get('warning')})")
    out = float(value)
    return out / math.sqrt(d) if normalize else out


def emd_normalized(x: ArrayLike, y: ArrayLike, **kwargs: Any) -> float:
    """:func:`emd` with ``normalize=True`` (per-set z-score, divided by ``sqrt(D)``)."""
    return emd(x, y, normalize=True, **kwargs)


def zscore(t: Tensor, eps: float = 1e-5) -> Tensor:
    """Per-dimension z-score of one set with its own mean and (sample) std, + ``eps``."""
    return (t - t.mean(0)) / (t.std(0) + eps)


def _samples_loss(blur: float, scaling: float) -> Callable[[Tensor, Tensor], Tensor]:
    try:
        from geomloss import SamplesLoss
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise MissingExtraError(
            "the Sinkhorn EMD needs geomloss: pip install 'faithlens[divergence]'"
        ) from e
    return SamplesLoss(
        loss="sinkhorn", p=2, blur=blur, scaling=scaling, debias=True, backend="tensorized"
    )


def sinkhorn(
    x: ArrayLike,
    y: ArrayLike,
    *,
    normalize: bool = False,
    blur: float = DEFAULT_BLUR,
    scaling: float = 0.5,
    dims: ArrayLike | None = None,
    dtype: torch.dtype = torch.float64,
) -> float:
    """Debiased Sinkhorn divergence ``S_eps(x, y)`` (geomloss' convention, the paper's "EMD").

    An approximation of :func:`emd`: with the default ``scaling=0.5`` geomloss stops its
    eps-scaling early and the value is 1-20 % below the exact EMD on small clouds.

    ``normalize=True``: z-score each set per dimension first and divide by ``sqrt(D)``.
    ``dims``: restrict both sets to these native coordinates first (e.g. the "EMD along feature
    dimensions" of the synthetic DAS task). Computed in ``dtype`` (float64 by default) on the
    inputs' device. Gradients flow when the inputs require them (use :func:`sinkhorn_tensor`).
    """
    return float(
        sinkhorn_tensor(
            x, y, normalize=normalize, blur=blur, scaling=scaling, dims=dims, dtype=dtype
        ).detach()
    )


def sinkhorn_tensor(
    x: ArrayLike,
    y: ArrayLike,
    *,
    normalize: bool = False,
    blur: float = DEFAULT_BLUR,
    scaling: float = 0.5,
    dims: ArrayLike | None = None,
    dtype: torch.dtype = torch.float64,
) -> Tensor:
    """:func:`sinkhorn` as a 0-d tensor (differentiable)."""
    if blur <= 0:
        raise InputError(f"sinkhorn: blur must be positive, got {blur}")
    if not 0 < scaling < 1:
        raise InputError(f"sinkhorn: scaling must be in (0, 1), got {scaling}")
    xt, yt = check_pair(x, y, min_points=2 if normalize else 1)
    xt, yt = _restrict(xt, yt, dims, "sinkhorn")
    if xt.device.type == "mps" and dtype == torch.float64:
        dtype = torch.float32
    xt, yt = xt.to(dtype), yt.to(dtype)
    d = xt.shape[1]
    if normalize:
        xt, yt = zscore(xt), zscore(yt)
    loss = _samples_loss(blur, scaling)
    if xt.device.type == "cpu" and xt.shape[0] * yt.shape[0] <= SMALL_PROBLEM:
        # Small problems: thread start-up and spinning cost more than they save, and are
        # pathological on a busy machine (seconds instead of milliseconds).
        with single_thread():
            value = loss(xt.contiguous(), yt.contiguous())
    else:
        value = loss(xt.contiguous(), yt.contiguous())
    return value / math.sqrt(d) if normalize else value


#: Point-pair count under which the CPU Sinkhorn runs single-threaded.
SMALL_PROBLEM = 4_000_000


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch CPU ops in the block on one thread (restored afterwards)."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def sinkhorn_normalized(x: ArrayLike, y: ArrayLike, **kwargs: Any) -> float:
    """:func:`sinkhorn` with ``normalize=True`` (per-set z-score, divided by ``sqrt(D)``)."""
    return sinkhorn(x, y, normalize=True, **kwargs)


# --------------------------------------------------------------------------------------------
# pairwise costs, matching, nearest neighbours
# --------------------------------------------------------------------------------------------


def pairwise_cost(x: ArrayLike, y: ArrayLike, cost: str = "mse") -> np.ndarray:
    """``[n_x, n_y]`` matrix of per-pair costs: mean squared difference (``"mse"``) or
    ``1 - Pearson correlation`` across dimensions (``"corr"``)."""
    xt, yt = check_pair(x, y)
    a, b = to_numpy(xt), to_numpy(yt)
    if cost == "mse":
        sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
        return np.asarray(np.maximum(sq, 0.0) / a.shape[1])
    if cost in ("corr", "cos"):
        if a.shape[1] < 2:
            raise ShapeError("a correlation cost needs points of width at least 2")
        ac = a - a.mean(1, keepdims=True)
        bc = b - b.mean(1, keepdims=True)
        na = np.linalg.norm(ac, axis=1)[:, None]
        nb = np.linalg.norm(bc, axis=1)[None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            r = (ac @ bc.T) / (na * nb)
        # A constant vector has no defined correlation: count it as uncorrelated.
        return np.asarray(1.0 - np.nan_to_num(r, nan=0.0))
    raise InputError(f"unknown pair cost {cost!r}; use 'mse' or 'corr'")


def matching_cost(x: ArrayLike, y: ArrayLike, cost: str = "mse") -> float:
    """Mean cost of the optimal one-to-one matching of ``x`` to ``y`` (Hungarian algorithm,
    ``scipy.optimize.linear_sum_assignment``; with unequal sizes the smaller set is matched)."""
    from scipy.optimize import linear_sum_assignment

    c = pairwise_cost(x, y, cost)
    r, k = linear_sum_assignment(c)
    return float(c[r, k].mean())


def nn_cost(x: ArrayLike, y: ArrayLike, cost: str = "mse") -> float:
    """Mean over the points of ``x`` of the cost to their nearest point of ``y``."""
    return float(pairwise_cost(x, y, cost).min(1).mean())


# --------------------------------------------------------------------------------------------
# off-manifold residuals
# --------------------------------------------------------------------------------------------


def _neighbours(x: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k).fit(y)
    return np.asarray(nn.kneighbors(x, return_distance=False))


def _check_k(k: int, n_natural: int, what: str) -> None:
    if k < 2:
        raise InputError(f"{what}: k must be at least 2, got {k}")
    if n_natural < k:
        raise ShapeError(
            f"{what} uses the k={k} nearest natural neighbours but the natural set has only "
            f"{n_natural} points; pass more natural points or a smaller k"
        )


def local_pca_residuals(
    x: ArrayLike, y: ArrayLike, *, k: int = 20, variance: float = 0.95
) -> np.ndarray:
    """Per point of ``x``: the norm of ``x - mu`` off the local principal subspace of its ``k``
    nearest natural neighbours (mean ``mu``; the fewest components reaching ``variance`` of the
    neighbours' variance)."""
    xt, yt = check_pair(x, y)
    _check_k(k, yt.shape[0], "local_pca_residual")
    if not 0 < variance <= 1:
        raise InputError(f"local_pca_residual: variance must be in (0, 1], got {variance}")
    a, b = to_numpy(xt), to_numpy(yt)
    idx = _neighbours(a, b, k)
    out = np.empty(a.shape[0])
    for i in range(a.shape[0]):
        nb = b[idx[i]]
        mu = nb.mean(0)
        _, s, vt = np.linalg.svd(nb - mu, full_matrices=False)
        ev = s**2
        total = ev.sum()
        if total <= 0:
            d = 0
        else:
            d = int(np.searchsorted(np.cumsum(ev) / total, variance - 1e-12) + 1)
        u = vt[:d]
        r = a[i] - mu
        out[i] = np.linalg.norm(r - (r @ u.T) @ u)
    return out


def local_pca_residual(x: ArrayLike, y: ArrayLike, *, k: int = 20, variance: float = 0.95) -> float:
    """Mean of :func:`local_pca_residuals`."""
    return float(local_pca_residuals(x, y, k=k, variance=variance).mean())


def lle_residuals(x: ArrayLike, y: ArrayLike, *, k: int = 20, reg: float = 1e-3) -> np.ndarray:
    """Per point of ``x``: ``|x - sum_j w_j n_j|`` with locally-linear-embedding weights over its
    ``k`` nearest natural neighbours (weights sum to 1; ridge ``reg * trace(C) / k``)."""
    xt, yt = check_pair(x, y)
    _check_k(k, yt.shape[0], "lle_residual")
    a, b = to_numpy(xt), to_numpy(yt)
    idx = _neighbours(a, b, k)
    out = np.empty(a.shape[0])
    ones = np.ones(k)
    for i in range(a.shape[0]):
        nb = b[idx[i]]
        z = nb - a[i]
        c = z @ z.T
        tr = np.trace(c)
        c = c + np.eye(k) * (reg * tr / k if tr > 0 else reg)
        w = np.linalg.solve(c, ones)
        w = w / w.sum()
        out[i] = np.linalg.norm(a[i] - w @ nb)
    return out


def lle_residual(x: ArrayLike, y: ArrayLike, *, k: int = 20, reg: float = 1e-3) -> float:
    """Mean of :func:`lle_residuals`."""
    return float(lle_residuals(x, y, k=k, reg=reg).mean())


def kde_scores(x: ArrayLike, y: ArrayLike, *, bandwidth: float | str = 0.4) -> np.ndarray:
    """Per point of ``x``: ``-log p(x)`` under a Gaussian kernel density fitted on ``y``.

    ``bandwidth``: a float is an isotropic kernel of that standard deviation (the paper's 0.4);
    ``"scott"`` / ``"silverman"`` fit a full-covariance kernel (scipy's ``gaussian_kde``), which
    needs more natural points than dimensions.
    """
    xt, yt = check_pair(x, y)
    a, b = to_numpy(xt), to_numpy(yt)
    n, d = b.shape
    if isinstance(bandwidth, str):
        if bandwidth not in ("scott", "silverman"):
            raise InputError(
                f"kde bandwidth must be a float, 'scott' or 'silverman', not {bandwidth!r}"
            )
        if n <= d:
            raise ShapeError(
                f"a full-covariance KDE needs more natural points than dimensions; got {n} points "
                f"of width {d}. Use an isotropic bandwidth (a float) or reduce the width first"
            )
        from scipy.stats import gaussian_kde

        kde = gaussian_kde(b.T, bw_method=bandwidth)
        return np.asarray(-kde.logpdf(a.T))
    h = float(bandwidth)
    if h <= 0:
        raise InputError(f"kde bandwidth must be positive, got {h}")
    from scipy.special import logsumexp

    sq = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    sq = np.maximum(sq, 0.0)
    logp = (
        logsumexp(-sq / (2 * h * h), axis=1) - math.log(n) - 0.5 * d * math.log(2 * math.pi * h * h)
    )
    return np.asarray(-logp)


def kde_score(x: ArrayLike, y: ArrayLike, *, bandwidth: float | str = 0.4) -> float:
    """Mean of :func:`kde_scores`."""
    return float(kde_scores(x, y, bandwidth=bandwidth).mean())


# --------------------------------------------------------------------------------------------
# two-sample statistics
# --------------------------------------------------------------------------------------------


def median_bandwidth(x: ArrayLike, y: ArrayLike) -> float:
    """The median heuristic: the median pairwise Euclidean distance of the pooled sets."""
    xt, yt = check_pair(x, y)
    z = to_numpy(torch.cat([xt, yt]))
    from scipy.spatial.distance import pdist

    d = pdist(z)
    med = float(np.median(d)) if d.size else 1.0
    return med if med > 0 else 1.0


def mmd(x: ArrayLike, y: ArrayLike, *, bandwidth: float | None = None) -> float:
    """Unbiased squared MMD with the Gaussian kernel ``exp(-|a - b|^2 / (2 h^2))``.

    ``h`` defaults to the median heuristic on the pooled sets. Can be slightly negative when the
    sets come from the same distribution.
    """
    xt, yt = check_pair(x, y, min_points=2)
    h = median_bandwidth(xt, yt) if bandwidth is None else float(bandwidth)
    if h <= 0:
        raise InputError(f"mmd bandwidth must be positive, got {h}")
    a, b = to_numpy(xt), to_numpy(yt)

    def gram(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        sq = (u * u).sum(1)[:, None] + (v * v).sum(1)[None, :] - 2.0 * u @ v.T
        return np.asarray(np.exp(-np.maximum(sq, 0.0) / (2 * h * h)))

    m, n = a.shape[0], b.shape[0]
    kxx, kyy, kxy = gram(a, a), gram(b, b), gram(a, b)
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2 * kxy.mean())


def classifier_auroc(
    x: ArrayLike,
    y: ArrayLike,
    *,
    classifier: str = "logistic",
    folds: int = 5,
    seed: int = 0,
) -> float:
    """Classifier two-sample test: the cross-validated AUROC of a classifier that tells ``x``
    (label 1) from ``y`` (label 0). 0.5 means the sets cannot be told apart; 1.0 perfectly.

    ``classifier``: ``"logistic"`` (standardised features, L2 logistic regression), ``"knn"``
    (10 nearest neighbours) or ``"mlp"`` (one hidden layer of 64).
    """
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xt, yt = check_pair(x, y)
    a, b = to_numpy(xt), to_numpy(yt)
    if min(len(a), len(b)) < folds:
        raise ShapeError(
            f"classifier_auroc with {folds} folds needs at least {folds} points in each set "
            f"(got {len(a)} and {len(b)})"
        )
    clf: Any
    if classifier == "logistic":
        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(max_iter=2000)
    elif classifier == "knn":
        from sklearn.neighbors import KNeighborsClassifier

        clf = KNeighborsClassifier(n_neighbors=min(10, len(a) + len(b) - 1))
    elif classifier == "mlp":
        from sklearn.neural_network import MLPClassifier

        clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=500, random_state=seed)
    else:
        raise InputError(f"unknown classifier {classifier!r}; use 'logistic', 'knn' or 'mlp'")
    z = np.concatenate([a, b])
    lab = np.concatenate([np.ones(len(a)), np.zeros(len(b))])
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    prob = cross_val_predict(
        make_pipeline(StandardScaler(), clf), z, lab, cv=cv, method="predict_proba"
    )[:, 1]
    return float(roc_auc_score(lab, prob))


__all__ = [
    "DEFAULT_BLUR",
    "EMD_MAX_PAIRS",
    "as_points",
    "check_pair",
    "classifier_auroc",
    "emd",
    "emd_normalized",
    "kde_score",
    "kde_scores",
    "lle_residual",
    "lle_residuals",
    "local_pca_residual",
    "local_pca_residuals",
    "matching_cost",
    "median_bandwidth",
    "mmd",
    "nn_cost",
    "to_numpy",
    "pairwise_cost",
    "sinkhorn",
    "sinkhorn_normalized",
    "sinkhorn_tensor",
    "zscore",
]
