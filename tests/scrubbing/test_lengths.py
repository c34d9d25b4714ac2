"""The VARIABLE LENGTHS warning: a hypothesis with position-specific claims on data of different
lengths (right padding) compares different tokens at the same position."""

from __future__ import annotations

import pytest
import torch

import faithlens as fl
from faithlens import scrubbing as sc

S = 6


@pytest.fixture(scope="module")
def model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(3)
    cfg = LlamaConfig(
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        hidden_size=16,
        intermediate_size=32,
        vocab_size=13,
    )
    return fl.wrap(LlamaForCausalLM(cfg).eval())


def _data(variable: bool, n: int = 40) -> sc.ScrubData:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 13, (n, S), generator=g)
    lengths = torch.randint(3, S + 1, (n,), generator=g) if variable else torch.full((n,), S)
    mask = (torch.arange(S)[None, :] < lengths[:, None]).long()
    ids = torch.where(mask.bool(), ids, torch.zeros_like(ids))
    return sc.ScrubData(
        ids=ids, mask=mask, label=ids[:, 0], length=lengths, pos=torch.zeros(n, dtype=torch.long)
    )


def _positional(other=None) -> sc.Hypothesis:
    h = sc.Hypothesis("positional")
    a = h.add("h10", sc.to("head.1.0"), sampler="exact", other=other)
    a.add("in1", sc.input_of(positions=[1]), feature=lambda d: d["ids"][:, 1] % 2)
    return h


def _agnostic() -> sc.Hypothesis:
    h = sc.Hypothesis("agnostic")
    h.add("h10", sc.to("head.1.0"), feature=lambda d: d["ids"][:, 1] % 2)
    return h


BEH = sc.CrossEntropy("label", positions_column="pos")


def _warns(model, h, data):
    r = sc.scrub(model, data, h, n=20, behaviour=BEH, n_boot=50)
    return [w for w in r.warnings if w.startswith("VARIABLE LENGTHS")]


def test_position_claims_on_variable_lengths_warn(model):
    (w,) = _warns(model, _positional(), _data(True))
    assert "'in1'" in w and "length" in w


def test_silent_when_position_agnostic_or_equal_length(model):
    assert _warns(model, _agnostic(), _data(True)) == []
    assert _warns(model, _positional(), _data(False)) == []


def test_silent_when_no_copy_mixes_lengths(model):
    # the unimportant inputs drawn from data of the same length, and the nodes' features
    # include the length: no copy reads data of another length than the datum it runs with
    same = sc.SameFeature(sc.field("length"))
    h = sc.Hypothesis("same length", other=same)
    a = h.add("h10", sc.to("head.1.0"), feature=sc.field("length"), other=same)
    a.add("in1", sc.input_of(positions=[1]), feature=sc.field("length"))
    assert _warns(model, h, _data(True)) == []


def test_split_positions_rewrite_counts_as_positional(model):
    h = sc.Hypothesis("split", rewrites=[sc.split_positions("head.1.0", [S - 1])])
    h.add("at", sc.to("head.1.0/at"), feature=lambda d: d["ids"][:, 1] % 2)
    (w,) = _warns(model, h, _data(True))
    assert "split_positions" in w


def test_a_stated_mixing_is_kept_in_the_stats_not_warned(model):
    h = _positional()
    h.mixed_lengths = "in1 is meant to come from data of any length"
    r = sc.scrub(model, h, _data(True), n=20, behaviour=BEH, n_boot=50)
    assert not [w for w in r.warnings if w.startswith("VARIABLE LENGTHS")]
    mix = r.stats["variable_lengths"]
    assert mix["intended"] == h.mixed_lengths and mix["nodes"] == ["in1"]
    assert 0 < mix["max_share"] <= 1 and 1 <= mix["copies"] <= mix["of"]
    assert "mixed lengths (intended): in1 is meant" in h.describe()
    # the same hypothesis without the statement warns, with the same mixing in the stats
    plain = sc.scrub(model, _positional(), _data(True), n=20, behaviour=BEH, n_boot=50)
    assert plain.stats["variable_lengths"] == {**mix, "intended": None}


def test_a_join_states_mixing_only_if_every_member_does(model):
    a, b = _positional(), _positional()
    a.mixed_lengths = "a reason"
    assert sc.join(a, b).mixed_lengths is None
    b.mixed_lengths = "another reason"
    assert sc.join(a, b).mixed_lengths == "a reason; another reason"


@pytest.mark.parametrize("bad", ["", "   ", 3])
def test_mixed_lengths_must_be_a_sentence(bad):
    with pytest.raises(fl.InputError, match="mixed_lengths"):
        sc.Hypothesis("h", mixed_lengths=bad)
