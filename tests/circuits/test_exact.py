"""Exact edge patching against the plain-PyTorch reference (bare hooks, passes per edge)."""

from __future__ import annotations

import numpy as np
import pytest

import faithlens as fl
from tests.helpers.builders import BUILDERS, SMALL_BUILDERS
from tests.helpers.circuits_reference import reference_exact, reference_exact_at
from tests.helpers.tasks import padded_task

ARCHS = [
    "llama",  # grouped-query attention
    "gpt_neox",  # parallel blocks, interleaved q/k/v
    pytest.param("gpt2", marks=pytest.mark.slow),  # fused q/k/v, sequential MLPs
    pytest.param("faithlens_zoo", marks=pytest.mark.slow),  # bidirectional: no truncation
    pytest.param("faithlens_zoo-attn_only", marks=pytest.mark.slow),
]


def _double(arch):
    hf = SMALL_BUILDERS[arch]().double()
    return hf, fl.wrap(hf)


@pytest.mark.parametrize("arch", ARCHS)
def test_exact_equals_one_patched_reader_per_edge(arch):
    hf, model = _double(arch)
    task = padded_task(model, n=3, seq=6)
    res = fl.circuits.exact(model, task, n_boot=50)
    ref = reference_exact(hf, task, res.edge).numpy()
    assert res.values.shape == (len(fl.circuits.EdgeGraph(model)), 3)
    np.testing.assert_allclose(res.values, ref, atol=1e-5, rtol=0)
    assert np.abs(ref).max() > 1e-3  # the edges do something: the comparison can fail
    np.testing.assert_allclose(res.score, res.values.mean(1))
    assert np.all(res.score_ci_low <= res.score + 1e-12)
    assert np.all(res.score <= res.score_ci_high + 1e-12)
    assert res.method == "exact" and res.level == 0.95 and res.n_boot == 50


def test_chunks_and_progress_do_not_change_the_scores():
    hf, model = _double("faithlens_zoo-attn_only")
    task = padded_task(model, n=4, seq=6)
    whole = fl.circuits.exact(model, task, n_boot=50)
    calls = []
    small = fl.circuits.exact(
        model, task, n_boot=50, max_memory=1, progress=lambda d, t: calls.append((d, t))
    )
    np.testing.assert_allclose(small.values, whole.values, atol=1e-10, rtol=0)
    assert calls and calls[-1][0] == calls[-1][1] and len(calls) == calls[-1][1]


def test_metric_option_and_bad_input():
    _, model = _double("faithlens_zoo-attn_only")
    task = padded_task(model, n=3, seq=6)
    res = fl.circuits.exact(model, task, metric="logit_diff", n_boot=50)
    assert res.metric == "logit_diff"
    with pytest.raises(fl.FaithlensError, match="Task"):
        fl.circuits.exact(model, "not a task")
    with pytest.raises(fl.ArgumentError, match="n_boot"):
        fl.circuits.exact(model, task, n_boot=1)
    with pytest.raises(fl.ArgumentError, match="level"):
        fl.circuits.exact(model, task, level=1.5)


def test_exact_finds_the_induction_circuit_of_zoo_induction():
    """zoo:induction's card: head 0.2 attends to the previous token, heads 1.0-1.3 are
    induction heads. Corrupting the copied span, the top edges are the previous-token head's
    edges into the induction heads' keys (K-composition) and the induction heads' edges into
    the logits, each with a CI below zero."""
    model = fl.load("zoo:induction")
    task = fl.tasks.induction.induction_task(n=32, seed=0)
    scores = fl.circuits.exact(model, task, n_boot=200)
    top = set(scores.top_k(12).edges)
    k_comp = {f"a0.h2->a1.h{h}<k>" for h in range(4)}
    to_logits = {f"a1.h{h}->logits" for h in range(4)}
    assert len(top & k_comp) >= 3 and len(top & to_logits) >= 3
    for e in (top & k_comp) | (top & to_logits):
        assert scores.score_ci_high[scores.edge.index(e)] < 0, e
    kept = fl.circuits.faithfulness(model, task, scores.top_k(12), n_boot=200)
    assert kept.faithfulness_ci_low > 0.2


