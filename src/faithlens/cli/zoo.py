"""``faithlens zoo``: list, describe and retrain the zoo models."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer

from ._common import console, friendly_errors, print_frame, progress_bar

HELP = "faithlens' own small models (paren balancer, induction): list, model cards, retraining."


def list_models() -> None:
    """List the zoo models shipped with faithlens (load them as zoo:NAME)."""
    from .. import zoo

    with friendly_errors():
        shipped = {e.name: e for e in zoo.entries()}
        rows = [_row(name, shipped.get(name)) for name in zoo.available()]
        rows += [_tracr_row(name) for name in zoo.tracr.shipped()]
        print_frame(pd.DataFrame(rows).fillna(""), "faithlens zoo")


def _row(name: str, e: Any) -> dict[str, Any]:
    """One row of ``faithlens zoo list``: architecture, size, headline metric, training time."""
    if e is None:
        return {"model": f"zoo:{name}", "architecture": "(weights not shipped)"}
    c = e.config
    arch = (
        f"{c.n_layers}L {c.n_heads}H d{c.d_model} "
        f"{'attn-only' if c.attn_only else f'mlp{c.d_mlp}'} "
        f"{'causal' if c.causal else 'bidir'}"
    )
    metrics = e.info.get("metrics", {})
    key = "accuracy" if "accuracy" in metrics else "loss_copy"
    m = metrics.get(key, {})
    value = m.get("estimate") if isinstance(m, dict) else None
    return {
        "model": f"zoo:{name}",
        "architecture": arch,
        "params": f"{e.n_params:,}",
        "KB": f"{e.size_bytes / 1024:.0f}",
        "metric": key,
        "value": "" if value is None else f"{value:.4g}",
        "train min": f"{float(e.info.get('seconds', 0.0)) / 60:.1f}",
    }


def _tracr_row(program: str) -> dict[str, Any]:
    """One row of ``faithlens zoo list`` for a compiled tracr program (its true circuit's size
    in place of a trained metric)."""
    from ..zoo import read_weights, tracr

    path = tracr.weights_file(program)
    c, state, _ = read_weights(path)
    return {
        "model": f"zoo:{tracr.zoo_name(program)}",
        "architecture": f"{c.n_layers}L {c.n_heads}H d{c.d_model} mlp{c.d_mlp} no-norm bidir",
        "params": f"{sum(int(t.numel()) for t in state.values()):,}",
        "KB": f"{path.stat().st_size / 1024:.0f}",
        "metric": "true circuit edges",
        "value": str(len(tracr.tracr_circuit(program))),
        "train min": "compiled",
    }


def show_card(
    name: Annotated[str, typer.Argument(help="Zoo model name: paren or induction.")],
) -> None:
    """Print the model card of a zoo model (data, recipe, accuracy, training time)."""
    from rich.markdown import Markdown

    from .. import zoo

    with friendly_errors():
        console.print(Markdown(zoo.card(name)))


TrainName = Annotated[str, typer.Argument(help="Zoo model to train: paren or induction.")]
TrainOut = Annotated[
    str | None,
    typer.Option(
        "--out",
        "-o",
        help="Folder for the checkpoint, weights, card and run record (default runs/zoo/NAME).",
    ),
]
Seed = Annotated[int, typer.Option("--seed", help="Initialisation and data seed.")]
Seeds = Annotated[
    str | None,
    typer.Option(
        "--seeds",
        help="Several seeds, comma-separated (e.g. 0,1,2): one training per seed into "
        "OUT/seed_S, each a work item of the executor (in parallel on Ray workers with "
        "faithlens --executor ray ...); on the CPU. Replaces --seed.",
    ),
]
Steps = Annotated[
    int | None,
    typer.Option("--steps", help="Override the recipe's number of steps (changes the schedule)."),
]
Resume = Annotated[
    bool,
    typer.Option("--resume/--no-resume", help="Continue from OUT/checkpoint.pt if it exists."),
]
Until = Annotated[
    int | None,
    typer.Option("--until", help="Stop (checkpointed) after this many steps; rerun to resume."),
]
Threads = Annotated[
    int,
    typer.Option("--threads", help="torch CPU threads (1 is fastest on a busy small machine)."),
]
Device = Annotated[str, typer.Option("--device", help="Device to train on.")]
Ship = Annotated[
    bool,
    typer.Option(
        "--ship",
        help="Maintainers: copy the weights and card into the faithlens package "
        "(zoo/weights, zoo/cards) when training succeeds and meets its targets.",
    ),
]


def train_model(
    name: TrainName,
    out: TrainOut = None,
    seed: Seed = 0,
    steps: Steps = None,
    resume: Resume = True,
    until: Until = None,
    threads: Threads = 1,
    device: Device = "cpu",
    ship: Ship = False,
    seeds: Seeds = None,
) -> None:
    """Train a zoo model from scratch (seeded, checkpointed, resumable); --seeds trains one
    model per seed, fanned out over the executor's workers."""
    import dataclasses

    from .. import validate as V
    from .. import zoo
    from ..validate import output_dir

    with friendly_errors():
        # every option is checked before anything is built, written or trained
        recipe = zoo.recipe(name)
        V.nonnegative_int("--seed", seed)
        seed_list = _seed_list(seeds, seed, ship, device)
        if steps is not None:
            V.positive_int("--steps", steps, fix="train for at least one step")
        if until is not None:
            V.nonnegative_int("--until", until, fix="stop after N >= 0 steps")
        V.positive_int("--threads", threads, fix="use at least one CPU thread")
        V.device(device, "--device")
        if steps is not None:
            recipe.schedule = dataclasses.replace(recipe.schedule, steps=steps)
        folder = Path(out) if out is not None else Path("runs") / "zoo" / name
        output_dir(folder, "--out")  # a training folder is resumed, not replaced
        if seed_list is not None:
            _train_seeds(name, recipe, folder, seed_list, resume, until, threads)
            return
        run = _train(name, recipe, folder, seed, resume, until, device, threads)
        console.print(run.summary(), highlight=False)
        if not run.complete:
            console.print(f"stopped at step {run.steps}; run the same command to resume")
            return
        console.print(f"weights: {folder / f'{name}.safetensors'}")
        console.print(f"model card: {folder / f'{name}.md'}")
        if ship:
            _ship(name, folder, run)


