"""Alignment search at a site: DAS, Boundless DAS and the non-orthogonal parameterisation,
trained with the interchange-intervention loss and optionally the Counterfactual Latent loss.

Every forward pass goes through faithlens' run engine: the learned alignment is the ``basis`` of
an ``fl.Interchange`` at the site, the run has ``grad=True``, and the loss is computed from the
run's logits (and, for the CL loss, from the intervened activation the same run caches).
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.nn.utils import parametrize

from .. import safe_load, stats
from .. import validate as V
from ..divergence import distances as D
from ..errors import CheckpointError, InputError, ShapeError
from ..fingerprint import data_fingerprint, model_fingerprint
from ..interventions import Interchange
from ..models.model import Model
from ..models.sites import Site, SiteLike, as_site
from ..runs import Resume
from ..tasks.interchange import InterchangeData, select_rows
from .alignment import Alignment, BoundlessMask, make_alignment
from .losses import cl_loss_mas, cl_loss_modified, iia_loss
from .result import DASResult

LOSSES = ("iia", "cl", "iia+cl")
SELECT = ("auto", "iia", "emd", "last")
CHECKPOINT = "das_checkpoint.pt"
METHODS = ("rotation", "boundless", "linear", "identity", "das")


def check_das_args(
    *,
    dims: Any = 1,
    method: Any = "rotation",
    loss: Any = "iia",
    cl_form: Any = "modified",
    cl_weight: Any = 100.0,
    cl_dims: Any = None,
    epochs: Any = 601,
    lr: Any = 0.01,
    boundary_lr: Any = 0.01,
    batch_size: Any = None,
    select: Any = "auto",
    eval_every: Any = 10,
    emd_dims: Any = None,
    temperature: Any = (50.0, 0.1),
    width_weight: Any = 1.0,
    checkpoint_every: Any = 100,
    seed: Any = 0,
    cli: bool = False,
) -> None:
    """Refuse every :func:`das` argument that makes no sense, before any forward pass.

    Checks what does not depend on the site (the site's width is checked once it is known).
    ``cli=True`` names the arguments as command-line options (``--batch-size``).
    """

    def nm(name: str) -> str:
        return "--" + name.replace("_", "-") if cli else name

    def index_list(name: str, value: Any, *, allow_empty: bool = False) -> list[int]:
        if isinstance(value, (str, bytes)):
            raise V.fail(nm(name), value, "must be a list of coordinates", "e.g. [0, 1]")
        if not isinstance(value, Sequence):
            try:
                value = list(value)
            except TypeError:
                raise V.fail(nm(name), value, "must be a list of coordinates") from None
        out = [V.nonnegative_int(nm(name), d, fix="coordinates count from 0") for d in value]
        if not out and not allow_empty:
            raise V.fail(nm(name), value, "is empty", "give at least one coordinate")
        if len(set(out)) != len(out):
            raise V.fail(nm(name), value, "repeats a coordinate", "list each coordinate once")
        return out

    V.choice(nm("method"), method, METHODS)
    V.choice(nm("loss"), loss, LOSSES)
    V.choice(nm("cl_form"), cl_form, ("modified", "mas"))
    V.choice(nm("select"), select, SELECT)
    if isinstance(dims, numbers.Integral) and not isinstance(dims, bool):
        V.positive_int(nm("dims"), dims, fix="give how many aligned coordinates carry the variable")
    else:
        index_list("dims", dims)
    uses_cl = loss in ("cl", "iia+cl")
    if uses_cl:
        V.positive_float(nm("cl_weight"), cl_weight, fix="the CL loss needs a weight > 0")
    else:
        V.finite_float(nm("cl_weight"), cl_weight, low=0.0)
    if cl_dims is not None:
        if isinstance(cl_dims, (str, bytes)) or not isinstance(cl_dims, Sequence) or not cl_dims:
            raise V.fail(nm("cl_dims"), cl_dims, "must be a non-empty list of coordinate lists")
        for group in cl_dims:
            index_list("cl_dims", group)
    V.positive_int(nm("epochs"), epochs)
    V.positive_float(nm("lr"), lr, fix="use a small positive learning rate such as 0.01")
    V.positive_float(nm("boundary_lr"), boundary_lr, fix="use e.g. 0.01")
    if batch_size is not None:
        V.positive_int(nm("batch_size"), batch_size, fix="omit it for full-batch training")
    V.positive_int(nm("eval_every"), eval_every, fix="evaluate the EMD every N >= 1 epochs")
    if emd_dims is not None:
        index_list("emd_dims", emd_dims, allow_empty=True)
    try:
        temps = tuple(temperature)
    except TypeError:
        temps = ()
    if isinstance(temperature, (str, bytes)) or len(temps) != 2:
        raise V.fail(
            nm("temperature"), temperature, "must be a pair (start, end)", "e.g. (50, 0.1)"
        )
    for t in temps:
        V.positive_float(nm("temperature"), t, fix="both temperatures must be > 0, e.g. (50, 0.1)")
    V.finite_float(nm("width_weight"), width_weight, low=0.0)
    V.positive_int(nm("checkpoint_every"), checkpoint_every)
    V.nonnegative_int(nm("seed"), seed)


@dataclass(frozen=True)
class AlignmentEval:
    """IIA (with a bootstrap CI) and EMDs of an alignment on one dataset.

    ``emd``: Sinkhorn divergence (un-normalised, geomloss convention) between the intervened
    activations and the natural ones over all units; ``emd_features``: the same on the
    ``emd_dims`` coordinates only (NaN when none were given). ``correct``: per example.
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


def _flat(t: Tensor, width: int) -> Tensor:
    return t.reshape(-1, width)


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
    blur: float = D.DEFAULT_BLUR,
    seed: int = 0,
) -> AlignmentEval:
    """IIA and EMD of an alignment on ``data`` (e.g. another task's data: OOD transfer).

    The natural reference for the EMD is ``natural``, else ``data.natural``, else the source
    activations (the synthetic-DAS convention).
    """
    if batch_size is not None:
        V.positive_int("batch_size", batch_size, fix="omit it to evaluate in one batch")
    V.nonnegative_int("seed", seed)
    V.positive_float("blur", blur)
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
            acts.append(_flat(h.detach(), width))
    corr = torch.cat(correct).numpy()
    itv = torch.cat(acts)
    nat = natural if natural is not None else data.natural
    nat = _flat(src, width) if nat is None else nat.to(itv.device)
    ci = stats.mean_interval(corr, seed=seed)
    emd = D.sinkhorn(itv, nat, blur=blur)
    emd_f = D.sinkhorn(itv, nat, blur=blur, dims=list(emd_dims)) if emd_dims else float("nan")
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


