"""Comparing two DAS results number by number (the sweep's tests, in process and on Ray)."""

from __future__ import annotations

from typing import Any

import numpy as np


def same_das(a: Any, b: Any) -> None:
    """Every number of two DAS results is the same, bit for bit."""
    assert (a.site, a.seed, a.selected_epoch) == (b.site, b.seed, b.selected_epoch)
    for f in ("iia", "iia_se", "iia_low", "iia_high", "emd", "emd_features"):
        assert np.array_equal(getattr(a, f), getattr(b, f), equal_nan=True), f
    assert np.array_equal(a.alignment_params, b.alignment_params)
    assert a.history.equals(b.history)
