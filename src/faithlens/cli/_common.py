"""Helpers shared by CLI commands: loading models by name, printing tables, errors, progress
and status lines, and the option declarations several commands share (typer ``Annotated``
aliases: ``Overwrite``, ``Device``, ``DeviceMap``, ``TaskName``, ``MaxMemory``, ...) with the
parsers of ``--max-memory`` sizes and ``--device-map`` placements.

Output that is not a terminal (a log, a pipe, nohup, CI) gets what a terminal would show, in a
form a file keeps: tables and text at full width (:class:`CliConsole`, never clamped to 80
columns) and plain-text progress and status lines on stderr instead of live bars and spinners
(:func:`progress_bar`, :func:`status`)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Protocol, TypeVar

import pandas as pd
import typer
from rich.console import Console, ConsoleDimensions
from rich.table import Table

from ..errors import FaithlensError, InputError

#: The width of tables and text when the output is not a terminal: wide enough that no table
#: column is cut ("met...", "0.0...") in a log. ``COLUMNS`` in the environment still wins.
LOG_WIDTH = 1000


class CliConsole(Console):
    """A rich console that, when it does not write to a terminal and ``COLUMNS`` is not set,
    is :data:`LOG_WIDTH` wide instead of rich's 80 columns (checked at each print, so a
    console made before its stream was redirected follows the stream)."""

    @property
    def size(self) -> ConsoleDimensions:
        dims = super().size
        if self.is_terminal or self._environ.get("COLUMNS") is not None:
            return dims
        return ConsoleDimensions(LOG_WIDTH, dims.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


console = CliConsole()
err_console = CliConsole(stderr=True)

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
DeviceMap = Annotated[
    str | None,
    typer.Option(
        "--device-map",
        metavar="<map>",
        help="Spread the model over several devices (not with --device): 'auto' (whole blocks "
        "balanced over the GPUs), one device, or module=device pairs "
        "('model.layers.0=cuda:0,lm_head=cuda:1') or a JSON object of them (docs/scale.md).",
    ),
]
TaskName = Annotated[
    str,
    typer.Option(
        "--task",
        "-t",
        help="Registered task (ioi, induction, paren) or a JSON-lines file of your own examples "
        "(clean, corrupt, answer, wrong per line; see docs/patching.md).",
    ),
]
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


# ------------------------------------------------------------------ --device-map

_MAP_FIX = (
    "give 'auto', one device ('cuda:0'), module=device pairs ('model.layers.0=cuda:0,"
    'lm_head=cuda:1\') or a JSON object of them (\'{"model.layers.0": "cuda:0"}\')'
)


def parse_device_map(text: str, option: str = "--device-map") -> str | dict[str, str]:
    """``--device-map``'s text as ``fl.load``'s ``device_map``: ``"auto"`` or one device as
    given, else a dict module name -> device from ``module=device,...`` pairs or a JSON object
    (``{"model.layers.0": "cuda:0"}``; integer devices are GPU indices). Only the syntax is
    checked here (an :class:`~faithlens.errors.ArgumentError` naming ``option``);
    :func:`load_model` checks the devices and the modules."""
    import json

    from .. import validate

    body = text.strip()
    if not body:
        raise validate.fail(option, text, "is empty", _MAP_FIX)
    if body.startswith("{"):
        try:
            parsed = json.loads(body)
        except ValueError as e:
            raise validate.fail(option, text, f"is not valid JSON ({e})", _MAP_FIX) from None
        if not isinstance(parsed, dict) or not parsed:
            raise validate.fail(option, text, "must be a non-empty JSON object", _MAP_FIX)
        out: dict[str, str] = {}
        for name, dev in parsed.items():
            if isinstance(dev, bool) or not isinstance(dev, (str, int)):
                raise validate.fail(
                    option, text, f"maps {name!r} to {dev!r}, not a device", _MAP_FIX
                )
            out[name] = f"cuda:{dev}" if isinstance(dev, int) else dev
        return out
    if "=" not in body:
        if "," in body:
            raise validate.fail(option, text, "lists devices without module names", _MAP_FIX)
        return body
    pairs: dict[str, str] = {}
    for part in body.split(","):
        name, eq, dev = (x.strip() for x in part.partition("="))
        if not eq or not dev:
            raise validate.fail(option, text, f"has {part.strip()!r}, not module=device", _MAP_FIX)
        if name in pairs:
            raise validate.fail(option, text, f"maps {name!r} twice", "give each module once")
        pairs[name] = f"cuda:{dev}" if dev.isdigit() else dev
    return pairs


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


class Advance(Protocol):
    """The progress protocol of every method, ``progress(done, total)``
    (:mod:`faithlens.progress`), with an optional line of ``info`` (e.g. a training loss)."""

    def __call__(self, done: int, total: int, /, info: str = "") -> None: ...


def duration(seconds: float) -> str:
    """``"40 s"``, ``"3 min"``, ``"1.5 h"``: a rough duration for an estimate."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Estimate:
    """The time a run has left, projected from the steps done so far (steps are taken to cost
    the same), and the one-line estimate a long run prints once near its start: after at least
    ``min_elapsed_s`` seconds of work, when ``min_left_s`` seconds or more remain."""

    def __init__(
        self,
        start: float,
        *,
        min_elapsed_s: float = 2.0,
        min_left_s: float = 30.0,
    ) -> None:
        self.start = start
        self.min_elapsed_s = min_elapsed_s
        self.min_left_s = min_left_s
        self.announced = False

    def left(self, done: int, total: int, now: float) -> float | None:
        """Seconds left, or None before there is anything to project from."""
        elapsed = now - self.start
        if done <= 0 or total <= 0 or done >= total or elapsed < self.min_elapsed_s:
            return None
        return elapsed / done * (total - done)

    def announcement(self, description: str, done: int, total: int, now: float) -> str | None:
        """The once-only line ``description: about 4 min to go (estimated from 3/40 steps)``,
        or None (not yet, not long, or already said)."""
        left = self.left(done, total, now)
        if self.announced or left is None or left < self.min_left_s:
            return None
        self.announced = True
        return f"{description}: about {duration(left)} to go (estimated from {done}/{total} steps)"


