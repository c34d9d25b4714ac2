"""The appendix of the causal scrubbing write-up (seed 001), with analytically known outcomes:

- section 3: zero and mean ablation make a backed-up module look unimportant; resampling does not;
- section 5: Lemma 1, Theorem 2 and Fun Fact 3, by exact enumeration on a small domain;
- section 6: superposition explained by a monosemantic rewrite + error term (~100 %);
- section 6.1: splitting the error term and sampling the halves separately beats the model;
- section 7: the EASY/HARD hash game: a false hypothesis beats the model and is flagged;
- section 8: adversarial validation finds the refinements that expose sections 6.1 and 7.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from scipy.stats import chisquare

import faithlens as fl
from faithlens import scrubbing as sc
from faithlens.graph import LayerGraph
from faithlens.scrubbing.enumeration import entropy, exact_scrub
from tests.helpers.scrub_toys import Op, hash_game, hyp_answer, reward_loss

# ---------------------------------------------------------------------------------------------
# Section 3: zero / mean ablation vs resampling ablation
# ---------------------------------------------------------------------------------------------


class Gate(torch.nn.Module):
    """The head: out = a*M1 + u*M2 + v*(1 - |M2|)*M3 + c, with learned a, u, v, c. It can use
    M3 exactly when M2 is silent (zero), as dropout training teaches it to."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(4))

    def forward(self, m1, m2, m3):
        a, u, v, c = self.w
        return a * m1 + u * m2 + v * (1 - m2.abs()) * m3 + c


class Backup(torch.nn.Module):
    """y = b + z/2. M1 reads z, M2 reads the bit b exactly, M3 a noisy copy of b. Trained with
    M2 dropped out (zeroed) half of the time, the model learns to fall back on M3."""

    def __init__(self):
        super().__init__()
        self.M1 = Op(lambda x: x[:, 2:3])
        self.M2 = Op(lambda x: x[:, 0:1])
        self.M3 = Op(lambda x: x[:, 0:1] + 0.3 * x[:, 1:2])
        self.head = Gate()
        self.drop_m2 = 0.0

    def forward(self, x):
        m2 = self.M2(x)
        if self.training and self.drop_m2:
            m2 = m2 * (torch.rand(x.shape[0], 1) >= self.drop_m2).float()
        return self.head(self.M1(x), m2, self.M3(x))


def _bits(n, g):
    b = torch.randint(0, 2, (n, 1), generator=g).float() * 2 - 1
    x = torch.cat([b, torch.randn(n, 1, generator=g), torch.randn(n, 1, generator=g)], -1)
    return x, b + 0.5 * x[:, 2:3]


