"""Benchmark: circuit discovery scored against circuits known by construction.

For every shipped tracr model (``faithlens.zoo.tracr``: compiled RASP programs, true circuit
derived from the compiled weights) the edge scorers (``fl.circuits.exact``, ``eap``, ``eap_ig``
with 5 steps, and ``acdc`` with its defaults: KL objective, ``tau=0.01``; its ranking is each
edge's effect when it was pruned, and whether its kept circuit is the true one is printed) rank
the edges on the shipped patching task (64 clean/corrupted pairs of
full length), and ``fl.circuits.edge_auroc`` scores each ranking against the true circuit, with a
1000-resample bootstrap over examples (95%, seed 0). Also on ``zoo:induction`` (trained, not
compiled), against the circuit its model card describes: the previous-token heads 0.2 and 0.3
feed the induction heads' keys, the induction heads (layer 1) read the current token at their
queries and the tokens at their values, and write the logits. That circuit is a description of
a trained model, not a construction, so its AUROC measures agreement, not recovery; the task's
corruption (the copied span's source) leaves the induction heads' query tokens unchanged, so a
second row drops the query edges, which no method can see on this task.

Prints a markdown table (docs/circuits.md holds its output). Run from the repository root:
``python benchmarks/tracr_circuits.py [--n 64] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import time

import torch

import faithlens as fl
from faithlens.zoo import tracr as T


def induction_circuit() -> list[str]:
    """zoo:induction's circuit as its model card describes it."""
    prev, ind = (2, 3), (0, 1, 2, 3)
    edges = [f"input->a0.h{p}<v>" for p in prev]
    for h in ind:
        edges += [f"a0.h{p}->a1.h{h}<k>" for p in prev]
        edges += [f"input->a1.h{h}<q>", f"input->a1.h{h}<v>", f"a1.h{h}->logits"]
    return edges


def rows(
    model: fl.Model, task: fl.Task, truths: dict[str, list[str]], n_edges: int
) -> list[list[str]]:
    """One table row per true circuit in ``truths``, the scores computed once per method."""
    out = {name: [name, f"{len(truth)} / {n_edges}"] for name, truth in truths.items()}
    for method in ("exact", "eap", "eap_ig", "acdc"):
        t = time.time()
        scores = getattr(fl.circuits, method)(model, task, n_boot=200)
        for name, truth in truths.items():
            iv = fl.circuits.edge_auroc(scores, truth, n_boot=1000, seed=0)
            out[name].append(f"{iv.estimate:.3f} [{iv.ci_low:.3f}, {iv.ci_high:.3f}]")
            print(f"  {name} {method}: {time.time() - t:.1f}s {iv:.3f}", flush=True)
            if method == "acdc":
                kept = set(scores.kept().edges)
                print(
                    f"  {name} acdc kept {len(kept)} edges, {len(kept & set(truth))} of "
                    f"{len(truth)} true; kept == truth: {kept == set(truth)}",
                    flush=True,
                )
    return list(out.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=64, help="task examples per model")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    table: list[list[str]] = []
    for prog in T.shipped():
        model = fl.load(f"zoo:{T.zoo_name(prog)}")
        task = T.tracr_task(prog, n=args.n)
        n_edges = len(fl.circuits.EdgeGraph(model))
        table += rows(model, task, {f"tracr_{prog}": list(T.tracr_circuit(prog).edges)}, n_edges)
    model = fl.load("zoo:induction")
    task = fl.tasks.induction.induction_task(n=args.n, seed=0)
    n_edges = len(fl.circuits.EdgeGraph(model))
    card = induction_circuit()
    no_q = [e for e in card if not e.endswith("<q>")]
    truths = {"induction (card's circuit)": card, "induction (card's, no query edges)": no_q}
    table += rows(model, task, truths, n_edges)
    head = ["model", "true edges / all", "exact", "eap", "eap_ig (5 steps)", "acdc (KL, 0.01)"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in table:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
