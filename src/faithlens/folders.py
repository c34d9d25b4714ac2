"""Folders and files written atomically, with a manifest.

:func:`atomic_folder` yields a hidden temporary folder beside the target; on a clean exit it
writes ``manifest.json`` (the format version, and the sha256 and size of every file) last, fsyncs,
and renames the folder into place, replacing an existing one only with ``overwrite`` (whole, so
that no old file survives). Writers of one folder are serialised by a lock file; what a crashed
writer left is cleaned up (or put back) by the next. :func:`atomic_file` does the same for one
file. :func:`check_target` and :func:`check_output_file` check a destination before any work.

:meth:`faithlens.results.Result.save` is built on these; reading and verifying a folder
(:func:`faithlens.results.verify`, ``Result.load``) and the limits on what is read
(``faithlens.results.MAX_JSON_BYTES``, ``MAX_ARRAY_BYTES``) live in :mod:`faithlens.results`.
Everything here is importable from :mod:`faithlens.results` too.
"""

from __future__ import annotations

import ctypes
import errno
import glob
import hashlib
import json
import os
import secrets
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CheckpointError, ResultError

#: Format 2 adds ``manifest.json``; format 1 folders (no manifest) load with a warning.
FORMAT_VERSION = 2
MANIFEST = "manifest.json"
_CHUNK = 1 << 20


def file_sha256(path: Path, *, sync: bool = False) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
            n += len(chunk)
        if sync:
            os.fsync(fh.fileno())
    return h.hexdigest(), n


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _write_manifest(folder: Path) -> None:
    """Checksum and fsync every file under ``folder``, then write ``manifest.json`` last."""
    files: dict[str, dict[str, Any]] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        base = Path(dirpath)
        for d in dirnames:
            if (base / d).is_symlink():
                raise ResultError(f"{base / d} is a symbolic link; a result holds plain files")
        for fname in filenames:
            f = base / fname
            rel = f.relative_to(folder).as_posix()
            if rel == MANIFEST:
                continue
            if f.is_symlink() or not f.is_file():
                raise ResultError(f"{f} is not a plain file; a result holds plain files only")
            digest, size = file_sha256(f, sync=True)
            files[rel] = {"sha256": digest, "size": size}
        _fsync_dir(base)
    from ._version import __version__

    manifest = {"format": FORMAT_VERSION, "faithlens": __version__, "files": files}
    with open(folder / MANIFEST, "w") as fh:
        fh.write(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    _fsync_dir(folder)


def _replaceable(p: Path) -> bool:
    """Whether an existing folder is faithlens output (or empty), which ``overwrite`` may
    replace; any other folder is never deleted."""
    return not any(p.iterdir()) or (p / MANIFEST).is_file() or (p / "result.json").is_file()


def check_target(path: str | Path, *, overwrite: bool = False, name: str = "path") -> Path:
    """Check, before any work, that a result can be saved to the folder ``path``: a writable
    location, and not an existing result unless ``overwrite``. ``name`` is the argument as the
    user wrote it (``"--out"``). Raises :class:`~faithlens.errors.ArgumentError` (unwritable) or
    :class:`~faithlens.errors.ResultError` (exists), naming the argument, the path and the fix."""
    from .validate import output_dir

    p = output_dir(path, name)
    if p.is_dir() and any(p.iterdir()):
        flag = "--overwrite" if name.startswith("-") else "overwrite=True"
        if not overwrite:
            raise ResultError(
                f"{name}={str(p)!r}: the folder already exists and is not empty; pass {flag} "
                "to replace it, or choose another folder"
            )
        if not _replaceable(p):
            raise ResultError(
                f"{name}={str(p)!r}: the folder holds files that are not a faithlens result, so "
                f"{flag} will not delete it; choose another folder (or empty it yourself)"
            )
    return p


def check_output_file(path: str | Path, *, overwrite: bool = False, name: str = "plot") -> Path:
    """Like :func:`check_target`, for a single file (a plot)."""
    from .validate import output_file

    p = output_file(path, name)
    if p.exists() and not overwrite:
        flag = "--overwrite" if name.startswith("-") else "overwrite=True"
        raise ResultError(
            f"{name}={str(p)!r}: the file already exists; pass {flag} to replace it, or choose "
            "another path"
        )
    return p


class _Lock:
    """An exclusive, non-blocking lock on ``parent/.NAME.lock`` for one writer of ``NAME``."""

    def __init__(self, target: Path) -> None:
        self.target = target
        self.path = target.parent / f".{target.name}.lock"
        self.fd: int | None = None

    def __enter__(self) -> _Lock:
        busy = ResultError(
            f"{self.target}: another process is saving to this folder right now (lock "
            f"{self.path}); wait for it to finish, or choose another folder"
        )
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: an exclusive-create lock file
            try:
                self.fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
            except FileExistsError:
                raise ResultError(
                    f"{busy} (if no other process is saving, a crash left {self.path}: delete it)"
                ) from None
            return self
        for _ in range(20):
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise busy from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:  # not a lock file the previous holder removed after we opened it
                self.fd = fd
                return self
            os.close(fd)
        raise busy

    def __exit__(self, *exc: object) -> None:
        if self.fd is None:
            return
        with suppress(FileNotFoundError):
            os.unlink(self.path)
        os.close(self.fd)  # closing releases the flock
        self.fd = None


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a))


