"""``faithlens audit`` and ``faithlens das``: divergence audits and alignment search."""

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

    @app.command("das")
    def das_cmd(
        site: str = typer.Option(
            None,
            "--site",
            "-s",
            help="Site to align (e.g. resid_pre.9); the synthetic task "
            "uses its classifier input 'h'.",
        ),
        model: str = typer.Option("smollm2", "--model", "-m", help="Model name or folder."),
        task: str = typer.Option("ioi", "--task", "-t", help="Registered task (ioi, ...)."),
        synthetic: str = typer.Option(
            None,
            "--synthetic",
            help="Use the synthetic DAS task instead: og_holdouts, "
            "og_noholdouts, inner_square or xor (trains on task 1, tests on task 2).",
        ),
        n: int = typer.Option(32, "--n", help="Number of task examples (LM tasks)."),
        n_per_class: int = typer.Option(100, "--n-per-class", help="Synthetic points per class."),
        classifier_epochs: int = typer.Option(
            1000, "--classifier-epochs", help="Synthetic: epochs for the frozen classifier."
        ),
        positions: str = typer.Option(
            "last", "--positions", "-p", help="LM positions to align: last | all."
        ),
        method: str = typer.Option(
            "rotation", "--method", help="rotation (DAS) | boundless | linear | identity."
        ),
        dims: int = typer.Option(1, "--dims", help="Aligned dimensions carrying the variable."),
        loss: str = typer.Option("iia", "--loss", help="iia | cl | iia+cl (CL needs --synthetic)."),
        cl_weight: float = typer.Option(100.0, "--cl-weight", help="Weight epsilon of L_CL."),
        cl_form: str = typer.Option("modified", "--cl-form", help="modified | mas."),
        epochs: int = typer.Option(601, "--epochs", help="Training epochs."),
        lr: float = typer.Option(0.01, "--lr", help="Adam learning rate."),
        batch_size: int = typer.Option(None, "--batch-size", help="Default: full batch."),
        select: str = typer.Option("auto", "--select", help="auto | iia | emd | last."),
        eval_every: int = typer.Option(10, "--eval-every", help="EMD evaluation interval."),
        seed: int = typer.Option(0, "--seed", help="Seed for data, initialisation, batches."),
        checkpoint: Path = typer.Option(
            None, "--checkpoint", help="Checkpoint folder; rerunning the command resumes."
        ),
        device: str = typer.Option(None, "--device", help="cpu, cuda, ... (default: cpu)."),
        out: Path = typer.Option(
            None, "--out", "-o", help="Folder for the result (with the alignment) and das.png."
        ),
        overwrite: bool = typer.Option(
            False, "--overwrite", help="Replace an existing --out folder (default: refuse)."
        ),
    ) -> None:
        """Distributed alignment search at a site, reporting IIA (with a confidence interval),
        the EMD of the intervened activations, and optionally the Counterfactual Latent loss."""
        from .. import Site, tasks
        from .. import validate as V
        from ..das import das
        from ..das.train import check_das_args
        from ..errors import InputError
        from ..results import check_target, plot_writer
        from ..tasks.interchange import InterchangeData
        from ..tasks.synthetic_das import (
            DIVISIONS,
            EXTRA_DIMS,
            FEATURE_DIMS,
            SITE,
            synthetic_das,
        )

        with friendly_errors():
            # every option is checked before the task is built or the model loaded
            check_das_args(
                dims=dims,
                method=method,
                loss=loss,
                cl_form=cl_form,
                cl_weight=cl_weight,
                epochs=epochs,
                lr=lr,
                batch_size=batch_size,
                select=select,
                eval_every=eval_every,
                seed=seed,
                cli=True,
            )
            if synthetic is not None:
                V.choice("--synthetic", synthetic, sorted(DIVISIONS))
                V.min_examples("--n-per-class", n_per_class, what="the synthetic task")
                V.positive_int("--classifier-epochs", classifier_epochs, fix="e.g. 1000")
                width = 2 + EXTRA_DIMS
                V.int_in_range(
                    "--dims", dims, 1, width, fix=f"the synthetic site has {width} units"
                )
            else:
                if site is None:
                    raise InputError("--site is required for a language-model task")
                V.choice("--task", task, sorted(tasks.REGISTRY))
                V.min_examples("--n", n, what="an IIA with a confidence interval")
                V.choice("--positions", positions, ("last", "all"))
                if loss != "iia":
                    raise V.fail(
                        "--loss",
                        loss,
                        "the CL loss needs natural counterfactual latents",
                        "use --loss iia, or --synthetic",
                    )
                if select == "emd":
                    raise V.fail(
                        "--select", select, "needs feature coordinates", "use it with --synthetic"
                    )
            if device is not None:
                V.device(device, "--device")
            if out is not None:
                check_target(out, overwrite=overwrite, name="--out")
            ood = None
            emd_dims: list[int] | None = None
            if synthetic is not None:
                with console.status(f"building the synthetic {synthetic} task..."):
                    t1, t2 = synthetic_das(
                        synthetic,
                        seed,
                        n_per_class=n_per_class,
                        classifier_epochs=classifier_epochs,
                    )
                m, data, where = t1.model, t1.data, Site(site or SITE)
                emd_dims = list(FEATURE_DIMS)
                ood = t2
            else:
                assert site is not None
                m = load_model(model, device)
                t = tasks.build(task, m, n=n, seed=seed)
                data = InterchangeData.from_task(t)
                where = Site(site, positions="last" if positions == "last" else None)
            with progress_bar("training") as advance:
                res = das(
                    m,
                    data,
                    where,
                    dims=dims,
                    method=method,
                    loss=loss,
                    cl_weight=cl_weight,
                    cl_form=cl_form,
                    epochs=epochs,
                    lr=lr,
                    batch_size=batch_size,
                    select=select,
                    eval_every=eval_every,
                    emd_dims=emd_dims,
                    seed=seed,
                    checkpoint_dir=checkpoint,
                    progress=lambda e, _row: advance(e + 1, epochs),
                )
            console.print(res.summary())
            if ood is not None:
                ev = res.evaluate(ood.model, ood.data, seed=seed)
                console.print(
                    f"  OOD (task 2): IIA {ev.iia:.4f} ± {ev.iia_se:.4f}, EMD (feature dims) "
                    f"{ev.emd_features:.4g}, EMD (all) {ev.emd:.4g}"
                )
            if out is not None:
                res.save(
                    out,
                    overwrite=overwrite,
                    extras={"alignment": res.alignment.save, "das.png": plot_writer(res, 150)},
                )
                console.print(f"wrote {out}/result.json, table.parquet, alignment/, das.png")
