"""What :func:`faithlens.neurons.explain` takes: argument checks, metric names, activations, the
holdout split of thresholds and the validation of the probing data, all before any expensive work.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from .. import validate as V
from ..errors import InputError, ShapeError
from . import bounds as _b
from .kernels import FAMILIES, METRICS
from .probing import Activations, Concepts, collect

if TYPE_CHECKING:
    from ..models.model import Model

DIRECTIONS = ("unit_predicts_concept", "concept_predicts_unit")
BOUNDS = ("auto", "theory", "bootstrap")
#: metrics that read concept values as probabilities (must lie in [0, 1])
PROBABILITY_METRICS = {"accuracy", "precision", "recall", "f1", "iou", "auroc", "auprc"}
#: smallest bootstrap that may feed a bootstrap band
MIN_BOOT_FOR_BAND = 50


def as_metrics(metric: str | Sequence[str]) -> tuple[str, ...]:
    ms = (metric,) if isinstance(metric, str) else tuple(metric)
    if not ms:
        raise InputError(f"no metric given; choose from {list(METRICS)}")
    out = []
    for m in ms:
        key = m.lower().replace("-", "").replace("_", "")
        alias = {
            "auc": "auroc",
            "ap": "auprc",
            "pearson": "correlation",
            "corr": "correlation",
            "cos": "cosine",
            "acc": "accuracy",
            "wpmi": "softwpmi",
        }
        key = alias.get(key, key)
        if key not in FAMILIES:
            import difflib

            near = difflib.get_close_matches(m, METRICS, n=3)
            raise InputError(
                f"unknown metric {m!r}; choose from {list(METRICS)}"
                + (f" (did you mean {near}?)" if near else "")
            )
        if key not in out:
            out.append(key)
    return tuple(out)


def theory_available(metric: str, *, grouped: bool, binary: bool) -> bool:
    """Whether ``metric`` has a finite-sample bound for this kind of probing data."""
    fam = FAMILIES[metric]
    if fam == "threshold":
        return True
    if fam == "auroc":
        return binary and not grouped
    return False


def as_activations(
    activations: Any,
    model: Model | None,
    inputs: Any,
    unit_names: Sequence[str] | None,
    *,
    pool: str | None = None,
) -> Activations:
    from ..models.sites import Site

    if isinstance(activations, str | Site):
        if model is None or inputs is None:
            raise InputError(
                f"explain({activations!r}, ...) reads a site: pass model= and inputs= as well"
            )
        acts = collect(model, inputs, activations, pool=pool)
    elif isinstance(activations, Activations):
        acts = activations
    elif isinstance(activations, Tensor | np.ndarray):
        v = torch.as_tensor(activations)
        if v.dim() == 1:
            v = v[:, None]
        if v.dim() != 2:
            raise ShapeError(
                f"activations must be [n_samples, n_units], got shape {tuple(v.shape)}; token "
                "activations [batch, pos, width] come from faithlens.neurons.collect (which masks "
                "padding), conv maps go to faithlens.neurons.dissect"
            )
        if not v.is_floating_point():
            v = v.float()
        acts = Activations(v)
    else:
        raise InputError(
            f"cannot read activations from a {type(activations).__name__}: pass a [n_samples, "
            "n_units] tensor or array, faithlens.neurons.Activations, or a site name with "
            "model= and inputs="
        )
    if unit_names is not None:
        acts = Activations(acts.values, tuple(unit_names), acts.groups, acts.tokens, acts.site)
    return acts


def check_explain_args(
    *,
    alpha: Any = 0.05,
    threshold: Any = None,
    holdout: Any = 0.0,
    direction: Any = "unit_predicts_concept",
    delta: Any = 0.05,
    n_boot: Any = 1000,
    level: Any = 0.9,
    interval: Any = "kl",
    bound: Any = "auto",
    seed: Any = 0,
    max_memory: Any = None,
    progress: Any = None,
    cli: bool = False,
) -> None:
    """Refuse a bad :func:`explain` argument before any activation is read or collected
    (``cli=True`` names the command-line options)."""

    def nm(name: str) -> str:
        return "--" + name.replace("_", "-") if cli else name

    V.choice(nm("direction"), direction, DIRECTIONS)
    V.choice(nm("interval"), interval, _b.INTERVALS)
    V.choice(nm("bound"), bound, BOUNDS)
    V.probability(nm("delta"), delta, fix="bounds hold with probability 1 - delta, e.g. 0.05")
    V.level(level, nm("level"))
    nb = V.nonnegative_int(nm("n_boot"), n_boot, fix="0 skips the stability analysis")
    if nb == 1:
        raise V.fail(nm("n_boot"), n_boot, "one resample gives no spread", "use 0 or e.g. 1000")
    if threshold is None:
        V.probability(nm("alpha"), alpha, fix="the top quantile that fires, e.g. 0.05")
    elif isinstance(threshold, numbers.Real):
        V.finite_float(nm("threshold"), threshold)
    V.finite_float(nm("holdout"), holdout, low=0.0, high=1.0, high_open=True)
    V.nonnegative_int(nm("seed"), seed)
    if max_memory is not None:
        V.positive_int(nm("max_memory"), max_memory, fix="give a number of bytes")
    if progress is not None and not callable(progress):
        raise V.fail(nm("progress"), progress, "must be a callable (done, total) or None")


def split_thresholds(
    acts: Activations, con: Concepts, groups: Any, alpha: float, holdout: float, seed: int
) -> tuple[Activations, Concepts, Any, Tensor]:
    """Set each unit's top-``alpha`` threshold on a random ``holdout`` share of the samples (of
    the groups, when grouped) and return the rest with those thresholds."""
    if not 0 < holdout < 1:
        raise InputError(f"holdout must be in (0, 1), got {holdout}")
    if not 0 < alpha < 1:
        raise InputError(f"alpha (the firing quantile) must be in (0, 1), got {alpha}")
    n = acts.n_samples
    if con.n_samples != n:
        raise ShapeError(f"concept labels have {con.n_samples} rows but the activations {n}")
    rng = np.random.default_rng(seed + 7)
    if groups is not None:
        g = torch.unique(torch.as_tensor(np.asarray(groups)).reshape(-1), return_inverse=True)[1]
        n_g = int(g.max()) + 1
        held_groups = torch.from_numpy(rng.random(n_g) < holdout)
        held = held_groups[g]
    else:
        held = torch.from_numpy(rng.random(n) < holdout)
    if int(held.sum()) < 2 or int((~held).sum()) < 2:
        raise InputError(f"holdout={holdout} leaves too few samples on one side of the split")
    x_h = acts.values[held].float()
    k = max(1, math.ceil(alpha * x_h.shape[0] - 1e-9))
    thr = torch.topk(x_h, k, dim=0).values[-1]
    # fire strictly above: the k-th largest held-out value itself does not fire
    keep = ~held
    rest = Activations(
        acts.values[keep],
        acts.unit_names,
        acts.groups[keep] if acts.groups is not None else None,
        acts.tokens[keep] if acts.tokens is not None else None,
        acts.site,
    )
    grp = torch.as_tensor(np.asarray(groups)).reshape(-1)[keep] if groups is not None else None
    left = con.values[keep]
    gone = (left.amax(0) == left.amin(0)).nonzero().flatten().tolist()
    if gone:
        raise InputError(
            f"after setting thresholds on a held-out {holdout:.0%}, concepts "
            f"{_names(gone, con.names)} take one value on the rest of the probing set; use a "
            "smaller holdout, more data, or drop these concepts"
        )
    return rest, Concepts(left, con.names), grp, thr


def _names(seq: Sequence[int], names: Sequence[str], k: int = 5) -> str:
    shown = [names[i] for i in list(seq)[:k]]
    more = f" and {len(seq) - k} more" if len(seq) > k else ""
    return ", ".join(repr(s) for s in shown) + more


def validate(
    acts: Activations,
    con: Concepts,
    metrics: tuple[str, ...],
    *,
    alpha: float,
    threshold: Any,
    groups: Any,
    skip_constant: bool,
    n_boot: int,
    bound: str,
) -> tuple[Tensor, Tensor, Tensor | None, list[int], Tensor | None]:
    """Check everything before any expensive work; returns ``(x, c, thresholds, kept units,
    groups)``."""
    x = acts.values
    n, n_units = int(x.shape[0]), int(x.shape[1])
    unames = acts.unit_names or tuple(str(i) for i in range(n_units))
    if n < 2:
        raise InputError(f"the probing set has {n} samples; explanations need at least 2")
    if n_units == 0:
        raise InputError("no units to explain (activations have 0 columns)")
    c = con.values
    if int(c.shape[0]) != n:
        raise ShapeError(
            f"concept labels have {c.shape[0]} rows but the activations have {n} samples: there "
            "must be one label row per probing sample (for token sites: one per real token, "
            "padding removed; faithlens.neurons.probe_tokens builds both aligned)"
        )
    if con.n_concepts == 0:
        raise InputError("the concept set is empty: pass at least one concept")
    xf = x.float()
    bad_x = (~torch.isfinite(xf)).any(0).nonzero().flatten().tolist()
    if bad_x:
        raise InputError(
            f"activations contain NaN or inf in units {_names(bad_x, unames)}; clean or drop them"
        )
    cf = c.float()
    bad_c = (~torch.isfinite(cf)).any(0).nonzero().flatten().tolist()
    if bad_c:
        raise InputError(f"concept labels contain NaN or inf in {_names(bad_c, con.names)}")
    if any(m in PROBABILITY_METRICS for m in metrics):
        out = ((cf < 0) | (cf > 1)).any(0).nonzero().flatten().tolist()
        if out:
            raise InputError(
                f"concepts {_names(out, con.names)} have values outside [0, 1]; labels are "
                "presence probabilities (only correlation, cosine and softwpmi take raw scores)"
            )
    const_c = (cf.amax(0) == cf.amin(0)).nonzero().flatten().tolist()
    if const_c:
        raise InputError(
            f"concepts {_names(const_c, con.names)} take one value on every probing sample "
            "(never or always present), so no unit can be compared with them; drop them "
            "(Concepts.drop_empty())"
        )
    const_u = (xf.amax(0) == xf.amin(0)).nonzero().flatten().tolist()
    keep = list(range(n_units))
    if const_u:
        if not skip_constant:
            raise InputError(
                f"units {_names(const_u, unames)} are constant on the probing set, so they have "
                "no top activations to explain; drop them or pass skip_constant=True"
            )
        keep = [u for u in keep if u not in set(const_u)]
        if not keep:
            raise InputError("every unit is constant on the probing set")
    thr: Tensor | None = None
    if threshold is not None:
        t = torch.as_tensor(threshold, dtype=torch.float32).reshape(-1)
        if t.numel() == 1:
            t = t.expand(n_units).clone()
        if t.numel() != n_units:
            raise ShapeError(
                f"{t.numel()} thresholds for {n_units} units: give one, or one per unit"
            )
        if not bool(torch.isfinite(t).all()):
            raise InputError("thresholds must be finite")
        thr = t[keep]
    elif any(FAMILIES[m] == "threshold" for m in metrics):
        if not 0 < alpha < 1:
            raise InputError(f"alpha (the firing quantile) must be in (0, 1), got {alpha}")
        k = math.ceil(alpha * n - 1e-9)
        if not 1 <= k <= n - 1:
            raise InputError(
                f"alpha={alpha} makes {k} of {n} samples fire; choose alpha so that between 1 "
                f"and {n - 1} samples fire"
            )
    g: Tensor | None = None
    if groups is not None:
        g0 = torch.as_tensor(np.asarray(groups)).reshape(-1)
        if int(g0.shape[0]) != n:
            raise ShapeError(f"groups has {g0.shape[0]} entries but there are {n} samples")
        g = torch.unique(g0, return_inverse=True)[1].long()
        if int(g.max()) + 1 < 2:
            raise InputError("all samples are in one group: bounds and bootstrap need at least 2")
    binary = bool(((cf == 0) | (cf == 1)).all())
    for m in metrics:
        has = theory_available(m, grouped=g is not None, binary=binary)
        if bound == "theory" and not has:
            raise InputError(
                f"{m} has no finite-sample bound for this data"
                + (" (grouped samples)" if g is not None else "")
                + "; use bound='auto' for a bootstrap band"
            )
        if (bound == "bootstrap" or not has) and n_boot < MIN_BOOT_FOR_BAND:
            raise InputError(
                f"{m} gets a bootstrap band here, which needs n_boot >= {MIN_BOOT_FOR_BAND} "
                f"(got {n_boot})"
            )
    return x, c, thr, keep, g


__all__ = [
    "BOUNDS",
    "DIRECTIONS",
    "MIN_BOOT_FOR_BAND",
    "PROBABILITY_METRICS",
    "as_metrics",
    "check_explain_args",
    "split_thresholds",
    "theory_available",
    "validate",
]
