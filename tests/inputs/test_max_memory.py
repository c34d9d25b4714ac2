"""The one memory knob, ``max_memory`` (bytes), on every method that chunks its work: it sets
the executor's budget; the old knobs (``max_rows``, ``batch_size``) keep working for one
release with a DeprecationWarning and unchanged results; both at once, or a bad
``max_memory``, are refused before any work."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import faithlens as fl
from faithlens.errors import ArgumentError
from tests.helpers.tasks import padded_task

# --------------------------------------------------------------------------------------------
# patch / path_patch: max_rows -> max_memory
# --------------------------------------------------------------------------------------------

PATCHERS = {
    "patch": lambda m, t, **kw: fl.patch(m, t, "head", positions="last", n_boot=20, **kw),
    "path_patch": lambda m, t, **kw: fl.path_patch(m, t, "head", "logits", n_boot=20, **kw),
}


@pytest.mark.parametrize("fn", sorted(PATCHERS))
def test_patching_max_rows_warns_and_gives_the_same_result(tiny_gpt2, fn):
    model = fl.wrap(tiny_gpt2)
    task = padded_task(model)
    default = PATCHERS[fn](model, task)
    with pytest.warns(DeprecationWarning, match="max_rows.*max_memory"):
        old = PATCHERS[fn](model, task, max_rows=7)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        new = PATCHERS[fn](model, task, max_memory=200_000)
        big = PATCHERS[fn](model, task, max_memory=10**12)
    np.testing.assert_allclose(old.patched, default.patched, atol=1e-5, rtol=0)
    np.testing.assert_allclose(new.patched, default.patched, atol=1e-5, rtol=0)
    np.testing.assert_allclose(big.patched, default.patched, atol=1e-5, rtol=0)
    pd_cols = ["effect", "effect_ci_low", "effect_ci_high"]
    np.testing.assert_allclose(
        new.to_frame()[pd_cols].to_numpy(),
        default.to_frame()[pd_cols].to_numpy(),
        atol=1e-5,
        rtol=1e-3,  # chunks of other sizes: float sums in another order
    )


@pytest.mark.parametrize("fn", sorted(PATCHERS))
def test_patching_refuses_both_knobs(tiny_gpt2, fn):
    model = fl.wrap(tiny_gpt2)
    task = padded_task(model)
    with pytest.raises(ArgumentError, match=r"max_rows=7: cannot be given together with"):
        PATCHERS[fn](model, task, max_rows=7, max_memory=10**6)


@pytest.mark.parametrize("fn", sorted(PATCHERS))
@pytest.mark.parametrize("bad", [0, -5, 1.5, "1GB", True])
def test_patching_refuses_a_bad_max_memory_before_work(tiny_gpt2, fn, bad, monkeypatch):
    model = fl.wrap(tiny_gpt2)
    task = padded_task(model)

    def boom(*a, **k):
        raise AssertionError("a forward pass ran before the argument check")

    monkeypatch.setattr(model, "run", boom)
    with pytest.raises(ArgumentError, match="max_memory="):
        PATCHERS[fn](model, task, max_memory=bad)


# --------------------------------------------------------------------------------------------
# scrub / adversary: batch_size -> max_memory
# --------------------------------------------------------------------------------------------


def _scrub_setup():
    from faithlens import scrubbing as sc
    from tests.helpers.scrub_toys import Toy, feat, int_data

    m = Toy(
        {"A": lambda a: 2 * a, "B": lambda b: 3 * b, "C": lambda a, b: a + b},
        lambda s, x0, x1, x2: s.C(s.A(x0), s.B(x1)),
    )
    data = int_data(label=lambda x0, x1, x2: 2 * x0 + 3 * x1)
    h = sc.Hypothesis("spread", feature=lambda d: d["y"][:, 0])
    h.add("A", sc.to("A"), feature=feat("x0"))
    return sc, fl.wrap(m), h, data


def test_scrub_batch_size_warns_and_gives_the_same_result():
    sc, model, h, data = _scrub_setup()
    kw = dict(n=300, behaviour=sc.MSE("y"), n_boot=100, seed=3)
    default = sc.scrub(model, data, h, **kw)
    with pytest.warns(DeprecationWarning, match="batch_size.*max_memory"):
        old = sc.scrub(model, data, h, batch_size=7, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        new = sc.scrub(model, data, h, max_memory=10**6, **kw)
    for r in (old, new):
        assert r.expectation == default.expectation and r.se == default.se
        assert r.to_frame().equals(default.to_frame())


@pytest.mark.parametrize("fn", ["scrub", "adversary"])
def test_scrub_refuses_both_knobs_and_bad_max_memory(fn):
    sc, model, h, data = _scrub_setup()
    call = getattr(sc, fn)
    with pytest.raises(ArgumentError, match="batch_size=8: cannot be given together with"):
        call(model, data, h, n=50, batch_size=8, max_memory=10**6)
    with pytest.raises(ArgumentError, match="max_memory=0"):
        call(model, data, h, n=50, max_memory=0)


# --------------------------------------------------------------------------------------------
# read (fl.read_directions): batch_size -> max_memory
# --------------------------------------------------------------------------------------------


def test_read_batch_size_warns_and_gives_the_same_result():
    from faithlens.representations import read
    from faithlens.representations.generation import encode
    from faithlens.representations.pair_activations import prompts_per_pass
    from faithlens.representations.reading import activations
    from tests.helpers.represent import planted

    pm = planted()
    train, test = pm.pairs(24, seed=5), pm.pairs(12, seed=6)
    kw = dict(method="mean_diff", layers=[1], test=test, n_boot=100)
    default = read(pm.model, train, **kw)
    with pytest.warns(DeprecationWarning, match="batch_size.*max_memory"):
        old = read(pm.model, train, batch_size=5, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        new = read(pm.model, train, max_memory=20_000, **kw)
    for r in (old, new):
        np.testing.assert_allclose(r.direction(1), default.direction(1), atol=1e-6)
        np.testing.assert_array_equal(r.accuracy, default.accuracy)
    # the budget sets the prompts per pass: a small one gives several passes, same numbers
    assert 1 < prompts_per_pass(pm.model, encode(pm.model, train.positive), 1, 50_000) < 24
    a = activations(pm.model, train.positive, layers=[1])
    b = activations(pm.model, train.positive, layers=[1], max_memory=50_000)
    np.testing.assert_allclose(a, b, atol=1e-5)  # float32 passes of other sizes


def test_read_refuses_both_knobs_and_bad_max_memory():
    from faithlens.representations import read
    from tests.helpers.represent import planted

    pm = planted()
    train = pm.pairs(24, seed=5)
    with pytest.raises(ArgumentError, match="batch_size=8: cannot be given together with"):
        read(pm.model, train, batch_size=8, max_memory=10**6)
    with pytest.raises(ArgumentError, match="max_memory=-1"):
        read(pm.model, train, max_memory=-1)


# --------------------------------------------------------------------------------------------
# faithfulness: batch_size -> max_memory
# --------------------------------------------------------------------------------------------


def test_faithfulness_batch_size_warns_and_gives_the_same_result():
    from faithlens.representations import faithfulness
    from tests.helpers.represent import planted, planted_reading

    pm = planted()
    kw = dict(layers=[1], checks=["causal", "persistence"], n_boot=50, persistence_tokens=3)
    args = (pm.model, pm.behaviour(8), planted_reading("pca"))
    default = faithfulness(*args, **kw)
    with pytest.warns(DeprecationWarning, match="batch_size.*max_memory"):
        old = faithfulness(*args, batch_size=3, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        new = faithfulness(*args, max_memory=60_000, **kw)
    for r in (old, new):
        assert r.checks["passed"].tolist() == default.checks["passed"].tolist()
        num = r.checks.select_dtypes("number").columns
        np.testing.assert_allclose(
            r.checks[num].to_numpy(float), default.checks[num].to_numpy(float), atol=1e-5
        )
    with pytest.raises(ArgumentError, match="batch_size=3: cannot be given together with"):
        faithfulness(*args, batch_size=3, max_memory=10**6, **kw)
    with pytest.raises(ArgumentError, match="max_memory=0"):
        faithfulness(*args, max_memory=0, **kw)
