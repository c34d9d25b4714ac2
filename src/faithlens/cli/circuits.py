"""``faithlens circuit``: score every edge of a model on a task, draw the faithfulness curve
(CPR / CMD) and measure the chosen circuit's faithfulness, from the shell."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ._common import (
    Device,
    MaxMemory,
    NBoot,
    Overwrite,
    TaskName,
    build_task,
    console,
    friendly_errors,
    load_model,
    max_memory_option,
    print_frame,
    progress_bar,
    save_result,
)
from .patching import check_task_options

METHODS = ("exact", "eap", "eap-ig")

CircuitModel = Annotated[
    str,
    typer.Option(
        "--model", "-m", help="Model name (smollm2, zoo:NAME) or local folder; pre-LN transformer."
    ),
]
Method = Annotated[
    str, typer.Option("--method", help="Edge scorer: exact (edge patching), eap or eap-ig.")
]
TopK = Annotated[int, typer.Option("--top-k", "-k", help="Edges in the chosen circuit.")]
Steps = Annotated[int, typer.Option("--steps", help="Integration steps of eap-ig.")]
N = Annotated[int, typer.Option("--n", help="Number of task examples.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed for the task and the bootstrap.")]
Top = Annotated[int, typer.Option("--top", help="Rows of the printed edge table.")]
Scrub = Annotated[
    bool,
    typer.Option(
        "--scrub",
        help="Also causal-scrub the top-k circuit (circuit.to_hypothesis(): its edges important, "
        "everything else resampled from other examples) and write scrub/.",
    ),
]
Out = Annotated[
    Path | None,
    typer.Option(
        "--out",
        "-o",
        help="Folder for the result folders scores/ (EdgeScores), curve/ (FaithfulnessCurve), "
        "circuit/ (CircuitFaithfulness of the top-k circuit) and, with --scrub, scrub/ "
        "(ScrubResult), each with its plot.",
    ),
]


def _check(method: str, top_k: int, steps: int, n_boot: int, top: int) -> None:
    from .. import validate

    validate.choice("--method", method, METHODS)
    validate.positive_int("--top-k", top_k, fix="the number of edges to keep, e.g. 20")
    validate.positive_int("--steps", steps, fix="the number of integration steps, e.g. 5")
    validate.n_boot(n_boot, "--n-boot")
    validate.positive_int("--top", top, fix="the number of table rows to print, e.g. 15")


def _score(m: Any, t: Any, method: str, steps: int, n_boot: int, seed: int, memory: Any) -> Any:
    from .. import circuits

    opts = {"n_boot": n_boot, "seed": seed, "max_memory": memory}
    with progress_bar(f"{method} edge scores") as advance:
        if method == "exact":
            return circuits.exact(m, t, progress=advance, **opts)
        if method == "eap":
            return circuits.eap(m, t, progress=advance, **opts)
        return circuits.eap_ig(m, t, steps=steps, progress=advance, **opts)


def circuit_cmd(
    model: CircuitModel = "zoo:induction",
    task: TaskName = "induction",
    method: Method = "eap-ig",
    top_k: TopK = 20,
    steps: Steps = 5,
    n: N = 32,
    seed: Seed = 0,
    n_boot: NBoot = 1000,
    top: Top = 15,
    scrub: Scrub = False,
    max_memory: MaxMemory = None,
    device: Device = None,
    out: Out = None,
    overwrite: Overwrite = False,
) -> None:
    """Circuit discovery: score every edge (exact / eap / eap-ig), the faithfulness curve over
    MIB's circuit sizes with CPR and CMD, and the top-k circuit's faithfulness, each with
    bootstrap confidence intervals; with --scrub, the circuit's causal-scrubbing score."""
    from .. import circuits, validate
    from ..results import check_target, plot_writer

    with friendly_errors():
        spec = check_task_options(task, n, seed)
        _check(method, top_k, steps, n_boot, top)
        memory = max_memory_option(max_memory)
        if out is not None:
            for name in ("scores", "curve", "circuit", *(("scrub",) if scrub else ())):
                check_target(out / name, overwrite=overwrite, name="--out")
        m = load_model(model, device)
        t = build_task(spec, m, n, seed)
        scores = _score(m, t, method, steps, n_boot, seed, memory)
        if top_k > len(scores.edge):
            raise validate.fail(
                "--top-k", top_k, f"is more than the model's {len(scores.edge)} edges", "keep fewer"
            )
        console.print(scores.summary(k=0))
        print_frame(
            scores.top(top)[["edge", "score", "score_ci_low", "score_ci_high"]],
            title=f"top {top} edges by |score| ({round(scores.level * 100)}% CI)",
        )
        with progress_bar("faithfulness curve") as advance:
            curve = circuits.faithfulness_curve(
                m, t, scores, n_boot=n_boot, seed=seed, max_memory=memory, progress=advance
            )
        console.print(curve.summary())
        circuit = scores.top_k(top_k)
        chosen = circuits.faithfulness(m, t, circuit, n_boot=n_boot, seed=seed, max_memory=memory)
        console.print(chosen.summary())
        results: list[tuple[str, Any]] = [("scores", scores), ("curve", curve), ("circuit", chosen)]
        if scrub:
            results.append(("scrub", _scrub(m, t, circuit, n_boot, seed, memory)))
        if out is not None:
            for name, res in results:
                save_result(
                    res, out / name, overwrite=overwrite, extras={"plot.png": plot_writer(res)}
                )
            console.print("wrote " + ", ".join(f"{out}/{name}" for name, _ in results))


def _scrub(m: Any, t: Any, circuit: Any, n_boot: int, seed: int, memory: Any) -> Any:
    """The circuit's causal-scrubbing result (every task example a reference once)."""
    from ..scrubbing import scrub

    hypothesis = circuit.to_hypothesis()
    with progress_bar("causal scrubbing") as advance:
        res = scrub(
            m,
            hypothesis=hypothesis,
            data=t,
            seed=seed,
            n_boot=n_boot,
            max_memory=memory,
            progress=advance,
        )
    console.print(res.summary())
    return res


#: The commands of this module, in the order of ``faithlens --help``.
COMMANDS = (("circuit", circuit_cmd),)


def register(app: typer.Typer) -> None:
    for name, command in COMMANDS:
        app.command(name)(command)
