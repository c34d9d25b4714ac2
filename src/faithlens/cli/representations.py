"""``faithlens represent``: reading vectors, steering and faithfulness checks from the shell."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any

import typer

from ..results import check_target, plot_writer
from ._common import (
    Device,
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
    status,
)
from ._resume import resumable

CONCEPTS = ("truth", "honesty", "planted", "decoy")

HELP = (
    "Representation analysis: read a concept's direction per layer from contrast pairs, "
    "steer generation with it, and check whether it is a faithful explanation (causal, "
    "specific, stable, on-distribution, readable, who writes it). Concepts: truth (true vs "
    "false statements), honesty (RepE honest vs untruthful persona), and planted / decoy "
    "(the ground-truth directions of '--model planted')."
)


def parse_layers(spec: str, n_layers: int) -> list[int]:
    """``all``, ``A-B`` (inclusive), or a comma-separated list (negative counts from the end)."""
    from ..errors import InputError

    s = spec.strip().lower()
    if s == "all":
        return list(range(n_layers))
    out: list[int] = []
    try:
        for part in (p.strip() for p in s.split(",")):
            rng = re.fullmatch(r"(\d+)\s*-\s*(\d+)", part)
            if rng:
                out += list(range(int(rng.group(1)), int(rng.group(2)) + 1))
            elif part:
                out.append(int(part))
    except ValueError as e:
        raise InputError(f"cannot read layers {spec!r}: use 'all', '10-16' or '8,12,16'") from e
    if not out:
        raise InputError(f"no layers in {spec!r}")
    bad = [x for x in out if not -n_layers <= x < n_layers]
    if bad:
        raise InputError(f"layers {bad} out of range for a model with {n_layers} layers")
    return sorted({x % n_layers for x in out})


def _coefs(spec: str) -> list[float]:
    from ..errors import InputError

    try:
        vals = [float(x) for x in spec.split(",") if x.strip()]
    except ValueError as e:
        raise InputError(f"cannot read coefficients {spec!r}: use e.g. '-1,1'") from e
    if not vals:
        raise InputError("give at least one coefficient")
    bad = [v for v in vals if not math.isfinite(v)]
    if bad:
        raise InputError(f"--coef={spec!r}: coefficients must be finite numbers, not {bad}")
    return vals


def _check_position(position: str) -> None:
    from ..errors import InputError

    p = position.strip()
    if p in ("last", "mean"):
        return
    if p.lstrip("-").isdigit() and int(p) <= 0:
        return
    raise InputError(
        f"--position={position!r}: use 'last', 'mean' or an offset <= 0 from the last token"
    )


def _check_layers_syntax(spec: str) -> None:
    """Check the --layers syntax before the model is loaded (its range needs the model)."""
    from ..errors import InputError

    s = spec.strip().lower()
    if s == "all":
        return
    parts = [p.strip() for p in s.split(",") if p.strip()]
    ok = bool(parts) and all(re.fullmatch(r"\d+\s*-\s*\d+|-?\d+", p) for p in parts)
    if not ok:
        raise InputError(f"--layers={spec!r}: use 'all', '10-16' or '8,12,16'")
    for p in parts:
        rng = re.fullmatch(r"(\d+)\s*-\s*(\d+)", p)
        if rng and int(rng.group(1)) > int(rng.group(2)):
            raise InputError(f"--layers={spec!r}: the range {p} is empty; write it low-high")


def _check_common(
    concept: str,
    method: str,
    device: str | None,
    device_map: str | None,
    seed: int,
    n_boot: int,
    n_pairs: int | None,
    pairs_option: str,
) -> None:
    """The options every ``represent`` command shares, checked before the model is loaded."""
    from .. import validate as V
    from ..representations.reading import METHODS

    V.choice("--concept", concept, CONCEPTS)
    V.choice("--method", method, METHODS)
    V.nonnegative_int("--seed", seed)
    V.n_boot(n_boot, "--n-boot")
    if n_pairs is not None:
        V.min_examples(pairs_option, n_pairs, what="a train/test split of contrast pairs")
    if device is not None:
        V.device(device, "--device")
    device_map_option(device_map, device)


def _setup(
    model: str, concept: str, device: str | None, device_map: str | None, seed: int
) -> tuple[Any, Any]:
    """(model, planted ground truth or None)."""
    from ..errors import InputError

    if concept not in CONCEPTS:
        raise InputError(f"unknown concept {concept!r}; choose from {list(CONCEPTS)}")
    if model == "planted":
        from ..representations import planted_model

        if device_map is not None:
            raise InputError("--device-map needs a loaded model, not '--model planted'")

        pm = planted_model(seed)
        if device:
            pm.model.to(device)
        return pm.model, pm
    if concept in ("planted", "decoy"):
        raise InputError(f"concept {concept!r} exists only on '--model planted'")
    return load_model(model, device, device_map), None


def _pairs(m: Any, pm: Any, concept: str, n: int | None, seed: int) -> Any:
    from ..errors import InputError
    from ..representations import honesty_pairs, truth_pairs

    if pm is not None:
        if concept not in ("planted", "decoy"):
            raise InputError("'--model planted' has the concepts 'planted' and 'decoy'")
        k = n or 64
        return pm.pairs(k, seed) if concept == "planted" else pm.decoy_pairs(k, seed)
    if concept == "truth":
        return truth_pairs(n=n, seed=seed)
    return honesty_pairs(
        m,
        n=n,
        seed=seed,
        chat=m.tokenizer is not None and bool(getattr(m.tokenizer, "chat_template", None)),
    )


def _behaviour(m: Any, pm: Any, n: int, seed: int) -> Any:
    from ..representations import fact_completion

    if pm is not None:
        return pm.behaviour(n, seed)
    chat = m.tokenizer is not None and bool(getattr(m.tokenizer, "chat_template", None))
    return fact_completion(m, n=n, seed=seed + 1, chat=chat)


def _read(
    m: Any,
    pm: Any,
    concept: str,
    method: str,
    layers: str,
    n_pairs: int | None,
    n_stability: int,
    n_boot: int,
    seed: int,
    position: str,
    max_memory: int | None = None,
    checkpoint: Path | None = None,
) -> Any:
    from ..representations import read

    pairs = _pairs(m, pm, concept, n_pairs, seed)
    ls = parse_layers(layers, m.n_layers)
    pos: str | int = int(position) if position.lstrip("-").isdigit() else position
    with progress_bar(f"activations of {len(pairs)} pairs") as advance:
        return read(
            m,
            pairs,
            method=method,
            layers=ls,
            position=pos,
            n_stability=n_stability,
            n_boot=n_boot,
            seed=seed,
            progress=advance,
            max_memory=max_memory,
            checkpoint=checkpoint,
        ), pairs


# ------------------------------------------------------------------ options of every command

ModelName = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="Model name (smollm2, a local folder...) or 'planted' (the synthetic ground truth).",
    ),
]
Concept = Annotated[str, typer.Option("--concept", "-c", help="truth | honesty | planted | decoy.")]
Method = Annotated[str, typer.Option("--method", help="pca | mean_diff | logistic | random.")]
Seed = Annotated[
    int, typer.Option("--seed", help="Seed for splits, bootstraps and random directions.")
]
NBoot = Annotated[
    int, typer.Option("--n-boot", help="Bootstrap resamples for confidence intervals.")
]
Out = Annotated[Path | None, typer.Option("--out", "-o", help="Folder for the result and plot.")]

# ------------------------------------------------------------------ options of some commands

ReadLayers = Annotated[str, typer.Option("--layers", "-l", help="all, 10-16 or 8,12,16.")]
SteerLayers = Annotated[str, typer.Option("--layers", "-l", help="Layers to steer at.")]
Pairs = Annotated[int | None, typer.Option("--n", help="Contrast pairs (default: all shipped).")]
Position = Annotated[str, typer.Option("--position", help="last | mean | offset <= 0.")]
NStability = Annotated[int, typer.Option("--n-stability", help="Bootstrap refits (0: skip).")]
Coefs = Annotated[
    str,
    typer.Option("--coef", help="Coefficients in units of the pair separation, e.g. '-1,1'."),
]
When = Annotated[
    str,
    typer.Option(
        "--when",
        help="all (prompt + every generated token) | prompt (one-shot) | generated.",
    ),
]
Prompts = Annotated[int, typer.Option("--n", help="Behaviour prompts.")]
NPairs = Annotated[int | None, typer.Option("--n-pairs", help="Contrast pairs to read from.")]
SteerMetric = Annotated[str, typer.Option("--metric", help="margin | rate (judged generations).")]
MaxNewTokens = Annotated[int, typer.Option("--max-new-tokens", help="Tokens to generate.")]
Show = Annotated[int, typer.Option("--show", help="Generations to print per condition.")]
Coef = Annotated[float, typer.Option("--coef", help="Steering size (pair separations).")]
Prompt = Annotated[str, typer.Option("--prompt", help="Steer all prompt tokens or the last.")]
NRandom = Annotated[int, typer.Option("--n-random", help="Random directions (specificity).")]
Checks = Annotated[
    str,
    typer.Option(
        "--checks",
        help="all, or a comma list of causal, specific, stable, on_distribution, readable, "
        "writers, persistence.",
    ),
]
Tokens = Annotated[int, typer.Option("--tokens", help="Tokens for persistence.")]
ReportOut = Annotated[
    Path | None, typer.Option("--out", "-o", help="Folder for the report and plot.")
]


def read_cmd(
    model: ModelName = "smollm2",
    concept: Concept = "truth",
    method: Method = "pca",
    layers: ReadLayers = "all",
    n: Pairs = None,
    position: Position = "last",
    n_stability: NStability = 50,
    n_boot: NBoot = 1000,
    seed: Seed = 0,
    max_memory: MaxMemory = None,
    device: Device = None,
    device_map: DeviceMap = None,
    out: Out = None,
    overwrite: Overwrite = False,
) -> None:
    """Read the concept's direction per layer: held-out accuracy, AUROC and stability, with CIs."""
    from .. import validate as V

    with friendly_errors():
        # every option is checked before the model is loaded
        _check_common(concept, method, device, device_map, seed, n_boot, n, "--n")
        V.nonnegative_int("--n-stability", n_stability, fix="0 skips the stability estimate")
        _check_position(position)
        _check_layers_syntax(layers)
        memory = max_memory_option(max_memory)
        if out is not None:
            check_target(out, overwrite=overwrite, name="--out")
        m, pm = _setup(model, concept, device, device_map, seed)
        record: dict[str, Any] = {
            "model": model,
            "concept": concept,
            "method": method,
            "layers": layers,
            "n": n,
        }
        record |= {"position": position, "n_stability": n_stability, "n_boot": n_boot}
        record |= {"seed": seed, "max_memory": max_memory, "device": device}
        # a run saving to --out keeps each finished layer's fit beside it (resumable)
        with resumable(out, "represent read", record) as partial:
            res, _ = partial.run(
                "reading",
                lambda ck: _read(
                    m,
                    pm,
                    concept,
                    method,
                    layers,
                    n,
                    n_stability,
                    n_boot,
                    seed,
                    position,
                    memory,
                    ck,
                ),
            )
            _print_reading(res)
            if out is not None:
                save_result(
                    res,
                    out,
                    overwrite=overwrite,
                    extras={"reading.png": plot_writer(res, 150)},
                    message=f"wrote {out}/result.json, table.parquet, arrays.npz, reading.png",
                )


