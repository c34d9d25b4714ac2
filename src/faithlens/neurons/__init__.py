"""Neuron explanations with guarantees (Yan, Oikarinen & Weng, arXiv 2512.18092).

- :func:`explain`: similarity of units (neurons, SAE features, probe directions, conv channels)
  to concepts under many metrics; simultaneous finite-sample bounds (faithfulness), certified
  winners and provable sets; a bootstrap ensemble with Bootstrap Explanation prediction sets
  (stability).
- :func:`dissect`: Network Dissection of convolutional channels against concept masks.
- :func:`simulate`: synthetic units with known concepts, to check bounds and coverage.
- :func:`faithfulness_bound` / :func:`required_n`: how many probing samples a study needs.
"""

from .bounds import faithfulness_bound, required_n
from .engine import METRICS, SoftWPMI
from .explain import explain
from .probing import (
    Activations,
    Concepts,
    collect,
    probe_tokens,
    token_concepts,
    word_corpus,
    word_lists,
)
from .result import NeuronExplanation

__all__ = [
    "METRICS",
    "Activations",
    "Concepts",
    "NeuronExplanation",
    "SoftWPMI",
    "collect",
    "explain",
    "faithfulness_bound",
    "probe_tokens",
    "required_n",
    "token_concepts",
    "word_corpus",
    "word_lists",
]
