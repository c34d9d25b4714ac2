"""Helpers shared by CLI commands: loading models by name, printing tables, errors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

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
