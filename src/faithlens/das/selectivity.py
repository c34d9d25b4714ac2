"""Selectivity of an alignment search against three controls, for every alignment method.

``das_controls(model, data, site, method=...)`` trains the alignment (:func:`~faithlens.das.das`)
on a training split of ``data`` and measures its IIA on the held-out split, then runs the same
training and evaluation under each control:

- ``"task"``: the control task with arbitrary label mappings (:func:`control_task`);
- ``"random_init"``: a randomly initialised copy of the model (:func:`random_init`);
- ``"random_subspace"``: no training; random subspaces of the same size (the first ``k``
  coordinates of ``draws`` seeded random rotations, :func:`random_subspace_correct`).

Every figure is a mean of per-example correctness on the **same** held-out pairs, so IIA,
control IIA and selectivity (IIA - control IIA) are bootstrap intervals over those examples, the
selectivity a paired one (:func:`faithlens.stats.mean_interval` of per-example differences).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from .. import stats
from .. import validate as V
from ..executor import current_executor
from ..models.model import Model
from ..models.sites import SiteLike, as_site
from ..progress import Progress
from ..results import Estimate, Interval, Result, with_intervals
from ..tasks.interchange import InterchangeData
from .alignment import Alignment, alignment_from_flat
from .control_inputs import control_task, random_init
from .controls import random_subspace_correct
from .directions import DIRECTION_METHODS, direction_alignment
from .featurizer import FeaturizerPair, featurizer_pair
from .result import DASResult
from .train import das, evaluate_alignment, source_activations

#: The controls, in the order results list them.
CONTROLS = ("task", "random_init", "random_subspace")

#: Which held-out pairs are scored: ``"changed"`` (the counterfactual label differs from the
#: model's answer on the base input) or ``"all"``.
PAIRS = ("changed", "all")

#: ``das`` keywords that :func:`das_controls` sets itself (not allowed in ``train``).
OWN_KEYWORDS = (
    "dims",
    "method",
    "seed",
    "progress",
    "checkpoint_dir",
    "alignment",
    "controls",
    "draws",
    "values",
)


@dataclass(frozen=True)
class Split:
    """The training and held-out halves of the real data and of the control task, and the
    randomly initialised model (what every site of a sweep shares)."""

    train: InterchangeData
    held_out: InterchangeData
    control_train: InterchangeData | None
    control_held_out: InterchangeData | None
    random_model: Model | None


def check_controls(controls: Any) -> tuple[str, ...]:
    """The controls as a tuple, refused when empty, repeated or unknown."""
    if isinstance(controls, str):
        controls = (controls,)
    try:
        out = tuple(controls)
    except TypeError:
        raise V.fail("controls", controls, "must be a list of control names") from None
    if not out:
        raise V.fail("controls", controls, "is empty", f"use some of {list(CONTROLS)}")
    for c in out:
        V.choice("controls", c, CONTROLS)
    if len(set(out)) != len(out):
        raise V.fail("controls", controls, "repeats a control", "list each control once")
    return out


def check_train(train: Mapping[str, Any] | None) -> dict[str, Any]:
    """The extra ``das`` keywords, refused when they are not a mapping or name what
    :func:`das_controls` sets itself."""
    if train is None:
        return {}
    if not isinstance(train, Mapping):
        raise V.fail("train", train, "must be a dict of fl.das keywords", 'e.g. {"epochs": 200}')
    for k in train:
        if k in OWN_KEYWORDS:
            raise V.fail("train", k, "is set by the controls themselves", f"give {k}= directly")
    return dict(train)


def base_predictions(model: Model, data: InterchangeData) -> np.ndarray:
    """The model's own answer on each base input (no intervention), as a label index."""
    out = model.run(data.base, logits_at=data.positions)
    if out.logits is None:
        raise V.fail("model", model.name, "returned no logits", "DAS needs a model with logits")
    lg = out.logits[:, -1] if out.logits.dim() == 3 else out.logits
    if data.candidates is not None:
        lg = lg.gather(1, data.candidates.to(lg.device).long())
    return np.asarray(lg.argmax(-1).cpu().numpy())


