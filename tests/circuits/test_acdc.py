"""ACDC against a brute-force reference: the same greedy pruning written as a plain loop that
removes one edge at a time and measures each circuit from scratch with
``faithlens.circuits.faithfulness.measure`` (every edge outside the circuit corrupted; itself
checked against bare forward hooks in test_faithfulness.py), no batching, no resumed runs and no
shortcut for components whose output nothing reads."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch

import faithlens as fl
from faithlens.circuits import EdgeGraph, EdgeScores
from faithlens.circuits.faithfulness import measure
from faithlens.tasks.metrics import Metric
from tests.helpers.builders import BUILDERS, SMALL_BUILDERS
from tests.helpers.tasks import padded_task


@dataclass(frozen=True)
class _KL(Metric):
    """KL(clean || run) at the metric position; ``answers[:, 0]`` is the example's index into
    ``clean`` (the clean log-probabilities)."""

    clean: torch.Tensor = None  # type: ignore[assignment]
    name: str = "kl"

    def compute(self, logits, answers):
        ref = self.clean[answers[:, 0]]
        logp = torch.log_softmax(logits.double(), -1)
        return (ref.exp() * (ref - logp)).sum(-1)


def reference_acdc(model, task, tau, objective):
    """(per-example values [n_edges, n], kept edge names) of greedy pruning, plain loop."""
    eg = EdgeGraph(model)
    if objective == "kl":
        out = model.run(task.clean, logits_at=task.positions)
        logp = torch.log_softmax(out.logits[:, 0].double(), -1)
        idx = torch.arange(task.n)[:, None].repeat(1, 2)
        task = replace(task, answers=idx).with_metric(_KL(clean=logp))
    keep = set(eg.names)
    current = measure(eg, task, keep)[0]
    values = np.zeros((len(eg), task.n))
    margins = []
    for r in reversed(eg.readers):
        for e in reversed(eg.into(r)):
            trial = measure(eg, task, keep - {e.name})[0]
            change = trial - current
            values[eg.index(e.name)] = change
            cost = change.mean() if objective == "kl" else -change.mean()
            margins.append(abs(cost - tau))
            if cost < tau:
                keep.discard(e.name)
                current = trial
    return values, keep, min(margins)


def reference_acdc_each(model, task, tau, objective):
    """Per-position pruning, the same plain loop over (port, edge, position): the last
    position of an edge first, each circuit measured from scratch with per-position names."""
    eg = EdgeGraph(model)
    seq = task.seq_len
    if objective == "kl":
        out = model.run(task.clean, logits_at=task.positions)
        logp = torch.log_softmax(out.logits[:, 0].double(), -1)
        idx = torch.arange(task.n)[:, None].repeat(1, 2)
        task = replace(task, answers=idx).with_metric(_KL(clean=logp))
    keep = {f"{e}@{p}" for e in eg.names for p in range(seq)}
    current = measure(eg, task, keep)[0]
    values = np.zeros((len(eg), seq, task.n))
    margins = []
    for r in reversed(eg.readers):
        for e in reversed(eg.into(r)):
            for p in reversed(range(seq)):
                unit = f"{e.name}@{p}"
                trial = measure(eg, task, keep - {unit})[0]
                change = trial - current
                values[eg.index(e.name), p] = change
                cost = change.mean() if objective == "kl" else -change.mean()
                if abs(change).max() > 0:  # exact zeros (unread positions) decide nothing
                    margins.append(abs(cost - tau))
                if cost < tau:
                    keep.discard(unit)
                    current = trial
    return values.reshape(len(eg) * seq, task.n), keep, min(margins)


CASES = [
    ("faithlens_zoo-attn_only", "kl", 0.005),
    ("gpt_neox", "metric", 0.003),
    ("llama", "kl", 2e-5),
]


@pytest.mark.parametrize("arch", ["faithlens_zoo-attn_only", "gpt_neox", "llama"])
def test_batched_circuits_equal_the_plain_measurement(arch):
    """``run_rows`` (the batched, resumed runs ACDC measures with) against ``measure`` for
    each circuit alone: random circuits at every start layer, per position too, and circuits
    with no removed edge into layer ``start + 1`` (that layer then reads no removed edge,
    only a stream its earlier heads changed, yet edges out of its heads are removed)."""
    from faithlens.circuits.acdc import _prepare_chunk, run_rows
    from faithlens.circuits.common import chunks

    model = fl.wrap(SMALL_BUILDERS[arch]().double())
    task = padded_task(model, n=3, seq=6)
    eg = EdgeGraph(model)
    gen = torch.Generator().manual_seed(0)
    layer = {r.name: eg.n_layers if r.layer is None else r.layer for r in eg.readers}
    edge_layer = torch.tensor([layer[e.reader.name] for e in eg.edges])
    parts = chunks(model, task, None)[0]
    assert len(parts) == 2  # examples grouped by metric position: both kinds of chunk
    for (_, sub), start in [(part, s) for part in parts for s in range(eg.n_layers + 1)]:
        ch = _prepare_chunk(eg, sub)
        later = edge_layer >= start
        removed = (torch.rand(4, len(eg), generator=gen) < 0.5) & later
        removed[0] = False  # the clean run
        removed[1] &= edge_layer != start + 1  # none into layer start + 1, whose heads
        # read only a stream changed by layer start's, while their own edges out are removed
        each = torch.rand(2, len(eg), sub.seq_len, generator=gen) < 0.5
        each &= later[None, :, None]
        for batch in (removed, removed[1:2], each):  # row 1 alone too: no row reads layer
            # start + 1 through a removed edge
            m, _ = run_rows(eg, ch, start, batch, row_cap=10_000)
            for i in range(batch.shape[0]):
                if batch.dim() == 2:
                    keep = {e for e, out in zip(eg.names, batch[i].tolist()) if not out}
                else:
                    keep = {
                        f"{e}@{p}"
                        for j, e in enumerate(eg.names)
                        for p in range(sub.seq_len)
                        if not bool(batch[i, j, p])
                    }
                want = measure(eg, sub, keep)[0]
                np.testing.assert_allclose(m[i].numpy(), want, atol=1e-9, rtol=0)


@pytest.mark.parametrize(("arch", "objective", "tau"), CASES)
def test_acdc_equals_a_plain_greedy_loop(arch, objective, tau):
    model = fl.wrap(SMALL_BUILDERS[arch]().double())
    task = padded_task(model, n=3, seq=6)
    res = fl.circuits.acdc(model, task, tau=tau, objective=objective, n_boot=50)
    values, keep, margin = reference_acdc(model, task, tau, objective)
    assert margin > 1e-7  # no decision on a knife edge: the comparison is meaningful
    assert 0 < len(keep) < len(res.edge)  # something kept and something pruned
    assert set(res.kept().edges) == keep
    np.testing.assert_allclose(res.values, values, atol=1e-7, rtol=0)
    assert isinstance(res, EdgeScores) and res.method == "acdc"
    assert res.meta["objective"] == objective and res.meta["tau"] == tau


@pytest.mark.parametrize(
    ("arch", "objective", "tau"),
    [
        ("faithlens_zoo-attn_only", "kl", 0.002),
        pytest.param("llama", "metric", 1e-4, marks=pytest.mark.slow),
    ],
)
def test_per_position_acdc_equals_a_plain_greedy_loop(arch, objective, tau):
    """Per-position ACDC against the plain loop, on examples whose metric positions all come
    before the last token (the unread last positions are removed without a run, value 0)."""
    model = fl.wrap(SMALL_BUILDERS[arch]().double())
    task = padded_task(model, n=4, seq=5).subset(torch.tensor([1, 3]))  # lengths 3 and 2
    calls = []
    res = fl.circuits.acdc(
        model,
        task,
        tau=tau,
        objective=objective,
        n_boot=50,
        positions="each",
        progress=lambda d, t: calls.append((d, t)),
    )
    values, keep, margin = reference_acdc_each(model, task, tau, objective)
    assert margin > 1e-7
    n_edges = len(EdgeGraph(model))
    assert len(res.edge) == n_edges * task.seq_len and res.meta["positions"] == "each"
    assert res.edge[:2] == [f"{res.writer[0]}->{res.reader[0]}@{p}" for p in (0, 1)]
    assert 0 < len(keep) < len(res.edge)
    assert set(res.kept().edges) == keep and all("@" in e for e in keep)
    np.testing.assert_allclose(res.values, values, atol=1e-7, rtol=0)
    assert np.all(values.reshape(n_edges, task.seq_len, -1)[:, 3:] == 0)  # never read
    assert calls[-1] == (len(res.edge), len(res.edge))


def test_acdc_recovers_zoo_induction_circuit_and_round_trips(tmp_path):
    """zoo:induction's card: head 0.2 attends to the previous token, heads 1.0-1.3 are
    induction heads. ACDC keeps the previous-token head's input, its edges into the induction
    heads' keys, and induction heads' value inputs and outputs, and nothing else."""
    model = fl.load("zoo:induction")
    task = fl.tasks.induction.induction_task(n=16, seed=0)
    calls = []
    res = fl.circuits.acdc(
        model, task, tau=0.02, n_boot=100, progress=lambda d, t: calls.append((d, t))
    )
    assert calls[-1] == (81, 81)
    kept = res.kept()
    assert "input->a0.h2<v>" in kept
    assert sum(f"a0.h2->a1.h{h}<k>" in kept for h in range(4)) >= 2
    assert sum(f"a1.h{h}->logits" in kept for h in range(4)) >= 2
    allowed = {"input->a0.h2<v>"} | {
        f"{w}->{r}"
        for h in range(4)
        for w, r in (
            ("a0.h2", f"a1.h{h}<k>"),
            ("input", f"a1.h{h}<v>"),
            ("input", f"a1.h{h}<q>"),
            (f"a1.h{h}", "logits"),
        )
    }
    assert set(kept.edges) <= allowed
    faith = fl.circuits.faithfulness(model, task, kept, n_boot=200)
    assert faith.faithfulness_ci_low > 0.5
    back = EdgeScores.load(res.save(tmp_path / "acdc"))
    assert back.kept() == kept and "kept" in back.summary()


def test_bad_input_and_other_scores_keep_nothing():
    model = fl.wrap(BUILDERS["faithlens_zoo-attn_only"]().double())
    task = padded_task(model, n=3, seq=6)
    with pytest.raises(fl.ArgumentError, match="tau"):
        fl.circuits.acdc(model, task, tau=float("nan"))
    with pytest.raises(fl.ArgumentError, match="objective"):
        fl.circuits.acdc(model, task, objective="l2")
    with pytest.raises(fl.FaithlensError, match="top_k"):
        fl.circuits.exact(model, task, n_boot=50).kept()


def reference_acdc_nodes(model, task, tau, objective):
    """(per-example values [n_nodes, n], kept nodes, smallest margin) of greedy node pruning:
    a plain loop, each set of removed nodes measured by one run with their outputs (``head.L.H``,
    ``mlp_out.L``) patched from the corrupted run."""
    eg = EdgeGraph(model)
    nodes = [w for w in eg.writers if w.kind != "input"]
    sites = [w.site for w in nodes]
    corrupt = model.run(task.corrupt, cache=sites)
    clean = model.run(task.clean, logits_at=task.positions)
    logp_clean = torch.log_softmax(clean.logits[:, 0].double(), -1)

    def objective_of(removed):
        ivs = [fl.Patch(w.site, source=corrupt.cache[w.site]) for w in nodes if w.name in removed]
        out = model.run(task.clean, ivs, logits_at=task.positions)
        logits = out.logits[:, 0]
        if objective == "kl":
            logp = torch.log_softmax(logits.double(), -1)
            return (logp_clean.exp() * (logp_clean - logp)).sum(-1).numpy()
        return task.metric(logits, task.answers).double().numpy()

    removed: set[str] = set()
    current = objective_of(removed)
    values = np.zeros((len(nodes), task.n))
    margins = []
    for i in reversed(range(len(nodes))):
        u = nodes[i].name
        trial = objective_of(removed | {u})
        change = trial - current
        values[i] = change
        cost = change.mean() if objective == "kl" else -change.mean()
        margins.append(abs(cost - tau))
        if cost < tau:
            removed.add(u)
            current = trial
    return values, {w.name for w in nodes} - removed, min(margins)


NODE_CASES = [
    ("faithlens_zoo-attn_only", "kl", 0.004),
    ("gpt_neox", "metric", 0.002),  # parallel blocks, MLPs
    pytest.param("llama", "kl", 3e-5, marks=pytest.mark.slow),  # grouped-query attention
]


@pytest.mark.parametrize(("arch", "objective", "tau"), NODE_CASES)
def test_acdc_nodes_equals_a_plain_greedy_loop_over_patched_nodes(arch, objective, tau):
    model = fl.wrap(BUILDERS[arch]().double())
    task = padded_task(model, n=3, seq=6)
    res = fl.circuits.acdc_nodes(model, task, tau=tau, objective=objective, n_boot=50)
    values, keep, margin = reference_acdc_nodes(model, task, tau, objective)
    assert margin > 1e-7  # no decision on a knife edge
    assert 0 < len(keep) < len(res.node)
    assert set(res.meta["kept"]) == keep and res.method == "acdc"
    np.testing.assert_allclose(res.values, values, atol=1e-7, rtol=0)
    assert "nodes kept" in res.summary()
    # one example per pass (speculative rows re-measured) changes nothing
    small = fl.circuits.acdc_nodes(
        model, task, tau=tau, objective=objective, n_boot=50, max_memory=1
    )
    np.testing.assert_allclose(small.values, res.values, atol=1e-9, rtol=0)