def _seed_list(seeds: str | None, seed: int, ship: bool, device: str) -> list[int] | None:
    """``--seeds`` as a list (None without it), refused with ``--seed``, ``--ship`` or a
    device other than the CPU (each seed trains on its worker's CPU)."""
    from .. import validate as V
    from ._common import comma_list

    if seeds is None:
        return None
    out = comma_list(seeds, int, "--seeds")
    if not out:
        raise V.fail("--seeds", seeds, "names no seed", "e.g. --seeds 0,1,2")
    for s in out:
        V.nonnegative_int("--seeds", s, fix="seeds are ints >= 0, e.g. --seeds 0,1,2")
    if len(set(out)) != len(out):
        raise V.fail("--seeds", seeds, "repeats a seed", "list each seed once")
    if seed != 0:
        raise V.fail("--seed", seed, "cannot go with --seeds", "give the seeds in --seeds")
    if ship:
        raise V.fail("--ship", ship, "cannot go with --seeds", "train one seed to ship")
    if device != "cpu":
        raise V.fail(
            "--device", device, "cannot go with --seeds (each seed trains on a CPU)", "leave it out"
        )
    return out


def _train_seeds(
    name: str,
    recipe: Any,
    folder: Path,
    seeds: list[int],
    resume: bool,
    until: int | None,
    threads: int,
) -> None:
    """``--seeds``: :func:`faithlens.zoo.seeds.train_seeds` on the executor in force, a
    progress bar over the finished trainings, and one summary per seed."""
    from ..zoo.seeds import train_seeds

    with progress_bar(f"zoo:{name} seeds", stream=console) as advance:
        runs = train_seeds(
            recipe,
            folder,
            seeds,
            resume=resume,
            until=until,
            threads=threads,
            progress=lambda done, total: advance(done, total),
        )
    for run in runs:
        where = folder / f"seed_{run.seed}"
        console.print(f"seed {run.seed}: {where}", highlight=False)
        console.print(run.summary(), highlight=False)
        if not run.complete:
            console.print(f"stopped at step {run.steps}; run the same command to resume")


def _train(
    name: str,
    recipe: Any,
    folder: Path,
    seed: int,
    resume: bool,
    until: int | None,
    device: str,
    threads: int,
) -> Any:
    """Train under a progress bar that shows each step's numbers (plain lines off a
    terminal)."""
    from .. import zoo

    with progress_bar(f"zoo:{name} steps", stream=console) as advance:

        def on_step(step: int, total: int, numbers: dict[str, float]) -> None:
            advance(step, total, "  ".join(f"{k} {v:.4g}" for k, v in numbers.items()))

        return zoo.train(
            recipe,
            folder,
            seed=seed,
            resume=resume,
            until=until,
            device=device,
            threads=threads,
            on_step=on_step,
        )


def _ship(name: str, folder: Path, run: Any) -> None:
    """``--ship``: copy the weights and card into the package, if the run met its targets."""
    from .. import zoo
    from ..errors import InputError

    if run.problems:
        raise InputError(
            f"not shipping zoo:{name}: it misses its targets ({'; '.join(run.problems)})"
        )
    shutil.copyfile(folder / f"{name}.safetensors", zoo.weights_path(name))
    shutil.copyfile(folder / f"{name}.md", zoo.card_path(name))
    console.print(f"shipped into {zoo.weights_path(name).parent.parent}")


TracrPrograms = Annotated[
    list[str] | None,
    typer.Argument(
        help="tracr programs to compile (default all: reverse, hist, sort_unique, sort, "
        "frac_prevs, count, pair_balance, shuffle_dyck)."
    ),
]
TracrOut = Annotated[
    Path | None,
    typer.Option(
        "--out",
        "-o",
        help="Folder for tracr_NAME.safetensors and NAME.json (default: into the package, "
        "zoo/weights and zoo/tracr).",
    ),
]


def compile_tracr(
    programs: TracrPrograms = None,
    out: TracrOut = None,
    seed: Seed = 0,
) -> None:
    """Compile tracr's library programs into zoo models with their true circuits (needs the
    optional extra faithlens[tracr]; seeded: the parity inputs and the patching task)."""
    from .. import validate as V
    from ..zoo import tracr
    from ..zoo.tracr_compile import compile_tracr as run
    from ..zoo.tracr_compile import require_tracr

    with friendly_errors():
        V.nonnegative_int("--seed", seed)
        for p in programs or []:
            tracr.program_of(p)
        require_tracr()
        for path in run(programs or None, out=out, seed=seed):
            console.print(f"wrote {path}")


#: The commands of ``faithlens zoo``, in the order of its ``--help``.
COMMANDS = (
    ("list", list_models),
    ("card", show_card),
    ("train", train_model),
    ("compile-tracr", compile_tracr),
)


def register(app: typer.Typer) -> None:
    zoo_app = typer.Typer(help=HELP, no_args_is_help=True)
    app.add_typer(zoo_app, name="zoo")
    for name, command in COMMANDS:
        zoo_app.command(name)(command)
