"""Tasks: datasets of clean / corrupted inputs with answers and a metric."""

from collections.abc import Callable

from .. import validate
from ..errors import InputError
from ..models.model import Model
from . import entity_attribute, induction, paren
from .base import Task
from .data import Data
from .induction import InductionData, MarkovChain, RepeatSpec, induction_task
from .ioi import ioi, random_token_task, single_token_names
from .metrics import (
    Accuracy,
    AnswerSet,
    BinaryCrossEntropy,
    CrossEntropy,
    LogitDiff,
    LogProb,
    Metric,
    ProbDiff,
    SequenceLogProb,
    get_metric,
)
from .paren import ParenData, ParenMixture, paren_task
from .prompts_file import TaskFile, read_task_file
from .tensors import TensorTask, require_tokens


def _vocab_check(model: Model, want: int, task: str, hint: str) -> None:
    have = model.adapter.d_vocab
    if have and have != want:
        raise InputError(
            f"the {task} task is made of {want} token ids but this model has a vocabulary of "
            f"{have}; use {hint}"
        )


def _paren_builder(model: Model, n: int = 512, seed: int = 0) -> Task:
    _vocab_check(model, len(paren.VOCAB), "paren", "a paren-balance model such as zoo:paren")
    return paren_task(n, seed)


def _induction_builder(model: Model, n: int = 256, seed: int = 0) -> Task:
    _vocab_check(model, MarkovChain().vocab, "induction", "zoo:induction")
    return induction_task(n, seed)


#: Task builders by name, for the CLI: ``builder(model, n=..., seed=...) -> Task``.
REGISTRY: dict[str, Callable[..., Task]] = {
    "ioi": ioi,
    "paren": _paren_builder,
    "induction": _induction_builder,
}


def build(name: str, model: Model, n: int, seed: int = 0) -> Task:
    """Build a registered task by name."""
    builder = REGISTRY.get(name)
    if builder is None:
        raise InputError(f"unknown task {name!r}; registered tasks: {sorted(REGISTRY)}")
    n = validate.positive_int("n", n, fix="a task needs at least one example")
    seed = validate.nonnegative_int("seed", seed)
    return builder(model, n=n, seed=seed)


__all__ = [
    "REGISTRY",
    "build",
    "Accuracy",
    "AnswerSet",
    "BinaryCrossEntropy",
    "CrossEntropy",
    "Data",
    "InductionData",
    "MarkovChain",
    "ParenData",
    "ParenMixture",
    "RepeatSpec",
    "LogProb",
    "LogitDiff",
    "Metric",
    "ProbDiff",
    "SequenceLogProb",
    "Task",
    "TaskFile",
    "TensorTask",
    "entity_attribute",
    "get_metric",
    "induction",
    "induction_task",
    "ioi",
    "paren",
    "paren_task",
    "random_token_task",
    "read_task_file",
    "require_tokens",
    "single_token_names",
]
