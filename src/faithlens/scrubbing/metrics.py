"""What causal scrubbing measures: a behaviour per example, and how to read the numbers.

A :class:`ScrubBehaviour` turns the (scrubbed) model's outputs and the *reference* rows into one
number per example, usually a loss against the reference's labels. Built-ins:

- :class:`CrossEntropy` (class labels, or next tokens at given positions),
- :class:`BinaryCrossEntropy` (a two-logit or one-logit classifier, Redwood's paren metric),
- :class:`MSE` (regression, the toy models),
- :class:`NextTokenLoss` (language-model loss over every real token),
- :class:`TaskMetric` (a faithlens task metric such as logit difference at the task positions),
- :class:`Fn` (any function).

``% loss recovered = 100 * (E_base - E_h) / (E_base - E_orig)`` (the same formula holds for a
score, where higher is better). It can exceed 100 % or be negative; the write-up calls it "an
arithmetic aid", not a fraction.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError, MetricError, ShapeError
from ..stats import bootstrap_means, mean_se
from .data import ScrubData


def _finite(v: Tensor, what: str) -> Tensor:
    bad = ~torch.isfinite(v)
    if bool(bad.any()):
        rows = bad.reshape(len(v), -1).any(-1).nonzero().flatten().tolist()[:8]
        raise MetricError(f"{what} is NaN or infinite for examples {rows}")
    return v


class ScrubBehaviour:
    """Outputs + reference rows -> one number per example."""

    name = "behaviour"
    higher_is_better = False
    #: whether the outputs are logits (then the KL to the original outputs is reported)
    logits = True

    def positions(self, ref: ScrubData) -> Tensor | None:
        """The positions whose logits the behaviour reads (``[n]`` or ``[n, k]``), or None."""
        return None

    def compute(self, out: Tensor, ref: ScrubData) -> Tensor:
        raise NotImplementedError

    def __call__(self, out: Tensor, ref: ScrubData) -> Tensor:
        _finite(out.float(), f"the model output reaching {self.name}")
        v = self.compute(out.float(), ref)
        if v.shape != (len(ref),):
            raise ShapeError(f"{self.name} returned shape {tuple(v.shape)} for {len(ref)} examples")
        return _finite(v, self.name)

    def describe(self) -> str:
        return f"{self.name} ({'higher' if self.higher_is_better else 'lower'} is better)"

    def log_probs(self, out: Tensor) -> Tensor | None:
        """The output distribution whose KL to the model's is reported (None: not a
        distribution). Default: a softmax over the last axis when ``logits`` is set."""
        if not self.logits or out.shape[-1] < 2:
            return None
        return torch.log_softmax(out.float(), -1)


def _col(ref: ScrubData, name: str, device: torch.device) -> Tensor:
    v = ref[name]
    if not isinstance(v, Tensor):
        raise InputError(f"column {name!r} must be numeric")
    return v.to(device)


@dataclass(frozen=True)
class CrossEntropy(ScrubBehaviour):
    """Cross-entropy of ``label`` (class ids ``[n]``, or token ids ``[n, k]`` read at
    ``positions``, a column of ``[n]`` / ``[n, k]`` positions)."""

    label: str = "label"
    positions_column: str | None = None
    name: str = "cross_entropy"

    def positions(self, ref: ScrubData) -> Tensor | None:
        return None if self.positions_column is None else ref[self.positions_column]

    def compute(self, out: Tensor, ref: ScrubData) -> Tensor:
        y = _col(ref, self.label, out.device).long()
        lp = torch.log_softmax(out, -1)
        if lp.dim() == 2:
            return -lp.gather(-1, y.reshape(-1, 1))[:, 0]
        y = y.reshape(len(ref), -1)
        if lp.shape[1] != y.shape[1]:
            raise ShapeError(f"{self.name}: {lp.shape[1]} output positions, {y.shape[1]} labels")
        return -lp.gather(-1, y[..., None])[..., 0].mean(-1)


@dataclass(frozen=True)
class BinaryCrossEntropy(ScrubBehaviour):
    """Binary cross-entropy of ``label`` (0/1): a two-logit output uses ``logit[1] - logit[0]``,
    a one-logit output the logit itself. ``positions_column``: read one position (``[n]``)."""

    label: str = "label"
    positions_column: str | None = None
    name: str = "bce"

    def positions(self, ref: ScrubData) -> Tensor | None:
        return None if self.positions_column is None else ref[self.positions_column]

    def compute(self, out: Tensor, ref: ScrubData) -> Tensor:
        y = _col(ref, self.label, out.device).float().reshape(-1)
        o = out.reshape(len(ref), -1) if out.dim() > 2 else out
        if o.dim() == 1:
            z = o
        elif o.shape[-1] == 2:
            z = o[:, 1] - o[:, 0]
        elif o.shape[-1] == 1:
            z = o[:, 0]
        else:
            raise ShapeError(f"{self.name}: outputs of width {o.shape[-1]}; give 1 or 2 logits")
        return torch.nn.functional.binary_cross_entropy_with_logits(z, y, reduction="none")

    def log_probs(self, out: Tensor) -> Tensor | None:
        o = out.float().reshape(out.shape[0], -1) if out.dim() > 2 else out.float()
        z = o if o.dim() == 1 else (o[:, 1] - o[:, 0] if o.shape[-1] == 2 else o[:, 0])
        ls = torch.nn.functional.logsigmoid
        return torch.stack([ls(-z), ls(z)], -1)


@dataclass(frozen=True)
class MSE(ScrubBehaviour):
    """Squared error to the column ``target`` (summed over output dimensions)."""

    target: str = "y"
    name: str = "mse"
    logits = False

    def compute(self, out: Tensor, ref: ScrubData) -> Tensor:
        y = _col(ref, self.target, out.device).float()
        o = out.reshape(len(ref), -1)
        return ((o - y.reshape(len(ref), -1)) ** 2).sum(-1)


@dataclass(frozen=True)
class NextTokenLoss(ScrubBehaviour):
    """Language-model loss: mean cross-entropy of each next real token (``ids``, ``mask``)."""

    ids: str = "ids"
    mask: str = "mask"
    name: str = "next_token_loss"

    def compute(self, out: Tensor, ref: ScrubData) -> Tensor:
        ids = _col(ref, self.ids, out.device).long()
        m = (
            _col(ref, self.mask, out.device).float()
            if self.mask in ref
            else torch.ones_like(ids).float()
        )
        lp = torch.log_softmax(out[:, :-1], -1)
        nll = -lp.gather(-1, ids[:, 1:, None])[..., 0]
        w = m[:, 1:]
        return (nll * w).sum(-1) / w.sum(-1).clamp(min=1)


@dataclass(frozen=True)
class TaskMetric(ScrubBehaviour):
    """A faithlens task metric (``faithlens.tasks.metrics``: logit difference, log-prob, ...)
    read at the column ``positions`` against the column ``answers``."""

    metric: Any = None
    answers: str = "answers"
    positions_column: str = "positions"

    def __post_init__(self) -> None:
        from ..tasks.metrics import get_metric

        m = get_metric(self.metric if self.metric is not None else "logit_diff")
        object.__setattr__(self, "metric", m)

    @property
    def name(self) -> str:  # type: ignore[override]
        return str(self.metric.name)

    @property
    def higher_is_better(self) -> bool:  # type: ignore[override]
        return bool(self.metric.higher_is_better)

    def positions(self, ref: ScrubData) -> Tensor | None:
        return ref[self.positions_column]

    def compute(self, out: Tensor, ref: ScrubData) -> Tensor:
        a = _col(ref, self.answers, out.device).long()
        logits = out[:, 0] if out.dim() == 3 else out
        return self.metric.compute(logits, a)


@dataclass(frozen=True)
class Fn(ScrubBehaviour):
    """Any function ``fn(outputs, ref_rows) -> [n]``."""

    fn: Callable[[Tensor, ScrubData], Tensor] | None = None
    name: str = "custom"
    higher_is_better: bool = False
    logits: bool = False
    positions_column: str | None = None

    def positions(self, ref: ScrubData) -> Tensor | None:
        return None if self.positions_column is None else ref[self.positions_column]

    def compute(self, out: Tensor, ref: ScrubData) -> Tensor:
        if self.fn is None:
            raise InputError("Fn behaviour needs fn=")
        return torch.as_tensor(self.fn(out, ref), dtype=torch.float32, device=out.device).reshape(
            -1
        )


def kl_to_original(lp: Tensor, lq: Tensor) -> Tensor:
    """Per example KL(p || q) between log-distributions over the last axis, averaged over the
    other axes (p: the model's outputs, q: the scrubbed model's)."""
    kl = (lp.exp() * (lp - lq)).sum(-1)
    return kl.reshape(len(kl), -1).mean(-1)


# ---------------------------------------------------------------------------------------------
# Numbers and their uncertainty
# ---------------------------------------------------------------------------------------------


def recovered(
    orig: np.ndarray,
    h: np.ndarray,
    base: np.ndarray,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float, float]:
    """% recovered = 100 (E_base - E_h) / (E_base - E_orig), with a paired BCa bootstrap over
    examples: (estimate, se, low, high)."""

    def stat(o: Any, hh: Any, b: Any) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.asarray(100.0 * (b - hh) / (b - o))

    iv = bootstrap_means(stat, (orig, h, base), n_boot=n_boot, level=level, seed=seed)
    return (float(iv.estimate), float(iv.se), float(iv.low), float(iv.high))


def mean_se_interval(
    x: np.ndarray, *, n_boot: int, level: float, seed: int
) -> tuple[float, float, float, float]:
    """Mean, standard error (std / sqrt n) and BCa bootstrap interval, as the tuple
    ``(estimate, se, low, high)`` of the scrubbed losses and their differences."""
    m, se = mean_se(x)
    iv = bootstrap_means(lambda a: np.asarray(a), (x,), n_boot=n_boot, level=level, seed=seed)
    return (float(m), float(se), float(iv.low), float(iv.high))


def mean_interval(
    x: np.ndarray, *, n_boot: int, level: float, seed: int
) -> tuple[float, float, float, float]:
    """Deprecated name of :func:`mean_se_interval` (``faithlens.stats.mean_interval`` returns
    an ``Interval`` with the bootstrap standard error); it warns and will be removed after one
    release."""
    warnings.warn(
        "faithlens.scrubbing.metrics.mean_interval is now mean_se_interval "
        "(faithlens.stats.mean_interval is the bootstrap Interval of a mean)",
        DeprecationWarning,
        stacklevel=2,
    )
    return mean_se_interval(x, n_boot=n_boot, level=level, seed=seed)


def cancellation(orig: np.ndarray, h: np.ndarray) -> dict[str, float]:
    """How much per-example change the mean hides: ``index = 1 - |mean d| / mean |d|`` with
    ``d = f_h - f_orig`` (0: every example moves the same way; 1: the moves cancel exactly), the
    mean absolute change, and the shares of examples that move up and down."""
    d = h - orig
    mad = float(np.abs(d).mean())
    tol = 1e-6 * max(float(np.abs(orig).mean()), 1e-12) + 1e-9
    return {
        "mean_change": float(d.mean()),
        "mean_abs_change": mad,
        "index": float(1.0 - abs(d.mean()) / mad) if mad > tol else 0.0,
        "share_up": float((d > tol).mean()),
        "share_down": float((d < -tol).mean()),
    }


def warnings_for(
    *,
    orig: np.ndarray,
    h: np.ndarray,
    bases: dict[str, np.ndarray],
    pct: dict[str, tuple[float, float, float, float]],
    higher_is_better: bool,
    node_self_share: dict[str, float],
    self_threshold: float = 0.5,
) -> list[str]:
    """The pitfalls of section 4 of the spec, as warnings (see docs/scrubbing.md)."""
    out: list[str] = []
    d = h - orig
    md, se = mean_se(d)
    better = -float(md) if not higher_is_better else float(md)
    if better > 2 * float(se) and better > 1e-9:
        what = "loss" if not higher_is_better else "score"
        rel = "below" if not higher_is_better else "above"
        out.append(
            f"BETTER THAN THE MODEL: the scrubbed {what} is {rel} the model's own by "
            f"{abs(float(md)):.4g} ± {float(se):.2g} (paired). The hypothesis may remove a harmful "
            "correlation (sampling correlated errors separately, appendix 6.1) or sneak in "
            "information the model does not use (appendix 7); check it with the adversary."
        )
    for name, (p, _s, low, _high) in pct.items():
        if np.isfinite(p) and p > 100.0 and low > 100.0:
            out.append(
                f"% recovered against {name!r} is {p:.1f} % (CI low {low:.1f} %): above 100 %."
            )
        elif np.isfinite(p) and p > 100.0:
            out.append(f"% recovered against {name!r} is {p:.1f} %, above 100 % (within noise).")
        if np.isfinite(p) and p < 0.0:
            out.append(f"% recovered against {name!r} is {p:.1f} %: worse than that baseline.")
        if not np.isfinite(p):
            out.append(f"% recovered against {name!r} is undefined: the baseline equals the model.")
    c = cancellation(orig, h)
    gap = max((abs(float(b.mean() - orig.mean())) for b in bases.values()), default=0.0)
    scale = gap if gap > 0 else float(np.abs(orig).mean()) + 1e-12
    if (
        c["index"] >= 0.5
        and c["mean_abs_change"] >= 0.1 * scale
        and c["share_up"] >= 0.1
        and c["share_down"] >= 0.1
    ):
        out.append(
            f"CANCELLATION: per-example values move both ways ({100 * c['share_up']:.0f} % up, "
            f"{100 * c['share_down']:.0f} % down); the mean change {c['mean_change']:.4g} hides a "
            f"mean absolute change of {c['mean_abs_change']:.4g} (cancellation index "
            f"{c['index']:.2f}). A faithful mean does not mean faithful examples."
        )
    tiny = {node: share for node, share in node_self_share.items() if share >= self_threshold}
    if tiny:
        worst = sorted(tiny.items(), key=lambda kv: -kv[1])
        shown = ", ".join(f"{node!r} ({100 * share:.0f} %)" for node, share in worst[:6])
        more = f" and {len(worst) - 6} more" if len(worst) > 6 else ""
        out.append(
            f"TINY CLASSES: {len(worst)} node(s) drew the very datum they are conditioned on for "
            f"most examples: {shown}{more}. Their equivalence classes are so small that little "
            "is scrubbed (use a bigger pool, exclude_self=True or a Generate sampler)."
        )
    return out


__all__ = [
    "BinaryCrossEntropy",
    "CrossEntropy",
    "Fn",
    "MSE",
    "NextTokenLoss",
    "ScrubBehaviour",
    "TaskMetric",
    "cancellation",
    "kl_to_original",
    "mean_interval",  # deprecated: mean_se_interval
    "mean_se_interval",
    "recovered",
    "warnings_for",
]


def __getattr__(name: str) -> Any:
    if name == "Behaviour":  # the old name, which faithlens.Behaviour (representations) also had
        import warnings

        warnings.warn(
            "faithlens.scrubbing.metrics.Behaviour is now ScrubBehaviour (faithlens.Behaviour is "
            "the representations one)",
            DeprecationWarning,
            stacklevel=2,
        )
        return ScrubBehaviour
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
