"""``faithlens audit``: divergence audits (:mod:`faithlens.divergence`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ._common import (
    DeviceMap,
    Overwrite,
    TaskName,
    build_task,
    comma_list,
    console,
    friendly_errors,
    load_model,
    progress_bar,
    save_result,
    status,
)


def _split(text: str | None) -> list[str]:
    return [s.strip() for s in (text or "").split(",") if s.strip()]


Site = Annotated[
    str,
    typer.Option(
        "--site",
        "-s",
        help="Where to compare activations (e.g. mlp_post.9): the "
        "intervened site or any site downstream of it.",
    ),
]
ModelName = Annotated[
    str,
    typer.Option("--model", "-m", help="Model name (smollm2, minilm, zoo:NAME) or folder."),
]
N = Annotated[int, typer.Option("--n", help="Number of task examples.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed for the task, splits and bootstrap.")]
PatchSites = Annotated[
    str | None,
    typer.Option(
        "--patch",
        help="Comma-separated sites to patch from the clean run into the "
        "corrupted run, together (one condition).",
    ),
]
TopHeads = Annotated[
    int,
    typer.Option(
        "--top-heads",
        help="Patch every head with fl.patch first, then audit the top K "
        "heads patched together (one condition).",
    ),
]
SweepLayers = Annotated[
    str | None,
    typer.Option("--sweep-layers", help="With --top-heads: only sweep heads of these layers."),
]
Steer = Annotated[
    str | None,
    typer.Option(
        "--steer",
        help="A site for mean-difference steering: mean(clean) - "
        "mean(corrupt) at the last token, added to the corrupted prompts.",
    ),
]
ZeroSites = Annotated[
    str | None,
    typer.Option("--zero", help="Comma-separated sites to zero-ablate (one condition)."),
]
DasDir = Annotated[
    Path | None,
    typer.Option("--das", help="A saved `faithlens das` result: its interchange from clean."),
]
Metrics = Annotated[
    str, typer.Option("--metrics", help="default | all | comma-separated metric names.")
]
Positions = Annotated[
    str,
    typer.Option("--positions", "-p", help="metric (the task's answer position) | last | all."),
]
Threshold = Annotated[
    float, typer.Option("--threshold", help="A downstream unit is active above this value.")
]
Splits = Annotated[int, typer.Option("--splits", help="Random natural/natural splits.")]
Device = Annotated[str | None, typer.Option("--device", help="cpu, cuda, ... (default: cpu).")]
Out = Annotated[
    Path | None,
    typer.Option("--out", "-o", help="Folder for result.json, table.parquet and audit.png."),
]


def audit_cmd(
    site: Site,
    model: ModelName = "smollm2",
    task: TaskName = "ioi",
    n: N = 32,
    seed: Seed = 0,
    patch: PatchSites = None,
    top_heads: TopHeads = 0,
    sweep_layers: SweepLayers = None,
    steer: Steer = None,
    zero: ZeroSites = None,
    das_dir: DasDir = None,
    metrics: Metrics = "default",
    positions: Positions = "metric",
    threshold: Threshold = 0.0,
    splits: Splits = 5,
    device: Device = None,
    device_map: DeviceMap = None,
    out: Out = None,
    overwrite: Overwrite = False,
) -> None:
    """How far do interventions push activations off the natural distribution? Every
    divergence against a natural-vs-natural baseline, split into the reader's null space
    (harmless) and row space (potentially pernicious), and dormant-unit recruitment.

    Time: SmolLM2 at --n 48 takes a minute or two on a 2-core CPU."""
    from ..divergence.audit import audit, check_reachable
    from ..divergence.compare import NO_RATIO
    from ..results import check_target, plot_writer

    with friendly_errors():
        if out is not None:
            check_target(out, overwrite=overwrite, name="--out")
        _check_options(task, n, seed, top_heads, threshold, splits, positions)
        if not (patch or top_heads or steer or zero or das_dir):
            from ..errors import InputError

            raise InputError(
                "nothing to audit: give --patch, --top-heads, --steer, --zero or --das"
            )
        metric_arg = _metrics(metrics)
        sweep = comma_list(sweep_layers, int, "--sweep-layers") if sweep_layers else None
        m = load_model(model, device, device_map)
        m.site_info(site)
        # The audited site must be reachable from the interventions: checked before any work.
        known = {
            f"--patch {patch}": _split(patch),
            f"--zero {zero}": _split(zero),
            f"--steer {steer}": _split(steer),
        }
        check_reachable(m, site, {k: v for k, v in known.items() if v})
        if top_heads:
            _check_top_heads(m, site, top_heads, sweep)
        t = build_task(task, m, n, seed)
        conds = _conditions(m, t, site, seed, patch, top_heads, sweep, steer, zero, das_dir)
        with status("auditing..."):
            res = audit(
                m,
                t,
                conds,
                site,
                base="corrupt",
                positions=positions,
                metrics=metric_arg,
                threshold=threshold,
                n_splits=splits,
                seed=seed,
            )
        # the summary has every estimate with its interval, the excess and the ratio, once (the
        # full table is in table.parquet and report.html with --out)
        console.print(res.summary(), markup=False, highlight=False, soft_wrap=True)
        if (res.table["baseline"] <= 0).any():
            console.print(f"note: {NO_RATIO}", markup=False, highlight=False)
        if out is not None:
            save_result(
                res,
                out,
                overwrite=overwrite,
                extras={"audit.png": plot_writer(res, 150)},
                message=f"wrote {out}/result.json, table.parquet, audit.png",
            )


def _check_options(
    task: str, n: int, seed: int, top_heads: int, threshold: float, splits: int, positions: str
) -> None:
    """The options that need no model."""
    from .. import validate
    from .patching import check_task_options

    check_task_options(task, n, seed)
    validate.nonnegative_int("--top-heads", top_heads, fix="e.g. --top-heads 3")
    validate.finite_float("--threshold", threshold, fix="e.g. --threshold 0")
    if validate.positive_int("--splits", splits, fix="use e.g. 5") < 2:
        raise validate.fail(
            "--splits",
            splits,
            "a standard error over splits needs at least 2",
            "use e.g. 5",
        )
    validate.choice("--positions", positions, ("metric", "last", "all"))


def _metrics(metrics: str) -> Any:
    """``--metrics``: 'default', 'all' or a comma list of known metric names."""
    from ..divergence.compare import resolve_metrics

    metric_arg: Any = metrics if metrics in ("default", "all") else _split(metrics)
    resolve_metrics(metric_arg)
    return metric_arg


def _check_top_heads(m: Any, site: str, top_heads: int, sweep: list[int] | None) -> None:
    """``--top-heads`` and ``--sweep-layers`` against the model, before the sweep: the layers
    exist, there are enough heads, and some swept head can reach the audited site."""
    from .. import validate
    from ..divergence.audit import cannot_reach, check_reachable

    layers = sweep if sweep is not None else list(range(m.n_layers))
    for L in layers:
        validate.int_in_range(
            "--sweep-layers",
            L,
            0,
            m.n_layers - 1,
            fix=f"layers are 0..{m.n_layers - 1}",
        )
    heads = [f"head.{L}.{h}" for L in layers for h in range(m.n_heads)]
    if top_heads > len(heads):
        raise validate.fail(
            "--top-heads",
            top_heads,
            f"the sweep has only {len(heads)} heads",
            f"use at most {len(heads)}",
        )
    if all(cannot_reach(m, site, h) for h in heads):
        check_reachable(m, site, {f"--top-heads {top_heads}": heads})


def _conditions(
    m: Any,
    t: Any,
    site: str,
    seed: int,
    patch: str | None,
    top_heads: int,
    sweep: list[int] | None,
    steer: str | None,
    zero: str | None,
    das_dir: Path | None,
) -> dict[str, list[Any]]:
    """The audited conditions, by name: each a list of interventions applied together."""
    from .. import Add, Patch, Site, Zero
    from ..das import DASResult
    from ..divergence.audit import mean_difference_vector
    from ..errors import InputError
    from ..results import Result

    conds: dict[str, list[Any]] = {}
    if patch:
        conds[f"patch {patch}"] = [Patch(s, source="clean") for s in _split(patch)]
    if top_heads:
        conds[f"patch top-{top_heads} heads"] = _top_heads(m, t, site, seed, top_heads, sweep)
    if steer:
        delta = mean_difference_vector(m, t.clean, t.corrupt, steer, positions=t.positions)
        conds[f"steer {steer}"] = [Add(Site(steer, positions="last"), vector=delta)]
    if zero:
        conds[f"zero {zero}"] = [Zero(s) for s in _split(zero)]
    if das_dir is not None:
        d = Result.load(das_dir)
        if not isinstance(d, DASResult):
            raise InputError(f"{das_dir} holds a {type(d).__name__}, not a DAS result")
        conds[f"DAS {d.site}"] = [d.intervention("clean")]
    return conds


def _top_heads(
    m: Any, t: Any, site: str, seed: int, top_heads: int, sweep: list[int] | None
) -> list[Any]:
    """Patch every (swept) head and return the top ``top_heads`` heads' interventions."""
    from .. import patching
    from ..divergence.audit import check_reachable

    sites: Any = "head"
    if sweep is not None:
        sites = [f"head.{L}.{h}" for L in sweep for h in range(m.n_heads)]
    with progress_bar("patching heads") as advance:
        eff = patching.patch(m, t, sites, n_boot=200, seed=seed, progress=advance)
    ivs = eff.interventions(top=top_heads)
    top_names = [iv.site_spec.name for iv in ivs]
    console.print(f"top {top_heads} heads: {top_names}")
    check_reachable(m, site, {f"patch top-{top_heads} heads": top_names})
    return list(ivs)


def register(app: typer.Typer) -> None:
    app.command("audit")(audit_cmd)
