"""The two toy circuits of the divergence paper, exactly, and the audit flagging them."""

from __future__ import annotations

import pytest
import torch

import faithlens as fl
from faithlens.tasks import toy_circuits as tc


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pre(model, h):
    return model.run(h, cache=["pre"]).cache["pre"]


def test_hidden_pathway_circuit_values():
    m = tc.hidden_pathway_model()
    s = tc.states(tc.HP_STATES)
    assert torch.allclose(
        pre(m, s),
        torch.tensor([[0.25, -0.5, 0.0], [-0.25, 0.5, 0.0], [-0.5, -0.5, -1.0], [0.0, -0.5, -2.0]]),
    )
    assert m.run(s).logits[:, 0].tolist() == [0.25, 0.5, 0.0, 0.0]  # A A B B
    delta = tc.mean_difference(s[:2], s[2:])
    assert delta.tolist() == [0.5, 0.5, 0.0, -0.5]
    steered = m.run(s[2:], [fl.Add("h", delta)])
    assert steered.logits[:, 0].tolist() == [0.5, 0.25]  # both flip to A ...
    hidden = m.run(s[2:], [fl.Add("h", delta)], cache=["hidden"]).cache["hidden"]
    assert hidden[0].tolist() == [0.0, 0.0, 0.5]  # ... but B1 only through unit 3
    assert hidden[1].tolist() == [0.25, 0.0, 0.0]
    back = m.run(s[:2], [fl.Add("h", delta, coef=-1.0)])
    assert back.logits[:, 0].tolist() == [0.0, 0.0]  # A - delta: both B-like
    # control: B = {B1} only, delta' = mean(A) - B1 lands exactly on the boundary
    d1 = tc.mean_difference(s[:2], s[2:3])
    assert d1.tolist() == [0.5, 0.5, 0.0, 0.0]
    assert pre(m, s[2:3] + d1).tolist() == [[0.0, 0.0, 0.0]]


def test_audit_flags_the_hidden_pathway():
    m = tc.hidden_pathway_model()
    s = tc.states(tc.HP_STATES)
    delta = tc.mean_difference(s[:2], s[2:])
    natural = s.repeat(10, 1)
    res = fl.audit(
        m,
        natural,
        {"mean-diff B->A": [fl.Add("h", delta)]},
        "h",
        base=s[2:].repeat(10, 1),
        units="hidden",
        metrics=["emd", "nn_mse"],
        split_metrics=["emd"],
        n_splits=3,
    )
    assert res.flagged()
    d = res.dormant.iloc[0]
    assert d["n_dormant"] == 1 and list(d["recruited"]) == [2]
    assert d["examples_recruiting"] == pytest.approx(0.5)  # B1 rows, not B2 rows
    assert d["max_activation"][0] == pytest.approx(0.5)
    # reader = the circuit's weight: 3 x 4, so a 3-d row space and a 1-d null space
    assert res.reader_shape == (3, 4)
    spaces = set(res.table["space"])
    assert spaces == {"full", "row", "null"}
    assert res.value("emd")["ratio"] > 2
    # the displacement delta is not in the null space of W: visible downstream
    disp = res.displacement.iloc[0]
    assert 0 < disp["row_fraction"] < 1 and disp["visibility"] > 0.5
    # a control that stays on natural states recruits nothing
    ok = fl.audit(
        m,
        natural,
        [fl.Add("h", torch.zeros(4))],
        "h",
        units="hidden",
        metrics=["emd"],
        split_metrics=["emd"],
        n_splits=2,
    )
    assert not ok.flagged()


def test_auto_units_are_the_reading_layer_pre_activations():
    m = tc.hidden_pathway_model()
    s = tc.states(tc.HP_STATES)
    delta = tc.mean_difference(s[:2], s[2:])
    res = fl.audit(
        m,
        s.repeat(10, 1),
        [fl.Add("h", delta)],
        "h",
        base=s[2:].repeat(10, 1),
        metrics=["emd"],
        split_metrics=["emd"],
        n_splits=2,
    )
    assert res.units_site == "module:layer"
    assert res.flagged() and list(res.dormant.iloc[0]["recruited"]) == [2]


def test_dormant_behaviour_circuit():
    m = tc.dormant_behaviour_model()
    st = tc.DB_STATES
    s = tc.states(st)
    cls = m.run(s).logits.argmax(-1).tolist()
    assert cls == [tc.DB_CLASSES[k] for k in st]
    common_b = tc.states(st, ["B1", "B3"])
    delta = tc.mean_difference(tc.states(st, ["A1", "A2"]), common_b)
    assert delta.tolist() == [0.5, 0.5, 0.0, -0.5, 0.0]
    bs = tc.states(st, ["B1", "B3", "B2"])
    out = m.run(bs, [fl.Add("h", delta)], cache=["hidden"])
    assert torch.allclose(
        out.cache["hidden"],
        torch.tensor([[0.0, 0.0, 0.5, 0.0], [0.25, 0.0, 0.0, 0.0], [0.0, 0.0, 1.5, 1.0]]),
    )
    assert torch.allclose(
        out.logits, torch.tensor([[0.25, 0.0, 0.0], [0.0625, 0.0, 0.0], [1.25, 0.0, 1.5]])
    )
    assert out.logits.argmax(-1).tolist() == [0, 0, 2]  # B2 + delta: the dormant class C
    # The audit against the common states (the data delta was computed from) flags the class-C
    # output unit, which no common natural state activates.
    natural = tc.states(st, ["A1", "A2", "B1", "B3"]).repeat(10, 1)
    res = fl.audit(
        m,
        natural,
        [fl.Add("h", delta)],
        "h",
        base=bs.repeat(10, 1),
        units="out",
        metrics=["emd"],
        split_metrics=["emd"],
        n_splits=2,
    )
    assert res.flagged()
    assert list(res.dormant.iloc[0]["recruited"]) == [2]
    assert res.dormant.iloc[0]["examples_recruiting"] == pytest.approx(1 / 3)
