"""SAE latents as sites: an SAE in the SAELens format attached at a site, its latents cached and
patched, the model's output unchanged when they are untouched."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import faithlens as fl
from faithlens.errors import InputError
from faithlens.models.sae import attach_sae, detach_sae, site_from_hook_name
from tests.helpers.builders import BUILDERS, VOCAB

D_SAE = 40


def _write_sae(folder, d_in, *, hook="blocks.1.hook_resid_post", act="relu", **extra):
    g = torch.Generator().manual_seed(7)
    folder.mkdir(parents=True, exist_ok=True)
    weights = {
        "W_enc": torch.randn(d_in, D_SAE, generator=g) * 0.3,
        "b_enc": torch.randn(D_SAE, generator=g) * 0.1,
        "W_dec": torch.randn(D_SAE, d_in, generator=g) * 0.3,
        "b_dec": torch.randn(d_in, generator=g) * 0.1,
    }
    save_file(weights, str(folder / "sae_weights.safetensors"))
    cfg = {"d_in": d_in, "d_sae": D_SAE, "hook_name": hook, "activation_fn_str": act, **extra}
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return {k: v.double() for k, v in weights.items()}


def _inputs():
    g = torch.Generator().manual_seed(1)
    return fl.Inputs(ids=torch.randint(1, VOCAB, (3, 6), generator=g))


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_untouched_latents_leave_the_output_unchanged_and_read_by_hand(tmp_path, arch):
    model = fl.wrap(BUILDERS[arch]().double())
    inp = _inputs()
    before = model.run(inp, cache=["resid_post.1"])
    w = _write_sae(tmp_path / "sae", model.d_model, apply_b_dec_to_input=True)
    site = attach_sae(model, tmp_path / "sae", "res1")
    assert site == "sae.res1"
    after = model.run(inp, cache=["resid_post.1", site])
    assert torch.equal(after.logits, before.logits)  # bit for bit
    assert torch.equal(after.cache["resid_post.1"], before.cache["resid_post.1"])
    x = before.cache["resid_post.1"]
    z = torch.relu((x - w["b_dec"]) @ w["W_enc"] + w["b_enc"])
    torch.testing.assert_close(after.cache[site], z, rtol=0, atol=1e-12)
    assert after.cache[site].shape == (3, 6, D_SAE)
    detach_sae(model, "res1")
    assert torch.equal(model.run(inp).logits, before.logits)
    with pytest.raises(fl.SiteError):
        model.site_info(site)


def test_patched_latents_move_the_activation_by_their_decoder_rows(tmp_path):
    model = fl.wrap(BUILDERS["gpt2"]().double())
    inp = _inputs()
    w = _write_sae(tmp_path / "sae", model.d_model)
    site = attach_sae(model, tmp_path / "sae", "res1")
    clean = model.run(inp, cache=["resid_post.1", site])
    z = clean.cache[site]
    unit = int(z[:, :, :].amax((0, 1)).argmax())  # a latent that fires
    out = model.run(inp, [fl.Zero(f"{site}[:, :, {unit}:{unit + 1}]")], cache=["resid_post.1"])
    want = clean.cache["resid_post.1"] - z[:, :, unit : unit + 1] * w["W_dec"][unit]
    torch.testing.assert_close(out.cache["resid_post.1"], want, rtol=0, atol=1e-10)
    assert not torch.equal(out.logits, clean.logits)
    # a latent patched to its own value changes nothing
    same = model.run(inp, [fl.Patch(site, source=z)])
    torch.testing.assert_close(same.logits, clean.logits, rtol=0, atol=1e-10)


def test_topk_and_hook_names(tmp_path):
    model = fl.wrap(BUILDERS["gpt2"]().double())
    inp = _inputs()
    _write_sae(
        tmp_path / "k", model.d_model, hook="resid_pre.2", act="topk",
        activation_fn_kwargs={"k": 3},
    )  # fmt: skip
    site = attach_sae(model, tmp_path / "k", "top")
    z = model.run(inp, cache=[site]).cache[site]
    assert int((z > 0).sum(-1).max()) <= 3
    assert site_from_hook_name("blocks.4.hook_mlp_out") == "mlp_out.4"
    assert site_from_hook_name("blocks.0.mlp.hook_post") == "mlp_post.0"


def test_bad_saes_are_refused(tmp_path):
    model = fl.wrap(BUILDERS["gpt2"]())
    with pytest.raises(InputError, match=r"cfg\.json"):
        attach_sae(model, tmp_path / "none", "x")
    _write_sae(tmp_path / "wide", model.d_model + 1)
    with pytest.raises(InputError, match="width"):
        attach_sae(model, tmp_path / "wide", "x")
    _write_sae(tmp_path / "jump", model.d_model, act="jumprelu")
    with pytest.raises(InputError, match="not supported"):
        attach_sae(model, tmp_path / "jump", "x")
    _write_sae(tmp_path / "ok", model.d_model)
    attach_sae(model, tmp_path / "ok", "x")
    with pytest.raises(InputError, match="already has"):
        attach_sae(model, tmp_path / "ok", "x")
    with pytest.raises(InputError, match="letters"):
        attach_sae(model, tmp_path / "ok", "a.b")


def test_an_sae_at_a_view_site_is_refused(tmp_path):
    # an expert's output is a view of the experts' call, not a slice of a hooked tensor
    from tests.helpers.models_coverage import FAMILIES

    fam = next(f for f in FAMILIES if f.key == "mixtral")
    model = fl.wrap(fam.build())
    _write_sae(tmp_path / "e", model.d_model)
    with pytest.raises(InputError, match="view of a module call"):
        attach_sae(model, tmp_path / "e", "e", site="expert_out.0.1")


def test_a_hook_point_is_spatial_or_a_view_not_both():
    from faithlens.models.sites import HookPoint

    with pytest.raises(ValueError, match="not both"):
        HookPoint("conv", "out", spatial=True, view=object())  # type: ignore[arg-type]
