"""Network Dissection (Bau et al. 2017) with guarantees.

For each convolutional channel ``k``: upsample its activation maps to the concept masks'
resolution (bilinear), fire on its top ``quantile`` of activations over *all images and
positions* (``P(A_k > T_k) = quantile``), and score every concept by the dataset-level IoU

    IoU(k, c) = Σ_x |M_k(x) ∧ L_c(x)| / Σ_x |M_k(x) ∨ L_c(x)|

(a ratio of sums over images, not a mean of per-image IoUs; image-level labels count as
full-image masks). The channel's label is the concept with the largest IoU; NetDissect calls a
channel a *detector* when that IoU exceeds 0.04.

Pixels of one image are not independent, so the i.i.d. unit is the image: this is
:func:`faithlens.neurons.explain` on pixel samples grouped by image, and the bounds use
per-image pixel fractions (ratio of means, uniform over the data-chosen threshold) while the
bootstrap resamples whole images.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError, ShapeError
from ..executor import current_executor
from ..models.probe import spatial_maps
from ..progress import Progress
from .kernels import SoftWPMI
from .probing import Activations, Concepts, task_inputs
from .result import NeuronExplanation

if TYPE_CHECKING:
    from ..models.model import Model
    from ..models.sites import SiteLike

#: NetDissect's rule: a channel whose best IoU exceeds this is a detector.
DETECTOR_IOU = 0.04


@dataclasses.dataclass(frozen=True)
class Dissection(NeuronExplanation):
    """A :class:`NeuronExplanation` of channels by dataset-level IoU against concept masks,
    with NetDissect's detector rule (``IoU > detector_iou``)."""

    image_size: tuple[int, int] = (0, 0)
    map_size: tuple[int, int] = (0, 0)
    n_images: int = 0
    detector_iou: float = DETECTOR_IOU

    def detectors(self) -> np.ndarray:
        """``[U]``: whether the best IoU exceeds ``detector_iou`` (NetDissect's rule; an
        empirical score, not a guarantee: compare ``certified``)."""
        s = np.nan_to_num(self.scores[0], nan=-np.inf)
        return s.max(axis=1) > self.detector_iou

    def to_frame(self) -> pd.DataFrame:
        df = super().to_frame()
        det = self.detectors()
        df["detector"] = [bool(det[self.units.index(u)]) for u in df["unit"]]
        return df

    def summary(self, max_units: int = 15) -> str:
        det = self.detectors()
        head = (
            f"Network Dissection: {len(self.units)} channels, {self.n_images} images, maps "
            f"{self.map_size[0]}x{self.map_size[1]} upsampled to "
            f"{self.image_size[0]}x{self.image_size[1]}; {int(det.sum())} detectors "
            f"(IoU > {self.detector_iou:g}), {int(self.certified().sum())} certified\n"
        )
        return head + super().summary(max_units)


def _as_4d(t: Any, what: str) -> Tensor:
    v = torch.as_tensor(np.asarray(t) if not isinstance(t, Tensor) else t)
    if v.dim() != 4:
        raise ShapeError(
            f"{what} must be [n_images, channels, height, width], got {tuple(v.shape)}"
        )
    return v.float()


