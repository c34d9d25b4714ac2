"""The DAS training loop: per epoch, the EMD evaluation (when selecting by EMD), one pass of Adam
over the batches, the epoch's history row, the selection of the best epoch and the checkpoint.

Every step works on the :class:`~faithlens.das.train.DASTraining` state; the random calls (the
batch order from the run's own generator) and the tensor operations happen in the order they
always have, so a run is reproducible bit for bit and resumable from a checkpoint.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.nn.utils import parametrize

from .. import stats
from ..divergence import distances as D
from ..progress import Progress
from .checkpoint import Checkpointer
from .losses import cl_loss_mas, cl_loss_modified, iia_loss

if TYPE_CHECKING:
    from .train import DASTraining


def flat_rows(t: Tensor, width: int) -> Tensor:
    return t.reshape(-1, width)


def _freeze(module: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Turn off ``requires_grad`` on the parameters that have it; returns them (to restore)."""
    changed = [p for p in module.parameters() if p.requires_grad]
    for p in changed:
        p.requires_grad_(False)
    return changed


def _unfreeze(params: list[torch.nn.Parameter]) -> None:
    for p in params:
        p.requires_grad_(True)


def _state(module: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def train_loop(
    tr: DASTraining,
    ckpt: Checkpointer,
    progress: Progress | None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
) -> None:
    """Train from ``tr.start_epoch`` to the last epoch, updating ``tr.history`` and
    ``tr.best``."""
    epochs = tr.opts.epochs
    # the model is a constant here: no gradient accumulates in (or stays on) its weights
    frozen = _freeze(tr.model.module)
    try:
        for epoch in range(tr.start_epoch, epochs):
            T = tr.temp(epoch)
            snapshot = _state(tr.alignment)
            mask_snapshot = _state(tr.mask) if tr.mask is not None else None
            emd_value = emd_at_epoch(tr, epoch, T)
            row = train_epoch(tr, epoch, T, emd_value)
            tr.history.append(row)
            select_epoch(tr, epoch, row["iia"], emd_value, snapshot, mask_snapshot)
            if on_epoch is not None:
                on_epoch(epoch, row)
            if progress is not None:
                progress(epoch + 1, epochs)
            if ckpt.path is not None and (
                (epoch + 1) % tr.opts.checkpoint_every == 0 or epoch == epochs - 1
            ):
                ckpt.save(tr, epoch + 1)
    finally:
        _unfreeze(frozen)


def emd_at_epoch(tr: DASTraining, epoch: int, T: float) -> float:
    """The training EMD on ``emd_dims`` before this epoch's updates, when selecting by EMD and
    this is an evaluation epoch (else NaN). As in the paper's code this is its Sinkhorn "EMD"
    (:func:`~faithlens.divergence.distances.sinkhorn`, geomloss with ``scaling=0.5``), not the
    exact EMD the result reports."""
    o = tr.opts
    n, bs, width = tr.n, tr.bs, tr.width
    mask_mod = tr.mask
    emd_value = float("nan")
    if o.select == "emd" and (epoch % o.eval_every == 0 or epoch == o.epochs - 1):
        with torch.no_grad(), parametrize.cached():
            m = mask_mod(T) if mask_mod is not None else None
            acts = []
            for start in range(0, n, bs):
                rows = torch.arange(start, min(n, start + bs))
                _, h = tr.run_batch(rows, None if m is not None else tr.dims, m, grad=False)
                acts.append(flat_rows(h, width))
            # the selection criterion is the paper's Sinkhorn divergence (its code selects by it)
            emd_value = D.sinkhorn(torch.cat(acts), tr.natural, dims=list(o.emd_dims or []))
    return emd_value


def train_epoch(tr: DASTraining, epoch: int, T: float, emd_value: float) -> dict[str, float]:
    """One pass of Adam over the batches (in the order the run's generator draws); the
    epoch's history row."""
    o = tr.opts
    n, bs, width, device = tr.n, tr.bs, tr.width, tr.device
    data, al, mask_mod, opt = tr.data, tr.alignment, tr.mask, tr.opt
    loss, uses_cl, cl_targets, cl_dims = o.loss, tr.uses_cl, tr.cl_targets, tr.cl_dims
    order = torch.randperm(n, generator=tr.gen) if bs < n else torch.arange(n)
    tot_loss = tot_iia_loss = tot_cl = 0.0
    n_correct = 0
    for start in range(0, n, bs):
        rows = order[start : start + bs]
        opt.zero_grad(set_to_none=True)
        # an orthogonal parametrization is recomputed at every access: once per step
        with parametrize.cached():
            m = mask_mod(T) if mask_mod is not None else None
            scores, h = tr.run_batch(rows, None if m is not None else tr.dims, m, grad=True)
            labels = data.labels[rows].to(scores.device)
            l_iia = iia_loss(scores, labels)
            total = torch.zeros((), device=scores.device)
            if loss in ("iia", "iia+cl"):
                total = total + l_iia
            l_cl = torch.zeros((), device=scores.device)
            if uses_cl:
                assert cl_targets is not None
                hf = flat_rows(h, width)
                tg = flat_rows(cl_targets[rows.to(device)], width)
                if o.cl_form == "mas":
                    l_cl = cl_loss_mas(hf, tg)
                else:
                    groups = None if data.cl_groups is None else data.cl_groups[rows]
                    assert cl_dims is not None
                    l_cl = cl_loss_modified(hf, tg, al, groups, cl_dims)
                total = total + o.cl_weight * l_cl
            if mask_mod is not None:
                total = total + o.width_weight * mask_mod.boundary()
            if total.requires_grad:  # an identity alignment has nothing to train
                total.backward()
        opt.step()
        b = len(rows)
        tot_loss += float(total.detach()) * b
        tot_iia_loss += float(l_iia.detach()) * b
        tot_cl += float(l_cl.detach()) * b
        n_correct += int((scores.detach().argmax(-1) == labels).sum())
    iia = n_correct / n
    return {
        "epoch": float(epoch),
        "loss": tot_loss / n,
        "iia_loss": tot_iia_loss / n,
        "cl_loss": tot_cl / n if uses_cl else float("nan"),
        "iia": iia,
        "emd_features": emd_value,
        "temperature": T if tr.boundless else float("nan"),
        "boundary": float(mask_mod.boundary().detach()) if mask_mod is not None else float("nan"),
    }


def select_epoch(
    tr: DASTraining,
    epoch: int,
    iia: float,
    emd_value: float,
    snapshot: dict[str, Tensor],
    mask_snapshot: dict[str, Tensor] | None,
) -> None:
    """Keep the epoch's starting parameters in ``tr.best`` when it beats the best so far
    (``select="last"``: the parameters after the final update)."""
    select, epochs, best = tr.opts.select, tr.opts.epochs, tr.best
    better = False
    if select == "settled":
        # the last epoch whose IIA is within the 95% Wilson interval of the best so far (after the
        # best epoch the best is final, so this is the last such epoch of the whole run)
        top = max(float(best.get("top", -1.0)), iia)
        low = float(stats.proportion_interval(round(top * tr.n), tr.n).low)
        if iia >= low - 1e-12:
            tr.best = {
                "epoch": epoch,
                "iia": iia,
                "top": top,
                "emd": math.inf,
                "state": snapshot,
                "mask": mask_snapshot,
            }
        else:
            tr.best = {**best, "top": top}
        return
    if select == "iia":
        better = iia > best["iia"]
    elif select == "emd" and math.isfinite(emd_value):
        better = emd_value < best["emd"] or (emd_value == best["emd"] and iia > best["iia"])
    if better:
        tr.best = {
            "epoch": epoch,
            "iia": iia,
            "emd": emd_value if math.isfinite(emd_value) else math.inf,
            "state": snapshot,
            "mask": mask_snapshot,
        }
    if select == "last" and epoch == epochs - 1:
        # the parameters after the final update
        tr.best = {
            "epoch": epochs,
            "iia": iia,
            "emd": math.inf,
            "state": _state(tr.alignment),
            "mask": _state(tr.mask) if tr.mask is not None else None,
        }


def restore_best(tr: DASTraining) -> list[int]:
    """Load the selected epoch's parameters; the interchanged dims (a boundless mask's hard
    dims)."""
    al, mask_mod, best = tr.alignment, tr.mask, tr.best
    if best["state"] is not None:
        al.load_state_dict(best["state"])
    if mask_mod is not None and best["mask"] is not None:
        mask_mod.load_state_dict(best["mask"])
    return mask_mod.hard_dims() if mask_mod is not None else tr.dims


__all__ = ["restore_best", "select_epoch", "train_epoch", "train_loop"]
