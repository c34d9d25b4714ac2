"""What does the direction detect: Paper A's explanations of the read-out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ...errors import InputError
from ..reading import ReadingResult


def explain_direction(
    reading: ReadingResult,
    acts: Any,
    layer: int,
    concepts: dict[str, Any] | None = None,
    *,
    metric: str | Sequence[str] = "auroc",
    n_boot: int = 500,
    level: float = 0.9,
    delta: float = 0.05,
    seed: int = 0,
) -> Any:
    """Treat the read-out ``s(x) = <h - mu, r>`` of ``layer`` as a unit and explain it with
    :func:`faithlens.neurons.explain` (Paper A): which candidate concept does the direction
    detect, is the winner certified, and what is the Bootstrap-Explanation set?

    ``acts`` are the :class:`ContrastActivations` of the pairs (both members are samples; the
    two members of a pair form one group for the bootstrap). The concept the pairs contrast is
    always a candidate; ``concepts`` adds others, each one label per sample (``2 n``: positives
    first) or per pair (``n``: both members share it), e.g. the topic of each fact. A direction
    that really detects its concept has a BE set of one: that concept.
    """
    from ...neurons import explain
    from ..reading import ContrastActivations

    if not isinstance(acts, ContrastActivations):
        raise InputError(
            f"acts must be ContrastActivations (from collect), not {type(acts).__name__}"
        )
    if acts.site != reading.site:
        raise InputError(f"the activations are of {acts.site}; the reading is of {reading.site}")
    if layer not in reading.layers:
        raise InputError(f"no reading vector for layer {layer}; layers: {reading.layers}")
    j = reading.layers.index(layer)
    pos, neg = acts.layer(layer)
    n = pos.shape[0]
    h = np.concatenate([pos, neg]).astype(np.float64)
    score = (h - reading.means[j].astype(np.float64)) @ reading.directions[j].astype(np.float64)
    cands: dict[str, np.ndarray] = {reading.concept: np.r_[np.ones(n), np.zeros(n)]}
    for name, lab in (concepts or {}).items():
        v = np.asarray(lab, dtype=np.float64).reshape(-1)
        if v.shape[0] == n:
            v = np.r_[v, v]
        if v.shape[0] != 2 * n:
            raise InputError(
                f"concept {name!r} has {v.shape[0]} labels; give one per pair ({n}) or per "
                f"sample ({2 * n}, positives first)"
            )
        if name in cands:
            raise InputError(f"concept {name!r} is given twice")
        cands[name] = v
    groups = np.r_[np.arange(n), np.arange(n)]
    return explain(
        score[:, None],
        cands,
        metric,
        n_boot=n_boot,
        level=level,
        delta=delta,
        groups=groups,
        unit_names=[f"{reading.concept} direction @ {reading.site}.{layer}"],
        seed=seed,
    )
