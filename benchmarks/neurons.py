"""Throughput of ``fl.neurons.explain`` against a straightforward per-unit loop.

The vectorised pipeline (scores, bounds, a bootstrap ensemble of B resamples shared by all units,
BE sets) runs at the requested scale; the baseline is what one writes without faithlens: for each
unit and each resample, materialise the resample, sort, threshold and score every concept with
numpy (IoU), or rank and use the Mann-Whitney formula (AUROC). The baseline is timed on a subset
of units and resamples and extrapolated linearly (it is linear in both); the output says so.

    python benchmarks/neurons.py                       # 4096 units, 1000 concepts, 10k samples, B=1000
    python benchmarks/neurons.py --quick               # a small smoke run
    python benchmarks/neurons.py --metric auroc --units 512 --boot 200
    python benchmarks/neurons.py --validate            # also the large coverage simulation
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
from scipy.stats import rankdata

import faithlens.neurons as N


def make_data(n: int, units: int, concepts: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    freqs = 0.01 + 0.19 * torch.rand(concepts, generator=g)
    c = (torch.rand(n, concepts, generator=g) < freqs).float()
    x = torch.randn(n, units, generator=g)
    # every 8th unit detects a concept
    for u in range(0, units, 8):
        x[:, u] += 2.5 * c[:, (u // 8) % concepts]
    return x, c


def baseline_iou(
    x: np.ndarray, c: np.ndarray, alpha: float, n_boot: int, rng: np.random.Generator
) -> None:
    n = x.shape[0]
    k = math.ceil(alpha * n)
    for u in range(x.shape[1]):
        for _ in range(n_boot):
            idx = rng.integers(0, n, n)
            xb, cb = x[idx, u], c[idx]
            fire = np.zeros(n, dtype=bool)
            fire[np.argsort(-xb, kind="stable")[:k]] = True
            inter = cb[fire].sum(0)
            union = k + cb.sum(0) - inter
            _ = inter / union


def baseline_auroc(x: np.ndarray, c: np.ndarray, n_boot: int, rng: np.random.Generator) -> None:
    n = x.shape[0]
    for u in range(x.shape[1]):
        for _ in range(n_boot):
            idx = rng.integers(0, n, n)
            xb, cb = x[idx, u], c[idx]
            r = rankdata(xb)
            pos = cb.sum(0)
            _ = (r @ cb - pos * (pos + 1) / 2) / (pos * (n - pos))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--units", type=int, default=4096)
    ap.add_argument("--concepts", type=int, default=1000)
    ap.add_argument("--samples", type=int, default=10_000)
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--metric", default="iou", choices=["iou", "auroc"])
    ap.add_argument("--alpha", type=float, default=0.01)
    ap.add_argument("--baseline-units", type=int, default=4)
    ap.add_argument("--baseline-boot", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    ap.add_argument(
        "--quick", action="store_true", help="512 units, 200 concepts, 5k samples, B=100"
    )
    ap.add_argument(
        "--validate", action="store_true", help="also run the large coverage simulation"
    )
    args = ap.parse_args()
    if args.quick:
        args.units, args.concepts, args.samples, args.boot = 512, 200, 5000, 100
    if args.threads:
        torch.set_num_threads(args.threads)
    U, M, n, B = args.units, args.concepts, args.samples, args.boot
    print(
        f"faithlens.neurons benchmark: {U} units x {M} concepts x {n} samples, B={B} resamples, "
        f"metric={args.metric}, torch threads={torch.get_num_threads()}"
    )
    x, c = make_data(n, U, M, seed=0)

    done = [0, 0]

    def progress(a: int, b: int) -> None:
        done[:] = [a, b]

    t0 = time.perf_counter()
    res = N.explain(x, c, args.metric, alpha=args.alpha, n_boot=B, seed=0, progress=progress)
    t_vec = time.perf_counter() - t0
    cells = U * M * B
    print(
        f"vectorised explain (scores + bounds + B resamples + BE sets): {t_vec:.1f} s "
        f"= {cells / t_vec:.3g} unit-concept-resamples/s"
    )
    print(
        f"  certified: {int(res.certified().sum())}/{U} units; "
        f"median BE set size {float(np.median(res.be_set().sum(1))):.0f}"
    )

    bu, bb = min(args.baseline_units, U), min(args.baseline_boot, B)
    xn, cn = x[:, :bu].numpy(), c.numpy()
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    if args.metric == "iou":
        baseline_iou(xn, cn, args.alpha, bb, rng)
    else:
        baseline_auroc(xn, cn, bb, rng)
    t_sub = time.perf_counter() - t0
    t_base = t_sub / (bu * bb) * U * B
    print(
        f"per-unit loop baseline: {t_sub:.2f} s for {bu} units x {bb} resamples, "
        f"extrapolated linearly to {U} x {B}: {t_base:.0f} s "
        f"= {cells / t_base:.3g} unit-concept-resamples/s"
    )
    print(
        f"speed-up of the vectorised pipeline: {t_base / t_vec:.1f}x "
        "(the baseline computes scores only: no bounds, no BE sets)"
    )

    if args.validate:
        from faithlens.neurons.simulate import simulate

        t0 = time.perf_counter()
        v = simulate(
            ["accuracy", "iou", "auroc", "f1", "precision", "recall"],
            (100, 300, 1000, 3000),
            reps=1000,
            p=0.1,
            seed=0,
        )
        print(
            f"\ncoverage simulation, 1000 repetitions per size ({time.perf_counter() - t0:.0f} s):"
        )
        print(v.summary())
        t0 = time.perf_counter()
        be = simulate(
            "iou",
            (100, 300, 1000),
            reps=500,
            p=0.05,
            p_distractor=0.05,
            alpha=0.05,
            weights=(2.0, 1.0),
            n_boot=200,
            seed=1,
        )
        print(f"\nBE coverage, 500 repetitions per size, B=200 ({time.perf_counter() - t0:.0f} s):")
        print(be.summary())


if __name__ == "__main__":
    main()
