"""Representation analysis: reading vectors from contrast pairs, steering with generation,
behaviours measured over continuations, and the faithfulness checks of a representation
(causal, specific, stable, on-distribution, readable, who writes it, persistence); the logit
lens over layers (``layer_lens``, ``fl.logit_lens``) and direct logit attribution on a task's
answers (``lenses.py``; ``logit_lens`` here is the readable check of a direction).

See ``docs/representations.md``.
"""

from .behaviour import AnswerJudge, Behaviour, label_rates
from .checks import (
    CHECKS,
    compare,
    explain_direction,
    faithfulness,
    logit_lens,
    measure,
    on_distribution,
    persistence,
    specificity,
    steering_sweep,
    writers,
)
from .data import (
    ContrastPairs,
    Fact,
    chat_prompt,
    fact_completion,
    facts,
    honesty_pairs,
    truth_pairs,
)
from .generation import Generations, continuation_logprobs, generate
from .lens_results import DirectLogitAttribution, LayerLensResult
from .lenses import direct_logit_attribution
from .lenses import logit_lens as layer_lens
from .reading import (
    METHODS,
    ContrastActivations,
    ReadingResult,
    activations,
    collect,
    fit_direction,
    read,
)
from .results import (
    FaithfulnessReport,
    LogitLensResult,
    PersistenceResult,
    SteeringResult,
    WritersResult,
)
from .steering import Steering
from .synthetic import PlantedModel, planted_model

__all__ = [
    "CHECKS",
    "METHODS",
    "AnswerJudge",
    "Behaviour",
    "DirectLogitAttribution",
    "LayerLensResult",
    "ContrastActivations",
    "ContrastPairs",
    "Fact",
    "FaithfulnessReport",
    "Generations",
    "LogitLensResult",
    "PersistenceResult",
    "PlantedModel",
    "ReadingResult",
    "Steering",
    "SteeringResult",
    "WritersResult",
    "activations",
    "chat_prompt",
    "collect",
    "compare",
    "continuation_logprobs",
    "direct_logit_attribution",
    "explain_direction",
    "fact_completion",
    "facts",
    "faithfulness",
    "fit_direction",
    "generate",
    "honesty_pairs",
    "label_rates",
    "layer_lens",
    "logit_lens",
    "measure",
    "on_distribution",
    "persistence",
    "planted_model",
    "read",
    "specificity",
    "steering_sweep",
    "truth_pairs",
    "writers",
]
