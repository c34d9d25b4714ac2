"""Every bad input refused up front, through the API: models and sites, interventions, tasks,
patching (exact, attribution, path) and the divergence audit.

Each case asserts the error type, that the message names the argument (or the thing) and the
value, and that no forward pass ran before the error (``faithlens.runs.run`` raises if called).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import warnings

import numpy as np
import pytest
import torch

import faithlens as fl
import faithlens.runs
from faithlens.errors import ArgumentError, InputError, SiteError
from faithlens.models.model import Inputs


@pytest.fixture(scope="module")
def induction():
    """zoo:induction: a causal 2-layer attention-only model (vocabulary 128, d_model 64)."""
    return fl.load("zoo:induction")


@pytest.fixture(scope="module")
def task(induction):
    return fl.tasks.build("induction", induction, n=8, seed=0)


@pytest.fixture
def no_run(monkeypatch):
    """Any forward pass through faithlens is a test failure."""

    def forbidden(*args, **kwargs):
        raise AssertionError("a forward pass ran before the error")

    monkeypatch.setattr(faithlens.runs, "run", forbidden)


@contextlib.contextmanager
def no_forward(model):
    """The run engine may resolve sites, but the module's forward must never start."""
    calls = []
    h = model.module.register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        yield
    finally:
        h.remove()
    assert calls == [], "a forward pass ran before the error"


def _check(err, *words):
    msg = str(err.value)
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"


# ---------------------------------------------------------------------------------------------
# models and sites
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "layer, shown", [(99, "layer=99"), (2, "layer=2"), (-1, "layer=-1"), (1.5, "layer=1.5")]
)
def test_sites_layer_out_of_range(induction, layer, shown):
    with pytest.raises(ArgumentError) as e:
        induction.sites(layer=layer)
    _check(e, shown)


def test_sites_layer_in_range_unchanged(induction):
    assert induction.sites(kind="head", layer=1) == [f"head.1.{h}" for h in range(4)]


@pytest.mark.parametrize(
    "site, exc, words",
    [
        ("resid_pre.0[:, :, 50:99]", SiteError, ["resid_pre.0", "64 units", "50:99", "99"]),
        ("resid_pre.0[:, :, 70:]", SiteError, ["resid_pre.0", "64 units", "70:", "70"]),
        ("resid_pre.0[:, :, -99:3]", SiteError, ["resid_pre.0", "64 units", "-99:3"]),
        ("resid_pre.0[:, :, 5:5]", InputError, ["resid_pre.0", "5:5", "selects no unit"]),
        ("resid_pre.0[:, :, 9:3]", InputError, ["resid_pre.0", "9:3", "selects no unit"]),
        ("head.1.0[:, :, 10:17]", SiteError, ["head.1.0", "16 units", "10:17"]),
        ("resid_pre.0[:, :, 64]", SiteError, ["resid_pre.0", "64 units", "[64]"]),
        ("resid_pre.9", SiteError, ["resid_pre.9"]),
    ],
)
def test_unit_selection_beyond_the_width(induction, site, exc, words):
    with no_forward(induction), pytest.raises(exc) as e:
        induction.run(torch.zeros(2, 5, dtype=torch.long), [fl.Zero(site)])
    _check(e, *words)


def test_unit_slices_within_the_width_unchanged(induction):
    ids = torch.randint(0, 128, (2, 5), generator=torch.Generator().manual_seed(0))
    a = induction.run(ids, [fl.Zero("resid_pre.1[:, :, 10:64]")]).logits
    b = induction.run(ids, [fl.Zero("resid_pre.1[:, :, 10:]")]).logits
    c = induction.run(ids, [fl.Zero("resid_pre.1[:, :, -54:]")]).logits
    assert torch.equal(a, b) and torch.equal(a, c)


@pytest.mark.parametrize(
    "device, shown",
    [("nonsense", "device='nonsense'"), ("cuda", "device='cuda'"), ("cuda:7", "cuda:7")],
)
def test_load_device_checked_before_loading(monkeypatch, device, shown):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the error")

    monkeypatch.setattr(fl.zoo, "load", no_load)
    with pytest.raises(ArgumentError) as e:
        fl.load("zoo:induction", device=device)
    _check(e, shown)


