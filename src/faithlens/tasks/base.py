"""``Task``: clean and corrupted inputs, answer tokens and a metric."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..errors import InputError
from ..models.model import Inputs, Model
from .metrics import LogitDiff, Metric, get_metric

if TYPE_CHECKING:
    from ..interventions import Intervention


@dataclass(frozen=True, eq=False)
class Task:
    """A behaviour to explain, as a contrast between clean and corrupted inputs.

    ``clean`` and ``corrupt`` are right-padded token batches of the same shape and padding (each
    clean prompt has exactly as many tokens as its corrupted twin); ``answers`` is ``[n, 2]``
    (correct, wrong) token ids read at ``positions`` (``[n]``, each example's last real token by
    default) by ``metric``.
    """

    name: str
    clean: Inputs
    corrupt: Inputs
    answers: Tensor
    positions: Tensor
    metric: Metric = field(default_factory=LogitDiff)
    prompts: tuple[str, ...] | None = None
    corrupt_prompts: tuple[str, ...] | None = None
    answer_text: tuple[tuple[str, ...], ...] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        c, k = self.clean, self.corrupt
        if c.ids is None or k.ids is None:
            raise InputError("a Task needs token ids for its clean and corrupted inputs")
        n = int(c.ids.shape[0])
        if tuple(c.ids.shape) != tuple(k.ids.shape):
            raise InputError(
                f"clean inputs are {tuple(c.ids.shape)} but corrupted are {tuple(k.ids.shape)}: "
                "each pair must have the same number of tokens"
            )
        cm = c.mask if c.mask is not None else torch.ones_like(c.ids)
        km = k.mask if k.mask is not None else torch.ones_like(k.ids)
        if not torch.equal(cm.cpu(), km.cpu()):
            rows = (cm != km).any(-1).nonzero().flatten().tolist()[:8]
            raise InputError(
                f"clean and corrupted prompts {rows} have different token lengths; patching "
                "needs position-aligned pairs (same number of tokens in each pair)"
            )
        if self.answers.dim() != 2 or self.answers.shape[0] != n or self.answers.shape[1] < 2:
            raise InputError(
                f"answers must be [n={n}, 2] token ids; got {tuple(self.answers.shape)}"
            )
        if self.positions.shape != (n,):
            raise InputError(f"positions must be [n={n}]; got {tuple(self.positions.shape)}")

    def __len__(self) -> int:
        assert self.clean.ids is not None
        return int(self.clean.ids.shape[0])

    @property
    def n(self) -> int:
        return len(self)

    @property
    def seq_len(self) -> int:
        assert self.clean.ids is not None
        return int(self.clean.ids.shape[1])

    def first_difference(self) -> Tensor:
        """Per example, the first position where clean and corrupted tokens differ (seq_len if
        they never do). In a causal model nothing before it differs between the two runs."""
        assert self.clean.ids is not None and self.corrupt.ids is not None
        diff = self.clean.ids.cpu() != self.corrupt.ids.cpu()
        seq = diff.shape[1]
        first = torch.where(
            diff.any(-1), diff.float().argmax(-1), torch.full((diff.shape[0],), seq)
        )
        return first.long()

    def subset(self, rows: Sequence[int] | Tensor | slice) -> Task:
        """The task restricted to some examples."""
        idx = (
            rows
            if isinstance(rows, (slice, Tensor))
            else torch.tensor(list(rows), dtype=torch.long)
        )

        def pick(t: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
            if t is None:
                return None
            if isinstance(idx, slice):
                return t[idx]
            return tuple(t[int(i)] for i in idx)

        return replace(
            self,
            clean=self.clean.select(idx),
            corrupt=self.corrupt.select(idx),
            answers=self.answers[idx],
            positions=self.positions[idx],
            prompts=pick(self.prompts),
            corrupt_prompts=pick(self.corrupt_prompts),
            answer_text=pick(self.answer_text),
        )

    def with_metric(self, metric: str | Metric) -> Task:
        return replace(self, metric=get_metric(metric))

    def to(self, device: torch.device | str) -> Task:
        return replace(self, clean=self.clean.to(device), corrupt=self.corrupt.to(device))

    def evaluate(
        self,
        model: Model,
        which: str = "clean",
        interventions: Sequence[Intervention] = (),
    ) -> Tensor:
        """The metric per example on the clean or corrupted inputs (optionally intervened)."""
        if which not in ("clean", "corrupt"):
            raise InputError(f"which must be 'clean' or 'corrupt', not {which!r}")
        inputs = self.clean if which == "clean" else self.corrupt
        out = model.run(inputs, interventions, logits_at=self.positions)
        assert out.logits is not None
        return self.metric(out.logits[:, 0], self.answers)

    def bind(self, model: Model, interventions: Sequence[Intervention]) -> list[Intervention]:
        """Resolve ``source="clean"`` / ``source="corrupt"`` references (as returned by
        ``PatchingResult.interventions()``) into this task's cached activations."""
        import dataclasses

        from ..models.sites import Site

        wanted: dict[str, set[str]] = {"clean": set(), "corrupt": set()}
        for iv in interventions:
            ref = getattr(iv, "source", None)
            if isinstance(ref, str):
                if ref not in wanted:
                    raise InputError(
                        f"{iv.describe()}: source {ref!r} is not a tensor, a cache, 'clean' or 'corrupt'"
                    )
                wanted[ref].add(iv.site_spec.name)
        caches = {}
        for which, names in wanted.items():
            if names:
                inputs = self.clean if which == "clean" else self.corrupt
                caches[which] = model.run(inputs, cache=[Site(n) for n in sorted(names)]).cache
        out: list[Intervention] = []
        for iv in interventions:
            ref = getattr(iv, "source", None)
            if isinstance(ref, str):
                iv = dataclasses.replace(iv, source=caches[ref][iv.site_spec.name])  # type: ignore[type-var]
            out.append(iv)
        return out

    @classmethod
    def from_prompts(
        cls,
        model: Model,
        clean: Sequence[str],
        corrupt: Sequence[str],
        answers: Sequence[tuple[str, str]],
        *,
        metric: str | Metric = "logit_diff",
        name: str = "custom",
    ) -> Task:
        """Build a task from text; the metric reads the logits at each prompt's last token.

        Each answer pair is (correct, wrong), each a single token (mind the leading space).
        """
        if not (len(clean) == len(corrupt) == len(answers)):
            raise InputError(
                f"got {len(clean)} clean prompts, {len(corrupt)} corrupted prompts and "
                f"{len(answers)} answer pairs; give one of each per example"
            )
        if len(clean) == 0:
            raise InputError("a task needs at least one example")
        answer_ids = []
        for pair in answers:
            if len(pair) < 2:
                raise InputError(f"answer {pair!r} must be a (correct, wrong) pair")
            answer_ids.append([model.token_id(a) for a in pair])
        ci = model.tokenize(list(clean))
        ki = model.tokenize(list(corrupt))
        assert ci.mask is not None and ki.mask is not None
        lc, lk = ci.mask.sum(-1), ki.mask.sum(-1)
        bad = (lc != lk).nonzero().flatten().tolist()
        if bad:
            i = bad[0]
            raise InputError(
                f"clean and corrupted prompts of example {i} have different token lengths "
                f"({int(lc[i])} vs {int(lk[i])}): {clean[i]!r} / {corrupt[i]!r}. Patching needs "
                f"position-aligned pairs. ({len(bad)} such examples: {bad[:8]})"
            )
        if ki.ids is not None and ci.ids is not None and ki.ids.shape != ci.ids.shape:
            ki = Inputs(ids=ki.ids[:, : ci.ids.shape[1]], mask=ki.mask[:, : ci.ids.shape[1]])
        positions = (lc - 1).long()
        return cls(
            name=name,
            clean=ci,
            corrupt=ki,
            answers=torch.tensor(answer_ids, dtype=torch.long),
            positions=positions,
            metric=get_metric(metric),
            prompts=tuple(clean),
            corrupt_prompts=tuple(corrupt),
            answer_text=tuple(tuple(a) for a in answers),
        )
