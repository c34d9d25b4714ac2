"""``fl.Data``: the datasets methods take share one protocol and behave alike on it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch

import faithlens as fl
from faithlens.fingerprint import data_fingerprint
from faithlens.scrubbing import ScrubData
from faithlens.tasks.interchange import InterchangeData

N = 5


def _task(name: str = "toy", bump: int = 0) -> fl.Task:
    ids = torch.arange(N * 3).reshape(N, 3) + 1
    corrupt = ids.flip(0).clone()
    ids[0, 0] += bump
    return fl.Task(
        name=name,
        clean=fl.Inputs(ids=ids, mask=torch.ones_like(ids)),
        corrupt=fl.Inputs(ids=corrupt, mask=torch.ones_like(ids)),
        answers=torch.stack([torch.arange(N), torch.arange(N) + 1], -1),
        positions=torch.full((N,), 2),
    )


def _tensor_task(name: str = "toy", bump: int = 0) -> fl.Task:
    x = torch.arange(N * 12).reshape(N, 3, 2, 2).float()
    x[0, 0, 0, 0] += bump
    answers = torch.stack([torch.arange(N), torch.arange(N) + 1], -1)
    return fl.Task.from_tensors(x, x.flip(0).clone(), answers=answers, name=name)


def _scrub(name: str = "toy", bump: int = 0) -> ScrubData:
    x = torch.arange(N * 2).reshape(N, 2).float()
    x[0, 0] += bump
    return ScrubData(x=x, label=[f"w{i}" for i in range(N)], name=name)


def _interchange(name: str = "toy", bump: int = 0) -> InterchangeData:
    base = torch.arange(N * 2).reshape(N, 2).float()
    base[0, 0] += bump
    return InterchangeData(
        base=base, source=base.flip(0).clone(), labels=torch.arange(N) % 2, name=name
    )


def _pairs(name: str = "toy", bump: int = 0) -> fl.ContrastPairs:
    pos = [f"true {i}" for i in range(N)]
    pos[0] += "!" * bump
    return fl.ContrastPairs(
        positive=tuple(pos), negative=tuple(f"false {i}" for i in range(N)), name=name
    )


@dataclass(frozen=True)
class Kind:
    """How to build one dataset of a kind (``bump`` changes example 0) and read its rows."""

    build: Callable[..., Any]
    rows: Callable[[Any], list[Any]]


KINDS = {
    "Task": Kind(_task, lambda d: d.clean.ids.tolist()),
    "TensorTask": Kind(_tensor_task, lambda d: d.clean.args[0].tolist()),
    "ScrubData": Kind(_scrub, lambda d: list(zip(d["x"].tolist(), d["label"].tolist()))),
    "InterchangeData": Kind(_interchange, lambda d: list(zip(d.base.tolist(), d.labels.tolist()))),
    "ContrastPairs": Kind(_pairs, lambda d: list(zip(d.positive, d.negative))),
}
CASES = pytest.mark.parametrize("kind", list(KINDS.values()), ids=list(KINDS))


@CASES
def test_each_kind_is_data(kind):
    d = kind.build()
    assert isinstance(d, fl.Data)
    assert isinstance(d, fl.tasks.Data)
    assert d.name == "toy"
    assert len(d) == N


def test_something_else_is_not_data():
    assert not isinstance([1, 2, 3], fl.Data)
    assert not isinstance(torch.zeros(3), fl.Data)


@CASES
def test_subset_takes_rows_in_order_with_repeats(kind):
    d = kind.build()
    sub = d.subset([3, 0, 3])
    assert type(sub) is type(d)
    assert len(sub) == 3 and sub.name == d.name
    rows = kind.rows(d)
    assert kind.rows(sub) == [rows[3], rows[0], rows[3]]


@CASES
def test_subset_out_of_range_is_an_input_error(kind):
    with pytest.raises(fl.InputError, match="out of range"):
        kind.build().subset([0, N])


@CASES
def test_fingerprint_follows_the_contents(kind):
    d = kind.build()
    fp = d.fingerprint()
    assert isinstance(fp, str) and len(fp) == 64
    assert kind.build().fingerprint() == fp  # equal data, equal fingerprint
    assert d.subset(list(range(N))).fingerprint() == fp  # every row, in order: the same data
    assert d.subset([1, 0, 2, 3, 4]).fingerprint() != fp  # the order is part of the data
    assert kind.build(bump=1).fingerprint() != fp  # one example changed
    assert kind.build(name="other").fingerprint() != fp  # the name is part of it


def test_interchange_fingerprint_is_the_checkpoint_key_it_was():
    """DAS checkpoints written before ``fingerprint()`` existed hashed these fields; the method
    gives the same key, so they still resume."""
    d = _interchange()
    old = (
        "base", "source", "labels", "positions", "candidates", "natural", "cl_targets",
        "cl_groups", "name",
    )  # fmt: skip
    assert d.fingerprint() == data_fingerprint({f: getattr(d, f) for f in old})


def test_task_fingerprint_sees_the_metric():
    t = _task()
    assert t.with_metric("logit_diff").fingerprint() == t.fingerprint()
    assert t.with_metric("logprob").fingerprint() != t.fingerprint()


def test_scrub_data_name():
    t = _task()
    assert ScrubData.from_task(t).name == "toy"
    assert ScrubData(x=[1, 2]).name == "data"
    d = _scrub()
    assert d.take([1]).name == "toy" and d.concat(d).name == "toy"
    assert "name" not in d.columns
    with pytest.raises(fl.InputError, match="a column called 'name' goes in the mapping"):
        ScrubData(x=[1, 2], name=["a", "b"])  # type: ignore[arg-type]
    assert ScrubData({"name": ["a", "b"]})["name"].tolist() == ["a", "b"]