def make_split(
    model: Model,
    data: InterchangeData,
    controls: Sequence[str],
    *,
    eval_fraction: float,
    values: Any,
    pairs: str,
    seed: int,
) -> Split:
    """A seeded split of ``data`` (``eval_fraction`` held out), the control task's same split,
    and the random-init model, each only where ``controls`` needs it. With ``pairs="changed"``
    the held-out pairs keep only those whose counterfactual label (and control-task label)
    differs from the model's own answer on the base input."""
    n = len(data)
    n_eval = round(n * eval_fraction)
    V.min_examples("held-out examples (len(data) * eval_fraction)", n_eval)
    V.min_examples("training examples (len(data) * (1 - eval_fraction))", n - n_eval)
    perm = torch.from_numpy(np.random.default_rng(seed).permutation(n))
    ev_rows, tr_rows = perm[:n_eval].sort().values, perm[n_eval:].sort().values
    ctrl = control_task(data, values=values, seed=seed) if "task" in controls else None
    if pairs == "changed":
        held = data.subset(ev_rows)
        base = base_predictions(model, held)
        keep = base != held.labels.cpu().numpy()
        if ctrl is not None:
            keep &= base != ctrl.labels[ev_rows].cpu().numpy()
        ev_rows = ev_rows[torch.from_numpy(keep)]
        V.min_examples(
            "held-out pairs whose counterfactual label changes the model's answer",
            len(ev_rows),
            what='an IIA on changed pairs (pairs="changed")',
        )
    return Split(
        train=data.subset(tr_rows),
        held_out=data.subset(ev_rows),
        control_train=None if ctrl is None else ctrl.subset(tr_rows),
        control_held_out=None if ctrl is None else ctrl.subset(ev_rows),
        random_model=random_init(model, seed=seed) if "random_init" in controls else None,
    )


def eval_batch(
    model: Model, data: InterchangeData, site: SiteLike, max_memory: int | None
) -> int | None:
    """Examples per evaluation pass: ``None`` (one pass, as :func:`~faithlens.das.das`
    evaluates) without ``max_memory``; else as many as fit ``max_memory`` at a few copies of the
    site's activations per example (evaluation only; training keeps its own batches)."""
    if max_memory is None:
        return None
    probe = data.subset([0])
    width = int(source_activations(model, probe, as_site(site)).numel())
    per = 16 * width * 4  # a handful of activations of the site's size, float32
    return current_executor().chunk_size(len(data), per, device=model.device, max_memory=max_memory)


def _trained_correct(
    model: Model,
    train: InterchangeData,
    held_out: InterchangeData,
    site: SiteLike,
    *,
    method: str,
    dims: Any,
    train_kw: dict[str, Any],
    batch: int | None,
    seed: int,
) -> tuple[DASResult, np.ndarray]:
    if method in DIRECTION_METHODS:  # read off the training data; one epoch measures it
        k = dims if isinstance(dims, int) else len(list(dims))
        al = direction_alignment(method, model, train, site, k, seed=seed)
        res = das(model, train, site, dims=k, alignment=al, controls=(), seed=seed)
    else:
        kw = {"controls": (), **train_kw}
        res = das(model, train, site, dims=dims, method=method, seed=seed, **kw)
    ev = evaluate_alignment(
        model, res.alignment, held_out, site, dims=list(res.dims), batch_size=batch, seed=seed
    )
    return res, np.asarray(ev.correct, dtype=np.float64)


