"""``faithlens das``: distributed alignment search (:mod:`faithlens.das`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ._common import (
    DeviceMap,
    MaxMemory,
    NBoot,
    Overwrite,
    TaskName,
    build_task,
    console,
    friendly_errors,
    load_model,
    max_memory_option,
    progress_bar,
    save_result,
    status,
    task_option,
)
from ._resume import resumable

SiteName = Annotated[
    str | None,
    typer.Option(
        "--site",
        "-s",
        help="Site to align (e.g. resid_pre.9); the synthetic task uses its classifier input 'h'.",
    ),
]
ModelName = Annotated[str, typer.Option("--model", "-m", help="Model name or folder.")]
Synthetic = Annotated[
    str | None,
    typer.Option(
        "--synthetic",
        help="Use the synthetic DAS task instead: og_holdouts, "
        "og_noholdouts, inner_square or xor (trains on task 1, tests on task 2).",
    ),
]
N = Annotated[int, typer.Option("--n", help="Number of task examples (LM tasks).")]
NPerClass = Annotated[int, typer.Option("--n-per-class", help="Synthetic points per class.")]
ClassifierEpochs = Annotated[
    int,
    typer.Option("--classifier-epochs", help="Synthetic: epochs for the frozen classifier."),
]
Positions = Annotated[
    str, typer.Option("--positions", "-p", help="LM positions to align: last | all.")
]
Method = Annotated[
    str, typer.Option("--method", help="rotation (DAS) | boundless | linear | identity.")
]
Dims = Annotated[int, typer.Option("--dims", help="Aligned dimensions carrying the variable.")]
Loss = Annotated[str, typer.Option("--loss", help="iia | cl | iia+cl (CL needs --synthetic).")]
ClWeight = Annotated[float, typer.Option("--cl-weight", help="Weight epsilon of L_CL.")]
ClForm = Annotated[str, typer.Option("--cl-form", help="modified | mas.")]
Epochs = Annotated[int, typer.Option("--epochs", help="Training epochs.")]
Lr = Annotated[float, typer.Option("--lr", help="Adam learning rate.")]
BatchSize = Annotated[int | None, typer.Option("--batch-size", help="Default: full batch.")]
Select = Annotated[
    str,
    typer.Option(
        "--select",
        help="auto | iia | settled | emd | last (settled: the last epoch whose IIA is within the 95 % interval of the best).",
    ),
]
EvalEvery = Annotated[int, typer.Option("--eval-every", help="EMD evaluation interval.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed for data, initialisation, batches.")]
Checkpoint = Annotated[
    Path | None,
    typer.Option(
        "--checkpoint",
        help="Checkpoint folder; rerunning the command resumes (default with --out: a "
        "hidden .OUT.partial folder beside it, removed once the result is saved).",
    ),
]
CheckpointEvery = Annotated[
    int, typer.Option("--checkpoint-every", help="Save the training state every N epochs.")
]
Device = Annotated[str | None, typer.Option("--device", help="cpu, cuda, ... (default: cpu).")]
Out = Annotated[
    Path | None,
    typer.Option("--out", "-o", help="Folder for the result (with the alignment) and das.png."),
]
DasControls = Annotated[
    str,
    typer.Option(
        "--controls",
        help="Controls reported with the IIA: comma-separated task, random_init, "
        "random_subspace, or all, or none (default random_subspace: no extra training; task and "
        "random_init train the alignment again).",
    ),
]
Draws = Annotated[int, typer.Option("--draws", help="Random subspaces the control averages.")]


def das_cmd(
    site: SiteName = None,
    model: ModelName = "smollm2",
    task: TaskName = "ioi",
    synthetic: Synthetic = None,
    n: N = 32,
    n_per_class: NPerClass = 100,
    classifier_epochs: ClassifierEpochs = 1000,
    positions: Positions = "last",
    method: Method = "rotation",
    dims: Dims = 1,
    loss: Loss = "iia",
    cl_weight: ClWeight = 100.0,
    cl_form: ClForm = "modified",
    epochs: Epochs = 601,
    lr: Lr = 0.01,
    batch_size: BatchSize = None,
    select: Select = "auto",
    eval_every: EvalEvery = 10,
    seed: Seed = 0,
    checkpoint: Checkpoint = None,
    controls: DasControls = "random_subspace",
    draws: Draws = 5,
    checkpoint_every: CheckpointEvery = 100,
    device: Device = None,
    device_map: DeviceMap = None,
    out: Out = None,
    overwrite: Overwrite = False,
) -> None:
    """Distributed alignment search at a site, reporting IIA (with a confidence interval),
    the control IIA and selectivity of each control, the EMD of the intervened activations, and
    optionally the Counterfactual Latent loss.

    Time: the synthetic task takes under a minute; SmolLM2 on IOI (--n 64, 50 epochs) takes
    several minutes on a 2-core CPU; a run that has minutes left says about how many once its first steps are done."""
    from .. import validate as V
    from ..das.result_controls import check_das_controls
    from ..das.train import check_das_args
    from ..results import check_target

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
        ctrl = check_das_controls(
            controls if controls in ("all", "none") else _split_list(controls, "--controls"),
            "--controls",
        )
        V.positive_int("--draws", draws, fix="average over e.g. 5 random subspaces")
        V.positive_int("--checkpoint-every", checkpoint_every, fix="e.g. 100")
        if synthetic is not None:
            _check_synthetic(synthetic, n_per_class, classifier_epochs, dims)
        else:
            _check_language_model(site, task, n, positions, loss, select)
        if device is not None:
            V.device(device, "--device")
        if out is not None:
            check_target(out, overwrite=overwrite, name="--out")
        if synthetic is not None:
            m, data, where, emd_dims, ood = _synthetic(
                synthetic, site, seed, n_per_class, classifier_epochs
            )
        else:
            assert site is not None
            m, data, where = _language_model(
                model, device, device_map, task, n, seed, site, positions
            )
            emd_dims, ood = None, None
        kw: dict[str, Any] = {
            "dims": dims,
            "method": method,
            "loss": loss,
            "cl_weight": cl_weight,
            "cl_form": cl_form,
            "epochs": epochs,
            "lr": lr,
            "batch_size": batch_size,
            "select": select,
            "eval_every": eval_every,
            "emd_dims": emd_dims,
            "seed": seed,
            "checkpoint_every": checkpoint_every,
            "controls": ctrl,
            "draws": draws,
        }
        record: dict[str, Any] = {
            "model": None if synthetic else model,
            "task": task,
            "synthetic": synthetic,
        }
        record |= {"site": site, "n": n, "n_per_class": n_per_class, "positions": positions}
        record |= {"classifier_epochs": classifier_epochs, "device": device, **kw}
        record["device_map"] = device_map
        # without --checkpoint, a run saving to --out keeps its training state beside it
        with resumable(None if checkpoint is not None else out, "das", record) as partial:
            res = partial.run("das", lambda ck: _train(m, data, where, kw, checkpoint or ck))
            if out is not None:
                _save(res, out, overwrite)
        _report(res, ood, seed)


def _train(m: Any, data: Any, where: Any, kw: dict[str, Any], checkpoint: Path | None) -> Any:
    """One alignment search under a progress bar, checkpointed in ``checkpoint``."""
    from ..das import das

    with progress_bar("training") as advance:
        return das(m, data, where, checkpoint_dir=checkpoint, progress=advance, **kw)


def _check_synthetic(synthetic: str, n_per_class: int, classifier_epochs: int, dims: int) -> None:
    """The options of the synthetic task."""
    from .. import validate as V
    from ..tasks.synthetic_das import DIVISIONS, EXTRA_DIMS

    V.choice("--synthetic", synthetic, sorted(DIVISIONS))
    V.min_examples("--n-per-class", n_per_class, what="the synthetic task")
    V.positive_int("--classifier-epochs", classifier_epochs, fix="e.g. 1000")
    width = 2 + EXTRA_DIMS
    V.int_in_range("--dims", dims, 1, width, fix=f"the synthetic site has {width} units")


def _check_language_model(
    site: str | None, task: str, n: int, positions: str, loss: str, select: str
) -> None:
    """The options of a language-model task (no natural latents: no CL loss, no EMD select)."""
    from .. import validate as V
    from ..errors import InputError

    if site is None:
        raise InputError("--site is required for a language-model task")
    V.min_examples("--n", n, what="an IIA with a confidence interval")
    task_option(task, n, 0)
    V.choice("--positions", positions, ("last", "all"))
    if loss != "iia":
        raise V.fail(
            "--loss",
            loss,
            "the CL loss needs natural counterfactual latents",
            "use --loss iia, or --synthetic",
        )
    if select == "emd":
        raise V.fail("--select", select, "needs feature coordinates", "use it with --synthetic")


def _synthetic(
    synthetic: str, site: str | None, seed: int, n_per_class: int, classifier_epochs: int
) -> tuple[Any, Any, Any, list[int], Any]:
    """(model, data, site, EMD feature dims, task 2) of the synthetic task."""
    from .. import Site
    from ..tasks.synthetic_das import FEATURE_DIMS, SITE, synthetic_das

    with status(f"building the synthetic {synthetic} task..."):
        t1, t2 = synthetic_das(
            synthetic,
            seed,
            n_per_class=n_per_class,
            classifier_epochs=classifier_epochs,
        )
    return t1.model, t1.data, Site(site or SITE), list(FEATURE_DIMS), t2


def _language_model(
    model: str,
    device: str | None,
    device_map: str | None,
    task: str,
    n: int,
    seed: int,
    site: str,
    positions: str,
) -> tuple[Any, Any, Any]:
    """(model, interchange data, site) of a registered language-model task."""
    from .. import Site
    from ..tasks.interchange import InterchangeData

    m = load_model(model, device, device_map)
    t = build_task(task, m, n, seed)
    data = InterchangeData.from_task(t)
    return m, data, Site(site, positions="last" if positions == "last" else None)


def _report(res: Any, ood: Any, seed: int) -> None:
    """The summary and task 2's IIA and EMD (synthetic)."""
    console.print(res.summary())
    if ood is not None:
        ev = res.evaluate(ood.model, ood.data, seed=seed)
        console.print(
            f"  OOD (task 2): IIA {ev.iia:.4f} ± {ev.iia_se:.4f}, EMD (feature dims) "
            f"{ev.emd_features:.4g}, EMD (all) {ev.emd:.4g}"
        )


