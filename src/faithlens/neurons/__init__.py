"""Neuron explanations with guarantees (Yan, Oikarinen & Weng, arXiv 2512.18092).

- :func:`explain`: similarity of units (neurons, SAE features, probe directions, conv channels)
  to concepts under many metrics; simultaneous finite-sample bounds (faithfulness), certified
  winners and provable sets; a bootstrap ensemble with Bootstrap Explanation prediction sets
  (stability).
- :func:`dissect`: Network Dissection of convolutional channels against concept masks.
- :func:`simulate`: synthetic units with known concepts, to check bounds and coverage.
- :func:`faithfulness_bound` / :func:`required_n`: how many probing samples a study needs.
- :func:`sanity_checks`: NeuronEval's missing-labels / extra-labels checks of the metrics.
- :func:`collect`, :func:`probe_tokens`: activations (and token-level concepts) from a model.
"""

from . import digits
from .bounds import faithfulness_bound, required_n
from .dissect import Dissection, dissect
from .explain import explain
from .kernels import METRICS, SoftWPMI
from .probing import (
    Activations,
    Concepts,
    as_concepts,
    collect,
    probe_tokens,
    token_concepts,
    word_corpus,
    word_lists,
)
from .result import NeuronExplanation
from .sanity import SanityCheck, sanity_checks
from .simulate import BoundValidation, simulate

__all__ = [
    "METRICS",
    "Activations",
    "BoundValidation",
    "Concepts",
    "Dissection",
    "NeuronExplanation",
    "SanityCheck",
    "SoftWPMI",
    "as_concepts",
    "collect",
    "digits",
    "dissect",
    "explain",
    "faithfulness_bound",
    "probe_tokens",
    "required_n",
    "sanity_checks",
    "simulate",
    "token_concepts",
    "word_corpus",
    "word_lists",
]