def _print_reading(res: Any) -> None:
    """``represent read``'s table: each layer's accuracy, AUROC and stability."""
    console.print(res.summary().split("\n")[0])
    cols = ["layer", "accuracy", "accuracy_ci_low", "accuracy_ci_high", "auroc"]
    cols += ["auroc_ci_low", "auroc_ci_high", "stability"]
    print_frame(res.to_frame()[cols], title=f"reading '{res.concept}' per layer", max_rows=64)
    console.print(f"best layer: {res.best_layer()}")


def steer_cmd(
    model: ModelName = "smollm2",
    concept: Concept = "truth",
    method: Method = "pca",
    layers: SteerLayers = "10-16",
    coef: Coefs = "-1,1",
    when: When = "all",
    n: Prompts = 16,
    n_pairs: NPairs = None,
    metric: SteerMetric = "margin",
    max_new_tokens: MaxNewTokens = 8,
    show: Show = 4,
    n_boot: NBoot = 1000,
    seed: Seed = 0,
    device: Device = None,
    device_map: DeviceMap = None,
    out: Out = None,
    overwrite: Overwrite = False,
) -> None:
    """Steer with the concept's reading vector and measure the behaviour against no steering."""
    from .. import validate as V
    from ..representations import compare

    with friendly_errors():
        # every option is checked before the model is loaded
        _check_common(concept, method, device, device_map, seed, n_boot, n_pairs, "--n-pairs")
        V.min_examples("--n", n, what="an effect with a confidence interval")
        V.positive_int("--max-new-tokens", max_new_tokens, fix="generate at least one token")
        V.nonnegative_int("--show", show)
        V.choice("--when", when, ("all", "prompt", "generated"))
        V.choice("--metric", metric, ("margin", "rate"))
        _check_layers_syntax(layers)
        cs = _coefs(coef)
        if out is not None:
            check_target(out, overwrite=overwrite, name="--out")
        m, pm = _setup(model, concept, device, device_map, seed)
        ls = parse_layers(layers, m.n_layers)
        beh = _behaviour(m, pm, n, seed)
        record: dict[str, Any] = {
            "model": model,
            "concept": concept,
            "method": method,
            "layers": ls,
        }
        record |= {"n_pairs": n_pairs, "seed": seed, "device": device, "coef": cs, "when": when}
        record |= {"n": n, "metric": metric, "max_new_tokens": max_new_tokens, "n_boot": n_boot}
        # the reading's per-layer fits are kept beside --out (resumable); the steering reruns
        with resumable(out, "represent steer", record) as partial:
            res, _ = partial.run(
                "reading",
                lambda ck: _read(
                    m,
                    pm,
                    concept,
                    method,
                    ",".join(map(str, ls)),
                    n_pairs,
                    0,
                    200,
                    seed,
                    "last",
                    checkpoint=ck,
                ),
            )
            conds = [res.steering(ls, c, when=when) for c in cs]
            with progress_bar(f"behaviour under {len(conds)} conditions") as advance:
                eff = compare(
                    m,
                    beh,
                    conds,
                    coefs=cs,
                    metric=metric,
                    n_boot=n_boot,
                    seed=seed,
                    progress=advance,
                    max_new_tokens=max_new_tokens,
                )
            console.print(eff.summary().split("\n")[0])
            print_frame(
                eff.to_frame()[["condition", "mean", "effect", "effect_ci_low", "effect_ci_high"]],
                title=f"effect on '{beh.name}' ({metric})",
            )
            if show > 0:
                _show_generations(m, beh, conds, show, max_new_tokens)
            if out is not None:
                save_result(
                    eff,
                    out,
                    overwrite=overwrite,
                    extras={"steering.png": plot_writer(eff, 150)},
                    message=f"wrote {out}/result.json, table.parquet, steering.png",
                )


