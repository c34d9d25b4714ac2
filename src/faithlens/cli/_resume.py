"""A command killed as a whole resumes from its ``--out`` folder.

A command that saves to ``--out DIR`` keeps the finished chunks of its sweep in a hidden folder
beside it, ``.DIR.partial/`` (:func:`partial_folder`), while it runs: the method's own
checkpoint (``fl.patch(..., checkpoint=...)``: each chunk written atomically as it finishes, in
process or on Ray workers). Running the same command again after a kill reads the finished
chunks back and computes only the others, with the same result; once the result is saved
(atomically) the partial folder is removed.

The partial folder records the command and its options (``command.json``). A partial folder
left by another command, or by the same command with other options, is not resumed: the command
says so and starts afresh. The method's checkpoint is keyed on the model's weights and the data
as well; a folder that does not match them (a local model folder whose weights changed) is
also started afresh, with a message.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from ..errors import CheckpointError
from ._common import console

T = TypeVar("T")

#: The file of a partial folder that records the command and its options.
RECORD = "command.json"


def partial_folder(out: Path) -> Path:
    """Where a command saving to ``out`` keeps its finished chunks: ``.NAME.partial`` beside it."""
    return out.parent / f".{out.name}.partial"


class Partial:
    """The partial folder of one command run (``folder`` is ``None`` without ``--out``)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder

    def run(self, name: str, fn: Callable[[Path | None], T]) -> T:
        """``fn(checkpoint)``, with ``checkpoint`` the folder ``name`` inside the partial folder
        (``None`` without one). A checkpoint that belongs to other weights or data is removed,
        with a message, and ``fn`` runs afresh."""
        if self.folder is None:
            return fn(None)
        sub = self.folder / name
        try:
            return fn(sub)
        except CheckpointError as e:
            console.print(f"note: not resuming {name}: {e}; starting it afresh", markup=False)
            shutil.rmtree(sub, ignore_errors=True)
            return fn(sub)


def _record(command: str, options: dict[str, Any]) -> str:
    return json.dumps({"command": command, "options": options}, sort_keys=True, default=str)


@contextmanager
def resumable(out: Path | None, command: str, options: dict[str, Any]) -> Iterator[Partial]:
    """The partial folder of ``command`` run with ``options`` saving to ``out``: resumed when
    it was left by the same command with the same options, else started afresh (with a message
    when there was one); removed when the block ends without an error (after the result was
    saved), kept when it raises (a kill keeps it, too)."""
    if out is None:
        yield Partial(None)
        return
    folder = partial_folder(out)
    record = _record(command, options)
    meta = folder / RECORD
    if folder.is_dir():
        try:
            old: str | None = json.dumps(json.loads(meta.read_text()), sort_keys=True)
        except (OSError, ValueError, UnicodeDecodeError):
            old = None
        if old == record:
            console.print(f"resuming from the finished chunks in {folder}", markup=False)
        else:
            console.print(
                f"note: {folder} holds the finished chunks of another command or other "
                "options; starting afresh",
                markup=False,
            )
            shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{RECORD}.tmp"
    tmp.write_text(record + "\n")
    os.replace(tmp, meta)
    yield Partial(folder)
    shutil.rmtree(folder, ignore_errors=True)


__all__ = ["RECORD", "Partial", "partial_folder", "resumable"]
