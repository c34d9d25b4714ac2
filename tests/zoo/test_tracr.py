"""tracr's compiled programs as zoo models: parity with tracr, the true circuit, no jax needed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import faithlens as fl
from faithlens.errors import InputError
from faithlens.zoo import tracr as T

PROGRAMS = T.shipped()


def test_every_program_is_shipped():
    assert list(T.TRACR_PROGRAMS) == PROGRAMS


@pytest.fixture(scope="module", params=PROGRAMS)
def program(request):
    return request.param


@pytest.fixture(scope="module")
def model(program):
    return fl.load(f"zoo:{T.zoo_name(program)}")


def test_layout(program, model):
    cfg = model.module.config
    data = T.info(program)
    assert not cfg.norm and cfg.act == "relu" and not cfg.causal
    assert cfg.d_model == len(data["residual_labels"])
    assert isinstance(model.module.ln_final, torch.nn.Identity)
    assert cfg.d_vocab == len(data["input_tokens"])
    assert cfg.n_ctx == data["max_seq_len"] + 1
    assert cfg.d_out == (len(data["output_labels"]) if data["categorical"] else 2)


def test_parity_with_tracr(program, model):
    """The exported model's outputs equal tracr's on every shipped input (raw outputs within
    1e-4, decoded outputs exactly); the inputs cover every length."""
    data = T.info(program)
    lengths = {len(s) for s in data["parity"]["inputs"]}
    assert lengths == set(range(1, data["max_seq_len"] + 1))
    assert T.check_parity(model.module, data) <= 1e-4


def test_parity_checks_bite(program, model):
    data = T.info(program)
    bad = {**data, "parity": {**data["parity"]}}
    outs = [np.asarray(o) for o in data["parity"]["outputs"]]
    outs[0] = (outs[0] + 0.5).tolist()
    bad["parity"]["outputs"] = [outs[0], *data["parity"]["outputs"][1:]]
    with pytest.raises(InputError, match="disagrees with tracr"):
        T.check_parity(model.module, bad)


def test_tokenizer_round_trip(program, model):
    data = T.info(program)
    seq = data["parity"]["inputs"][-1]
    ids = model.tokenize(" ".join(str(t) for t in seq)).ids
    assert ids[0].tolist() == T.encode(data, seq)


def test_true_circuit_is_consistent(program, model):
    """The shipped circuit is what the shipped weights and labels give; its edges exist in the
    edge graph, it reaches the logits, and each edge carries a varying label."""
    data = T.info(program)
    derived = T.derive_circuit(
        model.module, data["residual_labels"], data["varying_labels"], data["fixed_selectors"]
    )
    assert derived == data["circuit"]
    circuit = T.tracr_circuit(program)
    names = set(fl.circuits.EdgeGraph(model).names)
    assert set(circuit.edges) <= names and len(circuit) < len(names)
    assert any(e.endswith("->logits") for e in circuit.edges)
    assert any(e.startswith("input->") for e in circuit.edges)
    varying = set(data["varying_labels"])
    for edge, labels in circuit.carried.items():
        assert labels and set(labels) <= varying, edge
    assert "one" not in varying and not any(lab.startswith("indices:") for lab in varying)


def test_exact_patching_confirms_the_circuit(program, model):
    """On the compiled model, every edge outside the true circuit has exact-patching effect 0
    on every example, and every edge into the logits inside it moves the metric."""
    task = T.tracr_task(program, n=16)
    scores = fl.circuits.exact(model, task, n_boot=50)
    circuit = T.tracr_circuit(program)
    inside = np.isin(scores.edge, list(circuit.edges))
    assert np.abs(scores.values[~inside]).max() <= 1e-5
    last = [i for i, e in enumerate(scores.edge) if e in circuit and e.endswith("->logits")]
    assert np.abs(scores.values[last]).sum(0).min() > 0.1


def test_task(program, model):
    task = T.tracr_task(program)
    data = T.info(program)
    assert task.n == len(data["task"]["clean"]) >= 32
    assert task.seq_len == data["max_seq_len"] + 1
    task.check_model(model)
    out = model.run(task.clean, logits_at=task.positions)
    m = task.metric(out.logits[:, 0], task.answers)
    if data["categorical"]:
        assert bool((m > 0.5).all())  # the clean answer wins at the metric position


def test_unknown_program():
    with pytest.raises(InputError, match="no tracr model named 'tracr_nope'"):
        fl.load("zoo:tracr_nope")


def test_a_query_that_cannot_change_the_attention_is_not_in_the_circuit():
    """make_count's selector (``k == "a"``) ignores its queries: tracr's query matrix reads the
    tokens, but every token gives the same row of ``W_Q^T W_K``, so the query edge carries
    nothing (exact patching: 0 on every example) and is left out; the key edge is kept. hist's
    ``k == q`` reads both."""
    model = fl.load("zoo:tracr_count")
    data = T.info("count")
    labels, varying = data["residual_labels"], data["varying_labels"]
    tokens = {"tokens:a", "tokens:b", "tokens:c"}
    read = [lab for lab in varying if lab in tokens]  # what the head's ports read
    assert T.inert_labels(model.module, "a0.h0<q>", labels, read) == tokens
    assert T.inert_labels(model.module, "a0.h0<k>", labels, read) == set()
    circuit = T.tracr_circuit("count")
    assert "input->a0.h0<q>" not in circuit and "input->a0.h0<k>" in circuit
    task = T.tracr_task("count", n=16)
    scores = fl.circuits.exact(model, task, n_boot=20)
    q = scores.edge.index("input->a0.h0<q>")
    assert np.abs(scores.values[q]).max() <= 1e-6
    k = scores.edge.index("input->a0.h0<k>")
    assert np.abs(scores.score[k]) > 0.1
    hist = fl.load("zoo:tracr_hist")
    h = T.info("hist")
    read = [lab for lab in h["varying_labels"] if lab.startswith("tokens:")]
    for port in ("a0.h0<q>", "a0.h0<k>"):
        assert not T.inert_labels(hist.module, port, h["residual_labels"], read)
