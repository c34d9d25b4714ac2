"""The ``faithlens`` command.

Each command group lives in its own module here, named after the package it fronts
(``cli/das.py`` for ``faithlens das``, ``cli/scrubbing.py`` for ``faithlens scrub``,
``cli/representations.py`` for ``faithlens represent``, ``cli/models.py`` for ``faithlens
sites``), and registers itself on the shared typer app (``register(app)``); only the CLI and
``faithlens.report`` print or draw.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="faithlens",
    help="Is your explanation of a neural network faithful? Interventions, patching, causal "
    "scrubbing, divergence audits, neuron explanations and representation analysis, with "
    "confidence intervals.",
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
) -> None:
    """faithlens: faithful explanations of neural networks, with honest statistics."""
    if version:
        from .. import __version__

        typer.echo(f"faithlens {__version__}")
        raise typer.Exit()
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit()


# Command modules, in the order their commands appear in --help.
COMMAND_MODULES = [
    "faithlens.cli.models",
    "faithlens.cli.patching",
    "faithlens.cli.circuits",
    "faithlens.cli.scrubbing",
    "faithlens.cli.neurons",
    "faithlens.cli.representations",
    "faithlens.cli.divergence",
    "faithlens.cli.das",
    "faithlens.cli.zoo",
    "faithlens.cli.demo",
]


def _register() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


_register()


def main() -> None:
    """Entry point of the ``faithlens`` console script."""
    app()


__all__ = ["app", "main"]
