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
    executor: str = typer.Option(
        "inprocess",
        "--executor",
        help="Where the command's chunks of work run: inprocess (default) or ray (workers of a "
        "Ray cluster; needs faithlens[ray]; docs/scale.md). Give it before the command: "
        "`faithlens --executor ray --workers 2 patch ...`.",
    ),
    address: str | None = typer.Option(
        None,
        "--address",
        help="With --executor ray: the cluster to join ('auto', 'ray://host:port'); default: "
        "a running local cluster, else a new one.",
    ),
    workers: int | None = typer.Option(
        None, "--workers", help="With --executor ray: worker processes (default: one per CPU)."
    ),
    gpus_per_worker: float | None = typer.Option(
        None, "--gpus-per-worker", help="With --executor ray: GPUs each worker holds (default 0)."
    ),
) -> None:
    """faithlens: faithful explanations of neural networks, with honest statistics."""
    if version:
        from .. import __version__

        typer.echo(f"faithlens {__version__}")
        raise typer.Exit()
    if ctx.invoked_subcommand is None:
        typer.echo(ctx.get_help())
        raise typer.Exit()
    use_executor(ctx, executor, address=address, workers=workers, gpus_per_worker=gpus_per_worker)


def use_executor(ctx: typer.Context, name: str, **options: object) -> None:
    """Run the invoked command under the executor ``name`` (``--executor``), closed when the
    command ends. Options not given are not passed; ``inprocess`` refuses any."""
    from ..executor import executor
    from ._common import friendly_errors

    given = {k: v for k, v in options.items() if v is not None}
    if name == "inprocess" and not given:
        return
    with friendly_errors():
        ctx.with_resource(executor(name, **given))


# Command modules, in the order their commands appear in --help.
COMMAND_MODULES = [
    "faithlens.cli.models",
    "faithlens.cli.patching",
    "faithlens.cli.circuits",
    "faithlens.cli.lenses",
    "faithlens.cli.scrubbing",
    "faithlens.cli.neurons",
    "faithlens.cli.representations",
    "faithlens.cli.divergence",
    "faithlens.cli.das",
    "faithlens.cli.zoo",
    "faithlens.cli.demo",
    "faithlens.cli.report",
]


def _register() -> None:
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(app)


_register()


def main() -> None:
    """Entry point of the ``faithlens`` console script."""
    app()


__all__ = ["app", "main"]
