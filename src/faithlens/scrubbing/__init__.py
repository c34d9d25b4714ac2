"""Causal scrubbing: test an interpretability hypothesis by resampling what it says is
irrelevant (Chan et al., Redwood Research, 2022), on the faithlens run engine.

    import faithlens as fl
    from faithlens import scrubbing as sc

    h = sc.Hypothesis("claim")
    h.add("a", sc.to("head.1.0", direct=True), feature=my_feature)
    result = fl.scrub(model, data, h, n=4000, behaviour=sc.CrossEntropy("label"))
    print(result.summary())

See docs/scrubbing.md for the formulas, the semantics and the pitfalls.
"""

from .adversary import Refinement, adversary, candidates
from .data import ScrubData, field, rowwise
from .enumeration import ExactScrub, exact_scrub
from .evaluate import dry_run, prepare, scrub
from .hypothesis import Hypothesis, InterpNode, Joined, join
from .metrics import (
    MSE,
    BinaryCrossEntropy,
    CrossEntropy,
    Fn,
    NextTokenLoss,
    ScrubBehaviour,
    TaskMetric,
)
from .paren import ParenReplication, ParenRoles, paren_hypotheses, replicate_paren
from .paths import Paths, Route, input_of, to
from .results import AdversaryResult, ScrubResult
from .rewrites import (
    Rewrite,
    phi,
    project,
    split_heads,
    split_positions,
    split_qkv,
    split_sum,
)
from .samplers import Exact, Generate, Kernel, Random, SameFeature, Sampler

__all__ = [
    "MSE",
    "ExactScrub",
    "Refinement",
    "adversary",
    "candidates",
    "exact_scrub",
    "AdversaryResult",
    "BinaryCrossEntropy",
    "CrossEntropy",
    "Exact",
    "Fn",
    "Generate",
    "Hypothesis",
    "InterpNode",
    "Joined",
    "Kernel",
    "NextTokenLoss",
    "ParenReplication",
    "ParenRoles",
    "Paths",
    "Random",
    "Rewrite",
    "Route",
    "SameFeature",
    "Sampler",
    "ScrubBehaviour",
    "ScrubData",
    "ScrubResult",
    "TaskMetric",
    "dry_run",
    "field",
    "input_of",
    "join",
    "paren_hypotheses",
    "phi",
    "prepare",
    "replicate_paren",
    "project",
    "rowwise",
    "scrub",
    "split_heads",
    "split_positions",
    "split_qkv",
    "split_sum",
    "to",
]


def __getattr__(name: str) -> object:
    if name == "Behaviour":  # the old name, which faithlens.Behaviour (representations) also had
        import warnings

        warnings.warn(
            "faithlens.scrubbing.Behaviour is now ScrubBehaviour (faithlens.Behaviour is the "
            "representations one)",
            DeprecationWarning,
            stacklevel=2,
        )
        return ScrubBehaviour
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
