"""EdgeScores: the table, saving and loading, and circuits chosen by top-k or threshold."""

from __future__ import annotations

import numpy as np
import pytest

import faithlens as fl
from faithlens.circuits import Circuit, EdgeScores


def _scores() -> EdgeScores:
    edges = ["input->a0.h0<q>", "a0.h0->m0", "input->m0", "m0->logits", "a0.h0->logits"]
    values = np.array(
        [
            [0.1, 0.3, 0.2],
            [-0.9, -1.1, -1.0],
            [0.0, 0.0, 0.0],
            [0.5, 0.4, 0.6],
            [np.nan, np.nan, np.nan],
        ]
    )
    est = fl.stats.mean_interval(values[:4], n_boot=200)
    pad = np.array([np.nan])
    return EdgeScores(
        edge=edges,
        writer=[e.split("->")[0] for e in edges],
        reader=[e.split("->")[1] for e in edges],
        score=np.concatenate([est.estimate, pad]),
        score_se=np.concatenate([est.se, pad]),
        score_ci_low=np.concatenate([est.low, pad]),
        score_ci_high=np.concatenate([est.high, pad]),
        values=values,
        clean=np.array([1.0, 2.0, 3.0]),
        corrupt=np.array([0.0, 0.5, 1.0]),
        method="exact",
        model="toy",
        task="t",
        n_boot=200,
    )


def test_frame_columns_and_lookup():
    s = _scores()
    df = s.to_frame()
    assert list(df.columns) == [
        "edge",
        "writer",
        "reader",
        "score",
        "score_se",
        "score_ci_low",
        "score_ci_high",
        "level",
    ]
    assert (df["level"] == 0.95).all() and s.n == 3
    assert s["a0.h0->m0"] == pytest.approx(-1.0)
    with pytest.raises(fl.InputError, match="not an edge"):
        s["m9->logits"]


def test_top_k_and_threshold_rank_by_absolute_score():
    s = _scores()
    c = s.top_k(2)
    assert isinstance(c, Circuit) and len(c) == 2 and c.of == 5
    assert c.edges == ("a0.h0->m0", "m0->logits")  # in edge-graph order
    assert "a0.h0->m0" in c and "input->m0" not in c
    assert c.nodes == ["a0.h0", "m0", "logits"]
    assert s.top_k(1, by="value").edges == ("m0->logits",)
    assert s.threshold(0.2).edges == ("input->a0.h0<q>", "a0.h0->m0", "m0->logits")
    assert s.threshold(0.2, by="value").edges == ("input->a0.h0<q>", "m0->logits")
    assert "top_k=2" in c.summary() and "2 of 5 edges" in c.summary()
    with pytest.raises(fl.ArgumentError, match="k"):
        s.top_k(0)
    with pytest.raises(fl.ArgumentError, match="at most"):
        s.top_k(6)
    with pytest.raises(fl.ArgumentError, match="by"):
        s.threshold(0.1, by="size")


def test_summary_and_save_load(tmp_path):
    s = _scores()
    text = s.summary(k=2)
    assert "exact edge scores of toy on t: 5 edges, n=3" in text
    assert "a0.h0->m0" in text.splitlines()[2]
    back = fl.Result.load(s.save(tmp_path / "scores"))
    assert isinstance(back, EdgeScores)
    assert back.edge == s.edge and back.method == "exact"
    np.testing.assert_array_equal(back.values, s.values)
    np.testing.assert_array_equal(back.score_ci_high, s.score_ci_high)


def test_real_scores_round_trip(tmp_path):
    from tests.helpers.builders import BUILDERS
    from tests.helpers.tasks import padded_task

    model = fl.wrap(BUILDERS["faithlens_zoo-attn_only"]())
    res = fl.circuits.eap(model, padded_task(model, n=3, seq=6), n_boot=50)
    back = EdgeScores.load(res.save(tmp_path / "eap"))
    assert back.to_frame().equals(res.to_frame())
    assert back.top_k(5) == res.top_k(5)


def test_plot_draws_the_top_edges():
    fig = _scores().plot()
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels[0] == "a0.h0->m0" and sorted(labels) == sorted(_scores().edge)


def test_stability_counts_top_k_membership_across_resamples():
    s = _scores()
    st = s.stability(2, n_resamples=300, seed=1)
    # a0.h0->m0 (about -1) and m0->logits (about 0.5) are the top 2 in every resample;
    # the all-zero and the NaN edge never are
    np.testing.assert_array_equal(st, [0.0, 1.0, 0.0, 1.0, 0.0])
    assert st.sum() == 2
    # with k=3 the third place always goes to input->a0.h0<q>
    assert s.stability(3, n_resamples=50)[0] == 1.0
    # two edges of equal mean and different spread: membership varies between resamples
    values = np.array([[1.0, 1.0, 1.0, 1.0], [0.0, 2.0, 0.0, 2.0], [0.1, 0.1, 0.1, 0.1]])
    noisy = EdgeScores(
        edge=["a", "b", "c"],
        writer=["a", "b", "c"],
        reader=["x", "x", "x"],
        score=values.mean(1),
        score_se=np.zeros(3),
        score_ci_low=values.mean(1),
        score_ci_high=values.mean(1),
        values=values,
        clean=np.ones(4),
        corrupt=np.zeros(4),
    )
    st = noisy.stability(1, n_resamples=400, seed=0)
    assert 0.2 < st[1] < 0.8 and st[2] == 0.0 and st[0] + st[1] == pytest.approx(1.0)
    assert np.array_equal(st, noisy.stability(1, n_resamples=400, seed=0))
    with pytest.raises(fl.ArgumentError, match="n_resamples"):
        s.stability(2, n_resamples=0)


def test_chosen_circuits_carry_their_edges_scores():
    s = _scores()
    for c in (s.top_k(2), s.threshold(0.3), s.greedy(3, prune=False)):
        assert len(c.scores) == len(c) > 0
        assert c.scores == tuple(s[e] for e in c.edges)
    assert s.top_k(2).scores == pytest.approx((s["a0.h0->m0"], s["m0->logits"]))
    assert Circuit(("input->logits",)).scores == ()
    with pytest.raises(fl.ArgumentError, match="scores"):
        Circuit(("input->logits", "m0->logits"), scores=(1.0,))


def test_circuit_plot_is_registered():
    fig = _scores().top_k(3).plot()
    assert {t.get_gid() for t in fig.axes[0].texts if t.get_gid()} >= {"a0.h0", "m0", "logits"}


def test_an_edge_without_a_score_ranks_last_in_every_selection():
    # a NaN edge before an edge scored 0 in the graph's order: by |score| it must still come
    # after it (top_k, ranking, threshold and greedy alike), as it does by value
    edges = ["input->logits", "a0.h0->logits", "input->a0.h0<v>"]
    score = np.array([np.nan, 0.0, -0.5])
    s = EdgeScores(
        edge=edges,
        writer=[e.split("->")[0] for e in edges],
        reader=[e.split("->")[1] for e in edges],
        score=score,
        score_se=np.zeros(3),
        score_ci_low=score,
        score_ci_high=score,
        values=np.tile(score[:, None], (1, 2)),
        clean=np.ones(2),
        corrupt=np.zeros(2),
    )
    for by in ("abs", "value"):
        assert s.ranking(by)[-1] == 0, by
        assert "input->logits" not in s.top_k(2, by=by).edges, by
        assert "input->logits" not in s.greedy(2, by=by, prune=False).edges, by
    assert s.ranking("abs").tolist() == [2, 1, 0]
    assert s.threshold(0.0).edges == ("a0.h0->logits", "input->a0.h0<v>")