def _recover(target: Path) -> None:
    """Under the lock: remove what crashed writers left beside ``target``, and put back a
    previous result that an interrupted replacement left aside."""
    parent = target.parent
    name = glob.escape(target.name)
    for tmp in parent.glob(f".{name}.tmp-*"):
        shutil.rmtree(tmp, ignore_errors=True)
    olds = sorted(parent.glob(f".{name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds and not target.exists():
        os.rename(olds.pop(), target)
    for old in olds:
        shutil.rmtree(old, ignore_errors=True)


def _fresh(parent: Path, prefix: str, suffix: str = "") -> Path:
    """A path in ``parent`` that does not exist yet (a random part between prefix and suffix)."""
    while True:
        p = parent / f"{prefix}{secrets.token_hex(6)}{suffix}"
        if not os.path.lexists(p):
            return p


@contextmanager
def atomic_folder(
    path: str | Path, *, overwrite: bool = False, name: str = "path"
) -> Iterator[Path]:
    """Write a folder atomically: yields a hidden temporary folder beside ``path`` to fill;
    on a clean exit writes ``manifest.json`` (sha256 and size of every file) last, fsyncs and
    renames the folder into place (replacing an existing one only with ``overwrite``, whole,
    so that no old file survives). On an error nothing changes at ``path`` and the temporary
    folder is removed. Writers of one ``path`` are serialised by an exclusive lock file; a
    second concurrent writer gets :class:`~faithlens.errors.ResultError`.
    :meth:`Result.save` is built on it; use it for a folder of several results."""
    target = Path(path)
    if target.name in ("", ".", ".."):
        target = target.resolve()
    check_target(target, overwrite=overwrite, name=name)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _Lock(target):
        _recover(target)
        check_target(target, overwrite=overwrite, name=name)  # again, under the lock
        tmp = _fresh(target.parent, f".{target.name}.tmp-")
        os.mkdir(tmp)  # mode 0o777 less the umask, like any folder the user makes
        try:
            yield tmp
            _write_manifest(tmp)
            if not target.exists():
                os.rename(tmp, target)
            elif target.is_dir() and not any(target.iterdir()):
                os.rmdir(target)
                os.rename(tmp, target)
            elif _exchange(tmp, target):
                shutil.rmtree(tmp)  # now the old folder
            else:
                old = _fresh(target.parent, f".{target.name}.old-")
                os.rename(target, old)
                os.rename(tmp, target)
                shutil.rmtree(old)
            _fsync_dir(target.parent)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def atomic_file(path: str | Path, *, overwrite: bool = False, name: str = "path") -> Iterator[Path]:
    """Write one file atomically: yields a temporary path beside ``path`` (same suffix, so
    ``savefig`` picks the format) that is fsynced and renamed onto ``path`` on a clean exit."""
    target = check_output_file(path, overwrite=overwrite, name=name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _fresh(target.parent, f".{target.name}.tmp-", target.suffix)
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # umask applies
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        if not overwrite:
            try:
                os.link(tmp, target)  # fails if another writer created it meanwhile
            except FileExistsError:
                raise ResultError(
                    f"{name}={str(target)!r}: the file already exists; pass --overwrite to "
                    "replace it, or choose another path"
                ) from None
            except OSError:
                if target.exists():
                    raise
                os.replace(tmp, target)
        else:
            os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


class NpzStore:
    """Numbered blocks of arrays on disk, keyed to one run, so that a killed run resumes from
    the blocks it finished (patching's chunks, the neuron bootstrap's unit blocks).

    ``path/checkpoint.json`` holds ``key`` (a fingerprint of whatever defines the run): a
    folder written for another run is refused, never resumed. Block ``i`` is
    ``{prefix}_{i:07d}.npz``, written atomically (a temporary file, fsynced, then renamed) and
    read with ``allow_pickle=False``; a truncated or foreign file raises
    :class:`~faithlens.errors.CheckpointError` naming it. ``what`` names the store in errors,
    ``other_run`` says what a different run means, ``FIX`` is the fix every error gives."""

    FIX = "delete the checkpoint folder (or that file), or use a new folder"

    def __init__(
        self,
        path: str | os.PathLike[str],
        key: str,
        *,
        prefix: str = "chunk",
        what: str = "checkpoint",
        other_run: str = "another run",
    ) -> None:
        self.dir = Path(path)
        self.prefix, self.what = prefix, what
        self.dir.mkdir(parents=True, exist_ok=True)
        meta = self.dir / "checkpoint.json"
        if meta.exists():
            try:
                old = json.loads(meta.read_text()).get("key")
            except (ValueError, UnicodeDecodeError, AttributeError) as e:
                raise CheckpointError(
                    f"{meta} is not a readable {what} record ({type(e).__name__}: {e}); {self.FIX}"
                ) from None
            if old != key:
                raise CheckpointError(
                    f"checkpoint folder {self.dir} belongs to {other_run}; {self.FIX}"
                )
        else:
            tmp = self.dir / ".checkpoint.json.tmp"
            tmp.write_text(json.dumps({"key": key}) + "\n")
            tmp.replace(meta)

    def _file(self, i: int) -> Path:
        return self.dir / f"{self.prefix}_{i:07d}.npz"

    def load(self, i: int) -> dict[str, Any] | None:
        """Block ``i``'s arrays, or ``None`` when it has not finished."""
        f = self._file(i)
        if not f.exists():
            return None
        try:
            with np.load(f, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except Exception as e:  # truncated zip, object arrays (pickle), foreign file
            raise CheckpointError(
                f"{f} is not a readable {self.what} {self.prefix} (truncated, corrupted or "
                f"holding pickled objects: {type(e).__name__}: {e}); {self.FIX}"
            ) from None

    def save(self, i: int, **arrays: Any) -> None:
        """Write block ``i`` atomically."""
        tmp = self.dir / f".tmp_{i:07d}.npz"
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(self._file(i))
