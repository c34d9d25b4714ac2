"""``faithlens patch`` and ``faithlens path-patch``: activation, attribution and path patching
sweeps from the shell."""

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
    comma_list,
    console,
    friendly_errors,
    load_model,
    max_memory_option,
    print_frame,
    progress_bar,
    save_result,
    task_option,
)
from ._resume import resumable

# ------------------------------------------------------------------ options of both commands

N = Annotated[int, typer.Option("--n", help="Number of task examples.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed for the task and the bootstrap.")]
Direction = Annotated[
    str,
    typer.Option("--direction", help="denoising (clean into corrupted) or noising."),
]
Top = Annotated[
    int, typer.Option("--top", "--max-rows", help="Rows of the printed table (by |effect|).")
]
Checkpoint = Annotated[
    Path | None,
    typer.Option(
        "--checkpoint",
        help="Folder to keep finished chunks of examples; rerunning the command resumes "
        "(default with --out: a hidden .OUT.partial folder beside it, removed once saved).",
    ),
]
Out = Annotated[
    Path | None,
    typer.Option(
        "--out", "-o", help="Folder for result.json, table.parquet, arrays.npz and heatmap.png."
    ),
]

# ------------------------------------------------------------------ options of one command

PatchModel = Annotated[
    str,
    typer.Option("--model", "-m", help="Model name (smollm2, minilm, zoo:NAME) or local folder."),
]
Sites = Annotated[
    str,
    typer.Option(
        "--sites",
        "-s",
        help="Site group (head, mlp, attn, resid, resid_post, mlp_post, q, k, v, pattern) or comma-separated site names (pattern.L.H: one head's attention pattern).",
    ),
]
Positions = Annotated[str, typer.Option("--positions", "-p", help="all | last | each.")]
Attribution = Annotated[
    bool,
    typer.Option("--attribution", help="Gradient approximation instead of exact patching."),
]
Receivers = Annotated[
    str,
    typer.Option(
        "--receivers",
        "-r",
        help="Comma-separated receiving nodes (head.L.H, mlp.L), or logits for the senders' "
        "direct effect on the output.",
    ),
]
PathModel = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="Model name (smollm2, zoo:NAME) or local folder; a pre-LN transformer.",
    ),
]
Senders = Annotated[
    str,
    typer.Option(
        "--senders",
        "-s",
        help="head (every head), mlp (every MLP) or comma-separated nodes (head.L.H, mlp.L); "
        "from a group, senders with no edge into the receivers are skipped.",
    ),
]
Ports = Annotated[
    str, typer.Option("--ports", help="Inputs of the receiving heads to patch: any of q, k, v.")
]
SenderPositions = Annotated[
    str, typer.Option("--positions", "-p", help="Where senders are patched: all | last.")
]
ReceiverPositions = Annotated[
    str,
    typer.Option("--receiver-positions", help="Where receivers' inputs are patched: all | last."),
]


def check_task_options(task: str, n: int, seed: int) -> Any:
    """``--task``, ``--n`` and ``--seed``, checked before the model loads (a task file is read
    and checked line by line): :func:`~._common.task_option`."""
    return task_option(task, n, seed)


def _check_sites_option(sites: str) -> str | list[str]:
    """``--sites``: a group or comma-separated names; never the logits (the metric's output)."""
    from .. import validate

    names = comma_list(sites, str, "--sites")
    if not names:
        raise validate.fail("--sites", sites, "names no site", "give a group such as head")
    for s in names:
        if s.split("[")[0].strip() == "logits":
            raise validate.fail(
                "--sites",
                sites,
                "patching the logits replaces the very output the metric reads",
                "patch sites upstream of the output (head, mlp, resid, ln_final)",
            )
    return names[0] if len(names) == 1 and "," not in sites else names


def _expose_patterns_if_named(model: Any, site_arg: str | list[str]) -> None:
    """``--sites pattern`` (or ``pattern.L`` / ``pattern.L.H`` names): the attention patterns
    are sites once exposed (:func:`faithlens.models.patterns.expose_patterns`), so expose them."""
    from ..models.patterns import expose_patterns

    names = [site_arg] if isinstance(site_arg, str) else site_arg
    if any(str(s).split(".")[0].split("[")[0].strip() in ("pattern", "patterns") for s in names):
        expose_patterns(model)


