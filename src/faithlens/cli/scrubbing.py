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

import hashlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any

import typer

from ..errors import InputError
from ..results import check_target
from ._common import (
    DeviceMap,
    MaxMemory,
    Overwrite,
    console,
    device_map_option,
    friendly_errors,
    load_model,
    max_memory_option,
    print_frame,
    progress_bar,
    save_result,
)
from ._resume import resumable

HypothesisFile = Annotated[
    Path,
    typer.Argument(
        help="A Python file defining `hypothesis` and `data` (and optionally "
        "`behaviour`, `baselines`, `graph`, `features`, `model`). It is Python code, run "
        "with your rights (also with --dry-run): only give files you trust."
    ),
]
ModelName = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Model name (smollm2, minilm, zoo:NAME) or local folder; default: the file's model().",
    ),
]
N = Annotated[
    int | None,
    typer.Option(
        "--n",
        "-n",
        help="Reference examples, drawn from the pool with replacement (default: every row).",
    ),
]
Out = Annotated[Path | None, typer.Option("--out", "-o", help="Folder to save the result in.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed of every draw.")]
Baselines = Annotated[
    list[str] | None,
    typer.Option(
        "--baseline",
        "-b",
        help="Baselines for % loss recovered: 'random' or names from the file's `baselines`.",
    ),
]
BatchSize = Annotated[
    int | None,
    typer.Option(
        "--batch-size",
        help="Reference rows per chunk (deprecated: use --max-memory).",
    ),
]
Device = Annotated[str | None, typer.Option("--device", help="Device for the model (cpu, cuda).")]
DryRun = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Plan, validate and sample, print every copy and the datum each input slot "
        "receives, and stop before any forward pass.",
    ),
]
Adversary = Annotated[
    bool,
    typer.Option(
        "--adversary",
        help="Also run adversarial validation (refinements from the file's `features`).",
    ),
]
Budget = Annotated[int, typer.Option("--budget", help="Adversary: evaluations allowed.")]
Steps = Annotated[int, typer.Option("--steps", help="Adversary: greedy refinement steps.")]


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


def scrub_cmd(
    hypothesis_file: HypothesisFile,
    model: ModelName = None,
    n: N = None,
    out: Out = None,
    overwrite: Overwrite = False,
    seed: Seed = 0,
    baseline: Baselines = None,
    max_memory: MaxMemory = None,
    batch_size: BatchSize = None,
    device: Device = None,
    device_map: DeviceMap = None,
    dry_run: DryRun = False,
    adversary: Adversary = False,
    budget: Budget = 32,
    steps: Steps = 1,
) -> None:
    """Test an interpretability hypothesis by causal scrubbing and print the result table
    (scrubbed expectation, baselines, % loss recovered with confidence intervals).

    Time: SmolLM2 at --n 100 takes about 5 minutes on a 2-core CPU; a run that has minutes left says about how many once its first steps are done.

    WARNING: HYPOTHESIS_FILE is Python code and is run with your rights, also with
    --dry-run (the file must run to define the hypothesis). Only give files you trust."""
    from .. import scrubbing as sc

    with friendly_errors():
        # every option is checked before the file is imported or the model loaded
        memory = _check_options(n, seed, batch_size, max_memory, budget, steps, device)
        device_map_option(device_map, device)
        if out is not None and not dry_run:
            check_target(out, overwrite=overwrite, name="--out")
        module = load_hypothesis_file(hypothesis_file)
        m = _model(module, model, device, device_map)
        h, data, beh, graph, baselines = _experiment(module, m, n, seed, baseline)
        prep = sc.prepare(m, h, data, n, behaviour=beh, graph=graph, baselines=baselines, seed=seed)
        if dry_run:
            console.print(prep.describe(), highlight=False, markup=False)
            return
        record = {
            "file": str(hypothesis_file.resolve()),
            "file_sha256": hashlib.sha256(hypothesis_file.read_bytes()).hexdigest(),
            "model": model,
            "n": n,
            "seed": seed,
            "baseline": baseline,
            "max_memory": max_memory,
            "batch_size": batch_size,
            "device": device,
            "device_map": device_map,
        }
        # a run saving to --out keeps its finished chunks beside it (resumable)
        with resumable(out, "scrub", record) as partial:
            result = partial.run(
                "scrub", lambda ck: _scrub(prep, h.name, n, seed, batch_size, memory, ck)
            )
            _save(result, out, overwrite)
        _print_result(result, h.name, m.name)
        if out is not None:
            console.print(f"saved to {out} (with plot.png)", markup=False)
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
                max_memory=memory,
            )
            console.print(adv.summary(), highlight=False, markup=False)
            if out is not None:
                save_result(adv, out / "adversary")


