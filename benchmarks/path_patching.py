"""Benchmark: path patching every head into two heads' inputs on SmolLM2 IOI, two ways.

The experiment: SmolLM2-135M-Instruct, ``fl.tasks.ioi(model, n=16, seed=0)``; senders: every
head before layer 23 (207 heads); receivers: the query, key and value inputs of heads 23.3 and
20.0 (the two heads with the largest positive effects in activation patching at the last
position); denoising; metric = logit difference at each example's metric position.

``reference``
    Plain PyTorch with bare forward hooks (``tests/helpers/reference.py``'s hook helpers): the clean
    sender outputs and the corrupted attention and MLP outputs are captured once, then per
    sender two full forward passes: run A (sender clean, every attention and MLP output between
    it and layer 23 frozen to its corrupted value, the receivers' inputs recorded) and run B
    (the receivers' inputs written). 414 forward passes.
``faithlens``
    ``fl.path_patch(model, task, senders, receivers)`` with its defaults (including the
    1000-sample bootstrap of every effect's CI): senders of one layer stacked in the batch, run A
    resumed at the sender's layer and stopped after layer 23, run B resumed at layer 20.

Both run in this process, one after the other, on the same loaded model, after one warm-up
forward pass. Their per-(sender, example) metric values are compared.

Run from the repository root: ``python benchmarks/path_patching.py [--threads N]``.
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

from tests.helpers import reference as R  # noqa: E402

import faithlens as fl  # noqa: E402

RECEIVERS = ["head.23.3", "head.20.0"]


def reference(hf, task, senders, receivers):
    """Per (sender, example) metric with bare hooks, two forward passes per sender."""
    base, src = task.corrupt, task.clean
    n_layers = len(hf.get_submodule(R.PATHS["llama"][0]))
    last = max(int(r.split(".")[1]) for r in receivers)
    comps = [f"{k}.{L}" for L in range(n_layers) for k in ("attn_out", "mlp_out")]
    frozen_all = {c: R.capture(hf, c, base.ids, base.mask) for c in comps}
    clean = {s: R.capture(hf, s, src.ids, src.mask) for s in senders}
    rows = []
    for s in senders:
        ls = int(s.split(".")[1])
        frozen = [f"mlp_out.{ls}"] + [
            f"{k}.{L}" for L in range(ls + 1, last + 1) for k in ("attn_out", "mlp_out")
        ]
        targets = [(r, p) for r in receivers if int(r.split(".")[1]) > ls for p in "qkv"]
        store, handles = {}, []
        try:
            m, io, sl = R.site_target(hf, s)
            handles.append(R._hook(m, io, R._writer(sl, clean[s], None)))
            for f in frozen:
                m, io, sl = R.site_target(hf, f)
                handles.append(R._hook(m, io, R._writer(sl, frozen_all[f], None)))
            for r, p in targets:
                m, io, sl = R.receiver_target(hf, r, p)
                handles.append(R._hook(m, io, R._recorder(store, (r, p), sl)))
            with torch.no_grad():
                R._forward(hf, base.ids, base.mask)
        finally:
            for h in handles:
                h.remove()
        handles = []
        try:
            for r, p in targets:
                m, io, sl = R.receiver_target(hf, r, p)
                handles.append(R._hook(m, io, R._writer(sl, store[(r, p)], None)))
            with torch.no_grad():
                logits = R._forward(hf, base.ids, base.mask)
        finally:
            for h in handles:
                h.remove()
        rows.append(R.logit_diff(logits, task.positions, task.answers))
    return torch.stack(rows).double().numpy()


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--quick", action="store_true", help="senders of layers 17-19 only")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = fl.load("smollm2")
    task = fl.tasks.ioi(model, n=args.n, seed=0)
    first = 17 if args.quick else 0
    senders = [f"head.{L}.{H}" for L in range(first, 23) for H in range(model.n_heads)]
    with torch.no_grad():
        model.module(input_ids=task.clean.ids[:2], attention_mask=task.clean.mask[:2])
    out: dict[str, float] = {}
    t0 = time.perf_counter()
    ref = reference(model.module, task, senders, RECEIVERS)
    out["reference_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = fl.path_patch(model, task, senders, RECEIVERS)
    out["faithlens_s"] = time.perf_counter() - t0
    out["speedup"] = out["reference_s"] / out["faithlens_s"]
    out["max_abs_diff"] = float(np.abs(res.patched - ref).max())
    print(
        f"path patching, SmolLM2 IOI n={args.n}, {len(senders)} senders into the q/k/v inputs "
        f"of {', '.join(RECEIVERS)} (torch threads: {torch.get_num_threads()})"
    )
    print(f"  reference (2 forward passes per sender): {out['reference_s']:7.1f} s   1.00x")
    print(
        f"  faithlens fl.path_patch:                 {out['faithlens_s']:7.1f} s   "
        f"{out['speedup']:.2f}x   max|diff| {out['max_abs_diff']:.1e}"
    )
    print(res.summary(k=5))
    return out


if __name__ == "__main__":
    main()
