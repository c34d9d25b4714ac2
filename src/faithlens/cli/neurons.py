"""``faithlens neurons``: explain units by concepts, with guarantees.

The commands are module-level functions, registered in :data:`COMMANDS` order; their options
are declared in :mod:`faithlens.cli._neurons_options` (``O``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import typer

from ..errors import InputError
from ..results import atomic_folder
from . import _neurons_options as O
from ._common import (
    MaxMemory,
    comma_list,
    console,
    friendly_errors,
    load_model,
    max_memory_option,
    print_frame,
    save_result,
    status,
    write_report,
)
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
from ._resume import resumable

METRIC_HELP = O.METRIC_HELP

HELP = (
    "Neuron explanations with guarantees: which concept does each unit detect, is the "
    "winner certified, and how stable is it under resampling of the probing data?"
)


def explain_cmd(
    activations: O.Activations = None,
    concepts: O.Concepts = None,
    groups: O.Groups = None,
    model: O.ProbeModel = None,
    site: O.ProbeSite = None,
    texts: O.Texts = None,
    n_texts: O.NTexts = 400,
    units: O.Units = None,
    metric: O.Metrics = None,
    alpha: O.Alpha = 0.05,
    threshold: O.Threshold = None,
    holdout: O.Holdout = 0.0,
    direction: O.Direction = "unit_predicts_concept",
    delta: O.Delta = 0.05,
    n_boot: O.ExplainBoot = 1000,
    level: O.ExplainLevel = 0.9,
    interval: O.Interval = "kl",
    bound: O.Bound = "auto",
    simultaneous: O.Simultaneous = False,
    seed: O.ExplainSeed = 0,
    checkpoint: O.Checkpoint = None,
    max_memory: MaxMemory = None,
    out: O.Out = None,
    plot: O.StabilityPlot = None,
    overwrite: O.Overwrite = False,
    show: O.ShowUnits = 20,
) -> None:
    """Explain units by concepts: scores, certified winners, provable and BE sets."""
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
        memory = max_memory_option(max_memory)
        check_outputs(out, plot, overwrite)
        if model is not None:
            acts, con, grp = _probe(model, site, texts, n_texts, seed)
        else:
            acts, con, grp = _read_files(activations, concepts, groups)
        if units is not None:
            acts = acts.units(parse_units(units, acts.n_units))
        opts: dict[str, Any] = {"metric": metric or ["iou"], "alpha": alpha, "threshold": threshold}
        opts |= {"holdout": holdout, "direction": direction, "delta": delta, "n_boot": n_boot}
        opts |= {"level": level, "groups": grp, "interval": interval, "bound": bound}
        opts |= {"simultaneous": simultaneous, "seed": seed, "max_memory": memory}
        record: dict[str, Any] = {
            "activations": activations,
            "concepts": concepts,
            "groups": groups,
        }
        record |= {"model": model, "site": site, "texts": texts, "n_texts": n_texts}
        record |= {"units": units, **{k: v for k, v in opts.items() if k != "groups"}}
        # without --checkpoint, a run saving to --out keeps its finished unit blocks beside it
        with resumable(None if checkpoint is not None else out, "neurons explain", record) as p:
            res = p.run("explain", lambda ck: _explain(acts, con, opts, checkpoint or ck))
            print_report(res, out, show, plot, overwrite)


def _explain(acts: Any, con: Any, opts: dict[str, Any], checkpoint: Path | None) -> Any:
    """``explain`` under a progress line, keeping its finished unit blocks in ``checkpoint``."""
    from .. import neurons as N

    kw = {k: v for k, v in opts.items() if k != "metric"}
    with progress_printer("explaining") as tick:
        return N.explain(acts, con, opts["metric"], checkpoint=checkpoint, progress=tick, **kw)


def _probe(
    model: str, site: str | None, texts: Path | None, n_texts: int, seed: int
) -> tuple[Any, Any, None]:
    """``--model``: token activations at ``--site`` and the word concepts of the texts."""
    from .. import neurons as N

    if site is None:
        raise InputError("--model needs --site (for example mlp_post.4)")
    m = load_model(model)
    lines = (
        [t for t in texts.read_text().splitlines() if t.strip()]
        if texts is not None
        else N.word_corpus(n_texts, seed=seed)
    )
    with status(f"probing {site} on {len(lines)} texts..."):
        acts, con = N.probe_tokens(m, lines, site)
    return acts, con, None


def _read_files(
    activations: Path | None, concepts: Path | None, groups: Path | None
) -> tuple[Any, Any, np.ndarray | None]:
    """``--activations``, ``--concepts`` and ``--groups`` read from their files."""
    import torch

    from .. import neurons as N

    if activations is None or concepts is None:
        raise InputError("give --activations and --concepts, or --model and --site")
    a, a_names = read_matrix(activations, "activations")
    c, c_names = read_matrix(concepts, "concepts")
    acts = N.Activations(
        torch.as_tensor(np.asarray(a, dtype=np.float32)),
        tuple(a_names) if a_names else None,
    )
    con = N.as_concepts(np.asarray(c, dtype=np.float32), c_names)
    grp = load_array_file(groups, "groups")[0].reshape(-1) if groups is not None else None
    return acts, con, grp


def dissect_cmd(
    maps: O.Maps,
    masks: O.Masks = None,
    labels: O.Labels = None,
    names: O.Names = None,
    quantile: O.DissectQuantile = 0.005,
    delta: O.Delta = 0.05,
    n_boot: O.DissectBoot = 200,
    level: O.DissectLevel = 0.9,
    seed: O.Seed = 0,
    max_memory: MaxMemory = None,
    out: O.Out = None,
    plot: O.StabilityPlot = None,
    overwrite: O.Overwrite = False,
    show: O.ShowChannels = 20,
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
        memory = max_memory_option(max_memory)
        check_outputs(out, plot, overwrite)
        mp = read_array(maps, "maps")
        mk = read_array(masks, "masks") if masks is not None else None
        lb = read_matrix(labels, "labels")[0] if labels is not None else None
        all_names = [x.strip() for x in names.split(",")] if names else None
        n_mask = mk.shape[1] if mk is not None else 0
        kw: dict[str, Any] = {
            "quantile": quantile,
            "delta": delta,
            "n_boot": n_boot,
            "level": level,
        }
        kw |= {"seed": seed, "max_memory": memory}
        kw["concept_names"] = all_names[:n_mask] if all_names and mk is not None else None
        kw["label_names"] = all_names[n_mask:] if all_names and lb is not None else None
        record: dict[str, Any] = {"maps": maps, "masks": masks, "labels": labels, **kw}
        # a run saving to --out keeps the bootstrap's finished unit blocks beside it
        with resumable(out, "neurons dissect", record) as partial:

            def run(checkpoint: Path | None) -> Any:
                with progress_printer("dissecting") as tick:
                    return dissect(mp, mk, lb, checkpoint=checkpoint, progress=tick, **kw)

            res = partial.run("dissect", run)
            print_report(res, out, show, plot, overwrite)


def digits_cmd(
    n_probe: O.NProbe = 597,
    quantile: O.DigitsQuantile = 0.1,
    n_boot: O.DigitsBoot = 200,
    seed: O.Seed = 0,
    max_memory: MaxMemory = None,
    out: O.DigitsOut = None,
    overwrite: O.Overwrite = False,
    show: O.ShowUnits = 10,
) -> None:
    """The shipped digits CNN: logits vs digit concepts, pool channels vs pixel regions."""
    from .. import validate as V
    from ..neurons import digits as D
    from ..neurons.explain import check_explain_args

    with friendly_errors():
        # every option is checked before the model and the digits are loaded
        V.probability("--quantile", quantile, fix="the firing quantile, e.g. 0.1")
        check_explain_args(n_boot=n_boot, seed=seed, cli=True)
        V.nonnegative_int("--show", show)
        V.positive_int("--n-probe", n_probe, fix="at most 597 held-out digits")
        memory = max_memory_option(max_memory)
        check_outputs(out, None, overwrite)
        model = D.digits_model()
        data = D.load_digits_data(0)
        if not 10 <= n_probe <= len(data.y_probe):
            raise InputError(f"--n-probe must be between 10 and {len(data.y_probe)}")
        x, y = data.x_probe[:n_probe], data.y_probe[:n_probe]
        console.print(
            f"[bold]digits CNN[/]: accuracy {D.accuracy(D.digits_cnn(), x, y):.3f} on {n_probe} held-out digits"
        )
        logits, dis = _digits_results(model, x, y, quantile, n_boot, seed, show, memory)
        if out is not None:
            with atomic_folder(out, overwrite=overwrite, name="--out") as tmp:
                logits.save(tmp / "logits")
                dis.save(tmp / "dissection")
            console.print(f"saved to {out}/logits and {out}/dissection")
            write_report(out / "logits")
            write_report(out / "dissection")


def _digits_results(
    model: Any,
    x: Any,
    y: Any,
    quantile: float,
    n_boot: int,
    seed: int,
    show: int,
    memory: int | None,
) -> tuple[Any, Any]:
    """Explain the logits by the digit concepts and dissect the pool channels against pixel
    regions, printing each summary."""
    from .. import neurons as N
    from ..neurons import digits as D
    from ..neurons.dissect import dissect

    with progress_printer("logits") as tick:
        logits = N.explain(
            N.collect(model, x, "logits"),
            D.digit_concepts(y),
            ["iou", "auroc"],
            alpha=0.1,
            n_boot=n_boot,
            seed=seed,
            progress=tick,
            max_memory=memory,
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
            max_memory=memory,
        )
    console.print(dis.summary(max_units=show), highlight=False, markup=False)
    return logits, dis


def validate_cmd(
    metric: O.SimMetrics = None,
    n: O.Sizes = "100,300,1000,3000",
    reps: O.Reps = 200,
    p: O.TrueP = 0.1,
    n_concepts: O.NConcepts = 50,
    n_boot: O.SimBoot = 0,
    level: O.SimLevel = 0.9,
    delta: O.Delta = 0.05,
    seed: O.Seed = 0,
    max_memory: MaxMemory = None,
    out: O.Out = None,
    plot: O.CoveragePlot = None,
    overwrite: O.Overwrite = False,
) -> None:
    """Simulate units with known concepts: do the bounds and BE sets cover?"""
    from .. import validate as V
    from ..neurons.explain import check_explain_args
    from ..neurons.simulate import simulate

    with friendly_errors():
        check_explain_args(delta=delta, n_boot=n_boot, level=level, seed=seed, cli=True)
        V.min_examples("--reps", reps, what="a coverage estimate")
        V.probability("--p", p, fix="a concept frequency such as 0.1")
        memory = max_memory_option(max_memory)
        check_outputs(out, plot, overwrite)
        sizes = comma_list(n, int, "--n")
        with status("simulating..."):
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
                max_memory=memory,
            )
        _print_and_save(res, out, plot, overwrite)


def _print_and_save(res: Any, out: Path | None, plot: Path | None, overwrite: bool) -> None:
    """A result's summary, then ``--out`` and ``--plot`` if given."""
    console.print(res.summary(), highlight=False, markup=False)
    if out is not None:
        save_result(res, out, overwrite=overwrite, message=f"saved to {out}")
    if plot is not None:
        save_plot(res, plot, overwrite)


