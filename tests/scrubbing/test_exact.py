"""faithlens.scrubbing.exact: the deprecated path of faithlens.scrubbing.enumeration (remove this
file with the alias)."""

from __future__ import annotations

import importlib
import sys

import pytest

from faithlens import scrubbing as sc
from faithlens.scrubbing import enumeration


def test_the_old_path_is_the_enumeration_module_with_a_deprecation_warning(monkeypatch):
    monkeypatch.delitem(sys.modules, "faithlens.scrubbing.exact", raising=False)
    with pytest.warns(DeprecationWarning, match="faithlens.scrubbing.enumeration"):
        old = importlib.import_module("faithlens.scrubbing.exact")
    assert old is enumeration
    assert old.exact_scrub is enumeration.exact_scrub is sc.exact_scrub
    assert old.ExactScrub is sc.ExactScrub and old.entropy is enumeration.entropy
