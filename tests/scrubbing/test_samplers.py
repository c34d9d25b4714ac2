"""Samplers against brute-force enumeration on small discrete domains, sampled-together groups,
the unimportant-input modes, and reproducibility."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

import faithlens as fl
from faithlens import scrubbing as sc
from faithlens.scrubbing.data import Table
from faithlens.scrubbing.samplers import conjoin
from tests.helpers.scrub_toys import Op

VALUES = np.array(
    [0, 0, 1, 1, 1, 2, 3, 3, 3, 3]
)  # a pool of 10 rows, feature classes of size 2/3/1/4


def pool():
    return sc.ScrubData(v=torch.tensor(VALUES), x=torch.arange(10).float()[:, None])


def feat(d):
    return d["v"]


def brute_force(ref, exclude_self=False):
    """P(draw = j | reference = ref): uniform over the rows of ref's class."""
    p = np.array([float(VALUES[j] == VALUES[ref]) for j in range(10)])
    if exclude_self:
        p[ref] = 0
    return p / p.sum()


def draws(sampler, ref, n=20000, seed=0):
    t = Table(pool())
    rng = np.random.default_rng(seed)
    return sampler.draw(t, np.full(n, ref), rng.random(n), rng, "test").idx


@pytest.mark.parametrize("exclude_self", [False, True])
def test_same_feature_matches_brute_force(exclude_self):
    s = sc.SameFeature(feat, exclude_self=exclude_self)
    t = Table(pool())
    probs = np.full(10, 0.1)
    mat = s.transition(t, probs, "test")
    for ref in range(10):
        if exclude_self and (VALUES[ref] == VALUES).sum() == 1:
            continue
        assert np.allclose(mat[ref], brute_force(ref, exclude_self))
        got = np.bincount(draws(s, ref), minlength=10)
        want = brute_force(ref, exclude_self)
        assert got[want == 0].sum() == 0
        if (want > 0).sum() > 1:
            assert chisquare(got[want > 0], want[want > 0] * got.sum()).pvalue > 1e-3


def test_exact_and_random():
    t = Table(pool())
    assert np.array_equal(sc.Exact().transition(t, np.full(10, 0.1), ""), np.eye(10))
    got = np.bincount(draws(sc.Random(), 4), minlength=10)
    assert chisquare(got).pvalue > 1e-3
    assert np.all(draws(sc.Exact(), 7) == 7)


def test_kernel_sampling_follows_the_kernel():
    s = sc.Kernel(lambda d: d["x"][:, 0], bandwidth=1.5)
    t = Table(pool())
    w = np.exp(-0.5 * ((np.arange(10) - 4.0) / 1.5) ** 2)
    assert np.allclose(s.transition(t, np.full(10, 0.1), "")[4], w / w.sum())
    got = np.bincount(draws(s, 4), minlength=10)
    assert chisquare(got, w / w.sum() * got.sum()).pvalue > 1e-3
    box = sc.Kernel(lambda d: d["x"][:, 0], bandwidth=1.0, kernel="box", exclude_self=True)
    assert set(np.unique(draws(box, 4))) == {3, 5}
    with pytest.raises(fl.InputError, match="bandwidth"):
        sc.Kernel(feat, bandwidth=0)


def test_generate_builds_matching_rows_and_checks_them():
    def make(parents, rng):
        return sc.ScrubData(v=parents["v"].clone(), x=torch.full((len(parents), 1), 99.0))

    s = sc.Generate(make, (feat,), name="copy")
    t = Table(pool())
    ref = np.arange(10)
    idx = s.draw(t, ref, np.zeros(10), np.random.default_rng(0), "g").idx
    assert list(idx) == list(range(10, 20)) and not t.source[10:].any()
    assert torch.equal(t.data["v"][10:], t.data["v"][:10])

    def wrong(parents, rng):
        return sc.ScrubData(v=parents["v"] + 1, x=parents["x"])

    with pytest.raises(fl.InputError, match="do not match their references"):
        sc.Generate(wrong, (feat,)).draw(
            Table(pool()), ref, np.zeros(10), np.random.default_rng(0), "g"
        )


def test_conjoin_rules():
    f, g = feat, (lambda d: d["x"][:, 0] > 4)
    assert isinstance(conjoin([sc.Exact(), sc.SameFeature(f)]), sc.Exact)
    assert isinstance(conjoin([sc.Random(), sc.Random()]), sc.Random)
    both = conjoin([sc.SameFeature(f), sc.Random(), sc.SameFeature(g)])
    assert isinstance(both, sc.SameFeature) and both.features() == (f, g)
    with pytest.raises(fl.InputError, match="not uniquely defined"):
        conjoin([sc.Kernel(g, 1.0), sc.SameFeature(f)])


