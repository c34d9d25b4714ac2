"""Tasks shared by several test modules."""

from __future__ import annotations

import torch

import faithlens as fl


def padded_task(model, n=6, seq=9, seed=0):
    """A random-token task with right padding (examples of different lengths)."""
    task = fl.tasks.random_token_task(model, n, seq, seed=seed)
    mask = torch.ones(n, seq, dtype=torch.long)
    lengths = torch.tensor([seq, seq - 2, seq, seq - 3, seq - 1, seq])[:n]
    for i, L in enumerate(lengths):
        mask[i, L:] = 0
    clean = fl.Inputs(ids=task.clean.ids * mask, mask=mask)
    # make sure the corrupted token lies inside each example
    cids = task.corrupt.ids.clone()
    for i, L in enumerate(lengths):
        cids[i, : int(L)] = task.clean.ids[i, : int(L)]
        cids[i, int(L) - 2] = (task.clean.ids[i, int(L) - 2] % 90) + 3
    corrupt = fl.Inputs(ids=cids * mask, mask=mask.clone())
    return fl.Task(
        name="padded", clean=clean, corrupt=corrupt, answers=task.answers, positions=lengths - 1
    )
