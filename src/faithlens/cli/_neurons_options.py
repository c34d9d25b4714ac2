"""The options of ``faithlens neurons`` (typer ``Annotated`` declarations, with their help
texts), kept apart from the commands in :mod:`faithlens.cli.neurons` that use them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

METRIC_HELP = (
    "Similarity metric (repeat for several): accuracy, precision, recall, f1, iou, auroc, "
    "auprc, correlation, cosine, softwpmi."
)

# ------------------------------------------------------------------ options of several commands

Delta = Annotated[float, typer.Option("--delta", help="Bounds hold with probability 1 - delta.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed.")]
Out = Annotated[Path | None, typer.Option("--out", "-o", help="Save the result to this folder.")]
StabilityPlot = Annotated[
    Path | None, typer.Option("--plot", help="Save the stability plot to this file.")
]
Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="Replace an existing --out folder or --plot file.")
]
ShowUnits = Annotated[int, typer.Option("--show", help="Units to print.")]

# ------------------------------------------------------------------ options of `explain`

Activations = Annotated[
    Path | None,
    typer.Option(
        "--activations",
        "-a",
        help="[n_samples, n_units] activations (.npy, .pt, .csv, .parquet).",
    ),
]
Concepts = Annotated[
    Path | None,
    typer.Option(
        "--concepts",
        "-c",
        help="[n_samples, n_concepts] labels in [0, 1] (.csv/.parquet keep column names).",
    ),
]
Groups = Annotated[
    Path | None,
    typer.Option(
        "--groups",
        help="A group id per sample (.npy/.csv): groups are the independent draws.",
    ),
]
ProbeModel = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Probe a model instead (smollm2, minilm): token-level concepts from the shipped word list.",
    ),
]
ProbeSite = Annotated[
    str | None, typer.Option("--site", "-s", help="Site to read with --model, e.g. mlp_post.4.")
]
Texts = Annotated[
    Path | None,
    typer.Option("--texts", help="Probing texts, one per line (default: the shipped word corpus)."),
]
NTexts = Annotated[
    int, typer.Option("--n-texts", help="Sentences of the shipped word corpus to use.")
]
Units = Annotated[
    str | None, typer.Option("--units", help="Only these units: '0:64' or '3,17,42'.")
]
Metrics = Annotated[list[str] | None, typer.Option("--metric", help=METRIC_HELP)]
Alpha = Annotated[float, typer.Option("--alpha", help="Top quantile of activations that fires.")]
Threshold = Annotated[
    float | None, typer.Option("--threshold", help="Fixed firing threshold instead of --alpha.")
]
Holdout = Annotated[
    float, typer.Option("--holdout", help="Share of the data used only to set thresholds.")
]
Direction = Annotated[
    str,
    typer.Option(
        "--direction",
        help="unit_predicts_concept or concept_predicts_unit (NeuronEval).",
    ),
]
ExplainBoot = Annotated[
    int, typer.Option("--n-boot", help="Bootstrap resamples (0: no stability analysis).")
]
ExplainLevel = Annotated[
    float, typer.Option("--level", help="Target coverage of the BE prediction sets.")
]
Interval = Annotated[str, typer.Option("--interval", help="kl (Chernoff) or hoeffding.")]
Bound = Annotated[str, typer.Option("--bound", help="auto, theory or bootstrap.")]
Simultaneous = Annotated[
    bool, typer.Option("--simultaneous", help="Bounds hold for all units at once.")
]
ExplainSeed = Annotated[int, typer.Option("--seed", help="Seed of tie-breaks and resamples.")]
Checkpoint = Annotated[
    Path | None,
    typer.Option(
        "--checkpoint",
        help="Folder to keep finished unit blocks (resumable; default with --out: a hidden "
        ".OUT.partial folder beside it, removed once the result is saved).",
    ),
]

# ------------------------------------------------------------------ options of the other commands

Maps = Annotated[
    Path,
    typer.Option("--maps", help="[n_images, channels, h, w] activation maps (.npy/.pt)."),
]
Masks = Annotated[
    Path | None,
    typer.Option("--masks", help="[n_images, n_concepts, H, W] concept masks (.npy/.pt)."),
]
Labels = Annotated[
    Path | None,
    typer.Option("--labels", help="[n_images, n_labels] image-level labels (.npy/.csv)."),
]
Names = Annotated[
    str | None,
    typer.Option("--names", help="Comma-separated concept names (masks, then labels)."),
]
DissectQuantile = Annotated[
    float,
    typer.Option("--quantile", help="Top quantile of upsampled activations that fires."),
]
DissectBoot = Annotated[int, typer.Option("--n-boot", help="Bootstrap resamples of images.")]
DissectLevel = Annotated[float, typer.Option("--level", help="Target coverage of the BE sets.")]
ShowChannels = Annotated[int, typer.Option("--show", help="Channels to print.")]
NProbe = Annotated[
    int, typer.Option("--n-probe", help="Held-out digits to probe with (at most 597).")
]
DigitsQuantile = Annotated[
    float,
    typer.Option("--quantile", help="Firing quantile for the dissection of the pool channels."),
]
DigitsBoot = Annotated[int, typer.Option("--n-boot", help="Bootstrap resamples.")]
DigitsOut = Annotated[
    Path | None, typer.Option("--out", "-o", help="Save both results under this folder.")
]
SimMetrics = Annotated[
    list[str] | None,
    typer.Option("--metric", help=METRIC_HELP + " Default: accuracy, iou, auroc."),
]
Sizes = Annotated[str, typer.Option("--n", help="Probing-set sizes, comma-separated.")]
Reps = Annotated[int, typer.Option("--reps", help="Repetitions per size.")]
TrueP = Annotated[float, typer.Option("--p", help="Frequency of the true concept.")]
NConcepts = Annotated[int, typer.Option("--concepts", help="Concepts in the set.")]
SimBoot = Annotated[
    int, typer.Option("--n-boot", help="Bootstrap resamples per repetition (BE coverage).")
]
SimLevel = Annotated[float, typer.Option("--level", help="Target BE coverage.")]
CoveragePlot = Annotated[
    Path | None, typer.Option("--plot", help="Save the coverage plot to this file.")
]
BoundMetric = Annotated[
    str, typer.Option("--metric", help="accuracy, precision, recall, iou, f1 or auroc.")
]
ConceptSet = Annotated[int, typer.Option("--concepts", help="Size of the concept set.")]
BoundN = Annotated[int | None, typer.Option("--n", help="Probing-set size: print the bound.")]
Epsilon = Annotated[
    float | None, typer.Option("--epsilon", help="Target bound: print the n it needs.")
]
BoundP = Annotated[float | None, typer.Option("--p", help="Concept frequency.")]
BoundAlpha = Annotated[float | None, typer.Option("--alpha", help="Firing quantile.")]
Confidence = Annotated[float, typer.Option("--delta", help="Confidence 1 - delta.")]
SanityMetrics = Annotated[
    list[str] | None,
    typer.Option("--metric", help=METRIC_HELP + " Default: all but softwpmi."),
]
Inputs = Annotated[int, typer.Option("--n", help="Inputs per seed.")]
Seeds = Annotated[int, typer.Option("--seeds", help="Random seeds.")]
Frequencies = Annotated[
    str | None,
    typer.Option(
        "--frequencies",
        help="Concept frequencies, comma-separated [default: 0.499,0.1,0.01,0.001,0.0001, "
        "less those with fewer than 2 positives at --n].",
    ),
]
HeatPlot = Annotated[Path | None, typer.Option("--plot", help="Save the heat maps to this file.")]
SavedFolder = Annotated[
    Path, typer.Argument(help="A folder saved by 'faithlens neurons ... --out'.")
]
ShowUnit = Annotated[
    str | None,
    typer.Option("--unit", help="Show every concept for this unit (name or index)."),
]
ShowMetric = Annotated[
    str | None, typer.Option("--metric", help="Which metric (default: the first).")
]
AnyPlot = Annotated[Path | None, typer.Option("--plot", help="Save the plot to this file.")]
OverwritePlot = Annotated[
    bool,
    typer.Option("--overwrite", help="Replace an existing --plot file (default: refuse)."),
]
