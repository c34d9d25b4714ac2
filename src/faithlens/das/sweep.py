"""Where does a variable live? An alignment search with its controls at every (layer, position).

``das_sweep(model, data, layers=..., positions=...)`` runs :func:`das_controls`' measurement at
each site ``f"{site}.{layer}"`` (or a site name given as the layer) and each position selection,
on one held-out split, one control task and one random-init model shared by every cell, and
returns a :class:`DASSweep`: IIA and, per control, control IIA and selectivity per cell, each a
bootstrap interval over the held-out pairs; ``plot()`` draws the heat maps.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from .. import validate as V
from ..errors import CheckpointError
from ..executor import Executor, current_executor, on_executor
from ..fingerprint import data_fingerprint, model_fingerprint
from ..folders import NpzStore
from ..models.model import Model
from ..models.sites import Site
from ..progress import Progress
from ..results import Estimate, Interval, Result
from ..tasks.interchange import InterchangeData
from .control_inputs import random_init
from .selectivity import (
    CONTROLS,
    Split,
    chance_of,
    check_common,
    check_controls,
    check_train,
    intervals_of,
    make_split,
    site_correct,
)


def _site_names(layers: Any, site: str) -> list[str]:
    if isinstance(layers, (str, int)) or not isinstance(layers, Sequence) or not layers:
        raise V.fail("layers", layers, "must be a non-empty list of layers or site names")
    out = []
    for layer in layers:
        if isinstance(layer, str):
            out.append(layer)
        else:
            out.append(f"{site}.{V.nonnegative_int('layers', layer, fix='layers count from 0')}")
    if len(set(out)) != len(out):
        raise V.fail("layers", layers, "repeats a layer", "list each layer once")
    return out


def _positions(positions: Any) -> list[Any]:
    if isinstance(positions, (str, int)) or not isinstance(positions, Sequence) or not positions:
        raise V.fail(
            "positions", positions, "must be a non-empty list", 'e.g. [0, 1, "last"] or [None]'
        )
    out: list[Any] = []
    for p in positions:
        if p is None or p == "last":
            out.append(p)
        else:
            out.append(V.nonnegative_int("positions", p, fix='use ints, "last" or None'))
    if len(set(map(repr, out))) != len(out):
        raise V.fail("positions", positions, "repeats a position", "list each position once")
    return out


@on_executor
def das_sweep(
    model: Model,
    data: InterchangeData,
    *,
    layers: Sequence[int | str],
    positions: Sequence[int | str | None] = (None,),
    site: str = "resid_post",
    method: str = "rotation",
    dims: int | Sequence[int] = 1,
    controls: Sequence[str] = CONTROLS,
    eval_fraction: float = 0.5,
    values: Any = None,
    pairs: str = "changed",
    draws: int = 5,
    train: Mapping[str, Any] | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    max_memory: int | None = None,
    progress: Progress | None = None,
    executor: str | Executor | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
) -> DASSweep:
    """IIA and selectivity of an alignment search at every (layer, position).

    Args:
        layers: ints (the site ``f"{site}.{layer}"``, e.g. ``resid_post.3``) or site names
            (``"h"``, ``"mlp_out.2"``), one row of the heat map each.
        positions: position selections (an int, ``"last"``, or ``None`` for the whole
            activation, e.g. a site without positions), one column each.
        site: the site kind an int layer names.
        Everything else as :func:`~faithlens.das.selectivity.das_controls`; the held-out split,
        the control task and the random-init model are drawn once and shared by every cell.
        progress: ``progress(done, total)`` after each trained alignment or control of each
            cell (``total = cells * (1 + len(controls))``).
        executor: where the cells run: each (layer, position) cell (its alignment and its
            controls) is one work item (``"ray"``, an :class:`~faithlens.executor.Executor`,
            or ``None``: the one in force); the numbers do not change.
        checkpoint: a folder where each finished cell is saved; a sweep killed as a whole and
            started again with it trains only the unfinished cells, with the same result.
            Keyed on the model's weights, the data and every argument: a folder of another
            sweep raises :class:`~faithlens.errors.CheckpointError`.
    """
    check_common(
        method=method,
        dims=dims,
        eval_fraction=eval_fraction,
        pairs=pairs,
        draws=draws,
        n_boot=n_boot,
        level=level,
        seed=seed,
        max_memory=max_memory,
        progress=progress,
    )
    if not isinstance(site, str) or not site:
        raise V.fail("site", site, "must be a site kind such as 'resid_post'")
    names = _site_names(layers, site)
    pos = _positions(positions)
    ctrl = check_controls(controls)
    train_kw = check_train(train)
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise V.fail("checkpoint", checkpoint, "must be a folder path", "give a str or a Path")
    for name in names:  # unknown sites fail here, before any training
        model.site_info(name)
    split = make_split(
        model, data, ctrl, eval_fraction=eval_fraction, values=values, pairs=pairs, seed=seed
    )
    total, done = len(names) * len(pos) * (1 + len(ctrl)), [0]

    def tick() -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], total)

    shape = (len(names), len(pos))
    own_all = np.zeros((*shape, len(split.held_out)))
    ctl_all = np.zeros((len(ctrl), *shape, len(split.held_out)))
    dims_at: list[list[int]] = []
    # each cell is a work item; the split travels without the random-init model, which a
    # worker rebuilds from the model and the seed (here it is the one make_split drew)
    if split.random_model is not None:
        _RANDOM[model] = (seed, split.random_model)
    kw: dict[str, Any] = {
        "method": method,
        "dims": dims,
        "train_kw": train_kw,
        "draws": draws,
        "seed": seed,
    }
    kw["max_memory"] = max_memory
    cells = [(name, p) for name in names for p in pos]
    shared = replace(split, random_model=None)
    store = None
    if checkpoint is not None:
        key = (ctrl, kw, eval_fraction, values, pairs, [repr(c) for c in cells])
        store = _store(checkpoint, model, data, key)
    runs = _cell_runs(model, cells, (shared, ctrl, kw), store, tick, 1 + len(ctrl))
    try:
        for (i, j), (k, own, ctl) in zip(np.ndindex(*shape), runs):
            own_all[i, j], ctl_all[:, i, j] = own, ctl
            dims_at.append([k])
    finally:  # the random-init copy is as large as the model: not kept after the sweep
        _RANDOM.pop(model, None)
    return _assemble(
        own_all,
        ctl_all,
        names=names,
        positions=pos,
        controls=ctrl,
        method=method,
        n_dims=np.array(dims_at, dtype=np.int64).reshape(shape),
        chance=np.array([chance_of(split, c) for c in ctrl]),
        n_train=len(split.train),
        pairs=pairs,
        n_boot=n_boot,
        level=level,
        seed=seed,
    )


def _store(path: str | os.PathLike[str], model: Model, data: Any, key: Any) -> NpzStore:
    """The checkpoint folder of one sweep, keyed on the model, the data and ``key``."""
    try:
        fp = data_fingerprint(
            "faithlens.das_sweep",
            model_fingerprint(model.module),
            str(model.dtype),
            data.fingerprint(),
            key,
        )
    except TypeError as e:
        raise CheckpointError(
            f"checkpoint={str(path)!r}: the sweep's data or arguments cannot be fingerprinted "
            f"({e}), so a checkpoint could not tell them from others; give the data as tensors "
            "or sweep without checkpoint"
        ) from None
    return NpzStore(
        path,
        fp,
        prefix="cell",
        what="DAS sweep checkpoint",
        other_run="another sweep (another model, data or arguments)",
    )


def _cell_runs(
    model: Model,
    cells: list[tuple[str, Any]],
    args: tuple[Any, ...],
    store: NpzStore | None,
    tick: Callable[[], None],
    steps: int,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Every cell's (dims, own, controls), in order, through the executor; with ``store``, the
    cells a killed sweep finished are read back (their ``steps`` progress steps replayed) and
    the others saved as they finish."""
    ex = current_executor()
    if store is None:
        yield from ex.map_model(model, sweep_cell, cells, *args, tick=tick)
        return
    saved = [store.load(i) for i in range(len(cells))]
    for _ in range(steps * sum(s is not None for s in saved)):
        tick()
    todo = [c for c, s in zip(cells, saved) if s is None]
    fresh = ex.map_model(model, sweep_cell, todo, *args, tick=tick)
    for i, s in enumerate(saved):
        if s is None:
            k, own, ctl = next(fresh)
            store.save(i, dims=np.int64(k), own=own, controls=ctl)
            yield k, own, ctl
        else:
            yield int(s["dims"]), s["own"], s["controls"]


