"""Zero, Mean and Resample ablations against a hand computation with a plain forward hook."""

from __future__ import annotations

import pytest
import torch

import faithlens as fl
from tests.helpers.reference import assert_matches_plain_edit, plain_capture


def test_zero_head_at_position(gpt2, ids):
    def edit(x):
        x[:, 3, 8:16] = 0
        return x

    assert_matches_plain_edit(
        gpt2, [fl.Zero("head.1.1[:, 3]")], "transformer.h.1.attn.c_proj", "in", ids, edit
    )


def test_zero_units_of_mlp_post(gpt2, ids):
    def edit(x):
        x[:, :, [2, 5, 7]] = 0
        return x

    assert_matches_plain_edit(
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

    assert_matches_plain_edit(gpt2, [mean_pos], "transformer.h.1.mlp", "out", ids, edit)


def test_mean_refuses_a_wrong_width_or_a_nan(gpt2, ids):
    with pytest.raises(fl.ShapeError, match="mean has width 5"):
        gpt2.run(ids, [fl.Mean("resid_pre.1", value=torch.zeros(5))])
    bad = torch.zeros(32)
    bad[3] = float("nan")
    with pytest.raises(fl.InputError, match="mean contains NaN"):
        gpt2.run(ids, [fl.Mean("resid_pre.1", value=bad)])


def test_resample_is_seeded_and_per_example(gpt2, ids):
    pool_data = torch.randint(1, 97, (5, 9), generator=torch.Generator().manual_seed(7))
    pool = plain_capture(gpt2.module, "transformer.h.0", "out", pool_data)
    iv = fl.Resample("resid_post.0", pool=pool, seed=3)
    idx = iv.draw(4)
    assert torch.equal(idx, fl.Resample("resid_post.0", pool=pool, seed=3).draw(4))

    def edit(x):
        return pool[idx].clone()

    assert_matches_plain_edit(gpt2, [iv], "transformer.h.0", "out", ids, edit)


def test_resample_refuses_an_empty_pool_and_a_bad_index(gpt2, ids):
    with pytest.raises(fl.InputError, match="pool is empty"):
        gpt2.run(ids, [fl.Resample("resid_post.0", pool=torch.zeros(0, 9, 32))])
    pool = torch.zeros(3, 9, 32)
    index = torch.tensor([0, 1, 2, 3])
    with pytest.raises(fl.ShapeError, match="out of range"):
        gpt2.run(ids, [fl.Resample("resid_post.0", pool=pool, index=index)])
