"""Core commands: ``faithlens sites``."""

from __future__ import annotations

import typer

from ._common import console, friendly_errors, load_model


def register(app: typer.Typer) -> None:
    @app.command("sites")
    def sites(
        model: str = typer.Option(
            ..., "--model", "-m", help="Model name (smollm2, minilm, zoo:NAME) or local folder."
        ),
        kind: str = typer.Option(
            None, "--kind", "-k", help="Only sites of this kind (head, mlp_out, resid_pre, ...)."
        ),
        layer: int = typer.Option(None, "--layer", "-l", help="Only sites of this layer."),
    ) -> None:
        """List the canonical sites of a model."""
        with friendly_errors():
            m = load_model(model)
            names = m.sites(kind=kind, layer=layer)
            console.print(f"[bold]{m}[/]")
            console.print(f"{len(names)} sites")
            for n in names:
                console.print(n, highlight=False)
