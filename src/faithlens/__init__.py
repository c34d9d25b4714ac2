"""faithlens: is your explanation of a neural network faithful?"""

from . import (
    divergence,
    graph,
    interventions,
    neurons,
    patching,
    representations,
    scrubbing,
    stats,
    tasks,
    zoo,
)
from ._memory import MemoryBudgetWarning
from .das import DASResult, das
from .divergence.audit import AuditResult, audit
from .divergence.compare import DivergenceResult, divergences
from .errors import (
    ArgumentError,
    CheckpointError,
    FaithlensError,
    InputError,
    MetricError,
    MissingExtraError,
    ResultError,
    ShapeError,
    SiteError,
)
from .interventions import Add, Interchange, Intervention, Mean, Patch, Project, Resample, Zero
from .models import Inputs, Model, Site, load, wrap
from .patching import PatchingResult, attribution_patch, patch, path_patch
from .representations import (
    Behaviour,
    ContrastPairs,
    FaithfulnessReport,
    ReadingResult,
    Steering,
    faithfulness,
    generate,
)
from .representations import read as read_directions
from .results import Result
from .runs import Resume, RunOutput, run
from .scrubbing import Hypothesis, ScrubResult, adversary, scrub
from .stats import DegenerateDataWarning
from .tasks import Task
from .tasks.interchange import InterchangeData

__version__ = "0.1.0"

__all__ = [
    "Add",
    "AuditResult",
    "DASResult",
    "DivergenceResult",
    "InterchangeData",
    "audit",
    "das",
    "divergence",
    "divergences",
    "ArgumentError",
    "DegenerateDataWarning",
    "MemoryBudgetWarning",
    "CheckpointError",
    "FaithlensError",
    "Hypothesis",
    "InputError",
    "Inputs",
    "Interchange",
    "Intervention",
    "Mean",
    "MetricError",
    "MissingExtraError",
    "ResultError",
    "Model",
    "Patch",
    "PatchingResult",
    "Project",
    "Resample",
    "Result",
    "Resume",
    "RunOutput",
    "ScrubResult",
    "ShapeError",
    "Site",
    "SiteError",
    "Task",
    "Zero",
    "adversary",
    "attribution_patch",
    "graph",
    "interventions",
    "load",
    "neurons",
    "patch",
    "path_patch",
    "patching",
    "run",
    "scrub",
    "scrubbing",
    "stats",
    "tasks",
    "wrap",
    "zoo",
    "Behaviour",
    "ContrastPairs",
    "FaithfulnessReport",
    "ReadingResult",
    "Steering",
    "faithfulness",
    "generate",
    "read_directions",
    "representations",
]
