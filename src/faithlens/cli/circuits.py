"""``faithlens circuit``: score every edge of a model on a task, draw the faithfulness curve
(CPR / CMD) and measure the chosen circuit's faithfulness, from the shell."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ._common import (
    Device,
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
    print_frame,
    progress_bar,
    save_result,
    status,
)
from ._resume import resumable
from .patching import check_task_options

METHODS = ("exact", "eap", "eap-ig", "acdc")
#: the fewest examples whose natural-vs-natural baseline the audit's metrics can use.
AUDIT_MIN_N = 10

CircuitModel = Annotated[
    str,
    typer.Option(
        "--model", "-m", help="Model name (smollm2, zoo:NAME) or local folder; pre-LN transformer."
    ),
]
Method = Annotated[
    str,
    typer.Option(
        "--method",
        help="Edge scorer: exact (edge patching), eap, eap-ig, or acdc (greedy pruning; its "
        "kept edges are the chosen circuit).",
    ),
]
TopK = Annotated[
    int, typer.Option("--top-k", "-k", help="Edges in the chosen circuit (not with acdc).")
]
Tau = Annotated[float, typer.Option("--tau", help="acdc's pruning threshold on the KL divergence.")]
Steps = Annotated[int, typer.Option("--steps", help="Integration steps of eap-ig.")]
IG = Annotated[
    str,
    typer.Option(
        "--ig",
        help="eap-ig's path: inputs (the embeddings interpolated) or activations (each layer's "
        "attention and MLP outputs interpolated in turn, Hanna et al.'s EAP-IG-activations).",
    ),
]
EdgePositions = Annotated[
    str,
    typer.Option(
        "--positions",
        help="all (an edge carries its writer's change at every token position) or each (one "
        "edge per edge and position, named edge@position; the circuit is then not scrubbed: "
        "scrubbing routes whole activations).",
    ),
]
Selection = Annotated[
    str,
    typer.Option(
        "--selection",
        help="How the curve's circuits and the chosen one (--top-k) are picked: top (the top "
        "k by |score|, MIB's) or greedy (grown from the logits backwards and pruned to the "
        "edges on a path from the input, EAP-IG's). Not with acdc's chosen circuit.",
    ),
]
N = Annotated[int, typer.Option("--n", help="Number of task examples.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed for the task and the bootstrap.")]
Top = Annotated[int, typer.Option("--top", help="Rows of the printed edge table.")]
Scrub = Annotated[
    bool,
    typer.Option(
        "--scrub/--no-scrub",
        help="Causal-scrub the chosen circuit (its edges important, everything else resampled "
        "from other examples) and write scrub/: the per-node tree (circuit.to_hypothesis(), a "
        "datum per node) when it has at most 20,000 paths from the logits, else the global mode "
        "as one DAG (fl.circuits.scrub, one datum for every edge outside the circuit).",
    ),
]
Audit = Annotated[
    bool,
    typer.Option(
        "--audit/--no-audit",
        help="Audit the chosen circuit's run (every edge outside it corrupted) for divergence "
        "from the natural clean and corrupted runs at the final residual stream (fl.audit) "
        "and write audit/.",
    ),
]
Out = Annotated[
    Path | None,
    typer.Option(
        "--out",
        "-o",
        help="Folder for the result folders scores/ (EdgeScores), curve/ (FaithfulnessCurve), "
        "circuit/ (CircuitFaithfulness of the chosen circuit, with circuit.png: the circuit "
        "drawn layer by layer), scrub/ (ScrubResult) and audit/ (AuditResult), each with its "
        "plot.",
    ),
]


def _check(
    method: str,
    top_k: int,
    steps: int,
    n_boot: int,
    top: int,
    tau: float,
    ig: str = "inputs",
    positions: str = "all",
    selection: str = "top",
) -> None:
    from .. import validate
    from ..circuits.common import POSITIONS
    from ..circuits.curve import SELECTIONS
    from ..circuits.eap_ig import IG as IG_PATHS

    validate.choice("--positions", positions, POSITIONS, fix="--positions all or --positions each")
    validate.choice("--selection", selection, SELECTIONS, fix="--selection top or greedy")
    validate.finite_float("--tau", tau, fix="a pruning threshold, e.g. 0.01")
    validate.choice("--method", method, METHODS)
    validate.choice("--ig", ig, IG_PATHS, fix="--ig inputs or --ig activations")
    validate.positive_int("--top-k", top_k, fix="the number of edges to keep, e.g. 20")
    validate.positive_int("--steps", steps, fix="the number of integration steps, e.g. 5")
    validate.n_boot(n_boot, "--n-boot")
    validate.positive_int("--top", top, fix="the number of table rows to print, e.g. 15")


def _score(
    m: Any,
    t: Any,
    method: str,
    steps: int,
    tau: float,
    n_boot: int,
    seed: int,
    memory: Any,
    checkpoint: Path | None = None,
    ig: str = "inputs",
    positions: str = "all",
) -> Any:
    """The edge scores; ``checkpoint`` keeps the finished chunks of exact, eap and eap-ig
    (acdc's pruning is sequential: it has none)."""
    from .. import circuits

    opts = {"n_boot": n_boot, "seed": seed, "max_memory": memory, "positions": positions}
    with progress_bar(f"{method} edge scores") as advance:
        if method == "acdc":
            return circuits.acdc(m, t, tau=tau, progress=advance, **opts)
        opts["checkpoint"] = checkpoint
        if method == "exact":
            return circuits.exact(m, t, progress=advance, **opts)
        if method == "eap":
            return circuits.eap(m, t, progress=advance, **opts)
        return circuits.eap_ig(m, t, steps=steps, ig=ig, progress=advance, **opts)


def circuit_cmd(
    model: CircuitModel = "zoo:induction",
    task: TaskName = "induction",
    method: Method = "eap-ig",
    top_k: TopK = 20,
    steps: Steps = 5,
    ig: IG = "inputs",
    tau: Tau = 0.01,
    positions: EdgePositions = "all",
    selection: Selection = "top",
    n: N = 32,
    seed: Seed = 0,
    n_boot: NBoot = 1000,
    top: Top = 15,
    scrub: Scrub = True,
    audit: Audit = True,
    max_memory: MaxMemory = None,
    device: Device = None,
    device_map: DeviceMap = None,
    out: Out = None,
    overwrite: Overwrite = False,
) -> None:
    """Circuit discovery: score every edge (exact / eap / eap-ig), the faithfulness curve over
    MIB's circuit sizes with CPR and CMD, the chosen circuit's faithfulness (the top k edges,
    or acdc's kept edges), its causal-scrubbing score and its divergence audit."""
    from .. import circuits, validate
    from ..results import check_target, plot_writer

    with friendly_errors():
        spec = check_task_options(task, n, seed)
        _check(method, top_k, steps, n_boot, top, tau, ig, positions, selection)
        if audit and n < AUDIT_MIN_N:
            raise validate.fail(
                "--n",
                n,
                f"the divergence audit needs at least {AUDIT_MIN_N} examples",
                f"use --n {AUDIT_MIN_N} or more, or --no-audit",
            )
        memory = max_memory_option(max_memory)
        extra = (*(("scrub",) if scrub else ()), *(("audit",) if audit else ()))
        if out is not None:
            for name in ("scores", "curve", "circuit", *extra):
                check_target(out / name, overwrite=overwrite, name="--out")
        m = load_model(model, device, device_map)
        t = build_task(spec, m, n, seed)
        # --ig and --positions join the resume key only when set, so earlier runs' folders
        # still resume
        opts = [
            method,
            steps,
            tau,
            n_boot,
            seed,
            memory,
            *([ig] if ig != "inputs" else []),
            *([f"positions={positions}"] if positions != "all" else []),
        ]
        record = {"model": model, "task": task, "n": n, "opts": opts}
        # a run saving to --out keeps the scorer's finished chunks beside it (resumable)
        with resumable(out, "circuit", record) as partial:
            scores = partial.run(
                "scores",
                lambda ck: _score(
                    m, t, method, steps, tau, n_boot, seed, memory, ck, ig, positions
                ),
            )
            if method != "acdc" and top_k > len(scores.edge):
                raise validate.fail(
                    "--top-k",
                    top_k,
                    f"is more than the model's {len(scores.edge)} edges",
                    "keep fewer",
                )
            console.print(scores.summary(k=0))
            print_frame(
                scores.top(top)[["edge", "score", "score_ci_low", "score_ci_high"]],
                title=f"top {top} edges by |score| ({round(scores.level * 100)}% CI)",
            )
            with progress_bar("faithfulness curve") as advance:
                curve = circuits.faithfulness_curve(
                    m,
                    t,
                    scores,
                    selection=selection,
                    n_boot=n_boot,
                    seed=seed,
                    max_memory=memory,
                    progress=advance,
                )
            console.print(curve.summary())
            if method == "acdc":
                circuit = scores.kept()
            elif selection == "greedy":
                circuit = scores.greedy(top_k)
            else:
                circuit = scores.top_k(top_k)
            chosen = circuits.faithfulness(
                m, t, circuit, n_boot=n_boot, seed=seed, max_memory=memory
            )
            console.print(chosen.summary())
            results: list[tuple[str, Any]] = [
                ("scores", scores),
                ("curve", curve),
                ("circuit", chosen),
            ]
            if scrub and (scrubbed := _scrub(m, t, circuit, n_boot, seed, memory)) is not None:
                results.append(("scrub", scrubbed))
            if audit:
                results.append(("audit", _audit(m, t, circuit, seed)))
            if out is not None:
                for name, res in results:
                    extras = {"plot.png": plot_writer(res)}
                    if name == "circuit":  # the chosen circuit drawn layer by layer
                        extras["circuit.png"] = _drawing(circuit)
                    save_result(res, out / name, overwrite=overwrite, extras=extras)
                console.print("wrote " + ", ".join(f"{out}/{name}" for name, _ in results))


def _drawing(circuit: Any) -> Any:
    """A writer of ``circuit.plot()`` for ``Result.save(extras=...)``."""

    def write(path: Path) -> None:
        circuit.plot().savefig(path, dpi=150)

    return write


def _scrub(m: Any, t: Any, circuit: Any, n_boot: int, seed: int, memory: Any) -> Any:
    """The circuit's causal-scrubbing result (every task example a reference once): the
    per-node tree (``circuit.to_hypothesis(model=m)``, a datum per node) when it has at most
    ``MAX_NODES`` nodes, else the global mode evaluated as one DAG
    (``fl.circuits.scrub``), with a note; None with a note when the circuit cannot be scrubbed
    (per-position edges)."""
    from ..circuits import scrub as circuit_scrub
    from ..circuits.hypothesis import MAX_NODES, heads_per_group, tree_size
    from ..errors import InputError
    from ..scrubbing import Hypothesis, SameFeature, field, scrub

    opts: dict[str, Any] = {"seed": seed, "n_boot": n_boot, "max_memory": memory}
    other = None
    mask = t.clean.mask
    if mask is not None and mask.long().sum(-1).unique().numel() > 1:
        # right-padded prompts of several lengths: a resampled prompt of another length would
        # put another position's activations (or padding's) where the answer is read, so every
        # resampled datum, the baseline's included, is a prompt of the reference's length (its
        # last token, where the answer is read, at the same position)
        other = SameFeature(field("positions"))
        base = Hypothesis("random input of the same length", sampler=other)
        opts["baselines"] = {"random": base}
        console.print(
            "note: the task's prompts differ in length: every resampled prompt (the baseline's "
            "too) is drawn among those of the reference's length",
            markup=False,
        )
    try:
        size = tree_size(circuit.edges, heads_per_group(m))
        hypothesis = circuit.to_hypothesis(model=m, other=other) if size <= MAX_NODES else None
    except InputError as e:
        console.print(f"note: no causal scrubbing of this circuit: {e}", markup=False)
        return None
    with progress_bar("causal scrubbing") as advance:
        if hypothesis is not None:
            res = scrub(m, hypothesis=hypothesis, data=t, progress=advance, **opts)
        else:
            console.print(
                f"note: the circuit has {size:,} paths from the logits (more than {MAX_NODES:,} "
                "for the per-node tree): scrubbed with unimportant='global' (one random datum "
                "for every edge outside the circuit) as one DAG (fl.circuits.scrub)",
                markup=False,
            )
            res = circuit_scrub(m, t, circuit, other=other, progress=advance, **opts)
    console.print(res.summary())
    return res


def _audit(m: Any, t: Any, circuit: Any, seed: int) -> Any:
    """The divergence audit of the circuit's run at the final residual stream (its metric
    positions), against the natural clean and corrupted runs."""
    from ..circuits import EdgeGraph, circuit_interventions
    from ..divergence.audit import audit

    site = EdgeGraph(m).reader("logits").residual
    with status("divergence audit..."):
        ivs = circuit_interventions(m, t, circuit)
        res = audit(m, t, {"circuit": ivs}, site, base="clean", seed=seed)
    console.print(res.summary(), markup=False, highlight=False, soft_wrap=True)
    return res


#: The commands of this module, in the order of ``faithlens --help``.
COMMANDS = (("circuit", circuit_cmd),)


def register(app: typer.Typer) -> None:
    for name, command in COMMANDS:
        app.command(name)(command)
