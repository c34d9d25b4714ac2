"""HTML views of results: a self-contained page per results folder, an index of a folder of runs,
and the notebook display.

:func:`render_report` writes ``report.html`` into a results folder: what was run (the class and
the result's own fields and metadata, the faithlens version that saved it), the headline figures
with their confidence intervals, the full table of ``to_frame()`` (sortable), every plot (inlined
as PNG), every warning, and how to reload the result in Python. The page needs no network: its
styles, script and images are inline, and its Content-Security-Policy forbids loading anything.

``report.html`` is a *view* of the result, not part of it: it is written after the folder was
verified against its manifest, atomically, and is not listed in ``manifest.json``
(:func:`faithlens.results.verify` checks the files the manifest lists, so the result still
loads); saving the result again replaces the folder and the page with it. :func:`render_index`
writes ``index.html`` for every results folder under a folder.

:func:`notebook_html` is the notebook display (``Result._repr_html_``): the same headline block
and table as the page, registered with :func:`faithlens.results.register_html` so that
``results`` (below ``report`` in the layers) never imports this module. Everything a result
holds is escaped (Jinja2 autoescaping).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import io
import json
import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd

from .._version import __version__
from ..errors import FaithlensError, ResultError
from ..results import MANIFEST, Result, atomic_file, verify

#: The page written into a results folder, and the index written into a folder of runs.
REPORT = "report.html"
INDEX = "index.html"
#: Rows of ``to_frame()`` that the page shows (all of them are in ``table.parquet``), and that
#: the notebook display shows.
PAGE_ROWS = 5000
NOTEBOOK_ROWS = 50
#: The ``<meta name="generator">`` of every page written here: only such a page is replaced.
GENERATOR = "faithlens report"

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("faithlens.report", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

#: Fields shown first under "What was run" (in this order), where a result has them.
_FIRST = (
    "method", "model", "task", "data_name", "dataset", "hypothesis", "behaviour", "site",
    "n", "n_boot", "level", "seed",
)  # fmt: skip
#: What a run's record should say, and the field or ``meta`` keys that would say it.
_PROVENANCE = {
    "command": ("command", "argv", "call"),
    "commit": ("commit", "git_commit"),
    "versions of torch and transformers": ("versions",),
    "wall time": ("wall_time", "wall_s", "elapsed", "seconds"),
}
#: Fields holding warnings or notes addressed to the reader.
_WARNING_FIELDS = ("warnings", "notes")
_LONG = 400


# -- pieces -------------------------------------------------------------------------------------


def _short(value: Any) -> str:
    """A value as one line of text, cut after :data:`_LONG` characters."""
    if isinstance(value, np.ndarray):
        return f"array of shape {tuple(value.shape)} ({value.dtype})"
    if isinstance(value, pd.DataFrame):
        return f"table of {len(value)} rows x {len(value.columns)} columns"
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(value, default=str)
        except (TypeError, ValueError):
            text = repr(value)
    if len(text) > _LONG:
        text = f"{text[:_LONG]}... ({len(text)} characters)"
    return text


def _number(x: Any, digits: int = 4) -> str:
    f = float(x)
    return "" if math.isnan(f) else f"{f:.{digits}g}"


def _cell(v: Any) -> tuple[str, str, bool]:
    """(shown text, sort key, numeric) of one table cell."""
    if isinstance(v, bool | np.bool_):
        return str(bool(v)), str(int(v)), True
    if isinstance(v, int | np.integer):
        return str(int(v)), str(int(v)), True
    if isinstance(v, float | np.floating):
        f = float(v)
        if math.isnan(f):
            return "", "", True
        key = repr(f) if math.isfinite(f) else ("Infinity" if f > 0 else "-Infinity")
        return _number(f), key, True
    if v is None or v is pd.NA or v is pd.NaT:
        return "", "", False
    text = _short(v.tolist() if isinstance(v, np.ndarray) else v)
    return text, text, False


def _table(result: Result, max_rows: int, parquet: bool) -> dict[str, Any]:
    try:
        df = result.to_frame()
    except Exception as e:  # a result's own error is shown, not hidden
        return {"error": f"to_frame() failed: {type(e).__name__}: {e}"}
    if not isinstance(df.index, pd.RangeIndex) or any(n is not None for n in df.index.names):
        df = df.reset_index()
    shown = df.head(max_rows)
    rows = [[_cell(v) for v in rec] for rec in shown.itertuples(index=False, name=None)]
    return {
        "error": None,
        "columns": [str(c) for c in df.columns],
        "rows": rows,
        "total": len(df),
        "shown": len(shown),
        "parquet": parquet,
    }


def _interval_rows(result: Result) -> tuple[list[dict[str, str]], str | None]:
    """The result's ``intervals()`` (where it has them) as headline rows: one row per scalar
    estimate, and a count for an estimate per row of the table."""
    fn = getattr(result, "intervals", None)
    if not callable(fn):
        return [], None
    try:
        found = fn()
    except Exception as e:
        return [], f"intervals() failed: {type(e).__name__}: {e}"
    rows = []
    for name, iv in dict(found).items():
        est = np.asarray(iv.estimate, dtype=float)
        low = np.asarray(getattr(iv, "ci_low", getattr(iv, "low", np.nan)), dtype=float)
        high = np.asarray(getattr(iv, "ci_high", getattr(iv, "high", np.nan)), dtype=float)
        se = np.asarray(getattr(iv, "se", np.nan), dtype=float)
        level = getattr(iv, "level", None)
        pct = f"{100 * float(level):g}% " if level is not None else ""
        if est.size == 1:
            lo, hi = float(low.reshape(-1)[0]), float(high.reshape(-1)[0])
            ci = "" if math.isnan(lo) and math.isnan(hi) else f"{pct}[{_number(lo)}, {_number(hi)}]"
            rows.append(
                {
                    "name": str(name),
                    "value": _number(est.reshape(-1)[0]),
                    "ci": ci,
                    "se": _number(se.reshape(-1)[0], 3) if se.size == 1 else "",
                }
            )
        else:
            rows.append(
                {
                    "name": str(name),
                    "value": f"{est.size} values",
                    "ci": f"{pct}in the table",
                    "se": "",
                }
            )
    return rows, None


def _headline(result: Result) -> dict[str, Any]:
    try:
        summary = result.summary()
    except Exception as e:
        summary = f"summary() failed: {type(e).__name__}: {e}"
    intervals, error = _interval_rows(result)
    title = next((line.strip() for line in summary.splitlines() if line.strip()), "")
    return {
        "kind": type(result).__name__,
        "title": title,
        "summary": summary,
        "intervals": intervals,
        "interval_error": error,
    }


def _run_rows(result: Result) -> tuple[list[tuple[str, str]], list[str]]:
    """("What was run" rows, the provenance items the result does not record)."""
    values = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
    if "n" not in values and isinstance(getattr(type(result), "n", None), property):
        with suppress(Exception):  # a property that cannot be computed is left out
            values["n"] = result.n  # type: ignore[attr-defined]
    meta = values.get("meta")
    meta = dict(meta) if isinstance(meta, dict) else {}
    order = [k for k in _FIRST if k in values] + sorted(k for k in values if k not in _FIRST)
    rows = [("class", f"{type(result).__module__}.{type(result).__qualname__}")]
    for key in order:
        if key == "meta" or key in _WARNING_FIELDS:
            continue
        rows.append((key, _short(values[key])))
    rows.extend((f"meta.{k}", _short(v)) for k, v in sorted(meta.items()))
    missing = [
        what
        for what, keys in _PROVENANCE.items()
        if not any(k in values or k in meta for k in keys)
    ]
    return rows, missing


def _result_warnings(result: Result) -> list[str]:
    out: list[str] = []
    for name in _WARNING_FIELDS:
        value = getattr(result, name, None)
        if isinstance(value, str) and value:
            out.append(value)
        elif isinstance(value, list | tuple):
            out.extend(str(v) for v in value)
    meta = getattr(result, "meta", None)
    if isinstance(meta, dict) and meta.get("degenerate"):
        out.append(str(meta["degenerate"]))
    return out


def _plots(result: Result) -> tuple[list[dict[str, str]], list[str]]:
    """The result's plot as an inline PNG (or the error that stopped it)."""
    try:
        fig = result.plot()
    except Exception as e:
        return [], [f"plot() failed: {type(e).__name__}: {e}"]
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=110)
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    png = base64.b64encode(buf.getvalue()).decode("ascii")
    return [{"png": png, "caption": f"{type(result).__name__}.plot()"}], []


