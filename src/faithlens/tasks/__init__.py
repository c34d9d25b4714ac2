"""Tasks: datasets of clean / corrupted inputs with answers and a metric."""

from .base import Task
from .ioi import ioi, random_token_task, single_token_names
from .metrics import Accuracy, LogitDiff, LogProb, Metric, ProbDiff, get_metric

__all__ = [
    "Accuracy",
    "LogProb",
    "LogitDiff",
    "Metric",
    "ProbDiff",
    "Task",
    "get_metric",
    "ioi",
    "random_token_task",
    "single_token_names",
]