def test_load_dtype_checked(monkeypatch):
    with pytest.raises(ArgumentError) as e:
        fl.load("zoo:induction", dtype=torch.int64)
    _check(e, "dtype=torch.int64", "floating")


def test_model_to_checks_the_device(induction, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ArgumentError) as e:
        induction.to("cuda")
    _check(e, "device='cuda'", "CUDA is not available")
    assert induction.device == torch.device("cpu")


# ---------------------------------------------------------------------------------------------
# interventions
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("coef", [math.nan, math.inf, -math.inf, "2", None])
def test_add_coefficient_must_be_finite(coef):
    with pytest.raises(ArgumentError) as e:
        fl.Add("resid_pre.0", vector=torch.ones(64), coef=coef)
    _check(e, f"coef={coef!r}")


def test_add_coefficient_tensor_must_be_finite():
    with pytest.raises(ArgumentError) as e:
        fl.Add("resid_pre.0", vector=torch.ones(64), coef=torch.tensor([1.0, math.nan]))
    _check(e, "coef=", "finite")


def test_add_finite_coefficient_unchanged(induction):
    ids = torch.randint(0, 128, (2, 5), generator=torch.Generator().manual_seed(1))
    v = torch.randn(64, generator=torch.Generator().manual_seed(2))
    a = induction.run(ids, [fl.Add("resid_pre.1", vector=v, coef=2)]).logits
    b = induction.run(ids, [fl.Add("resid_pre.1", vector=2 * v)]).logits
    assert torch.allclose(a, b)


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        (
            {"pool": torch.zeros(0, 5, 64)},
            InputError,
            ["resid_pre.1", "pool is empty", "(0, 5, 64)"],
        ),
        ({"pool": torch.zeros(3, 5, 7)}, fl.ShapeError, ["resid_pre.1", "width 7", "64"]),
        (
            {"pool": torch.full((3, 5, 64), math.nan)},
            InputError,
            ["resid_pre.1", "resample pool", "NaN"],
        ),
        (
            {"pool": torch.zeros(3, 5, 64), "index": torch.tensor([0, 3])},
            fl.ShapeError,
            ["resid_pre.1", "index", "[0, 3]", "pool of 3"],
        ),
        (
            {"pool": torch.zeros(3, 5, 64), "index": torch.tensor([0])},
            fl.ShapeError,
            ["resid_pre.1", "index has 1 rows", "selection 2"],
        ),
    ],
)
def test_resample_pool_checked_before_the_run(induction, kwargs, exc, words):
    iv = fl.Resample("resid_pre.1", **kwargs)
    with no_forward(induction), pytest.raises(exc) as e:
        induction.run(torch.zeros(2, 5, dtype=torch.long), [iv])
    _check(e, *words)


def test_mean_fit_over_checked_before_the_run(induction, no_run):
    with pytest.raises(ArgumentError) as e:
        fl.Mean.fit(induction, "resid_pre.1", torch.zeros(2, 5, dtype=torch.long), over="batch")
    _check(e, "over='batch'", "'tokens', 'examples'")


@pytest.mark.parametrize("seed", [-1, 1.5, "0"])
def test_resample_seed(seed):
    with pytest.raises(ArgumentError) as e:
        fl.Resample("resid_pre.1", pool=torch.zeros(3, 5, 64), seed=seed)
    _check(e, f"seed={seed!r}")


# ---------------------------------------------------------------------------------------------
# tasks
# ---------------------------------------------------------------------------------------------


def _task(**over):
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    corrupt = ids.clone()
    corrupt[:, 0] = 9
    kw = dict(
        name="t",
        clean=Inputs(ids=ids, mask=mask),
        corrupt=Inputs(ids=corrupt, mask=mask.clone()),
        answers=torch.tensor([[1, 2], [3, 4]]),
        positions=torch.tensor([3, 2]),
    )
    kw.update(over)
    return fl.Task(**kw)


