"""The faithfulness curve and its areas: CPR / CMD against hand-computed trapezoids, the curve
against single-circuit faithfulness, and the bootstrap over examples."""

from __future__ import annotations

import numpy as np
import pytest

import faithlens as fl
from faithlens.circuits import MIB_SIZES, FaithfulnessCurve, areas
from faithlens.circuits.curve import sizes_to_counts
from tests.helpers.builders import BUILDERS
from tests.helpers.tasks import padded_task


def test_areas_are_trapezoids_by_hand():
    # widths 0.4 and 0.5; CPR = 0.4 (0.2 + 0.6) / 2 + 0.5 (0.6 + 1.0) / 2
    cpr, cmd = areas([0.1, 0.5, 1.0], np.array([0.2, 0.6, 1.0]))
    assert cpr == pytest.approx(0.16 + 0.40)
    assert cmd == pytest.approx(0.4 * (0.8 + 0.4) / 2 + 0.5 * (0.4 + 0.0) / 2)
    # overshoot counts in CMD as distance from 1
    cpr, cmd = areas([0.1, 0.5, 1.0], np.array([1.2, 1.0, 1.0]))
    assert cpr == pytest.approx(0.4 * 1.1 + 0.5)
    assert cmd == pytest.approx(0.4 * 0.1)
    # vectorised over leading axes
    both = areas([0.1, 0.5, 1.0], np.array([[0.2, 0.6, 1.0], [1.2, 1.0, 1.0]]))
    assert both[0] == pytest.approx([0.56, 0.94])


def test_perfect_and_empty_curves():
    grid = [0.0, 0.25, 0.5, 1.0]
    assert areas(grid, np.ones(4)) == pytest.approx((1.0, 0.0))
    assert areas(grid, np.zeros(4)) == pytest.approx((0.0, 1.0))
    # on MIB's grid the axis starts at 0.001: a perfect curve has CPR 0.999
    assert areas(MIB_SIZES, np.ones(10)) == pytest.approx((0.999, 0.0))


def test_sizes_to_counts_round_down_as_mib():
    assert sizes_to_counts(MIB_SIZES, 81) == [0, 0, 0, 0, 1, 4, 8, 16, 40, 81]
    assert sizes_to_counts([0.29, 0.57, 1.0], 100) == [29, 57, 100]


def _setup():
    hf = BUILDERS["gpt_neox"]().double()
    model = fl.wrap(hf)
    task = padded_task(model, n=5, seq=6)
    return model, task


def test_curve_matches_single_circuits_and_bootstrap(tmp_path):
    model, task = _setup()
    scores = fl.circuits.eap(model, task, n_boot=20)
    sizes = (0.05, 0.2, 0.5, 1.0)
    calls = []
    curve = fl.circuits.faithfulness_curve(
        model, task, scores, sizes=sizes, n_boot=200, seed=1, progress=lambda d, t: calls.append(d)
    )
    n_edges = len(scores.edge)
    assert curve.edges.tolist() == [int(p * n_edges) for p in sizes]
    assert calls == [1, 2, 3, 4]
    # the whole graph is the clean run
    assert curve.faithfulness[-1] == pytest.approx(1.0, abs=1e-9)
    for i, k in enumerate(curve.edges.tolist()):
        one = fl.circuits.faithfulness(model, task, scores.top_k(k) if k else [], n_boot=20)
        np.testing.assert_allclose(curve.patched[i], one.patched, atol=1e-12, rtol=0)
        assert curve.faithfulness[i] == pytest.approx(one.faithfulness, abs=1e-12)
    cpr, cmd = areas(sizes, curve.faithfulness)
    assert (curve.cpr, curve.cmd) == pytest.approx((float(cpr), float(cmd)))
    # a curve that is not flat: the smaller circuits lose something
    assert curve.cmd > 1e-3
    for name in ("cpr", "cmd"):
        v, lo, hi = (getattr(curve, name + s) for s in ("", "_ci_low", "_ci_high"))
        assert lo <= v <= hi and hi > lo
    assert np.all(curve.faithfulness_ci_low <= curve.faithfulness + 1e-12)
    assert np.all(curve.faithfulness <= curve.faithfulness_ci_high + 1e-12)
    # the bootstrap by hand: resampling the examples, the whole curve and both areas per draw
    rng = np.random.default_rng(1)
    idx = rng.integers(0, task.n, (200, task.n))
    base = curve.corrupt[idx].mean(-1)[:, None]
    fb = (curve.patched[:, idx].mean(-1).T - base) / (curve.clean[idx].mean(-1)[:, None] - base)
    cprs = areas(sizes, fb)[0]
    assert curve.cpr_ci_low == pytest.approx(np.quantile(cprs, 0.025))
    assert curve.cpr_se == pytest.approx(np.std(cprs, ddof=1))
    # ranked by the signed score instead of |score|
    signed = fl.circuits.faithfulness_curve(model, task, scores, sizes=(0.2, 1.0), by="value")
    k = int(signed.edges[0])
    one = fl.circuits.faithfulness(model, task, scores.top_k(k, by="value"), n_boot=20)
    np.testing.assert_allclose(signed.patched[0], one.patched, atol=1e-12, rtol=0)
    assert signed.meta["by"] == "value"
    back = FaithfulnessCurve.load(curve.save(tmp_path / "curve"))
    assert back.cpr == curve.cpr and np.array_equal(back.faithfulness, curve.faithfulness)
    assert "CPR" in curve.summary() and curve.plot() is not None
    assert list(curve.to_frame().columns)[:3] == ["size", "edges", "faithfulness"]


