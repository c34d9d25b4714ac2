"""Alignment search (DAS, Boundless DAS, a non-orthogonal invertible alignment) with IIA and the
Counterfactual Latent loss. ``fl.das(model, data, site)`` returns a :class:`DASResult`;
``das_controls`` / ``das_sweep`` measure selectivity against a control task, a random-init model
and random subspaces (one site, or a layer x position heat map); ``export_featurizer`` writes an
alignment as an MIB-style featurizer pair."""

from .alignment import (
    Alignment,
    BoundlessMask,
    IdentityBasis,
    Rotation,
    SymmetricDefinite,
    alignment_from_flat,
    load_alignment,
    make_alignment,
)
from .control_inputs import control_task, random_init
from .controls import Selectivity, random_subspace_correct, selectivity
from .directions import DIRECTION_METHODS, FixedBasis, direction_alignment
from .featurizer import (
    Featurizer,
    FeaturizerPair,
    InverseFeaturizer,
    export_featurizer,
    featurizer_pair,
    load_featurizer,
)
from .losses import cl_loss_mas, cl_loss_modified, iia_loss
from .result import DASResult
from .selectivity import CONTROLS, ControlledDAS, das_controls
from .sweep import DASSweep, das_sweep
from .train import AlignmentEval, das, evaluate_alignment, source_activations

__all__ = [
    "CONTROLS",
    "DIRECTION_METHODS",
    "Alignment",
    "AlignmentEval",
    "BoundlessMask",
    "ControlledDAS",
    "DASSweep",
    "Featurizer",
    "FeaturizerPair",
    "FixedBasis",
    "InverseFeaturizer",
    "DASResult",
    "IdentityBasis",
    "Rotation",
    "Selectivity",
    "SymmetricDefinite",
    "alignment_from_flat",
    "cl_loss_mas",
    "cl_loss_modified",
    "control_task",
    "das",
    "das_controls",
    "das_sweep",
    "direction_alignment",
    "export_featurizer",
    "featurizer_pair",
    "evaluate_alignment",
    "iia_loss",
    "load_alignment",
    "load_featurizer",
    "make_alignment",
    "random_init",
    "random_subspace_correct",
    "selectivity",
    "source_activations",
]
