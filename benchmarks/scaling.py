"""Benchmark: sweeps on the Ray executor with 1 and 2 workers, against in process.

The workloads (issue 16; ``--workloads``, all three by default):

``smollm2-ioi``
    ``fl.patch(smollm2, ioi, "head")``: SmolLM2-135M's 270 heads patched on IOI, the
    examples in chunks of ``--smollm2-max-memory`` (the workers load the model once).
``neurons``
    ``fl.neurons.explain`` on planted activations: the bootstrap's unit blocks (units x
    concepts x resamples), work with no model, in blocks of ``--neuron-max-memory``.
``induction``
    ``fl.patch(zoo:induction, induction_task(n), "head")`` with a memory budget
    (``--max-memory``) small enough that the examples fall into several chunks.

Three runs of each
workload, in one invocation, on one machine:

``inprocess``
    :class:`faithlens.executor.InProcess`, torch on one thread (the baseline).
``ray x1``
    ``executor("ray", workers=1)``: one actor of one CPU (one torch thread).
``ray x2``
    ``executor("ray", workers=2)``: two such actors.

Each Ray executor first runs the sweep once untimed (the workers start and load the model);
then ``--reps`` rounds each time the three runs, in a rotating order, so that a change in the
machine's load falls on all three alike. Every result must equal the in-process one bit for bit
(checked). Printed: the medians, the 2-worker speedup over 1 worker (``ray x1 / ray x2``, the
median of the rounds' ratios) and Ray's overhead per work item against in process
(``(ray x1 - inprocess) / items``, and as a share of the in-process time). The chunk plans and
the bootstrap of the effects run in the calling process in every case, so they are not sped up
(with Ray they overlap the workers' chunks).

Run: ``python benchmarks/scaling.py [--workloads smollm2-ioi,neurons,induction] [--reps 5]`` (needs ``faithlens[ray]``; it
starts and stops a local cluster).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import faithlens as fl
from faithlens.executor import InProcess, executor
from faithlens.tasks.induction import induction_task


class Counting(InProcess):
    """In process, counting the work items handed to ``map_model``."""

    name = "counting"

    def __init__(self) -> None:
        self.items = 0

    def map_model(self, model, fn, items, *args, tick=None):  # type: ignore[no-untyped-def]
        items = list(items)
        self.items += len(items)
        return super().map_model(model, fn, items, *args, tick=tick)


def timed(fn: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def same_patch(a: Any, b: Any) -> bool:
    return all(
        np.array_equal(np.asarray(getattr(a, f)), np.asarray(getattr(b, f)), equal_nan=True)
        for f in ("effect", "se", "ci_low", "ci_high", "patched")
    )


def same_neurons(a: Any, b: Any) -> bool:
    return all(
        np.array_equal(np.asarray(getattr(a, f)), np.asarray(getattr(b, f)), equal_nan=True)
        for f in ("freq", "lower", "upper", "scores")
    )


def induction(a: argparse.Namespace) -> tuple[str, Callable[[], Any], Callable[..., bool]]:
    """zoo:induction, every head patched, in chunks of ``--max-memory``."""
    model = fl.load("zoo:induction")
    task = induction_task(a.n, seed=0)

    def sweep() -> Any:
        return fl.patch(model, task, "head", n_boot=a.n_boot, max_memory=a.max_memory)

    return f"zoo:induction head sweep, n={a.n}", sweep, same_patch


def smollm2_ioi(a: argparse.Namespace) -> tuple[str, Callable[[], Any], Callable[..., bool]]:
    """SmolLM2-135M on IOI, every one of its 270 heads patched (the workers load the model
    from its ``fl.load`` spec once)."""
    model = fl.load("smollm2")
    task = fl.tasks.build("ioi", model, n=a.smollm2_n, seed=0)

    def sweep() -> Any:
        return fl.patch(model, task, "head", n_boot=a.n_boot, max_memory=a.smollm2_max_memory)

    return f"SmolLM2 IOI head sweep, n={a.smollm2_n}", sweep, same_patch


def neurons(a: argparse.Namespace) -> tuple[str, Callable[[], Any], Callable[..., bool]]:
    """The neuron bootstrap (``fl.neurons.explain``): units x concepts x resamples in unit
    blocks, work with no model."""
    from faithlens import neurons as N

    g = torch.Generator().manual_seed(0)
    c = (torch.rand(a.neuron_n, 8, generator=g) < 0.2).float()
    signal = 3 * c[:, :4] + torch.randn(a.neuron_n, 4, generator=g)
    noise = torch.randn(a.neuron_n, a.neuron_units - 4, generator=g)
    x = torch.cat([signal, noise], 1)
    kw = {"metric": ["iou", "auprc"], "n_boot": a.neuron_boot, "seed": 1}

    def sweep() -> Any:
        return N.explain(x, c, max_memory=a.neuron_max_memory, **kw)

    name = f"neuron bootstrap, {a.neuron_units} units x 8 concepts, n={a.neuron_n}"
    return name + f", {a.neuron_boot} resamples", sweep, same_neurons


WORKLOADS = {"induction": induction, "smollm2-ioi": smollm2_ioi, "neurons": neurons}


def measure(a: argparse.Namespace, name: str) -> None:
    """The three runs of one workload, ``--reps`` rotating rounds, printed."""
    title, sweep, same = WORKLOADS[name](a)
    counter = Counting()
    with executor(counter):
        ref = sweep()
    items = counter.items
    with executor("ray", workers=1) as one, executor("ray", workers=2) as two:
        for ex in (one, two):
            ex.worker_pids()
            with executor(ex):
                assert same(sweep(), ref)  # untimed: the workers load the model
        runs: dict[str, Any] = {"inprocess": InProcess(), "ray x1": one, "ray x2": two}
        times: dict[str, list[float]] = {k: [] for k in runs}
        for r in range(a.reps):
            names = list(runs)[r % 3 :] + list(runs)[: r % 3]  # rotate the order
            for run in names:
                with executor(runs[run]):
                    t, got = timed(sweep)
                assert same(got, ref), f"{run}: the result differs from in process"
                times[run].append(t)
    med = {k: float(np.median(v)) for k, v in times.items()}
    ratio = np.array(times["ray x1"]) / np.array(times["ray x2"])
    over = np.array(times["ray x1"]) / np.array(times["inprocess"]) - 1
    print(f"{title}: {items} work items, {a.reps} rounds, one torch thread per process")
    for run, v in times.items():
        print(f"  {run:10s} median {med[run]:7.3f} s  (min {min(v):.3f}, max {max(v):.3f})")
    print(
        f"  speedup, 2 workers over 1: {np.median(ratio):.2f}x median of rounds "
        f"({med['ray x1'] / med['ray x2']:.2f}x of medians)"
    )
    print(
        f"  Ray (1 worker) against in process: "
        f"{(med['ray x1'] - med['inprocess']) / items * 1e3:+.1f} ms per work item, "
        f"{np.median(over) * 100:+.1f} % of the in-process time (median of rounds)"
    )
    print("  every result equal to the in-process one, bit for bit: yes", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--workloads",
        default="smollm2-ioi,neurons,induction",
        help="comma-separated, of: " + ", ".join(WORKLOADS),
    )
    ap.add_argument("--n", type=int, default=128, help="examples in the induction task")
    ap.add_argument("--max-memory", type=int, default=1 << 20, help="bytes per chunk budget")
    ap.add_argument("--smollm2-n", type=int, default=8, help="IOI examples (SmolLM2)")
    ap.add_argument("--smollm2-max-memory", type=int, default=256 << 20)
    ap.add_argument("--neuron-n", type=int, default=4000, help="examples (neuron bootstrap)")
    ap.add_argument("--neuron-units", type=int, default=64)
    ap.add_argument("--neuron-boot", type=int, default=200)
    ap.add_argument("--neuron-max-memory", type=int, default=4 << 20)
    ap.add_argument("--n-boot", type=int, default=100)
    ap.add_argument("--reps", type=int, default=5, help="rounds of the three runs")
    a = ap.parse_args()
    chosen = [w.strip() for w in a.workloads.split(",") if w.strip()]
    unknown = sorted(set(chosen) - set(WORKLOADS))
    if unknown:
        ap.error(f"--workloads: unknown {unknown}; choose from {sorted(WORKLOADS)}")
    import ray

    torch.set_num_threads(1)
    # 3 logical CPUs: the 1-worker and the 2-worker executor are held at once (an idle actor
    # uses no CPU), so that their runs and the in-process ones can alternate round by round
    ray.init(num_cpus=3, include_dashboard=False, configure_logging=False)
    try:
        for name in chosen:
            measure(a, name)
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
