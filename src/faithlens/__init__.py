"""faithlens: is your explanation of a neural network faithful?

Importing the package imports :mod:`faithlens.report`, which registers the plotter of every
result class, so ``result.plot()`` works after ``import faithlens`` (no method imports report),
and :mod:`faithlens.distributed`, which registers the ``"ray"`` executor.
"""

from . import (
    circuits,
    distributed,
    divergence,
    graph,
    interventions,
    neurons,
    patching,
    report,
    representations,
    scrubbing,
    stats,
    tasks,
    zoo,
)
from ._memory import MemoryBudgetWarning
from ._version import __version__
from .das import ControlledDAS, DASResult, DASSweep, das, das_controls, das_sweep
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
from .loading import cache_dir, load
from .models import Inputs, Model, Site, wrap
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
from .representations.lens_results import DirectLogitAttribution, LayerLensResult
from .representations.lenses import direct_logit_attribution, logit_lens
from .results import Result
from .runs import Resume, RunOutput, run
from .scrubbing import Hypothesis, ScrubResult, adversary, scrub
from .stats import DegenerateDataWarning
from .tasks import Data, Task
from .tasks.interchange import InterchangeData

__all__ = [
    "__version__",
    "Add",
    "AuditResult",
    "ControlledDAS",
    "DASResult",
    "DASSweep",
    "Data",
    "DivergenceResult",
    "InterchangeData",
    "audit",
    "das",
    "das_controls",
    "das_sweep",
    "circuits",
    "distributed",
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
    "cache_dir",
    "graph",
    "interventions",
    "load",
    "neurons",
    "patch",
    "path_patch",
    "patching",
    "report",
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
    "DirectLogitAttribution",
    "LayerLensResult",
    "direct_logit_attribution",
    "logit_lens",
    "representations",
]
