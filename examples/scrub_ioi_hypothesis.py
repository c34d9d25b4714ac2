"""A hypothesis file for the command line, on SmolLM2 and IOI:

    faithlens scrub examples/scrub_ioi_hypothesis.py --model smollm2 --n 400 --out runs/ioi
    faithlens scrub examples/scrub_ioi_hypothesis.py --model smollm2 --n 40 --dry-run

Claim: the heads of the last two layers read the indirect object's name straight into the
logits (each is conditioned on the IO token), everything else is irrelevant (one random datum).
The baselines are the model on a random prompt (Redwood's randomised labels) and, like Redwood's
induction baseline, the model with only those heads resampled ("late heads disabled").
"""

from __future__ import annotations

import faithlens as fl
from faithlens import scrubbing as sc
from faithlens.tasks.ioi import TEMPLATES_ABBA


def data(model, n, seed):
    # one template: every prompt has the same number of tokens (position-aligned data)
    return fl.tasks.ioi(model, n=max(n or 0, 200), seed=seed, templates=[TEMPLATES_ABBA[0]])


def io_token(d):
    return d["answers"][:, 0]


def _late(name, other="random", **node):
    h = sc.Hypothesis(name, other=other)
    for layer in (28, 29):
        for head in range(9):
            h.add(f"h{layer}.{head}", sc.to(f"head.{layer}.{head}", direct=True), **node)
    return h


hypothesis = _late("late heads carry the IO name", feature=io_token)
baselines = {
    "random": "random",
    "late heads disabled": _late("late heads disabled", other="exact", sampler="random"),
}