#: Per model, the (seed, random-init copy) the cells of its sweep share (a worker builds it once).
_RANDOM: weakref.WeakKeyDictionary[Model, tuple[int, Model]] = weakref.WeakKeyDictionary()


def sweep_cell(
    model: Model,
    cell: tuple[str, Any],
    split: Split,
    controls: tuple[str, ...],
    kw: dict[str, Any],
    tick: Callable[[], None],
) -> tuple[int, np.ndarray, np.ndarray]:
    """One (site, position) cell of :func:`das_sweep` (a work item of
    :meth:`Executor.map_model`): the aligned dimensions, the held-out correctness ``[n]`` and
    each control's ``[controls, n]`` (:func:`~faithlens.das.selectivity.site_correct`). A split
    without its random-init model gets the one :func:`random_init` draws from ``model`` and
    ``kw["seed"]``, built once per model."""
    if "random_init" in controls and split.random_model is None:
        got = _RANDOM.get(model)
        if got is None or got[0] != kw["seed"]:
            got = _RANDOM[model] = (kw["seed"], random_init(model, seed=kw["seed"]))
        split = replace(split, random_model=got[1])
    name, position = cell
    res, own, ctl = site_correct(
        model, split, Site(name, positions=position), controls, tick=tick, **kw
    )
    return len(res.dims), own, ctl


