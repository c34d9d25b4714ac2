"""One calling shape: every method takes its data as the second argument, named ``data``.

The old names (``task=`` for patching, path patching, attribution patching and the audit;
``pairs=`` for reading) and the old argument order of ``scrub`` / ``adversary`` / ``dry_run``
(``(model, hypothesis, data)``) and of ``faithfulness`` (``(model, reading, behaviour)``, now
``(model, data, reading)``, with ``behaviour=`` renamed ``data=``) keep working for one release
with a DeprecationWarning and the very same result; the old and the new name together are
refused, naming both.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pytest

import faithlens as fl
from faithlens import scrubbing as sc
from faithlens.errors import ArgumentError
from tests.helpers.represent import planted
from tests.helpers.tasks import padded_task


@dataclass(frozen=True)
class Renamed:
    """A method whose data argument was renamed: ``call(model, data=..., **kw)`` and ``old``."""

    setup: Callable[[Any], tuple[Any, Any]]  # tiny_gpt2 -> (model, data)
    call: Callable[..., Any]
    old: str
    frame: Callable[[Any], pd.DataFrame] = lambda r: r.to_frame()


def _patching(tiny_gpt2):
    model = fl.wrap(tiny_gpt2)
    return model, padded_task(model)


def _audit(tiny_gpt2):
    model = fl.wrap(tiny_gpt2)
    return model, fl.tasks.random_token_task(model, n=12, seq_len=5, seed=0)


def _reading(tiny_gpt2):
    pm = planted()
    return pm.model, pm.pairs(24, seed=5)


RENAMED = {
    "patch": Renamed(
        _patching, lambda m, *a, **kw: fl.patch(m, *a, sites="head", n_boot=20, **kw), "task"
    ),
    "attribution_patch": Renamed(
        _patching,
        lambda m, *a, **kw: fl.attribution_patch(m, *a, sites="head", n_boot=20, **kw),
        "task",
    ),
    "path_patch": Renamed(
        _patching,
        lambda m, *a, **kw: fl.path_patch(m, *a, senders="head", n_boot=20, **kw),
        "task",
    ),
    "audit": Renamed(
        _audit,
        lambda m, *a, **kw: fl.audit(
            m,
            *a,
            interventions=[fl.Zero("mlp_post.0")],
            site="resid_post.1",
            n_splits=2,
            metrics=["emd"],
            split_metrics=["emd"],
            **kw,
        ),
        "task",
        lambda r: r.table,
    ),
    "read_directions": Renamed(
        _reading,
        lambda m, *a, **kw: fl.read_directions(
            m, *a, method="mean_diff", layers=[1], n_boot=50, **kw
        ),
        "pairs",
    ),
}
CASES = pytest.mark.parametrize("name", list(RENAMED))


@CASES
def test_data_by_keyword_or_position_the_same_and_silent(tiny_gpt2, name):
    case = RENAMED[name]
    model, data = case.setup(tiny_gpt2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        by_position = case.call(model, data)
        by_keyword = case.call(model, data=data)
    pd.testing.assert_frame_equal(case.frame(by_keyword), case.frame(by_position), check_exact=True)


@CASES
def test_old_keyword_warns_and_gives_the_same_result(tiny_gpt2, name):
    case = RENAMED[name]
    model, data = case.setup(tiny_gpt2)
    new = case.call(model, data)
    with pytest.warns(DeprecationWarning, match=rf"{case.old}= is deprecated.*use data="):
        old = case.call(model, **{case.old: data})
    pd.testing.assert_frame_equal(case.frame(old), case.frame(new), check_exact=True)


@CASES
@pytest.mark.parametrize("new_by", ["position", "keyword"])
def test_old_and_new_together_are_refused_naming_both(tiny_gpt2, name, new_by, monkeypatch):
    case = RENAMED[name]
    model, data = case.setup(tiny_gpt2)
    monkeypatch.setattr(model, "run", lambda *a, **k: pytest.fail("a forward pass ran"))
    args, kw = ((data,), {}) if new_by == "position" else ((), {"data": data})
    with pytest.raises(ArgumentError, match=rf"{case.old}= and data were both given"):
        case.call(model, *args, **{case.old: data}, **kw)


# --------------------------------------------------------------------------------------------
# scrub, adversary, dry_run: (model, hypothesis, data) -> (model, data, hypothesis)
# --------------------------------------------------------------------------------------------


def _scrub_setup():
    from tests.helpers.scrub_toys import Toy, feat, int_data

    m = Toy(
        {"A": lambda a: 2 * a, "B": lambda b: 3 * b, "C": lambda a, b: a + b},
        lambda s, x0, x1, x2: s.C(s.A(x0), s.B(x1)),
    )
    data = int_data(label=lambda x0, x1, x2: 2 * x0 + 3 * x1)
    h = sc.Hypothesis("spread", feature=lambda d: d["y"][:, 0])
    h.add("A", sc.to("A"), feature=feat("x0"))
    return fl.wrap(m), h, data


SCRUBBERS: dict[str, tuple[Callable[..., Any], Callable[[Any], Any]]] = {
    "scrub": (
        lambda *a, **kw: sc.scrub(*a, n=60, behaviour=sc.MSE("y"), n_boot=50, seed=3, **kw),
        lambda r: r.to_frame(),
    ),
    "adversary": (
        lambda *a, **kw: sc.adversary(
            *a,
            n=60,
            behaviour=sc.MSE("y"),
            features={"x1": lambda d: d["x1"][:, 0]},
            budget=2,
            seed=3,
            **kw,
        ),
        lambda r: r.candidates,
    ),
    "dry_run": (
        lambda *a, **kw: sc.dry_run(*a, n=4, behaviour=sc.MSE("y"), **kw),
        lambda r: pd.DataFrame({"text": [r]}),
    ),
}


@pytest.mark.parametrize("name", list(SCRUBBERS))
def test_scrub_old_order_warns_and_gives_the_same_result(name):
    call, frame = SCRUBBERS[name]
    model, h, data = _scrub_setup()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        new = frame(call(model, data, h))
        by_name = frame(call(model, data=data, hypothesis=h))
        old_names = frame(call(model, hypothesis=h, data=data))
    for other in (by_name, old_names):
        pd.testing.assert_frame_equal(other, new, check_exact=True)
    for args, kw in (((model, h, data), {}), ((model, h), {"data": data})):
        with pytest.warns(DeprecationWarning, match=rf"{name}\(model, hypothesis.*is deprecated"):
            old = frame(call(*args, **kw))
        pd.testing.assert_frame_equal(old, new, check_exact=True)


def test_scrub_old_order_with_the_data_twice_is_refused():
    model, h, data = _scrub_setup()
    with (
        pytest.warns(DeprecationWarning, match="is deprecated"),
        pytest.raises(TypeError, match="multiple values for argument 'data'"),
    ):
        sc.scrub(model, h, data, data=data)


# --------------------------------------------------------------------------------------------
# faithfulness: (model, reading, behaviour) -> (model, data, reading)
# --------------------------------------------------------------------------------------------


def _faithfulness_setup():
    from faithlens.representations import faithfulness
    from tests.helpers.represent import planted_reading

    pm = planted()
    kw = dict(layers=[1], checks=["causal"], n_boot=50)

    def call(*args: Any, **more: Any) -> pd.DataFrame:
        rep = faithfulness(*args, **kw, **more)
        return pd.concat([rep.checks, rep.steering], keys=["checks", "steering"])

    return call, pm.model, pm.behaviour(8), planted_reading("pca")


def test_faithfulness_old_order_and_old_keyword_warn_and_give_the_same_report():
    call, model, b, r = _faithfulness_setup()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        new = call(model, b, r)
        by_name = call(model, data=b, reading=r)
        reading_by_name = call(model, b, reading=r)
    for other in (by_name, reading_by_name):
        pd.testing.assert_frame_equal(other, new, check_exact=True)
    old_order = r"faithfulness\(model, reading.*is deprecated.*faithfulness\(model, data, reading"
    for args, more in (((model, r, b), {}), ((model, r), {"data": b})):
        with pytest.warns(DeprecationWarning, match=old_order):
            pd.testing.assert_frame_equal(call(*args, **more), new, check_exact=True)
    with pytest.warns(DeprecationWarning, match="behaviour= is deprecated.*use data="):
        pd.testing.assert_frame_equal(call(model, reading=r, behaviour=b), new, check_exact=True)
    with pytest.warns(DeprecationWarning) as caught:  # both: the old order and the old keyword
        pd.testing.assert_frame_equal(call(model, r, behaviour=b), new, check_exact=True)
    said = " | ".join(str(w.message) for w in caught)
    assert "faithfulness(model, reading" in said and "behaviour= is deprecated" in said


def test_faithfulness_old_keyword_with_the_data_is_refused_naming_both():
    call, model, b, r = _faithfulness_setup()
    for args, more in (((model, b), {"reading": r}), ((model,), {"data": b, "reading": r})):
        with pytest.raises(ArgumentError, match="behaviour= and data were both given"):
            call(*args, behaviour=b, **more)
