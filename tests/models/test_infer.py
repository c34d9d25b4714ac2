"""Layouts inferred from the module tree (faithlens.models.infer, verified by
faithlens.models.layout_check): every hand-written family is inferred to the same sites, the
architectures in docs/models.md's "Inferred architectures" table give what the table says, and
a model that breaks the residual sum is refused naming the part."""

from __future__ import annotations

import logging
import warnings

import pytest
import torch

import faithlens as fl
from faithlens.errors import InputError
from faithlens.models.adapters import GenericAdapter, hf_adapter
from faithlens.models.infer import InferenceError, InferredAdapter, infer_adapter
from tests.helpers import models_inferred
from tests.helpers.builders import BUILDERS
from tests.helpers.models_coverage import DOC, FAMILIES

# Hand-written families whose structure inference does not reach (their own adapters: experts
# behind the MLP, embeddings added outside any module), with the part it names.
NOT_INFERRED = {
    "mixtral": "MLP output projection",
    "qwen2_moe": "MLP output projection",
    "qwen3_moe": "MLP output projection",
    "opt": "embedding output",
}
HAND = [f for f in FAMILIES if f.hf and f.key not in NOT_INFERRED]
DIMS = ("n_layers", "n_heads", "n_kv_heads", "d_model", "d_head", "d_mlp", "d_vocab")


@pytest.mark.parametrize("fam", HAND, ids=[f.key for f in HAND])
def test_every_hand_written_family_is_inferred_to_the_same_sites(fam):
    hf = fam.build()
    hand = hf_adapter(hf)
    inferred = infer_adapter(hf)  # reads the module tree only, never the model_type's layout
    assert inferred.site_table == hand.site_table
    assert {d: getattr(inferred, d) for d in DIMS} == {d: getattr(hand, d) for d in DIMS}
    assert (inferred.is_causal, inferred.post_norm) == (hand.is_causal, hand.post_norm)


@pytest.mark.parametrize("key", sorted(NOT_INFERRED))
def test_families_with_their_own_adapter_are_not_inferred_and_say_why(key):
    fam = next(f for f in FAMILIES if f.key == key)
    with pytest.raises(InferenceError, match=NOT_INFERRED[key]):
        infer_adapter(fam.build())


def _mystery():
    hf = BUILDERS["llama"]()
    hf.config.model_type = "mystery"  # no hand-written layout: fl.wrap infers one
    return hf


def test_wrap_infers_an_unknown_model_type_and_logs_it(caplog):
    hf = _mystery()
    ids = torch.randint(1, 97, (2, 6), generator=torch.Generator().manual_seed(3))
    with caplog.at_level(logging.INFO, logger="faithlens"):
        model = fl.wrap(hf)
    assert "inferred layout for mystery, verified" in caplog.text
    assert isinstance(model.adapter, InferredAdapter) and model.arch == "mystery"
    # a head zero-ablated through its site is the head's slice of the o_proj input zeroed by hand
    ablate = fl.Zero("head.1.2")
    via_site = model.run(ids, [ablate]).logits
    o_proj = hf.model.layers[1].self_attn.o_proj

    def by_hand(_m, args):
        z = args[0].clone()
        z[..., 16:24] = 0
        return (z,)

    h = o_proj.register_forward_pre_hook(by_hand)
    try:
        with torch.no_grad():
            expected = hf(input_ids=ids).logits
    finally:
        h.remove()
    torch.testing.assert_close(via_site, expected, rtol=0, atol=1e-6)


def _broken():
    hf = _mystery()
    # layer 1 only: inference reads layer 0, so it is the verification that must catch it
    hf.model.layers[1].register_forward_hook(lambda _m, _a, out: out + 0.25)
    return hf


def test_a_term_added_outside_any_module_fails_verification_naming_the_part():
    with pytest.raises(InferenceError) as e:
        infer_adapter(_broken())
    assert e.value.part == "attention and MLP outputs (attn_out / mlp_out)"
    assert "resid_post.1 is not resid_pre.1 + attn_out.1 + mlp_out.1" in e.value.reason


def test_failed_inference_falls_back_to_raw_sites_or_refuses():
    with pytest.warns(UserWarning, match=r"'mystery': the attention and MLP outputs .*raw module"):
        model = fl.wrap(_broken())
    assert isinstance(model.adapter, GenericAdapter)
    assert model.site_info("module:model.layers.0.mlp").hook.module == "model.layers.0.mlp"
    with pytest.raises(InputError, match=r"could not infer .*'mystery': the attention and MLP"):
        fl.wrap(_broken(), infer="strict")
    with pytest.raises(InputError, match=r"no faithlens adapter .*'mystery'.*infer='off'"):
        fl.load(_mystery(), infer="off")
    with pytest.raises(InputError, match=r"infer='maybe' is not a mode"):
        fl.wrap(_mystery(), infer="maybe")


def test_the_inferred_architectures_table_is_what_inference_gives_now():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outcomes = models_inferred.results()
    section = "\n".join(models_inferred.render(outcomes))
    assert section in DOC.read_text(), "run `python -m tests.helpers.models_coverage`"
    verified = {o.model_type for o in outcomes if o.verified}
    assert len(verified) >= 20, sorted(verified)
    assert not verified & {"bitnet", "cohere", "codegen"}  # known failures stay failures


def test_load_of_a_saved_folder_infers_its_layout(tmp_path):
    hf = models_inferred.build("helium")  # no hand-written layout
    ids = torch.randint(1, 97, (2, 5), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = hf(input_ids=ids).logits
    hf.save_pretrained(tmp_path)
    model = fl.load(str(tmp_path))
    assert isinstance(model.adapter, InferredAdapter) and model.arch == "helium"
    out = model.run(ids, cache=["resid_post.1", "head.0.3"])
    torch.testing.assert_close(out.logits, expected, rtol=0, atol=1e-6)
    assert out.cache["head.0.3"].shape == (2, 5, model.d_head)


def test_an_encoder_decoder_is_not_inferred():
    # mBART has no hand-written adapter: inference used to "verify" its whole decoder as the
    # final norm of an encoder
    from transformers import MBartConfig, MBartForConditionalGeneration

    cfg = MBartConfig(
        vocab_size=97,
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=48,
        decoder_ffn_dim=48,
        max_position_embeddings=32,
    )
    hf = MBartForConditionalGeneration(cfg)
    with pytest.raises(InferenceError, match="encoder-decoder"):
        infer_adapter(hf)
    with pytest.raises(InputError, match="encoder-decoder"):
        fl.wrap(hf, infer="strict")
