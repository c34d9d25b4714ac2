"""Alignment search at a site: DAS, Boundless DAS and the non-orthogonal parameterisation,
trained with the interchange-intervention loss and optionally the Counterfactual Latent loss.

Every forward pass goes through faithlens' run engine: the learned alignment is the ``basis`` of
an ``fl.Interchange`` at the site, the run has ``grad=True``, and the loss is computed from the
run's logits (and, for the CL loss, from the intervened activation the same run caches).
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.nn.utils import parametrize

from .. import stats
from .. import validate as V
from ..divergence import distances as D
from ..errors import InputError, ShapeError
from ..interventions import Interchange
from ..models.model import Model
from ..models.sites import Site, SiteLike, as_site
from ..progress import Progress
from ..runs import Resume
from ..tasks.interchange import InterchangeData, select_rows
from .alignment import Alignment, BoundlessMask, make_alignment
from .args import (
    LOSSES,
    METHODS,
    SELECT,
    DASOptions,
    EpochCallback,
    check_das_args,
    check_inputs,
    resolve_dims,
    split_progress,
)
from .checkpoint import CHECKPOINT, Checkpointer, run_config
from .loop import flat_rows, restore_best, train_loop
from .result import DEFAULT_CONTROLS, DASResult


@dataclass(frozen=True)
class AlignmentEval:
    """IIA (with a bootstrap CI) and EMDs of an alignment on one dataset.

    ``emd``: the exact earth mover's distance ``W2^2 / 2`` (:func:`faithlens.divergence.emd`)
    between the intervened activations and the natural ones over all units; ``emd_features``:
    the same on the ``emd_dims`` coordinates only (NaN when none were given). ``correct``: per
    example.
    """

    iia: float
    iia_se: float
    iia_low: float
    iia_high: float
    emd: float
    emd_features: float
    correct: np.ndarray
    intervened: Tensor
    natural: Tensor


def _logits_2d(logits: Tensor | None) -> Tensor:
    if logits is None:
        raise InputError("the model returned no logits; DAS needs a model that outputs logits")
    if logits.dim() == 3:
        return logits[:, -1]
    if logits.dim() != 2:
        raise ShapeError(f"cannot read class scores from logits of shape {tuple(logits.shape)}")
    return logits


def _scores(logits: Tensor, candidates: Tensor | None) -> Tensor:
    lg = _logits_2d(logits).float()
    if candidates is not None:
        lg = lg.gather(1, candidates.to(lg.device).long())
    return lg


def source_activations(model: Model, data: InterchangeData, site: Site) -> Tensor:
    """The site's activations on the source inputs (constants for training)."""
    out = model.run(data.source, cache=[site])
    return out.cache[site.name].detach()


def base_resume(model: Model, data: InterchangeData, site: Site) -> tuple[int, Tensor] | None:
    """For a transformer site at layer L: the base inputs' residual stream entering the first
    layer the site can affect, so every training run restarts there instead of at the
    embedding (the base inputs never change). None when the model cannot resume."""
    info = model.site_info(site)
    if (
        not model.adapter.supports_resume
        or info.kind == "module"
        or info.order(model.n_layers) is None
    ):
        return None
    layer = info.first_layer(model.n_layers)
    if info.kind == "resid_post" and info.layer is not None:
        # resid_post.L is written by layer L: a run resumed at L + 1 never passes its hook (the
        # engine refuses the interchange), so recompute layer L too
        layer = info.layer
    if layer <= 0:
        return None
    name = f"resid_pre.{layer}" if layer < model.n_layers else f"resid_post.{model.n_layers - 1}"
    out = model.run(data.base, cache=[name])
    return layer, out.cache[name].detach()


def _interchange(
    site: Site,
    alignment: Alignment,
    src: Tensor,
    dims: Sequence[int] | None,
    mask: Tensor | None,
) -> Interchange:
    if mask is not None:
        return Interchange(site, basis=alignment, dims=None, source=src, mask=mask)
    return Interchange(site, basis=alignment, dims=list(dims or []), source=src)


