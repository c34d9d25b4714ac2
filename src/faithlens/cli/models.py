"""``faithlens sites``: the canonical sites of a model (:mod:`faithlens.models`)."""

from __future__ import annotations

from typing import Annotated

import typer

from ._common import console, friendly_errors, load_model

ModelName = Annotated[
    str,
    typer.Option("--model", "-m", help="Model name (smollm2, minilm, zoo:NAME) or local folder."),
]
Kind = Annotated[
    str | None,
    typer.Option("--kind", "-k", help="Only sites of this kind (head, mlp_out, resid_pre, ...)."),
]
Layer = Annotated[int | None, typer.Option("--layer", "-l", help="Only sites of this layer.")]


def sites(model: ModelName, kind: Kind = None, layer: Layer = None) -> None:
    """List the canonical sites of a model."""
    from .. import validate

    with friendly_errors():
        if layer is not None:
            validate.nonnegative_int("--layer", layer)
        m = load_model(model)
        if layer is not None:
            if not m.n_layers:
                raise validate.fail("--layer", layer, f"{m.name} has no layers", "omit --layer")
            validate.int_in_range(
                "--layer",
                layer,
                0,
                m.n_layers - 1,
                fix=f"{m.name} has layers 0..{m.n_layers - 1}",
            )
        names = m.sites(kind=kind, layer=layer)
        console.print(f"[bold]{m}[/]")
        console.print(f"{len(names)} sites")
        for n in names:
            console.print(n, highlight=False)


def register(app: typer.Typer) -> None:
    app.command("sites")(sites)
