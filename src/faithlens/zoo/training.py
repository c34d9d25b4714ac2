"""Training zoo models: seeded, reproducible, checkpointed and resumable.

``train(recipe, out_dir, seed=0)`` trains a :class:`~faithlens.zoo.ZooTransformer` from scratch
with the recipe's data, loss and schedule (AdamW, linear warm-up then cosine decay, gradient
clipping). It writes into ``out_dir``:

- ``checkpoint.pt``: model, optimiser, scheduler, RNG state, step, history and elapsed time,
  every ``checkpoint_every`` steps (atomically). Calling ``train`` again on the same folder
  resumes from it; the result is identical to an uninterrupted run.
- ``NAME.safetensors``: the trained weights (float32) with the config in the metadata;
- ``NAME.md``: the model card (data, recipe, evaluation with confidence intervals, time);
- ``run/``: the :class:`TrainingRun` result (history table, metrics).

The batch of step ``s`` depends only on ``(seed, s)``, so resuming never replays or skips data.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .. import validate as V
from ..errors import InputError
from ..progress import Progress, positional_arity
from ..results import Result
from ..stats import Interval
from .config import ZooConfig
from .loop import TrainingState, start_training, train_steps
from .model import ZooTransformer
from .tokenizer import VocabTokenizer

WEIGHTS_FORMAT = "faithlens-zoo-1"
StepCallback = Callable[[int, int, dict[str, float]], None]
"""``on_step(step, total, numbers)``: called after every training step."""


@dataclass(frozen=True)
class Schedule:
    """Optimisation settings of a recipe."""

    steps: int
    batch_size: int
    lr: float = 1e-3
    warmup: int = 100
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)
    grad_clip: float = 1.0
    eval_every: int = 250
    checkpoint_every: int = 250
    log_every: int = 10

    def __post_init__(self) -> None:
        V.positive_int("Schedule.steps", self.steps)
        V.positive_int("Schedule.batch_size", self.batch_size)
        V.positive_float("Schedule.lr", self.lr, fix="use e.g. 1e-3")
        V.nonnegative_int("Schedule.warmup", self.warmup)
        V.probability("Schedule.min_lr_ratio", self.min_lr_ratio, open_=False)
        V.finite_float("Schedule.weight_decay", self.weight_decay, low=0.0)
        if len(self.betas) != 2:
            raise V.fail("Schedule.betas", self.betas, "must be a pair", "e.g. (0.9, 0.99)")
        for b in self.betas:
            V.finite_float("Schedule.betas", b, low=0.0, high=1.0, high_open=True)
        V.positive_float("Schedule.grad_clip", self.grad_clip)
        V.nonnegative_int("Schedule.eval_every", self.eval_every, fix="0 turns evaluation off")
        V.positive_int("Schedule.checkpoint_every", self.checkpoint_every)
        V.positive_int("Schedule.log_every", self.log_every)

    def lr_factor(self, step: int) -> float:
        """Multiplier of ``lr`` at ``step``: linear warm-up, then cosine to ``min_lr_ratio``."""
        if step < self.warmup:
            return (step + 1) / self.warmup
        span = max(1, self.steps - self.warmup)
        t = min(1.0, (step - self.warmup) / span)
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def step_seed(seed: int, step: int) -> int:
    """The seed of the batch of ``step`` (independent streams per (seed, step))."""
    return int(np.random.SeedSequence([int(seed), int(step)]).generate_state(1)[0])


class Recipe(ABC):
    """How to train and evaluate one zoo model. Subclasses define the data and the loss."""

    name: str = "recipe"
    description: str = ""
    #: Examples in the final evaluation (None: the recipe's full validation set).
    eval_n: int | None = None
    #: Examples in the quick validation logged during training.
    quick_n: int = 1000

    def __init__(self, config: ZooConfig, schedule: Schedule) -> None:
        self.config = config
        self.schedule = schedule

    # -- what a recipe provides ----------------------------------------------------------------
    @abstractmethod
    def batch(self, step: int, seed: int, batch_size: int) -> dict[str, Tensor]:
        """The training batch of ``step`` (a pure function of its arguments)."""

    @abstractmethod
    def loss(
        self, model: ZooTransformer, batch: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, float]]:
        """The scalar training loss and a few numbers to log."""

    @abstractmethod
    def quick_eval(self, model: ZooTransformer) -> dict[str, float]:
        """Cheap validation numbers logged during training."""

    @abstractmethod
    def evaluate(self, model: ZooTransformer, *, n: int | None = None) -> dict[str, Any]:
        """The final evaluation: metric name -> ``{"estimate", "low", "high", "se", "n"}`` (or a
        plain number), on held-out data with a fixed seed."""

    @abstractmethod
    def tokenizer(self) -> VocabTokenizer: ...

    def data_description(self) -> str:
        """Markdown describing the data (for the model card)."""
        return self.description

    def check(self, metrics: dict[str, Any]) -> list[str]:
        """Problems with a trained model's metrics (empty when it meets its targets)."""
        return []

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "config": self.config.to_dict(),
            "schedule": asdict(self.schedule),
        }


