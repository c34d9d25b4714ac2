"""Divergence audit on SmolLM2-135M: IOI head patching and a mean-difference steering vector.

1. Patch every attention head of SmolLM2 (clean -> corrupted IOI prompts) with ``fl.patch`` and
   take the top heads; audit them together: how far off the natural distribution does patching
   push the MLP neurons of the last patched layer (``mlp_post.L``, read by the MLP's down
   projection: a 960-dimensional null space)?
2. A mean-difference steering vector at ``resid_pre.L``: ``delta = mean(clean) - mean(corrupt)``
   at the last token, added to the corrupted prompts; audited at the same ``mlp_post.L``.

Both against the natural baseline (clean and corrupted runs), with the null/row-space split and
dormant-neuron check at ``mlp_post.L+1``. Prints the audit, writes the result and a plot.

    python examples/smollm2_audit.py --n 48 --out runs/smollm2_audit
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import faithlens as fl
from faithlens.divergence.audit import mean_difference_vector


def run(
    n: int = 48, top: int = 3, seed: int = 0, layers: str | None = None, out: str | None = None
):
    t0 = time.perf_counter()
    model = fl.load("smollm2")
    task = fl.tasks.ioi(model, n=n, seed=seed)
    sites = (
        "head"
        if layers is None
        else [f"head.{L}.{h}" for L in map(int, layers.split(",")) for h in range(model.n_heads)]
    )
    effects = fl.patch(model, task, sites=sites, positions="all", n_boot=200, seed=seed)
    patches = effects.interventions(top=top)  # fl.Patch(..., source="clean")
    layer = max(model.site_info(p.site_spec).layer for p in patches)
    audit_site = f"mlp_post.{layer}"
    delta = mean_difference_vector(
        model, task.clean, task.corrupt, f"resid_pre.{layer}", positions=task.positions
    )
    steer = fl.Add(fl.Site(f"resid_pre.{layer}", positions="last"), vector=delta)
    conditions = {
        f"patch top-{top} heads": patches,
        f"mean-diff steer resid_pre.{layer}": [steer],
    }
    res = fl.audit(model, task, conditions, audit_site, base="corrupt", seed=seed)
    print(f"top heads: {[str(p.site_spec.name) for p in patches]}")
    print(res.summary())
    print(f"({time.perf_counter() - t0:.0f} s)")
    if out is not None:
        path = res.save(Path(out))
        res.plot().savefig(path / "audit.png", dpi=120)
        print(f"saved to {path}")
    return res


if __name__ == "__main__":
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=48, help="IOI prompts")
    ap.add_argument("--top", type=int, default=3, help="how many top heads to patch together")
    ap.add_argument("--layers", default=None, help="only sweep heads of these layers (e.g. 8,9)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--out", default="runs/smollm2_audit")
    a = ap.parse_args()
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    run(a.n, a.top, a.seed, a.layers, a.out)