def test_appendix3_mean_and_zero_ablation_hide_a_backed_up_module():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    net = Backup()
    net.drop_m2 = 0.5
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    net.train()
    for _ in range(300):
        x, y = _bits(256, g)
        loss = ((net(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    model = fl.wrap(net)
    x, y = _bits(2000, g)
    data = sc.ScrubData(x=x, y=y)

    def mse(ivs=()):
        out = model.run((x,), list(ivs)).logits
        return float(((out - y) ** 2).mean())

    orig = mse()
    zero = mse([fl.Zero("module:M2")])
    mean = mse([fl.Mean.fit(model, "module:M2", (x,))])
    h = sc.Hypothesis("M2 does not matter", other="exact")  # everything else sees the reference
    h.add("M2", sc.to("M2"), sampler="random")
    scrub = sc.scrub(model, data, h, behaviour=sc.MSE("y"), n_boot=200)
    assert scrub.original_expectation == pytest.approx(orig, rel=1e-5)
    assert orig < 0.05
    # zero / mean ablation: M3 takes over, M2 looks unimportant
    assert zero - orig < 0.2 and mean - orig < 0.2
    # resampling ablation: a random bit in M2 is trusted, so the loss explodes (~ E(b - b')^2 = 2)
    assert scrub.expectation > 1.0
    assert scrub.expectation > 5 * max(zero, mean)


# ---------------------------------------------------------------------------------------------
# Section 5: Lemma 1, Theorem 2, Fun Fact 3 by exact enumeration
# ---------------------------------------------------------------------------------------------

DOMAIN = [(a, b) for a in range(4) for b in range(4)]
fA = lambda x: int(x[0] > 1)  # noqa: E731
fB = lambda x: x[1] % 2  # noqa: E731
gC = lambda a, b: a | b  # noqa: E731


class Tree3(torch.nn.Module):
    """The model G: C = gC(A(x), B(x)), output = C (A reads the first coordinate, B the second)."""

    def __init__(self):
        super().__init__()
        self.A = Op(lambda x: (x[:, :1] > 1).float())
        self.B = Op(lambda x: torch.remainder(x[:, 1:], 2))
        self.C = Op(lambda a, b: torch.maximum(a, b))

    def forward(self, x):
        return self.C(self.A(x), self.B(x))


def _setup(seed):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(len(DOMAIN)))
    data = sc.ScrubData(x=torch.tensor(DOMAIN, dtype=torch.float32))
    model = fl.wrap(Tree3())
    graph = LayerGraph.trace(model)
    h = sc.Hypothesis(
        "C = A or B", feature=lambda d: ((d["x"][:, 0] > 1) | (d["x"][:, 1] % 2 == 1)).long()
    )
    h.add("A", sc.to("A"), feature=lambda d: (d["x"][:, 0] > 1).long())
    h.add("B", sc.to("B"), feature=lambda d: (d["x"][:, 1] % 2).long())
    return probs, data, graph, h


def _consistent(probs, fn):
    out: dict = {}
    for i, x in enumerate(DOMAIN):
        k = fn(x)
        out[k] = out.get(k, 0.0) + probs[i]
    return out


def _close(p, q, tol=1e-12):
    keys = set(p) | set(q)
    return all(abs(p.get(k, 0.0) - q.get(k, 0.0)) <= tol for k in keys)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_appendix5_lemma1_scrubbed_inputs_have_consistent_laws(seed):
    probs, data, graph, h = _setup(seed)
    ex = exact_scrub(h, graph, data, probs)
    slots = {tuple(e[0] for e in path): v for path, v in ex.slots}
    va, vb = slots[("C", "A")], slots[("C", "B")]
    assert ex.names[va] == "A" and ex.names[vb] == "B"
    # leaves: each input slot is distributed as D
    for v in (va, vb):
        assert np.allclose(ex.marginal([v]), probs, atol=1e-12)
    # C's inputs (A, B values on their own data) have the law of (A(x), B(x)) for x ~ D
    law = ex.law(lambda i, j: (fA(DOMAIN[i]), fB(DOMAIN[j])), [va, vb])
    assert _close(law, _consistent(probs, lambda x: (fA(x), fB(x))))
    # the root's input (C's value) has the law of C(x)
    law_c = ex.law(lambda i, j: gC(fA(DOMAIN[i]), fB(DOMAIN[j])), [va, vb])
    assert _close(law_c, _consistent(probs, lambda x: gC(fA(x), fB(x))))
    # and every node's datum is itself distributed as D
    for v in range(ex.joint.ndim):
        assert np.allclose(ex.marginal([v]), probs, atol=1e-12)


def _maxent(probs, iters=3000):
    """The maximum-entropy law on (x_A, x_B) subject to Lemma 1's constraints, by iterative
    proportional fitting from the uniform law (an I-projection: the max-entropy solution)."""
    n = len(DOMAIN)
    q = np.full((n, n), 1.0 / n**2)
    a = np.array([fA(x) for x in DOMAIN])
    b = np.array([fB(x) for x in DOMAIN])
    cons = [
        (lambda i, j: i, _consistent(probs, lambda x: DOMAIN.index(x))),
        (lambda i, j: j, _consistent(probs, lambda x: DOMAIN.index(x))),
        (lambda i, j: (a[i], b[j]), _consistent(probs, lambda x: (fA(x), fB(x)))),
        (lambda i, j: gC(a[i], b[j]), _consistent(probs, lambda x: gC(fA(x), fB(x)))),
    ]
    cells = []  # per constraint: (boolean mask of the cell, its target probability)
    for fn, target in cons:
        keys = {(i, j): fn(i, j) for i, j in itertools.product(range(n), range(n))}
        for key, want in target.items():
            m = np.zeros((n, n), dtype=bool)
            for (i, j), k in keys.items():
                m[i, j] = k == key
            cells.append((m, want))
    for _ in range(iters):
        for m, want in cells:
            have = q[m].sum()
            if have > 0:
                q[m] *= want / have
    return q


@pytest.mark.parametrize("seed", [0, 1])
def test_appendix5_theorem2_scrubbed_law_is_maximum_entropy(seed):
    probs, data, graph, h = _setup(seed)
    ex = exact_scrub(h, graph, data, probs)
    slots = {tuple(e[0] for e in path): v for path, v in ex.slots}
    q = ex.marginal([slots[("C", "A")], slots[("C", "B")]])
    best = _maxent(probs)
    assert np.abs(q - best).max() < 1e-9
    # any other law with the same constraints has lower entropy: perturb along a direction
    # that keeps all of Lemma 1's marginals (within a cell of equal (A, B) values)
    rng = np.random.default_rng(seed)
    i1, i2 = [i for i, x in enumerate(DOMAIN) if fA(x) == 1][:2]
    j1, j2 = [j for j, x in enumerate(DOMAIN) if fB(x) == 1][:2]
    d = np.zeros_like(q)
    d[i1, j1] += 1
    d[i2, j2] += 1
    d[i1, j2] -= 1
    d[i2, j1] -= 1
    eps = 0.5 * min(q[i1, j2], q[i2, j1]) * rng.uniform(0.2, 1.0)
    assert entropy(q + eps * d) < entropy(q)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_appendix5_fun_fact3_entropy_identity(seed):
    probs, data, graph, h = _setup(seed)
    ex = exact_scrub(h, graph, data, probs)
    slots = {tuple(e[0] for e in path): v for path, v in ex.slots}
    va, vb = slots[("C", "A")], slots[("C", "B")]
    H_in = entropy(ex.marginal([va, vb]))
    H = lambda fn: entropy(ex.law(fn, [va, vb]))  # noqa: E731
    h_a, h_b = H(lambda i, j: fA(DOMAIN[i])), H(lambda i, j: fB(DOMAIN[j]))
    h_ab = H(lambda i, j: (fA(DOMAIN[i]), fB(DOMAIN[j])))
    h_c = H(lambda i, j: gC(fA(DOMAIN[i]), fB(DOMAIN[j])))
    h_xa, h_xb = H(lambda i, j: i), H(lambda i, j: j)
    # H(inputs) = H(output) + sum over nodes of (H(node's inputs) - H(node's output))
    # nodes: root (input C, output C), C (inputs A, B), A (input x_A), B (input x_B)
    rhs = h_c + (h_c - h_c) + (h_ab - h_c) + (h_xa - h_a) + (h_xb - h_b)
    assert H_in == pytest.approx(rhs, abs=1e-10)


def test_exact_law_matches_the_monte_carlo_samplers():
    probs, data, graph, h = _setup(0)
    ex = exact_scrub(h, graph, data)  # uniform D: the samplers draw references uniformly
    prep = sc.prepare(
        fl.wrap(Tree3()), h, data, n=40000, behaviour=sc.MSE("x"), graph=graph, baselines=()
    )
    vecs = prep.sampled.vectors
    ref, a, b = prep.ref, vecs[("root/A",)], vecs[("root/B",)]
    va, vb = ex.variable("A"), ex.variable("B")
    exact = ex.marginal([0, va, vb])
    counts = np.zeros_like(exact)
    np.add.at(counts, (ref, a, b), 1.0)
    # nothing outside the support of the exact law, and a chi-square fit inside it
    assert counts[exact == 0].sum() == 0
    support = exact > 0
    _, pvalue = chisquare(counts[support], exact[support] * len(ref))
    assert pvalue > 1e-3


# ---------------------------------------------------------------------------------------------
# Sections 6 and 6.1: superposition
# ---------------------------------------------------------------------------------------------


def _superposition(n=20000, p=0.2, seed=0):
    """Two sparse features x1, x2 (mean 0, variance 1), y = x1^2 + x2^2, one neuron
    y~ = d (c x1 + x2)^2 with (c, d) minimising the loss: both features share the neuron."""
    rng = np.random.default_rng(seed)

    def sparse(k):
        return (rng.random(k) < p) * rng.choice([-1.0, 1.0], k) / np.sqrt(p)

    x1, x2 = sparse(n), sparse(n)
    y = x1**2 + x2**2
    fit = minimize(lambda th: np.mean((y - th[1] * (th[0] * x1 + x2) ** 2) ** 2), [0.8, 0.8])
    c, d = (float(v) for v in fit.x)
    assert abs(c) > 0.5 and d > 0.5  # superposed: both features use the neuron

    class Super(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.neuron = Op(lambda a, b: (c * a + b) ** 2)
            self.out = Op(lambda hh: d * hh)

        def forward(self, x1, x2):
            return self.out(self.neuron(x1, x2))

    t = lambda v: torch.tensor(v, dtype=torch.float32)[:, None]  # noqa: E731
    data = sc.ScrubData(x1=t(x1), x2=t(x2), y=t(y))
    phis = {"x1sq": lambda r: c**2 * r["x1"] ** 2, "x2sq": lambda r: r["x2"] ** 2}
    return fl.wrap(Super()), data, c, d, phis


def _monosemantic(phis, shares, mode):
    h = sc.Hypothesis(
        f"monosemantic + error ({shares} share(s), {mode})",
        unimportant=mode,
        rewrites=[sc.phi("neuron", phis, residual_shares=shares)],
    )
    h.add("x1", sc.to("neuron/x1sq"), feature=lambda r: r["x1"][:, 0])
    h.add("x2", sc.to("neuron/x2sq"), feature=lambda r: r["x2"][:, 0])
    return h


@pytest.fixture(scope="module")
def superposition():
    return _superposition()


def test_appendix6_monosemantic_rewrite_recovers_the_loss(superposition):
    model, data, c, d, phis = superposition
    r = sc.scrub(model, data, _monosemantic(phis, 1, "per_node"), behaviour=sc.MSE("y"), n_boot=200)
    # interference d*2c*x1*x2 is replaced by the same term on an unrelated datum: the loss is
    # unchanged in expectation (cross terms vanish because the features have zero mean)
    diff = r.scrubbed - r.original
    assert abs(diff.mean()) < 4 * diff.std(ddof=1) / np.sqrt(len(diff))
    # 99.7 % recovered, 95% CI 97.5..101.5 (SE about 1.0): within 4 SE of 100 (the old abs=3)
    lo, hi = r.recovered_ci()
    assert r.recovered() == pytest.approx(100.0, abs=4 * (hi - lo) / 3.92)
    assert not any(w.startswith("BETTER") for w in r.warnings)


def test_appendix6_1_separately_sampled_error_halves_beat_the_model(superposition):
    model, data, c, d, phis = superposition
    r = sc.scrub(
        model, data, _monosemantic(phis, 2, "per_input"), behaviour=sc.MSE("y"), n_boot=200
    )
    diff = r.original - r.scrubbed
    se = diff.std(ddof=1) / np.sqrt(len(diff))
    # two independent halves of the interference: its variance halves, the loss drops by
    # 2 d^2 c^2 E[x1^2 x2^2] (= 2 d^2 c^2 for independent unit-variance features)
    x1, x2 = data["x1"][:, 0].double().numpy(), data["x2"][:, 0].double().numpy()
    gap = 2 * d**2 * c**2 * float(np.mean(x1**2) * np.mean(x2**2))
    assert diff.mean() > 4 * se
    assert diff.mean() == pytest.approx(gap, abs=4 * se)
    assert any(w.startswith("BETTER THAN THE MODEL") for w in r.warnings)
    # sampled together (one datum), the halves are the original error term again
    together = sc.scrub(
        model, data, _monosemantic(phis, 2, "per_node"), behaviour=sc.MSE("y"), n_boot=200
    )
    assert together.expectation == pytest.approx(r.original_expectation, abs=4 * together.se)


def test_appendix8_adversary_merges_the_error_halves(superposition):
    model, data, c, d, phis = superposition
    h = _monosemantic(phis, 2, "per_input")
    adv = sc.adversary(model, data, h, behaviour=sc.MSE("y"), budget=10)
    assert adv.chosen == ["sample the unimportant inputs of root together"]
    assert adv.final_expectation > adv.base_expectation
    # after: 98.9 %. AdversaryResult carries no SE for recovered_after; the same rewrite sampled
    # per node recovers 99.7 % with SE 1.0 (test above), so 4 SE (the old abs=3 was 1.9 SE from
    # the observed figure)
    assert adv.recovered_before > 100 and adv.recovered_after == pytest.approx(100.0, abs=4.0)


# ---------------------------------------------------------------------------------------------
# Sections 7 and 8: the EASY/HARD hash game
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def game():
    return hash_game(4000)


def _pool_expectation(data):
    """The exact expected scrubbed reward given the pool (the class of a reference is every row
    whose hypothesised answer equals the reference's)."""
    mode = data["mode"][:, 0].numpy() > 0.5
    label, guess = data["label"].numpy(), data["guess"].numpy()
    answer = np.where(mode, label, guess)
    total = 0.0
    for i in range(len(label)):
        cls = answer == answer[i]
        easy_share = float((cls & ~mode).sum()) / float(cls.sum())
        if mode[i]:  # an EASY datum with guess == the right answer: +10; HARD: I don't know
            total += 10.0 * easy_share
        else:  # an EASY datum guesses the same as the reference; HARD says I don't know
            total += easy_share * (2.0 if guess[i] == label[i] else -1.0)
    return -total / len(label)


def test_appendix7_false_hypothesis_beats_the_model_and_is_flagged(game):
    model, data = game
    beh = sc.Fn(reward_loss, name="minus reward")
    h = sc.Hypothesis("guess on EASY, answer on HARD", feature=hyp_answer)
    r = sc.scrub(model, data, h, behaviour=beh, n_boot=200)
    # model: guesses right half the time on EASY (+2 / -1), abstains on HARD: reward ~ 1/4
    # -0.2575 over 4000 data, SE about 0.018 (the old abs=0.05 was 2.8 SE wide)
    o = r.original
    assert r.original_expectation == pytest.approx(-0.25, abs=4 * o.std(ddof=1) / np.sqrt(len(o)))
    # scrubbed: HARD references get an EASY datum guessing the right answer half the time
    assert r.expectation == pytest.approx(_pool_expectation(data), abs=4 * r.se)
    assert r.expectation < -2.4  # ~ -2.625
    assert r.recovered() > 150
    assert any(w.startswith("BETTER THAN THE MODEL") for w in r.warnings)


def test_appendix8_adversary_finds_the_missing_mode_feature(game):
    model, data = game
    beh = sc.Fn(reward_loss, name="minus reward")
    h = sc.Hypothesis("guess on EASY, answer on HARD", feature=hyp_answer)
    features = {
        "mode": lambda d: d["mode"][:, 0],
        "num mod 3": lambda d: torch.remainder(d["num"][:, 0], 3),
        "num > 2^19": lambda d: d["num"][:, 0] > 2**19,
    }
    adv = sc.adversary(model, data, h, behaviour=beh, features=features, budget=8)
    assert adv.chosen == ["root also agrees on mode"]
    # conditioned on the answer and the mode, HARD references only get HARD data: the scrubbed
    # model abstains exactly like the model
    assert adv.final_expectation == pytest.approx(adv.original, abs=0.05)
    table = adv.candidates.set_index("refinement")
    assert table.loc["root also agrees on num mod 3", "z"] < 3