def dissect(
    maps: Any,
    masks: Any = None,
    labels: Any = None,
    *,
    concept_names: Sequence[str] | None = None,
    label_names: Sequence[str] | None = None,
    model: Model | None = None,
    inputs: Any = None,
    quantile: float = 0.005,
    delta: float = 0.05,
    n_boot: int = 200,
    level: float = 0.9,
    interval: str = "kl",
    simultaneous: bool = False,
    unit_names: Sequence[str] | None = None,
    skip_constant: bool = True,
    mode: str = "bilinear",
    batch_size: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    max_memory: int | None = None,
    checkpoint: str | Path | None = None,
    progress: Progress | None = None,
) -> Dissection:
    """Network Dissection of convolutional channels, with bounds and BE sets.

    Args:
        maps: ``[n_images, channels, h, w]`` activation maps, or a site (with ``model`` and
            ``inputs``) whose output has that shape.
        masks: ``[n_images, n_concepts, H, W]`` pixel masks in ``[0, 1]``.
        labels: ``[n_images, n_labels]`` image-level labels (scene, texture...), counted as
            full-image masks.
        quantile: the top fraction of each channel's upsampled activations (over all images and
            positions) that fires; NetDissect uses 0.005 — use 0.01-0.02 for small maps.
        skip_constant: leave out dead channels (constant maps) instead of raising.
        mode: the upsampling (``F.interpolate`` mode: ``"bilinear"``, ``"nearest"``...).
        max_memory: bytes one chunk may use: the images per forward pass when ``maps`` is a site
            (from the executor, :mod:`faithlens.executor`) and the kernels' chunks; default: the
            configured memory budget.
        batch_size: deprecated for one release (use ``max_memory``): images per forward pass
            when ``maps`` is a site.

    Returns a :class:`Dissection` (metric ``iou``).
    """
    from .. import validate as V
    from ..models.sites import Site
    from .explain import check_explain_args, run_explain

    # every argument is checked before any map is collected or upsampled
    V.probability("quantile", quantile, fix="the top quantile that fires, e.g. 0.005")
    check_explain_args(
        delta=delta,
        n_boot=n_boot,
        level=level,
        interval=interval,
        seed=seed,
        max_memory=max_memory,
        progress=progress,
    )
    if batch_size is not None:
        V.positive_int("batch_size", batch_size)
    V.replaced_knob("dissect", "batch_size", batch_size, "max_memory", max_memory)
    if device is not None:
        V.device(device)
    if isinstance(maps, str | Site):
        if model is None or inputs is None:
            raise InputError("dissect(site, ...) needs model= and inputs=")
        maps = collect_maps(model, inputs, maps, batch_size=batch_size, max_memory=max_memory)
    m4 = _as_4d(maps, "activation maps")
    concepts, names, size = _concept_maps(m4, masks, labels, concept_names, label_names)
    if not 0 < quantile < 1:
        raise InputError(f"quantile must be in (0, 1), got {quantile}")
    acts, con, groups = _pixel_samples(m4, concepts, names, size, mode, unit_names)
    n, _, h, w = m4.shape
    out = run_explain(
        acts,
        con,
        ("iou",),
        alpha=quantile,
        threshold=None,
        direction="unit_predicts_concept",
        delta=delta,
        n_boot=n_boot,
        level=level,
        groups=groups,
        interval=interval,
        bound="auto",
        simultaneous=simultaneous,
        skip_constant=skip_constant,
        softwpmi=SoftWPMI(),
        seed=seed,
        device=device,
        max_memory=max_memory,
        checkpoint=checkpoint,
        progress=progress,
        result_cls=Dissection,
        extra={
            "image_size": size,
            "map_size": (h, w),
            "n_images": n,
            "detector_iou": DETECTOR_IOU,
        },
    )
    assert isinstance(out, Dissection)
    return out


def _concept_maps(
    m4: Tensor,
    masks: Any,
    labels: Any,
    concept_names: Sequence[str] | None,
    label_names: Sequence[str] | None,
) -> tuple[Tensor, list[str], tuple[int, int]]:
    """The concepts as ``[n, M, H, W]`` masks (pixel masks, then image-level labels as
    full-image masks), their names, and the masks' resolution ``(H, W)`` (the maps' own when
    there are only labels)."""
    n, _, h, w = m4.shape
    parts: list[Tensor] = []
    names: list[str] = []
    size: tuple[int, int] | None = None
    if masks is not None:
        k4 = _as_4d(masks, "concept masks")
        if k4.shape[0] != n:
            raise ShapeError(f"masks cover {k4.shape[0]} images but the maps {n}")
        size = (int(k4.shape[2]), int(k4.shape[3]))
        parts.append(k4)
        names += (
            list(concept_names)
            if concept_names is not None
            else [f"mask{i}" for i in range(k4.shape[1])]
        )
        if len(names) != k4.shape[1]:
            raise ShapeError(f"{len(names)} concept names for {k4.shape[1]} masks")
    if labels is not None:
        lab = torch.as_tensor(np.asarray(labels) if not isinstance(labels, Tensor) else labels)
        lab = lab.float().reshape(lab.shape[0], -1)
        if lab.shape[0] != n:
            raise ShapeError(f"labels cover {lab.shape[0]} images but the maps {n}")
        if size is None:
            size = (h, w)
        parts.append(lab[:, :, None, None].expand(-1, -1, size[0], size[1]))
        lnames = (
            list(label_names)
            if label_names is not None
            else [f"label{i}" for i in range(lab.shape[1])]
        )
        if len(lnames) != lab.shape[1]:
            raise ShapeError(f"{len(lnames)} label names for {lab.shape[1]} labels")
        names += lnames
    if not parts or size is None:
        raise InputError("dissect needs concept masks, image-level labels, or both")
    return torch.cat(parts, 1), names, size