def bound_cmd(
    metric: O.BoundMetric = "iou",
    n_concepts: O.ConceptSet = 1000,
    n: O.BoundN = None,
    epsilon: O.Epsilon = None,
    p: O.BoundP = None,
    alpha: O.BoundAlpha = None,
    delta: O.Confidence = 0.05,
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
            assert epsilon is not None
            need = required_n(metric, epsilon, n_concepts, delta, p=p, alpha=alpha)
            console.print(
                f"{metric}: ±{epsilon:g} over {n_concepts} concepts at confidence {1 - delta:g} needs n >= {need}"
            )


def sanity_cmd(
    metric: O.SanityMetrics = None,
    n: O.Inputs = 100_000,
    seeds: O.Seeds = 200,
    frequencies: O.Frequencies = None,
    seed: O.Seed = 0,
    max_memory: MaxMemory = None,
    out: O.Out = None,
    plot: O.HeatPlot = None,
    overwrite: O.Overwrite = False,
) -> None:
    """NeuronEval's sanity checks: does each metric punish missing and extra labels?"""
    from .. import validate as V
    from ..neurons.sanity import CHECKABLE, sanity_checks

    with friendly_errors():
        V.nonnegative_int("--seed", seed)
        memory = max_memory_option(max_memory)
        check_outputs(out, plot, overwrite)
        freqs = None if frequencies is None else comma_list(frequencies, float, "--frequencies")
        with status("checking metrics..."):
            res = sanity_checks(
                metric or list(CHECKABLE),
                n=n,
                seeds=seeds,
                frequencies=freqs,
                seed=seed,
                max_memory=memory,
            )
        _print_and_save(res, out, plot, overwrite)


def show_cmd(
    path: O.SavedFolder,
    unit: O.ShowUnit = None,
    metric: O.ShowMetric = None,
    plot: O.AnyPlot = None,
    overwrite: O.OverwritePlot = False,
    show: O.ShowUnits = 20,
) -> None:
    """Print a saved neuron explanation (or one unit of it)."""
    from .. import validate as V
    from ..results import Result

    with friendly_errors():
        V.nonnegative_int("--show", show)
        check_outputs(None, plot, overwrite)
        res: Any = Result.load(path)
        key: int | str | None = None
        if unit is not None:
            if not hasattr(res, "unit"):
                raise InputError(f"{path} holds a {type(res).__name__}, which has no units")
            key = int(unit) if unit.lstrip("-").isdigit() else unit
            print_frame(res.unit(key, metric, top=show), f"unit {unit}", max_rows=show)
        else:
            console.print(
                res.summary(max_units=show) if hasattr(res, "unit") else res.summary(),
                highlight=False,
            )
        if plot is not None:
            # --unit: plot that unit (and --metric), not the first few units
            kw = {} if key is None else {"units": [key], "metric": metric}
            save_plot(res, plot, overwrite, **kw)


#: The commands of ``faithlens neurons``, in the order of its ``--help``.
COMMANDS = (
    ("explain", explain_cmd),
    ("dissect", dissect_cmd),
    ("digits", digits_cmd),
    ("validate", validate_cmd),
    ("bound", bound_cmd),
    ("sanity", sanity_cmd),
    ("show", show_cmd),
)


def register(app: typer.Typer) -> None:
    neurons = typer.Typer(help=HELP, no_args_is_help=True)
    app.add_typer(neurons, name="neurons")
    for name, command in COMMANDS:
        neurons.command(name)(command)


__all__ = ["register"]
