"""One zoo recipe trained over several seeds, each seed a work item of the executor.

``train_seeds(recipe, out_dir, seeds=[0, 1, 2])`` runs :func:`faithlens.zoo.train` once per seed
into ``out_dir/seed_S`` (its checkpoint, weights, card and run record) and returns the
:class:`~faithlens.zoo.TrainingRun` of each, in the order of ``seeds``. Each training is a work
item of :meth:`faithlens.executor.Executor.map_model` with no model: in process they run one
after another; on the Ray executor they run on the workers in parallel, each writing its own
folder (on several machines ``out_dir`` must be on a shared file system), with the weights of
the in-process run. Training is on the CPU with ``threads`` torch threads (1 by default, as a
worker has), and a killed sweep resumes: each seed's training resumes from its own checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .. import validate as V
from ..executor import Executor, current_executor, on_executor
from ..progress import Progress
from .training import Recipe, TrainingRun, check_train_args, train


def _check_seeds(seeds: Any) -> list[int]:
    if isinstance(seeds, (str, int)) or not isinstance(seeds, Sequence) or not seeds:
        raise V.fail("seeds", seeds, "must be a non-empty list of seeds", "e.g. seeds=[0, 1, 2]")
    out = [V.nonnegative_int("seeds", s, fix="seeds are ints >= 0") for s in seeds]
    if len(set(out)) != len(out):
        raise V.fail("seeds", seeds, "repeats a seed", "list each seed once")
    return out


@on_executor
def train_seeds(
    recipe: Recipe,
    out_dir: str | Path,
    seeds: Sequence[int],
    *,
    resume: bool = True,
    until: int | None = None,
    threads: int = 1,
    evaluate: bool = True,
    progress: Progress | None = None,
    executor: str | Executor | None = None,
) -> list[TrainingRun]:
    """Train ``recipe`` once per seed into ``out_dir/seed_S`` (module docstring).

    Args:
        recipe, resume, until, evaluate: as :func:`faithlens.zoo.train`, for every seed.
        seeds: the seeds, distinct ints >= 0.
        threads: torch CPU threads of each training (1: what a Ray worker has by default).
        progress: ``progress(done, total)`` after each finished training.
        executor: where the trainings run (``"ray"``, an :class:`~faithlens.executor.Executor`
            or ``None``: the one in force); the weights do not change.
    """
    seed_list = _check_seeds(seeds)
    for s in seed_list:  # every argument is checked before any training
        check_train_args(recipe, out_dir, seed=s, until=until, threads=threads, progress=progress)
    root = Path(out_dir).resolve()  # a worker's working directory is not ours
    items = [(s, str(root / f"seed_{s}")) for s in seed_list]
    kw = {"resume": resume, "until": until, "threads": threads, "evaluate": evaluate}
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, len(items))

    runs = current_executor().map_model(None, train_seed, items, recipe, kw, tick=tick)
    return list(runs)


def train_seed(
    model: None,
    item: tuple[int, str],
    recipe: Recipe,
    kw: dict[str, Any],
    tick: Callable[[], None],
) -> TrainingRun:
    """One seed of :func:`train_seeds` (a work item with no model): :func:`train` into the
    seed's folder, on the CPU."""
    seed, folder = item
    run = train(recipe, folder, seed=seed, device="cpu", **kw)
    tick()
    return run


__all__ = ["train_seed", "train_seeds"]
