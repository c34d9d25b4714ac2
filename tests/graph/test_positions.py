"""PositionSet and PositionAtom: construction, equality, range checks and masks."""

from __future__ import annotations

import pytest
import torch

import faithlens as fl
from faithlens.graph import PositionAtom, PositionSet


def test_of_accepts_ints_lists_and_tensors():
    assert PositionSet.of(2).static == (2,)
    assert PositionSet.of([0, -1]).static == (0, -1)
    assert PositionSet.of(torch.tensor(3)).static == (3,)
    per = PositionSet.of(torch.tensor([1, 2, 0]))
    assert per.static is None and per.per_row is not None and per.per_row.shape == (3, 1)
    two = PositionSet.of(torch.tensor([[0, 1], [2, 3]]))
    assert two.per_row is not None and two.per_row.shape == (2, 2)
    same = PositionSet.of(per)
    assert same is per
    assert repr(PositionSet.of([0, -1])) == "positions[0,-1]"
    for bad in ("1", 1.5, None):
        with pytest.raises(fl.InputError, match="positions must be"):
            PositionSet.of(bad)
    with pytest.raises(fl.InputError, match="selects nothing"):
        PositionSet.of([])
    with pytest.raises(fl.InputError, match="either fixed positions or per-example"):
        PositionSet()


def test_equality_is_by_value_for_fixed_and_by_identity_for_per_example():
    assert PositionSet.of([1, 2]) == PositionSet.of((1, 2))
    assert hash(PositionSet.of([1, 2])) == hash(PositionSet.of((1, 2)))
    assert PositionSet.of([1, 2]) != PositionSet.of([2, 1])
    t = torch.tensor([1, 2])
    a, b = PositionSet.of(t), PositionSet.of(t)
    assert a != b  # two per-example sets are distinct objects (different .per_row tensors)
    assert a == a and len({a, a}) == 1
    assert PositionSet.of(1) != PositionSet.of(torch.tensor([1, 1]))


def test_check_refuses_out_of_range_positions():
    PositionSet.of([0, -5]).check(5, None, "here")
    with pytest.raises(fl.SiteError, match=r"here: positions \[5\] are out of range"):
        PositionSet.of([0, 5]).check(5, None, "here")
    with pytest.raises(fl.SiteError, match="out of range"):
        PositionSet.of([-6]).check(5, None, "here")
    per = PositionSet.of(torch.tensor([0, 4]))
    per.check(5, 2, "x")
    with pytest.raises(fl.ShapeError, match="2 rows but there are 3"):
        per.check(5, 3, "x")
    with pytest.raises(fl.SiteError, match="out of range for length 4"):
        per.check(4, 2, "x")


def test_masks():
    rows = torch.tensor([0, 2])
    m = PositionSet.of([0, -1]).mask(rows, 4)
    assert m.tolist() == [[True, False, False, True]] * 2
    per = PositionSet.of(torch.tensor([[1], [3], [2]]))
    assert per.mask(rows, 4).tolist() == [[False, True, False, False], [False, False, True, False]]
    a, b = PositionSet.of([0, 1, 2]), PositionSet.of(1)
    atom = PositionAtom(frozenset({a}), frozenset({b}))
    assert atom.mask(rows, 4).tolist() == [[True, False, True, False]] * 2
    assert PositionAtom().mask(rows, 3).all()
    assert repr(atom) == "positions[0,1,2] - positions[1]"
    assert repr(PositionAtom()) == "all"
    # atoms are values: equal sets give equal (hashable) atoms
    assert atom == PositionAtom(frozenset({PositionSet.of([0, 1, 2])}), frozenset({b}))
