"""The nouns of a component graph: its nodes and the parts a rewrite splits a node into.

- :class:`GraphNode`: a component (input, head, attention block, MLP, module, output) with its
  typed input ports.
- :class:`Part` and its kinds :class:`LinearPart`, :class:`PhiPart`, :class:`ResidualPart`: one
  term of a node split into a sum of terms (see :meth:`ComponentGraph.split`).
- ``PHI_PORT``: the port through which ``phi`` terms read the input directly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

# ---------------------------------------------------------------------------------------------
# Parts (rewrites of one node into a sum of parts)
# ---------------------------------------------------------------------------------------------


class Part:
    """One term of a node split into a sum of terms."""

    label: str = "part"

    def describe(self) -> str:
        return self.label


@dataclass(frozen=True, eq=False)
class LinearPart(Part):
    """``fn(node output)`` for a linear ``fn`` (projection, complement, share, position slice)."""

    fn: Callable[[Tensor], Tensor]
    label: str = "linear"


@dataclass(frozen=True, eq=False)
class PhiPart(Part):
    """``phi(datum)``: a function of the input only (its port reads the input directly)."""

    fn: Callable[[Any], Tensor]
    label: str = "phi"


@dataclass(frozen=True, eq=False)
class ResidualPart(Part):
    """``node(inputs) - sum(phi(datum))``: what the phi terms do not explain. It reads the node's
    own ports plus ``phi_in``, a direct edge from the input that feeds the phis it subtracts."""

    fns: tuple[Callable[[Any], Tensor], ...]
    label: str = "residual"
    scale: float = 1.0

    def apply(self, value: Tensor, phis: Tensor | int) -> Tensor:
        """``scale * (node - phis)``: a share of what the phi terms do not explain."""
        out = value - phis
        return out if self.scale == 1.0 else self.scale * out


PHI_PORT = "phi_in"


@dataclass(frozen=True)
class GraphNode:
    """A node of a component graph.

    ``kind`` is ``input``, ``head``, ``attn``, ``mlp``, ``module`` or ``output``; a part of a
    split node keeps its base's kind and names it in ``base``.
    """

    name: str
    kind: str
    ports: tuple[str, ...]
    order: int
    layer: int | None = None
    head: int | None = None
    base: str | None = None
    part: Part | None = field(default=None, compare=False)

    @property
    def is_input(self) -> bool:
        return self.kind == "input"

    @property
    def is_output(self) -> bool:
        return self.kind == "output"


__all__ = ["PHI_PORT", "GraphNode", "LinearPart", "Part", "PhiPart", "ResidualPart"]
