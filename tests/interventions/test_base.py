"""The Intervention base: a subclass needs only ``compute``; interventions at one site apply in
order, and several sites share one run."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import faithlens as fl
from faithlens.interventions.base import HookContext, Intervention, Rows, check_finite
from faithlens.models.sites import SiteLike
from tests.helpers.reference import run_with_plain_edit


@dataclass(frozen=True, eq=False)
class Negate(Intervention):
    """A user-defined intervention: flip the sign of the selection."""

    site: SiteLike
    rows: Rows = None

    def compute(self, current: torch.Tensor, ctx: HookContext) -> torch.Tensor:
        assert ctx.full.shape == (4, 9, 32) and ctx.batch == 4 and ctx.offset == 0
        return -current


def test_a_subclass_of_the_base_runs_like_the_shipped_ones(gpt2, ids):
    iv = Negate("resid_pre.1[:, 2]", rows=[0, 3])
    assert (iv.site_spec.name, iv.site_spec.positions) == ("resid_pre.1", 2)
    assert iv.describe() == f"Negate({iv.site_spec})"

    def edit(x):
        x[[0, 3], 2] = -x[[0, 3], 2]
        return x

    out = gpt2.run(ids, [iv]).logits
    ref = run_with_plain_edit(gpt2.module, "transformer.h.1", "in", ids, edit)
    assert torch.allclose(out, ref, atol=1e-5)


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


def test_check_finite_names_the_site_and_the_tensor():
    check_finite(torch.ones(3), fl.Site("mlp_out.0"), "mean")
    check_finite(torch.tensor([1, 2]), fl.Site("mlp_out.0"), "index")  # integers: nothing to check
    with pytest.raises(fl.InputError, match=r"mlp_out\.0: the pool contains NaN or inf"):
        check_finite(torch.tensor([0.0, float("nan")]), fl.Site("mlp_out.0"), "pool")
