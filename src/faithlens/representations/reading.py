"""Reading vectors: one direction per layer from contrast pairs, with held-out accuracy.

For pair ``i`` with activations ``h+_i`` (positive member) and ``h-_i`` (negative member) at one
token of layer ``l``, the methods are

- ``"pca"`` (RepE's LAT reader): the first principal component of the paired differences
  ``d_i = s_i (h+_i - h-_i)``, each flipped by a random sign ``s_i`` (RepE shuffles the order
  within each pair) and centred. A principal component has no sign: it is oriented so that the
  positive member scores higher in most training pairs (RepE's rule).
- ``"mean_diff"``: ``mu+ - mu-`` (RepE's ClusterMean; Marks & Tegmark's mass-mean direction).
- ``"logistic"``: the weight vector of an L2-regularised logistic regression (scikit-learn)
  separating positive from negative members.
- ``"random"``: a Gaussian direction (the baseline), oriented like the others.

Marks & Tegmark's covariance-tilted probe ``Sigma^-1 (mu+ - mu-)`` is a classifier, not a
direction to intervene along (it up-weights any equally discriminative direction with little
within-class variance, such as an input marker), so it is not offered as a reading vector.

Every direction has unit norm. The read-out of an activation is ``s(h) = <h - mu, r>`` with ``mu``
the mean training activation. Evaluation on held-out pairs (split by group):

- **pair accuracy**: the fraction of pairs whose positive member scores higher (ties count
  half), with a Wilson interval;
- **AUROC** of ``s`` separating positive from negative members, with a bootstrap interval over
  pairs;
- **stability** (optional): the mean cosine between the direction refitted on bootstrap resamples
  of the training pairs and the direction fitted on all of them, with the 2.5 / 97.5 percentiles
  of those cosines.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .. import stats
from .. import validate as V
from ..errors import InputError
from ..executor import Executor, Sizing, on_executor
from ..models.model import Model
from ..progress import Progress
from ..results import Estimate, Result
from .data import ContrastPairs, Prompt, split_groups
from .directions import (
    METHODS,
    LayerPairs,
    fit_all_layers,
    fit_direction,
    layer_bytes,
    pair_auroc,
    stability,
)
from .generation import encode
from .pair_activations import (
    ContrastActivations,
    activations,
    collect,
    resolve_layers,
    right_pad,
)
from .steering import Steering


@dataclass(frozen=True, eq=False)
class ReadingResult(Result):
    """One reading vector per layer, with held-out accuracy, AUROC and stability.

    Arrays are indexed by position in ``layers``. ``directions`` ``[L, d]`` are unit vectors
    (the positive concept scores higher along them); ``means`` ``[L, d]`` the mean training
    activation; ``separation`` ``[L]`` the mean training-pair gap ``<h+ - h-, r>``; ``spread``
    ``[L]`` the standard deviation of training read-outs; ``test_pos`` / ``test_neg``
    ``[L, n_test]`` the held-out read-outs.

    ``intervals()``: ``accuracy`` (Wilson interval; its standard error the binomial
    ``sqrt(p (1 - p) / n_test)``), ``auroc`` (bootstrap interval; no standard error is kept, so
    it is NaN) and ``stability`` (the ``level`` percentile range of the refitted cosines; its
    standard error is NaN), one element per layer; ``to_frame()`` shows each as
    ``q, q_se, q_ci_low, q_ci_high``.
    """

    method: str
    site: str
    position: str | int
    layers: list[int]
    directions: np.ndarray
    means: np.ndarray
    separation: np.ndarray
    spread: np.ndarray
    accuracy: np.ndarray
    accuracy_low: np.ndarray
    accuracy_high: np.ndarray
    auroc: np.ndarray
    auroc_low: np.ndarray
    auroc_high: np.ndarray
    stability: np.ndarray
    stability_low: np.ndarray
    stability_high: np.ndarray
    test_pos: np.ndarray
    test_neg: np.ndarray
    n_train: int
    n_test: int
    concept: str = "positive"
    dataset: str = "pairs"
    model: str = ""
    seed: int = 0
    level: float = 0.95
    n_boot: int = 1000
    n_stability: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    INTERVALS: ClassVar[dict[str, Estimate]] = {
        "accuracy": Estimate("accuracy", "accuracy_se", "accuracy_low", "accuracy_high"),
        "auroc": Estimate("auroc", None, "auroc_low", "auroc_high"),
        "stability": Estimate("stability", None, "stability_low", "stability_high"),
    }

    @property
    def accuracy_se(self) -> np.ndarray:
        """The binomial standard error of the held-out pair accuracy, per layer."""
        p = np.asarray(self.accuracy, dtype=np.float64)
        return np.asarray(np.sqrt(p * (1 - p) / max(1, self.n_test)))

    def _j(self, layer: int) -> int:
        if layer not in self.layers:
            raise InputError(f"no reading vector for layer {layer}; layers: {self.layers}")
        return self.layers.index(layer)

    def direction(self, layer: int) -> Tensor:
        """The unit reading vector of ``layer`` (float32)."""
        return torch.as_tensor(self.directions[self._j(layer)], dtype=torch.float32)

    def best_layer(self, by: str = "accuracy") -> int:
        """The layer with the highest held-out ``accuracy`` or ``auroc`` (ties: the earliest)."""
        if by not in ("accuracy", "auroc"):
            raise InputError(f"by must be 'accuracy' or 'auroc', not {by!r}")
        v = self.accuracy if by == "accuracy" else self.auroc
        return self.layers[int(np.nanargmax(v))]

    def vector(self, layer: int, coef: float = 1.0, scale: str = "separation") -> Tensor:
        """``coef * scale_L * r_L``: ``scale="separation"`` (coef 1 moves an activation by the
        mean gap between the members of a pair), ``"spread"`` (one standard deviation of the
        read-out) or ``"unit"``."""
        j = self._j(layer)
        if scale == "separation":
            k = float(self.separation[j])
        elif scale == "spread":
            k = float(self.spread[j])
        elif scale == "unit":
            k = 1.0
        else:
            raise InputError(f"scale must be 'separation', 'spread' or 'unit', not {scale!r}")
        return self.direction(layer) * (coef * k)

    def steering(
        self,
        layers: Sequence[int] | int,
        coef: float = 1.0,
        *,
        scale: str = "separation",
        when: str = "all",
        first_k: int | None = None,
        prompt: str = "all",
        label: str | None = None,
    ) -> Steering:
        """Add ``coef`` times the (scaled) reading vector at ``site.L`` for each layer: positive
        ``coef`` pushes towards the concept, negative away from it."""
        V.finite_float("coef", coef, fix="a size in units of the scale, e.g. 1.0 or -1.0")
        ls = _steer_layers(layers)
        return Steering(
            {f"{self.site}.{L}": self.vector(L, coef, scale) for L in ls},
            operator="add",
            when=when,
            first_k=first_k,
            prompt=prompt,
            label=label or f"{self.concept} {coef:+g} ({scale}) @ {_layers_str(ls)}",
        )

    def ablation(
        self,
        layers: Sequence[int] | int,
        *,
        when: str = "all",
        prompt: str = "all",
        label: str | None = None,
    ) -> Steering:
        """Project the reading vector out of ``site.L`` for each layer (``h - <h, r> r``)."""
        ls = _steer_layers(layers)
        return Steering(
            {f"{self.site}.{L}": self.direction(L) for L in ls},
            operator="project_out",
            when=when,
            prompt=prompt,
            label=label or f"ablate {self.concept} @ {_layers_str(ls)}",
        )

    def scan(
        self,
        model: Model,
        texts: Sequence[Prompt],
        *,
        layers: Sequence[int] | None = None,
        batch_size: int = 16,
    ) -> np.ndarray:
        """The read-out ``s = <h - mu, r>`` at every token of every text, per layer:
        ``[n, n_layers, T]`` (NaN past a text's end). RepE's LAT scan: how the concept's reading
        evolves along a text, e.g. a prompt followed by the model's own generation."""
        V.positive_int("batch_size", batch_size)
        ls = list(self.layers) if layers is None else [int(x) for x in layers]
        if not ls:
            raise V.fail("layers", layers, "is empty", "give at least one layer or None for all")
        js = [self._j(L) for L in ls]
        seqs = encode(model, texts)
        T = max(len(x) for x in seqs)
        out = np.full((len(seqs), len(ls), T), np.nan)
        dirs = torch.as_tensor(self.directions[js], dtype=torch.float32)
        mus = torch.as_tensor(self.means[js], dtype=torch.float32)
        for b0 in range(0, len(seqs), batch_size):
            rows = list(range(b0, min(len(seqs), b0 + batch_size)))
            inp = right_pad(model, [seqs[i] for i in rows])
            names = [f"{self.site}.{L}" for L in ls]
            res = model.run(inp, cache=names, stop_at=names[int(np.argmax(ls))])
            for k, name in enumerate(names):
                a = res.cache[name].float().cpu()
                sc = ((a - mus[k]) @ dirs[k]).numpy()
                for j, i in enumerate(rows):
                    out[i, k, : len(seqs[i])] = sc[j, : len(seqs[i])]
        return out

    def cosine(self, other: ReadingResult) -> np.ndarray:
        """Per-layer cosine with another result's directions (on the layers both have)."""
        common = [L for L in self.layers if L in other.layers]
        return np.asarray(
            [float(self.directions[self._j(L)] @ other.directions[other._j(L)]) for L in common]
        )

    def to_frame(self) -> pd.DataFrame:
        ivs = self.intervals()
        return pd.DataFrame(
            {
                "layer": self.layers,
                "method": self.method,
                **ivs["accuracy"].columns("accuracy"),
                **ivs["auroc"].columns("auroc"),
                **ivs["stability"].columns("stability"),
                "separation": self.separation,
                "spread": self.spread,
                "level": self.level,
            }
        )

    def summary(self) -> str:
        best = self.best_layer()
        j = self._j(best)
        ivs = self.intervals()
        lines = [
            f"reading vectors ({self.method}) for '{self.concept}' on {self.dataset}: "
            f"{self.model}, {self.site} at token {self.position}, {len(self.layers)} layers, "
            f"{self.n_train} training / {self.n_test} held-out pairs",
            f"best layer {best}: pair accuracy {ivs['accuracy'][j]:.3f}, AUROC "
            f"{ivs['auroc'][j]:.3f} ({int(self.level * 100)}% CIs)",
        ]
        if self.n_stability:
            lines.append(
                f"stability (mean cosine over {self.n_stability} bootstrap refits) at layer "
                f"{best}: {ivs['stability'][j]:.3f}"
            )
        lines.append("  layer  accuracy                     AUROC")
        for k, L in enumerate(self.layers):
            lines.append(f"  {L:>5}  {ivs['accuracy'][k]:.2f}    {ivs['auroc'][k]:.2f}")
        return "\n".join(lines)


def _steer_layers(layers: Sequence[int] | int) -> list[int]:
    ls = [layers] if isinstance(layers, int) else list(layers)
    if not ls:
        raise V.fail("layers", layers, "is empty", "give at least one layer to steer at")
    return ls


def _layers_str(ls: Sequence[int]) -> str:
    ls = sorted(ls)
    if len(ls) > 2 and ls == list(range(ls[0], ls[-1] + 1)):
        return f"layers {ls[0]}-{ls[-1]}"
    return "layer" + ("s " if len(ls) > 1 else " ") + ",".join(str(x) for x in ls)


@V.renamed_argument("pairs", "data")
@on_executor
def read(
    model: Model | None,
    data: ContrastPairs | ContrastActivations,
    *,
    method: str = "pca",
    layers: Sequence[int] | int | None = None,
    site: str = "resid_post",
    position: str | int = "last",
    test: float | ContrastPairs | ContrastActivations = 0.25,
    n_stability: int = 0,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    batch_size: int | None = None,
    progress: Progress | None = None,
    max_memory: int | None = None,
    executor: str | Executor | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
) -> ReadingResult:
    """Reading vectors per layer from contrast pairs, evaluated on held-out pairs.

    Args:
        model: the model (None when ``data`` are already :class:`ContrastActivations`).
        data: contrast pairs, or their collected activations (reuse them across methods).
        method: ``"pca"``, ``"mean_diff"``, ``"logistic"`` or ``"random"``.
        layers: layers to read (default: all).
        site: the residual-stream site kind read at every layer (``resid_post`` by default).
        position: which token: ``"last"``, an offset ``<= 0`` from the last, or ``"mean"``.
        test: the fraction of groups held out (seeded split), or explicit held-out pairs.
        n_stability: bootstrap refits for the stability estimate (0: skip).
        n_boot: bootstrap resamples for the AUROC intervals.
        batch_size: deprecated (one release; use ``max_memory``): prompts per forward pass
            (16 when neither is given).
        progress: called as ``progress(done, total)`` as prompts are read.
        max_memory: bytes one forward pass may use: prompts per pass from the executor's
            budget (default: 16 prompts per pass).
        executor: where the per-layer fits run (``"ray"``, an
            :class:`~faithlens.executor.Executor` or ``None``: the one in force); each layer is
            a work item, and the numbers do not change.
        checkpoint: a folder where each layer's fit is kept as it finishes; a rerun with the
            same folder, activations and options fits only the layers left, with the same
            result (another run's folder: :class:`~faithlens.errors.CheckpointError`). The
            activations are collected again.
    """
    V.max_memory(max_memory)
    V.replaced_knob("read", "batch_size", batch_size, "max_memory", max_memory)
    if batch_size is None:
        batch_size = 16
    split = _check_read(
        model,
        data,
        method=method,
        position=position,
        test=test,
        n_stability=n_stability,
        n_boot=n_boot,
        level=level,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
    )
    train_acts, test_acts, keep, ls = _train_test(
        model,
        data,
        test,
        split,
        layers=layers,
        site=site,
        position=position,
        batch_size=batch_size,
        progress=progress,
        max_memory=max_memory,
    )
    return _fit_and_evaluate(
        train_acts,
        test_acts,
        keep,
        ls,
        method=method,
        n_stability=n_stability,
        n_boot=n_boot,
        level=level,
        seed=seed,
        checkpoint=checkpoint,
    )


def _check_read(
    model: Model | None,
    pairs: ContrastPairs | ContrastActivations,
    *,
    method: str,
    position: str | int,
    test: float | ContrastPairs | ContrastActivations,
    n_stability: int,
    n_boot: int,
    level: float,
    seed: int,
    batch_size: int,
    progress: Progress | None,
) -> tuple[list[int], list[int]] | None:
    """Refuse bad :func:`read` arguments before any forward pass; returns the seeded
    ``(train, test)`` split when ``test`` is a fraction."""
    V.choice("method", method, METHODS)
    V.finite_float("level", level, low=0.5, high=1.0, high_open=True, fix="use e.g. 0.95")
    V.nonnegative_int("n_stability", n_stability, fix="0 skips the stability estimate")
    V.n_boot(n_boot)
    V.nonnegative_int("seed", seed)
    V.positive_int("batch_size", batch_size)
    if isinstance(test, float):
        V.probability("test", test, fix="hold out a fraction such as 0.25")
    if isinstance(position, str):
        V.choice("position", position, ("last", "mean"), fix="or an offset <= 0 from the last")
    elif not isinstance(position, bool) and isinstance(position, int) and position > 0:
        raise V.fail("position", position, "an offset must be <= 0 (0 is the last token)")
    if progress is not None and not callable(progress):
        raise V.fail("progress", progress, "must be a callable (done, total) or None")
    if not isinstance(pairs, (ContrastPairs, ContrastActivations)):
        raise InputError(
            f"data must be ContrastPairs or ContrastActivations, not {type(pairs).__name__}"
        )
    if not isinstance(test, (float, ContrastPairs, ContrastActivations)):
        raise InputError(f"test must be a fraction or held-out pairs, not {type(test).__name__}")
    if isinstance(test, float):  # check the split before any forward pass
        groups = pairs.groups if isinstance(pairs, ContrastActivations) else pairs.group_ids
        train_idx, test_idx = split_groups(groups, test, seed=seed, name=pairs.name)
    if (isinstance(pairs, ContrastPairs) or isinstance(test, ContrastPairs)) and model is None:
        raise InputError("read needs the model to collect activations of contrast pairs")
    return (train_idx, test_idx) if isinstance(test, float) else None


def _train_test(
    model: Model | None,
    pairs: ContrastPairs | ContrastActivations,
    test: float | ContrastPairs | ContrastActivations,
    split: tuple[list[int], list[int]] | None,
    *,
    layers: Sequence[int] | int | None,
    site: str,
    position: str | int,
    batch_size: int,
    progress: Progress | None,
    max_memory: int | None = None,
) -> tuple[ContrastActivations, ContrastActivations, list[int], list[int]]:
    """Training and held-out activations, and the positions of the layers read."""
    if isinstance(test, float):
        assert split is not None
        train_idx, test_idx = split
    collected_layers: Sequence[int] | int | None = layers
    if isinstance(pairs, ContrastActivations):
        acts = pairs
    else:
        assert model is not None
        acts = collect(
            model,
            pairs,
            layers=layers,
            site=site,
            position=position,
            batch_size=batch_size,
            progress=progress,
            max_memory=max_memory,
        )
        collected_layers = None
    test_acts: ContrastActivations
    if isinstance(test, float):
        train_acts, test_acts = acts.subset(train_idx), acts.subset(test_idx)
    else:
        train_acts = acts
        if isinstance(test, ContrastActivations):
            test_acts = test
        else:
            assert model is not None
            test_acts = collect(
                model,
                test,
                layers=acts.layers,
                site=acts.site,
                position=acts.position,
                batch_size=batch_size,
                max_memory=max_memory,
            )
        if test_acts.layers != train_acts.layers or test_acts.site != train_acts.site:
            raise InputError("training and held-out activations come from different sites/layers")
    if collected_layers is not None:
        want = [
            int(x)
            for x in ([collected_layers] if isinstance(collected_layers, int) else collected_layers)
        ]
        missing = [x for x in want if x not in train_acts.layers]
        if missing:
            raise InputError(f"layers {missing} were not collected; layers: {train_acts.layers}")
        keep = [train_acts.layers.index(x) for x in sorted(set(want))]
    else:
        keep = list(range(len(train_acts.layers)))
    ls = [train_acts.layers[j] for j in keep]
    if len(train_acts) < 2 or len(test_acts) < 2:
        raise InputError(
            f"need at least 2 training and 2 held-out pairs; got {len(train_acts)} and "
            f"{len(test_acts)}"
        )
    return train_acts, test_acts, keep, ls


def _fit_and_evaluate(
    train_acts: ContrastActivations,
    test_acts: ContrastActivations,
    keep: list[int],
    ls: list[int],
    *,
    method: str,
    n_stability: int,
    n_boot: int,
    level: float,
    seed: int,
    checkpoint: str | os.PathLike[str] | None = None,
) -> ReadingResult:
    """Fit a direction per layer on the training pairs and score it on the held-out pairs:
    each layer is an item of :meth:`~faithlens.executor.Executor.map_sized` (on Ray workers,
    chunks of layers sized by each worker's memory; the numbers do not change), kept in
    ``checkpoint`` as it finishes (:func:`~faithlens.representations.directions.fit_all_layers`)."""
    L = len(ls)
    d = train_acts.positive.shape[-1]
    dirs = np.empty((L, d))
    means = np.empty((L, d))
    sep = np.empty(L)
    spread = np.empty(L)
    tpos = np.empty((L, len(test_acts)))
    tneg = np.empty((L, len(test_acts)))
    stab = np.full((3, L), np.nan)
    auc = np.empty((3, L))
    items: list[LayerPairs] = [
        (
            k,
            train_acts.positive[:, j],
            train_acts.negative[:, j],
            test_acts.positive[:, j],
            test_acts.negative[:, j],
        )
        for k, j in enumerate(keep)
    ]
    per = layer_bytes(len(train_acts), len(test_acts), d, n_stability)
    sizing = Sizing(per, device=torch.device("cpu"))
    args = (method, n_stability, n_boot, level, seed)
    for k, f in enumerate(fit_all_layers(items, sizing, args, checkpoint)):
        dirs[k], means[k], sep[k], spread[k] = (
            f["direction"],
            f["mean"],
            f["separation"],
            f["spread"],
        )
        tpos[k], tneg[k] = f["test_pos"], f["test_neg"]
        stab[:, k], auc[:, k] = f["stability"], f["auroc"]
    wins = (tpos > tneg).sum(1) + 0.5 * (tpos == tneg).sum(1)
    acc = stats.proportion_interval(np.round(wins), np.full(L, tpos.shape[1]), level=level)
    auc_est, auc_lo, auc_hi = auc
    return ReadingResult(
        method=method,
        site=train_acts.site,
        position=train_acts.position,
        layers=ls,
        directions=dirs.astype(np.float32),
        means=means.astype(np.float32),
        separation=sep,
        spread=spread,
        accuracy=wins / tpos.shape[1],
        accuracy_low=acc.low,
        accuracy_high=acc.high,
        auroc=auc_est,
        auroc_low=auc_lo,
        auroc_high=auc_hi,
        stability=stab[0],
        stability_low=stab[1],
        stability_high=stab[2],
        test_pos=tpos,
        test_neg=tneg,
        n_train=len(train_acts),
        n_test=len(test_acts),
        concept=train_acts.concept,
        dataset=train_acts.name,
        model=train_acts.model,
        seed=seed,
        level=level,
        n_boot=n_boot,
        n_stability=n_stability,
    )


__all__ = [
    "METHODS",
    "ContrastActivations",
    "ReadingResult",
    "activations",
    "collect",
    "fit_direction",
    "pair_auroc",
    "read",
    "resolve_layers",
    "stability",
]