def _show_generations(m: Any, beh: Any, conds: list[Any], show: int, max_new_tokens: int) -> None:
    """The first ``show`` behaviour prompts' generations, unsteered and under each condition."""
    rows = list(range(min(show, len(beh))))
    sub = beh.subset(rows)
    for label, st in [("unsteered", None), *[(c.label, c) for c in conds]]:
        gens = sub.generate(m, st, max_new_tokens=max_new_tokens)
        labels = sub.labels(gens)
        console.print(f"[bold]{label}[/]")
        for i, (t, lab) in enumerate(zip(gens.texts, labels)):
            console.print(
                f"  [{lab}] ...{str(sub.prompts[i])[-30:]!r} -> {t!r}",
                highlight=False,
                markup=False,
            )


def check_cmd(
    model: ModelName = "smollm2",
    concept: Concept = "truth",
    method: Method = "pca",
    layers: SteerLayers = "10-16",
    coef: Coef = 1.0,
    prompt: Prompt = "all",
    n: Prompts = 24,
    n_pairs: NPairs = None,
    n_random: NRandom = 19,
    checks: Checks = "all",
    persistence_tokens: Tokens = 12,
    n_boot: NBoot = 1000,
    seed: Seed = 0,
    max_memory: MaxMemory = None,
    device: Device = None,
    device_map: DeviceMap = None,
    out: ReportOut = None,
    overwrite: Overwrite = False,
) -> None:
    """Every faithfulness check of the concept's representation, with its evidence.

    Time: SmolLM2 over layers 10-16 takes more than 6 minutes on a 2-core CPU (fewer layers
    or --n-random go faster; too few random directions weaken the verdict and say so)."""
    from .. import validate as V
    from ..representations import faithfulness

    with friendly_errors():
        # every option is checked before the model is loaded
        _check_common(concept, method, device, device_map, seed, n_boot, n_pairs, "--n-pairs")
        V.positive_float("--coef", coef, fix="steering size in pair separations, e.g. 1.0")
        V.choice("--prompt", prompt, ("all", "last"))
        V.min_examples("--n", n, what="an effect with a confidence interval")
        V.nonnegative_int("--n-random", n_random)
        V.positive_int("--tokens", persistence_tokens, fix="generate at least one token")
        _check_layers_syntax(layers)
        which = _check_names(checks)
        memory = max_memory_option(max_memory)
        if out is not None:
            check_target(out, overwrite=overwrite, name="--out")
        m, pm = _setup(model, concept, device, device_map, seed)
        ls = parse_layers(layers, m.n_layers)
        beh = _behaviour(m, pm, n, seed)
        record: dict[str, Any] = {
            "model": model,
            "concept": concept,
            "method": method,
            "n_pairs": n_pairs,
        }
        record |= {"seed": seed, "max_memory": max_memory, "device": device, "layers": ls}
        record |= {"coef": coef, "prompt": prompt, "n": n, "n_random": n_random, "checks": which}
        record |= {"persistence_tokens": persistence_tokens, "n_boot": n_boot}
        # the reading's per-layer fits are kept beside --out (resumable); the checks rerun
        with resumable(out, "represent check", record) as partial:
            res, pairs = partial.run(
                "reading",
                lambda ck: _read(
                    m, pm, concept, method, "all", n_pairs, 0, 200, seed, "last", memory, ck
                ),
            )
            natural = pm.natural_prompts(64, seed) if pm is not None else None
            with status("checking...") as spinner:
                rep = faithfulness(
                    m,
                    beh,
                    res,
                    layers=ls,
                    coef=coef,
                    prompt=prompt,
                    pairs=pairs,
                    checks=which,
                    n_random=n_random,
                    natural=natural,
                    persistence_tokens=persistence_tokens,
                    n_boot=n_boot,
                    seed=seed,
                    on_check=lambda s: spinner.update(f"checking: {s}..."),
                    max_memory=memory,
                )
            console.print(rep.summary(), highlight=False, markup=False)
            if out is not None:
                save_result(
                    rep,
                    out,
                    overwrite=overwrite,
                    extras={"report.png": plot_writer(rep, 150)},
                    message=f"wrote {out}/result.json, table.parquet, frames/, report.png",
                )


def _check_names(checks: str) -> list[str]:
    """``--checks``: 'all' or a comma list of the faithfulness checks' names."""
    from ..errors import InputError
    from ..representations import CHECKS

    which = list(CHECKS) if checks == "all" else [c.strip() for c in checks.split(",")]
    unknown = [c for c in which if c not in CHECKS]
    if unknown or not which:
        raise InputError(
            f"--checks={checks!r}: unknown checks {unknown}; use 'all' or a comma list "
            f"of {', '.join(CHECKS)}"
        )
    return which


#: The commands of ``faithlens represent``, in the order of its ``--help``.
COMMANDS = (("read", read_cmd), ("steer", steer_cmd), ("check", check_cmd))


def register(app: typer.Typer) -> None:
    represent_app = typer.Typer(help=HELP, no_args_is_help=True)
    for name, command in COMMANDS:
        represent_app.command(name)(command)
    app.add_typer(represent_app, name="represent")