class PlainProgress:
    """Progress as plain-text lines, for output that is not a terminal (a log, CI, nohup):
    ``description: done/total (pct%), elapsed`` on the first report, at the last one, and in
    between only when at least ``every_fraction`` more of the work is done or ``every_s``
    seconds have passed since the last line, and never twice within ``min_gap_s`` seconds, so
    a multi-minute command writes a modest number of lines instead of nothing."""

    def __init__(
        self,
        description: str,
        write: Callable[[str], None],
        *,
        every_fraction: float = 0.1,
        every_s: float = 30.0,
        min_gap_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.description = description
        self.write = write
        self.every_fraction = every_fraction
        self.every_s = every_s
        self.min_gap_s = min_gap_s
        self.clock = clock
        self.start = clock()
        self.last_time: float | None = None
        self.last_fraction = 0.0
        self.estimate = Estimate(self.start)

    def __call__(self, done: int, total: int, /, info: str = "") -> None:
        now = self.clock()
        said = self.estimate.announcement(self.description, done, total, now)
        if said is not None:
            self.write(said)
        fraction = done / total if total > 0 else 0.0
        final = total > 0 and done >= total
        if self.last_time is not None and not final:
            since = now - self.last_time
            if since < self.min_gap_s:
                return
            if fraction - self.last_fraction < self.every_fraction and since < self.every_s:
                return
        self.last_time, self.last_fraction = now, fraction
        pct = f" ({100 * fraction:.0f}%)" if total > 0 else ""
        line = f"{self.description}: {done}/{total}{pct}, {now - self.start:.0f}s elapsed"
        left = self.estimate.left(done, total, now)
        if left is not None:
            line += f", about {duration(left)} left"
        self.write(line + (f"  {info}" if info else ""))


def plain_line(text: str) -> None:
    """One line on stderr as it is (no markup, no highlighting, never wrapped)."""
    err_console.print(text, markup=False, highlight=False, soft_wrap=True)


@contextmanager
def progress_bar(description: str, *, stream: Console | None = None) -> Iterator[Advance]:
    """Progress driven by the one progress protocol of every method, ``progress(done, total)``
    (:mod:`faithlens.progress`): a rich bar on a terminal (``stream``: the console it draws on,
    stderr by default), plain-text lines (:class:`PlainProgress`) on stderr otherwise."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as Bars

    out = stream if stream is not None else err_console
    if not out.is_terminal:
        yield PlainProgress(description, plain_line)
        return
    with Bars(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=out,
        transient=True,
    ) as bar:
        task_id = bar.add_task(description, total=None, info="")
        estimate = Estimate(time.monotonic())

        def advance(done: int, total: int, /, info: str = "") -> None:
            said = estimate.announcement(description, done, total, time.monotonic())
            if said is not None:
                bar.console.print(said, highlight=False)  # above the bar, and kept after it
            bar.update(task_id, completed=done, total=total, info=info)

        yield advance


class PlainStatus:
    """What :func:`status` gives off a terminal: each (new) status text is one line on
    stderr."""

    def __init__(self, text: str) -> None:
        self.text = ""
        self.update(text)

    def update(self, text: str) -> None:
        if text != self.text:
            self.text = text
            plain_line(text)


@contextmanager
def status(text: str) -> Iterator[Any]:
    """A spinner with ``text`` on a terminal (rich's ``console.status``), one plain line on
    stderr otherwise; either way the object has ``update(text)``."""
    if console.is_terminal:
        with console.status(text) as spinner:
            yield spinner
    else:
        yield PlainStatus(text)


def task_option(task: str, n: int, seed: int) -> Any:
    """``--task``, ``--n`` and ``--seed``, checked before the model loads: a registered task's
    name (returned as is) or a JSON-lines file of examples, read and checked line by line now
    (returned as a :class:`~faithlens.tasks.TaskFile`; it uses all its examples, not ``--n``)."""
    from .. import tasks, validate
    from ..tasks.prompts_file import is_task_file

    validate.positive_int("--n", n, fix="a task needs at least one example")
    validate.nonnegative_int("--seed", seed)
    if task not in tasks.REGISTRY and is_task_file(task):
        return tasks.read_task_file(task)
    validate.choice(
        "--task",
        task,
        sorted(tasks.REGISTRY),
        fix="choose a registered task, or give a JSON-lines file of examples (name.jsonl)",
    )
    return task


def build_task(spec: Any, model: Any, n: int, seed: int) -> Any:
    """The task of a checked ``--task`` for ``model``: ``spec`` is what :func:`task_option`
    returned, or the option's text (a task file is then read again)."""
    from .. import tasks
    from ..tasks.prompts_file import is_task_file

    if isinstance(spec, str) and spec not in tasks.REGISTRY and is_task_file(spec):
        spec = tasks.read_task_file(spec)
    if isinstance(spec, tasks.TaskFile):
        t = spec.build(model)
        plain_line(f"task {spec.path}: {len(t)} examples from the file (--n is not used)")
        return t
    return tasks.build(spec, model, n=n, seed=seed)


def write_report(folder: Any, *, index: bool = False) -> Any:
    """Write ``report.html`` into the saved results folder ``folder``
    (:func:`faithlens.report.html.render_report`; with ``index``, the page of every results
    folder under it and its ``index.html``: :func:`~faithlens.report.html.render_index`) and
    print where it is; the page's path, or None when it could not be drawn: that is a warning
    on stderr, never an error, since the result itself is already saved (``faithlens report
    FOLDER`` tries again)."""
    from ..report.html import render_index, render_report

    try:
        page = render_index(folder) if index else render_report(folder)
    except Exception as e:  # the saved result must survive any failure of its view
        plain_line(
            f"warning: the result is saved but its report could not be written "
            f"({type(e).__name__}: {e}); run `faithlens report {folder}` to try again"
        )
        return None
    console.print(f"report: {page}", markup=False, highlight=False, soft_wrap=True)
    return page


def save_result(
    result: Any,
    out: Any,
    *,
    overwrite: bool = False,
    extras: dict[str, Any] | None = None,
    message: str | None = None,
) -> Any:
    """Save ``result`` to the folder ``out`` (``result.save(out, overwrite=..., extras=...)``),
    print ``message`` (the command's "wrote ..." line), then write the HTML page next to it
    (:func:`write_report`); the page's path, or None."""
    result.save(out, overwrite=overwrite, extras=extras)
    if message is not None:
        console.print(message)
    return write_report(out)


def device_map_option(device_map: str | None, device: str | None = None) -> Any:
    """``--device-map`` as ``fl.load``'s checked ``device_map`` (None when not given): its
    syntax (:func:`parse_device_map`) and its devices, and not with ``--device``; every error
    names ``--device-map``. Commands that work before loading call it first."""
    from .. import validate
    from ..errors import ArgumentError
    from ..loading import check_device_map

    if device_map is None:
        return None
    if device is not None:
        raise validate.fail(
            "--device-map",
            device_map,
            f"cannot be given together with --device {device}",
            "give --device to put the whole model on one device, or --device-map to spread it",
        )
    try:
        return check_device_map(parse_device_map(device_map))
    except ArgumentError as e:
        raise validate.fail("--device-map", device_map, str(e)) from None


def load_model(name: str, device: str | None = None, device_map: str | None = None) -> Any:
    """Load a model by name; ``--device`` is checked first (it must exist on this machine), and
    ``--device-map`` (:func:`device_map_option`)."""
    from .. import validate
    from ..loading import load

    if device is not None:
        validate.device(device, "--device")
    placement = device_map_option(device_map, device)
    with status(f"loading {name}..."):
        return load(name, device=device, device_map=placement)


#: Columns that hold whole numbers (an index), printed without decimals even when a missing
#: value made pandas store them as floats (``layer`` 3, not 3.000).
INDEX_COLUMNS = frozenset({"layer", "head", "position", "unit", "step", "epoch", "n"})


def whole_numbers(column: pd.Series) -> bool:
    """Whether a float column of :data:`INDEX_COLUMNS` holds only whole numbers (or gaps)."""
    if column.name not in INDEX_COLUMNS or not pd.api.types.is_float_dtype(column):
        return False
    v = column.dropna()
    return bool(((v % 1) == 0).all())


def print_frame(
    df: pd.DataFrame, title: str, *, max_rows: int = 20, float_fmt: str = "{:.3f}"
) -> None:
    """``df``'s first ``max_rows`` rows as a rich table (every column, never cut off the screen
    of a log: :class:`CliConsole`); floats with ``float_fmt``, index columns as integers."""
    table = Table(title=title, show_lines=False)
    whole = {c for c in df.columns if whole_numbers(df[c])}
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
                cells.append(str(int(v)) if c in whole else float_fmt.format(v))
            else:
                cells.append(str(v))
        table.add_row(*cells)
    console.print(table)
    if len(df) > max_rows:
        console.print(f"[dim]... {len(df) - max_rows} more rows[/]")