def _config_hash(cfg: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]


CHECKPOINT_FORMAT = 2
_CKPT_FIX = "use another checkpoint folder, or delete this file to start training from scratch"
_CKPT_KEYS = (
    "format", "key", "model", "data", "epoch", "alignment", "mask", "optimizer", "generator",
    "history", "best", "config",
)  # fmt: skip


def _plain(cfg: dict[str, Any]) -> Any:
    """The config as the JSON values its key hashes (what a checkpoint stores and compares)."""
    return json.loads(json.dumps(cfg, sort_keys=True, default=str))


def _fingerprints(model: Model, data: InterchangeData, path: Path) -> dict[str, str]:
    """sha256 of the model's weights and of the data's contents (what a checkpoint is for)."""
    parts = {f: getattr(data, f) for f in _DATA_FIELDS}
    try:
        data_fp = data_fingerprint(parts)
    except TypeError as e:
        raise CheckpointError(
            f"checkpoint_dir={str(path.parent)!r}: the data cannot be fingerprinted ({e}), so a "
            "checkpoint could not tell it from other data; give the inputs as tensors or "
            "faithlens Inputs, or train without checkpoint_dir"
        ) from None
    return {"model": model_fingerprint(model.module), "data": data_fp}


_DATA_FIELDS = (
    "base", "source", "labels", "positions", "candidates", "natural", "cl_targets", "cl_groups",
    "name",
)  # fmt: skip


