"""Patch against a hand computation with a plain forward hook."""

from __future__ import annotations

import pytest
import torch

import faithlens as fl
from tests.helpers.reference import assert_matches_plain_edit


def test_patch_per_example_positions_and_rows(gpt2, ids):
    src_ids = torch.randint(1, 97, (4, 9), generator=torch.Generator().manual_seed(9))
    src = gpt2.run(src_ids, cache=["resid_pre.2"])
    pos = torch.tensor([0, 4, 8, 2])
    iv = fl.Patch(fl.Site("resid_pre.2", positions=pos[1:3]), source=src, rows=[1, 2])
    full = src.cache["resid_pre.2"]

    def edit(x):
        x[1, 4] = full[1, 4]
        x[2, 8] = full[2, 8]
        return x

    assert_matches_plain_edit(gpt2, [iv], "transformer.h.2", "in", ids, edit)


def test_patch_refuses_a_source_of_the_wrong_shape(gpt2, ids):
    with pytest.raises(fl.ShapeError, match="patch source has shape"):
        gpt2.run(ids, [fl.Patch("resid_pre.2", source=torch.zeros(4, 9, 7))])