def _check_common(direction: str, n_boot: int, top: int) -> None:
    from .. import validate
    from ..patching.sweep import DIRECTIONS

    validate.choice("--direction", direction, DIRECTIONS)
    validate.n_boot(n_boot, "--n-boot")
    validate.positive_int("--top", top, fix="the number of table rows to print, e.g. 15")


def _write(res: Any, out: Path, overwrite: bool) -> None:
    """Save a patching result and its heatmap to ``out``, in one atomic write."""
    from ..results import plot_writer

    save_result(
        res,
        out,
        overwrite=overwrite,
        extras={"heatmap.png": plot_writer(res, 150)},
        message=f"wrote {out}/result.json, table.parquet, arrays.npz, heatmap.png",
    )


def patch_cmd(
    model: PatchModel = "smollm2",
    task: TaskName = "ioi",
    sites: Sites = "head",
    positions: Positions = "all",
    n: N = 16,
    seed: Seed = 0,
    direction: Direction = "denoising",
    attribution: Attribution = False,
    n_boot: NBoot = 1000,
    top: Top = 15,
    max_memory: MaxMemory = None,
    device: Device = None,
    device_map: DeviceMap = None,
    out: Out = None,
    overwrite: Overwrite = False,
    checkpoint: Checkpoint = None,
) -> None:
    """Patch every site of a group and report each site's effect with a confidence interval.

    Time: every head of SmolLM2 on IOI takes a few minutes on a 2-core CPU (less with a
    smaller --n); a run that has minutes left says about how many once its first steps are
    done."""
    from .. import validate
    from ..patching.sweep import POSITION_MODES
    from ..results import check_target

    with friendly_errors():
        spec = check_task_options(task, n, seed)
        _check_common(direction, n_boot, top)
        validate.choice("--positions", positions, POSITION_MODES)
        site_arg = _check_sites_option(sites)
        memory = max_memory_option(max_memory)
        if out is not None:
            check_target(out, overwrite=overwrite, name="--out")
        m = load_model(model, device, device_map)
        _expose_patterns_if_named(m, site_arg)
        t = build_task(spec, m, n, seed)
        opts = [site_arg, positions, direction, attribution, n_boot, seed, memory]
        # without --checkpoint, a run saving to --out keeps its chunks beside it (resumable)
        keep = None if checkpoint is not None else out
        with resumable(keep, "patch", {"model": model, "task": task, "n": n, "opts": opts}) as p:
            sub = "attribution" if attribution else "exact"
            res = p.run(
                sub,
                lambda ck: _run_patch(
                    m,
                    t,
                    site_arg,
                    positions,
                    direction,
                    attribution,
                    n_boot,
                    seed,
                    memory,
                    checkpoint or ck,
                ),
            )
            _print_patch(res, direction, top)
            if out is not None:
                _write(res, out, overwrite)


def _run_patch(
    m: Any,
    t: Any,
    site_arg: str | list[str],
    positions: str,
    direction: str,
    attribution: bool,
    n_boot: int,
    seed: int,
    memory: int | None,
    checkpoint: Path | None = None,
) -> Any:
    """The sweep: exact patching or attribution patching, with a progress bar."""
    from .. import patching

    if attribution:
        with progress_bar("attribution patching") as advance:
            return patching.attribution_patch(
                m,
                t,
                site_arg,
                positions=positions,
                direction=direction,
                n_boot=n_boot,
                seed=seed,
                progress=advance,
                max_memory=memory,
                checkpoint=checkpoint,
            )
    with progress_bar("patching") as advance:
        return patching.patch(
            m,
            t,
            site_arg,
            positions=positions,
            direction=direction,
            n_boot=n_boot,
            seed=seed,
            progress=advance,
            max_memory=memory,
            checkpoint=checkpoint,
        )


def _print_patch(res: Any, direction: str, top: int) -> None:
    """The summary line, the clean and corrupted metric, and the top sites by |effect|."""
    console.print(res.summary(k=0).split("\n", 1)[0])
    clean, corrupted = (
        (res.source, res.base) if direction == "denoising" else (res.base, res.source)
    )
    console.print(
        f"metric {res.metric}: clean {float(clean.mean()):.3f}, "
        f"corrupted {float(corrupted.mean()):.3f}"
    )
    cols = ["site", "layer", "head", "position", "effect", "effect_ci_low", "effect_ci_high"]
    print_frame(
        res.top(top)[cols],
        title=f"top {top} sites by |effect| ({int(res.level * 100)}% CI)",
    )


