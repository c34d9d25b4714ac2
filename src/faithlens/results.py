"""The common shape of every faithlens result.

A result is a frozen dataclass. Its fields are numbers, strings, lists/dicts of those, numpy
arrays, or pandas DataFrames. ``save(dir)`` writes

- ``result.json``: the class name, the scalar fields and metadata (human-readable),
- ``table.parquet``: ``to_frame()``, the tidy table a user analyses,
- ``arrays.npz``: every array field (per-example values, bootstrap draws...),
- ``frames/<field>.parquet``: any DataFrame field,
- ``manifest.json``, written last: the format version and the sha256 and size of every file,

atomically (a temporary folder renamed into place), and ``Result.load(dir)`` verifies the
manifest and rebuilds the same object (the class is looked up by name). An existing folder is
replaced only with ``overwrite=True``. The atomic writing is :mod:`faithlens.folders` (its public
names are importable from here too); reading, verifying and the limits on what is read are here.
Subclasses implement ``to_frame`` and ``summary``.

``plot`` draws with the plotter registered for the result's class (:func:`register_plotter`,
looked up along the MRO; the registries are :mod:`faithlens.renderers`, re-exported here). Plotters live in :mod:`faithlens.report`, above the methods, which
registers them all when it is imported; ``import faithlens`` imports it, so a method module never
imports ``report`` to draw its own result. ``_repr_html_`` (a result in a notebook) renders the
same way, with the renderer :func:`register_html` holds (the HTML report's headline and table).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os
import warnings
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np
import pandas as pd

from .errors import InputError, ResultError
from .folders import (  # the atomic writing; re-exported (see __all__ at the end)
    FORMAT_VERSION,
    MANIFEST,
    atomic_file,
    atomic_folder,
    check_output_file,
    check_target,
    file_sha256,
)
from .renderers import (  # the plotter and HTML registries; re-exported
    html_for,
    plot_writer,
    plotter_for,
    register_html,
    register_plotter,
)
from .stats import Estimate, Interval, with_intervals  # re-exported: results declare them

if TYPE_CHECKING:
    from matplotlib.figure import Figure

T = TypeVar("T", bound="Result")

_REGISTRY: dict[str, type[Result]] = {}


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return {"__tuple__": [_jsonable(v) for v in value]}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, float) and not np.isfinite(value):
        return {"__float__": repr(value)}
    return value


def _unjson(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"__tuple__"}:
            return tuple(_unjson(v) for v in value["__tuple__"])
        if set(value) == {"__float__"}:
            return float(value["__float__"])
        return {k: _unjson(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unjson(v) for v in value]
    return value


@dataclasses.dataclass(frozen=True)
class Result:
    """Base class: frozen, savable, loadable, tabular, plottable.

    Every estimate a result reports is an :class:`~faithlens.stats.Interval`
    (:meth:`intervals`): a subclass declares where its estimates live in ``INTERVALS`` (name ->
    :class:`Estimate`), or overrides :meth:`intervals` where they live in a table. Its
    ``to_frame`` shows an estimate ``q`` as the columns ``q, q_se, q_ci_low, q_ci_high``.
    """

    #: estimate name -> where the result keeps it (see :class:`Estimate`).
    INTERVALS: ClassVar[dict[str, Estimate]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _REGISTRY[cls.__name__] = cls

    # -- what subclasses provide -------------------------------------------------------------
    def to_frame(self) -> pd.DataFrame:
        raise NotImplementedError(f"{type(self).__name__} must implement to_frame()")

    def summary(self) -> str:
        raise NotImplementedError(f"{type(self).__name__} must implement summary()")

    def intervals(self) -> dict[str, Interval]:
        """Every estimate of the result, by name, as an :class:`~faithlens.stats.Interval`
        (``{}`` for a result without estimates)."""
        return {name: where.of(self) for name, where in self.INTERVALS.items()}

    def interval_of(self, name: str) -> Interval:
        """The :class:`~faithlens.stats.Interval` of the estimate ``name``."""
        found = self.intervals()
        if name not in found:
            raise InputError(
                f"name={name!r}: {type(self).__name__} has no such estimate; it has "
                f"{sorted(found) or 'none'}"
            )
        return found[name]

    def plot(self, ax: Any = None) -> Figure:
        """A matplotlib figure of the result (drawn into ``ax`` where the plot has one panel)."""
        return self._plot(ax)

    def _plot(self, ax: Any = None, **options: Any) -> Figure:
        """Draw with the plotter registered for this class (subclasses whose ``plot`` takes
        more options pass them on here)."""
        fn = plotter_for(type(self))
        if fn is None:
            cls = type(self)
            raise NotImplementedError(
                f"no plotter is registered for {cls.__module__}.{cls.__qualname__}: register "
                "one with faithlens.results.register_plotter(cls, fn), or override plot()"
            )
        return fn(self, ax=ax, **options)

    def __str__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str | None:
        """Jupyter's rich display: the registered HTML renderer's fragment (None, so the plain
        repr is shown, where none is registered)."""
        fn = html_for(type(self))
        return None if fn is None else fn(self)

    # -- persistence --------------------------------------------------------------------------
    def save(
        self,
        path: str | Path,
        *,
        overwrite: bool = False,
        extras: Mapping[str, Callable[[Path], object]] | None = None,
    ) -> Path:
        """Write the result to the folder ``path`` atomically; returns the folder.

        Everything is written into a hidden temporary folder beside ``path``, a
        ``manifest.json`` (format version, sha256 and size of every file) is written last, and
        the folder is renamed into place: a crash at any point leaves either the previous folder
        or the new one, complete. ``extras`` maps a plain file or folder name to a function that
        writes it (``{"heatmap.png": lambda p: fig.savefig(p)}``, ``{"sub": other.save}``): it
        becomes part of the same atomic write and of the manifest.

        An existing non-empty ``path`` is refused with :class:`~faithlens.errors.ResultError`
        unless ``overwrite=True``, which replaces it whole (no old file survives); a folder
        that is not a faithlens result is never replaced. Two processes saving to one ``path``
        at once cannot mix: the second gets a ``ResultError``.
        """
        extra = dict(extras or {})
        for name in extra:
            _plain_name("extras", name)
            if name in _RESERVED:
                raise ResultError(f"extras={name!r}: {name} is written by save itself; rename it")
        with atomic_folder(path, overwrite=overwrite) as tmp:
            self._write(tmp)
            for name, write in extra.items():
                write(tmp / name)
        return Path(path)

    def _write(self, out: Path) -> None:
        scalars: dict[str, Any] = {}
        arrays: dict[str, np.ndarray] = {}
        frames: dict[str, pd.DataFrame] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray):
                arrays[f.name] = v
            elif isinstance(v, pd.DataFrame):
                frames[f.name] = v
            else:
                scalars[f.name] = _jsonable(v)
        meta = {
            "format": FORMAT_VERSION,
            "class": type(self).__name__,
            "fields": scalars,
            "arrays": sorted(arrays),
            "frames": sorted(frames),
        }
        (out / "result.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        np.savez_compressed(out / "arrays.npz", **arrays)  # type: ignore[arg-type]
        if frames:
            (out / "frames").mkdir(exist_ok=True)
            for name, frame in frames.items():
                frame.to_parquet(out / "frames" / f"{name}.parquet")
        self.to_frame().to_parquet(out / "table.parquet")

    @classmethod
    def load(cls: type[T], path: str | Path) -> T:
        """Load a result saved by :meth:`save`. ``Result.load`` finds the right class.

        The folder's ``manifest.json`` is checked first (known format, every file present with
        its size and sha256), and every size is bounded before anything is allocated: a
        partial, corrupted, edited or future-format folder raises
        :class:`~faithlens.errors.ResultError`. A folder written before manifests existed
        (format 1) loads with a warning, as it cannot be verified; saving it again verifies it.
        """
        src = Path(path)
        for _ in range(5):
            # A save that replaces the folder while we read it swaps the folder: read again, so
            # that a load never mixes the files of two saves. The folder is held open while it is
            # read, so its inode cannot be freed and reused by the next save's folder (which would
            # make a replaced folder look unchanged).
            with _pinned(src) as before:
                try:
                    res = cls._load_once(src)
                except ResultError:
                    if _identity(src) == before:
                        raise
                    continue
                if _identity(src) == before:
                    return res
        raise ResultError(f"{src} kept being replaced while it was read; try again")

    @classmethod
    def _load_once(cls: type[T], src: Path) -> T:
        if not src.is_dir():
            raise ResultError(_missing_message(src))
        listed: dict[str, Any] | None
        if (src / MANIFEST).exists() or (src / MANIFEST).is_symlink():
            listed = verify(src)["files"]
        else:
            listed = None
        meta = _read_meta(src, listed)
        name = meta["class"]
        # Every result class registers itself when it is defined, and importing any faithlens
        # module first imports the package, which imports every method: all classes are known.
        target = _REGISTRY.get(name)
        if target is None:
            raise ResultError(f"{src} holds a {name!r}, which this faithlens does not know")
        if not issubclass(target, cls):
            raise ResultError(f"{src} holds a {name}, not a {cls.__name__}")
        if listed is None:
            warnings.warn(
                f"{src} was saved by an older faithlens (format 1, no manifest.json), so it "
                "cannot be checked for damage; save it again to add a manifest",
                UserWarning,
                stacklevel=4,
            )
        known = {f.name for f in dataclasses.fields(target)}
        for key in [*meta["fields"], *meta["arrays"], *meta["frames"]]:
            if key not in known:
                raise ResultError(
                    f"{src}/result.json names a field {key!r} that a {name} does not have: the "
                    "folder was edited or comes from another version of faithlens"
                )
        values: dict[str, Any] = {k: _unjson(v) for k, v in meta["fields"].items()}
        values.update(_read_arrays(src, listed, meta["arrays"]))
        for k in meta["frames"]:
            values[k] = _read_parquet(src, listed, f"frames/{k}.parquet")
        try:
            return target(**values)
        except (TypeError, ValueError, KeyError) as e:
            raise ResultError(f"{src} does not rebuild a {name}: {e}") from e


# -- reading and verifying folders (faithlens.folders writes them) -----------------------------

#: Names that :meth:`Result.save` writes itself (``extras`` may not use them).
_RESERVED = frozenset({"result.json", "arrays.npz", "table.parquet", "frames", MANIFEST})
#: The largest ``manifest.json`` / ``result.json`` read (bytes).
MAX_JSON_BYTES = 256 << 20
#: The most bytes the arrays (or one table) of a results folder may declare; raise it for huge
#: results (``faithlens.results.MAX_ARRAY_BYTES = ...``).
MAX_ARRAY_BYTES = 16 << 30


def _identity(p: Path) -> tuple[int, int] | None:
    """The (device, inode) of ``p``, or None if it cannot be read."""
    try:
        st = os.stat(p)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


@contextmanager
def _pinned(p: Path) -> Iterator[tuple[int, int] | None]:
    """Hold the folder ``p`` open while it is read and yield its identity at opening.

    An open folder keeps its inode allocated even once it is renamed away and deleted, so a
    folder that later sits at ``p`` never has the same identity: comparing identities before and
    after a read tells whether ``p`` was replaced meanwhile, without the ABA of inode reuse.
    Where folders cannot be opened (Windows) the identity is read without holding it.
    """
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(p, flags)
    except OSError:
        fd = None
    if fd is None:  # yielded outside the except block: errors raised here chain to nothing
        yield _identity(p)
        return
    try:
        st = os.fstat(fd)
        yield (st.st_dev, st.st_ino)
    finally:
        os.close(fd)


def _plain_name(what: str, name: Any) -> str:
    """A single file or folder name: no separators, no ``..``, nothing hidden."""
    if (
        not isinstance(name, str)
        or not name
        or name in (".", "..")
        or "/" in name
        or "\\" in name
        or "\x00" in name
        or name.startswith(".")
    ):
        raise ResultError(
            f"{what}={name!r}: must be a plain file name (no '/', '..' or leading '.')"
        )
    return name


def _relative(src: Path, rel: Any) -> Path:
    """``src/rel`` for a manifest path: relative, no ``..``, no symlink, inside ``src``."""
    if not isinstance(rel, str) or not rel or rel.startswith("/") or "\\" in rel:
        raise ResultError(f"{src}/{MANIFEST} lists a path {rel!r} that is not inside the folder")
    parts = rel.split("/")
    if any(p in ("", ".", "..") or "\x00" in p for p in parts):
        raise ResultError(f"{src}/{MANIFEST} lists a path {rel!r} that is not inside the folder")
    cur = src
    for p in parts:
        cur = cur / p
        if cur.is_symlink():
            raise ResultError(
                f"{cur} is a symbolic link; a results folder holds plain files only "
                "(copy the folder with its files, not links)"
            )
    return cur


def _missing_message(src: Path) -> str:
    if src.exists():
        return f"{src} is not a folder, so it is not a saved faithlens result"
    olds = sorted(src.parent.glob(f".{glob.escape(src.name)}.old-*")) if src.parent.is_dir() else []
    if olds:
        return (
            f"{src} does not exist: a save was interrupted while replacing it; the previous "
            f"result is in {olds[-1]} (rename it back, or save again to recover it)"
        )
    return f"{src} does not exist: give the folder a result was saved to"


def _read_json(path: Path, what: str) -> Any:
    try:
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise ResultError(
                f"{path} is {size} bytes, more than a {what} can be ({MAX_JSON_BYTES})"
            )
        return json.loads(path.read_bytes())
    except ResultError:
        raise
    except (OSError, ValueError) as e:
        raise ResultError(f"{path} cannot be read as JSON ({e}): the folder is damaged") from e


def _check_format(src: Path, fmt: Any, what: str) -> int:
    if isinstance(fmt, bool) or not isinstance(fmt, int) or fmt < 1:
        raise ResultError(f"{src}/{what} has format {fmt!r}, which is not a faithlens format")
    if fmt > FORMAT_VERSION:
        raise ResultError(
            f"{src} was saved in format {fmt}, by a newer faithlens; this faithlens reads formats "
            f"up to {FORMAT_VERSION}: upgrade faithlens (pip install -U faithlens) to load it"
        )
    return fmt


def verify(path: str | Path) -> dict[str, Any]:
    """Check a folder written by :meth:`Result.save` (or :func:`atomic_folder`) against its
    ``manifest.json``: a known format, and every listed file present, a plain file inside the
    folder, with its recorded size and sha256. Returns the manifest; raises
    :class:`~faithlens.errors.ResultError` naming the first problem."""
    src = Path(path)
    if not src.is_dir():
        raise ResultError(_missing_message(src))
    mf = src / MANIFEST
    if mf.is_symlink():
        raise ResultError(f"{mf} is a symbolic link; a results folder holds plain files only")
    if not mf.is_file():
        raise ResultError(
            f"{src} has no {MANIFEST}: it is not a complete faithlens results folder (a save was "
            "interrupted, or files were removed); save the result again"
        )
    manifest = _read_json(mf, "manifest")
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise ResultError(f"{mf} is not a faithlens manifest (no 'files' table)")
    _check_format(src, manifest.get("format"), MANIFEST)
    for rel, entry in manifest["files"].items():
        f = _relative(src, rel)
        if not isinstance(entry, dict) or not {"sha256", "size"} <= set(entry):
            raise ResultError(f"{mf}: the entry for {rel!r} has no sha256 and size")
        if not f.is_file():
            raise ResultError(
                f"{src} is missing {rel}, which its manifest lists: the folder is incomplete; "
                "save the result again"
            )
        size = f.stat().st_size
        if size != entry["size"]:
            raise ResultError(
                f"{f} has {size} bytes, but the manifest recorded {entry['size']}: the file was "
                "truncated or edited after saving"
            )
        digest, _ = file_sha256(f)
        if digest != entry["sha256"]:
            raise ResultError(
                f"{f} does not match its sha256 in the manifest: the file was corrupted or "
                "edited after saving"
            )
    return manifest


def _listed(src: Path, listed: dict[str, Any] | None, rel: str) -> Path:
    """The file ``rel`` of ``src``, which the manifest (if any) must list."""
    f = _relative(src, rel)
    if listed is not None and rel not in listed:
        raise ResultError(
            f"{src}/{MANIFEST} does not list {rel}: the folder was edited after saving"
        )
    if not f.is_file():
        raise ResultError(f"{src} is missing {rel}: the folder is incomplete")
    return f


def _read_meta(src: Path, listed: dict[str, Any] | None) -> dict[str, Any]:
    meta_file = src / "result.json"
    if listed is not None and "result.json" not in listed and not meta_file.exists():
        subs = sorted({rel.split("/")[0] for rel in listed if rel.endswith("/result.json")})
        raise ResultError(
            f"{src} is a folder of results, not one result: load one of its subfolders"
            + (f" ({', '.join(subs)})" if subs else "")
        )
    if listed is None and not meta_file.exists() and not meta_file.is_symlink():
        raise ResultError(f"{src} is not a saved faithlens result: it has no result.json")
    meta = _read_json(_listed(src, listed, "result.json"), "result.json")
    ok = (
        isinstance(meta, dict)
        and isinstance(meta.get("class"), str)
        and isinstance(meta.get("fields"), dict)
        and isinstance(meta.get("arrays"), list)
        and isinstance(meta.get("frames"), list)
    )
    if not ok:
        raise ResultError(
            f"{src}/result.json is not a faithlens result record (it needs class, fields, "
            "arrays and frames)"
        )
    fmt = _check_format(src, meta.get("format"), "result.json")
    if listed is None and fmt > 1:
        raise ResultError(
            f"{src} has no {MANIFEST}, which format {fmt} always writes: the save was "
            "interrupted or the folder was stripped; save the result again"
        )
    for key in [*meta["arrays"], *meta["frames"]]:
        if not isinstance(key, str) or not key.isidentifier():
            raise ResultError(
                f"{src}/result.json names an array or frame {key!r}, which is not a field name"
            )
    return meta


def _read_arrays(src: Path, listed: dict[str, Any] | None, keys: list[str]) -> dict[str, Any]:
    """The arrays ``keys`` of ``arrays.npz``, each header checked (no objects, a size that fits
    the file, the total under :data:`MAX_ARRAY_BYTES`) before anything is allocated."""
    f = _listed(src, listed, "arrays.npz")
    out: dict[str, Any] = {}
    try:
        with zipfile.ZipFile(f) as zf:
            total = 0
            for k in keys:
                try:
                    info = zf.getinfo(f"{k}.npy")
                except KeyError:
                    raise ResultError(f"{f} has no array {k!r}, which result.json lists") from None
                total += info.file_size
                if total > MAX_ARRAY_BYTES:
                    raise ResultError(
                        f"{f} declares more than {MAX_ARRAY_BYTES} bytes of arrays; if that is "
                        "right, raise faithlens.results.MAX_ARRAY_BYTES"
                    )
                with zf.open(info) as fh:
                    version = np.lib.format.read_magic(fh)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
                    elif version == (2, 0):
                        shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
                    else:
                        raise ResultError(f"{f}: array {k!r} has an unknown .npy version")
                    if dtype.hasobject:
                        raise ResultError(f"{f}: array {k!r} holds Python objects; refused")
                    nbytes = math.prod(shape) * dtype.itemsize
                    if nbytes > info.file_size:
                        raise ResultError(
                            f"{f}: array {k!r} declares shape {shape}, larger than its data"
                        )
        with np.load(f, allow_pickle=False) as npz:
            for k in keys:
                out[k] = npz[k]
    except ResultError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as e:
        raise ResultError(
            f"{f} cannot be read ({type(e).__name__}: {e}): the file is damaged"
        ) from e
    return out


def _read_parquet(src: Path, listed: dict[str, Any] | None, rel: str) -> pd.DataFrame:
    f = _listed(src, listed, rel)
    try:
        import pyarrow.parquet as pq

        md = pq.read_metadata(f)
        declared = sum(md.row_group(i).total_byte_size for i in range(md.num_row_groups))
        if declared > MAX_ARRAY_BYTES:
            raise ResultError(
                f"{f} declares {declared} bytes, more than faithlens.results.MAX_ARRAY_BYTES"
            )
        return pd.read_parquet(f)
    except ResultError:
        raise
    except Exception as e:  # pyarrow raises its own error types for damaged files
        raise ResultError(
            f"{f} cannot be read ({type(e).__name__}: {e}): the file is damaged"
        ) from e


__all__ = [
    "Estimate",
    "FORMAT_VERSION",
    "MANIFEST",
    "MAX_ARRAY_BYTES",
    "MAX_JSON_BYTES",
    "Result",
    "atomic_file",
    "atomic_folder",
    "check_output_file",
    "check_target",
    "html_for",
    "plot_writer",
    "plotter_for",
    "register_html",
    "register_plotter",
    "verify",
    "with_intervals",
]