def _read_checkpoint(
    path: Path,
    device: torch.device,
    cfg: dict[str, Any],
    key: str,
    fingerprints: dict[str, str],
) -> dict[str, Any]:
    """The checkpoint at ``path``, loaded safely and refused unless it was written by this very
    run: the same arguments, the same model weights, the same data."""
    raw = safe_load.torch_load(
        path, what="faithlens DAS checkpoint", fix=_CKPT_FIX, map_location=device
    )
    if isinstance(raw, dict) and raw.get("format") != CHECKPOINT_FORMAT and "key" in raw:
        raise CheckpointError(
            f"{path} was written by an older faithlens (checkpoint format "
            f"{raw.get('format', 1)}, without the model and data fingerprints this version "
            f"checks); {_CKPT_FIX}"
        )
    ck = safe_load.require(raw, _CKPT_KEYS, path, what="faithlens DAS checkpoint", fix=_CKPT_FIX)
    differs: list[str] = []
    if ck["key"] != key:
        old = ck["config"] if isinstance(ck["config"], dict) else {}
        new = _plain(cfg)
        changed = [
            f"{k} {old.get(k, '(unset)')!r} -> {new.get(k, '(unset)')!r}"
            for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)
        ]
        differs.append("other arguments (" + ("; ".join(changed) or "the config") + ")")
    if ck["model"] != fingerprints["model"]:
        differs.append(
            f"another model (weights fingerprint {str(ck['model'])[:12]}, this model's "
            f"{fingerprints['model'][:12]})"
        )
    if ck["data"] != fingerprints["data"]:
        differs.append(
            f"other data (contents fingerprint {str(ck['data'])[:12]}, this data's "
            f"{fingerprints['data'][:12]})"
        )
    if differs:
        raise CheckpointError(
            f"{path} is a checkpoint of a different DAS run: {', '.join(differs)}; resuming it "
            f"would return that run's alignment; {_CKPT_FIX}"
        )
    return ck


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
    temperature: tuple[float, float] = (50.0, 0.1),
    width_weight: float = 1.0,
    alignment: Alignment | None = None,
    checkpoint_dir: str | Path | None = None,
    checkpoint_every: int = 100,
    seed: int = 0,
    progress: Callable[[int, dict[str, float]], None] | None = None,
) -> DASResult:
    """Learn an alignment at ``site`` so that interchanging its first ``dims`` aligned
    coordinates from the source run makes the model output ``data.labels``.

    Args:
        dims: how many aligned coordinates carry the variable (the first ``dims``), or a list.
            Ignored by ``method="boundless"``, which learns a soft mask.
        method: ``"rotation"`` (DAS), ``"boundless"`` (Boundless DAS: rotation + learned
            sigmoid mask, temperature annealed ``temperature[0] -> temperature[1]``, plus
            ``width_weight * boundary`` in the loss), ``"linear"`` (the non-orthogonal
            invertible :class:`~faithlens.das.alignment.SymmetricDefinite`), ``"identity"``.
        loss: ``"iia"`` (cross-entropy on the counterfactual labels), ``"cl"`` (``cl_weight *
            L_CL`` only) or ``"iia+cl"``.
        cl_form: ``"modified"`` (the divergence paper: per-variable aligned subspaces
            ``cl_dims``, default ``[[0..k), [k..2k)]``, rows assigned by ``data.cl_groups``) or
            ``"mas"`` (the original full-space form).
        epochs, lr, batch_size: Adam, full batch by default.
        select: checkpoint selection: ``"iia"`` (the first epoch reaching the highest training
            IIA), ``"emd"`` (the lowest training EMD on ``emd_dims``, every ``eval_every``
            epochs; ties to higher IIA), ``"last"``; ``"auto"``: ``"emd"`` with a CL loss (and
            ``emd_dims``), else ``"iia"``.
        emd_dims: native coordinates of the "EMD along feature dimensions".
        checkpoint_dir: save the training state every ``checkpoint_every`` epochs (atomically);
            calling again with the same arguments, model weights and data resumes from the last
            checkpoint (bit for bit the uninterrupted result); a checkpoint of another run is
            refused with :class:`~faithlens.errors.CheckpointError` naming what differs.
        seed: initialisation and batch order.
        progress: called after each epoch with ``(epoch, history_row)``.
    """
    check_das_args(
        dims=dims,
        method=method,
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
    if not isinstance(model, Model):
        raise V.fail(
            "model", type(model).__name__, "must be a faithlens Model", "use fl.load or fl.wrap"
        )
    if not isinstance(data, InterchangeData):
        raise V.fail(
            "data",
            type(data).__name__,
            "must be an InterchangeData",
            "build it with fl.InterchangeData",
        )
    V.min_examples("len(data)", len(data), what="an IIA with a confidence interval")
    if alignment is not None and not isinstance(alignment, Alignment):
        raise V.fail("alignment", type(alignment).__name__, "must be a faithlens Alignment or None")
    if progress is not None and not callable(progress):
        raise V.fail("progress", progress, "must be a callable (epoch, row) or None")
    epochs, eval_every, checkpoint_every = int(epochs), int(eval_every), int(checkpoint_every)
    s = as_site(site)
    uses_cl = loss in ("cl", "iia+cl")
    if uses_cl and data.cl_targets is None:
        raise InputError(
            "das: the CL loss needs natural counterfactual latents: build the data with "
            "cl_targets (e.g. faithlens.tasks.synthetic_das builds mean targets)"
        )
    if select == "auto":
        select = "emd" if uses_cl and emd_dims else "iia"
    if select == "emd" and not emd_dims:
        raise InputError("das: select='emd' needs emd_dims (the native feature coordinates)")

    src = source_activations(model, data, s)
    width = int(src.shape[-1])
    if not bool(torch.isfinite(src).all()):
        raise InputError(f"das: the source activations at {s.name} contain NaN or inf")
    boundless = method == "boundless"
    if isinstance(dims, int):
        if not 1 <= dims <= width:
            raise ShapeError(f"das: dims={dims} must be between 1 and the site width {width}")
        dim_list = list(range(dims))
    else:
        dim_list = [int(d) for d in dims]
        if not dim_list or any(not 0 <= d < width for d in dim_list):
            raise ShapeError(f"das: dims {dim_list} out of range for width {width}")
    k = len(dim_list)
    if uses_cl and cl_form == "modified":
        if cl_dims is None:
            cl_dims = [dim_list, list(range(k, 2 * k))] if 2 * k <= width else [dim_list]
        if data.cl_groups is not None and int(data.cl_groups.max()) >= len(cl_dims):
            raise InputError(
                f"das: cl_groups refers to variable {int(data.cl_groups.max())} but cl_dims has "
                f"{len(cl_dims)} groups"
            )
    if data.cl_targets is not None and uses_cl and data.cl_targets.shape[-1] != width:
        raise ShapeError(
            f"das: cl_targets have width {data.cl_targets.shape[-1]}, the site {width}"
        )
    if cl_dims is not None and any(not 0 <= d < width for g in cl_dims for d in g):
        raise ShapeError(
            f"das: cl_dims {[list(g) for g in cl_dims]} out of range for width {width}"
        )
    if emd_dims is not None and any(not 0 <= d < width for d in emd_dims):
        raise ShapeError(f"das: emd_dims {list(emd_dims)} out of range for width {width}")

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
    gen = torch.Generator().manual_seed(seed)
    n = len(data)
    bs = n if batch_size is None else max(1, min(int(batch_size), n))
    natural = data.natural if data.natural is not None else _flat(src, width)
    natural = natural.to(device)
    cl_targets = None if data.cl_targets is None else data.cl_targets.to(device)
    t0, t1 = float(temperature[0]), float(temperature[1])

    cfg = {
        "site": str(s),
        "dims": dim_list,
        "method": method,
        "loss": loss,
        "cl_form": cl_form,
        "cl_weight": cl_weight,
        "cl_dims": cl_dims,
        "epochs": epochs,
        "lr": lr,
        "boundary_lr": boundary_lr,
        "batch_size": bs,
        "select": select,
        "eval_every": eval_every,
        "emd_dims": list(emd_dims or []),
        "temperature": [t0, t1],
        "width_weight": width_weight,
        "seed": seed,
        "n": n,
        "width": width,
        "data": data.name,
    }
    key = _config_hash(cfg)
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir is not None else None

    history: list[dict[str, float]] = []
    best: dict[str, Any] = {"epoch": -1, "iia": -1.0, "emd": math.inf, "state": None, "mask": None}
    start_epoch = 0
    fingerprints: dict[str, str] = {}
    if ckpt_path is not None:
        fingerprints = _fingerprints(model, data, ckpt_path)
        if ckpt_path.exists():
            ck = _read_checkpoint(ckpt_path, device, cfg, key, fingerprints)
            try:
                al.load_state_dict(ck["alignment"])
                if mask_mod is not None:
                    mask_mod.load_state_dict(ck["mask"])
                opt.load_state_dict(ck["optimizer"])
                gen.set_state(ck["generator"])
            except Exception as e:
                raise CheckpointError(
                    f"{ckpt_path} does not fit this DAS run ({type(e).__name__}: {e}); {_CKPT_FIX}"
                ) from None
            history = list(ck["history"])
            best = dict(ck["best"])
            start_epoch = int(ck["epoch"])

    def temp(e: int) -> float:
        return t0 + (t1 - t0) * (e / max(1, epochs - 1))

    def save_checkpoint(epoch: int) -> None:
        if ckpt_path is None:
            return
        safe_load.torch_save(
            {
                "format": CHECKPOINT_FORMAT,
                "key": key,
                "model": fingerprints["model"],
                "data": fingerprints["data"],
                "epoch": epoch,
                "alignment": al.state_dict(),
                "mask": mask_mod.state_dict() if mask_mod is not None else None,
                "optimizer": opt.state_dict(),
                "generator": gen.get_state(),
                "history": history,
                "best": best,
                "config": _plain(cfg),
            },
            ckpt_path,
        )

    # the model is a constant here: no gradient accumulates in (or stays on) its weights
    frozen = _freeze(model.module)
    try:
        for epoch in range(start_epoch, epochs):
            T = temp(epoch)
            snapshot = _state(al)
            mask_snapshot = _state(mask_mod) if mask_mod is not None else None
            emd_value = float("nan")
            if select == "emd" and (epoch % eval_every == 0 or epoch == epochs - 1):
                with torch.no_grad(), parametrize.cached():
                    m = mask_mod(T) if mask_mod is not None else None
                    acts = []
                    for start in range(0, n, bs):
                        rows = torch.arange(start, min(n, start + bs))
                        _, h = _run_batch(
                            model,
                            data,
                            s,
                            al,
                            src,
                            rows,
                            None if m is not None else dim_list,
                            m,
                            grad=False,
                            resume=resume,
                        )
                        acts.append(_flat(h, width))
                    emd_value = D.sinkhorn(torch.cat(acts), natural, dims=list(emd_dims or []))
            order = torch.randperm(n, generator=gen) if bs < n else torch.arange(n)
            tot_loss = tot_iia_loss = tot_cl = 0.0
            n_correct = 0
            for start in range(0, n, bs):
                rows = order[start : start + bs]
                opt.zero_grad(set_to_none=True)
                # an orthogonal parametrization is recomputed at every access: once per step
                with parametrize.cached():
                    m = mask_mod(T) if mask_mod is not None else None
                    scores, h = _run_batch(
                        model,
                        data,
                        s,
                        al,
                        src,
                        rows,
                        None if m is not None else dim_list,
                        m,
                        grad=True,
                        resume=resume,
                    )
                    labels = data.labels[rows].to(scores.device)
                    l_iia = iia_loss(scores, labels)
                    total = torch.zeros((), device=scores.device)
                    if loss in ("iia", "iia+cl"):
                        total = total + l_iia
                    l_cl = torch.zeros((), device=scores.device)
                    if uses_cl:
                        assert cl_targets is not None
                        hf = _flat(h, width)
                        tg = _flat(cl_targets[rows.to(device)], width)
                        if cl_form == "mas":
                            l_cl = cl_loss_mas(hf, tg)
                        else:
                            groups = None if data.cl_groups is None else data.cl_groups[rows]
                            assert cl_dims is not None
                            l_cl = cl_loss_modified(hf, tg, al, groups, cl_dims)
                        total = total + cl_weight * l_cl
                    if mask_mod is not None:
                        total = total + width_weight * mask_mod.boundary()
                    total.backward()
                opt.step()
                b = len(rows)
                tot_loss += float(total.detach()) * b
                tot_iia_loss += float(l_iia.detach()) * b
                tot_cl += float(l_cl.detach()) * b
                n_correct += int((scores.detach().argmax(-1) == labels).sum())
            iia = n_correct / n
            row = {
                "epoch": float(epoch),
                "loss": tot_loss / n,
                "iia_loss": tot_iia_loss / n,
                "cl_loss": tot_cl / n if uses_cl else float("nan"),
                "iia": iia,
                "emd_features": emd_value,
                "temperature": T if boundless else float("nan"),
                "boundary": float(mask_mod.boundary().detach())
                if mask_mod is not None
                else float("nan"),
            }
            history.append(row)
            better = False
            if select == "iia":
                better = iia > best["iia"]
            elif select == "emd" and math.isfinite(emd_value):
                better = emd_value < best["emd"] or (emd_value == best["emd"] and iia > best["iia"])
            if better:
                best = {
                    "epoch": epoch,
                    "iia": iia,
                    "emd": emd_value if math.isfinite(emd_value) else math.inf,
                    "state": snapshot,
                    "mask": mask_snapshot,
                }
            if select == "last" and epoch == epochs - 1:
                # the parameters after the final update
                best = {
                    "epoch": epochs,
                    "iia": iia,
                    "emd": math.inf,
                    "state": _state(al),
                    "mask": _state(mask_mod) if mask_mod is not None else None,
                }
            if progress is not None:
                progress(epoch, row)
            if ckpt_path is not None and (
                (epoch + 1) % checkpoint_every == 0 or epoch == epochs - 1
            ):
                save_checkpoint(epoch + 1)
    finally:
        _unfreeze(frozen)

    if best["state"] is not None:
        al.load_state_dict(best["state"])
    if mask_mod is not None and best["mask"] is not None:
        mask_mod.load_state_dict(best["mask"])
    final_dims = mask_mod.hard_dims() if mask_mod is not None else dim_list
    ev = evaluate_alignment(
        model,
        al,
        data,
        s,
        dims=final_dims,
        emd_dims=emd_dims,
        natural=natural,
        batch_size=bs,
        seed=seed,
    )
    return DASResult(
        method=method,
        site=str(s.name),
        dims=tuple(final_dims),
        loss=loss,
        cl_form=cl_form if uses_cl else "",
        cl_weight=float(cl_weight) if uses_cl else 0.0,
        epochs=epochs,
        select=select,
        selected_epoch=int(best["epoch"]),
        seed=seed,
        n=n,
        iia=ev.iia,
        iia_se=ev.iia_se,
        iia_low=ev.iia_low,
        iia_high=ev.iia_high,
        emd=ev.emd,
        emd_features=ev.emd_features,
        emd_dims=tuple(int(d) for d in (emd_dims or [])),
        boundary=float(mask_mod.boundary().detach()) if mask_mod is not None else float("nan"),
        history=pd.DataFrame(history),
        alignment_spec=al.spec(),
        alignment_params=al.to_flat(),
        data_name=data.name,
        positions=_jsonable_positions(s.positions),
    )


def _jsonable_positions(p: Any) -> Any:
    if isinstance(p, Tensor):  # per-example positions
        return {"tensor": p.tolist()}
    if isinstance(p, (list, tuple)):
        return [int(i) for i in p]
    return p


__all__ = [
    "AlignmentEval",
    "base_resume",
    "check_das_args",
    "das",
    "evaluate_alignment",
    "source_activations",
]
