"""``faithlens demo``: a tour on the embedded zoo models, with nothing downloaded.

It runs an activation-patching sweep over the heads of ``zoo:induction`` and ``zoo:paren`` and
scrubs Redwood's paren-balance hypotheses on ``zoo:paren`` (:mod:`faithlens.scrubbing.paren`),
prints every table with confidence intervals, and writes a results folder.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from ._common import Overwrite, console, friendly_errors, print_frame, progress_bar, write_report

Out = Annotated[Path, typer.Option("--out", "-o", help="Results folder (created if needed).")]
N = Annotated[int, typer.Option("--n", help="Reference examples per causal-scrubbing hypothesis.")]
Pool = Annotated[int, typer.Option("--pool", help="Paren strings the scrubbing draws from.")]
PatchN = Annotated[int, typer.Option("--patch-n", help="Examples per patching sweep.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed for data, sampling and bootstraps.")]
NBoot = Annotated[
    int, typer.Option("--n-boot", help="Bootstrap resamples for the confidence intervals.")
]
Threads = Annotated[
    int,
    typer.Option(
        "--threads",
        help="torch CPU threads (the zoo models are tiny: 1 is fastest, and on a busy "
        "machine several threads can be many times slower; 0 leaves torch's default).",
    ),
]


@contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    """Run with ``threads`` torch CPU threads (0: leave as is), restored afterwards."""
    import torch

    from ..errors import InputError

    if threads < 0:
        raise InputError(f"--threads must be 0 (torch's default) or more, got {threads}")
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def demo_cmd(
    out: Out = Path("runs/demo"),
    overwrite: Overwrite = False,
    n: N = 600,
    pool: Pool = 2000,
    patch_n: PatchN = 64,
    seed: Seed = 0,
    n_boot: NBoot = 1000,
    threads: Threads = 1,
) -> None:
    """Patch the heads of the zoo models and scrub Redwood's paren-balance hypotheses on
    zoo:paren (about a minute on 2 CPU cores; nothing is downloaded). Writes OUT/summary.txt,
    OUT/patch_induction, OUT/patch_paren and OUT/paren_scrub (faithlens results, with plots)."""
    from ..errors import InputError
    from ..results import atomic_folder

    t0, c0 = time.perf_counter(), time.process_time()
    with friendly_errors(), _torch_threads(threads), ExitStack() as stack:
        if n < 2 or pool < 2 or patch_n < 2:
            raise InputError(
                f"n and pool must be at least 2 and --patch-n at least 2 (got n={n}, "
                f"pool={pool}, patch-n={patch_n})"
            )
        # Everything is written into one temporary folder, renamed into place at the end.
        tmp = stack.enter_context(atomic_folder(out, overwrite=overwrite, name="--out"))
        texts = _patch_zoo(tmp, patch_n, seed, n_boot)
        texts.append(_scrub_paren(tmp, n, pool, seed, n_boot))
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        timing = (
            f"demo took {wall:.1f} s of wall time, {cpu:.1f} s of CPU time "
            f"({threads or 'default'} torch thread(s))"
        )
        (tmp / "summary.txt").write_text("\n\n".join([*texts, timing]) + "\n")
        console.print(
            f"\n{timing}; wrote {out}/summary.txt, patch_induction/, patch_paren/, "
            "paren_scrub/ (load any of them with faithlens.Result.load)"
        )
    write_report(out, index=True)


def _patch_zoo(tmp: Path, patch_n: int, seed: int, n_boot: int) -> list[str]:
    """Patch every head of zoo:induction and zoo:paren; print, save and return each table."""
    from .. import patching
    from ..loading import load
    from ..results import plot_writer
    from ..tasks.induction import induction_task
    from ..tasks.paren import paren_task

    texts: list[str] = []
    cols = ["site", "effect", "effect_ci_low", "effect_ci_high"]
    builders: tuple[tuple[str, Any], ...] = (
        ("induction", lambda: induction_task(n=patch_n, seed=seed)),
        ("paren", lambda: paren_task(n=patch_n, seed=seed)),
    )
    for name, build in builders:
        model = load(f"zoo:{name}")
        task = build()
        with progress_bar(f"patching the heads of zoo:{name}") as advance:
            res = patching.patch(model, task, "head", n_boot=n_boot, seed=seed, progress=advance)
        title = (
            f"zoo:{name}: activation patching of every head (clean into corrupted, "
            f"{patch_n} examples; effect = share of the clean metric restored, "
            f"{round(100 * res.level)}% CI)"
        )
        print_frame(res.to_frame()[cols], title=title, max_rows=50)
        res.save(tmp / f"patch_{name}", extras={"heatmap.png": plot_writer(res, 120)})
        texts.append(title + "\n" + res.to_frame()[cols].to_string(index=False))
    return texts


def _scrub_paren(tmp: Path, n: int, pool: int, seed: int, n_boot: int) -> str:
    """Scrub Redwood's paren-balance hypotheses on zoo:paren; print, save and return the
    comparison."""
    from ..loading import load
    from ..results import plot_writer
    from ..scrubbing.paren import PAREN_HYPOTHESES, replicate_paren

    model = load("zoo:paren")
    names = list(PAREN_HYPOTHESES)
    with progress_bar("scrubbing the paren hypotheses") as advance:
        done: list[str] = []

        def step(name: str) -> None:
            advance(len(done), len(names))
            done.append(name)

        rep, results = replicate_paren(
            model, n=n, pool=pool, seed=seed, n_boot=n_boot, progress=step
        )
    console.print()
    console.print(rep.summary())
    scrubs = {f"scrub{i}": r.save for i, r in enumerate(results.values())}
    rep.save(tmp / "paren_scrub", extras={"recovered.png": plot_writer(rep, 120), **scrubs})
    return str(rep.summary())


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_cmd)
