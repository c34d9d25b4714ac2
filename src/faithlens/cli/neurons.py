"""``faithlens neurons``: explain units by concepts, with guarantees."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from ..errors import InputError
from ..results import atomic_folder
from ._common import comma_list, console, friendly_errors, load_model, print_frame
from ._neurons_io import (
    check_outputs,
    load_array_file,
    parse_units,
    print_report,
    progress_printer,
    read_array,
    read_matrix,
    save_plot,
)

METRIC_HELP = (
    "Similarity metric (repeat for several): accuracy, precision, recall, f1, iou, auroc, "
    "auprc, correlation, cosine, softwpmi."
)


def register(app: typer.Typer) -> None:
    neurons = typer.Typer(
        help="Neuron explanations with guarantees: which concept does each unit detect, is the "
        "winner certified, and how stable is it under resampling of the probing data?",
        no_args_is_help=True,
    )
    app.add_typer(neurons, name="neurons")

    @neurons.command("explain")
    def explain_cmd(
        activations: Annotated[
            Path | None,
            typer.Option(
                "--activations",
                "-a",
                help="[n_samples, n_units] activations (.npy, .pt, .csv, .parquet).",
            ),
        ] = None,
        concepts: Annotated[
            Path | None,
            typer.Option(
                "--concepts",
                "-c",
                help="[n_samples, n_concepts] labels in [0, 1] (.csv/.parquet keep column names).",
            ),
        ] = None,
        groups: Annotated[
            Path | None,
            typer.Option(
                "--groups",
                help="A group id per sample (.npy/.csv): groups are the independent draws.",
            ),
        ] = None,
        model: str = typer.Option(
            None,
            "--model",
            "-m",
            help="Probe a model instead (smollm2, minilm): token-level concepts from the shipped word list.",
        ),
        site: str = typer.Option(
            None, "--site", "-s", help="Site to read with --model, e.g. mlp_post.4."
        ),
        texts: Annotated[
            Path | None,
            typer.Option(
                "--texts", help="Probing texts, one per line (default: the shipped word corpus)."
            ),
        ] = None,
        n_texts: int = typer.Option(
            400, "--n-texts", help="Sentences of the shipped word corpus to use."
        ),
        units: str = typer.Option(None, "--units", help="Only these units: '0:64' or '3,17,42'."),
        metric: Annotated[list[str] | None, typer.Option("--metric", help=METRIC_HELP)] = None,
        alpha: float = typer.Option(
            0.05, "--alpha", help="Top quantile of activations that fires."
        ),
        threshold: float = typer.Option(
            None, "--threshold", help="Fixed firing threshold instead of --alpha."
        ),
        holdout: float = typer.Option(
            0.0, "--holdout", help="Share of the data used only to set thresholds."
        ),
        direction: str = typer.Option(
            "unit_predicts_concept",
            "--direction",
            help="unit_predicts_concept or concept_predicts_unit (NeuronEval).",
        ),
        delta: float = typer.Option(
            0.05, "--delta", help="Bounds hold with probability 1 - delta."
        ),
        n_boot: int = typer.Option(
            1000, "--n-boot", help="Bootstrap resamples (0: no stability analysis)."
        ),
        level: float = typer.Option(
            0.9, "--level", help="Target coverage of the BE prediction sets."
        ),
        interval: str = typer.Option("kl", "--interval", help="kl (Chernoff) or hoeffding."),
        bound: str = typer.Option("auto", "--bound", help="auto, theory or bootstrap."),
        simultaneous: bool = typer.Option(
            False, "--simultaneous", help="Bounds hold for all units at once."
        ),
        seed: int = typer.Option(0, "--seed", help="Seed of tie-breaks and resamples."),
        checkpoint: Annotated[
            Path | None,
            typer.Option("--checkpoint", help="Folder to keep finished unit blocks (resumable)."),
        ] = None,
        out: Annotated[
            Path | None, typer.Option("--out", "-o", help="Save the result to this folder.")
        ] = None,
        plot: Annotated[
            Path | None, typer.Option("--plot", help="Save the stability plot to this file.")
        ] = None,
        overwrite: bool = typer.Option(
            False, "--overwrite", help="Replace an existing --out folder or --plot file."
        ),
        show: int = typer.Option(20, "--show", help="Units to print."),
    ) -> None:
        """Explain units by concepts: scores, certified winners, provable and BE sets."""
        import torch

        from .. import neurons as N
        from .. import validate as V
        from ..neurons.explain import as_metrics, check_explain_args

        with friendly_errors():
            # every option is checked before a file is read or a model loaded
            as_metrics(metric or ["iou"])
            check_explain_args(
                alpha=alpha,
                threshold=threshold,
                holdout=holdout,
                direction=direction,
                delta=delta,
                n_boot=n_boot,
                level=level,
                interval=interval,
                bound=bound,
                seed=seed,
                cli=True,
            )
            V.positive_int("--n-texts", n_texts)
            V.nonnegative_int("--show", show)
            check_outputs(out, plot, overwrite)
            if model is not None:
                if site is None:
                    raise InputError("--model needs --site (for example mlp_post.4)")
                m = load_model(model)
                lines = (
                    [t for t in texts.read_text().splitlines() if t.strip()]
                    if texts is not None
                    else N.word_corpus(n_texts, seed=seed)
                )
                with console.status(f"probing {site} on {len(lines)} texts..."):
                    acts, con = N.probe_tokens(m, lines, site)
                grp = None
            else:
                if activations is None or concepts is None:
                    raise InputError("give --activations and --concepts, or --model and --site")
                a, a_names = read_matrix(activations, "activations")
                c, c_names = read_matrix(concepts, "concepts")
                acts = N.Activations(
                    torch.as_tensor(np.asarray(a, dtype=np.float32)),
                    tuple(a_names) if a_names else None,
                )
                con = N.as_concepts(np.asarray(c, dtype=np.float32), c_names)
                grp = (
                    load_array_file(groups, "groups")[0].reshape(-1) if groups is not None else None
                )
            if units is not None:
                acts = acts.units(parse_units(units, acts.n_units))
            with progress_printer("explaining") as tick:
                res = N.explain(
                    acts,
                    con,
                    metric or ["iou"],
                    alpha=alpha,
                    threshold=threshold,
                    holdout=holdout,
                    direction=direction,
                    delta=delta,
                    n_boot=n_boot,
                    level=level,
                    groups=grp,
                    interval=interval,
                    bound=bound,
                    simultaneous=simultaneous,
                    seed=seed,
                    checkpoint=checkpoint,
                    progress=tick,
                )
            print_report(res, out, show, plot, overwrite)

    @neurons.command("dissect")
    def dissect_cmd(
        maps: Annotated[
            Path,
            typer.Option("--maps", help="[n_images, channels, h, w] activation maps (.npy/.pt)."),
        ],
        masks: Annotated[
            Path | None,
            typer.Option("--masks", help="[n_images, n_concepts, H, W] concept masks (.npy/.pt)."),
        ] = None,
        labels: Annotated[
            Path | None,
            typer.Option("--labels", help="[n_images, n_labels] image-level labels (.npy/.csv)."),
        ] = None,
        names: str = typer.Option(
            None, "--names", help="Comma-separated concept names (masks, then labels)."
        ),
        quantile: float = typer.Option(
            0.005, "--quantile", help="Top quantile of upsampled activations that fires."
        ),
        delta: float = typer.Option(
            0.05, "--delta", help="Bounds hold with probability 1 - delta."
        ),
        n_boot: int = typer.Option(200, "--n-boot", help="Bootstrap resamples of images."),
        level: float = typer.Option(0.9, "--level", help="Target coverage of the BE sets."),
        seed: int = typer.Option(0, "--seed", help="Seed."),
        out: Annotated[
            Path | None, typer.Option("--out", "-o", help="Save the result to this folder.")
        ] = None,
        plot: Annotated[
            Path | None, typer.Option("--plot", help="Save the stability plot to this file.")
        ] = None,
        overwrite: bool = typer.Option(
            False, "--overwrite", help="Replace an existing --out folder or --plot file."
        ),
        show: int = typer.Option(20, "--show", help="Channels to print."),
    ) -> None:
        """Network Dissection of conv channels against concept masks, with bounds."""
        from .. import validate as V
        from ..neurons.dissect import dissect
        from ..neurons.explain import check_explain_args

        with friendly_errors():
            # every option is checked before a file is read
            V.probability("--quantile", quantile, fix="the top quantile that fires, e.g. 0.005")
            check_explain_args(delta=delta, n_boot=n_boot, level=level, seed=seed, cli=True)
            V.nonnegative_int("--show", show)
            check_outputs(out, plot, overwrite)
            mp = read_array(maps, "maps")
            mk = read_array(masks, "masks") if masks is not None else None
            lb = read_matrix(labels, "labels")[0] if labels is not None else None
            all_names = [x.strip() for x in names.split(",")] if names else None
            n_mask = mk.shape[1] if mk is not None else 0
            with progress_printer("dissecting") as tick:
                res = dissect(
                    mp,
                    mk,
                    lb,
                    concept_names=all_names[:n_mask] if all_names and mk is not None else None,
                    label_names=all_names[n_mask:] if all_names and lb is not None else None,
                    quantile=quantile,
                    delta=delta,
                    n_boot=n_boot,
                    level=level,
                    seed=seed,
                    progress=tick,
                )
            print_report(res, out, show, plot, overwrite)

    @neurons.command("digits")
    def digits_cmd(
        n_probe: int = typer.Option(
            597, "--n-probe", help="Held-out digits to probe with (at most 597)."
        ),
        quantile: float = typer.Option(
            0.1, "--quantile", help="Firing quantile for the dissection of the pool channels."
        ),
        n_boot: int = typer.Option(200, "--n-boot", help="Bootstrap resamples."),
        seed: int = typer.Option(0, "--seed", help="Seed."),
        out: Annotated[
            Path | None, typer.Option("--out", "-o", help="Save both results under this folder.")
        ] = None,
        overwrite: bool = typer.Option(
            False, "--overwrite", help="Replace an existing --out folder or --plot file."
        ),
        show: int = typer.Option(10, "--show", help="Units to print."),
    ) -> None:
        """The shipped digits CNN: logits vs digit concepts, pool channels vs pixel regions."""
        from .. import neurons as N
        from .. import validate as V
        from ..neurons import digits as D
        from ..neurons.dissect import dissect
        from ..neurons.explain import check_explain_args

        with friendly_errors():
            # every option is checked before the model and the digits are loaded
            V.probability("--quantile", quantile, fix="the firing quantile, e.g. 0.1")
            check_explain_args(n_boot=n_boot, seed=seed, cli=True)
            V.nonnegative_int("--show", show)
            V.positive_int("--n-probe", n_probe, fix="at most 597 held-out digits")
            check_outputs(out, None, overwrite)
            model = D.digits_model()
            data = D.load_digits_data(0)
            if not 10 <= n_probe <= len(data.y_probe):
                raise InputError(f"--n-probe must be between 10 and {len(data.y_probe)}")
            x, y = data.x_probe[:n_probe], data.y_probe[:n_probe]
            console.print(
                f"[bold]digits CNN[/]: accuracy {D.accuracy(D.digits_cnn(), x, y):.3f} on {n_probe} held-out digits"
            )
            with progress_printer("logits") as tick:
                logits = N.explain(
                    N.collect(model, x, "logits"),
                    D.digit_concepts(y),
                    ["iou", "auroc"],
                    alpha=0.1,
                    n_boot=n_boot,
                    seed=seed,
                    progress=tick,
                )
            console.print(logits.summary(max_units=show), highlight=False, markup=False)
            masks, names = D.pixel_concepts(x)
            with progress_printer("dissection") as tick:
                dis = dissect(
                    "pool",
                    masks,
                    concept_names=names,
                    model=model,
                    inputs=x,
                    quantile=quantile,
                    n_boot=n_boot,
                    seed=seed,
                    progress=tick,
                )
            console.print(dis.summary(max_units=show), highlight=False, markup=False)
            if out is not None:
                with atomic_folder(out, overwrite=overwrite, name="--out") as tmp:
                    logits.save(tmp / "logits")
                    dis.save(tmp / "dissection")
                console.print(f"saved to {out}/logits and {out}/dissection")

    @neurons.command("validate")
    def validate_cmd(
        metric: Annotated[
            list[str] | None,
            typer.Option("--metric", help=METRIC_HELP + " Default: accuracy, iou, auroc."),
        ] = None,
        n: str = typer.Option(
            "100,300,1000,3000", "--n", help="Probing-set sizes, comma-separated."
        ),
        reps: int = typer.Option(200, "--reps", help="Repetitions per size."),
        p: float = typer.Option(0.1, "--p", help="Frequency of the true concept."),
        n_concepts: int = typer.Option(50, "--concepts", help="Concepts in the set."),
        n_boot: int = typer.Option(
            0, "--n-boot", help="Bootstrap resamples per repetition (BE coverage)."
        ),
        level: float = typer.Option(0.9, "--level", help="Target BE coverage."),
        delta: float = typer.Option(
            0.05, "--delta", help="Bounds hold with probability 1 - delta."
        ),
        seed: int = typer.Option(0, "--seed", help="Seed."),
        out: Annotated[
            Path | None, typer.Option("--out", "-o", help="Save the result to this folder.")
        ] = None,
        plot: Annotated[
            Path | None, typer.Option("--plot", help="Save the coverage plot to this file.")
        ] = None,
        overwrite: bool = typer.Option(
            False, "--overwrite", help="Replace an existing --out folder or --plot file."
        ),
    ) -> None:
        """Simulate units with known concepts: do the bounds and BE sets cover?"""
        from .. import validate as V
        from ..neurons.explain import check_explain_args
        from ..neurons.simulate import simulate

        with friendly_errors():
            check_explain_args(delta=delta, n_boot=n_boot, level=level, seed=seed, cli=True)
            V.min_examples("--reps", reps, what="a coverage estimate")
            V.probability("--p", p, fix="a concept frequency such as 0.1")
            check_outputs(out, plot, overwrite)
            sizes = comma_list(n, int, "--n")
            with console.status("simulating..."):
                res = simulate(
                    metric or ["accuracy", "iou", "auroc"],
                    sizes,
                    reps=reps,
                    p=p,
                    n_concepts=n_concepts,
                    n_boot=n_boot,
                    level=level,
                    delta=delta,
                    seed=seed,
                )
            console.print(res.summary(), highlight=False, markup=False)
            if out is not None:
                res.save(out, overwrite=overwrite)
                console.print(f"saved to {out}")
            if plot is not None:
                save_plot(res, plot, overwrite)

    @neurons.command("bound")
    def bound_cmd(
        metric: str = typer.Option(
            "iou", "--metric", help="accuracy, precision, recall, iou, f1 or auroc."
        ),
        n_concepts: int = typer.Option(1000, "--concepts", help="Size of the concept set."),
        n: int = typer.Option(None, "--n", help="Probing-set size: print the bound."),
        epsilon: float = typer.Option(
            None, "--epsilon", help="Target bound: print the n it needs."
        ),
        p: float = typer.Option(None, "--p", help="Concept frequency."),
        alpha: float = typer.Option(None, "--alpha", help="Firing quantile."),
        delta: float = typer.Option(0.05, "--delta", help="Confidence 1 - delta."),
    ) -> None:
        """Plan a study: the uniform bound at a probing-set size, or the size a bound needs."""
        from .. import validate as V
        from ..neurons.bounds import faithfulness_bound, required_n

        with friendly_errors():
            if (n is None) == (epsilon is None):
                raise InputError("give exactly one of --n and --epsilon")
            V.probability("--delta", delta, fix="bounds hold with probability 1 - delta")
            V.positive_int("--concepts", n_concepts)
            if n is not None:
                V.positive_int("--n", n)
            if epsilon is not None:
                V.positive_float("--epsilon", epsilon)
            if p is not None:
                V.probability("--p", p)
            if alpha is not None:
                V.probability("--alpha", alpha)
            if n is not None:
                eps = float(faithfulness_bound(metric, n, n_concepts, delta, p=p, alpha=alpha))
                console.print(
                    f"{metric}: with n={n} and {n_concepts} concepts, every concept's similarity is within ±{eps:.4f} of its probing-set value with probability {1 - delta:g}; a winner leading by more than {2 * eps:.4f} would be certified (planning figure: explain() reports the realised intervals)"
                )
            else:
                need = required_n(metric, epsilon, n_concepts, delta, p=p, alpha=alpha)
                console.print(
                    f"{metric}: ±{epsilon:g} over {n_concepts} concepts at confidence {1 - delta:g} needs n >= {need}"
                )

    @neurons.command("sanity")
    def sanity_cmd(
        metric: Annotated[
            list[str] | None,
            typer.Option("--metric", help=METRIC_HELP + " Default: all but softwpmi."),
        ] = None,
        n: int = typer.Option(100_000, "--n", help="Inputs per seed."),
        seeds: int = typer.Option(200, "--seeds", help="Random seeds."),
        frequencies: str = typer.Option(
            "0.499,0.1,0.01,0.001,0.0001",
            "--frequencies",
            help="Concept frequencies, comma-separated.",
        ),
        seed: int = typer.Option(0, "--seed", help="Seed."),
        out: Annotated[
            Path | None, typer.Option("--out", "-o", help="Save the result to this folder.")
        ] = None,
        plot: Annotated[
            Path | None, typer.Option("--plot", help="Save the heat maps to this file.")
        ] = None,
        overwrite: bool = typer.Option(
            False, "--overwrite", help="Replace an existing --out folder or --plot file."
        ),
    ) -> None:
        """NeuronEval's sanity checks: does each metric punish missing and extra labels?"""
        from .. import validate as V
        from ..neurons.sanity import CHECKABLE, sanity_checks

        with friendly_errors():
            V.nonnegative_int("--seed", seed)
            check_outputs(out, plot, overwrite)
            freqs = comma_list(frequencies, float, "--frequencies")
            with console.status("checking metrics..."):
                res = sanity_checks(
                    metric or list(CHECKABLE), n=n, seeds=seeds, frequencies=freqs, seed=seed
                )
            console.print(res.summary(), highlight=False, markup=False)
            if out is not None:
                res.save(out, overwrite=overwrite)
                console.print(f"saved to {out}")
            if plot is not None:
                save_plot(res, plot, overwrite)

    @neurons.command("show")
    def show_cmd(
        path: Annotated[
            Path, typer.Argument(help="A folder saved by 'faithlens neurons ... --out'.")
        ],
        unit: str = typer.Option(
            None, "--unit", help="Show every concept for this unit (name or index)."
        ),
        metric: str = typer.Option(None, "--metric", help="Which metric (default: the first)."),
        plot: Annotated[
            Path | None, typer.Option("--plot", help="Save the plot to this file.")
        ] = None,
        overwrite: bool = typer.Option(
            False, "--overwrite", help="Replace an existing --plot file (default: refuse)."
        ),
        show: int = typer.Option(20, "--show", help="Units to print."),
    ) -> None:
        """Print a saved neuron explanation (or one unit of it)."""
        from .. import validate as V
        from ..results import Result

        with friendly_errors():
            V.nonnegative_int("--show", show)
            check_outputs(None, plot, overwrite)
            res: Any = Result.load(path)
            if unit is not None:
                if not hasattr(res, "unit"):
                    raise InputError(f"{path} holds a {type(res).__name__}, which has no units")
                key: int | str = int(unit) if unit.lstrip("-").isdigit() else unit
                print_frame(res.unit(key, metric, top=show), f"unit {unit}", max_rows=show)
            else:
                console.print(
                    res.summary(max_units=show) if hasattr(res, "unit") else res.summary(),
                    highlight=False,
                )
            if plot is not None:
                save_plot(res, plot, overwrite)


__all__ = ["register"]
