"""Alignment search (DAS, Boundless DAS, a non-orthogonal invertible alignment) with IIA and the
Counterfactual Latent loss. ``fl.das(model, data, site)`` returns a :class:`DASResult`."""

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
from .controls import Selectivity, random_subspace_correct, selectivity
from .losses import cl_loss_mas, cl_loss_modified, iia_loss
from .result import DASResult
from .train import AlignmentEval, das, evaluate_alignment, source_activations

__all__ = [
    "Alignment",
    "AlignmentEval",
    "BoundlessMask",
    "DASResult",
    "IdentityBasis",
    "Rotation",
    "Selectivity",
    "SymmetricDefinite",
    "alignment_from_flat",
    "cl_loss_mas",
    "cl_loss_modified",
    "das",
    "evaluate_alignment",
    "iia_loss",
    "load_alignment",
    "make_alignment",
    "random_subspace_correct",
    "selectivity",
    "source_activations",
]
