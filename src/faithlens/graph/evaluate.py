"""The treeified evaluator's nouns: plans of copies, and what an evaluation reads and counts.

Causal scrubbing evaluates *treeified* copies of a component graph: every path from the output
back to an input gets its own copy of the nodes along it, and each input slot may receive a
different datum. A :class:`Plan` lists the copies one or more such evaluations need:

- a :class:`Uniform` copy: every input slot below it receives the same datum, so its value is an
  ordinary activation on that datum (computed once per datum, in a clean run);
- a :class:`Mixed` copy (described by a :class:`MixedCopy`): its ports are assembled from the
  copies of its senders (:class:`Feed`), with optional per-position splits.

``ComponentGraph.evaluate(plan, feed, rows)`` computes every mixed copy once, in topological
order, stacking copies of one layer (or one module) along the batch; the data of each datum come
from a :class:`DataFeed`, and the work done is counted in :class:`EvalStats`. The per-graph
evaluators live in :mod:`.evaluate_transformer` and :mod:`.evaluate_layers`; the helpers both
use (:func:`cat_fields`, :func:`phi_value`) are here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor

from ..errors import ShapeError
from .positions import PositionAtom

if TYPE_CHECKING:
    from .structure import ComponentGraph


@dataclass(frozen=True)
class Uniform:
    """A copy whose every input slot receives ``datum``: an ordinary activation."""

    node: str
    datum: int


@dataclass(frozen=True)
class Mixed:
    """A copy whose inputs are assembled from other copies (see :class:`MixedCopy`)."""

    id: int
    node: str


CopyRef = Uniform | Mixed


@dataclass(frozen=True)
class Feed:
    """Port ``port`` of a mixed copy reads ``child`` (a copy of ``sender``) at ``positions``
    (None: every position)."""

    port: str
    sender: str
    child: CopyRef
    positions: PositionAtom | None = None


@dataclass(frozen=True)
class MixedCopy:
    """A copy of ``node`` computed from assembled inputs. ``base`` is the datum every sender
    *not* listed in ``feeds`` is evaluated on (and whose attention mask / non-patched inputs the
    computation uses, unless ``inputs`` names another datum for that)."""

    ref: Mixed
    base: int
    feeds: tuple[Feed, ...]
    inputs: int | None = None

    @property
    def node(self) -> str:
        return self.ref.node

    @property
    def run_datum(self) -> int:
        """The datum whose model inputs (attention mask, positions) the computation uses."""
        return self.base if self.inputs is None else self.inputs


@dataclass
class Plan:
    """The copies of one or more treeified evaluations: ``roots`` are copies of the output
    (evaluating several roots in one plan shares their clean runs)."""

    roots: list[CopyRef]
    copies: dict[int, MixedCopy] = field(default_factory=dict)

    def uniform_refs(self) -> set[Uniform]:
        out: set[Uniform] = set()
        for r in self.roots:
            if isinstance(r, Uniform):
                out.add(r)
        for c in self.copies.values():
            for f in c.feeds:
                if isinstance(f.child, Uniform):
                    out.add(f.child)
        return out

    def data(self) -> set[int]:
        """Every datum the evaluation reads."""
        out = {u.datum for u in self.uniform_refs()}
        out.update(c.base for c in self.copies.values())
        out.update(c.run_datum for c in self.copies.values())
        return out


@dataclass
class EvalStats:
    """Work done by evaluations: runs, rows, and layer-rows (rows x transformer blocks run),
    the unit in which a forward pass of N examples over L layers costs N * L."""

    runs: int = 0
    rows: int = 0
    layer_rows: int = 0
    clean_runs: int = 0
    mixed_copies: int = 0

    def add(self, rows: int, layers: int, clean: bool = False) -> None:
        self.runs += 1
        self.rows += rows
        self.layer_rows += rows * max(layers, 0)
        if clean:
            self.clean_runs += 1


class DataFeed(Protocol):
    """Where a graph evaluation gets the data of each datum (a vector of dataset indices)."""

    def fields(self, datum: int, rows: Tensor) -> dict[str, Tensor]:
        """The model input fields of ``datum`` at reference rows ``rows``."""
        ...

    def rows(self, datum: int, rows: Tensor) -> Any:
        """The full dataset rows of ``datum`` (what ``phi`` functions receive)."""
        ...


# ---------------------------------------------------------------------------------------------
# Helpers of both evaluators
# ---------------------------------------------------------------------------------------------


def cat_fields(items: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
    """Model input fields of several blocks of rows, stacked along the batch."""
    keys = list(items[0])
    return {k: torch.cat([it[k] for it in items], 0) for k in keys}


def phi_value(
    graph: ComponentGraph,
    fns: Sequence[Callable[[Any], Tensor]],
    feeds: Sequence[Feed],
    base: int,
    feed: DataFeed,
    rows: Tensor,
    like: Tensor | None,
) -> Tensor:
    """sum_k phi_k(datum), where the datum may differ by position (feeds on the phi port)."""

    def phis(datum: int) -> Tensor:
        data = feed.rows(datum, rows)
        total: Tensor | None = None
        for fn in fns:
            v = torch.as_tensor(fn(data))
            total = v if total is None else total + v
        assert total is not None
        return total

    dev = graph.model.device
    out = phis(base).to(dev)
    if like is not None:
        if tuple(out.shape) != tuple(like.shape):
            raise ShapeError(
                f"a phi function returned shape {tuple(out.shape)}; the node it explains has "
                f"shape {tuple(like.shape)}"
            )
        out = out.to(like)
    if not feeds:
        return out
    seq = out.shape[1] if out.dim() == 3 else None
    for f in feeds:
        assert isinstance(f.child, Uniform), "phi ports read the input directly"
        v = phis(f.child.datum).to(out)
        if f.positions is None:
            out = v
        else:
            if seq is None:
                raise ShapeError("position splits need [batch, position, width] activations")
            m = f.positions.mask(rows.cpu(), seq).to(out.device)[..., None]
            out = torch.where(m, v, out)
    return out


__all__ = [
    "CopyRef",
    "DataFeed",
    "EvalStats",
    "Feed",
    "Mixed",
    "MixedCopy",
    "Plan",
    "Uniform",
    "cat_fields",
    "phi_value",
]
