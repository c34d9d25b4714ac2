"""``faithlens logit-lens`` and ``faithlens dla``: the logit lens over layers and direct logit
attribution on a task's answers, from the shell (``faithlens.representations.lenses``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ._common import (
    Device,
    DeviceMap,
    MaxMemory,
    NBoot,
    Overwrite,
    TaskName,
    build_task,
    comma_list,
    console,
    friendly_errors,
    load_model,
    max_memory_option,
    print_frame,
    progress_bar,
    save_result,
    task_option,
)

LensModel = Annotated[
    str,
    typer.Option("--model", "-m", help="Model name (smollm2, zoo:NAME) or local folder."),
]
N = Annotated[int, typer.Option("--n", help="Number of task examples.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed for the task and the bootstrap.")]
Which = Annotated[str, typer.Option("--which", help="Read the clean or the corrupt inputs.")]
Layers = Annotated[
    str | None,
    typer.Option("--layers", help="Comma-separated layers to read (default: every layer)."),
]
LensSite = Annotated[
    str,
    typer.Option(
        "--site", help="Residual stream read at each layer: resid_post, resid_mid, resid_pre."
    ),
]
Top = Annotated[int, typer.Option("--top", help="Rows of the printed component table.")]
Out = Annotated[
    Path | None,
    typer.Option(
        "--out", "-o", help="Folder for result.json, table.parquet, arrays.npz and plot.png."
    ),
]


def _prepare(task: str, n: int, seed: int, which: str, n_boot: int) -> Any:
    """The checks every lens command makes before the model loads; the task's spec."""
    from .. import validate

    spec = task_option(task, n, seed)
    validate.choice("--which", which, ("clean", "corrupt"))
    validate.n_boot(n_boot, "--n-boot")
    return spec


def _save(res: Any, out: Path | None, overwrite: bool) -> None:
    from ..results import plot_writer

    if out is not None:
        save_result(
            res,
            out,
            overwrite=overwrite,
            extras={"plot.png": plot_writer(res)},
            message=f"wrote {out}/result.json, table.parquet, arrays.npz, plot.png",
        )


def logit_lens_cmd(
    model: LensModel = "zoo:induction",
    task: TaskName = "induction",
    layers: Layers = None,
    site: LensSite = "resid_post",
    which: Which = "clean",
    n: N = 32,
    seed: Seed = 0,
    n_boot: NBoot = 1000,
    max_memory: MaxMemory = None,
    device: Device = None,
    device_map: DeviceMap = None,
    out: Out = None,
    overwrite: Overwrite = False,
) -> None:
    """The logit lens: each layer's residual stream read through the final norm and the
    unembedding at the task's metric position; the answer's logit difference, probability and
    rank per layer, with bootstrap confidence intervals over examples."""
    from .. import validate
    from ..representations.lenses import SITES, logit_lens
    from ..results import check_target

    with friendly_errors():
        spec = _prepare(task, n, seed, which, n_boot)
        validate.choice("--site", site, SITES)
        chosen = comma_list(layers, int, "--layers") if layers is not None else None
        memory = max_memory_option(max_memory)
        if out is not None:
            check_target(out, overwrite=overwrite, name="--out")
        m = load_model(model, device, device_map)
        t = build_task(spec, m, n, seed)
        with progress_bar("logit lens") as advance:
            res = logit_lens(
                m,
                t,
                layers=chosen,
                site=site,
                which=which,
                n_boot=n_boot,
                seed=seed,
                max_memory=memory,
                progress=advance,
            )
        console.print(res.summary(), markup=False, highlight=False)
        _save(res, out, overwrite)


def dla_cmd(
    model: LensModel = "zoo:induction",
    task: TaskName = "induction",
    which: Which = "clean",
    n: N = 32,
    seed: Seed = 0,
    n_boot: NBoot = 1000,
    top: Top = 15,
    max_memory: MaxMemory = None,
    device: Device = None,
    device_map: DeviceMap = None,
    out: Out = None,
    overwrite: Overwrite = False,
) -> None:
    """Direct logit attribution: each head's, MLP's and the embedding's direct contribution to
    the answer's logit difference through the unembedding (the final norm's scale frozen),
    with bootstrap confidence intervals; the parts add up to the logit difference."""
    from .. import validate
    from ..representations.lenses import direct_logit_attribution
    from ..results import check_target

    with friendly_errors():
        spec = _prepare(task, n, seed, which, n_boot)
        validate.positive_int("--top", top, fix="the number of table rows to print, e.g. 15")
        memory = max_memory_option(max_memory)
        if out is not None:
            check_target(out, overwrite=overwrite, name="--out")
        m = load_model(model, device, device_map)
        t = build_task(spec, m, n, seed)
        with progress_bar("direct logit attribution") as advance:
            res = direct_logit_attribution(
                m, t, which=which, n_boot=n_boot, seed=seed, max_memory=memory, progress=advance
            )
        console.print(res.summary(k=0), markup=False, highlight=False)
        cols = ["component", "contribution", "contribution_ci_low", "contribution_ci_high"]
        print_frame(
            res.top(top)[cols],
            title=f"top {top} components by |contribution| ({round(res.level * 100)}% CI)",
        )
        _save(res, out, overwrite)


#: The commands of this module, in the order of ``faithlens --help``.
COMMANDS = (("logit-lens", logit_lens_cmd), ("dla", dla_cmd))


def register(app: typer.Typer) -> None:
    for name, command in COMMANDS:
        app.command(name)(command)
