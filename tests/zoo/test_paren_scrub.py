"""The paren-balance replication (examples/paren_scrub.py) at a small size: Redwood's pattern
on zoo:paren, and the hypotheses' structure."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

import faithlens as fl
from faithlens import scrubbing as sc
from faithlens.scrubbing import paren as hz
from faithlens.tasks import paren as par

ROOT = Path(__file__).resolve().parents[2]


def _example(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def paren_model():
    return fl.load("zoo:paren")


@pytest.fixture(scope="module")
def replication(tmp_path_factory):
    out = tmp_path_factory.mktemp("paren") / "rep"
    rep = _example("paren_scrub").main(["--n", "400", "--pool", "1200", "--out", str(out)])
    return rep, out


@pytest.mark.slow
def test_paren_replication_shows_redwoods_pattern(replication):
    rep, out = replication
    t = rep.table.set_index("hypothesis")
    assert list(t.index) == list(hz.PAREN_HYPOTHESES)
    # every estimate carries its interval
    assert (t.recovered_low < t.recovered).all() and (t.recovered < t.recovered_high).all()
    # claim 1 explains most of the loss, far from the random baseline
    assert t.loc["claim 1", "recovered_low"] > 55
    comp = rep.comparisons.set_index(["better", "worse"])
    # head 2.0 carries count evidence: leaving it out costs loss
    assert comp.loc[("claim 1", "claim 1 (heads 1.0, 1.1)"), "low"] > 0
    # each added claim lowers the score (paired differences, CI above zero)
    for pair in [
        ("claim 1", "claims 1+2"),
        ("claim 1", "claims 1+3"),
        ("claims 1+2", "claims 1+2+3"),
        ("claims 1+3", "claims 1+2+3"),
    ]:
        assert comp.loc[pair, "low"] > 0, pair
    assert "claims 1+2+3" in rep.summary()

    # paren strings vary in length: the position-specific claims mix lengths as Redwood's do,
    # and say so (Hypothesis(mixed_lengths=...)): no warning, the mixing kept in the stats
    def flagged(name):
        return any(w.startswith("VARIABLE LENGTHS") for w in rep.warnings.get(name, []))

    assert not any(flagged(name) for name in rep.warnings)
    back = fl.Result.load(out)
    assert back.table.equals(rep.table)
    assert isinstance(fl.Result.load(out / "scrub0"), sc.ScrubResult)


def test_paren_hypotheses_structure(paren_model):
    data = par.ParenData.sample(64, seed=1)
    v = hz.open_direction(paren_model, data)
    assert v.shape == (paren_model.d_model,)
    hyps = hz.paren_hypotheses(v, n_ctx=data.n_ctx)
    assert list(hyps) == list(hz.PAREN_HYPOTHESES)
    text = hyps["claims 1+2+3"].describe()
    assert "horizon input at 41" in text and "2.0 p_1" in text
    assert "phi" in " ".join(rw.describe() for rw in hyps["claims 1+2"].rewrites)
    sd = hz.paren_scrub_data(paren_model, data)
    # the adjusted classes come from head 0.0's real attention and differ from the raw ones
    assert sd["horizon_adjusted"].shape == sd["horizon_raw"].shape == data.ids.shape
    assert not torch.equal(sd["horizon_adjusted"], sd["horizon_raw"])
    # the identity parts agree with the task's own features
    assert torch.equal(sd["count_and_open"] // 2, data.count_test.long())
    # the phi rewrite is extensionally equal (checked by scrub before it runs)
    r = sc.scrub(
        paren_model,
        sd,
        hyps["claims 1+2"],
        n=32,
        behaviour=sc.BinaryCrossEntropy("label", positions_column="pos0"),
        n_boot=100,
    )
    assert r.n == 32 and "phi" in " ".join(r.stats["rewrites"])


def test_claim_2_needs_the_open_direction():
    with pytest.raises(fl.errors.InputError, match="open direction"):
        hz.paren_hypothesis("x", claim2=True)
    with pytest.raises(fl.errors.InputError, match="unknown paren hypotheses"):
        hz.replicate_paren(None, names=["claim 9"])  # type: ignore[arg-type]


def test_paren_roles_validate_and_build_other_assignments(paren_model):
    r = hz.ParenRoles()
    assert r.heads == ("head.1.0", "head.1.1", "head.2.0", "head.2.1")
    with pytest.raises(fl.errors.InputError, match=r"'head\.L\.H'"):
        hz.ParenRoles(horizon="2.1")
    with pytest.raises(fl.errors.InputError, match="later layer than the proportion head"):
        hz.ParenRoles(proportion="head.1.0", count=("head.1.1", "head.2.0"))
    with pytest.raises(fl.errors.InputError, match="distinct"):
        hz.ParenRoles(count=("head.1.0", "head.2.1"))
    with pytest.raises(fl.errors.InputError, match="subset of the count heads"):
        hz.ParenRoles(role_count=("head.2.1",))
    with pytest.raises(fl.errors.InputError, match="not a head of"):
        hz.ParenRoles(count=("head.1.0", "head.3.0"), role_count=("head.1.0",)).check(paren_model)
    with pytest.raises(fl.errors.InputError, match=r"subset of roles\.count"):
        hz.paren_hypothesis("x", count_heads=["head.2.1"])
    # another assignment: proportion head 0.1, count heads 1.1 and 2.1, horizon head 1.0
    other = hz.ParenRoles(
        proportion="head.0.1",
        count=("head.1.1", "head.2.1"),
        horizon="head.1.0",
        role_count=("head.2.1",),
    )
    v = torch.zeros(paren_model.d_model)
    hyps = hz.paren_hypotheses(v, roles=other)
    text = hyps["claims 1+2+3"].describe()
    assert "count 2.1" in text and "horizon 1.0" in text and "count 2.0" not in text
    assert "head.0.1" in " ".join(rw.describe() for rw in hyps["claims 1+2"].rewrites)
    assert "count 1.1" not in hyps["claim 1 (heads 1.0, 1.1)"].describe()
    # a role head's node claims only the paths that avoid the other role heads: the horizon head
    # 1.0 must not take the paths through count head 2.1
    assert other.routes("head.1.0").describe() == (
        "to('head.1.0', excluding=['head.1.1', 'head.2.1'])"
    )