def _assemble(
    own: np.ndarray,
    ctl: np.ndarray,
    *,
    names: list[str],
    positions: list[Any],
    controls: tuple[str, ...],
    method: str,
    n_dims: np.ndarray,
    chance: np.ndarray,
    n_train: int,
    pairs: str,
    n_boot: int,
    level: float,
    seed: int,
) -> DASSweep:
    n_l, n_p, n = own.shape
    c = len(controls)
    iia = np.zeros((4, n_l, n_p))
    con = np.zeros((4, c, n_l, n_p))
    sel = np.zeros((4, c, n_l, n_p))
    for i in range(n_l):
        for j in range(n_p):
            a, b, s = intervals_of(own[i, j], ctl[:, i, j], n_boot=n_boot, level=level, seed=seed)
            iia[:, i, j] = [float(np.asarray(x)) for x in a.parts]
            con[:, :, i, j] = np.stack([np.asarray(x, dtype=np.float64) for x in b.parts])
            sel[:, :, i, j] = np.stack([np.asarray(x, dtype=np.float64) for x in s.parts])
    return DASSweep(
        method=method,
        sites=list(names),
        positions=list(positions),
        controls=list(controls),
        n=int(n),
        n_train=int(n_train),
        pairs=pairs,
        n_dims=n_dims,
        chance=chance,
        level=float(level),
        n_boot=int(n_boot),
        seed=int(seed),
        iia=iia[0],
        iia_se=iia[1],
        iia_low=iia[2],
        iia_high=iia[3],
        control_iia=con[0],
        control_iia_se=con[1],
        control_iia_low=con[2],
        control_iia_high=con[3],
        selectivity=sel[0],
        selectivity_se=sel[1],
        selectivity_low=sel[2],
        selectivity_high=sel[3],
    )