def _save(res: Any, out: Path, overwrite: bool) -> None:
    """The result, its alignment and its plot in ``--out``."""
    from ..results import plot_writer

    save_result(
        res,
        out,
        overwrite=overwrite,
        extras={"alignment": res.alignment.save, "das.png": plot_writer(res, 150)},
        message=f"wrote {out}/result.json, table.parquet, alignment/, das.png",
    )


SweepLayers = Annotated[
    str,
    typer.Option(
        "--layers",
        help="Comma-separated layers (ints name f'{site-kind}.{layer}') or site names; "
        "the synthetic task has one site, h.",
    ),
]
SweepPositions = Annotated[
    str,
    typer.Option(
        "--positions",
        "-p",
        help="Comma-separated positions: ints, last, or all (the whole activation).",
    ),
]
SiteKind = Annotated[str, typer.Option("--site-kind", help="The site an int layer names.")]
Controls = Annotated[
    str,
    typer.Option(
        "--controls", help="Comma-separated: task, random_init, random_subspace (default: all)."
    ),
]
Pairs = Annotated[
    str,
    typer.Option("--pairs", help="changed (pairs whose label changes the base answer) | all."),
]
Level = Annotated[float, typer.Option("--level", help="Confidence level of the intervals.")]


def _split_list(text: str, option: str) -> list[str]:
    from .. import validate as V

    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise V.fail(option, text, "is empty", "give a comma-separated list")
    return items


