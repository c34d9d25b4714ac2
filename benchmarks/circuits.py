"""Benchmark: exact edge patching of every edge, faithlens against a plain hooked reference.

The experiment: a randomly initialised GPT-2 (``--layers`` layers of ``--heads`` heads, width
``--width``, MLPs, seed 0, float32), ``fl.tasks.random_token_task(model, n, seq, seed=0)``
(one corrupted token per prompt), metric = logit difference at the last position; every edge of
the edge graph (``fl.circuits.EdgeGraph``), patched alone in the noising direction.

``reference``
    ``tests/helpers/circuits_reference.py``'s ``reference_exact``: plain PyTorch with bare
    forward hooks on the Hugging Face modules, per edge one full forward pass on all examples
    (two for an edge into a head's query, key or value: one recording the port's projection
    from the shifted layer input, one writing it).
``faithlens``
    ``fl.circuits.exact(model, task, n_boot=1000)`` with its defaults: runs resumed at the
    reader's layer from the clean run's cached residual stream, edges that share a reader layer
    stacked in the batch (the bootstrap of every edge's interval included).

Both run in this process, one after the other, on the same model, after one warm-up pass; the
per-(edge, example) values are compared (they must agree within 1e-4) and the ratio of wall
times printed.

Run from the repository root: ``python benchmarks/circuits.py [--threads N]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers.circuits_reference import reference_exact  # noqa: E402

import faithlens as fl  # noqa: E402


def build(layers: int, heads: int, width: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(
        n_layer=layers,
        n_head=heads,
        n_embd=width,
        vocab_size=512,
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(cfg).eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--seq", type=int, default=16)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    hf = build(args.layers, args.heads, args.width)
    model = fl.wrap(hf)
    task = fl.tasks.random_token_task(model, args.n, args.seq, seed=0)
    eg = fl.circuits.EdgeGraph(model)
    print(eg.describe())
    print(f"n={args.n} examples of {args.seq} tokens, {args.threads} thread(s)")
    model.run(task.clean)  # warm-up

    t = time.perf_counter()
    ref = reference_exact(hf, task, eg.names).numpy()
    t_ref = time.perf_counter() - t
    t = time.perf_counter()
    res = fl.circuits.exact(model, task, n_boot=1000)
    t_fl = time.perf_counter() - t

    err = float(np.abs(res.values - ref).max())
    print(f"reference (bare hooks, a pass per edge): {t_ref:8.2f} s")
    print(f"faithlens fl.circuits.exact:             {t_fl:8.2f} s")
    print(
        f"ratio: {t_ref / t_fl:.1f}x   max |difference| {err:.2e} (largest value {np.abs(ref).max():.2e})"
    )
    if err > 1e-4:
        raise SystemExit(f"the values differ by {err:.2e} > 1e-4")


if __name__ == "__main__":
    main()
