"""``PatchingResult``'s tables as a person reads them."""

from __future__ import annotations

import pandas as pd
import pytest

import faithlens as fl


@pytest.fixture(scope="module")
def res():
    model = fl.load("zoo:induction")
    return fl.patch(model, fl.tasks.induction_task(8, 0), "head", n_boot=20)


def test_top_shows_the_effect_even_when_the_display_elides_columns(res):
    top = res.top(3)
    assert list(top.columns[:4]) == ["site", "effect", "effect_ci_low", "effect_ci_high"]
    # every column of to_frame() is still there, and the rows are the largest |effect|
    assert sorted(top.columns) == sorted(res.to_frame().columns)
    frame = res.to_frame()
    want = frame.loc[frame["effect"].abs().sort_values(ascending=False).index[:3], "site"]
    assert top["site"].tolist() == want.tolist()
    with pd.option_context("display.width", 80, "display.max_columns", 6):
        shown = repr(top)
    header = shown.splitlines()[0].split()
    assert "..." in header  # columns were elided, but not these
    assert {"site", "effect", "effect_ci_low"} <= set(header), shown
    assert f"{top['effect'].iloc[0]:.6f}" in shown
