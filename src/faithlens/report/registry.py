"""Every faithlens result's plotter, registered with :func:`faithlens.results.register_plotter`.

``report`` sits above the methods: it imports their result classes and draws them, and no method
imports ``report``. The notebook display (``Result._repr_html_``) is registered the same way
(:func:`faithlens.results.register_html`). ``Result.plot`` finds the plotter here (along the MRO). Importing
:mod:`faithlens.report` (which ``import faithlens`` does) runs :func:`register_all`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..circuits.curve import FaithfulnessCurve
from ..circuits.faithfulness import CircuitFaithfulness
from ..circuits.nodes import NodeScores
from ..circuits.scores import Circuit, EdgeScores
from ..das.result import DASResult
from ..das.selectivity import ControlledDAS
from ..das.sweep import DASSweep
from ..divergence.audit import AuditResult
from ..divergence.compare import DivergenceResult
from ..divergence.dormant import DormantReport
from ..neurons.result import NeuronExplanation
from ..neurons.sanity import SanityCheck
from ..neurons.simulate import BoundValidation
from ..patching.result import PatchingResult
from ..representations.generation import Generations
from ..representations.lens_results import DirectLogitAttribution, LayerLensResult
from ..representations.reading import ReadingResult
from ..representations.results import (
    FaithfulnessReport,
    LogitLensResult,
    PersistenceResult,
    SteeringResult,
    WritersResult,
)
from ..results import Result, register_html, register_plotter
from ..scrubbing.paren import ParenReplication
from ..scrubbing.results import AdversaryResult, ScrubResult
from ..zoo.training import TrainingRun
from . import (
    circuits,
    das,
    divergence,
    html,
    lenses,
    neurons,
    plots,
    representations,
    scrubbing,
    zoo,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: result class -> plotter; a subclass without an entry (``Dissection``) uses its base's.
#: ``Circuit`` is no result (it is not saved) but draws through the same registry.
PLOTTERS: dict[type, Callable[..., Figure]] = {
    PatchingResult: plots.patching_plot,
    Circuit: circuits.circuit_plot,
    EdgeScores: circuits.edge_scores_plot,
    NodeScores: circuits.edge_scores_plot,
    CircuitFaithfulness: circuits.faithfulness_plot,
    FaithfulnessCurve: circuits.curve_plot,
    ScrubResult: scrubbing.scrub_plot,
    AdversaryResult: scrubbing.adversary_plot,
    DASResult: das.das_plot,
    ControlledDAS: das.controls_plot,
    DASSweep: das.sweep_plot,
    DivergenceResult: divergence.divergence_plot,
    AuditResult: divergence.audit_plot,
    DormantReport: divergence.dormant_plot,
    NeuronExplanation: neurons.explanation_plot,
    SanityCheck: neurons.sanity_plot,
    BoundValidation: neurons.bound_validation_plot,
    Generations: representations.generations_plot,
    ReadingResult: representations.reading_plot,
    SteeringResult: representations.steering_plot,
    PersistenceResult: representations.persistence_plot,
    LogitLensResult: representations.logit_lens_plot,
    WritersResult: representations.writers_plot,
    LayerLensResult: lenses.layer_lens_plot,
    DirectLogitAttribution: lenses.dla_plot,
    FaithfulnessReport: representations.report_plot,
    TrainingRun: zoo.training_plot,
    ParenReplication: zoo.paren_replication_plot,
}


def register_all() -> None:
    """Register every plotter in :data:`PLOTTERS`, and the notebook display of every result
    (``Result._repr_html_``: :func:`faithlens.report.html.notebook_html`)."""
    for cls, fn in PLOTTERS.items():
        register_plotter(cls, fn)
    register_html(Result, html.notebook_html)


__all__ = ["PLOTTERS", "register_all"]
