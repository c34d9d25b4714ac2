"""The one progress protocol (faithlens.progress): every method calls ``progress(done, total)``
with ``done`` monotone up to a fixed ``total``; the old callback shapes of das, faithfulness and
zoo training keep working for one release with a DeprecationWarning."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

import faithlens as fl
from faithlens import zoo
from faithlens.errors import ArgumentError
from faithlens.progress import annotated_done_total, positional_arity
from faithlens.representations.checks.suite import split_progress as split_check_progress
from tests.helpers.das_toys import toy_data, toy_model

KW = dict(dims=2, epochs=6, batch_size=16, seed=5, lr=0.05)


def assert_protocol(calls: list[tuple[int, int]]) -> None:
    assert calls, "no progress reported"
    totals = {t for _, t in calls}
    assert len(totals) == 1, f"total changed during the call: {totals}"
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[-1] == calls[0][1] and done[0] >= 1


def test_positional_arity_and_annotations():
    def two(done: int, total: int) -> None: ...

    def old(epoch, row): ...

    assert positional_arity(two) == 2
    assert positional_arity(lambda s: None) == 1
    assert positional_arity(lambda a, b, c=1: None) == 2
    assert positional_arity(lambda *a: None) is None
    assert annotated_done_total(two)
    assert not annotated_done_total(old)
    assert not annotated_done_total(print)


def test_das_progress_is_done_total_with_on_epoch_rows():
    calls: list[tuple[int, int]] = []
    rows: list[tuple[int, dict]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        res = fl.das(
            toy_model(),
            toy_data(),
            "h",
            progress=lambda d, t: calls.append((d, t)),
            on_epoch=lambda e, row: rows.append((e, row)),
            **KW,
        )
    assert calls == [(e + 1, 6) for e in range(6)]
    assert_protocol(calls)
    assert [e for e, _ in rows] == list(range(6))
    assert [r["iia"] for _, r in rows] == list(res.history["iia"])


def test_das_annotated_progress_needs_no_on_epoch():
    calls: list[tuple[int, int]] = []

    def bar(done: int, total: int) -> None:
        calls.append((done, total))

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        fl.das(toy_model(), toy_data(), "h", progress=bar, **KW)
    assert_protocol(calls)


def test_das_old_epoch_row_callback_warns_and_still_works():
    rows: list[tuple[int, dict]] = []
    new = fl.das(toy_model(), toy_data(), "h", **KW)
    with pytest.warns(DeprecationWarning, match="on_epoch"):
        old = fl.das(
            toy_model(), toy_data(), "h", progress=lambda e, row: rows.append((e, row)), **KW
        )
    assert [e for e, _ in rows] == list(range(6))
    assert all(isinstance(r, dict) and "iia" in r for _, r in rows)
    np.testing.assert_array_equal(old.history["iia"], new.history["iia"])
    assert old.iia == new.iia


def test_das_refuses_a_non_callable_on_epoch():
    with pytest.raises(ArgumentError, match="on_epoch"):
        fl.das(toy_model(), toy_data(), "h", on_epoch=3, **KW)


def test_faithfulness_progress_shapes():
    def new(done, total): ...

    def described(s): ...

    def chk(s): ...

    assert split_check_progress(new, None) == (new, None)
    with pytest.warns(DeprecationWarning, match="on_check"):
        assert split_check_progress(described, None) == (None, described)
    with pytest.raises(ArgumentError, match="when on_check is given"):
        split_check_progress(print, chk)


def _small_recipe(steps: int = 3) -> zoo.Recipe:
    r = zoo.recipe("paren")
    r.schedule = dataclasses.replace(
        r.schedule, steps=steps, batch_size=16, warmup=1, eval_every=0, checkpoint_every=3,
        log_every=1,
    )  # fmt: skip
    r.eval_n = 16
    r.quick_n = 16
    return r


def test_zoo_training_progress_and_on_step(tmp_path):
    calls: list[tuple[int, int]] = []
    steps: list[tuple[int, int, dict]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        zoo.train(
            _small_recipe(),
            tmp_path / "a",
            seed=1,
            threads=1,
            evaluate=False,
            progress=lambda d, t: calls.append((d, t)),
            on_step=lambda s, t, n: steps.append((s, t, n)),
        )
    assert calls == [(1, 3), (2, 3), (3, 3)]
    assert [(s, t) for s, t, _ in steps] == calls
    old: list[tuple[int, int]] = []
    with pytest.warns(DeprecationWarning, match="on_step"):
        zoo.train(
            _small_recipe(),
            tmp_path / "b",
            seed=1,
            threads=1,
            evaluate=False,
            progress=lambda s, t, numbers: old.append((s, t)),
        )
    assert old == calls


def test_faithfulness_progress_counts_checks_and_on_check_describes_them():
    from faithlens.representations import faithfulness
    from tests.helpers.represent import planted, planted_reading

    pm = planted()
    kw = dict(layers=[1], checks=["causal", "stable"], pairs=pm.pairs(16), n_boot=50)
    kw.update(n_stability=5, prompt="last")
    calls: list[tuple[int, int]] = []
    said: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        new = faithfulness(
            pm.model,
            pm.behaviour(8),
            planted_reading("pca"),
            progress=lambda d, t: calls.append((d, t)),
            on_check=said.append,
            **kw,
        )
    assert calls == [(1, 2), (2, 2)]
    assert said and all(isinstance(s, str) for s in said)
    old_said: list[str] = []
    with pytest.warns(DeprecationWarning, match="on_check"):
        old = faithfulness(
            pm.model, pm.behaviour(8), planted_reading("pca"), progress=old_said.append, **kw
        )
    assert old_said == said
    assert old.checks.equals(new.checks)


def test_zoo_old_progress_with_on_step_is_refused(tmp_path):
    with pytest.raises(ArgumentError, match="when on_step is given"):
        zoo.train(
            _small_recipe(),
            tmp_path / "c",
            progress=lambda s, t, numbers: None,
            on_step=lambda s, t, numbers: None,
        )
    assert not (tmp_path / "c" / "checkpoint.pt").exists()