@pytest.mark.parametrize(
    "over, words",
    [
        ({"positions": torch.tensor([-1, 2])}, ["positions [-1]", "examples [0]", "padding"]),
        ({"positions": torch.tensor([3, 4])}, ["positions [4]", "examples [1]", "0..3"]),
        ({"positions": torch.tensor([3, 3])}, ["examples [1]", "fall on padding"]),
        ({"positions": torch.tensor([3.0, 2.0])}, ["positions", "torch.float32"]),
        ({"answers": torch.tensor([[1, -2], [3, 4]])}, ["answers", "negative", "-2"]),
        ({"answers": torch.tensor([[1.0, 2.0], [3.0, 4.0]])}, ["answers", "torch.float32"]),
        (
            {
                "clean": Inputs(ids=torch.zeros(0, 4, dtype=torch.long)),
                "corrupt": Inputs(ids=torch.zeros(0, 4, dtype=torch.long)),
                "answers": torch.zeros(0, 2, dtype=torch.long),
                "positions": torch.zeros(0, dtype=torch.long),
            },
            ["no examples"],
        ),
    ],
)
def test_bad_tasks(over, words):
    with pytest.raises(InputError) as e:
        _task(**over)
    _check(e, *words)


@pytest.mark.parametrize("rows", [[0, 2], [5], torch.tensor([-3])])
def test_task_subset_out_of_range(rows):
    with pytest.raises(InputError) as e:
        _task().subset(rows)
    _check(e, "rows", "out of range", "2 examples")


def test_task_subset_empty():
    with pytest.raises(InputError, match="no examples"):
        _task().subset([])


def test_good_task_accepted():
    t = _task()
    assert t.n == 2 and t.degenerate() is None


@pytest.mark.parametrize(
    "build, shown",
    [
        (lambda m: fl.tasks.build("induction", m, n=0), "n=0"),
        (lambda m: fl.tasks.build("induction", m, n=-3), "n=-3"),
        (lambda m: fl.tasks.build("induction", m, n=2.5), "n=2.5"),
        (lambda m: fl.tasks.build("induction", m, n=4, seed=-1), "seed=-1"),
        (lambda m: fl.tasks.induction_task(0), "n=0"),
        (lambda m: fl.tasks.paren_task(-1), "n=-1"),
        (lambda m: fl.tasks.random_token_task(m, 0, 5), "n=0"),
        (lambda m: fl.tasks.random_token_task(m, 2, 0), "seq_len=0"),
    ],
)
def test_task_builders_check_n_and_seed(induction, no_run, build, shown):
    with pytest.raises(ArgumentError) as e:
        build(induction)
    _check(e, shown)


# ---------------------------------------------------------------------------------------------
# patching: exact, attribution, path
# ---------------------------------------------------------------------------------------------

PATCHERS = {
    "patch": lambda m, t, **kw: fl.patch(m, t, "head", **kw),
    "attribution_patch": lambda m, t, **kw: fl.attribution_patch(m, t, "head", **kw),
    "path_patch": lambda m, t, **kw: fl.path_patch(m, t, "head", "logits", **kw),
}

BAD_PATCH_ARGS = [
    ({"n_boot": 0}, "n_boot=0"),
    ({"n_boot": 1}, "n_boot=1"),
    ({"n_boot": -5}, "n_boot=-5"),
    ({"n_boot": 2.5}, "n_boot=2.5"),
    ({"level": 0}, "level=0"),
    ({"level": 1}, "level=1"),
    ({"level": 1.5}, "level=1.5"),
    ({"level": math.nan}, "level=nan"),
    ({"seed": -1}, "seed=-1"),
    ({"seed": "0"}, "seed='0'"),
    ({"direction": "sideways"}, "direction='sideways'"),
    ({"positions": "middle"}, "positions='middle'"),
]


@pytest.mark.parametrize("fn", sorted(PATCHERS))
@pytest.mark.parametrize("kwargs, shown", BAD_PATCH_ARGS)
def test_patching_arguments(induction, task, no_run, fn, kwargs, shown):
    with pytest.raises(ArgumentError) as e:
        PATCHERS[fn](induction, task, **kwargs)
    _check(e, shown)


