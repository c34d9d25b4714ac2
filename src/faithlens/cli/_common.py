"""Helpers shared by CLI commands: loading models by name, printing tables, errors, and the
option declarations several commands share (typer ``Annotated`` aliases: ``Overwrite``,
``Device``, ``TaskName``, ``MaxMemory``, ...) with the parser of ``--max-memory`` sizes."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table

from ..errors import FaithlensError, InputError
from ..progress import Progress

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

# ------------------------------------------------------------------ shared option declarations

Overwrite = Annotated[
    bool,
    typer.Option("--overwrite", help="Replace an existing --out folder (default: refuse)."),
]
Device = Annotated[
    str | None, typer.Option("--device", help="cpu, cuda, cuda:1... (default: cpu).")
]
TaskName = Annotated[str, typer.Option("--task", "-t", help="Registered task (ioi, ...).")]
NBoot = Annotated[
    int, typer.Option("--n-boot", help="Bootstrap resamples for the confidence intervals.")
]
MaxMemory = Annotated[
    str | None,
    typer.Option(
        "--max-memory",
        metavar="<size>",
        help="Memory one chunk of work may use: bytes, or a size such as 512M or 2G (K, M, G, "
        "T are powers of 1024). Default: the configured budget (FAITHLENS_MEMORY).",
    ),
]

# ------------------------------------------------------------------ --max-memory

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?")
_SCALE = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE_FIX = "give bytes or a size such as 512M or 2G (K, M, G, T are powers of 1024)"


def parse_size(text: str, option: str = "--max-memory") -> int:
    """A number of bytes from ``text``: ``1000000``, ``512M``, ``2G``, ``1.5G``, ``64KiB``
    (K, M, G, T are powers of 1024, as in ``FAITHLENS_MEMORY``). Anything else, a fraction of
    a byte or a size under one byte is an :class:`~faithlens.errors.ArgumentError` naming
    ``option`` and the text."""
    from .. import validate

    m = _SIZE.fullmatch(text.strip().lower())
    if m is None:
        raise validate.fail(option, text, "is not a size in bytes", _SIZE_FIX)
    number, unit = m.groups()
    if not unit and "." in number:
        raise validate.fail(option, text, "is not a whole number of bytes", _SIZE_FIX)
    value = int(float(number) * _SCALE[unit])
    if value < 1:
        raise validate.fail(option, text, "must be at least one byte", _SIZE_FIX)
    return value


def deprecated_option(old: str, new: str, hint: str = "") -> None:
    """One line on stderr: ``old`` still works for one release; ``new`` replaces it."""
    err_console.print(
        f"note: {old} is deprecated and will be removed in the next release; use {new}"
        + (f" ({hint})" if hint else ""),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def max_memory_option(
    text: str | None, *, old_option: str | None = None, old_value: Any = None
) -> int | None:
    """``--max-memory`` in bytes (None: the configured budget). ``old_option=old_value`` is the
    deprecated memory knob the command still takes (``--batch-size``, ``--max-rows``): given
    with ``--max-memory`` it is refused; alone it works, with a deprecation note on stderr."""
    from .. import validate

    value = None if text is None else parse_size(text)
    if old_option is not None and old_value is not None:
        if value is not None:
            raise validate.fail(
                old_option,
                old_value,
                f"cannot be given together with --max-memory={text!r}",
                f"give only --max-memory ({old_option} is deprecated)",
            )
        deprecated_option(old_option, "--max-memory", "bytes, or a size such as 512M")
    return value


def comma_list(text: str | None, cast: Callable[[str], T], option: str) -> list[T]:
    """The comma-separated values of a command-line option, each converted by ``cast``; a value
    that does not convert is an :class:`InputError` naming the option (not a traceback)."""
    out: list[T] = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(cast(part))
        except ValueError as e:
            kind = getattr(cast, "__name__", "value")
            raise InputError(
                f"{option} takes comma-separated {kind} values; cannot read {part!r} in {text!r}"
            ) from e
    return out


@contextmanager
def friendly_errors() -> Iterator[None]:
    """Turn faithlens' input errors into one red line and exit code 2 (no traceback)."""
    try:
        yield
    except FaithlensError as e:
        err_console.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(code=2) from None


@contextmanager
def progress_bar(description: str) -> Iterator[Progress]:
    """A rich progress bar driven by the one progress protocol of every method,
    ``progress(done, total)`` (:mod:`faithlens.progress`)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as Bars

    with Bars(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task_id = bar.add_task(description, total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task_id, completed=done, total=total)

        yield advance


def load_model(name: str, device: str | None = None) -> Any:
    """Load a model by name; ``--device`` is checked first (it must exist on this machine)."""
    from .. import validate
    from ..loading import load

    if device is not None:
        validate.device(device, "--device")
    with console.status(f"loading {name}..."):
        return load(name, device=device)


def print_frame(
    df: pd.DataFrame, title: str, *, max_rows: int = 20, float_fmt: str = "{:.3f}"
) -> None:
    table = Table(title=title, show_lines=False)
    for c in df.columns:
        table.add_column(
            str(c), justify="right" if pd.api.types.is_numeric_dtype(df[c]) else "left"
        )
    for _, row in df.head(max_rows).iterrows():
        cells = []
        for c in df.columns:
            v = row[c]
            if v is None or v is pd.NA or (isinstance(v, float) and pd.isna(v)):
                cells.append("")
            elif isinstance(v, float):
                cells.append(float_fmt.format(v))
            else:
                cells.append(str(v))
        table.add_row(*cells)
    console.print(table)
    if len(df) > max_rows:
        console.print(f"[dim]... {len(df) - max_rows} more rows[/]")