@dataclass(frozen=True)
class DASSweep(Result):
    """The outcome of :func:`das_sweep`. ``iia`` (and its pieces) is ``[layers, positions]``;
    ``control_iia`` and ``selectivity`` are ``[controls, layers, positions]``; each a bootstrap
    interval over the ``n`` held-out pairs at ``level`` (the selectivity paired by pair).
    ``pairs``: which held-out pairs were scored (``"changed"`` or ``"all"``, as
    :func:`~faithlens.das.selectivity.das_controls`). ``n_dims``: the aligned dimensions of each cell's alignment (Boundless DAS learns it);
    ``chance``: per control, the majority-label rate of the labels it is scored against. The frame
    has one row per (layer, position, control); ``plot()`` draws IIA and each control's
    control IIA and selectivity as heat maps, every cell annotated with its estimate and
    interval."""

    method: str
    sites: list[str]
    positions: list[Any]
    controls: list[str]
    n: int
    n_train: int
    pairs: str
    n_dims: np.ndarray
    chance: np.ndarray
    level: float
    n_boot: int
    seed: int
    iia: np.ndarray
    iia_se: np.ndarray
    iia_low: np.ndarray
    iia_high: np.ndarray
    control_iia: np.ndarray
    control_iia_se: np.ndarray
    control_iia_low: np.ndarray
    control_iia_high: np.ndarray
    selectivity: np.ndarray
    selectivity_se: np.ndarray
    selectivity_low: np.ndarray
    selectivity_high: np.ndarray

    kind = "das_sweep"

    INTERVALS: ClassVar[dict[str, Estimate]] = {
        "iia": Estimate("iia", "iia_se", "iia_low", "iia_high"),
        "control_iia": Estimate(
            "control_iia", "control_iia_se", "control_iia_low", "control_iia_high"
        ),
        "selectivity": Estimate(
            "selectivity", "selectivity_se", "selectivity_low", "selectivity_high"
        ),
    }

    def cell(self, site: str, position: Any, control: str) -> dict[str, Interval]:
        """IIA, control IIA and selectivity of one (site, position) under ``control``."""
        V.choice("site", site, self.sites)
        V.choice("position", position, self.positions)
        V.choice("control", control, self.controls)
        i, j = self.sites.index(site), self.positions.index(position)
        k = self.controls.index(control)
        return {
            "iia": self.interval_of("iia")[i, j],
            "control_iia": self.interval_of("control_iia")[k, i, j],
            "selectivity": self.interval_of("selectivity")[k, i, j],
        }

    def best(self, control: str | None = None) -> tuple[str, Any]:
        """The (site, position) with the highest selectivity under ``control`` (the first
        control by default)."""
        k = self.controls.index(control or self.controls[0])
        i, j = np.unravel_index(int(np.nanargmax(self.selectivity[k])), self.iia.shape)
        return self.sites[int(i)], self.positions[int(j)]

    def to_frame(self) -> pd.DataFrame:
        rows: dict[str, list[Any]] = {"site": [], "position": [], "control": [], "n_dims": []}
        idx = []
        for i, s in enumerate(self.sites):
            for j, p in enumerate(self.positions):
                for k, c in enumerate(self.controls):
                    rows["site"].append(s)
                    rows["position"].append("all" if p is None else str(p))
                    rows["control"].append(c)
                    rows["n_dims"].append(int(self.n_dims[i, j]))
                    idx.append((i, j, k))
        ii, jj, kk = (np.array(t, dtype=np.int64) for t in zip(*idx, strict=True))
        out: dict[str, Any] = dict(rows)
        for q in ("iia", "control_iia", "selectivity"):
            iv = self.interval_of(q)
            at = (ii, jj) if q == "iia" else (kk, ii, jj)
            e, se, lo, hi = (np.asarray(v)[at] for v in iv.parts)
            out.update(Interval(e, se, lo, hi, iv.level).columns(q))
        out["chance"] = self.chance[kk]
        out["level"] = self.level
        return pd.DataFrame(out)

    def summary(self) -> str:
        lines = [
            f"{self.method} sweep over {len(self.sites)} site(s) x {len(self.positions)} "
            f"position(s), held-out n={self.n} (trained on {self.n_train}), {self.level:.0%} CIs"
        ]
        for c in self.controls:
            s, p = self.best(c)
            cell = self.cell(s, p, c)
            lines.append(
                f"  most selective vs {c}: {s} @ {p}: IIA {cell['iia']:.3f}, "
                f"selectivity {cell['selectivity']:.3f}"
            )
        return "\n".join(lines)


__all__ = ["DASSweep", "das_sweep", "sweep_cell"]
