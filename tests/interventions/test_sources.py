"""Sources: read from a tensor or a run's cache, checked against the selection or the whole site,
and fitted to the selection during the run."""

from __future__ import annotations

import pytest
import torch

import faithlens as fl
from faithlens.interventions.base import HookContext
from faithlens.interventions.sources import check_source, fit_source, source_tensor
from faithlens.models.sites import HookPoint, Selection, Site, SiteInfo

SITE = Site("resid_pre.1")


def test_source_tensor_reads_a_tensor_a_mapping_or_a_cache(gpt2, ids):
    t = torch.zeros(2, 3, 4)
    assert source_tensor(t, SITE) is t
    assert source_tensor({"resid_pre.1": t}, SITE) is t
    out = gpt2.run(ids, cache=["resid_pre.1"])
    assert source_tensor(out, SITE) is out.cache["resid_pre.1"]
    with pytest.raises(
        fl.InputError, match=r"did not cache 'resid_pre.1'.*cache=\['resid_pre.1'\]"
    ):
        source_tensor({"mlp_out.0": t}, SITE)
    with pytest.raises(fl.InputError, match="tensor or a run's cache, not list"):
        source_tensor([t], SITE)


def test_check_source_takes_the_selection_or_the_whole_site():
    shape, site_shape = (2, 1, 3), (4, 9, 8)
    check_source(torch.zeros(shape), SITE, shape, site_shape)  # the selection
    check_source(torch.zeros(site_shape), SITE, shape, site_shape)  # the whole site
    check_source(torch.zeros(2, 9, 8), SITE, shape, site_shape)  # the site, selected rows
    with pytest.raises(fl.ShapeError, match=r"patch source has shape \(4, 9, 7\)"):
        check_source(torch.zeros(4, 9, 7), SITE, shape, site_shape)
    bad = torch.zeros(shape)
    bad[0, 0, 0] = float("inf")
    with pytest.raises(fl.InputError, match="source contains NaN or inf"):
        check_source(bad, SITE, shape, site_shape)


def test_fit_source_selects_rows_positions_and_units_from_a_whole_site_source():
    # a site that is units 4..8 of a hooked tensor of width 10; rows 1 and 3, units 5 and 6
    info = SiteInfo("head.0.1", "head", HookPoint("attn"), width=4, start=4)
    rows = torch.tensor([1, 3])
    positions = torch.tensor([[0, 2], [1, 2]])
    sel = Selection(info, rows, positions, slice(5, 7))
    ctx = HookContext(selection=sel, full=torch.zeros(4, 3, 10), batch=4, offset=0)
    src = torch.arange(4 * 3 * 4, dtype=torch.float32).reshape(4, 3, 4)
    got = fit_source(src, ctx, "head.0.1")
    want = torch.stack([src[1, [0, 2]][:, 1:3], src[3, [1, 2]][:, 1:3]])
    assert torch.equal(got, want)
    assert fit_source(want, ctx, "head.0.1") is want  # already the selection
    with pytest.raises(fl.ShapeError, match="expected"):
        fit_source(torch.zeros(5, 5), ctx, "head.0.1")