@pytest.mark.parametrize("fn", ["patch", "path_patch"])
@pytest.mark.parametrize("max_rows", [0, -1, 1.5])
def test_patching_max_rows(induction, task, no_run, fn, max_rows):
    with pytest.raises(ArgumentError) as e:
        PATCHERS[fn](induction, task, max_rows=max_rows)
    _check(e, f"max_rows={max_rows!r}")


def test_path_patch_receiver_positions(induction, task, no_run):
    with pytest.raises(ArgumentError) as e:
        fl.path_patch(induction, task, "head", "logits", receiver_positions="each")
    _check(e, "receiver_positions='each'")


@pytest.mark.parametrize("fn", ["patch", "attribution_patch"])
@pytest.mark.parametrize("sites", ["logits", ["head.0.0", "logits"]])
def test_patching_the_logits_is_refused(induction, task, no_run, fn, sites):
    call = fl.patch if fn == "patch" else fl.attribution_patch
    with pytest.raises(ArgumentError) as e:
        call(induction, task, sites)
    _check(e, "sites='logits'", "metric reads")


@pytest.mark.parametrize("fn", sorted(PATCHERS))
def test_patching_needs_a_model_and_a_task(induction, task, no_run, fn):
    with pytest.raises(InputError, match="needs a faithlens Task, not list"):
        PATCHERS[fn](induction, [1, 2])
    with pytest.raises(ArgumentError, match="model='str'"):
        PATCHERS[fn]("zoo:induction", task)


def _paren():
    return fl.load("zoo:paren")


@pytest.mark.parametrize("fn", sorted(PATCHERS))
def test_task_from_another_vocabulary(task, no_run, fn):
    paren = _paren()  # vocabulary of 5: the induction task's token ids do not exist there
    with pytest.raises(InputError) as e:
        PATCHERS[fn](paren, task)
    _check(e, fn, "'induction'", "token id", "vocabulary of 5")


@pytest.mark.parametrize("fn", sorted(PATCHERS))
def test_answers_beyond_the_outputs(induction, task, no_run, fn):
    # token ids fit, answers do not: the model has 128 logits
    bad = dataclasses.replace(task, answers=task.answers + 200)
    with pytest.raises(InputError) as e:
        PATCHERS[fn](induction, bad)
    _check(e, "answer id", "128 logits")


def test_model_without_a_language_model_head(no_run):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(
        num_hidden_layers=2,
        num_attention_heads=2,
        hidden_size=16,
        intermediate_size=32,
        vocab_size=50,
        max_position_embeddings=16,
    )
    m = fl.wrap(BertModel(cfg).eval())
    t = fl.tasks.random_token_task(m, 4, 5, seed=0)
    for fn in ("patch", "attribution_patch"):
        with pytest.raises(InputError) as e:
            PATCHERS[fn](m, t)
        _check(e, fn, "no language-model head")


@pytest.mark.parametrize("fn", [*sorted(PATCHERS), "circuits.exact", "circuits.faithfulness"])
def test_one_example_task_is_refused_before_work(induction, fn):
    # the issue: a one-example task gave NaN intervals (or a stats error after every run)
    one = fl.tasks.build("induction", induction, n=1, seed=0)
    call = {
        **PATCHERS,
        "circuits.exact": lambda m, t: fl.circuits.exact(m, t),
        "circuits.faithfulness": lambda m, t: fl.circuits.faithfulness(m, t, []),
    }[fn]
    with no_forward(induction), pytest.raises(ArgumentError) as e:
        call(induction, one)
    _check(e, "task='induction (1 example)'", "at least 2 examples", "n >= 2")


HEADLESS = [
    ("BertForSequenceClassification", "a classifier"),
    ("GPT2ForSequenceClassification", "a classifier"),
    ("GPT2Model", "a bare transformer"),
]


