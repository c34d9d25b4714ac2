"""EAP with integrated gradients on the inputs (EAP-IG; Hanna, Pezzelle and Belinkov 2024).

EAP's gradient is taken at the clean run only; EAP-IG averages it along the straight path
between the corrupted and the clean input embeddings. With ``e`` the ``input`` writer's output
(token plus position embeddings, ``resid_pre.0``) and ``m`` steps, the ``k``-th point is

    e_k = e(corrupt) + (k / m) (e(clean) - e(corrupt)),   k = 1 .. m

(as in Hanna et al.'s implementation: ``k = m`` is the clean run, so ``steps=1`` is EAP), and an
edge ``u->v``'s value on an example is

    (u(corrupt) - u(clean)) . (1/m) sum_k dm/d(input_v) at e_k

summed over positions and width, where ``u(corrupt)``, ``u(clean)`` are the writer's outputs on
the two prompts (as in EAP) and ``input_v`` is the residual stream reader port ``v`` reads in the
run from ``e_k``. As ``m`` grows, the values of the ``input`` writer's edges sum to
``m(corrupt) - m(clean)`` (the completeness of integrated gradients: the embedding reaches the
metric only through the ports it feeds).

How it runs, per chunk of examples: one corrupted and one clean forward pass caching the
writers' outputs, then per step one forward pass from ``e_k`` with gradient leaves at the
readers' inputs, one backward pass, and EAP's small per-layer passes back through the norm to
each head port (:func:`faithlens.circuits.eap.port_gradients`). Each port's gradient is
contracted with its writers' changes into the edge values (float64, ``[edges, n]``) as soon as
it is computed and dropped (:func:`faithlens.circuits.eap.edge_sink`), so no port gradient
outlives its layer and no running sum of them is kept; no parameter gradient is stored.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor

from .. import validate
from ..executor import Executor, on_executor
from ..models.model import Model
from ..progress import Progress
from ..tasks.base import Task
from ..tasks.metrics import Metric
from .common import (
    Measured,
    check_positions,
    contribution,
    deltas,
    metric_values,
    score_edges,
    writer_sites,
)
from .eap import edge_sink, frozen_parameters, gradient_passes, port_gradients
from .edges import EdgeGraph
from .scores import EdgeScores


@on_executor
def eap_ig(
    model: Model,
    data: Task,
    *,
    steps: int = 5,
    metric: str | Metric | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    max_memory: int | None = None,
    progress: Progress | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    executor: str | Executor | None = None,
    positions: str = "all",
) -> EdgeScores:
    """Score every edge of ``model``'s edge graph by EAP-IG on the inputs (module docstring)
    with ``steps`` points on the path from the corrupted to the clean embeddings (``steps=1``
    is :func:`faithlens.circuits.eap`). Other arguments as :func:`faithlens.circuits.exact`;
    returns an :class:`EdgeScores` (``method="eap-ig"``)."""
    steps = validate.positive_int("steps", steps, fix="the number of integration steps, e.g. 5")
    each = check_positions(positions)
    return score_edges(
        "circuits.eap_ig",
        model,
        data,
        passes=lambda eg, sub, per_pass: 2 + steps * gradient_passes(eg, per_pass),
        chunk=partial(_chunk, steps=steps, each=each),  # picklable: Ray workers receive it
        method="eap-ig",
        meta={"direction": "noising", "positions": positions, "steps": steps, "ig": "inputs"},
        each=each,
        metric=metric,
        n_boot=n_boot,
        level=level,
        seed=seed,
        max_memory=max_memory,
        progress=progress,
        checkpoint=checkpoint,
        context=frozen_parameters,
    )


def _chunk(
    eg: EdgeGraph,
    sub: Task,
    row_cap: int,
    tick: Callable[[], None],
    *,
    steps: int,
    each: bool = False,
) -> Measured:
    model = eg.model
    pos = sub.positions
    with torch.no_grad():
        corrupt = model.run(sub.corrupt, cache=writer_sites(eg), logits_at=pos)
        tick()
        clean = model.run(sub.clean, cache=writer_sites(eg), logits_at=pos)
        tick()
        change = deltas(eg, clean, corrupt)
        m_clean = metric_values(sub, clean).double().cpu().numpy()
        m_corrupt = metric_values(sub, corrupt).double().cpu().numpy()
        inp = next(w for w in eg.writers if w.kind == "input")
        e_corrupt = contribution(eg, inp, corrupt)
        e_clean = contribution(eg, inp, clean)
    del corrupt, clean
    values, sink = edge_sink(eg, change, each)
    for k in range(1, steps + 1):
        with torch.no_grad():
            point = e_clean - (1 - k / steps) * (e_clean - e_corrupt)  # k = steps: clean
        # each port's gradient is contracted into the edge values as soon as it is computed
        port_gradients(eg, sub, row_cap, tick, embed=point, sink=sink)
    values /= steps
    return Measured(values, m_clean, m_corrupt)


__all__ = ["eap_ig"]