# ----------------------------------------------------------------------------------------------
# The result
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainingRun(Result):
    """One training run of a zoo recipe: its history, final metrics and cost.

    ``intervals()``: every final metric evaluated with an interval (``{"estimate", "low",
    "high", "se", "n"}`` in ``metrics``, 95%); plain numbers in ``metrics`` are logged values
    without an uncertainty. The frame is the training history; ``metrics_frame()`` the final
    metrics with ``estimate, se, ci_low, ci_high, level``.
    """

    name: str
    seed: int
    steps: int
    complete: bool
    seconds: float
    n_params: int
    config: dict[str, Any]
    schedule: dict[str, Any]
    metrics: dict[str, Any]
    history: pd.DataFrame
    machine: dict[str, Any] = field(default_factory=dict)
    out_dir: str = ""
    resumed_from: int = 0
    problems: list[str] = field(default_factory=list)

    kind = "training"

    def to_frame(self) -> pd.DataFrame:
        return self.history

    def intervals(self) -> dict[str, Interval]:
        def num(v: Any) -> float:
            return float("nan") if v is None else float(v)

        out = {}
        for k, v in self.metrics.items():
            if isinstance(v, dict) and "estimate" in v:
                e, s, lo, hi = (num(v.get(c)) for c in ("estimate", "se", "low", "high"))
                out[k] = Interval(e, s, lo, hi, 0.95)
        return out

    def metrics_frame(self) -> pd.DataFrame:
        """One row per final metric: ``metric, estimate, se, ci_low, ci_high, level, n``
        (NaN where a metric is a plain number)."""
        ivs = self.intervals()
        rows = []
        for k, v in self.metrics.items():
            if k in ivs:
                rows.append({"metric": k, **ivs[k].columns(), "level": 0.95, "n": v.get("n")})
            elif isinstance(v, (int, float)):
                rows.append({"metric": k, "estimate": float(v)})
        return pd.DataFrame(rows)

    def summary(self) -> str:
        lines = [
            f"zoo:{self.name}  seed={self.seed}  steps={self.steps}"
            f"{'' if self.complete else ' (incomplete)'}  params={self.n_params:,}",
            f"training time {self.seconds / 60:.1f} min on {self.machine.get('threads', '?')} "
            f"threads (load average at start {self.machine.get('load_start', '?')})",
        ]
        ivs = self.intervals()
        for k, v in self.metrics.items():
            if k in ivs:
                lines.append(f"  {k:<28} {ivs[k]:.5g}")
            elif isinstance(v, (int, float)):
                lines.append(f"  {k:<28} {float(v):.5g}")
        for p in self.problems:
            lines.append(f"  PROBLEM: {p}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------------------------


def save_weights(
    model: ZooTransformer, path: str | Path, info: dict[str, Any] | None = None
) -> Path:
    """Write float32 weights and the config (in the safetensors metadata)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()
    }
    meta = {
        "format": WEIGHTS_FORMAT,
        "config": model.config.to_json(),
        "info": json.dumps(info or {}, sort_keys=True, default=str),
    }
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)
    return path


def read_weights(path: str | Path) -> tuple[ZooConfig, dict[str, Tensor], dict[str, Any]]:
    """(config, state dict, info) from a zoo safetensors file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise InputError(f"no zoo weights file at {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") == WEIGHTS_FORMAT:
                state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except Exception as e:  # safetensors' own errors for a truncated or foreign file
        raise InputError(
            f"{path} is not a readable zoo weights file (truncated or corrupted: "
            f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}); "
            "train the model again (faithlens zoo train) or copy the file again"
        ) from None
    if meta.get("format") != WEIGHTS_FORMAT:
        raise InputError(
            f"{path} is not a faithlens zoo weights file (format {meta.get('format')!r}, "
            f"expected {WEIGHTS_FORMAT!r})"
        )
    config = ZooConfig.from_json(meta["config"])
    info = json.loads(meta.get("info", "{}"))
    return config, state, info


