"""``faithlens patch`` and ``faithlens path-patch``: activation, attribution and path patching
sweeps from the shell."""

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


def check_task_options(task: str, n: int, seed: int) -> None:
    """``--task``, ``--n`` and ``--seed``, checked before the model loads."""
    from .. import tasks, validate

    validate.choice("--task", task, sorted(tasks.REGISTRY), fix="choose a registered task")
    validate.positive_int("--n", n, fix="a task needs at least one example")
    validate.nonnegative_int("--seed", seed)


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


def _check_common(direction: str, n_boot: int, top: int) -> None:
    from .. import validate
    from ..patching.sweep import DIRECTIONS

    validate.choice("--direction", direction, DIRECTIONS)
    validate.n_boot(n_boot, "--n-boot")
    validate.positive_int("--top", top, fix="the number of table rows to print, e.g. 15")


def _write(res: Any, out: Path, overwrite: bool) -> None:
    """Save a patching result and its heatmap to ``out``, in one atomic write."""
    from ..results import plot_writer

    res.save(out, overwrite=overwrite, extras={"heatmap.png": plot_writer(res, 150)})
    console.print(f"wrote {out}/result.json, table.parquet, arrays.npz, heatmap.png")


def register(app: typer.Typer) -> None:
    @app.command("patch")
    def patch_cmd(
        model: str = typer.Option(
            "smollm2",
            "--model",
            "-m",
            help="Model name (smollm2, minilm, zoo:NAME) or local folder.",
        ),
        task: str = typer.Option("ioi", "--task", "-t", help="Registered task (ioi, ...)."),
        sites: str = typer.Option(
            "head",
            "--sites",
            "-s",
            help="Site group (head, mlp, attn, resid, resid_post, mlp_post, q, k, v) or comma-separated site names.",
        ),
        positions: str = typer.Option("all", "--positions", "-p", help="all | last | each."),
        n: int = typer.Option(16, "--n", help="Number of task examples."),
        seed: int = typer.Option(0, "--seed", help="Seed for the task and the bootstrap."),
        direction: str = typer.Option(
            "denoising", "--direction", help="denoising (clean into corrupted) or noising."
        ),
        attribution: bool = typer.Option(
            False, "--attribution", help="Gradient approximation instead of exact patching."
        ),
        n_boot: int = typer.Option(
            1000, "--n-boot", help="Bootstrap resamples for the confidence intervals."
        ),
        top: int = typer.Option(15, "--top", help="Rows of the printed table."),
        device: str = typer.Option(None, "--device", help="cpu, cuda, cuda:1... (default: cpu)."),
        out: Path = typer.Option(
            None,
            "--out",
            "-o",
            help="Folder for result.json, table.parquet, arrays.npz and heatmap.png.",
        ),
        overwrite: bool = typer.Option(
            False, "--overwrite", help="Replace an existing --out folder (default: refuse)."
        ),
    ) -> None:
        """Patch every site of a group and report each site's effect with a confidence interval."""
        from .. import patching, tasks, validate
        from ..patching.sweep import POSITION_MODES
        from ..results import check_target

        with friendly_errors():
            check_task_options(task, n, seed)
            _check_common(direction, n_boot, top)
            validate.choice("--positions", positions, POSITION_MODES)
            site_arg = _check_sites_option(sites)
            if out is not None:
                check_target(out, overwrite=overwrite, name="--out")
            m = load_model(model, device)
            t = tasks.build(task, m, n=n, seed=seed)
            if attribution:
                with console.status("attribution patching (2 forward passes, 1 backward)..."):
                    res = patching.attribution_patch(
                        m,
                        t,
                        site_arg,
                        positions=positions,
                        direction=direction,
                        n_boot=n_boot,
                        seed=seed,
                    )
            else:
                with progress_bar("patching") as advance:
                    res = patching.patch(
                        m,
                        t,
                        site_arg,
                        positions=positions,
                        direction=direction,
                        n_boot=n_boot,
                        seed=seed,
                        progress=advance,
                    )
            console.print(res.summary(k=0).split("\n", 1)[0])
            console.print(
                f"metric {res.metric}: clean {float(res.source.mean() if direction == 'denoising' else res.base.mean()):.3f}, "
                f"corrupted {float(res.base.mean() if direction == 'denoising' else res.source.mean()):.3f}"
            )
            cols = [
                "site",
                "layer",
                "head",
                "position",
                "effect",
                "effect_ci_low",
                "effect_ci_high",
            ]
            print_frame(
                res.top(top)[cols],
                title=f"top {top} sites by |effect| ({int(res.level * 100)}% CI)",
            )
            if out is not None:
                _write(res, out, overwrite)

    @app.command("path-patch")
    def path_patch_cmd(
        receivers: str = typer.Option(
            ...,
            "--receivers",
            "-r",
            help="Comma-separated receiving nodes (head.L.H, mlp.L), or logits for the senders' "
            "direct effect on the output.",
        ),
        model: str = typer.Option(
            "smollm2",
            "--model",
            "-m",
            help="Model name (smollm2, zoo:NAME) or local folder; a pre-LN transformer.",
        ),
        task: str = typer.Option("ioi", "--task", "-t", help="Registered task (ioi, ...)."),
        senders: str = typer.Option(
            "head",
            "--senders",
            "-s",
            help="head (every head), mlp (every MLP) or comma-separated nodes (head.L.H, mlp.L); "
            "from a group, senders with no edge into the receivers are skipped.",
        ),
        ports: str = typer.Option(
            "qkv", "--ports", help="Inputs of the receiving heads to patch: any of q, k, v."
        ),
        positions: str = typer.Option(
            "all", "--positions", "-p", help="Where senders are patched: all | last."
        ),
        receiver_positions: str = typer.Option(
            "all", "--receiver-positions", help="Where receivers' inputs are patched: all | last."
        ),
        n: int = typer.Option(16, "--n", help="Number of task examples."),
        seed: int = typer.Option(0, "--seed", help="Seed for the task and the bootstrap."),
        direction: str = typer.Option(
            "denoising", "--direction", help="denoising (clean into corrupted) or noising."
        ),
        n_boot: int = typer.Option(
            1000, "--n-boot", help="Bootstrap resamples for the confidence intervals."
        ),
        top: int = typer.Option(15, "--top", help="Rows of the printed table."),
        device: str = typer.Option(None, "--device", help="cpu, cuda, cuda:1... (default: cpu)."),
        out: Path = typer.Option(
            None,
            "--out",
            "-o",
            help="Folder for result.json, table.parquet, arrays.npz and heatmap.png.",
        ),
        overwrite: bool = typer.Option(
            False, "--overwrite", help="Replace an existing --out folder (default: refuse)."
        ),
    ) -> None:
        """Path patching: each sender's effect through its direct edges into the receivers only
        (the rest of the model keeps its corrupted values), with a confidence interval."""
        from .. import patching, tasks, validate
        from ..patching.path import PORTS, SENDER_POSITIONS
        from ..results import check_target

        with friendly_errors():
            check_task_options(task, n, seed)
            _check_common(direction, n_boot, top)
            validate.choice("--positions", positions, SENDER_POSITIONS)
            validate.choice("--receiver-positions", receiver_positions, SENDER_POSITIONS)
            port_list = [p for p in ports.replace(",", "") if p.strip()]
            if not port_list or not set(port_list) <= set(PORTS):
                raise validate.fail("--ports", ports, "takes any of q, k, v", "e.g. --ports qkv")
            if out is not None:
                check_target(out, overwrite=overwrite, name="--out")
            recv = comma_list(receivers, str, "--receivers")
            if not recv:
                raise validate.fail("--receivers", receivers, "names no receiver", "e.g. logits")
            send: str | list[str] = (
                senders if senders in ("head", "mlp") else comma_list(senders, str, "--senders")
            )
            m = load_model(model, device)
            t = tasks.build(task, m, n=n, seed=seed)
            with progress_bar("path patching") as advance:
                res = patching.path_patch(
                    m,
                    t,
                    send,
                    recv,
                    receiver_ports=port_list,
                    positions=positions,
                    receiver_positions=receiver_positions,
                    direction=direction,
                    n_boot=n_boot,
                    seed=seed,
                    progress=advance,
                )
            console.print(res.summary(k=0).split("\n", 1)[0])
            cols = ["site", "layer", "head", "effect", "effect_ci_low", "effect_ci_high"]
            print_frame(
                res.top(top)[cols],
                title=f"top {top} senders by |effect| ({int(res.level * 100)}% CI)",
            )
            if out is not None:
                _write(res, out, overwrite)