def _sweep_positions(text: str) -> list[Any]:
    out: list[Any] = []
    for t in _split_list(text, "--positions"):
        out.append(None if t == "all" else "last" if t == "last" else int(t) if t.isdigit() else t)
    return out


def das_sweep_cmd(
    layers: SweepLayers,
    model: ModelName = "smollm2",
    task: TaskName = "ioi",
    synthetic: Synthetic = None,
    n: N = 64,
    n_per_class: NPerClass = 100,
    classifier_epochs: ClassifierEpochs = 1000,
    positions: SweepPositions = "last",
    site_kind: SiteKind = "resid_post",
    method: Method = "rotation",
    dims: Dims = 1,
    controls: Controls = "task,random_init,random_subspace",
    pairs: Pairs = "changed",
    epochs: Epochs = 200,
    lr: Lr = 0.01,
    n_boot: NBoot = 1000,
    level: Level = 0.95,
    seed: Seed = 0,
    max_memory: MaxMemory = None,
    device: Device = None,
    device_map: DeviceMap = None,
    out: Out = None,
    overwrite: Overwrite = False,
) -> None:
    """IIA and selectivity (against a control task, a random-init model and random subspaces)
    of an alignment search at every (layer, position), as heat maps with confidence intervals."""
    from .. import validate as V
    from ..das.selectivity import check_common, check_controls
    from ..results import check_target

    with friendly_errors():
        memory = max_memory_option(max_memory)
        check_common(
            method=method,
            dims=dims,
            eval_fraction=0.5,
            pairs=pairs,
            draws=5,
            n_boot=n_boot,
            level=level,
            seed=seed,
            max_memory=memory,
            progress=None,
        )
        V.positive_int("--epochs", epochs)
        V.positive_float("--lr", lr)
        ctrl = check_controls(_split_list(controls, "--controls"))
        lays: list[Any] = [int(t) if t.isdigit() else t for t in _split_list(layers, "--layers")]
        pos = _sweep_positions(positions)
        if synthetic is not None:
            _check_synthetic(synthetic, n_per_class, classifier_epochs, dims)
        else:
            V.min_examples("--n", n, what="a sweep with confidence intervals")
            task_option(task, n, 0)
        if device is not None:
            V.device(device, "--device")
        if out is not None:
            check_target(out, overwrite=overwrite, name="--out")
        if synthetic is not None:
            m, data, _, _, _ = _synthetic(synthetic, None, seed, n_per_class, classifier_epochs)
        else:
            from ..tasks.interchange import InterchangeData

            m = load_model(model, device, device_map)
            data = InterchangeData.from_task(build_task(task, m, n, seed))
        record: dict[str, Any] = {
            "model": None if synthetic else model,
            "task": task,
            "synthetic": synthetic,
        }
        record |= {"n": n, "n_per_class": n_per_class, "classifier_epochs": classifier_epochs}
        record |= {"layers": lays, "positions": pos, "site_kind": site_kind, "method": method}
        record |= {"dims": dims, "controls": ctrl, "pairs": pairs, "epochs": epochs, "lr": lr}
        record |= {"n_boot": n_boot, "level": level, "seed": seed, "max_memory": memory}
        record |= {"device": device, "device_map": device_map}
        opts: dict[str, Any] = {"site": site_kind, "method": method, "dims": dims, "controls": ctrl}
        opts |= {"pairs": pairs, "train": {"epochs": epochs, "lr": lr}, "n_boot": n_boot}
        opts |= {"level": level, "seed": seed, "max_memory": memory}
        # a sweep saving to --out keeps its finished cells beside it (resumable)
        with resumable(out, "das-sweep", record) as partial:
            res = partial.run("sweep", lambda ck: _run_sweep(m, data, lays, pos, opts, ck))
            if out is not None:
                from ..results import plot_writer

                save_result(
                    res,
                    out,
                    overwrite=overwrite,
                    extras={"sweep.png": plot_writer(res, 150)},
                    message=f"wrote {out}/result.json, table.parquet, sweep.png",
                )
        console.print(res.summary())


def _run_sweep(
    m: Any,
    data: Any,
    layers: list[Any],
    positions: list[Any],
    opts: dict[str, Any],
    checkpoint: Path | None,
) -> Any:
    """Train every cell under a progress bar (keeping the finished cells in ``checkpoint``)."""
    from ..das.sweep import das_sweep

    with progress_bar("sweeping") as advance:
        return das_sweep(
            m,
            data,
            layers=layers,
            positions=positions,
            progress=advance,
            checkpoint=checkpoint,
            **opts,
        )


def register(app: typer.Typer) -> None:
    app.command("das")(das_cmd)
    app.command("das-sweep")(das_sweep_cmd)