@pytest.mark.parametrize("ablation", ["zero", "mean", "resample"])
def test_other_ablations_equal_faithfulness_at_each_size(ablation):
    model, task = _setup()
    scores = fl.circuits.eap(model, task, n_boot=20)
    curve = fl.circuits.faithfulness_curve(
        model, task, scores, sizes=(0.05, 0.3, 1.0), ablation=ablation, seed=2, n_boot=20
    )
    assert curve.meta["ablation"] == ablation
    assert curve.faithfulness[-1] == pytest.approx(1.0, abs=1e-9)
    for i, k in enumerate(curve.edges.tolist()):
        one = fl.circuits.faithfulness(
            model, task, scores.top_k(k), ablation=ablation, seed=2, n_boot=20
        )
        np.testing.assert_allclose(curve.patched[i], one.patched, atol=1e-12, rtol=0)
        np.testing.assert_allclose(curve.corrupt, one.corrupt, atol=1e-12, rtol=0)
        assert curve.faithfulness[i] == pytest.approx(one.faithfulness, abs=1e-9)


def test_greedy_selection_equals_faithfulness_of_each_greedy_circuit():
    """selection="greedy": each size's circuit is scores.greedy(k) (grown from the logits and
    pruned), so it may hold fewer edges than int(p * n); ``edges`` records how many."""
    model, task = _setup()
    scores = fl.circuits.eap(model, task, n_boot=20)
    sizes = (0.02, 0.1, 0.3, 1.0)
    curve = fl.circuits.faithfulness_curve(
        model, task, scores, sizes=sizes, selection="greedy", n_boot=50
    )
    n = len(scores.edge)
    assert curve.meta["selection"] == "greedy"
    for i, p in enumerate(sizes):
        k = int(p * n)
        chosen = scores.greedy(k)
        assert int(curve.edges[i]) == len(chosen) <= k
        one = fl.circuits.faithfulness(model, task, chosen, n_boot=20)
        np.testing.assert_allclose(curve.patched[i], one.patched, atol=1e-12, rtol=0)
    top = fl.circuits.faithfulness_curve(model, task, scores, sizes=sizes, n_boot=50)
    assert top.meta["selection"] == "top" and top.edges.tolist() == [int(p * n) for p in sizes]
    assert curve.edges.tolist() != top.edges.tolist()  # other circuits (pruned: fewer edges)
    with pytest.raises(fl.InputError, match="selection"):
        fl.circuits.faithfulness_curve(model, task, scores, selection="best")


def test_bad_input():
    model, task = _setup()
    scores = fl.circuits.eap(model, task, n_boot=20)
    for sizes in ((0.5,), (0.5, 0.2), (0.0, 1.0), (0.5, 1.5), "ab"):
        with pytest.raises(fl.InputError, match="sizes"):
            fl.circuits.faithfulness_curve(model, task, scores, sizes=sizes)
    with pytest.raises(fl.InputError, match="ablation"):
        fl.circuits.faithfulness_curve(model, task, scores, ablation="noise")
    with pytest.raises(fl.InputError, match="EdgeScores"):
        fl.circuits.faithfulness_curve(model, task, scores.top_k(3))
    other = fl.wrap(BUILDERS["llama"]().double())
    with pytest.raises(fl.InputError, match="another edge graph"):
        fl.circuits.faithfulness_curve(other, padded_task(other, n=3, seq=6), scores)
