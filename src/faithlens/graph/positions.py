"""Sets of sequence positions, for position-specific claims on a component graph.

- :class:`PositionSet`: fixed positions (negative count from the end) or per-example positions.
- :class:`PositionAtom`: a cell of a partition of the positions (in every ``include`` set, in no
  ``exclude`` set); a mixed copy's port reads a sender's copy at the positions of an atom.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..errors import InputError, ShapeError, SiteError


@dataclass(frozen=True, eq=False)
class PositionSet:
    """A set of sequence positions: fixed indices (negative count from the end) or one or more
    indices per reference example (``per_row``: ``[N]`` or ``[N, k]``)."""

    static: tuple[int, ...] | None = None
    per_row: Tensor | None = None
    label: str = ""

    def __post_init__(self) -> None:
        if (self.static is None) == (self.per_row is None):
            raise InputError("a PositionSet holds either fixed positions or per-example positions")
        if self.static is not None and len(self.static) == 0:
            raise InputError("an empty list of positions selects nothing")

    @classmethod
    def of(cls, positions: Any) -> PositionSet:
        if isinstance(positions, PositionSet):
            return positions
        if isinstance(positions, int):
            return cls(static=(int(positions),), label=str(positions))
        if isinstance(positions, Tensor):
            p = positions.long()
            if p.dim() == 0:
                return cls(static=(int(p),), label=str(int(p)))
            return cls(per_row=p if p.dim() == 2 else p[:, None], label="per-example")
        if isinstance(positions, Sequence) and not isinstance(positions, str):
            vals = tuple(int(v) for v in positions)
            return cls(static=vals, label=",".join(map(str, vals)))
        raise InputError(
            f"positions must be an int, a list of ints or a tensor of per-example positions, not "
            f"{positions!r}"
        )

    def __hash__(self) -> int:
        return hash(self.static) if self.static is not None else id(self.per_row)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PositionSet):
            return NotImplemented
        if self.static is not None or other.static is not None:
            return self.static == other.static
        return self.per_row is other.per_row

    def __repr__(self) -> str:
        return f"positions[{self.label}]"

    def check(self, seq: int, n: int | None, where: str) -> None:
        if self.static is not None:
            bad = [p for p in self.static if not -seq <= p < seq]
            if bad:
                raise SiteError(f"{where}: positions {bad} are out of range for sequences of {seq}")
        else:
            assert self.per_row is not None
            if n is not None and self.per_row.shape[0] != n:
                raise ShapeError(
                    f"{where}: per-example positions have {self.per_row.shape[0]} rows but there "
                    f"are {n} reference examples"
                )
            if bool(((self.per_row < -seq) | (self.per_row >= seq)).any()):
                raise SiteError(f"{where}: per-example positions out of range for length {seq}")

    def mask(self, rows: Tensor, seq: int) -> Tensor:
        """Boolean ``[len(rows), seq]``: which positions of each row are in the set."""
        m = torch.zeros(len(rows), seq, dtype=torch.bool)
        if self.static is not None:
            idx = torch.tensor([p % seq for p in self.static], dtype=torch.long)
            m[:, idx] = True
            return m
        assert self.per_row is not None
        p = self.per_row[rows.cpu()].long() % seq
        m.scatter_(1, p, True)
        return m


@dataclass(frozen=True)
class PositionAtom:
    """Positions in every ``include`` set and in no ``exclude`` set (a cell of a partition)."""

    include: frozenset[PositionSet] = frozenset()
    exclude: frozenset[PositionSet] = frozenset()

    def mask(self, rows: Tensor, seq: int) -> Tensor:
        m = torch.ones(len(rows), seq, dtype=torch.bool)
        for s in self.include:
            m &= s.mask(rows, seq)
        for s in self.exclude:
            m &= ~s.mask(rows, seq)
        return m

    def __repr__(self) -> str:
        inc = " & ".join(repr(s) for s in self.include) or "all"
        exc = "".join(f" - {s!r}" for s in self.exclude)
        return inc + exc


__all__ = ["PositionAtom", "PositionSet"]
