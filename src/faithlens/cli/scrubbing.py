"""``faithlens scrub HYPOTHESIS.py --model M --n 4000 --out DIR``: causal scrubbing from a shell.

The hypothesis file is ordinary Python, imported (so run) with the user's rights, also under
``--dry-run``: only trusted files. It defines, at module level:

- ``hypothesis``: a ``faithlens.scrubbing.Hypothesis``, or a function ``hypothesis(model)``;
- ``data``: the pool (a ``ScrubData``, a ``Task`` or a dict of columns), or a function
  ``data(model, n, seed)``;
- optionally ``behaviour`` (or ``behaviour(model)``), ``baselines`` (a list or dict),
  ``graph(model)`` (a component graph), ``features`` (the adversary's feature library, a dict),
  and ``model()`` (used when ``--model`` is not given).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import typer

from ..errors import InputError
from ..results import check_target
from ._common import console, err_console, friendly_errors, load_model, print_frame


def load_hypothesis_file(path: Path) -> ModuleType:
    """Import a hypothesis file as a module (errors name the file)."""
    if not path.exists():
        raise InputError(f"hypothesis file {str(path)!r} does not exist")
    if path.suffix != ".py":
        raise InputError(f"hypothesis file {str(path)!r} must be a Python file (.py)")
    name = f"faithlens_hypothesis_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover
        raise InputError(f"cannot import {str(path)!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"{path.name} failed to import: {type(e).__name__}: {e}") from e
    for needed in ("hypothesis", "data"):
        if not hasattr(module, needed):
            raise InputError(
                f"{path.name} defines no {needed!r}; a hypothesis file defines `hypothesis` and "
                "`data` (see `faithlens scrub --help`)"
            )
    return module


def _resolve(module: ModuleType, name: str, *args: Any) -> Any:
    obj = getattr(module, name, None)
    if obj is None:
        return None
    from ..scrubbing import Hypothesis, ScrubBehaviour

    if isinstance(obj, (Hypothesis, ScrubBehaviour)) or not callable(obj):
        return obj
    try:
        return obj(*args)
    except InputError:
        raise
    except Exception as e:
        raise InputError(
            f"{name}(...) in the hypothesis file failed: {type(e).__name__}: {e}"
        ) from e


def register(app: typer.Typer) -> None:
    @app.command("scrub")
    def scrub_cmd(
        hypothesis_file: Annotated[
            Path,
            typer.Argument(
                help="A Python file defining `hypothesis` and `data` (and optionally "
                "`behaviour`, `baselines`, `graph`, `features`, `model`). It is Python code, run "
                "with your rights (also with --dry-run): only give files you trust."
            ),
        ],
        model: str = typer.Option(
            None,
            "--model",
            "-m",
            help="Model name (smollm2, minilm, zoo:NAME) or local folder; default: the file's "
            "model().",
        ),
        n: int = typer.Option(
            None,
            "--n",
            "-n",
            help="Reference examples, drawn from the pool with replacement (default: every row).",
        ),
        out: Annotated[
            Path | None, typer.Option("--out", "-o", help="Folder to save the result in.")
        ] = None,
        overwrite: bool = typer.Option(
            False, "--overwrite", help="Replace an existing --out folder (default: refuse)."
        ),
        seed: int = typer.Option(0, "--seed", help="Seed of every draw."),
        baseline: Annotated[
            list[str] | None,
            typer.Option(
                "--baseline",
                "-b",
                help="Baselines for % loss recovered: 'random' or names from the file's "
                "`baselines`.",
            ),
        ] = None,
        batch_size: int = typer.Option(None, "--batch-size", help="Reference rows per chunk."),
        device: str = typer.Option(None, "--device", help="Device for the model (cpu, cuda)."),
        dry_run: bool = typer.Option(
            False,
            "--dry-run",
            help="Plan, validate and sample, print every copy and the datum each input slot "
            "receives, and stop before any forward pass.",
        ),
        adversary: bool = typer.Option(
            False,
            "--adversary",
            help="Also run adversarial validation (refinements from the file's `features`).",
        ),
        budget: int = typer.Option(32, "--budget", help="Adversary: evaluations allowed."),
        steps: int = typer.Option(1, "--steps", help="Adversary: greedy refinement steps."),
    ) -> None:
        """Test an interpretability hypothesis by causal scrubbing and print the result table
        (scrubbed expectation, baselines, % loss recovered with confidence intervals).

        WARNING: HYPOTHESIS_FILE is Python code and is run with your rights, also with
        --dry-run (the file must run to define the hypothesis). Only give files you trust."""
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        from .. import scrubbing as sc
        from .. import validate as V
        from ..scrubbing.evaluate import check_scrub_args

        with friendly_errors():
            # every option is checked before the file is imported or the model loaded
            check_scrub_args(n=n, seed=seed, batch_size=batch_size, cli=True)
            V.positive_int("--budget", budget, fix="allow at least one evaluation, e.g. 32")
            V.positive_int("--steps", steps, fix="take at least one refinement step")
            if device is not None:
                V.device(device, "--device")
            if out is not None and not dry_run:
                check_target(out, overwrite=overwrite, name="--out")
            module = load_hypothesis_file(hypothesis_file)
            if model is not None:
                m = load_model(model, device=device)
            elif callable(getattr(module, "model", None)):
                m = module.model()
                if device is not None:
                    m.to(device)
            else:
                raise InputError("give --model, or define model() in the hypothesis file")
            h = _resolve(module, "hypothesis", m)
            if not isinstance(h, sc.Hypothesis):
                raise InputError(
                    "`hypothesis` must be (or return) a faithlens.scrubbing.Hypothesis"
                )
            data = _resolve(module, "data", m, n, seed)
            beh = _resolve(module, "behaviour", m)
            graph = _resolve(module, "graph", m)
            file_baselines = _resolve(module, "baselines", m)
            if baseline:
                pool: dict[str, Any] = (
                    dict(file_baselines) if isinstance(file_baselines, dict) else {}
                )
                chosen: dict[str, Any] = {}
                for b in baseline:
                    if b in pool:
                        chosen[b] = pool[b]
                    elif b == "random":
                        chosen["random"] = "random"
                    else:
                        raise InputError(
                            f"unknown baseline {b!r}: use 'random' or one of {sorted(pool)}"
                        )
                baselines: Any = chosen
            else:
                baselines = file_baselines if file_baselines is not None else ("random",)
            prep = sc.prepare(
                m, h, data, n, behaviour=beh, graph=graph, baselines=baselines, seed=seed
            )
            if dry_run:
                console.print(prep.describe(), highlight=False, markup=False)
                return
            from ..scrubbing.evaluate import check_rewrites, enough_references, finish

            enough_references(prep, n)
            check_rewrites(prep)
            with Progress(
                TextColumn("[bold]scrubbing[/] {task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} examples"),
                TimeRemainingColumn(),
                console=err_console,
                transient=True,
            ) as bar:
                task = bar.add_task(h.name, total=len(prep.ref))
                result = finish(
                    prep,
                    batch_size=batch_size,
                    seed=seed,
                    progress=lambda done, total: bar.update(task, completed=done),
                )
            console.print(
                f"[bold]{h.name}[/] on {result.n} examples ({m.name}); behaviour "
                f"{result.behaviour}",
                highlight=False,
            )
            print_frame(result.to_frame(), title="causal scrubbing", float_fmt="{:.4f}")
            if result.kl.size:
                console.print(f"mean KL(model || scrubbed): {float(result.kl.mean()):.4f}")
            for w in result.warnings:
                console.print(f"[yellow]warning:[/] {w}", highlight=False)
            if out is not None:
                result.save(out, overwrite=overwrite)
                console.print(f"saved to {out}")
            if adversary:
                feats = _resolve(module, "features", m) or {}
                adv = sc.adversary(
                    m,
                    data,
                    h,
                    n,
                    behaviour=beh,
                    graph=graph,
                    features=feats,
                    budget=budget,
                    steps=steps,
                    seed=seed,
                    batch_size=batch_size,
                )
                console.print(adv.summary(), highlight=False, markup=False)
                if out is not None:
                    adv.save(out / "adversary")


__all__ = ["load_hypothesis_file", "register"]