@pytest.mark.parametrize(("cls", "what"), HEADLESS, ids=[h[0] for h in HEADLESS])
def test_sequence_classifiers_and_bare_models_have_no_answer_logits(no_run, cls, what):
    # the index-dimension RuntimeError: fl.patch on a BERT sequence classifier
    import transformers
    from transformers import BertConfig, GPT2Config

    torch.manual_seed(0)
    cfg = (
        BertConfig(
            num_hidden_layers=2,
            num_attention_heads=2,
            hidden_size=16,
            intermediate_size=32,
            vocab_size=50,
            max_position_embeddings=16,
        )
        if cls.startswith("Bert")
        else GPT2Config(n_layer=2, n_head=2, n_embd=16, vocab_size=50, n_positions=16)
    )
    m = fl.wrap(getattr(transformers, cls)(cfg).eval())
    t = fl.tasks.random_token_task(m, 4, 5, seed=0)
    for fn in ("patch", "attribution_patch"):
        with pytest.raises(InputError) as e:
            PATCHERS[fn](m, t)
        _check(e, fn, cls, "no language-model head", what, "ForCausalLM")


@pytest.mark.parametrize("fn", sorted(PATCHERS))
def test_clean_equal_to_corrupt(induction, task, no_run, fn):
    same = dataclasses.replace(task, corrupt=task.clean)
    with pytest.raises(InputError) as e:
        PATCHERS[fn](induction, same)
    _check(e, "degenerate", "identical in every example")


@pytest.mark.parametrize("fn", sorted(PATCHERS))
def test_identical_answers(induction, task, no_run, fn):
    a = task.answers[:, :1].repeat(1, 2)
    with pytest.raises(InputError) as e:
        PATCHERS[fn](induction, dataclasses.replace(task, answers=a))
    _check(e, "degenerate", "correct answer equals its wrong answer")


def test_identical_answers_fine_for_logprob(induction, task):
    a = task.answers[:, :1].repeat(1, 2)
    t = dataclasses.replace(task, answers=a).with_metric("logprob")
    assert t.degenerate() is None


@pytest.mark.parametrize("fn", sorted(PATCHERS))
def test_runs_that_agree_give_nan_and_a_warning(induction, task, fn):
    # The corruption lies after every metric position: in a causal model the clean and
    # corrupted runs agree where the metric reads, so every normalised effect is 0 / 0.
    ids = task.clean.ids.clone()
    ids[:, -1] = (ids[:, -1] + 1) % 128
    late = dataclasses.replace(
        task,
        corrupt=Inputs(ids=ids, mask=task.clean.mask),
        positions=torch.full_like(task.positions, ids.shape[1] - 2),
    )
    with pytest.warns(RuntimeWarning, match="same mean metric"):
        res = PATCHERS[fn](induction, late, n_boot=50)
    assert "same mean metric" in res.meta["degenerate"]
    for col in (res.effect, res.se, res.ci_low, res.ci_high):
        assert np.isnan(col).all()


@pytest.fixture(scope="module")
def result(induction, task):
    return fl.patch(induction, task, ["head.1.0", "head.1.1", "head.0.2"], n_boot=50)


@pytest.mark.parametrize(
    "call, shown",
    [
        (lambda r: r.top(-3), "k=-3"),
        (lambda r: r.top(1.5), "k=1.5"),
        (lambda r: r.top(3, by="size"), "by='size'"),
        (lambda r: r.summary(k=-1), "k=-1"),
        (lambda r: r.interventions(top=-1), "top=-1"),
        (lambda r: r.interventions(top=0), "top=0"),
        (lambda r: r.interventions(top=2, source="noisy"), "source='noisy'"),
    ],
)
def test_result_accessors(result, call, shown):
    with pytest.raises(ArgumentError) as e:
        call(result)
    _check(e, shown)


def test_result_accessors_valid(result):
    assert len(result.top(2)) == 2 and len(result.top(0)) == 0 and len(result.top(9)) == 3
    assert [iv.site_spec.name for iv in result.interventions(top=1)] == [result.top(1)["site"][0]]


def test_valid_patch_has_no_degenerate_note(induction, task):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        res = fl.patch(induction, task, ["head.1.0", "head.1.1"], n_boot=50)
    assert "degenerate" not in res.meta and np.isfinite(res.effect).all()


# ---------------------------------------------------------------------------------------------
# the divergence audit
# ---------------------------------------------------------------------------------------------

