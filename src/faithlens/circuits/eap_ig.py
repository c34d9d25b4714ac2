"""EAP with integrated gradients (EAP-IG; Hanna, Pezzelle and Belinkov 2024), on the inputs
(``ig="inputs"``, the default) or on the activations (``ig="activations"``, below).

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

With ``ig="activations"`` (Hanna et al.'s "EAP-IG-activations", as in their code and MIB's
baseline), the path runs through one layer's activations at a time instead of the inputs: for
each node ``N`` of ``[input, attention 0, MLP 0, attention 1, ...]`` (an attention node is all
of the layer's heads together; a model without MLPs has no MLP nodes) and ``k = 1 .. m``, the
clean prompts run with ``N``'s output alone replaced by
``N(corrupt) + (k / m) (N(clean) - N(corrupt))`` (everything else computed from it, the
gradient not flowing back through ``N``), and every port's gradient is averaged over all those
``|nodes| m`` runs:

    (u(corrupt) - u(clean)) . (1 / (|nodes| m)) sum_N sum_k dm/d(input_v) at (N, k)

The input node's runs are exactly the ``ig="inputs"`` runs. A port read by a node (a head's
q / k / v input by its layer's attention node, an MLP's input by its MLP node) has a zero
gradient in that node's own runs, as in Hanna et al.'s code; so with ``steps=1`` (every run is
the clean run) an edge's value is EAP's times ``1 - 1 / |nodes|``, and EAP's exactly into the
logits. It costs ``|nodes|`` times the passes of ``ig="inputs"`` and keeps the
writers' clean and corrupted outputs (twice the writers' changes) for the whole chunk.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
from torch import Tensor

from .. import validate
from ..executor import Executor, on_executor
from ..interventions import Patch
from ..models.model import Model
from ..progress import Progress
from ..runs import RunOutput
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
from .edges import EdgeGraph, Writer
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
    ig: str = "inputs",
) -> EdgeScores:
    """Score every edge of ``model``'s edge graph by EAP-IG (module docstring) with ``steps``
    points on the path from the corrupted to the clean embeddings (``ig="inputs"``) or on each
    layer's activations in turn (``ig="activations"``); ``steps=1`` is
    :func:`faithlens.circuits.eap` on the inputs (on the activations, see the module
    docstring). Other arguments as
    :func:`faithlens.circuits.exact`; returns an :class:`EdgeScores` (``method="eap-ig"``,
    ``meta["ig"]`` the variant)."""
    steps = validate.positive_int("steps", steps, fix="the number of integration steps, e.g. 5")
    validate.choice("ig", ig, IG, fix='integrate on the "inputs" or on the "activations"')
    each = check_positions(positions)
    return score_edges(
        "circuits.eap_ig",
        model,
        data,
        passes=partial(_passes, steps=steps, ig=ig),
        chunk=partial(_chunk, steps=steps, each=each, ig=ig),  # picklable: Ray workers get it
        method="eap-ig",
        meta={"direction": "noising", "positions": positions, "steps": steps, "ig": ig},
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


#: What ``eap_ig``'s ``ig=`` takes.
IG = ("inputs", "activations")


def layer_nodes(eg: EdgeGraph) -> list[list[Writer]]:
    """``ig="activations"``'s nodes, each a list of writers interpolated together: the input,
    then per layer its heads (one node) and its MLP, in the order of the forward pass."""
    groups: dict[tuple[int, int], list[Writer]] = {}
    for w in eg.writers:
        key = (-1, 0) if w.kind == "input" else (w.layer or 0, 0 if w.kind == "head" else 1)
        groups.setdefault(key, []).append(w)
    return [groups[k] for k in sorted(groups)]


def _passes(eg: EdgeGraph, sub: Task, per_pass: int, *, steps: int, ig: str) -> int:
    runs = steps * (len(layer_nodes(eg)) if ig == "activations" else 1)
    return 2 + runs * gradient_passes(eg, per_pass)


def _chunk(
    eg: EdgeGraph,
    sub: Task,
    row_cap: int,
    tick: Callable[[], None],
    *,
    steps: int,
    each: bool = False,
    ig: str = "inputs",
) -> Measured:
    if ig == "activations":
        return _chunk_activations(eg, sub, row_cap, tick, steps=steps, each=each)
    clean, corrupt, change, m_clean, m_corrupt = _endpoints(eg, sub, tick)
    with torch.no_grad():
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


def _chunk_activations(
    eg: EdgeGraph, sub: Task, row_cap: int, tick: Callable[[], None], *, steps: int, each: bool
) -> Measured:
    clean, corrupt, change, m_clean, m_corrupt = _endpoints(eg, sub, tick)
    nodes = layer_nodes(eg)
    values, sink = edge_sink(eg, change, each)
    for node in nodes:
        for k in range(1, steps + 1):
            with torch.no_grad():  # k = steps: the node's clean output
                patches = [
                    Patch(
                        w.site,
                        source=_between(clean.cache[w.site], corrupt.cache[w.site], k / steps),
                    )
                    for w in node
                ]
            port_gradients(eg, sub, row_cap, tick, patches=patches, sink=sink)
    values /= steps * len(nodes)
    return Measured(values, m_clean, m_corrupt)


def _endpoints(
    eg: EdgeGraph, sub: Task, tick: Callable[[], None]
) -> tuple[RunOutput, RunOutput, dict[str, Tensor], np.ndarray, np.ndarray]:
    """The corrupted and clean runs of a chunk (writers cached, two ticks), every writer's
    change between them and the metric of each: ``(clean, corrupt, change, m_clean,
    m_corrupt)``, shared by both integration paths."""
    pos = sub.positions
    with torch.no_grad():
        corrupt = eg.model.run(sub.corrupt, cache=writer_sites(eg), logits_at=pos)
        tick()
        clean = eg.model.run(sub.clean, cache=writer_sites(eg), logits_at=pos)
        tick()
        change = deltas(eg, clean, corrupt)
        m_clean = metric_values(sub, clean).double().cpu().numpy()
        m_corrupt = metric_values(sub, corrupt).double().cpu().numpy()
    return clean, corrupt, change, m_clean, m_corrupt


def _between(clean: Tensor, corrupt: Tensor, alpha: float) -> Tensor:
    """``clean - (1 - alpha) (clean - corrupt)``: the corrupted value at 0, the clean at 1."""
    return (clean - (1 - alpha) * (clean - corrupt)).detach()


__all__ = ["IG", "eap_ig", "layer_nodes"]
