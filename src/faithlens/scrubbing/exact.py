"""Deprecated: this module is now :mod:`faithlens.scrubbing.enumeration` (exact scrubbed
distributions by enumeration; :mod:`faithlens.patching.exact` is exact activation patching).
The old path works, with a ``DeprecationWarning``, until the release after 0.1.0; import from
``faithlens.scrubbing.enumeration`` (or use ``faithlens.scrubbing.exact_scrub``).
"""

from __future__ import annotations

import sys
import warnings

from . import enumeration

warnings.warn(
    "faithlens.scrubbing.exact is renamed faithlens.scrubbing.enumeration; import from there "
    "(the old path goes in the next release)",
    DeprecationWarning,
    stacklevel=2,
)
sys.modules[__name__] = enumeration
