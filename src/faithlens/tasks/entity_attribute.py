"""An entity-attribute task for alignment search: a city's country, continent or language.

A prompt names one city and asks for one of its attributes ("The city of Paris is in the country
of" -> " France"). Interchange pairs take a *base* city and a *source* city whose attribute
values differ; the counterfactual label is the source city's value: an alignment that carries
the attribute moves the base run's answer to the source's.

Only cities that are one token with a leading space, and attribute values that are one token with
a leading space, are used for a given tokenizer (:func:`usable_cities`), so every prompt of one
attribute has the same length and the answer is read from one logit. The answer set
(``candidates``) is every value of the attribute among the usable cities; labels index into it.

The list is fixed and shipped here (:data:`CITIES`: 70 cities with their country, continent and
main language); for SmolLM2's tokenizer 64 cities remain for ``country`` (39 values), 62 for
``continent`` (3 values: Europe, Asia, Africa) and all 70 for ``language`` (28 values).
Multi-token values ("United States", "North America", "Czech Republic") are filtered out, not
abbreviated. SmolLM2-135M-Instruct answers 63 / 64 countries, 59 / 62 continents and 34 / 70
languages correctly among the answer set (it says "English" for most European cities).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .. import validate as V
from ..models.model import Model
from .interchange import InterchangeData


@dataclass(frozen=True)
class City:
    """A city and its attributes (each written as the answer appears after the prompt, without
    the leading space)."""

    name: str
    country: str
    continent: str
    language: str

    def value(self, attribute: str) -> str:
        """The value of ``attribute`` (``"country"``, ``"continent"`` or ``"language"``)."""
        return str(getattr(self, V.choice("attribute", attribute, ATTRIBUTES)))


#: The attributes and their prompt templates (the answer follows the last word).
TEMPLATES = {
    "country": "The city of {city} is in the country of",
    "continent": "The city of {city} is on the continent of",
    "language": "In the city of {city}, most people speak",
}
ATTRIBUTES = tuple(TEMPLATES)


def _c(name: str, country: str, continent: str, language: str) -> City:
    return City(name, country, continent, language)


#: The shipped cities (fixed; filtered per tokenizer by :func:`usable_cities`).
CITIES: tuple[City, ...] = (
    _c("Paris", "France", "Europe", "French"),
    _c("Lyon", "France", "Europe", "French"),
    _c("London", "England", "Europe", "English"),
    _c("Manchester", "England", "Europe", "English"),
    _c("Liverpool", "England", "Europe", "English"),
    _c("Birmingham", "England", "Europe", "English"),
    _c("Leeds", "England", "Europe", "English"),
    _c("Bristol", "England", "Europe", "English"),
    _c("Edinburgh", "Scotland", "Europe", "English"),
    _c("Glasgow", "Scotland", "Europe", "English"),
    _c("Dublin", "Ireland", "Europe", "English"),
    _c("Berlin", "Germany", "Europe", "German"),
    _c("Munich", "Germany", "Europe", "German"),
    _c("Hamburg", "Germany", "Europe", "German"),
    _c("Cologne", "Germany", "Europe", "German"),
    _c("Frankfurt", "Germany", "Europe", "German"),
    _c("Vienna", "Austria", "Europe", "German"),
    _c("Zurich", "Switzerland", "Europe", "German"),
    _c("Geneva", "Switzerland", "Europe", "French"),
    _c("Rome", "Italy", "Europe", "Italian"),
    _c("Milan", "Italy", "Europe", "Italian"),
    _c("Naples", "Italy", "Europe", "Italian"),
    _c("Venice", "Italy", "Europe", "Italian"),
    _c("Florence", "Italy", "Europe", "Italian"),
    _c("Madrid", "Spain", "Europe", "Spanish"),
    _c("Barcelona", "Spain", "Europe", "Spanish"),
    _c("Lisbon", "Portugal", "Europe", "Portuguese"),
    _c("Amsterdam", "Netherlands", "Europe", "Dutch"),
    _c("Brussels", "Belgium", "Europe", "French"),
    _c("Prague", "Czech Republic", "Europe", "Czech"),
    _c("Warsaw", "Poland", "Europe", "Polish"),
    _c("Budapest", "Hungary", "Europe", "Hungarian"),
    _c("Athens", "Greece", "Europe", "Greek"),
    _c("Stockholm", "Sweden", "Europe", "Swedish"),
    _c("Oslo", "Norway", "Europe", "Norwegian"),
    _c("Helsinki", "Finland", "Europe", "Finnish"),
    _c("Copenhagen", "Denmark", "Europe", "Danish"),
    _c("Moscow", "Russia", "Europe", "Russian"),
    _c("Kiev", "Ukraine", "Europe", "Ukrainian"),
    _c("Sofia", "Bulgaria", "Europe", "Bulgarian"),
    _c("Tokyo", "Japan", "Asia", "Japanese"),
    _c("Kyoto", "Japan", "Asia", "Japanese"),
    _c("Hiroshima", "Japan", "Asia", "Japanese"),
    _c("Seoul", "Korea", "Asia", "Korean"),
    _c("Beijing", "China", "Asia", "Chinese"),
    _c("Shanghai", "China", "Asia", "Chinese"),
    _c("Delhi", "India", "Asia", "Hindi"),
    _c("Mumbai", "India", "Asia", "Hindi"),
    _c("Calcutta", "India", "Asia", "Bengali"),
    _c("Manila", "Philippines", "Asia", "Filipino"),
    _c("Tehran", "Iran", "Asia", "Persian"),
    _c("Baghdad", "Iraq", "Asia", "Arabic"),
    _c("Damascus", "Syria", "Asia", "Arabic"),
    _c("Dubai", "United Arab Emirates", "Asia", "Arabic"),
    _c("Mecca", "Saudi Arabia", "Asia", "Arabic"),
    _c("Jerusalem", "Israel", "Asia", "Hebrew"),
    _c("Kabul", "Afghanistan", "Asia", "Persian"),
    _c("Cairo", "Egypt", "Africa", "Arabic"),
    _c("Alexandria", "Egypt", "Africa", "Arabic"),
    _c("Tunis", "Tunisia", "Africa", "Arabic"),
    _c("Nairobi", "Kenya", "Africa", "Swahili"),
    _c("Johannesburg", "South Africa", "Africa", "English"),
    _c("Toronto", "Canada", "North America", "English"),
    _c("Vancouver", "Canada", "North America", "English"),
    _c("Montreal", "Canada", "North America", "French"),
    _c("Chicago", "United States", "North America", "English"),
    _c("Boston", "United States", "North America", "English"),
    _c("Havana", "Cuba", "North America", "Spanish"),
    _c("Lima", "Peru", "South America", "Spanish"),
    _c("Sydney", "Australia", "Oceania", "English"),
)


def usable_cities(
    attribute: str,
    is_single_token: Callable[[str], bool],
    cities: Sequence[City] = CITIES,
) -> list[City]:
    """The cities whose name and ``attribute`` value are each one token with a leading space
    (``is_single_token(" Paris")``), in the order given."""
    V.choice("attribute", attribute, ATTRIBUTES)
    return [
        c
        for c in cities
        if is_single_token(" " + c.name) and is_single_token(" " + c.value(attribute))
    ]


def answer_values(cities: Sequence[City], attribute: str) -> list[str]:
    """The distinct values of ``attribute`` among ``cities``, in first-seen order: the answer
    set that labels index into."""
    return list(dict.fromkeys(c.value(attribute) for c in cities))


def sample_pairs(
    cities: Sequence[City], attribute: str, n: int, seed: int = 0
) -> list[tuple[int, int]]:
    """``n`` seeded (base, source) index pairs into ``cities`` whose ``attribute`` values
    differ (sampled with replacement over pairs, so ``n`` may exceed the number of cities)."""
    V.positive_int("n", n, fix="sample at least one pair")
    V.nonnegative_int("seed", seed)
    if len(answer_values(cities, attribute)) < 2:
        raise V.fail(
            "cities",
            f"{len(cities)} cities with {len(answer_values(cities, attribute))} {attribute} value(s)",
            "an interchange needs at least two distinct values",
            "give more cities or another attribute",
        )
    rng = random.Random(seed)
    out: list[tuple[int, int]] = []
    while len(out) < n:
        b, s = rng.randrange(len(cities)), rng.randrange(len(cities))
        if cities[b].value(attribute) != cities[s].value(attribute):
            out.append((b, s))
    return out


def _single_token(model: Model) -> Callable[[str], bool]:
    tok = model.require_tokenizer()
    return lambda text: len(tok(text, add_special_tokens=False)["input_ids"]) == 1


def prompts(cities: Sequence[City], attribute: str) -> list[str]:
    """The prompt of each city for ``attribute``."""
    tpl = TEMPLATES[V.choice("attribute", attribute, ATTRIBUTES)]
    return [tpl.format(city=c.name) for c in cities]


def entity_accuracy(
    model: Model, attribute: str = "country", cities: Sequence[City] | None = None
) -> pd.DataFrame:
    """The model's own answers: one row per usable city (or per city of ``cities``, which must be
    usable) with ``value``, ``predicted`` (the argmax over the answer set), ``correct`` and
    ``top1`` (the value is the argmax over the whole vocabulary)."""
    cs = list(cities) if cities is not None else usable_cities(attribute, _single_token(model))
    values = answer_values(cs, attribute)
    ids = torch.tensor([model.token_id(" " + v) for v in values], dtype=torch.long)
    inputs = model.tokenize(prompts(cs, attribute))
    out = model.run(inputs, logits_at="last")
    if out.logits is None:
        raise V.fail("model", model.name, "returned no logits", "use a language model")
    lg = out.logits[:, -1] if out.logits.dim() == 3 else out.logits
    lg = lg.float().cpu()
    pred = lg[:, ids].argmax(-1).numpy()
    top1 = lg.argmax(-1).numpy()
    truth = np.array([values.index(c.value(attribute)) for c in cs])
    return pd.DataFrame(
        {
            "city": [c.name for c in cs],
            "value": [c.value(attribute) for c in cs],
            "predicted": [values[int(p)] for p in pred],
            "correct": pred == truth,
            "top1": top1 == ids.numpy()[truth],
        }
    )


def entity_attribute(
    model: Model,
    n: int = 64,
    seed: int = 0,
    *,
    attribute: str = "country",
    cities: Sequence[City] | None = None,
) -> InterchangeData:
    """``n`` interchange pairs for ``attribute``: base city prompt, source city prompt (another
    value), label = the index of the source city's value among the answer set (``candidates``,
    every value of the usable cities). ``cities``: restrict to these (e.g. the ones the model
    answers correctly, from :func:`entity_accuracy`); by default every usable city.

    ``meta``: ``attribute``, ``values`` (the answer set), ``base_city`` / ``source_city`` /
    ``base_value`` / ``source_value`` per pair (``source_value`` is the causal variable's
    counterfactual value, e.g. for :func:`faithlens.das.control_task`'s ``values=``).
    """
    V.choice("attribute", attribute, ATTRIBUTES)
    single = _single_token(model)
    cs = list(cities) if cities is not None else usable_cities(attribute, single)
    bad = [c.name for c in cs if c not in usable_cities(attribute, single, cs)]
    if bad:
        raise V.fail(
            "cities",
            bad[:5],
            f"are not single tokens (or their {attribute} is not) for this tokenizer",
            "use faithlens.tasks.entity_attribute.usable_cities",
        )
    pairs = sample_pairs(cs, attribute, n, seed)
    values = answer_values(cs, attribute)
    base_c = [cs[b] for b, _ in pairs]
    src_c = [cs[s] for _, s in pairs]
    ids = torch.tensor([model.token_id(" " + v) for v in values], dtype=torch.long)
    labels = torch.tensor([values.index(c.value(attribute)) for c in src_c], dtype=torch.long)
    return InterchangeData(
        base=model.tokenize(prompts(base_c, attribute)),
        source=model.tokenize(prompts(src_c, attribute)),
        labels=labels,
        positions="last",
        candidates=ids.expand(n, -1).clone(),
        name=f"entity-{attribute}",
        meta={
            "attribute": attribute,
            "values": values,
            "seed": seed,
            "base_city": [c.name for c in base_c],
            "source_city": [c.name for c in src_c],
            "base_value": [c.value(attribute) for c in base_c],
            "source_value": [c.value(attribute) for c in src_c],
        },
    )


def class_mean_targets(natural: Tensor, values: Sequence[str], wanted: Sequence[str]) -> Tensor:
    """CL targets: for each ``wanted`` value, the mean of the ``natural`` rows (``[m, width]``)
    whose value (``values``, one per row) is that value: the natural counterfactual latent of
    the divergence paper (the mean natural vector with the counterfactual value)."""
    if natural.dim() != 2 or natural.shape[0] != len(values):
        raise V.fail(
            "natural",
            tuple(natural.shape),
            f"must be [m, width] with one row per value ({len(values)})",
        )
    groups: dict[str, list[int]] = {}
    for i, v in enumerate(values):
        groups.setdefault(v, []).append(i)
    missing = sorted({w for w in wanted if w not in groups})
    if missing:
        raise V.fail("wanted", missing, "have no natural rows", "add natural rows of those values")
    means = {v: natural[idx].mean(0) for v, idx in groups.items()}
    return torch.stack([means[w] for w in wanted])


__all__ = [
    "ATTRIBUTES",
    "CITIES",
    "TEMPLATES",
    "City",
    "answer_values",
    "class_mean_targets",
    "entity_accuracy",
    "entity_attribute",
    "prompts",
    "sample_pairs",
    "usable_cities",
]
