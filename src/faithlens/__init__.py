"""faithlens: is your explanation of a neural network faithful?"""

from . import interventions, neurons, stats, tasks
from .errors import (
    FaithlensError,
    InputError,
    MetricError,
    MissingExtraError,
    ShapeError,
    SiteError,
)
from .interventions import Add, Interchange, Intervention, Mean, Patch, Project, Resample, Zero
from .models import Inputs, Model, Site, load, wrap
from .results import Result
from .runs import Resume, RunOutput, run
from .tasks import Task

__version__ = "0.1.0"

__all__ = [
    "Add",
    "FaithlensError",
    "InputError",
    "Inputs",
    "Interchange",
    "Intervention",
    "Mean",
    "MetricError",
    "MissingExtraError",
    "Model",
    "Patch",
    "Project",
    "Resample",
    "Result",
    "Resume",
    "RunOutput",
    "ShapeError",
    "Site",
    "SiteError",
    "Task",
    "Zero",
    "interventions",
    "load",
    "neurons",
    "run",
    "stats",
    "tasks",
    "wrap",
]
