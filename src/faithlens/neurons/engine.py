"""Deprecated: this module is now :mod:`faithlens.neurons.kernels` (the vectorised similarity
kernels; ``faithlens.runs`` is the one engine). The old path works, with a
``DeprecationWarning``, until the release after 0.1.0; import from ``faithlens.neurons.kernels``.
"""

from __future__ import annotations

import sys
import warnings

from . import kernels

warnings.warn(
    "faithlens.neurons.engine is renamed faithlens.neurons.kernels; import from there (the old "
    "path goes in the next release)",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = kernels
