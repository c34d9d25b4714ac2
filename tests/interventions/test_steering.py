"""Add (steering) against a hand computation with a plain forward hook."""

from __future__ import annotations

import pytest
import torch

import faithlens as fl
from tests.helpers.reference import assert_matches_plain_edit


def test_add_steering_vector(gpt2, ids):
    v = torch.randn(32, generator=torch.Generator().manual_seed(1))

    def edit(x):
        return x + 2.5 * v

    assert_matches_plain_edit(
        gpt2, [fl.Add("resid_pre.1", vector=v, coef=2.5)], "transformer.h.1", "in", ids, edit
    )


def test_add_refuses_a_bad_coefficient_or_vector(gpt2, ids):
    with pytest.raises(fl.ArgumentError, match="coef"):
        fl.Add("resid_pre.1", vector=torch.ones(32), coef=float("nan"))
    with pytest.raises(fl.ArgumentError, match="vector"):
        fl.Add("resid_pre.1", vector=[1.0] * 32)  # type: ignore[arg-type]
    with pytest.raises(fl.ShapeError, match="steering vector has width 5"):
        gpt2.run(ids, [fl.Add("resid_pre.1", vector=torch.ones(5))])