@contextmanager
def _recorded(into: list[str]) -> Iterator[None]:
    """Collect the warnings raised inside the block (once each) into ``into``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        text = f"{w.category.__name__}: {w.message}"
        if text not in into:
            into.append(text)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _mtime(path: Path) -> str:
    t = datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.UTC)
    return t.strftime("%Y-%m-%d %H:%M:%S UTC")


def _is_ours(path: Path) -> bool:
    """Whether ``path`` is a page this module wrote (so it may be replaced)."""
    with open(path, "rb") as fh:
        head = fh.read(4096).decode("utf-8", "replace")
    return f'<meta name="generator" content="{GENERATOR}' in head


def _write_page(path: Path, text: str) -> Path:
    if path.is_symlink() or (path.exists() and not (path.is_file() and _is_ours(path))):
        raise ResultError(
            f"{path} exists and was not written by faithlens report, so it is not replaced; "
            "move it away and run faithlens report again"
        )
    with atomic_file(path, overwrite=True, name="report") as tmp:
        tmp.write_text(text, encoding="utf-8")
    return path


# -- public -------------------------------------------------------------------------------------


def notebook_html(result: Result, *, max_rows: int = NOTEBOOK_ROWS) -> str:
    """The notebook display of ``result`` (``Result._repr_html_``): the report's headline block
    (summary and confidence intervals) and the first ``max_rows`` rows of its table."""
    return _ENV.get_template("notebook.html.j2").render(
        h=_headline(result), t=_table(result, max_rows, parquet=False)
    )


def report_html(
    result: Result, *, folder: str | Path | None = None, max_rows: int = PAGE_ROWS
) -> str:
    """The report page of ``result`` as a string (:func:`render_report` writes it into a results
    folder; ``folder`` is where the result was saved, for its files and how to reload it)."""
    caught: list[str] = []
    with _recorded(caught):
        plots, plot_errors = _plots(result)
    where = Path(folder) if folder is not None else None
    return _page(result, where, caught, plots, plot_errors, max_rows)


def _page(
    result: Result,
    folder: Path | None,
    caught: list[str],
    plots: list[dict[str, str]],
    plot_errors: list[str],
    max_rows: int = PAGE_ROWS,
) -> str:
    run, missing = _run_rows(result)
    files: list[dict[str, Any]] = []
    if folder is not None:
        manifest = verify(folder) if (folder / MANIFEST).is_file() else None
        if manifest is not None:
            run.insert(1, ("saved by", f"faithlens {manifest.get('faithlens', '(not recorded)')}"))
            run.insert(2, ("saved at", _mtime(folder / MANIFEST)))
            for rel, entry in sorted(manifest["files"].items()):
                files.append({"name": rel, "href": rel, "size": entry["size"], **entry})
        run.insert(1, ("folder", str(folder.resolve())))
        where = str(folder.resolve())
    else:
        where = "path/to/the/folder"
        missing.append("folder (the result was not saved)")
    reload = (
        "import faithlens as fl\n\n"
        f"res = fl.Result.load({where!r})\n"
        "print(res.summary())\n"
        "df = res.to_frame()   # the table above\n"
        "fig = res.plot()      # the plot above"
    )
    return _ENV.get_template("page.html.j2").render(
        generator=f"{GENERATOR} {__version__}",
        version=__version__,
        written=_now(),
        h=_headline(result),
        t=_table(result, max_rows, parquet=folder is not None),
        run=run,
        not_recorded=missing,
        warnings=_result_warnings(result) + caught,
        plots=plots,
        plot_errors=plot_errors,
        reload=reload,
        files=files,
    )


def render_report(path: str | Path) -> Path:
    """Write ``report.html`` into the results folder ``path`` and return its path.

    The folder is loaded (and so verified against its manifest) first; a damaged folder is a
    :class:`~faithlens.errors.ResultError` and no page is written. Warnings raised while it is
    loaded or drawn are shown on the page. An existing ``report.html`` is replaced only when
    faithlens wrote it."""
    folder = Path(path)
    caught: list[str] = []
    with _recorded(caught):
        result = Result.load(folder)
        plots, plot_errors = _plots(result)
    return _write_page(folder / REPORT, _page(result, folder, caught, plots, plot_errors))


def _result_folders(root: Path) -> list[Path]:
    """Every folder under ``root`` (itself included) that holds a ``result.json``, skipping
    hidden ones (a save's temporary folders)."""
    found = []
    for meta in sorted(root.rglob("result.json")):
        rel = meta.parent.relative_to(root)
        if not any(part.startswith(".") for part in rel.parts) and meta.is_file():
            found.append(meta.parent)
    return found


def _index_row(root: Path, folder: Path, report: Callable[[Path], Path] | None) -> dict[str, Any]:
    rel = folder.relative_to(root).as_posix() or "."
    row: dict[str, Any] = {"folder": rel, "href": None, "kind": "", "error": None}
    row.update(headline="", estimates="", saved="")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # shown on the result's own page
            result = Result.load(folder)
    except FaithlensError as e:
        row["error"] = str(e)
        return row
    if report is not None:
        try:
            report(folder)
            row["href"] = f"{rel}/{REPORT}"
        except FaithlensError as e:
            row["error"] = f"its report was not written: {e}"
    h = _headline(result)
    scalar = [iv for iv in h["intervals"] if not iv["value"].endswith(" values")]
    row.update(
        kind=h["kind"],
        headline=h["title"],
        estimates="; ".join(f"{iv['name']} {iv['value']} {iv['ci']}".strip() for iv in scalar[:3]),
        saved=_mtime(folder / MANIFEST) if (folder / MANIFEST).is_file() else "",
    )
    return row


def render_index(runs_dir: str | Path, *, reports: bool = True) -> Path:
    """Write ``index.html`` into ``runs_dir``: every results folder under it (at any depth),
    with its class, headline and main estimates, linked to its ``report.html`` (which
    ``reports=True`` writes first). A folder that does not load is listed with its error.
    Returns the index's path; a folder without results is a
    :class:`~faithlens.errors.ResultError`."""
    root = Path(runs_dir)
    if not root.is_dir():
        raise ResultError(f"{root} is not a folder: give a folder that holds results folders")
    folders = _result_folders(root)
    if not folders:
        raise ResultError(
            f"{root} holds no results folder (no result.json at any depth): give a folder that "
            "a result was saved to (--out), or a folder of such folders"
        )
    runs = [_index_row(root, f, render_report if reports else None) for f in folders]
    text = _ENV.get_template("index.html.j2").render(
        generator=f"{GENERATOR} {__version__}",
        version=__version__,
        written=_now(),
        root=str(root.resolve()),
        runs=runs,
        failed=sum(r["error"] is not None for r in runs),
    )
    return _write_page(root / INDEX, text)


__all__ = [
    "GENERATOR",
    "INDEX",
    "NOTEBOOK_ROWS",
    "PAGE_ROWS",
    "REPORT",
    "notebook_html",
    "render_index",
    "render_report",
    "report_html",
]
