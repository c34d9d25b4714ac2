"""Alignments, the soft-mask interchange, the CL losses: exact checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import faithlens as fl
from faithlens.das import (
    BoundlessMask,
    IdentityBasis,
    Rotation,
    SymmetricDefinite,
    alignment_from_flat,
    cl_loss_mas,
    cl_loss_modified,
    load_alignment,
)


@pytest.mark.parametrize("cls", [Rotation, SymmetricDefinite, IdentityBasis])
def test_inverse_of_forward_is_identity(cls):
    torch.manual_seed(0)
    al = cls(7)
    h = torch.randn(5, 3, 7, dtype=torch.float64)
    al = al.double()
    assert torch.allclose(al.inverse(al.forward(h)), h, atol=1e-10)


def test_rotation_is_orthogonal_and_linear_is_not():
    torch.manual_seed(0)
    w = Rotation(6).matrix().detach()
    assert torch.allclose(w.T @ w, torch.eye(6), atol=1e-5)
    v = SymmetricDefinite(6).matrix().detach()
    assert not torch.allclose(v.T @ v, torch.eye(6), atol=1e-2)
    # W = (A A^T + 0.1 I) diag(sigma), sigma = tanh(s) + 0.1 sign(tanh(s))
    al = SymmetricDefinite(3)
    with torch.no_grad():
        al.A.copy_(torch.tensor([[1.0, 0, 0], [0, 2, 0], [0, 0, 0]]))
        al.s.copy_(torch.tensor([0.5, -0.5, 0.0]))
    t = np.tanh(0.5)
    want = np.diag([1.1, 4.1, 0.1]) @ np.diag([t + 0.1, -t - 0.1, 0.0])
    assert np.allclose(al.matrix().detach().numpy(), want, atol=1e-6)


@pytest.mark.parametrize("cls", [Rotation, SymmetricDefinite])
def test_save_load_and_flat_round_trip(tmp_path, cls):
    torch.manual_seed(3)
    al = cls(5)
    x = torch.randn(4, 5)
    back = load_alignment(al.save(tmp_path / "al"))
    assert type(back) is cls
    assert torch.allclose(back.forward(x), al.forward(x), atol=1e-6)
    flat = alignment_from_flat(al.spec(), al.to_flat())
    assert torch.allclose(flat.forward(x), al.forward(x), atol=1e-6)
    with pytest.raises(fl.InputError, match="no saved alignment"):
        load_alignment(tmp_path / "nothing")


def test_boundless_mask_formula():
    m = BoundlessMask(10, init=0.3)
    got = m(2.0).detach()
    i = torch.arange(10.0)
    want = torch.sigmoid((3.0 - i - 0.5) / 2.0)
    assert torch.allclose(got, want)
    assert m.hard_dims() == [0, 1, 2]
    # at a low temperature the mask is the indicator of the first round(b D) coordinates: the
    # first coordinate is fully swapped (the old mask's sigmoid(0 / T) kept it at 1/2)
    assert torch.allclose(m(0.01).detach(), (i < 3).double().to(got.dtype), atol=1e-6)
    # the boundary has a gradient everywhere (the old clamp to [1e-3, 1] had none at 0)
    far = BoundlessMask(10, init=1e-4)
    far(1.0).sum().backward()
    assert far.theta.grad is not None and float(far.theta.grad) > 0
    with pytest.raises(fl.InputError, match="init"):
        BoundlessMask(10, init=1.0)


def test_identity_basis_interchange_equals_coordinate_patching(tiny_llama):
    model = fl.wrap(tiny_llama)
    g = torch.Generator().manual_seed(0)
    base = torch.randint(1, 90, (3, 7), generator=g)
    src_ids = torch.randint(1, 90, (3, 7), generator=g)
    site = "resid_pre.1"
    src = model.run(src_ids, cache=[site]).cache[site]
    dims = [0, 5, 17, 30]
    patched = model.run(base, [fl.Patch(fl.Site(site, units=dims), source=src)]).logits
    eye = model.run(base, [fl.Interchange(site, basis=torch.eye(48), dims=dims, source=src)]).logits
    ident = model.run(
        base, [fl.Interchange(site, basis=IdentityBasis(48), dims=dims, source=src)]
    ).logits
    mask = torch.zeros(48)
    mask[dims] = 1.0
    soft = model.run(
        base, [fl.Interchange(site, basis=Rotation(48), dims=None, source=src, mask=mask)]
    ).logits
    assert torch.allclose(eye, patched, atol=1e-5)
    assert torch.allclose(ident, patched, atol=1e-5)
    # a 0/1 soft mask equals hard dims in the same basis
    torch.manual_seed(1)
    rot = Rotation(48)
    hard_rot = model.run(base, [fl.Interchange(site, basis=rot, dims=dims, source=src)]).logits
    soft_rot = model.run(
        base, [fl.Interchange(site, basis=rot, dims=None, source=src, mask=mask)]
    ).logits
    assert torch.allclose(hard_rot, soft_rot, atol=1e-5)
    assert soft.shape == patched.shape
    with pytest.raises(fl.InputError, match="dims or a mask, not both"):
        model.run(base, [fl.Interchange(site, basis=rot, dims=dims, source=src, mask=mask)])


def test_cl_loss_mas_hand_computed():
    h = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    c = torch.tensor([[1.0, 1.0], [0.0, -2.0]])
    # row 0: mse 0.5, 1 - cos = 1 - 1/sqrt(2); row 1: mse 8, 1 - cos = 2
    want = 0.5 * np.mean([0.5 + 1 - 1 / np.sqrt(2), 8 + 2])
    assert float(cl_loss_mas(h, c)) == pytest.approx(want)
    assert float(cl_loss_mas(h, c, form="mse")) == pytest.approx(0.5 * np.mean([0.5, 8]))


def test_cl_loss_modified_with_one_dim_cos_term_is_0_or_2():
    al = IdentityBasis(3)
    h = torch.tensor([[2.0, 5.0, 1.0], [-1.0, 3.0, 0.0], [0.5, -2.0, 7.0]])
    c = torch.tensor([[1.0, -4.0, 9.0], [1.0, 1.0, 1.0], [0.2, -1.0, 0.0]])
    groups = torch.tensor([0, 0, 1])
    cos_only = cl_loss_modified(h, c, al, groups, [[0], [1]], form="cos")
    # row 0: x-projections 2 vs 1 (same sign: 0), row 1: -1 vs 1 (2), row 2: y -2 vs -1 (0)
    assert float(cos_only) == pytest.approx(2 / 3)
    mse = cl_loss_modified(h, c, al, groups, [[0], [1]], form="mse")
    # squared differences inside the projected coordinate only, averaged over all 3x3 entries
    assert float(mse) == pytest.approx((1 + 4 + 1) / 9)
    # gradients flow to h, not to the (detached) targets
    hh = h.clone().requires_grad_(True)
    cc = c.clone().requires_grad_(True)
    cl_loss_modified(hh, cc, al, groups, [[0], [1]]).backward()
    assert hh.grad is not None and cc.grad is None
    with pytest.raises(fl.ShapeError, match="one natural counterfactual latent per"):
        cl_loss_mas(h, c[:2])