def load_weights(
    path: str | Path, device: str | torch.device | None = None, dtype: torch.dtype | None = None
) -> tuple[ZooTransformer, dict[str, Any]]:
    config, state, info = read_weights(path)
    model = ZooTransformer(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InputError(
            f"{path} does not match its config: missing {sorted(missing)[:6]}, unexpected "
            f"{sorted(unexpected)[:6]}"
        )
    model.eval()
    if device is not None or dtype is not None:
        model.to(device=device, dtype=dtype)
    return model, info


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------


def check_train_args(
    recipe: Any,
    out_dir: Any,
    *,
    seed: Any = 0,
    until: Any = None,
    device: Any = "cpu",
    threads: Any = None,
    progress: Any = None,
    on_step: Any = None,
) -> None:
    """Refuse a bad :func:`train` argument before anything is built or written."""
    if not isinstance(recipe, Recipe):
        raise V.fail(
            "recipe",
            type(recipe).__name__,
            "must be a zoo Recipe",
            "use faithlens.zoo.recipe(name)",
        )
    V.output_dir(out_dir, "out_dir")
    V.nonnegative_int("seed", seed)
    if until is not None:
        V.nonnegative_int("until", until, fix="stop after N >= 0 steps, or None to finish")
    V.device(device)
    if threads is not None:
        V.positive_int("threads", threads, fix="use at least one CPU thread")
    if progress is not None and not callable(progress):
        raise V.fail("progress", progress, "must be a callable (step, total, numbers) or None")
    if on_step is not None and not callable(on_step):
        raise V.fail("on_step", on_step, "must be a callable (step, total, numbers) or None")


def split_progress(
    progress: Any, on_step: StepCallback | None
) -> tuple[Progress | None, StepCallback | None]:
    """The ``(done, total)`` progress callback and the ``(step, total, numbers)`` one.

    An old ``progress(step, total, numbers)`` callback (three required positional parameters)
    is still called that way, as ``on_step``, with a DeprecationWarning (for one release); any
    other ``progress`` follows the one protocol of :mod:`faithlens.progress`.
    """
    if progress is not None and positional_arity(progress) == 3:
        if on_step is not None:
            raise V.fail(
                "progress",
                progress,
                "must take (done, total) when on_step is given",
                "pass the (step, total, numbers) callback as on_step only",
            )
        warnings.warn(
            "zoo.train: progress(step, total, numbers) is deprecated; pass it as on_step= "
            "(progress is called as progress(done, total), the protocol of every method)",
            DeprecationWarning,
            stacklevel=3,
        )
        return None, progress
    return progress, on_step


def train(
    recipe: Recipe,
    out_dir: str | Path,
    *,
    seed: int = 0,
    resume: bool = True,
    until: int | None = None,
    device: str | torch.device = "cpu",
    threads: int | None = None,
    progress: Progress | None = None,
    evaluate: bool = True,
    on_step: StepCallback | None = None,
) -> TrainingRun:
    """Train ``recipe`` from scratch (or resume it) into ``out_dir``.

    Args:
        recipe: a :class:`Recipe` (see :func:`faithlens.zoo.recipe`).
        out_dir: folder for the checkpoint, weights, model card and run record.
        seed: initialisation and data seed; the same seed on the same machine gives the same
            weights.
        resume: continue from ``out_dir/checkpoint.pt`` when it exists (it must come from the
            same recipe, config, schedule and seed); ``False`` starts over.
        until: stop after this many steps (checkpointed, no final evaluation); a later call
            resumes. ``None``: train to the end.
        device: where to train.
        threads: torch CPU threads during training (default: leave as is).
        progress: called as ``progress(step, total)`` after every step (the one protocol of
            :mod:`faithlens.progress`). An old ``progress(step, total, numbers)`` callback keeps
            working for one release (as ``on_step``) with a DeprecationWarning.
        evaluate: run the recipe's final evaluation and write the model card.
        on_step: called as ``on_step(step, total, numbers)`` after every step, with the
            step's loss and learning-rate numbers.
    """
    check_train_args(
        recipe,
        out_dir,
        seed=seed,
        until=until,
        device=device,
        threads=threads,
        progress=progress,
        on_step=on_step,
    )
    progress, on_step = split_progress(progress, on_step)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    total = recipe.schedule.steps
    stop = total if until is None else min(int(until), total)
    if stop < 0:
        raise InputError(f"train: until must be >= 0, got {until}")
    old_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        with torch.random.fork_rng(devices=[]):
            st = start_training(
                recipe, seed, device, resume=resume, ckpt_path=out / "checkpoint.pt"
            )
            train_steps(
                st, recipe, seed=seed, device=device, stop=stop, on_step=on_step, progress=progress
            )
    finally:
        torch.set_num_threads(old_threads)
    return _finish_run(recipe, st, seed=seed, out=out, evaluate=evaluate)


def _finish_run(
    recipe: Recipe, st: TrainingState, *, seed: int, out: Path, evaluate: bool
) -> TrainingRun:
    """The run's record; for a complete run, the final evaluation, the weights, the model card
    (with ``evaluate``) and the record saved into ``out``."""
    model, step = st.model, st.step
    complete = step >= recipe.schedule.steps
    metrics: dict[str, Any] = {}
    problems: list[str] = []
    with contextlib.suppress(OSError):  # no load average on some platforms
        st.machine["load_end"] = [round(x, 2) for x in os.getloadavg()]
    if complete and evaluate:
        with torch.no_grad():
            metrics = recipe.evaluate(model, n=recipe.eval_n)
        problems = recipe.check(metrics)
    run = TrainingRun(
        name=recipe.name,
        seed=int(seed),
        steps=step,
        complete=complete,
        seconds=round(st.seconds, 2),
        n_params=model.n_params,
        config=recipe.config.to_dict(),
        schedule=asdict(recipe.schedule),
        metrics=metrics,
        history=pd.DataFrame(st.history),
        machine=st.machine,
        out_dir=str(out),
        resumed_from=st.resumed_from,
        problems=problems,
    )
    if complete:
        info = {
            "name": recipe.name,
            "seed": int(seed),
            "steps": step,
            "seconds": run.seconds,
            "metrics": {
                k: v
                for k, v in metrics.items()
                if not isinstance(v, (list, dict)) or "estimate" in v
            },
        }
        save_weights(model.cpu(), out / f"{recipe.name}.safetensors", info)
        if evaluate:
            from .cards import render_card

            (out / f"{recipe.name}.md").write_text(render_card(recipe, run))
        run.save(out / "run", overwrite=True)  # the record of the latest finished run
    return run


__all__ = [
    "StepCallback",
    "Recipe",
    "Schedule",
    "TrainingRun",
    "load_weights",
    "read_weights",
    "save_weights",
    "step_seed",
    "train",
]
