"""Interchange in a basis: coordinate patching, rotated bases, soft masks, refused bases."""

from __future__ import annotations

import pytest
import torch

import faithlens as fl
from faithlens.interventions.interchange import Invertible
from tests.helpers.reference import assert_matches_plain_edit


def test_interchange_identity_basis_equals_coordinate_patching(gpt2, ids):
    src_ids = torch.randint(1, 97, (4, 9), generator=torch.Generator().manual_seed(6))
    src = gpt2.run(src_ids, cache=["resid_pre.1"])
    dims = [0, 5, 17]
    a = gpt2.run(
        ids, [fl.Interchange("resid_pre.1", basis=torch.eye(32), dims=dims, source=src)]
    ).logits
    b = gpt2.run(ids, [fl.Patch(fl.Site("resid_pre.1", units=dims), source=src)]).logits
    assert torch.allclose(a, b, atol=1e-6)


def test_interchange_rotated_basis(gpt2, ids):
    src_ids = torch.randint(1, 97, (4, 9), generator=torch.Generator().manual_seed(6))
    src = gpt2.run(src_ids, cache=["resid_pre.1"]).cache["resid_pre.1"]
    R, _ = torch.linalg.qr(torch.randn(32, 32, generator=torch.Generator().manual_seed(0)))
    dims = [1, 2]

    def edit(x):
        xr, sr = x @ R, src @ R
        xr[..., dims] = sr[..., dims]
        return xr @ R.T

    assert_matches_plain_edit(
        gpt2,
        [fl.Interchange("resid_pre.1", basis=R, dims=dims, source=src)],
        "transformer.h.1",
        "in",
        ids,
        edit,
    )
    # swapping every dimension is a full patch, whatever the basis
    full = gpt2.run(
        ids, [fl.Interchange("resid_pre.1", basis=R, dims=list(range(32)), source=src)]
    ).logits
    patched = gpt2.run(ids, [fl.Patch("resid_pre.1", source=src)]).logits
    assert torch.allclose(full, patched, atol=1e-5)


class Scale:
    """A non-orthogonal invertible map: scale every coordinate by 2."""

    def forward(self, x):
        return 2 * x

    def inverse(self, y):
        return y / 2


def test_an_invertible_map_and_a_soft_mask(gpt2, ids):
    src_ids = torch.randint(1, 97, (4, 9), generator=torch.Generator().manual_seed(6))
    src = gpt2.run(src_ids, cache=["resid_pre.1"]).cache["resid_pre.1"]
    assert isinstance(Scale(), Invertible)
    mask = torch.zeros(32)
    mask[:4] = 0.25

    def edit(x):
        return x + mask * (src - x)  # the scaling cancels

    assert_matches_plain_edit(
        gpt2,
        [fl.Interchange("resid_pre.1", basis=Scale(), dims=None, source=src, mask=mask)],
        "transformer.h.1",
        "in",
        ids,
        edit,
    )
    with pytest.raises(fl.InputError, match="dims or a mask, not both"):
        gpt2.run(
            ids, [fl.Interchange("resid_pre.1", basis=Scale(), dims=[0], source=src, mask=mask)]
        )


def test_interchange_rejects_non_orthogonal_tensor(gpt2, ids):
    with pytest.raises(fl.InputError, match="orthogonal"):
        gpt2.run(
            ids,
            [
                fl.Interchange(
                    "resid_pre.1", basis=torch.ones(32, 32), dims=[0], source=torch.zeros(4, 9, 32)
                )
            ],
        )