BAD_AUDIT_ARGS = [
    ({"threshold": math.nan}, "threshold=nan"),
    ({"threshold": math.inf}, "threshold=inf"),
    ({"threshold": "0"}, "threshold='0'"),
    ({"n_splits": 1}, "n_splits=1"),
    ({"n_splits": 0}, "n_splits=0"),
    ({"n_splits": 2.5}, "n_splits=2.5"),
    ({"max_points": 1}, "max_points=1"),
    ({"max_points": -10}, "max_points=-10"),
    ({"seed": -1}, "seed=-1"),
    ({"rtol": 0.0}, "rtol=0.0"),
    ({"rtol": math.nan}, "rtol=nan"),
    ({"paired": "yes"}, "paired='yes'"),
    ({"positions": "middle"}, "positions='middle'"),
    ({"positions": 1.5}, "positions=1.5"),
    ({"base": "neither"}, "base='neither'"),
    ({"natural": "neither"}, "natural='neither'"),
    ({"split_metrics": "emd"}, "split_metrics='emd'"),
]


@pytest.mark.parametrize("kwargs, shown", BAD_AUDIT_ARGS)
def test_audit_arguments(induction, task, no_run, kwargs, shown):
    with pytest.raises(ArgumentError) as e:
        fl.audit(induction, task, [fl.Zero("head.0.0")], "resid_post.1", **kwargs)
    _check(e, shown)


@pytest.mark.parametrize("kwargs", [{"split_metrics": ["emd", "bogus"]}, {"metrics": ["bogus"]}])
def test_audit_unknown_metrics(induction, task, no_run, kwargs):
    with pytest.raises(InputError) as e:
        fl.audit(induction, task, [fl.Zero("head.0.0")], "resid_post.1", **kwargs)
    _check(e, "unknown divergence metric", "'bogus'")


@pytest.mark.parametrize(
    "site, ivs, words",
    [
        ("resid_pre.0", [fl.Zero("head.1.0")], ["resid_pre.0", "head.1.0", "resid_post.1"]),
        (
            "resid_pre.1",
            [fl.Zero("head.1.2"), fl.Patch("head.1.3", source="clean")],
            ["resid_pre.1", "head.1.2, head.1.3", "resid_post.1"],
        ),
        ("head.1.1", [fl.Zero("head.1.0")], ["head.1.1", "head.1.0", "resid_post.1"]),
        ("q.0.0", [fl.Zero("k.0.0")], ["q.0.0", "k.0.0", "resid_post.0"]),
        ("resid_post.0", [fl.Zero("resid_pre.1")], ["resid_post.0", "resid_pre.1"]),
        ("embed", [fl.Zero("resid_pre.0")], ["embed", "resid_pre.0", "resid_post.0"]),
    ],
)
def test_audit_site_upstream_of_every_intervention(induction, task, no_run, site, ivs, words):
    with pytest.raises(SiteError) as e:
        fl.audit(induction, task, ivs, site)
    _check(e, "upstream of every intervention", *words)


def test_audit_names_the_unreachable_condition(induction, task, no_run):
    conds = {"early": [fl.Zero("head.0.0")], "late": [fl.Zero("head.1.0")]}
    with pytest.raises(SiteError) as e:
        fl.audit(induction, task, conds, "resid_post.0")
    _check(e, "'late'", "head.1.0")


def test_audit_task_from_another_vocabulary(task, no_run):
    with pytest.raises(InputError) as e:
        fl.audit(_paren(), task, [fl.Zero("head.0.0")], "resid_post.1")
    _check(e, "audit", "token id", "vocabulary of 5")


def test_audit_partly_reachable_condition_is_noted(induction, task):
    res = fl.audit(
        induction,
        task,
        [fl.Zero("head.0.0"), fl.Zero("head.1.0")],
        "resid_post.0",
        metrics=["emd"],
        split_metrics=["emd"],
        n_splits=2,
    )
    assert any("1 of 2 interventions (head.1.0)" in n for n in res.notes)


def test_divergences_checks_its_splits():
    x = torch.randn(20, 3)
    for kw, shown in (({"n_splits": 1}, "n_splits=1"), ({"max_points": 0}, "max_points=0")):
        with pytest.raises(ArgumentError) as e:
            fl.divergences(x, x, metrics=["emd"], **kw)
        _check(e, shown)