# --- groups, modes and reproducibility, through the engine ----------------------------------


class Sum3(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.A = Op(lambda x: x)
        self.B = Op(lambda x: 2 * x)
        self.C = Op(lambda x: 3 * x)
        self.out = Op(lambda a, b, c: a + b + c)

    def forward(self, x):
        return self.out(self.A(x), self.B(x), self.C(x))


def _prep(h, n=200, seed=0):
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 20, (300, 1), generator=g).float()
    data = sc.ScrubData(x=x, y=6 * x, v=(x[:, 0] % 5).long())
    return sc.prepare(fl.wrap(Sum3()), h, data, n=n, behaviour=sc.MSE("y"), baselines=(), seed=seed)


def test_sampled_together_groups_share_draws():
    parity = lambda d: d["v"] % 2  # noqa: E731
    apart = sc.Hypothesis("apart")
    apart.add("a", sc.to("A"), feature=parity)
    apart.add("b", sc.to("B"), feature=parity)
    together = sc.Hypothesis("together")
    together.add("a", sc.to("A"), feature=parity, group="g")
    together.add("b", sc.to("B"), feature=parity, group="g")
    pa, pt = _prep(apart), _prep(together)
    va = pa.sampled.vectors
    vt = pt.sampled.vectors
    assert not np.array_equal(va[("root/a",)], va[("root/b",)])
    assert np.array_equal(vt[("root/a",)], vt[("root/b",)])
    assert len(pt.data) == len(pa.data) - 1


def test_unimportant_input_modes():
    def hyp(mode, **kw):
        h = sc.Hypothesis(mode, unimportant=mode, **kw)
        h.add("a", sc.to("A"), sampler="exact")
        return h

    # per node: B and C share the root's random datum; per input: one each; global: one
    per_node, per_input, glob = (_prep(hyp(m)) for m in ("per_node", "per_input", "global"))
    unimp = lambda p: [lab for lab in p.data.labels if "unimportant" in lab[0]]  # noqa: E731
    assert len(unimp(per_node)) == 1 and len(unimp(per_input)) == 2 and len(unimp(glob)) == 1
    node = sc.Hypothesis(
        "per input, B and C merged by other_group", unimportant="per_input", other_group="all"
    )
    node.add("a", sc.to("A"), sampler="exact")
    assert len(unimp(_prep(node))) == 1


def test_reproducible_and_seeded():
    h = sc.Hypothesis("h")
    h.add("a", sc.to("A"), feature=lambda d: d["v"])
    a, b, c = _prep(h, seed=3), _prep(h, seed=3), _prep(h, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a.data.vectors, b.data.vectors))
    assert not np.array_equal(a.data.vectors[1], c.data.vectors[1])
    ra = sc.scrub(
        fl.wrap(Sum3()),
        sc.ScrubData(
            x=torch.arange(30.0)[:, None], y=torch.arange(30.0)[:, None] * 6, v=torch.arange(30) % 5
        ),
        h,
        n=50,
        behaviour=sc.MSE("y"),
        seed=1,
        n_boot=100,
    )
    rb = sc.scrub(
        fl.wrap(Sum3()),
        sc.ScrubData(
            x=torch.arange(30.0)[:, None], y=torch.arange(30.0)[:, None] * 6, v=torch.arange(30) % 5
        ),
        h,
        n=50,
        behaviour=sc.MSE("y"),
        seed=1,
        n_boot=100,
    )
    assert np.array_equal(ra.scrubbed, rb.scrubbed) and ra.table.equals(rb.table)


def test_class_size_diagnostics_and_tiny_class_warning():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 1000, (300, 1), generator=g).float()
    data = sc.ScrubData(x=x, y=6 * x, uid=torch.arange(300))
    h = sc.Hypothesis("injective")
    h.add("a", sc.to("A"), feature=lambda d: d["uid"])
    r = sc.scrub(fl.wrap(Sum3()), data, h, n=100, behaviour=sc.MSE("y"), n_boot=100)
    row = r.nodes.set_index("node").loc["a"]
    assert row["mean_class_size"] == 1 and row["self_share"] == 1.0
    assert any(w.startswith("TINY CLASSES") and "'a'" in w for w in r.warnings)
