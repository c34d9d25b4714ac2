"""Edge attribution patching (EAP; Syed et al. 2023): the first-order estimate of exact edge
patching for every edge at once.

An edge ``u->v``'s value on an example is ``(u(corrupt) - u(clean)) . dm/d(input_v)``, summed
over positions and the model width, where ``input_v`` is the residual stream reader port ``v``
reads and the gradient is taken on the clean run: the linear term of
:func:`faithlens.circuits.exact`'s ``m(patched) - m(clean)``.

How it runs: one corrupted forward pass caching the writers' outputs; one clean forward pass
caching them too, with gradient leaves at every reader's input; one backward pass. An MLP's
gradient is read at its norm's input and the logits' at the final residual (each reads nothing
else). A head's query, key and value inputs share one residual stream (the layer's norm feeds
all three projections), so the backward pass gives the gradient at each projection's output;
it is carried back through the norm and that projection alone by one more small pass per layer
(the layer's ports stacked in the batch, each block seeded with its own port's gradient), which
gives ``dm/d(input_v)`` port by port. No parameter gradient is computed or stored.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial

import numpy as np
import torch
from torch import Tensor

from ..executor import Executor, on_executor
from ..interventions import Patch
from ..models.model import Model
from ..progress import Progress
from ..runs import Resume, RunOutput
from ..tasks.base import Task
from ..tasks.metrics import Metric
from .common import (
    Measured,
    check_positions,
    deltas,
    metric_values,
    score_edges,
    writer_sites,
)
from .edges import EdgeGraph, Reader
from .scores import EdgeScores


@on_executor
def eap(
    model: Model,
    data: Task,
    *,
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
    """Score every edge of ``model``'s edge graph by edge attribution patching (module
    docstring). Arguments as :func:`faithlens.circuits.exact` (``positions="each"``: one score
    per edge and token position, the product summed over the width only); returns an
    :class:`EdgeScores` (``method="eap"``) whose per-example ``values`` are the first-order
    estimates."""
    each = check_positions(positions)
    return score_edges(
        "circuits.eap",
        model,
        data,
        passes=lambda eg, sub, per_pass: _passes(eg, per_pass),
        chunk=partial(_chunk, each=each),  # picklable: Ray workers receive it
        method="eap",
        meta={"direction": "noising", "positions": positions},
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


@contextmanager
def frozen_parameters(model: Model) -> Iterator[None]:
    """Gradients with respect to activations only: no ``.grad`` is written into the model."""
    params = [p for p in model.module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def _head_ports(eg: EdgeGraph, layer: int) -> list[Reader]:
    return [r for r in eg.readers if r.kind == "head" and r.layer == layer]


def _grad_site(eg: EdgeGraph, r: Reader) -> str:
    """Where a reader's gradient is read in the clean backward pass."""
    if r.kind == "head":
        assert r.site is not None
        return r.site
    if r.kind == "mlp":
        assert r.layer is not None
        return eg.graph.mlp_norm_input[r.layer]
    return r.residual


def _input_site(eg: EdgeGraph) -> str:
    return next(w.site for w in eg.writers if w.kind == "input")


def _passes(eg: EdgeGraph, per_pass: int) -> int:
    """The passes one chunk runs (for progress): corrupted, then :func:`port_gradients`'."""
    return 1 + gradient_passes(eg, per_pass)


