"""Project and orthonormal against a hand computation with a plain forward hook."""

from __future__ import annotations

import pytest
import torch

import faithlens as fl
from faithlens.interventions.subspace import orthonormal
from tests.helpers.reference import assert_matches_plain_edit


@pytest.mark.parametrize("mode", ["onto", "out"])
def test_project(gpt2, ids, mode):
    basis = torch.randn(32, 3, generator=torch.Generator().manual_seed(2))
    q, _ = torch.linalg.qr(basis)
    P = q @ q.T

    def edit(x):
        return x @ P if mode == "onto" else x - x @ P

    assert_matches_plain_edit(
        gpt2,
        [fl.Project("resid_pre.2", basis=basis, mode=mode)],
        "transformer.h.2",
        "in",
        ids,
        edit,
    )


def test_project_with_source_is_subspace_patching(gpt2, ids):
    src_ids = torch.randint(1, 97, (4, 9), generator=torch.Generator().manual_seed(4))
    src = gpt2.run(src_ids, cache=["resid_pre.2"]).cache["resid_pre.2"]
    basis = torch.randn(32, 2, generator=torch.Generator().manual_seed(2))
    q, _ = torch.linalg.qr(basis)
    P = q @ q.T

    def edit(x):
        return x - x @ P + src @ P

    assert_matches_plain_edit(
        gpt2,
        [fl.Project("resid_pre.2", basis=basis, source=src)],
        "transformer.h.2",
        "in",
        ids,
        edit,
    )


def test_orthonormal_spans_the_basis_and_refuses_a_dependent_one():
    basis = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    q = orthonormal(basis)
    assert torch.allclose(q.T @ q, torch.eye(3), atol=1e-6)
    assert torch.allclose(q @ q.T @ basis, basis, atol=1e-5)  # same span
    assert orthonormal(torch.ones(8)).shape == (8, 1)
    with pytest.raises(fl.InputError, match="rank-deficient"):
        orthonormal(torch.cat([basis, basis[:, :1] * 2], dim=1))
    with pytest.raises(fl.ShapeError, match="at most width columns"):
        orthonormal(torch.randn(2, 3))
    with pytest.raises(fl.InputError, match="mode must be"):
        fl.Project("resid_pre.2", basis=basis, mode="into")
