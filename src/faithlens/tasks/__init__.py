"""Tasks: datasets of clean / corrupted inputs with answers and a metric."""

from collections.abc import Callable

from ..errors import InputError
from ..models.model import Model
from .base import Task
from .ioi import ioi, random_token_task, single_token_names
from .metrics import Accuracy, LogitDiff, LogProb, Metric, ProbDiff, get_metric

#: Task builders by name, for the CLI: ``builder(model, n=..., seed=...) -> Task``.
REGISTRY: dict[str, Callable[..., Task]] = {"ioi": ioi}


def build(name: str, model: Model, n: int, seed: int = 0) -> Task:
    """Build a registered task by name."""
    builder = REGISTRY.get(name)
    if builder is None:
        raise InputError(f"unknown task {name!r}; registered tasks: {sorted(REGISTRY)}")
    return builder(model, n=n, seed=seed)


__all__ = [
    "REGISTRY",
    "build",
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
