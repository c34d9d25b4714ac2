"""``faithlens audit``: divergence audits (:mod:`faithlens.divergence`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from ._common import (
    comma_list,
    console,
    friendly_errors,
    load_model,
    print_frame,
    progress_bar,
)


def _split(text: str | None) -> list[str]:
    return [s.strip() for s in (text or "").split(",") if s.strip()]


def register(app: typer.Typer) -> None:
    @app.command("audit")
    def audit_cmd(
        site: str = typer.Option(
            ...,
            "--site",
            "-s",
            help="Where to compare activations (e.g. mlp_post.9): the "
            "intervened site or any site downstream of it.",
        ),
        model: str = typer.Option(
            "smollm2", "--model", "-m", help="Model name (smollm2, minilm, zoo:NAME) or folder."
        ),
        task: str = typer.Option("ioi", "--task", "-t", help="Registered task (ioi, ...)."),
        n: int = typer.Option(32, "--n", help="Number of task examples."),
        seed: int = typer.Option(0, "--seed", help="Seed for the task, splits and bootstrap."),
        patch: str = typer.Option(
            None,
            "--patch",
            help="Comma-separated sites to patch from the clean run into the "
            "corrupted run, together (one condition).",
        ),
        top_heads: int = typer.Option(
            0,
            "--top-heads",
            help="Patch every head with fl.patch first, then audit the top K "
            "heads patched together (one condition).",
        ),
        sweep_layers: str = typer.Option(
            None, "--sweep-layers", help="With --top-heads: only sweep heads of these layers."
        ),
        steer: str = typer.Option(
            None,
            "--steer",
            help="A site for mean-difference steering: mean(clean) - "
            "mean(corrupt) at the last token, added to the corrupted prompts.",
        ),
        zero: str = typer.Option(
            None, "--zero", help="Comma-separated sites to zero-ablate (one condition)."
        ),
        das_dir: Path = typer.Option(
            None, "--das", help="A saved `faithlens das` result: its interchange from clean."
        ),
        metrics: str = typer.Option(
            "default", "--metrics", help="default | all | comma-separated metric names."
        ),
        positions: str = typer.Option(
            "metric", "--positions", "-p", help="metric (the task's answer position) | last | all."
        ),
        threshold: float = typer.Option(
            0.0, "--threshold", help="A downstream unit is active above this value."
        ),
        splits: int = typer.Option(5, "--splits", help="Random natural/natural splits."),
        device: str = typer.Option(None, "--device", help="cpu, cuda, ... (default: cpu)."),
        out: Path = typer.Option(
            None, "--out", "-o", help="Folder for result.json, table.parquet and audit.png."
        ),
        overwrite: bool = typer.Option(
            False, "--overwrite", help="Replace an existing --out folder (default: refuse)."
        ),
    ) -> None:
        """How far do interventions push activations off the natural distribution? Every
        divergence against a natural-vs-natural baseline, split into the reader's null space
        (harmless) and row space (potentially pernicious), and dormant-unit recruitment."""
        from .. import Add, Patch, Site, Zero, patching, tasks, validate
        from ..das import DASResult
        from ..divergence.audit import (
            audit,
            cannot_reach,
            check_reachable,
            mean_difference_vector,
        )
        from ..divergence.compare import resolve_metrics
        from ..errors import InputError
        from ..results import Result, check_target, plot_writer
        from .patching import check_task_options

        with friendly_errors():
            if out is not None:
                check_target(out, overwrite=overwrite, name="--out")
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
            if not (patch or top_heads or steer or zero or das_dir):
                raise InputError(
                    "nothing to audit: give --patch, --top-heads, --steer, --zero or --das"
                )
            metric_arg: Any = metrics if metrics in ("default", "all") else _split(metrics)
            resolve_metrics(metric_arg)
            sweep = comma_list(sweep_layers, int, "--sweep-layers") if sweep_layers else None
            m = load_model(model, device)
            m.site_info(site)
            # The audited site must be reachable from the interventions: checked before any work.
            known = {
                f"--patch {patch}": _split(patch),
                f"--zero {zero}": _split(zero),
                f"--steer {steer}": _split(steer),
            }
            check_reachable(m, site, {k: v for k, v in known.items() if v})
            if top_heads:
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
            t = tasks.build(task, m, n=n, seed=seed)
            conds: dict[str, list[Any]] = {}
            if patch:
                conds[f"patch {patch}"] = [Patch(s, source="clean") for s in _split(patch)]
            if top_heads:
                sites: Any = "head"
                if sweep is not None:
                    sites = [f"head.{L}.{h}" for L in sweep for h in range(m.n_heads)]
                with progress_bar("patching heads") as advance:
                    eff = patching.patch(m, t, sites, n_boot=200, seed=seed, progress=advance)
                ivs = eff.interventions(top=top_heads)
                top_names = [iv.site_spec.name for iv in ivs]
                console.print(f"top {top_heads} heads: {top_names}")
                check_reachable(m, site, {f"patch top-{top_heads} heads": top_names})
                conds[f"patch top-{top_heads} heads"] = list(ivs)
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
            with console.status("auditing..."):
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
            console.print(res.summary())
            cols = [
                "condition",
                "space",
                "metric",
                "intervened",
                "intervened_se",
                "baseline",
                "baseline_se",
                "ratio",
            ]
            print_frame(res.table[cols], title=f"divergence at {site}", max_rows=60)
            if out is not None:
                res.save(out, overwrite=overwrite, extras={"audit.png": plot_writer(res, 150)})
                console.print(f"wrote {out}/result.json, table.parquet, audit.png")
