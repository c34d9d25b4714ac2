"""DAS checkpoints: the training state saved every few epochs, keyed by the run's arguments and
fingerprinted with its model weights and data, so that only the very same run resumes it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .. import safe_load
from ..errors import CheckpointError
from ..fingerprint import model_fingerprint
from ..models.model import Model
from ..tasks.interchange import InterchangeData

if TYPE_CHECKING:
    from .train import DASTraining

CHECKPOINT = "das_checkpoint.pt"


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
    try:
        data_fp = data.fingerprint()
    except TypeError as e:
        raise CheckpointError(
            f"checkpoint_dir={str(path.parent)!r}: the data cannot be fingerprinted ({e}), so a "
            "checkpoint could not tell it from other data; give the inputs as tensors or "
            "faithlens Inputs, or train without checkpoint_dir"
        ) from None
    return {"model": model_fingerprint(model.module), "data": data_fp}


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


def run_config(tr: DASTraining) -> dict[str, Any]:
    """What identifies the run (its checkpoint key hashes it)."""
    o = tr.opts
    return {
        "site": str(tr.site),
        "dims": tr.dims,
        "method": o.method,
        "loss": o.loss,
        "cl_form": o.cl_form,
        "cl_weight": o.cl_weight,
        "cl_dims": tr.cl_dims,
        "epochs": o.epochs,
        "lr": o.lr,
        "boundary_lr": o.boundary_lr,
        "batch_size": tr.bs,
        "select": o.select,
        "eval_every": o.eval_every,
        "emd_dims": list(o.emd_dims or []),
        "temperature": [tr.t0, tr.t1],
        "width_weight": o.width_weight,
        "seed": o.seed,
        "n": tr.n,
        "width": tr.width,
        "data": tr.data.name,
        # the boundless mask's parametrisation changed in 0.2.0: an older checkpoint is refused
        **({"mask": "sigmoid-boundary-2"} if o.method == "boundless" else {}),
    }


@dataclass
class Checkpointer:
    """Where and under which key a DAS run saves its state (``path`` None: never)."""

    cfg: dict[str, Any]
    key: str
    path: Path | None
    fingerprints: dict[str, str] = field(default_factory=dict)

    @classmethod
    def open(
        cls,
        cfg: dict[str, Any],
        checkpoint_dir: str | Path | None,
        model: Model,
        data: InterchangeData,
    ) -> Checkpointer:
        """The checkpointing of the run ``cfg`` describes (fingerprinting model and data when
        there is a folder)."""
        key = _config_hash(cfg)
        ckpt_path = Path(checkpoint_dir) / CHECKPOINT if checkpoint_dir is not None else None
        fingerprints: dict[str, str] = {}
        if ckpt_path is not None:
            fingerprints = _fingerprints(model, data, ckpt_path)
        return cls(cfg, key, ckpt_path, fingerprints)

    def restore(self, tr: DASTraining) -> None:
        """Resume ``tr`` from the checkpoint, when there is one (refused unless it is this
        run's)."""
        ckpt_path = self.path
        if ckpt_path is None or not ckpt_path.exists():
            return
        al, mask_mod, opt, gen = tr.alignment, tr.mask, tr.opt, tr.gen
        ck = _read_checkpoint(ckpt_path, tr.device, self.cfg, self.key, self.fingerprints)
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
        tr.history = list(ck["history"])
        tr.best = dict(ck["best"])
        tr.start_epoch = int(ck["epoch"])

    def save(self, tr: DASTraining, epoch: int) -> None:
        """Save ``tr``'s state after ``epoch`` epochs (atomically)."""
        if self.path is None:
            return
        mask_mod = tr.mask
        safe_load.torch_save(
            {
                "format": CHECKPOINT_FORMAT,
                "key": self.key,
                "model": self.fingerprints["model"],
                "data": self.fingerprints["data"],
                "epoch": epoch,
                "alignment": tr.alignment.state_dict(),
                "mask": mask_mod.state_dict() if mask_mod is not None else None,
                "optimizer": tr.opt.state_dict(),
                "generator": tr.gen.get_state(),
                "history": tr.history,
                "best": tr.best,
                "config": _plain(self.cfg),
            },
            self.path,
        )