def site_correct(
    model: Model,
    split: Split,
    site: SiteLike,
    controls: Sequence[str],
    *,
    method: str,
    dims: Any,
    train_kw: dict[str, Any],
    draws: int,
    seed: int,
    max_memory: int | None,
    tick: Any = None,
) -> tuple[DASResult, np.ndarray, np.ndarray]:
    """At one site: the trained alignment, its per-example held-out correctness ``[n]`` and each
    control's ``[len(controls), n]``. ``tick()`` after the alignment and after each control."""
    batch = eval_batch(model, split.held_out, site, max_memory)
    kw = {"method": method, "dims": dims, "train_kw": train_kw, "batch": batch, "seed": seed}
    res, own = _trained_correct(model, split.train, split.held_out, site, **kw)
    if tick is not None:
        tick()
    rows = []
    for c in controls:
        if c == "task":
            assert split.control_train is not None and split.control_held_out is not None
            _, got = _trained_correct(
                model, split.control_train, split.control_held_out, site, **kw
            )
        elif c == "random_init":
            assert split.random_model is not None
            _, got = _trained_correct(split.random_model, split.train, split.held_out, site, **kw)
        else:
            k = len(res.dims)
            got = random_subspace_correct(model, split.held_out, site, k, draws=draws, seed=seed)
        rows.append(got)
        if tick is not None:
            tick()
    return res, own, np.stack(rows)


def majority_rate(data: InterchangeData) -> float:
    """The share of the most frequent label: what always answering one label scores."""
    _, counts = np.unique(data.labels.cpu().numpy(), return_counts=True)
    return float(counts.max() / counts.sum())


def check_common(
    *,
    method: Any,
    dims: Any,
    eval_fraction: Any,
    pairs: Any,
    draws: Any,
    n_boot: Any,
    level: Any,
    seed: Any,
    max_memory: Any,
    progress: Any,
) -> None:
    """The arguments :func:`das_controls` and the sweep share, checked before any work."""
    from .args import check_das_args

    if method in DIRECTION_METHODS:
        check_das_args(dims=dims, seed=seed)
    else:
        check_das_args(dims=dims, method=method, seed=seed)
    V.probability("eval_fraction", eval_fraction, fix="hold out e.g. 0.5 of the pairs")
    V.choice("pairs", pairs, PAIRS)
    V.positive_int("draws", draws, fix="average over e.g. 5 random subspaces")
    V.n_boot(n_boot)
    V.level(level)
    V.max_memory(max_memory)
    if progress is not None and not callable(progress):
        raise V.fail("progress", progress, "must be a callable progress(done, total) or None")