def _run_batch(
    model: Model,
    data: InterchangeData,
    site: Site,
    alignment: Alignment,
    src: Tensor,
    rows: Tensor | None,
    dims: Sequence[int] | None,
    mask: Tensor | None,
    *,
    grad: bool,
    resume: tuple[int, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Scores ``[b, classes]`` and intervened activations at the site for rows of ``data``."""
    base = data.base if rows is None else select_rows(data.base, rows)
    s = src if rows is None else src[rows.to(src.device)]
    pos = data.positions
    if rows is not None and isinstance(pos, Tensor) and pos.dim() >= 1:
        pos = pos[rows.to(pos.device)]
    iv = _interchange(site, alignment, s, dims, mask)
    start = None
    if resume is not None:
        hidden = resume[1] if rows is None else resume[1][rows.to(resume[1].device)]
        start = Resume(resume[0], hidden)
    out = model.run(base, [iv], cache=[site], grad=grad, logits_at=pos, start_at=start)
    cand = data.candidates if rows is None or data.candidates is None else data.candidates[rows]
    if out.logits is None:
        raise InputError("the model returned no logits; DAS needs a model that outputs logits")
    return _scores(out.logits, cand), out.cache[site.name]


def evaluate_alignment(
    model: Model,
    alignment: Alignment,
    data: InterchangeData,
    site: SiteLike,
    *,
    dims: Sequence[int] | None = None,
    mask: Tensor | None = None,
    emd_dims: Sequence[int] | None = None,
    natural: Tensor | None = None,
    batch_size: int | None = None,
    blur: float | None = None,
    seed: int = 0,
) -> AlignmentEval:
    """IIA and EMD of an alignment on ``data`` (e.g. another task's data: OOD transfer).

    The natural reference for the EMD is ``natural``, else ``data.natural``, else the source
    activations (the synthetic-DAS convention). ``blur`` is ignored (the EMD is exact now; it
    was the Sinkhorn blur) and will be removed.
    """
    if batch_size is not None:
        V.positive_int("batch_size", batch_size, fix="omit it to evaluate in one batch")
    V.nonnegative_int("seed", seed)
    if blur is not None:
        V.positive_float("blur", blur)  # still checked while it is accepted
        warnings.warn(
            "evaluate_alignment: blur is ignored (the EMD is exact, not a Sinkhorn approximation) "
            "and will be removed; drop the argument",
            DeprecationWarning,
            stacklevel=2,
        )
    V.min_examples("len(data)", len(data), what="an IIA with a confidence interval")
    s = as_site(site)
    if dims is None and mask is None:
        raise InputError("evaluate_alignment needs the interchanged dims (or a soft mask)")
    src = source_activations(model, data, s)
    width = src.shape[-1]
    n = len(data)
    bs = n if batch_size is None else max(1, int(batch_size))
    alignment = alignment.to(src.device)
    resume = base_resume(model, data, s)
    correct, acts = [], []
    with torch.no_grad(), parametrize.cached():
        for start in range(0, n, bs):
            rows = torch.arange(start, min(n, start + bs))
            sc, h = _run_batch(
                model, data, s, alignment, src, rows, dims, mask, grad=False, resume=resume
            )
            correct.append((sc.argmax(-1).cpu() == data.labels[rows].cpu()).double())
            acts.append(flat_rows(h.detach(), width))
    corr = torch.cat(correct).numpy()
    itv = torch.cat(acts)
    nat = natural if natural is not None else data.natural
    nat = flat_rows(src, width) if nat is None else nat.to(itv.device)
    ci = stats.mean_interval(corr, seed=seed)
    emd = D.emd(itv, nat)
    emd_f = D.emd(itv, nat, dims=list(emd_dims)) if emd_dims else float("nan")
    return AlignmentEval(
        iia=float(ci.estimate),
        iia_se=float(ci.se),
        iia_low=float(ci.low),
        iia_high=float(ci.high),
        emd=emd,
        emd_features=emd_f,
        correct=corr,
        intervened=itv.cpu(),
        natural=nat.cpu(),
    )


def das(
    model: Model,
    data: InterchangeData,
    site: SiteLike,
    *,
    dims: int | Sequence[int] = 1,
    method: str = "rotation",
    loss: str = "iia",
    cl_form: str = "modified",
    cl_weight: float = 100.0,
    cl_dims: Sequence[Sequence[int]] | None = None,
    epochs: int = 601,
    lr: float = 0.01,
    boundary_lr: float = 0.01,
    batch_size: int | None = None,
    select: str = "auto",
    eval_every: int = 10,
    emd_dims: Sequence[int] | None = None,
    temperature: tuple[float, float] | None = None,
    width_weight: float = 1.0,
    alignment: Alignment | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 100,
    controls: Any = DEFAULT_CONTROLS,
    draws: int = 5,
    values: Any = None,
    seed: int = 0,
    progress: Progress | None = None,
    on_epoch: EpochCallback | None = None,
) -> DASResult:
    """Learn an alignment at ``site`` so that interchanging its first ``dims`` aligned
    coordinates from the source run makes the model output ``data.labels``.

    Args:
        dims: how many aligned coordinates carry the variable (the first ``dims``), or a list.
            Ignored by ``method="boundless"``, which learns a soft mask.
        method: ``"rotation"`` (DAS), ``"boundless"`` (Boundless DAS: rotation + learned
            sigmoid mask ``m_i = sigmoid((b D - i - 1/2) / T)``, the temperature ``T`` (in
            coordinates) annealed linearly ``temperature[0] -> temperature[1]``, by default
            ``(D / 4, 0.1)`` for a site of width ``D``, plus ``width_weight * b`` in the loss), ``"linear"`` (the non-orthogonal
            invertible :class:`~faithlens.das.alignment.SymmetricDefinite`), ``"identity"``
            (coordinate patching of the first ``dims`` native coordinates: nothing is learned,
            one epoch measures its IIA; a baseline for the learned alignments), or an alignment
            read off the data instead of trained (``"mean_diff"``, ``"pca"``, ``"probe"``:
            :mod:`faithlens.das.directions`, from ``values``; one epoch measures it).
        loss: ``"iia"`` (cross-entropy on the counterfactual labels), ``"cl"`` (``cl_weight *
            L_CL`` only) or ``"iia+cl"``.
        cl_form: ``"modified"`` (the divergence paper: per-variable aligned subspaces
            ``cl_dims``, default ``[[0..k), [k..2k)]``, rows assigned by ``data.cl_groups``) or
            ``"mas"`` (the original full-space form).
        epochs, lr, batch_size: Adam, full batch by default.
        select: checkpoint selection: ``"iia"`` (the first epoch reaching the highest training
            IIA), ``"emd"`` (the lowest training EMD on ``emd_dims``, every ``eval_every``
            epochs; ties to higher IIA), ``"last"``, ``"settled"`` (the **last** epoch whose
            training IIA is within the 95% Wilson interval of the best: IIA saturates before the
            subspace converges, and this waits for it; on a planted subspace it lands closer
            than ``"iia"``, docs/divergence.md); ``"auto"``: ``"emd"`` with a CL loss (and
            ``emd_dims``), else ``"iia"``.
        emd_dims: native coordinates of the "EMD along feature dimensions".
        checkpoint_dir: save the training state every ``checkpoint_every`` epochs (atomically);
            calling again with the same arguments, model weights and data resumes from the last
            checkpoint (bit for bit the uninterrupted result); a checkpoint of another run is
            refused with :class:`~faithlens.errors.CheckpointError` naming what differs.
        seed: initialisation and batch order.
        progress: called as ``progress(done, total)`` after each epoch (the one protocol of
            :mod:`faithlens.progress`; ``total`` is the number of epochs this call trains). An
            old ``(epoch, history_row)`` callback keeps working for one release with a
            DeprecationWarning: a callback is taken for the new protocol when ``on_epoch`` is
            given too or when its two parameters are annotated ``int``.
        on_epoch: called after each epoch with ``(epoch, history_row)``.
        controls: measured after training on the IIA's pairs (:mod:`.result_controls`):
            ``"random_subspace"`` (default: ``draws`` random subspaces of the same size),
            ``"task"`` (trained again on arbitrary label mappings), ``"random_init"`` (trained
            again on a randomly initialised model), a list, ``"all"`` or ``"none"``; each
            control's IIA and selectivity ``iia - control_iia`` with intervals (``progress``
            counts the first training only).
        draws: random subspaces the ``"random_subspace"`` control averages.
        values: the causal variable's value per example, for the control task's label mapping
            and the direction methods (default: the counterfactual labels).
    """
    from . import result_controls as rc

    ctrl = rc.check_das_controls(controls)
    rc.check_control_inputs(data, ctrl, draws, values, seed)
    kw: dict[str, Any] = dict(
        dims=dims,
        loss=loss,
        cl_form=cl_form,
        cl_weight=cl_weight,
        cl_dims=cl_dims,
        epochs=epochs,
        lr=lr,
        boundary_lr=boundary_lr,
        batch_size=batch_size,
        select=select,
        eval_every=eval_every,
        emd_dims=emd_dims,
        temperature=temperature,
        width_weight=width_weight,
        checkpoint_every=checkpoint_every,
        seed=seed,
    )
    retrained = {"task", "random_init"} & set(ctrl)
    start = copy.deepcopy(alignment) if alignment is not None and retrained else None
    res, ev = fit_alignment(
        model,
        data,
        site,
        method=method,
        alignment=alignment,
        values=values,
        checkpoint_dir=checkpoint_dir,
        progress=progress,
        on_epoch=on_epoch,
        **kw,
    )
    own = np.asarray(ev.correct, dtype=np.float64)
    rt = rc.Retrain(method=method, start=start, values=values, keywords=kw)
    return rc.attach_controls(res, own, model, data, site, ctrl, draws=draws, seed=seed, retrain=rt)


def fit_alignment(
    model: Model,
    data: InterchangeData,
    site: SiteLike,
    *,
    method: str,
    alignment: Alignment | None = None,
    values: Any = None,
    checkpoint_dir: str | Path | None = None,
    progress: Progress | None = None,
    on_epoch: EpochCallback | None = None,
    **options: Any,
) -> tuple[DASResult, AlignmentEval]:
    """The training run of :func:`das` without its controls: the result (no control run) and
    the evaluation of its selected checkpoint (``correct``: per pair). ``options``: the
    :class:`~faithlens.das.args.DASOptions` fields but ``method``."""
    from .directions import DIRECTION_METHODS, direction_alignment

    direction = method in DIRECTION_METHODS
    if direction and alignment is not None:
        raise V.fail("alignment", type(alignment).__name__, f"is read off the data by {method}")
    opts = DASOptions(method="identity" if direction else method, **options)
    opts, s = check_inputs(model, data, site, alignment, progress, opts, on_epoch)
    if direction:
        k = opts.dims if isinstance(opts.dims, int) else len(list(opts.dims))
        alignment = direction_alignment(method, model, data, s, k, values=values, seed=opts.seed)
        opts = replace(opts, dims=k)
    progress, on_epoch = split_progress(progress, on_epoch)
    src = source_activations(model, data, s)
    dim_list, cl_dims = resolve_dims(opts, data, s, src)
    tr = _init_training(model, data, s, src, opts, alignment, dim_list, cl_dims)
    ckpt = Checkpointer.open(run_config(tr), checkpoint_dir, model, data)
    ckpt.restore(tr)
    train_loop(tr, ckpt, progress, on_epoch)
    final_dims = restore_best(tr)
    ev = evaluate_alignment(
        model,
        tr.alignment,
        data,
        s,
        dims=final_dims,
        emd_dims=opts.emd_dims,
        natural=tr.natural,
        batch_size=tr.bs,
        seed=opts.seed,
    )
    res = _assemble(tr, final_dims, ev)
    return (replace(res, method=method) if direction else res), ev


# --------------------------------------------------------------------------------------------
# the training state
# --------------------------------------------------------------------------------------------


@dataclass
class DASTraining:
    """The state of one DAS run that every training step shares: the inputs, the alignment (and
    a boundless mask) with their optimiser and batch-order generator, the history and the best
    epoch so far."""

    model: Model
    data: InterchangeData
    site: Site
    src: Tensor
    width: int
    dims: list[int]
    cl_dims: Sequence[Sequence[int]] | None
    opts: DASOptions
    uses_cl: bool
    boundless: bool
    device: torch.device
    resume: tuple[int, Tensor] | None
    alignment: Alignment
    mask: BoundlessMask | None
    opt: torch.optim.Adam
    gen: torch.Generator
    n: int
    bs: int
    natural: Tensor
    cl_targets: Tensor | None
    t0: float
    t1: float
    history: list[dict[str, float]] = field(default_factory=list)
    best: dict[str, Any] = field(
        default_factory=lambda: {
            "epoch": -1,
            "iia": -1.0,
            "emd": math.inf,
            "state": None,
            "mask": None,
        }
    )
    start_epoch: int = 0

    def temp(self, e: int) -> float:
        """The boundless mask's temperature at epoch ``e``."""
        t0, t1 = self.t0, self.t1
        return t0 + (t1 - t0) * (e / max(1, self.opts.epochs - 1))

    def run_batch(
        self, rows: Tensor | None, dims: Sequence[int] | None, mask: Tensor | None, *, grad: bool
    ) -> tuple[Tensor, Tensor]:
        """Scores and intervened activations for ``rows`` under the current alignment."""
        return _run_batch(
            self.model,
            self.data,
            self.site,
            self.alignment,
            self.src,
            rows,
            dims,
            mask,
            grad=grad,
            resume=self.resume,
        )


def _init_training(
    model: Model,
    data: InterchangeData,
    s: Site,
    src: Tensor,
    o: DASOptions,
    alignment: Alignment | None,
    dim_list: list[int],
    cl_dims: Sequence[Sequence[int]] | None,
) -> DASTraining:
    """The alignment (initialised from ``seed`` without touching the global generator), the
    mask, Adam, the batch-order generator and the training data on the site's device."""
    method, width, seed = o.method, int(src.shape[-1]), o.seed
    boundless = method == "boundless"
    lr, boundary_lr, batch_size, temperature = o.lr, o.boundary_lr, o.batch_size, o.temperature
    device = src.device
    resume = base_resume(model, data, s)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        al = alignment if alignment is not None else make_alignment(method, width)
        mask_mod = BoundlessMask(width) if boundless else None
    if al.width != width:
        raise ShapeError(f"das: the given alignment has width {al.width}, the site {width}")
    al = al.to(device)
    params: list[dict[str, Any]] = [{"params": list(al.parameters()), "lr": lr}]
    if mask_mod is not None:
        mask_mod = mask_mod.to(device)
        params.append({"params": list(mask_mod.parameters()), "lr": boundary_lr})
    opt = torch.optim.Adam(params)
    if not any(p.requires_grad for g in params for p in g["params"]):
        # nothing to learn (method="identity", or a frozen alignment): one epoch measures it, so
        # the run is one epoch everywhere (loop, selection, checkpoint key, the result)
        o = replace(o, epochs=1)
    gen = torch.Generator().manual_seed(seed)
    n = len(data)
    bs = n if batch_size is None else max(1, min(int(batch_size), n))
    natural = data.natural if data.natural is not None else flat_rows(src, width)
    natural = natural.to(device)
    cl_targets = None if data.cl_targets is None else data.cl_targets.to(device)
    if temperature is None:
        # in coordinates: a soft start over a quarter of the width (pyvene's 50 suits width 4096;
        # on a small site it makes the mask flat, and the boundary wanders off)
        temperature = (max(1.0, width / 4.0), 0.1)
    t0, t1 = float(temperature[0]), float(temperature[1])
    return DASTraining(
        model=model,
        data=data,
        site=s,
        src=src,
        width=width,
        dims=dim_list,
        cl_dims=cl_dims,
        opts=o,
        uses_cl=o.loss in ("cl", "iia+cl"),
        boundless=boundless,
        device=device,
        resume=resume,
        alignment=al,
        mask=mask_mod,
        opt=opt,
        gen=gen,
        n=n,
        bs=bs,
        natural=natural,
        cl_targets=cl_targets,
        t0=t0,
        t1=t1,
    )


def _assemble(tr: DASTraining, final_dims: list[int], ev: AlignmentEval) -> DASResult:
    """The :class:`DASResult` of the selected epoch."""
    o, s, mask_mod, al = tr.opts, tr.site, tr.mask, tr.alignment
    uses_cl = tr.uses_cl
    return DASResult(
        method=o.method,
        site=str(s.name),
        dims=tuple(final_dims),
        loss=o.loss,
        cl_form=o.cl_form if uses_cl else "",
        cl_weight=float(o.cl_weight) if uses_cl else 0.0,
        epochs=o.epochs,
        select=o.select,
        selected_epoch=int(tr.best["epoch"]),
        seed=o.seed,
        n=tr.n,
        iia=ev.iia,
        iia_se=ev.iia_se,
        iia_low=ev.iia_low,
        iia_high=ev.iia_high,
        emd=ev.emd,
        emd_features=ev.emd_features,
        emd_dims=tuple(int(d) for d in (o.emd_dims or [])),
        boundary=float(mask_mod.boundary().detach()) if mask_mod is not None else float("nan"),
        history=pd.DataFrame(tr.history),
        alignment_spec=al.spec(),
        alignment_params=al.to_flat(),
        data_name=tr.data.name,
        positions=_jsonable_positions(s.positions),
    )


def _jsonable_positions(p: Any) -> Any:
    if isinstance(p, Tensor):  # per-example positions
        return {"tensor": p.tolist()}
    if isinstance(p, (list, tuple)):
        return [int(i) for i in p]
    return p


__all__ = [
    "CHECKPOINT",
    "LOSSES",
    "METHODS",
    "SELECT",
    "AlignmentEval",
    "base_resume",
    "check_das_args",
    "das",
    "evaluate_alignment",
    "fit_alignment",
    "source_activations",
]
