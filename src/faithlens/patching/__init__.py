"""Activation patching and attribution patching sweeps."""

from .attribution import attribution_patch
from .exact import Condition, patch, plan, plan_sweep, resolve_sites
from .path import path_patch
from .result import PatchingResult

__all__ = [
    "Condition",
    "PatchingResult",
    "attribution_patch",
    "patch",
    "path_patch",
    "plan",
    "plan_sweep",
    "resolve_sites",
]
