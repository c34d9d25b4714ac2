"""``InterchangeData``: the training data of an alignment search (DAS).

Each example is a (base, source) pair of inputs and the label that a high-level causal model
predicts when the aligned variable of the source is written into the base run. Optional parts:

- ``positions``: where a language model's logits are read (``"last"`` or ``[n]``);
- ``candidates``: ``[n, k]`` token ids to compare (the loss and the accuracy then use these
  logits only; ``labels`` index into them);
- ``natural``: natural activations at the site (``[m, width]``) that intervened activations are
  compared with (EMD); by default the source activations;
- ``cl_targets`` (``[n, width]``) and ``cl_groups`` (``[n]``): natural counterfactual latents
  for the CL loss and which variable's aligned subspace each row's target is compared in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..errors import InputError, ShapeError
from ..fingerprint import data_fingerprint
from ..models.model import Inputs
from .metrics import AnswerSet

if TYPE_CHECKING:
    from .base import Task


def _n_of(x: Any) -> int:
    if isinstance(x, Inputs):
        return x.batch_size
    if isinstance(x, Tensor):
        return int(x.shape[0])
    if isinstance(x, (list, tuple)):
        return len(x)
    raise InputError(f"cannot count the examples of a {type(x).__name__}")


def select_rows(x: Any, rows: Tensor) -> Any:
    """The examples ``rows`` of ``x`` (:class:`Inputs`, a tensor or a list; anything else is
    shared by every example and returned as it is)."""
    if isinstance(x, Inputs):
        return x.select(rows)
    if isinstance(x, Tensor):
        return x[rows.to(x.device)]
    if isinstance(x, (list, tuple)):
        return [x[int(i)] for i in rows]
    return x


#: What :meth:`InterchangeData.fingerprint` hashes (every field but ``meta``).
FINGERPRINT_FIELDS = (
    "base", "source", "labels", "positions", "candidates", "natural", "cl_targets", "cl_groups",
    "name",
)  # fmt: skip


@dataclass(frozen=True, eq=False)
class InterchangeData:
    """Base and source inputs, counterfactual labels, and what the CL loss and EMD need."""

    base: Any
    source: Any
    labels: Tensor
    positions: Any = None
    candidates: Tensor | None = None
    natural: Tensor | None = None
    cl_targets: Tensor | None = None
    cl_groups: Tensor | None = None
    name: str = "interchange"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = _n_of(self.base)
        if _n_of(self.source) != n:
            raise ShapeError(
                f"{self.name}: {n} base inputs but {_n_of(self.source)} source inputs; give one "
                "source per base example"
            )
        if self.labels.dim() != 1 or self.labels.shape[0] != n:
            raise ShapeError(f"{self.name}: labels must be [n={n}], got {tuple(self.labels.shape)}")
        if self.candidates is not None:
            if self.candidates.dim() != 2 or self.candidates.shape[0] != n:
                raise ShapeError(
                    f"{self.name}: candidates must be [n={n}, k], got {tuple(self.candidates.shape)}"
                )
            k = self.candidates.shape[1]
            if bool(((self.labels < 0) | (self.labels >= k)).any()):
                raise InputError(
                    f"{self.name}: with candidates, labels index into them (0..{k - 1})"
                )
        for name in ("cl_targets", "cl_groups"):
            v = getattr(self, name)
            if v is not None and v.shape[0] != n:
                raise ShapeError(f"{self.name}: {name} has {v.shape[0]} rows, expected {n}")
        if self.cl_groups is not None and self.cl_targets is None:
            raise InputError(f"{self.name}: cl_groups without cl_targets")
        for name in ("natural", "cl_targets"):
            v = getattr(self, name)
            if v is not None and not bool(torch.isfinite(v).all()):
                raise InputError(f"{self.name}: {name} contains NaN or infinite values")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, rows: Sequence[int] | Tensor) -> InterchangeData:
        """The examples ``rows`` (in that order, repetitions allowed)."""
        idx = rows if isinstance(rows, Tensor) else torch.tensor(list(rows), dtype=torch.long)
        idx = idx.long().cpu()
        n = len(self)
        if bool(((idx < -n) | (idx >= n)).any()):
            raise InputError(
                f"{self.name}: rows {idx.flatten().tolist()[:8]} are out of range for "
                f"{n} examples (0..{n - 1})"
            )
        pos = self.positions
        if isinstance(pos, Tensor) and pos.dim() >= 1 and pos.shape[0] == len(self):
            pos = pos[idx]
        return replace(
            self,
            base=select_rows(self.base, idx),
            source=select_rows(self.source, idx),
            labels=self.labels[idx],
            positions=pos,
            candidates=None if self.candidates is None else self.candidates[idx],
            cl_targets=None if self.cl_targets is None else self.cl_targets[idx],
            cl_groups=None if self.cl_groups is None else self.cl_groups[idx],
        )

    def fingerprint(self) -> str:
        """sha256 of the fields in :data:`FINGERPRINT_FIELDS` (not ``meta``): the
        :class:`~faithlens.tasks.data.Data` fingerprint, and the data key of a DAS checkpoint."""
        return data_fingerprint({f: getattr(self, f) for f in FINGERPRINT_FIELDS})

    @classmethod
    def from_task(cls, task: Task) -> InterchangeData:
        """DAS data from a clean/corrupted task: the aligned subspace is copied from the clean
        run into the corrupted run, and the counterfactual label is the clean answer
        (``candidates`` are the task's (correct, wrong) answers; label 0). IIA is then the
        fraction of corrupted prompts on which the interchange restores the clean preference.
        A multi-token task is refused (DAS reads one position's answer logits)."""
        if task.is_multi_token:
            from .multi_token import refusal

            raise InputError(refusal(task, "InterchangeData.from_task (DAS)"))
        if isinstance(task.metric, AnswerSet) and task.answers.shape[1] > 2:
            raise InputError(
                f"InterchangeData.from_task (DAS): the task {task.name!r} scores answer sets "
                f"(AnswerSet: {task.metric.n_correct} correct, "
                f"{task.answers.shape[1] - task.metric.n_correct} wrong), but DAS's label is "
                "one answer among (correct, wrong) candidates; give one correct and one wrong "
                "answer per example"
            )
        return cls(
            base=task.corrupt,
            source=task.clean,
            labels=torch.zeros(task.n, dtype=torch.long),
            positions=task.positions,
            candidates=task.answers[:, :2],
            name=f"{task.name}:clean->corrupt",
        )


__all__ = ["FINGERPRINT_FIELDS", "InterchangeData", "select_rows"]