def gradient_passes(eg: EdgeGraph, per_pass: int) -> int:
    """The passes one :func:`port_gradients` call runs (for progress): the forward-backward
    pass and the per-layer passes back through the norm (``per_pass`` ports in a pass)."""
    return 1 + sum(-(-len(_head_ports(eg, L)) // per_pass) for L in range(eg.n_layers))


def _chunk(
    eg: EdgeGraph, sub: Task, row_cap: int, tick: Callable[[], None], *, each: bool = False
) -> Measured:
    model = eg.model
    corrupt = model.run(sub.corrupt, cache=writer_sites(eg), logits_at=sub.positions)
    m_corrupt = metric_values(sub, corrupt).detach().double()
    tick()
    port_grad, clean, m_clean_t = port_gradients(eg, sub, row_cap, tick, cache=writer_sites(eg))
    with torch.no_grad():
        change = deltas(eg, clean, corrupt)
    del corrupt, clean
    values = edge_values(eg, change, port_grad, each)
    m_clean = m_clean_t.detach().double().cpu().numpy()
    return Measured(values, m_clean, m_corrupt.cpu().numpy())


def edge_values(
    eg: EdgeGraph, change: dict[str, Tensor], port_grad: dict[str, Tensor], each: bool = False
) -> np.ndarray:
    """``change[u] . port_grad[v]`` summed over positions and width, per edge and example
    (``[n_edges, n]``); with ``each``, summed over the width only (``[n_edges, seq, n]``)."""
    d0 = next(iter(change.values()))
    ne, seq = d0.shape[0], d0.shape[1]
    values = np.zeros((len(eg), seq, ne) if each else (len(eg), ne), dtype=np.float64)
    with torch.no_grad():
        for i, e in enumerate(eg.edges):
            d, g = change[e.writer.name], port_grad[e.reader.name]
            prod = (d.double() * g.double()).sum(-1)  # [n, seq]
            values[i] = (prod.T if each else prod.sum(-1)).cpu().numpy()
    return values


def edge_sink(
    eg: EdgeGraph, change: dict[str, Tensor], each: bool = False
) -> tuple[np.ndarray, Callable[[str, Tensor], None]]:
    """Zero edge values (as :func:`edge_values`' ``[n_edges, n]``, or ``[n_edges, seq, n]``
    with ``each``) and a sink for :func:`port_gradients` that adds ``change[u] . g`` to every
    edge ``u->v`` of the port ``v`` whose gradient ``g`` it is handed, in float64: summed over
    calls, the values of the sum of the gradients, without holding any port's gradient."""
    d0 = next(iter(change.values()))
    ne, seq = d0.shape[0], d0.shape[1]
    values = np.zeros((len(eg), seq, ne) if each else (len(eg), ne), dtype=np.float64)
    by_reader: dict[str, list[tuple[int, str]]] = {}
    for i, e in enumerate(eg.edges):
        by_reader.setdefault(e.reader.name, []).append((i, e.writer.name))

    def sink(name: str, g: Tensor) -> None:
        with torch.no_grad():
            gd = g.double()
            for i, w in by_reader.get(name, ()):
                prod = (change[w].double() * gd).sum(-1)  # [n, seq]
                values[i] += (prod.T if each else prod.sum(-1)).cpu().numpy()

    return values, sink


def port_gradients(
    eg: EdgeGraph,
    sub: Task,
    row_cap: int,
    tick: Callable[[], None],
    *,
    embed: Tensor | None = None,
    cache: Sequence[str] = (),
    patches: Sequence[Patch] = (),
    sink: Callable[[str, Tensor], None] | None = None,
) -> tuple[dict[str, Tensor], RunOutput, Tensor]:
    """``dm/d(input_v)`` for every reader port ``v`` (by reader name, ``[n, seq, d_model]``) on
    one forward-backward pass over ``sub``'s clean prompts, with the input embeddings (the
    ``input`` writer's output) replaced by ``embed`` when given and ``patches`` applied (the
    gradient does not flow through a patched site); also that run (caching
    ``cache`` too) and its metric per example (still attached to the graph). With ``sink``,
    each port's gradient is handed to ``sink(name, gradient)`` as soon as it is computed and
    not kept (the returned dict is empty), and each layer's gradients at its projections are
    dropped once its ports are done: the peak holds one layer's port gradients, not all."""
    model = eg.model
    ne = sub.n
    gsites = list(dict.fromkeys(_grad_site(eg, r) for r in eg.readers))
    resid = [f"resid_pre.{L}" for L in range(eg.n_layers)]
    ivs = [] if embed is None else [Patch(_input_site(eg), source=embed)]
    ivs += list(patches)
    clean = model.run(
        sub.clean,
        ivs,
        cache=[*cache, *resid],
        logits_at=sub.positions,
        grad=True,
        grad_sites=gsites,
    )
    m_clean_t = metric_values(sub, clean)
    leaves = [clean.grad_leaf(s)[0] for s in gsites]
    grads = torch.autograd.grad(m_clean_t.sum(), leaves, allow_unused=True)
    at: dict[str, Tensor] = {}
    for s, g, leaf in zip(gsites, grads, leaves):
        at[s] = clean.grad_leaf(s)[1].get(g if g is not None else torch.zeros_like(leaf)).detach()
    del grads, leaves
    tick()
    per_pass = max(1, row_cap // ne)
    port_grad: dict[str, Tensor] = {}

    def put(name: str, g: Tensor) -> None:
        if sink is None:
            port_grad[name] = g
        else:
            sink(name, g)

    for r in eg.readers:
        if r.kind != "head":
            put(r.name, at[_grad_site(eg, r)])
    if sink is not None:
        for r in eg.readers:
            if r.kind != "head":
                at.pop(_grad_site(eg, r), None)
    for L in range(eg.n_layers):
        hidden = clean.cache[f"resid_pre.{L}"].detach()
        ports = _head_ports(eg, L)
        for k in range(0, len(ports), per_pass):
            for name, g in _back_through_norm(eg, sub, L, hidden, ports[k : k + per_pass], at):
                put(name, g)
            tick()
        if sink is not None:
            for r in ports:
                if r.site is not None:
                    at.pop(r.site, None)  # this layer's projection gradients are spent
    return port_grad, clean, m_clean_t


def _back_through_norm(
    eg: EdgeGraph,
    sub: Task,
    layer: int,
    hidden: Tensor,
    ports: list[Reader],
    at: dict[str, Tensor],
) -> list[tuple[str, Tensor]]:
    """``dm/d(input)`` of each head port of ``layer``: the gradient at the port's projection
    output carried back through the layer's norm and that projection (ports stacked in the
    batch, each block seeded with its own port's gradient)."""
    model = eg.model
    ne, c = sub.n, len(ports)
    x = hidden.repeat(c, 1, 1).requires_grad_(True)
    sites = list(dict.fromkeys(r.site for r in ports if r.site is not None))
    out: RunOutput
    if model.adapter.supports_resume:
        out = model.run(
            sub.clean.repeat(c),
            cache=sites,
            start_at=Resume(layer, x),
            stop_at=f"head.{layer}.0",
            grad=True,
        )
    else:
        out = model.run(
            sub.clean.repeat(c),
            [Patch(f"resid_pre.{layer}", source=x)],
            cache=sites,
            stop_at=f"head.{layer}.0",
            grad=True,
        )
    total = x.new_zeros(())
    for i, r in enumerate(ports):
        assert r.site is not None
        block = out.cache[r.site][i * ne : (i + 1) * ne]
        total = total + (block * at[r.site].to(block)).sum()
    (gx,) = torch.autograd.grad(total, x)
    return [(r.name, gx[i * ne : (i + 1) * ne].detach()) for i, r in enumerate(ports)]


__all__ = [
    "eap",
    "edge_sink",
    "edge_values",
    "frozen_parameters",
    "gradient_passes",
    "port_gradients",
]