def _check_options(
    n: int | None,
    seed: int,
    batch_size: int | None,
    max_memory: str | None,
    budget: int,
    steps: int,
    device: str | None,
) -> int | None:
    """Every option that needs no file or model; returns ``--max-memory`` in bytes."""
    from .. import validate as V
    from ..scrubbing.evaluate import check_scrub_args

    check_scrub_args(n=n, seed=seed, batch_size=batch_size, cli=True)
    memory = max_memory_option(max_memory, old_option="--batch-size", old_value=batch_size)
    V.positive_int("--budget", budget, fix="allow at least one evaluation, e.g. 32")
    V.positive_int("--steps", steps, fix="take at least one refinement step")
    if device is not None:
        V.device(device, "--device")
    return memory


def _model(
    module: ModuleType, model: str | None, device: str | None, device_map: str | None
) -> Any:
    """``--model``, else the hypothesis file's ``model()`` (moved to ``--device``)."""
    if model is not None:
        return load_model(model, device=device, device_map=device_map)
    if device_map is not None:
        raise InputError("--device-map needs --model (a model the file builds is not loaded)")
    if callable(getattr(module, "model", None)):
        m = module.model()
        if device is not None:
            m.to(device)
        return m
    raise InputError("give --model, or define model() in the hypothesis file")


def _experiment(
    module: ModuleType, m: Any, n: int | None, seed: int, baseline: list[str] | None
) -> tuple[Any, Any, Any, Any, Any]:
    """The file's hypothesis, data, behaviour, graph and the chosen baselines."""
    from .. import scrubbing as sc

    h = _resolve(module, "hypothesis", m)
    if not isinstance(h, sc.Hypothesis):
        raise InputError("`hypothesis` must be (or return) a faithlens.scrubbing.Hypothesis")
    data = _resolve(module, "data", m, n, seed)
    beh = _resolve(module, "behaviour", m)
    graph = _resolve(module, "graph", m)
    file_baselines = _resolve(module, "baselines", m)
    return h, data, beh, graph, _baselines(baseline, file_baselines)


def _baselines(baseline: list[str] | None, file_baselines: Any) -> Any:
    """``--baseline`` names ('random' or the file's), else the file's baselines or random."""
    if not baseline:
        return file_baselines if file_baselines is not None else ("random",)
    pool: dict[str, Any] = dict(file_baselines) if isinstance(file_baselines, dict) else {}
    chosen: dict[str, Any] = {}
    for b in baseline:
        if b in pool:
            chosen[b] = pool[b]
        elif b == "random":
            chosen["random"] = "random"
        else:
            raise InputError(f"unknown baseline {b!r}: use 'random' or one of {sorted(pool)}")
    return chosen


def _save(result: Any, out: Path | None, overwrite: bool) -> None:
    """The result and its plot in ``--out`` (when given)."""
    if out is not None:
        from ..results import plot_writer

        save_result(result, out, overwrite=overwrite, extras={"plot.png": plot_writer(result)})


def _scrub(
    prep: Any,
    name: str,
    n: int | None,
    seed: int,
    batch_size: int | None,
    memory: int | None,
    checkpoint: Path | None = None,
) -> Any:
    """Check the prepared experiment, then scrub it under a progress bar (keeping the finished
    chunks in ``checkpoint``)."""
    from ..scrubbing.evaluate import check_rewrites, enough_references, finish

    enough_references(prep, n)
    check_rewrites(prep)
    with progress_bar(f"scrubbing {name}") as advance:
        return finish(
            prep,
            batch_size=batch_size,
            seed=seed,
            progress=advance,
            max_memory=memory,
            checkpoint=checkpoint,
        )


def _print_result(result: Any, name: str, model_name: str) -> None:
    """The headline, the result table, the mean KL and the warnings."""
    console.print(
        f"[bold]{name}[/] on {result.n} examples ({model_name}); behaviour {result.behaviour}",
        highlight=False,
    )
    print_frame(result.to_frame(), title="causal scrubbing", float_fmt="{:.4f}")
    if result.kl.size:
        console.print(f"mean KL(model || scrubbed): {float(result.kl.mean()):.4f}")
    for w in result.warnings:
        console.print(f"[yellow]warning:[/] {w}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command("scrub")(scrub_cmd)


__all__ = ["load_hypothesis_file", "register"]
