"""Losses for alignment search: the interchange-intervention loss and the Counterfactual Latent
(CL) loss in its two forms.

- :func:`iia_loss`: cross-entropy of the intervened model's output against the label the causal
  model predicts for the counterfactual.
- :func:`cl_loss_mas`: the original CL loss of Grant (2025, Model Alignment Search), in the full
  native space: ``mean_p 1/2 [ |h^ - c|^2 / D + (1 - cos(h^, c)) ]``.
- :func:`cl_loss_modified`: the divergence paper's form: each row ``i`` is assigned a causal
  variable ``v_i`` with aligned coordinates ``M_v``; with ``P_v(h) = ((h W) * M_v) W^-1``,
  ``L = mean_{i,d} (P(h^_i) - sg P(c_i))_d^2 + mean_i [1 - cos(P(h^_i), sg P(c_i))]`` (no 1/2;
  the target ``c_i`` is the mean natural vector whose variable ``v_i`` has the counterfactual
  value; stop-gradient on the projected target).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError, ShapeError
from .alignment import Alignment


def iia_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy of ``logits`` ``[n, classes]`` against ``labels`` ``[n]``."""
    return F.cross_entropy(logits.float(), labels.to(logits.device).long())


def _cos_term(a: Tensor, b: Tensor) -> Tensor:
    return 1.0 - F.cosine_similarity(a, b, dim=-1, eps=1e-8)


def cl_loss_mas(intervened: Tensor, targets: Tensor, *, form: str = "both") -> Tensor:
    """The original (MAS) CL loss in native space, with the 1/2:
    ``mean_p 1/2 [ |h^_p - c_p|^2 / D + (1 - cos(h^_p, c_p)) ]``. ``form``: ``"both"``,
    ``"mse"`` or ``"cos"`` (keep one term)."""
    _check(intervened, targets)
    c = targets.detach().to(intervened)
    mse = (intervened - c).pow(2).mean(-1)
    cos = _cos_term(intervened, c)
    if form == "mse":
        per = mse
    elif form == "cos":
        per = cos
    elif form == "both":
        per = mse + cos
    else:
        raise InputError(f"CL loss form must be 'both', 'mse' or 'cos', not {form!r}")
    return 0.5 * per.mean()


def cl_loss_modified(
    intervened: Tensor,
    targets: Tensor,
    alignment: Alignment,
    groups: Tensor | None,
    group_dims: Sequence[Sequence[int]],
    *,
    form: str = "both",
) -> Tensor:
    """The divergence paper's CL loss (see the module docstring).

    ``groups[i]`` indexes ``group_dims``: the aligned coordinates of row ``i``'s variable.
    ``groups=None`` projects every row onto the union of all ``group_dims``.
    """
    _check(intervened, targets)
    if not group_dims:
        raise InputError("the modified CL loss needs the aligned coordinates of each variable")
    width = intervened.shape[-1]
    masks = torch.zeros(len(group_dims), width, dtype=intervened.dtype, device=intervened.device)
    for g, dims in enumerate(group_dims):
        d = torch.as_tensor(list(dims), dtype=torch.long)
        if d.numel() == 0 or bool(((d < 0) | (d >= width)).any()):
            raise ShapeError(f"CL group {g}: aligned dims {d.tolist()} out of range 0..{width - 1}")
        masks[g, d.to(intervened.device)] = 1
    if groups is None:
        m = masks.amax(0).expand_as(intervened)
    else:
        gi = groups.to(intervened.device).long()
        if gi.shape[0] != intervened.shape[0]:
            raise ShapeError(f"CL groups has {gi.shape[0]} rows, the batch {intervened.shape[0]}")
        m = masks[gi]
    c = targets.to(intervened)
    ph = alignment.inverse(alignment.forward(intervened) * m)
    pc = alignment.inverse(alignment.forward(c) * m).detach()
    mse = (ph - pc).pow(2)
    cos = _cos_term(ph, pc)
    if form == "mse":
        return mse.mean()
    if form == "cos":
        return cos.mean()
    if form == "both":
        return mse.mean() + cos.mean()
    raise InputError(f"CL loss form must be 'both', 'mse' or 'cos', not {form!r}")


def _check(intervened: Tensor, targets: Tensor) -> None:
    if intervened.shape != targets.shape:
        raise ShapeError(
            f"CL targets have shape {tuple(targets.shape)} but the intervened activations "
            f"{tuple(intervened.shape)}: give one natural counterfactual latent per intervened row"
        )


__all__ = ["cl_loss_mas", "cl_loss_modified", "iia_loss"]