def das_controls(
    model: Model,
    data: InterchangeData,
    site: SiteLike,
    *,
    method: str = "rotation",
    dims: int | Sequence[int] = 1,
    controls: Sequence[str] = CONTROLS,
    eval_fraction: float = 0.5,
    values: Any = None,
    pairs: str = "changed",
    draws: int = 5,
    train: Mapping[str, Any] | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    max_memory: int | None = None,
    progress: Progress | None = None,
) -> ControlledDAS:
    """IIA, control IIA and selectivity of an alignment search at ``site``.

    Args:
        method, dims: as :func:`~faithlens.das.das` (``"rotation"``, ``"boundless"``,
            ``"linear"``, ``"identity"``), or an alignment read off the training pairs'
            labels (``"mean_diff"``, ``"pca"``, ``"probe"``: :mod:`faithlens.das.directions`;
            ``train`` is ignored); the same for the alignment and every control (the control
            task's direction is read off its arbitrary labels, the random-init model's off its
            own activations).
        controls: any of ``"task"``, ``"random_init"``, ``"random_subspace"`` (module docstring).
        eval_fraction: the share of pairs held out (seeded by ``seed``) on which every IIA is
            measured; the rest trains.
        pairs: ``"changed"`` (default): score only held-out pairs whose counterfactual label
            (and control-task label) differs from the model's own answer on the base input, so
            an interchange that does nothing scores 0 and a site that carries nothing has a
            selectivity near 0; ``"all"``: every held-out pair (doing nothing then scores the
            share of unchanged labels, which the control task does not share).
        values: the causal variable's value per example for the control task's mapping
            (:func:`control_task`); by default the counterfactual labels.
        draws: random subspaces averaged by the ``"random_subspace"`` control.
        train: further :func:`~faithlens.das.das` keywords (``epochs``, ``lr``, ``select``...).
        n_boot, level: the bootstrap over held-out examples.
        max_memory: bytes an evaluation pass may use (sets the evaluation batch only, so the
            figures do not depend on it); by default one pass over the held-out pairs.
        progress: ``progress(done, total)`` after the alignment and after each control.
    """
    check_common(
        method=method,
        dims=dims,
        eval_fraction=eval_fraction,
        pairs=pairs,
        draws=draws,
        n_boot=n_boot,
        level=level,
        seed=seed,
        max_memory=max_memory,
        progress=progress,
    )
    ctrl = check_controls(controls)
    train_kw = check_train(train)
    split = make_split(
        model, data, ctrl, eval_fraction=eval_fraction, values=values, pairs=pairs, seed=seed
    )
    total, done = 1 + len(ctrl), [0]

    def tick() -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], total)

    res, own, ctl = site_correct(
        model,
        split,
        site,
        ctrl,
        method=method,
        dims=dims,
        train_kw=train_kw,
        draws=draws,
        seed=seed,
        max_memory=max_memory,
        tick=tick,
    )
    iia, control, sel = intervals_of(own, ctl, n_boot=n_boot, level=level, seed=seed)
    chance = [chance_of(split, c) for c in ctrl]
    return ControlledDAS(
        method=method,
        site=str(as_site(site).name),
        dims=tuple(int(d) for d in res.dims),
        controls=list(ctrl),
        n=len(split.held_out),
        n_train=len(split.train),
        eval_fraction=float(eval_fraction),
        pairs=pairs,
        draws=int(draws),
        level=float(level),
        n_boot=int(n_boot),
        seed=int(seed),
        iia=float(iia.estimate),
        iia_se=float(iia.se),
        iia_low=float(iia.ci_low),
        iia_high=float(iia.ci_high),
        control_iia=np.asarray(control.estimate, dtype=np.float64),
        control_iia_se=np.asarray(control.se, dtype=np.float64),
        control_iia_low=np.asarray(control.ci_low, dtype=np.float64),
        control_iia_high=np.asarray(control.ci_high, dtype=np.float64),
        selectivity=np.asarray(sel.estimate, dtype=np.float64),
        selectivity_se=np.asarray(sel.se, dtype=np.float64),
        selectivity_low=np.asarray(sel.ci_low, dtype=np.float64),
        selectivity_high=np.asarray(sel.ci_high, dtype=np.float64),
        chance=np.asarray(chance, dtype=np.float64),
        correct=own,
        control_correct=ctl,
        alignment_spec=res.alignment_spec,
        alignment_params=res.alignment_params,
    )


def chance_of(split: Split, control: str) -> float:
    """The majority-label rate of the held-out labels a control is scored against."""
    if control == "task":
        assert split.control_held_out is not None
        return majority_rate(split.control_held_out)
    return majority_rate(split.held_out)


def intervals_of(
    own: np.ndarray, ctl: np.ndarray, *, n_boot: int, level: float, seed: int
) -> tuple[Interval, Interval, Interval]:
    """IIA ``[]``, control IIA ``[c]`` and selectivity ``[c]``: bootstrap means over examples
    (the selectivity paired: the mean of per-example differences)."""
    iia = stats.mean_interval(own, n_boot=n_boot, level=level, seed=seed)
    parts = [
        (
            stats.mean_interval(c, n_boot=n_boot, level=level, seed=seed),
            stats.mean_interval(own - c, n_boot=n_boot, level=level, seed=seed),
        )
        for c in ctl
    ]

    def stack(ivs: list[Interval]) -> Interval:
        cols = [
            np.array([float(np.asarray(p)) for p in piece])
            for piece in zip(*(iv.parts for iv in ivs), strict=True)
        ]
        return Interval(cols[0], cols[1], cols[2], cols[3], level)

    return iia, stack([p[0] for p in parts]), stack([p[1] for p in parts])


