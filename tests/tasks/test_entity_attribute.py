"""The entity-attribute task: the shipped list, single-token filtering, pairs, CL targets, and
SmolLM2's own accuracy and pairs (slow)."""

from __future__ import annotations

import pytest
import torch

import faithlens as fl
from faithlens.tasks import entity_attribute as ent


def test_the_shipped_list_is_consistent() -> None:
    names = [c.name for c in ent.CITIES]
    assert len(names) == len(set(names)) == 70
    for c in ent.CITIES:
        assert all(c.value(a) for a in ent.ATTRIBUTES)
        assert c.continent in {
            "Europe",
            "Asia",
            "Africa",
            "North America",
            "South America",
            "Oceania",
        }
    for a, tpl in ent.TEMPLATES.items():
        assert tpl.format(city="Paris").count("Paris") == 1, a
    assert ent.prompts([ent.CITIES[0]], "country") == ["The city of Paris is in the country of"]


def test_usable_cities_keep_single_token_names_and_values() -> None:
    one_word = lambda text: " " not in text.strip()  # noqa: E731
    got = ent.usable_cities("country", one_word)
    assert "Chicago" not in [c.name for c in got]  # "United States" is two words
    assert "Paris" in [c.name for c in got]
    assert all(" " not in c.country for c in got)
    conts = ent.answer_values(ent.usable_cities("continent", one_word), "continent")
    assert conts == ["Europe", "Asia", "Africa", "Oceania"]  # first-seen; "North America" dropped
    assert ent.usable_cities("country", lambda t: False) == []
    with pytest.raises(fl.ArgumentError, match="attribute"):
        ent.usable_cities("population", one_word)


def test_pairs_are_seeded_and_always_change_the_value() -> None:
    cs = list(ent.CITIES[:12])
    pairs = ent.sample_pairs(cs, "country", 200, seed=3)
    assert pairs == ent.sample_pairs(cs, "country", 200, seed=3)
    assert pairs != ent.sample_pairs(cs, "country", 200, seed=4)
    assert all(cs[b].country != cs[s].country for b, s in pairs)
    assert len({b for b, _ in pairs}) == len(cs)  # every city is drawn as a base
    with pytest.raises(fl.ArgumentError, match="two distinct values"):
        ent.sample_pairs([ent.CITIES[0], ent.CITIES[1]], "country", 4)  # both in France


def test_class_mean_targets() -> None:
    nat = torch.tensor([[0.0, 2.0], [2.0, 4.0], [10.0, 10.0]])
    got = ent.class_mean_targets(nat, ["a", "a", "b"], ["b", "a", "a"])
    assert torch.equal(got, torch.tensor([[10.0, 10.0], [1.0, 3.0], [1.0, 3.0]]))
    with pytest.raises(fl.ArgumentError, match="no natural rows"):
        ent.class_mean_targets(nat, ["a", "a", "b"], ["c"])
    with pytest.raises(fl.ArgumentError, match="one row per value"):
        ent.class_mean_targets(nat, ["a", "b"], ["a"])


@pytest.mark.slow
def test_smollm2_knows_countries_and_pairs_line_up(smollm2) -> None:
    acc = ent.entity_accuracy(smollm2, "country")
    assert len(acc) == 64  # single-token cities with a single-token country
    assert acc.correct.mean() > 0.85  # measured 63 / 64 (Manila -> Spain)
    data = ent.entity_attribute(smollm2, n=16, seed=0)
    assert len(data) == 16 and data.candidates is not None
    assert data.base.ids.shape == data.source.ids.shape  # one length: positions line up
    values = data.meta["values"]
    for i in range(16):
        assert values[int(data.labels[i])] == data.meta["source_value"][i]
        assert data.meta["source_value"][i] != data.meta["base_value"][i]
    with pytest.raises(fl.ArgumentError, match="single tokens"):
        chicago = next(c for c in ent.CITIES if c.name == "Chicago")  # "United States"
        ent.entity_attribute(smollm2, n=4, cities=[ent.CITIES[0], chicago])
