"""The steps of :func:`faithlens.zoo.train`: start (a seeded model, its optimiser and
scheduler, or the state of a checkpoint), the training steps with their history rows and
checkpoints, and the checkpoint itself.

Every step works on one :class:`TrainingState`; the random calls and the tensor operations
happen in the order they always have, so a run is reproducible bit for bit and resuming from a
checkpoint gives the same weights as an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .. import safe_load
from ..errors import CheckpointError, InputError
from ..progress import Progress
from .model import ZooTransformer

if TYPE_CHECKING:
    from .training import Recipe, StepCallback

CKPT_KEYS = ("ident", "model", "optimizer", "scheduler", "rng", "step", "seconds", "history")
"""What a zoo training checkpoint must hold."""


@dataclass(eq=False)
class TrainingState:
    """A training run in progress: the model, its optimiser and scheduler, where it stands (the
    step, the training seconds so far, the history rows) and what identifies it."""

    model: ZooTransformer
    opt: torch.optim.Optimizer
    lr_sched: torch.optim.lr_scheduler.LambdaLR
    ident: dict[str, Any]
    ckpt_path: Path
    machine: dict[str, Any]
    step: int = 0
    seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)
    resumed_from: int = 0


def param_groups(model: ZooTransformer, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW's groups: weight decay on matrices that are not embeddings, none on the rest."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.dim() >= 2 and "embed" not in name:
            decay.append(p)
        else:
            no_decay.append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def machine_info(threads: int) -> dict[str, Any]:
    """The machine a run trains on (for the model card's training time)."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on every platform
        load = []
    return {
        "threads": threads,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "torch": str(torch.__version__),
        "load_start": load,
    }


def read_checkpoint(path: Path, device: str | torch.device) -> dict[str, Any]:
    """A zoo training checkpoint, loaded without unpickling, with every key it must hold."""
    fix = "delete it, train into another folder, or pass resume=False (--no-resume) to start over"
    ck = safe_load.torch_load(path, what="zoo training checkpoint", fix=fix, map_location=device)
    return safe_load.require(ck, CKPT_KEYS, path, what="zoo training checkpoint", fix=fix)


def start_training(
    recipe: Recipe,
    seed: int,
    device: str | torch.device,
    *,
    resume: bool,
    ckpt_path: Path,
) -> TrainingState:
    """A seeded model with its optimiser and scheduler, at step 0 or (``resume`` and a
    checkpoint at ``ckpt_path``) where the checkpoint left it.

    Seeds torch's global generator: call it inside ``torch.random.fork_rng``."""
    sched = recipe.schedule
    ident = {**recipe.describe(), "seed": int(seed)}
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(int(seed))
    model = ZooTransformer(recipe.config)
    model.reset_parameters(generator=gen)
    model.to(device)
    opt = torch.optim.AdamW(param_groups(model, sched.weight_decay), lr=sched.lr, betas=sched.betas)
    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, sched.lr_factor)
    st = TrainingState(
        model, opt, lr_sched, ident, ckpt_path, machine_info(torch.get_num_threads())
    )
    if resume and ckpt_path.exists():
        ck = read_checkpoint(ckpt_path, device)
        if ck.get("ident") != json.loads(json.dumps(ident, default=str)):
            raise CheckpointError(
                f"{ckpt_path} comes from a different recipe, config, schedule or seed; "
                "train into another folder or pass resume=False (--no-resume) to start over"
            )
        try:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            lr_sched.load_state_dict(ck["scheduler"])
            torch.set_rng_state(ck["rng"])
        except Exception as e:
            raise CheckpointError(
                f"{ckpt_path} does not fit this training run ({type(e).__name__}: {e}); "
                "delete it or pass resume=False (--no-resume) to start over"
            ) from None
        st.step, st.seconds, st.history = int(ck["step"]), float(ck["seconds"]), list(ck["history"])
        st.resumed_from = st.step
        st.machine["load_start"] = ck.get("machine", {}).get("load_start", st.machine["load_start"])
    return st


def write_checkpoint(st: TrainingState) -> None:
    """Save the run's state (atomically) to its checkpoint file."""
    safe_load.torch_save(
        {
            "ident": json.loads(json.dumps(st.ident, default=str)),
            "model": st.model.state_dict(),
            "optimizer": st.opt.state_dict(),
            "scheduler": st.lr_sched.state_dict(),
            "rng": torch.get_rng_state(),
            "step": st.step,
            "seconds": st.seconds,
            "history": st.history,
            "machine": st.machine,
        },
        st.ckpt_path,
    )


def train_steps(
    st: TrainingState,
    recipe: Recipe,
    *,
    seed: int,
    device: str | torch.device,
    stop: int,
    on_step: StepCallback | None,
    progress: Progress | None,
) -> None:
    """Train from ``st.step`` to ``stop``: a history row every ``log_every`` steps (with the quick
    validation every ``eval_every``), a checkpoint every ``checkpoint_every`` steps and at
    ``stop``; the model is left in eval mode."""
    sched = recipe.schedule
    total = sched.steps
    model, opt, lr_sched = st.model, st.opt, st.lr_sched
    model.train()
    t0 = time.perf_counter()
    while st.step < stop:
        batch = {k: v.to(device) for k, v in recipe.batch(st.step, seed, sched.batch_size).items()}
        loss, stats = recipe.loss(model, batch)
        if not torch.isfinite(loss):
            raise InputError(
                f"training loss became {float(loss)} at step {st.step}; lower the learning "
                "rate or check the recipe"
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), sched.grad_clip)
        opt.step()
        lr_sched.step()
        st.step += 1
        step = st.step
        numbers = {"loss": float(loss.detach()), **stats}
        if step % sched.log_every == 0 or step == total:
            row: dict[str, Any] = {
                "step": step,
                "loss": numbers["loss"],
                "lr": float(opt.param_groups[0]["lr"]),
                "grad_norm": float(gnorm),
                "seconds": st.seconds + time.perf_counter() - t0,
                **stats,
            }
            if sched.eval_every and (step % sched.eval_every == 0 or step == total):
                model.eval()
                with torch.no_grad():
                    row.update({f"val_{k}": v for k, v in recipe.quick_eval(model).items()})
                model.train()
                numbers.update({k: v for k, v in row.items() if k.startswith("val_")})
            st.history.append(row)
        if step % sched.checkpoint_every == 0 or step == stop:
            st.seconds += time.perf_counter() - t0
            t0 = time.perf_counter()
            write_checkpoint(st)
        if on_step is not None:
            on_step(step, total, numbers)
        if progress is not None:
            progress(step, total)
    model.eval()


__all__ = [
    "CKPT_KEYS",
    "TrainingState",
    "machine_info",
    "param_groups",
    "read_checkpoint",
    "start_training",
    "train_steps",
    "write_checkpoint",
]
