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
        from .. import patching, tasks
        from ..results import check_target

        with friendly_errors():
            if out is not None:
                check_target(out, overwrite=overwrite, name="--out")
            m = load_model(model, device)
            t = tasks.build(task, m, n=n, seed=seed)
            site_arg: str | list[str] = (
                sites if "," not in sites else [s.strip() for s in sites.split(",") if s.strip()]
            )
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
            cols = ["site", "layer", "head", "position", "effect", "ci_low", "ci_high"]
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
        from .. import patching, tasks
        from ..results import check_target

        with friendly_errors():
            if out is not None:
                check_target(out, overwrite=overwrite, name="--out")
            recv = comma_list(receivers, str, "--receivers")
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
                    receiver_ports=[p for p in ports.replace(",", "") if p.strip()],
                    positions=positions,
                    receiver_positions=receiver_positions,
                    direction=direction,
                    n_boot=n_boot,
                    seed=seed,
                    progress=advance,
                )
            console.print(res.summary(k=0).split("\n", 1)[0])
            cols = ["site", "layer", "head", "effect", "ci_low", "ci_high"]
            print_frame(
                res.top(top)[cols],
                title=f"top {top} senders by |effect| ({int(res.level * 100)}% CI)",
            )
            if out is not None:
                _write(res, out, overwrite)