@dataclass(frozen=True)
class ControlledDAS(Result):
    """The outcome of :func:`das_controls`: one alignment, its held-out IIA and, per control
    (``controls``), the control IIA and the selectivity ``iia - control_iia``, each a bootstrap
    interval over the ``n`` held-out pairs at ``level`` (the selectivity paired by pair).

    ``pairs``: which held-out pairs were scored (:data:`PAIRS`). ``chance``: per control, the majority-label rate of the labels it is scored against.
    ``correct`` ``[n]`` / ``control_correct`` ``[controls, n]``: per-pair correctness (the
    random-subspace control's is the share of ``draws`` subspaces that were right).
    ``alignment_spec`` / ``alignment_params`` rebuild the trained alignment. The frame has one
    row per control.
    """

    method: str
    site: str
    dims: tuple[int, ...]
    controls: list[str]
    n: int
    n_train: int
    eval_fraction: float
    pairs: str
    draws: int
    level: float
    n_boot: int
    seed: int
    iia: float
    iia_se: float
    iia_low: float
    iia_high: float
    control_iia: np.ndarray
    control_iia_se: np.ndarray
    control_iia_low: np.ndarray
    control_iia_high: np.ndarray
    selectivity: np.ndarray
    selectivity_se: np.ndarray
    selectivity_low: np.ndarray
    selectivity_high: np.ndarray
    chance: np.ndarray
    correct: np.ndarray
    control_correct: np.ndarray
    alignment_spec: dict[str, Any]
    alignment_params: np.ndarray

    kind = "das_controls"

    INTERVALS: ClassVar[dict[str, Estimate]] = {
        "iia": Estimate("iia", "iia_se", "iia_low", "iia_high"),
        "control_iia": Estimate(
            "control_iia", "control_iia_se", "control_iia_low", "control_iia_high"
        ),
        "selectivity": Estimate(
            "selectivity", "selectivity_se", "selectivity_low", "selectivity_high"
        ),
    }

    def alignment(self) -> Alignment:
        """The trained alignment (rebuilt from ``alignment_spec`` and ``alignment_params``)."""
        return alignment_from_flat(self.alignment_spec, self.alignment_params)

    def featurizer(self) -> FeaturizerPair:
        """The alignment as an MIB-style featurizer pair on ``dims``
        (:func:`~faithlens.das.featurizer.featurizer_pair`)."""
        return featurizer_pair(self.alignment(), self.dims, meta={"site": self.site})

    def control(self, name: str) -> tuple[Interval, Interval]:
        """(control IIA, selectivity) of control ``name``."""
        V.choice("name", name, self.controls)
        i = self.controls.index(name)
        return self.interval_of("control_iia")[i], self.interval_of("selectivity")[i]

    def to_frame(self) -> pd.DataFrame:
        c = len(self.controls)
        frame = pd.DataFrame(
            {
                "control": list(self.controls),
                "iia": np.full(c, self.iia),
                "control_iia": self.control_iia,
                "selectivity": self.selectivity,
                "chance": self.chance,
            }
        )
        iia = self.interval_of("iia")
        ivs = {
            "iia": Interval(
                np.full(c, float(iia.estimate)),
                np.full(c, float(iia.se)),
                np.full(c, float(iia.ci_low)),
                np.full(c, float(iia.ci_high)),
                iia.level,
            ),
            "control_iia": self.interval_of("control_iia"),
            "selectivity": self.interval_of("selectivity"),
        }
        return with_intervals(frame, ivs)

    def summary(self) -> str:
        lines = [
            f"{self.method} at {self.site}: {len(self.dims)} aligned dim(s), held-out IIA "
            f"{self.interval_of('iia'):.3f} ({self.level:.0%} CI, n={self.n}, "
            f"trained on {self.n_train})"
        ]
        for name in self.controls:
            ctl, sel = self.control(name)
            lines.append(f"  {name:<16} control IIA {ctl:.3f}  selectivity {sel:.3f}")
        return "\n".join(lines)


__all__ = [
    "CONTROLS",
    "PAIRS",
    "ControlledDAS",
    "base_predictions",
    "Split",
    "check_common",
    "check_controls",
    "check_train",
    "chance_of",
    "das_controls",
    "eval_batch",
    "intervals_of",
    "majority_rate",
    "make_split",
    "site_correct",
]
