"""Tasks: datasets of clean / corrupted inputs with answers and a metric."""

from . import induction, paren
from .base import Task
from .induction import InductionData, MarkovChain, RepeatSpec, induction_task
from .ioi import ioi, random_token_task, single_token_names
from .metrics import (
    Accuracy,
    BinaryCrossEntropy,
    LogitDiff,
    LogProb,
    Metric,
    ProbDiff,
    get_metric,
)
from .paren import ParenData, ParenMixture, paren_task

__all__ = [
    "Accuracy",
    "BinaryCrossEntropy",
    "InductionData",
    "MarkovChain",
    "ParenData",
    "ParenMixture",
    "RepeatSpec",
    "LogProb",
    "LogitDiff",
    "Metric",
    "ProbDiff",
    "Task",
    "get_metric",
    "induction",
    "induction_task",
    "ioi",
    "paren",
    "paren_task",
    "random_token_task",
    "single_token_names",
]
