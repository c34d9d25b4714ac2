"""Divergence audits: how far interventions push activations off the natural distribution, and
whether the divergence is harmless (in the reader's null space) or potentially pernicious."""

from .compare import (
    ALL_METRICS,
    DEFAULT_METRICS,
    METRICS,
    DivergenceResult,
    divergences,
    split_values,
)
from .distances import (
    classifier_auroc,
    emd,
    emd_normalized,
    kde_score,
    lle_residual,
    local_pca_residual,
    matching_cost,
    mmd,
    nn_cost,
    pairwise_cost,
    sinkhorn,
    sinkhorn_normalized,
)
from .dormant import DormantReport, dormant_units
from .subspace import row_null_bases, split_divergences, visibility

__all__ = [
    "ALL_METRICS",
    "DEFAULT_METRICS",
    "METRICS",
    "DivergenceResult",
    "DormantReport",
    "classifier_auroc",
    "divergences",
    "dormant_units",
    "emd",
    "emd_normalized",
    "kde_score",
    "lle_residual",
    "local_pca_residual",
    "matching_cost",
    "mmd",
    "nn_cost",
    "pairwise_cost",
    "row_null_bases",
    "sinkhorn",
    "sinkhorn_normalized",
    "split_divergences",
    "split_values",
    "visibility",
]