def path_patch_cmd(
    receivers: Receivers,
    model: PathModel = "smollm2",
    task: TaskName = "ioi",
    senders: Senders = "head",
    ports: Ports = "qkv",
    positions: SenderPositions = "all",
    receiver_positions: ReceiverPositions = "all",
    n: N = 16,
    seed: Seed = 0,
    direction: Direction = "denoising",
    n_boot: NBoot = 1000,
    top: Top = 15,
    max_memory: MaxMemory = None,
    device: Device = None,
    device_map: DeviceMap = None,
    out: Out = None,
    overwrite: Overwrite = False,
    checkpoint: Checkpoint = None,
) -> None:
    """Path patching: each sender's effect through its direct edges into the receivers only
    (the rest of the model keeps its corrupted values), with a confidence interval.

    Time: every head of SmolLM2 as senders takes about 4 minutes on a 2-core CPU (less with a
    smaller --n); a run that has minutes left says about how many once its first steps are
    done."""
    from .. import patching
    from ..results import check_target

    with friendly_errors():
        spec = check_task_options(task, n, seed)
        _check_common(direction, n_boot, top)
        port_list = _check_path_options(positions, receiver_positions, ports)
        memory = max_memory_option(max_memory)
        if out is not None:
            check_target(out, overwrite=overwrite, name="--out")
        recv, send = _path_nodes(receivers, senders)
        m = load_model(model, device, device_map)
        t = build_task(spec, m, n, seed)
        opts: dict[str, Any] = {
            "receiver_ports": port_list,
            "positions": positions,
            "receiver_positions": receiver_positions,
            "direction": direction,
            "n_boot": n_boot,
            "seed": seed,
            "max_memory": memory,
        }
        record = {"model": model, "task": task, "n": n, "nodes": [send, recv], **opts}

        def run(ck: Path | None) -> Any:
            with progress_bar("path patching") as advance:
                return patching.path_patch(
                    m, t, send, recv, progress=advance, checkpoint=checkpoint or ck, **opts
                )

        with resumable(None if checkpoint is not None else out, "path-patch", record) as p:
            res = p.run("path", run)
            console.print(res.summary(k=0).split("\n", 1)[0])
            cols = ["site", "layer", "head", "effect", "effect_ci_low", "effect_ci_high"]
            print_frame(
                res.top(top)[cols],
                title=f"top {top} senders by |effect| ({int(res.level * 100)}% CI)",
            )
            if out is not None:
                _write(res, out, overwrite)


def _check_path_options(positions: str, receiver_positions: str, ports: str) -> list[str]:
    """``--positions``, ``--receiver-positions`` and ``--ports`` (returned as a list)."""
    from .. import validate
    from ..patching.path import PORTS, SENDER_POSITIONS

    validate.choice("--positions", positions, SENDER_POSITIONS)
    validate.choice("--receiver-positions", receiver_positions, SENDER_POSITIONS)
    port_list = [p for p in ports.replace(",", "") if p.strip()]
    if not port_list or not set(port_list) <= set(PORTS):
        raise validate.fail("--ports", ports, "takes any of q, k, v", "e.g. --ports qkv")
    return port_list


def _path_nodes(receivers: str, senders: str) -> tuple[list[str], str | list[str]]:
    """``--receivers`` (at least one) and ``--senders`` (a group or a list of nodes)."""
    from .. import validate

    recv = comma_list(receivers, str, "--receivers")
    if not recv:
        raise validate.fail("--receivers", receivers, "names no receiver", "e.g. logits")
    send: str | list[str] = (
        senders if senders in ("head", "mlp") else comma_list(senders, str, "--senders")
    )
    return recv, send


#: The commands of this module, in the order of ``faithlens --help``.
COMMANDS = (("patch", patch_cmd), ("path-patch", path_patch_cmd))


def register(app: typer.Typer) -> None:
    for name, command in COMMANDS:
        app.command(name)(command)
