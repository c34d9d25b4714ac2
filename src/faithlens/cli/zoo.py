"""``faithlens zoo``: list, describe and retrain the zoo models."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import typer

from ._common import console, friendly_errors, print_frame


def register(app: typer.Typer) -> None:
    zoo_app = typer.Typer(
        help="faithlens' own small models (paren balancer, induction): list, model cards, "
        "retraining.",
        no_args_is_help=True,
    )
    app.add_typer(zoo_app, name="zoo")

    @zoo_app.command("list")
    def list_models() -> None:
        """List the zoo models shipped with faithlens (load them as zoo:NAME)."""
        from .. import zoo

        with friendly_errors():
            rows: list[dict[str, Any]] = []
            shipped = {e.name: e for e in zoo.entries()}
            for name in zoo.available():
                e = shipped.get(name)
                if e is None:
                    rows.append({"model": f"zoo:{name}", "architecture": "(weights not shipped)"})
                    continue
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
                rows.append(
                    {
                        "model": f"zoo:{name}",
                        "architecture": arch,
                        "params": f"{e.n_params:,}",
                        "KB": f"{e.size_bytes / 1024:.0f}",
                        "metric": key,
                        "value": "" if value is None else f"{value:.4g}",
                        "train min": f"{float(e.info.get('seconds', 0.0)) / 60:.1f}",
                    }
                )
            print_frame(pd.DataFrame(rows).fillna(""), "faithlens zoo")

    @zoo_app.command("card")
    def show_card(
        name: str = typer.Argument(..., help="Zoo model name: paren or induction."),
    ) -> None:
        """Print the model card of a zoo model (data, recipe, accuracy, training time)."""
        from rich.markdown import Markdown

        from .. import zoo

        with friendly_errors():
            console.print(Markdown(zoo.card(name)))

    @zoo_app.command("train")
    def train_model(
        name: str = typer.Argument(..., help="Zoo model to train: paren or induction."),
        out: str = typer.Option(
            None,
            "--out",
            "-o",
            help="Folder for the checkpoint, weights, card and run record (default runs/zoo/NAME).",
        ),
        seed: int = typer.Option(0, "--seed", help="Initialisation and data seed."),
        steps: int = typer.Option(
            None, "--steps", help="Override the recipe's number of steps (changes the schedule)."
        ),
        resume: bool = typer.Option(
            True, "--resume/--no-resume", help="Continue from OUT/checkpoint.pt if it exists."
        ),
        until: int = typer.Option(
            None, "--until", help="Stop (checkpointed) after this many steps; rerun to resume."
        ),
        threads: int = typer.Option(
            1, "--threads", help="torch CPU threads (1 is fastest on a busy small machine)."
        ),
        device: str = typer.Option("cpu", "--device", help="Device to train on."),
        ship: bool = typer.Option(
            False,
            "--ship",
            help="Maintainers: copy the weights and card into the faithlens package "
            "(zoo/weights, zoo/cards) when training succeeds and meets its targets.",
        ),
    ) -> None:
        """Train a zoo model from scratch (seeded, checkpointed, resumable)."""
        import dataclasses

        from rich.progress import (
            BarColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        from .. import validate as V
        from .. import zoo
        from ..errors import InputError
        from ..validate import output_dir

        with friendly_errors():
            # every option is checked before anything is built, written or trained
            recipe = zoo.recipe(name)
            V.nonnegative_int("--seed", seed)
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
            with Progress(
                TextColumn(f"[bold]zoo:{name}[/]"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} steps"),
                TextColumn("{task.fields[info]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=console,
                transient=False,
            ) as bar:
                task = bar.add_task("train", total=recipe.schedule.steps, info="")

                def on_step(step: int, total: int, numbers: dict[str, float]) -> None:
                    info = "  ".join(f"{k} {v:.4g}" for k, v in numbers.items())
                    bar.update(task, completed=step, info=info)

                run = zoo.train(
                    recipe,
                    folder,
                    seed=seed,
                    resume=resume,
                    until=until,
                    device=device,
                    threads=threads,
                    on_step=on_step,
                )
            console.print(run.summary(), highlight=False)
            if not run.complete:
                console.print(f"stopped at step {run.steps}; run the same command to resume")
                return
            console.print(f"weights: {folder / f'{name}.safetensors'}")
            console.print(f"model card: {folder / f'{name}.md'}")
            if ship:
                if run.problems:
                    raise InputError(
                        f"not shipping zoo:{name}: it misses its targets ({'; '.join(run.problems)})"
                    )
                shutil.copyfile(folder / f"{name}.safetensors", zoo.weights_path(name))
                shutil.copyfile(folder / f"{name}.md", zoo.card_path(name))
                console.print(f"shipped into {zoo.weights_path(name).parent.parent}")
