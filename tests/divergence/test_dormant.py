"""DormantReport is a Result: a frame, a summary, a plot, and save/load."""

from __future__ import annotations

import numpy as np

import faithlens as fl
from faithlens.divergence import DormantReport, dormant_units
from faithlens.results import Result


def _report() -> DormantReport:
    g = np.random.default_rng(0)
    nat = np.maximum(g.normal(size=(50, 8)), 0)
    nat[:, [2, 5]] = 0.0  # dormant on natural data
    itv = nat.copy()
    itv[:10, 5] = 1.5  # recruited by the intervention
    return dormant_units(nat, itv)


def test_dormant_report_is_a_result(tmp_path):
    rep = _report()
    assert isinstance(rep, Result)
    assert rep.flagged and rep.recruited.tolist() == [5]
    frame = rep.to_frame()
    assert frame["unit"].tolist() == [5]
    assert frame["fire_rate"].tolist() == [0.2]
    assert "recruits 1" in rep.summary()
    fig = rep.plot()
    assert fig is not None
    back = fl.Result.load(rep.save(tmp_path / "r"))
    assert isinstance(back, DormantReport)
    np.testing.assert_array_equal(back.recruited, rep.recruited)
    assert back.examples_recruiting == rep.examples_recruiting


def test_unflagged_summary():
    nat = np.ones((5, 3))
    rep = dormant_units(nat, nat)
    assert not rep.flagged and "no hidden pathway" in rep.summary()
    assert rep.to_frame().empty
