"""docs/ARCHITECTURE.md's table of public methods is the one the code generates."""

from __future__ import annotations

from tests.helpers import api_table


def test_api_table_is_current():
    doc = api_table.DOC.read_text()
    assert api_table.render(doc) == doc, (
        "docs/ARCHITECTURE.md is stale: python -m tests.helpers.api_table"
    )


def test_every_method_has_a_result_class():
    for label, module, name in api_table.METHODS:
        import importlib

        fn = getattr(importlib.import_module(module), name)
        assert api_table._result_class(fn) is not None, label
