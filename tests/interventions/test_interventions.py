"""Each intervention against a hand computation with a plain forward hook."""

from __future__ import annotations

import pytest
import torch

import faithlens as fl
from tests.helpers.reference import plain_capture


@pytest.fixture
def gpt2(tiny_gpt2):
    return fl.wrap(tiny_gpt2)


def run_with_plain_edit(hf, path, io, ids, edit):
    """Reference: a bare hook that applies ``edit`` to the whole tensor."""
    target = hf.get_submodule(path)
    if io == "in":
        h = target.register_forward_pre_hook(lambda m, a: (edit(a[0].clone()), *a[1:]))
    else:

        def post(m, a, o):
            if isinstance(o, torch.Tensor):
                return edit(o.clone())
            return (edit(o[0].clone()), *o[1:])

        h = target.register_forward_hook(post)
    try:
        with torch.no_grad():
            return hf(input_ids=ids).logits
    finally:
        h.remove()


def check(model, ivs, path, io, ids, edit, atol=1e-5):
    out = model.run(ids, ivs).logits
    ref = run_with_plain_edit(model.module, path, io, ids, edit)
    assert torch.allclose(out, ref, atol=atol)


def test_zero_head_at_position(gpt2, ids):
    def edit(x):
        x[:, 3, 8:16] = 0
        return x

    check(gpt2, [fl.Zero("head.1.1[:, 3]")], "transformer.h.1.attn.c_proj", "in", ids, edit)


def test_zero_units_of_mlp_post(gpt2, ids):
    def edit(x):
        x[:, :, [2, 5, 7]] = 0
        return x

    check(
        gpt2,
        [fl.Zero(fl.Site("mlp_post.0", units=[2, 5, 7]))],
        "transformer.h.0.mlp.c_proj",
        "in",
        ids,
        edit,
    )


def test_mean_fit_tokens_and_examples(gpt2, ids):
    ref_data = torch.randint(1, 97, (6, 9), generator=torch.Generator().manual_seed(5))
    acts = plain_capture(gpt2.module, "transformer.h.1.mlp", "out", ref_data)
    mean_tok = fl.Mean.fit(gpt2, "mlp_out.1", ref_data)
    assert torch.allclose(mean_tok.value, acts.mean((0, 1)), atol=1e-6)
    mean_pos = fl.Mean.fit(gpt2, "mlp_out.1", ref_data, over="examples")
    assert torch.allclose(mean_pos.value, acts.mean(0), atol=1e-6)

    def edit(x):
        return acts.mean(0).expand_as(x).clone()

    check(gpt2, [mean_pos], "transformer.h.1.mlp", "out", ids, edit)


def test_resample_is_seeded_and_per_example(gpt2, ids):
    pool_data = torch.randint(1, 97, (5, 9), generator=torch.Generator().manual_seed(7))
    pool = plain_capture(gpt2.module, "transformer.h.0", "out", pool_data)
    iv = fl.Resample("resid_post.0", pool=pool, seed=3)
    idx = iv.draw(4)
    assert torch.equal(idx, fl.Resample("resid_post.0", pool=pool, seed=3).draw(4))

    def edit(x):
        return pool[idx].clone()

    check(gpt2, [iv], "transformer.h.0", "out", ids, edit)


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

    check(gpt2, [iv], "transformer.h.2", "in", ids, edit)


def test_add_steering_vector(gpt2, ids):
    v = torch.randn(32, generator=torch.Generator().manual_seed(1))

    def edit(x):
        return x + 2.5 * v

    check(gpt2, [fl.Add("resid_pre.1", vector=v, coef=2.5)], "transformer.h.1", "in", ids, edit)


@pytest.mark.parametrize("mode", ["onto", "out"])
def test_project(gpt2, ids, mode):
    basis = torch.randn(32, 3, generator=torch.Generator().manual_seed(2))
    q, _ = torch.linalg.qr(basis)
    P = q @ q.T

    def edit(x):
        return x @ P if mode == "onto" else x - x @ P

    check(
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

    check(
        gpt2,
        [fl.Project("resid_pre.2", basis=basis, source=src)],
        "transformer.h.2",
        "in",
        ids,
        edit,
    )


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

    check(
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


def test_compose_same_site_in_order_and_several_sites(gpt2, ids):
    v = torch.ones(32)

    def edit_layer1(x):
        return torch.zeros_like(x) + 1.0  # zero then add

    a = gpt2.run(ids, [fl.Zero("resid_pre.1"), fl.Add("resid_pre.1", vector=v)]).logits
    b = run_with_plain_edit(gpt2.module, "transformer.h.1", "in", ids, edit_layer1)
    assert torch.allclose(a, b, atol=1e-5)
    # several sites in one run
    out = gpt2.run(
        ids,
        [fl.Zero("head.0.0"), fl.Zero("mlp_out.2"), fl.Add("resid_pre.1", vector=v)],
        cache=["mlp_out.2"],
    )
    assert torch.count_nonzero(out.cache["mlp_out.2"]) == 0


def test_gradients_at_sites(gpt2, ids):
    out = gpt2.run(ids, grad=True, grad_sites=["resid_pre.1", "head.1.2"], cache=["resid_pre.1"])
    out.logits[:, -1, 3].sum().backward()
    g = out.grad("resid_pre.1")
    assert g.shape == (4, 9, 32) and g.abs().sum() > 0
    assert out.grad("head.1.2").shape == (4, 9, 8)
    gpt2.module.zero_grad(set_to_none=True)
