"""``faithlens das``: distributed alignment search (:mod:`faithlens.das`)."""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import (
    console,
    friendly_errors,
    load_model,
    progress_bar,
)


def register(app: typer.Typer) -> None:
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
                    progress=advance,
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
