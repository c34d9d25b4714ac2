"""``faithlens report``: the HTML page of a results folder, or the index of a folder of runs
(:mod:`faithlens.report.html`)."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import console, friendly_errors


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(
        folder: Path = typer.Argument(
            ...,
            metavar="DIR",
            help="A results folder (one saved with --out) or a folder of them.",
            show_default=False,
        ),
    ) -> None:
        """Write a self-contained HTML page (no network needed to view it) for a results folder:
        what was run, the headline figures with their confidence intervals, the full table
        (sortable), every plot and warning, and how to reload the result in Python. It goes into
        the folder as report.html. Given a folder of results folders (any depth), it writes the
        page of each and an index.html linking them."""
        from ..errors import ResultError
        from ..report.html import render_index, render_report

        with friendly_errors():
            if not folder.is_dir():
                raise ResultError(
                    f"DIR={str(folder)!r}: no such folder; give a results folder (one saved "
                    "with --out) or a folder of them"
                )
            if (folder / "result.json").is_file():
                page = render_report(folder)
            else:
                page = render_index(folder)
            console.print(f"wrote {page}", highlight=False)