def _pixel_samples(
    m4: Tensor,
    concepts: Tensor,
    names: list[str],
    size: tuple[int, int],
    mode: str,
    unit_names: Sequence[str] | None,
) -> tuple[Activations, Concepts, Tensor]:
    """The maps upsampled to the masks' resolution, as one sample per pixel (``[n*H*W,
    channels]`` activations, ``[n*H*W, M]`` concepts), grouped by image."""
    n, n_ch = m4.shape[0], m4.shape[1]
    big_h, big_w = size
    up = F.interpolate(
        m4,
        size=(big_h, big_w),
        mode=mode,
        **({"align_corners": False} if mode in ("bilinear", "bicubic") else {}),
    )
    x = up.permute(0, 2, 3, 1).reshape(n * big_h * big_w, n_ch)
    c = concepts.permute(0, 2, 3, 1).reshape(n * big_h * big_w, -1)
    groups = torch.arange(n).repeat_interleave(big_h * big_w)
    units = (
        tuple(unit_names) if unit_names is not None else tuple(f"channel {i}" for i in range(n_ch))
    )
    acts = Activations(x, units, groups, None, site=None)
    return acts, Concepts(c, tuple(names)), groups


def collect_maps(
    model: Model,
    inputs: Any,
    site: SiteLike,
    *,
    batch_size: int | None = None,
    max_memory: int | None = None,
) -> Tensor:
    """Activation maps ``[n, channels, h, w]`` of a site over ``inputs`` (a tensor of images, or
    a task built from one: its clean pixels).

    ``batch_size`` images per forward pass, else as many as fit ``max_memory`` bytes (default:
    the configured budget of the model's device), planned by the executor
    (:func:`images_per_pass`)."""
    from ..models.sites import as_site

    s = as_site(site)
    hook = model.site_info(s.name).hook
    inputs = task_inputs(inputs)  # a task built from tensors: its clean pixels
    if not isinstance(inputs, Tensor) and not isinstance(inputs, np.ndarray | list | tuple):
        raise InputError(
            f"dissect(site, inputs=...) runs images: give a tensor [n, channels, h, w] or a task "
            f"built from one pixel tensor (Task.from_tensors), not {type(inputs).__name__}"
        )
    x = inputs if isinstance(inputs, Tensor) else torch.as_tensor(np.asarray(inputs))
    n = int(x.shape[0])
    ex = current_executor()
    if batch_size is None:
        batch_size = images_per_pass(model, x, s, max_memory=max_memory)

    def one(chunk: slice) -> Tensor:
        part = x[chunk].to(model.device)
        out = model.run(part, cache=[s])
        # a spatial site's [batch, h * w, channels] as the maps [batch, channels, h, w]
        maps = spatial_maps(model.module, hook, out.cache[s.name], (part,), {})
        return maps.detach().float().cpu()

    outs = list(ex.map(one, ex.chunks(n, batch_size)))
    maps = torch.cat(outs, 0)
    if maps.dim() != 4:
        raise ShapeError(
            f"site {s.name} gives {tuple(maps.shape[1:])} per example, not [channels, h, w] maps"
        )
    return maps


def images_per_pass(
    model: Model, images: Tensor, site: SiteLike, *, max_memory: int | None = None
) -> int:
    """Images per forward pass (from the executor): as many as fit ``max_memory`` bytes
    (default: the configured budget of the model's device), counting sixteen float32 tensors
    the size of the larger of one image and its map at ``site`` per image (one image's forward
    pass measures the map)."""
    from ..models.sites import as_site

    s = as_site(site)
    n = int(images.shape[0])
    if n == 0:
        raise InputError("no images to dissect")
    probe = model.run(images[:1].to(model.device), cache=[s]).cache[s.name]  # one image's map
    per_image = 4 * 16 * max(int(images[0].numel()), int(probe[0].numel()))
    ex = current_executor()
    return ex.chunk_size(n, per_image, device=model.device, max_memory=max_memory)


__all__ = ["DETECTOR_IOU", "Dissection", "collect_maps", "dissect", "images_per_pass"]