@pytest.mark.parametrize(
    "arch", ["faithlens_zoo-attn_only", pytest.param("llama", marks=pytest.mark.slow)]
)
def test_per_position_edges_equal_one_patched_position(arch):
    hf = SMALL_BUILDERS[arch]().double()
    model = fl.wrap(hf)
    task = padded_task(model, n=4, seq=6)
    calls = []
    each = fl.circuits.exact(
        model,
        task,
        n_boot=20,
        positions="each",
        max_memory=1,
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls and calls[-1][0] == calls[-1][1] and len(calls) == calls[-1][1]
    names = fl.circuits.EdgeGraph(model).names
    seq = task.seq_len
    assert each.edge[: seq + 1] == [f"{names[0]}@{p}" for p in range(seq)] + [f"{names[1]}@0"]
    assert len(each.edge) == len(names) * seq and each.meta["positions"] == "each"
    assert each.writer[seq] == names[1].split("->")[0]
    values = each.values.reshape(len(names), seq, task.n)
    # brute force: bare hooks, the writer's change at one position only, one pass per value
    some = list(range(0, len(names), 5))
    for p in range(seq):
        ref = reference_exact_at(hf, task, [names[i] for i in some], p).numpy()
        np.testing.assert_allclose(values[some, p], ref, atol=1e-6, rtol=0)
    assert np.abs(values).max() > 1e-2
    # positions after an example's metric position change nothing (causal)
    for j, pos in enumerate(task.positions.tolist()):
        assert np.all(values[:, pos + 1 :, j] == 0)


@pytest.mark.parametrize("arch", ["llama", "gpt_neox"])
def test_a_subset_of_edges_equals_those_rows_of_every_edge(arch):
    """exact(edges=...) runs only the edges named (one into each kind of port, and a whole
    sender block) and gives the same values as scoring every edge; progress counts its passes."""
    _, model = _double(arch)
    task = padded_task(model, n=3, seq=6)
    eg = fl.circuits.EdgeGraph(model)
    full = fl.circuits.exact(model, task, n_boot=50)
    q = [r.name for r in eg.readers if r.port == "q"][-1]
    kv = [r.name for r in eg.readers if r.port in ("k", "v")][-1]
    mlp = next(r.name for r in eg.readers if r.kind == "mlp")
    some = [e.name for r in (q, kv, mlp, "logits") for e in eg.into(r)[1::2]]
    some = list(reversed(some))  # any order in; graph order out
    calls = []
    sub = fl.circuits.exact(  # max_memory=1: one sender or pair per pass, passes count edges
        model,
        task,
        n_boot=50,
        edges=some,
        max_memory=1,
        progress=lambda d, t: calls.append((d, t)),
    )
    rows = sorted(eg.index(e) for e in some)
    assert sub.edge == [eg.names[i] for i in rows] and sub.meta["subset"] == len(some)
    np.testing.assert_allclose(sub.values, full.values[rows], atol=1e-10, rtol=0)
    assert calls[-1][0] == calls[-1][1] == len(calls)
    all_calls = []
    fl.circuits.exact(
        model, task, n_boot=50, max_memory=1, progress=lambda d, t: all_calls.append(t)
    )
    assert calls[-1][1] < all_calls[-1] / 3  # the other edges are not run
    each = fl.circuits.exact(model, task, n_boot=20, edges=some[:3], positions="each")
    whole_each = fl.circuits.exact(model, task, n_boot=20, positions="each")
    at = [whole_each.edge.index(e) for e in each.edge]
    np.testing.assert_allclose(each.values, whole_each.values[at], atol=1e-10, rtol=0)
    assert len(each.edge) == 3 * task.seq_len
    # a circuit works as the subset; the curve refuses partial scores
    top = fl.circuits.exact(model, task, n_boot=20, edges=full.top_k(5))
    assert top.edge == list(full.top_k(5).edges)
    with pytest.raises(fl.InputError, match="cover 5 of"):
        fl.circuits.faithfulness_curve(model, task, top, n_boot=20)


@pytest.mark.parametrize(
    ("edges", "match"),
    [
        ([], "is empty"),
        ("input->logits", "a Circuit or a list of edge names"),
        (["input->logits", "input->logits"], "twice"),
        (["input->logits@0"], "per-position"),
        (["nope->logits"], "not an edge"),
    ],
)
def test_bad_subsets(edges, match):
    model = fl.wrap(BUILDERS["faithlens_zoo-attn_only"]())
    task = padded_task(model, n=3, seq=5)
    with pytest.raises(fl.FaithlensError, match=match):
        fl.circuits.exact(model, task, edges=edges)


def test_positions_option_is_checked():
    model = fl.wrap(BUILDERS["faithlens_zoo-attn_only"]())
    task = padded_task(model, n=3, seq=5)
    with pytest.raises(fl.ArgumentError, match="positions"):
        fl.circuits.exact(model, task, positions="every")
