"""Extensionally equal rewrites of the model's graph, each checked numerically before use.

A rewrite replaces a node by a sum of parts that the hypothesis can map separately (the
appendix's "algebraic rewrites"); receivers then read the parts. Every rewrite is checked on
real data before a scrub uses it: the parts must sum to the node, and the model evaluated
through the rewritten graph (with the parts computed as separate copies) must equal the model.

- :func:`project` -- ``c = P c + (c - P c)``: only a subspace of the node's output matters.
- :func:`phi` -- ``c = phi(x) + (c - phi(x))``: a hand-written function of the input explains
  the node; the residual is what it does not.
- :func:`split_sum` -- ``c = w_1 c + ... + w_k c`` (sum w = 1): copies of a node that can be
  sampled separately (appendix 6.1).
- :func:`split_positions` -- ``c = c[at positions] + c[elsewhere]``.
- :func:`split_heads` / :func:`split_qkv` -- a transformer graph with one node per head and with
  separate Q, K, V input ports (per-path splits need no rewrite: path sets are already paths).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import InputError, ShapeError
from ..graph import (
    ComponentGraph,
    DataFeed,
    Feed,
    LinearPart,
    Mixed,
    MixedCopy,
    Part,
    PhiPart,
    Plan,
    ResidualPart,
    TransformerGraph,
    Uniform,
)
from ..interventions import orthonormal

TOL = 1e-4


class Rewrite:
    """Base class: ``apply(graph) -> graph`` and ``check(before, after, feed, rows)``."""

    def apply(self, graph: ComponentGraph) -> ComponentGraph:
        raise NotImplementedError

    def check(
        self, before: ComponentGraph, after: ComponentGraph, feed: DataFeed, rows: Tensor
    ) -> float:
        raise NotImplementedError

    def describe(self) -> str:
        return type(self).__name__

    @property
    def key(self) -> Any:
        return (type(self).__name__, self.describe())

    def __repr__(self) -> str:
        return self.describe()


def _rel_err(a: Tensor, b: Tensor) -> float:
    a64, b64 = a.double(), b.double()
    scale = max(float(b64.abs().max()), 1e-6)
    return float((a64 - b64).abs().max()) / scale


@dataclass(frozen=True, eq=False)
class SplitNode(Rewrite):
    """Replace ``node`` by named parts (the general mechanism behind the helpers below)."""

    node: str
    parts: Mapping[str, Part]
    label: str = "split"

    def apply(self, graph: ComponentGraph) -> ComponentGraph:
        return graph.split(self.node, dict(self.parts), note=self.describe())

    def describe(self) -> str:
        inner = " + ".join(f"{self.node}/{k}[{p.describe()}]" for k, p in self.parts.items())
        return f"{self.label}: {self.node} = {inner}"

    def check(
        self, before: ComponentGraph, after: ComponentGraph, feed: DataFeed, rows: Tensor
    ) -> float:
        names = [f"{self.node}/{k}" for k in self.parts]
        ref = before.uniform_values([Uniform(self.node, 0)], feed, rows)[0]
        parts = after.uniform_values([Uniform(n, 0) for n in names], feed, rows)
        for nm, v in zip(names, parts):
            if tuple(v.shape) != tuple(ref.shape):
                raise ShapeError(
                    f"rewrite {self.describe()}: part {nm!r} has shape {tuple(v.shape)}, the node "
                    f"{tuple(ref.shape)}"
                )
        total = parts[0].double()
        for v in parts[1:]:
            total = total + v.double()
        err = _rel_err(total, ref)
        if not err <= TOL:
            raise InputError(
                f"rewrite {self.describe()} is not extensionally equal: its parts differ from "
                f"{self.node!r} by {err:.2e} (relative) on the data"
            )
        err2 = self._end_to_end(before, after, names, feed, rows)
        if not err2 <= TOL:
            raise InputError(
                f"rewrite {self.describe()}: the model evaluated through the rewritten graph "
                f"differs from the model by {err2:.2e} (relative)"
            )
        return max(err, err2)

    def _end_to_end(
        self,
        before: ComponentGraph,
        after: ComponentGraph,
        names: Sequence[str],
        feed: DataFeed,
        rows: Tensor,
    ) -> float:
        """Compute each part as its own (mixed) copy, feed them to a receiver, compare."""
        receivers = {r for n in names for r, _ in after.receivers(n)}
        target = (
            after.output
            if after.output in receivers
            else sorted(receivers, key=lambda r: after.nodes[r].order)[0]
        )
        copies: dict[int, MixedCopy] = {}
        part_ref: dict[str, Mixed] = {}
        for nm in names:
            node = after.node(nm)
            port = node.ports[0]
            sender = after.senders(nm, port)[0]
            ref = Mixed(len(copies), nm)
            # a feed equal to the base datum keeps the copy mixed (computed by the engine path)
            copies[ref.id] = MixedCopy(ref, 0, (Feed(port, sender, Uniform(sender, 0)),), 0)
            part_ref[nm] = ref
        feeds = []
        tnode = after.node(target)
        for port in tnode.ports:
            for s in after.senders(target, port):
                if s in part_ref:
                    feeds.append(Feed(port, s, part_ref[s]))
        top = Mixed(len(copies), target)
        copies[top.id] = MixedCopy(top, 0, tuple(feeds), 0)
        got = after.evaluate(Plan([top, Uniform(target, 0)], copies), feed, rows)
        return _rel_err(got[0], got[1])


def project(node: str, basis: Tensor, *, name: str = "proj") -> SplitNode:
    """``node = node/proj + node/orth``: the output's component in the span of ``basis``
    (``[width, k]`` or a ``[width]`` vector; for transformer nodes the width is d_model, the
    node's contribution to the residual stream) and the orthogonal rest."""
    q = orthonormal(basis.detach().float())

    def onto(x: Tensor) -> Tensor:
        b = q.to(x)
        if x.shape[-1] != b.shape[0]:
            raise ShapeError(
                f"project({node!r}): basis has {b.shape[0]} rows, the node width {x.shape[-1]}"
            )
        return (x @ b) @ b.T

    def orth(x: Tensor) -> Tensor:
        return x - onto(x)

    k = q.shape[1]
    return SplitNode(
        node,
        {
            name: LinearPart(onto, f"onto {k}-d subspace"),
            "orth": LinearPart(orth, "orthogonal rest"),
        },
        "project",
    )


def phi(
    node: str,
    fns: Callable[[Any], Tensor] | Mapping[str, Callable[[Any], Tensor]],
    *,
    name: str = "phi",
    residual_shares: int = 1,
) -> SplitNode:
    """``node = phi(x) + (node - phi(x))``: ``fns`` is a function of the data rows (a
    :class:`~faithlens.scrubbing.ScrubData`) returning the node's output shape, or several named
    ones (``{"x1": f1, "x2": f2}``: one part each). The residual is ``node/res``; with
    ``residual_shares=k`` it is split into k equal shares ``node/res0..`` that a hypothesis can
    sample separately (appendix 6.1)."""
    named = dict(fns) if isinstance(fns, Mapping) else {name: fns}
    if not named:
        raise InputError("phi needs at least one function")
    if residual_shares < 1:
        raise InputError(f"residual_shares must be at least 1, got {residual_shares}")
    parts: dict[str, Part] = {
        k: PhiPart(f, f"phi {getattr(f, '__name__', k)}") for k, f in named.items()
    }
    if any(k.startswith("res") for k in parts):
        raise InputError(
            "names starting with 'res' are the residual's; name the phi terms otherwise"
        )
    if residual_shares == 1:
        parts["res"] = ResidualPart(tuple(named.values()), "residual: node - phi")
    else:
        for i in range(residual_shares):
            parts[f"res{i}"] = ResidualPart(
                tuple(named.values()), f"1/{residual_shares} of node - phi", 1.0 / residual_shares
            )
    return SplitNode(node, parts, "phi")


def split_sum(node: str, weights: Sequence[float] = (0.5, 0.5)) -> SplitNode:
    """``node = w_1 node + ... + w_k node`` (parts ``node/part0``...): copies of one term that a
    hypothesis can sample separately. The weights must sum to 1 (checked on the data)."""
    ws = [float(w) for w in weights]
    if len(ws) < 2:
        raise InputError("split_sum needs at least two weights")

    def scale(w: float) -> Callable[[Tensor], Tensor]:
        return lambda x: w * x

    return SplitNode(
        node, {f"part{i}": LinearPart(scale(w), f"x{w:g}") for i, w in enumerate(ws)}, "split_sum"
    )


def split_positions(node: str, positions: Sequence[int] | int) -> SplitNode:
    """``node = node/at + node/rest``: the output at ``positions`` and everywhere else."""
    pos = [positions] if isinstance(positions, int) else [int(p) for p in positions]
    if not pos:
        raise InputError("split_positions needs at least one position")

    def mask(x: Tensor) -> Tensor:
        if x.dim() < 2:
            raise ShapeError(f"split_positions({node!r}): the node has no position axis")
        m = torch.zeros(x.shape[1], dtype=x.dtype, device=x.device)
        m[torch.tensor([p % x.shape[1] for p in pos])] = 1
        return m.reshape(1, -1, *([1] * (x.dim() - 2)))

    label = ",".join(map(str, pos))
    return SplitNode(
        node,
        {
            "at": LinearPart(lambda x: x * mask(x), f"positions {label}"),
            "rest": LinearPart(lambda x: x * (1 - mask(x)), f"not {label}"),
        },
        "split_positions",
    )


@dataclass(frozen=True, eq=False)
class Regraph(Rewrite):
    """Rebuild a transformer graph at a finer granularity (heads, Q/K/V ports)."""

    split_heads: bool = True
    split_qkv: bool = True

    def apply(self, graph: ComponentGraph) -> ComponentGraph:
        if not isinstance(graph, TransformerGraph):
            raise InputError(
                f"{self.describe()} applies to a TransformerGraph, not a {graph.kind} graph"
            )
        if graph.rewrites:
            raise InputError(f"{self.describe()}: split heads / Q,K,V before any other rewrite")
        new = TransformerGraph(
            graph.model,
            split_heads=self.split_heads,
            split_qkv=self.split_qkv,
            ids=graph.ids_field,
            mask=graph.mask_field,
        )
        new.rewrites = (self.describe(),)
        return new

    def describe(self) -> str:
        return "split_qkv" if self.split_qkv else "split_heads"

    def check(
        self, before: ComponentGraph, after: ComponentGraph, feed: DataFeed, rows: Tensor
    ) -> float:
        # the heads summing to attn_out is checked when the graph is built; here the whole
        # model is evaluated through per-head (and per-port) copies.
        assert isinstance(after, TransformerGraph)
        copies: dict[int, MixedCopy] = {}
        feeds = []
        for s in after.senders(after.output, "in"):
            node = after.node(s)
            if node.kind not in ("head", "attn"):
                continue
            ref = Mixed(len(copies), s)
            port = node.ports[0]
            snd = after.senders(s, port)[0]
            copies[ref.id] = MixedCopy(ref, 0, (Feed(port, snd, Uniform(snd, 0)),), 0)
            feeds.append(Feed("in", s, ref))
        top = Mixed(len(copies), after.output)
        copies[top.id] = MixedCopy(top, 0, tuple(feeds), 0)
        got = after.evaluate(Plan([top, Uniform(after.output, 0)], copies), feed, rows)
        err = _rel_err(got[0], got[1])
        if not err <= TOL:
            raise InputError(f"rewrite {self.describe()} changes the model's output by {err:.2e}")
        return err


def split_heads() -> Regraph:
    """One node per attention head (for a graph built with ``split_heads=False``)."""
    return Regraph(True, False)


def split_qkv() -> Regraph:
    """One node per head with separate ``q``, ``k``, ``v`` input ports."""
    return Regraph(True, True)


__all__ = [
    "Regraph",
    "Rewrite",
    "SplitNode",
    "phi",
    "project",
    "split_heads",
    "split_positions",
    "split_qkv",
    "split_sum",
]
