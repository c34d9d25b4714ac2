"""Faithfulness checks of a representation (a reading vector per layer).

A direction that *reads* a concept well is not yet an explanation of what the model does with
it. The checks here ask, each with its uncertainty:

- **causal** (:func:`compare`): projecting the direction out changes the behaviour, and adding
  it moves the behaviour the right way (positive coefficient up, negative down);
- **specific** (:func:`specificity`): random directions of the same norm at the same layers do
  not (an empirical p-value against them);
- **stable**: bootstrap refits over the contrast pairs give nearly the same direction
  (:func:`faithlens.representations.reading.stability`);
- **on-distribution** (:func:`on_distribution`): the steered activations stay within the natural
  spread, measured by the divergence audit against a natural-vs-natural baseline;
- **readable** (:func:`logit_lens`): the direction read straight through the unembedding gives
  a concentrated token distribution, compared with random directions (Paper B found the
  dishonesty direction unreadable);
- **who writes it** (:func:`writers`): the exact split of the contrast along the direction into
  the embedding, every attention head and every MLP upstream;
- **persistence** (:func:`persistence`): whether a one-shot push at the prompt keeps its effect
  over a generation, or needs injection at every token (Paper B's continual-injection test).

:func:`faithfulness` runs them all and returns a :class:`FaithfulnessReport`.

The package: :mod:`.steer` (behaviour under steering: ``measure``, ``compare``,
``steering_sweep``, ``specificity``, ``persistence``), :mod:`.lens` (``logit_lens``),
:mod:`.writing` (``writers``, ``gini``), :mod:`.distribution` (``site_tokens``,
``on_distribution``), :mod:`.explain` (``explain_direction``), :mod:`.table` (one function per
check, registered in ``CHECK_TABLE``) and :mod:`.suite` (``faithfulness``, the driver).
"""

from __future__ import annotations

from ..generation import generate
from .distribution import on_distribution, site_tokens
from .explain import explain_direction
from .lens import logit_lens
from .steer import Metric, Progress, compare, measure, persistence, specificity, steering_sweep
from .suite import faithfulness
from .table import CHECK_TABLE, CHECKS, Check, CheckContext, CheckOutcome
from .writing import gini, writers

__all__ = [
    "CHECKS",
    "CHECK_TABLE",
    "Check",
    "CheckContext",
    "CheckOutcome",
    "Metric",
    "Progress",
    "compare",
    "explain_direction",
    "faithfulness",
    "generate",
    "gini",
    "logit_lens",
    "measure",
    "on_distribution",
    "persistence",
    "site_tokens",
    "specificity",
    "steering_sweep",
    "writers",
]
