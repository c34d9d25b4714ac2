"""DAS trainings fanned out: one :func:`~faithlens.das.das` training per site and seed, each a work item of
the executor in force, so that the Ray executor trains them on its workers in parallel.

``das_trainings(model, data, ["resid_pre.0", "resid_pre.1"], seeds=[0, 1], dims=2, epochs=200)``
returns the :class:`~faithlens.das.DASResult` of every (site, seed), sites outer, seeds inner,
each the result ``fl.das(model, data, site, seed=seed, **options)`` gives in process, bit for
bit on the same device type (a training is a pure function of its arguments).

Resuming: with ``checkpoint=folder`` every training keeps its own DAS checkpoint in
``folder/NNN`` (``checkpoint_dir`` of :func:`~faithlens.das.das`, written every
``checkpoint_every`` epochs and at the last one). A run killed and started again with the same
folder resumes each training from its checkpoint; a finished training is read back, not
retrained, with the same result. On a cluster of several machines the folder must be one that
every worker can write (a shared file system).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .. import validate as V
from ..executor import Executor, current_executor, on_executor
from ..models.model import Model
from ..models.sites import SiteLike
from ..progress import Progress
from ..tasks.interchange import InterchangeData
from .result import DASResult
from .train import das

#: Options of :func:`das` a sweep sets itself (per training) or cannot send to a worker.
_OWN = ("seed", "checkpoint_dir", "progress", "on_epoch", "alignment")


@on_executor
def das_trainings(
    model: Model,
    data: InterchangeData,
    sites: Sequence[SiteLike],
    *,
    seeds: Sequence[int] = (0,),
    checkpoint: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    executor: str | Executor | None = None,
    **options: Any,
) -> list[DASResult]:
    """Train DAS at every site with every seed (module docstring).

    Args:
        model, data: as :func:`faithlens.das.das`.
        sites: the sites to align (a list; one training per site and seed).
        seeds: the seeds of each site's trainings.
        checkpoint: a folder; training ``i`` keeps its DAS checkpoint in ``folder/NNN``, so a
            killed sweep started again resumes (a finished training is not retrained).
        progress: called as ``progress(done, total)`` after each training.
        executor: where the trainings run for this call (``"ray"``, an executor, or ``None``:
            the one in force).
        options: every other keyword argument of :func:`faithlens.das.das` (``dims``,
            ``method``, ``epochs``, ...), the same for every training.

    Returns the results in order: sites outer, seeds inner.
    """
    if isinstance(sites, (str, bytes)) or not isinstance(sites, Sequence) or not sites:
        raise V.fail("sites", sites, "must be a non-empty list of sites", "e.g. ['resid_pre.1']")
    if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or not seeds:
        raise V.fail("seeds", seeds, "must be a non-empty list of seeds", "e.g. [0, 1, 2]")
    for s in seeds:
        V.nonnegative_int("seeds", s, fix="give whole numbers >= 0")
    own = sorted(set(options) & set(_OWN))
    if own:
        raise V.fail(
            "options",
            own,
            "are set by the sweep per training (seed, checkpoint_dir) or cannot be sent to a "
            "worker (callbacks, a starting alignment)",
            "use seeds= and checkpoint= of das_trainings, or call fl.das for one training",
        )
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise V.fail("checkpoint", checkpoint, "must be a folder path", "give a str or a Path")
    root = None if checkpoint is None else Path(checkpoint).resolve()  # workers' cwd differs
    pairs = [(site, int(seed)) for site in sites for seed in seeds]
    items = [
        (site, seed, None if root is None else str(root / f"{k:03d}"))
        for k, (site, seed) in enumerate(pairs)
    ]
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, len(items))

    runs = current_executor().map_model(model, train_one, items, data, options, tick=tick)
    return list(runs)


def train_one(
    model: Model,
    item: tuple[SiteLike, int, str | None],
    data: InterchangeData,
    options: dict[str, Any],
    tick: Callable[[], None],
) -> DASResult:
    """One training of a sweep: ``das(model, data, site, seed=seed, checkpoint_dir=...,
    **options)`` (a work item of ``Executor.map_model``: workers run it on their own model)."""
    site, seed, folder = item
    result = das(model, data, site, seed=seed, checkpoint_dir=folder, **options)
    tick()
    return result


__all__ = ["das_trainings", "train_one"]
