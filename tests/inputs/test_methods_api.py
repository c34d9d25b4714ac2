"""Every bad argument of the method entry points (DAS, neurons, representations, scrubbing,
the zoo) is refused up front: a FaithlensError naming the argument and the value, raised before
any expensive work (the expensive function is replaced by one that raises)."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
from torch import nn

import faithlens as fl
from faithlens.errors import ArgumentError, FaithlensError

T = importlib.import_module("faithlens.das.train")


class Expensive(AssertionError):
    """Raised by the monkeypatched expensive function: validation came too late."""


def expensive(*_a, **_k):
    raise Expensive("expensive work ran")


def assert_refused(exc: pytest.ExceptionInfo, *names: str) -> None:
    msg = str(exc.value)
    assert isinstance(exc.value, FaithlensError)
    for name in names:
        assert name in msg, (name, msg)


# ---------------------------------------------------------------- DAS


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 3))

    def forward(self, x):
        return self.net(x)


@pytest.fixture(scope="module")
def das_setup():
    torch.manual_seed(0)
    m = fl.wrap(_Net(), sites={"h": "net.1:in"}, name="tiny")
    g = torch.Generator().manual_seed(0)
    data = fl.InterchangeData(
        base=torch.randn(8, 4, generator=g),
        source=torch.randn(8, 4, generator=g),
        labels=torch.randint(0, 3, (8,), generator=g),
    )
    return m, data


DAS_BAD = [
    ({"lr": math.nan}, "lr", "nan"),
    ({"lr": math.inf}, "lr", "inf"),
    ({"lr": -1.0}, "lr", "-1.0"),
    ({"lr": 0.0}, "lr", "0.0"),
    ({"boundary_lr": -0.1}, "boundary_lr", "-0.1"),
    ({"batch_size": 0}, "batch_size", "0"),
    ({"batch_size": -4}, "batch_size", "-4"),
    ({"method": "rotatoin"}, "method", "rotatoin"),
    ({"loss": "kl"}, "loss", "kl"),
    ({"cl_form": "x"}, "cl_form", "'x'"),
    ({"select": "best"}, "select", "best"),
    ({"dims": 0}, "dims", "0"),
    ({"dims": -2}, "dims", "-2"),
    ({"dims": [0, 0]}, "dims", "[0, 0]"),
    ({"dims": []}, "dims", "[]"),
    ({"dims": [-1]}, "dims", "-1"),
    ({"dims": "01"}, "dims", "01"),
    ({"temperature": (0, 0)}, "temperature", "0"),
    ({"temperature": (50.0, -0.1)}, "temperature", "-0.1"),
    ({"temperature": (50.0,)}, "temperature", "(50.0,)"),
    ({"temperature": (math.nan, 0.1)}, "temperature", "nan"),
    ({"eval_every": 0}, "eval_every", "0"),
    ({"epochs": 0}, "epochs", "0"),
    ({"epochs": -3}, "epochs", "-3"),
    ({"epochs": 2.5}, "epochs", "2.5"),
    ({"cl_weight": math.nan}, "cl_weight", "nan"),
    ({"cl_weight": -1.0}, "cl_weight", "-1.0"),
    ({"loss": "cl", "cl_weight": 0.0}, "cl_weight", "0.0"),
    ({"cl_dims": [[0], [0, 0]]}, "cl_dims", "[0, 0]"),
    ({"cl_dims": []}, "cl_dims", "[]"),
    ({"emd_dims": [-1]}, "emd_dims", "-1"),
    ({"emd_dims": [1, 1]}, "emd_dims", "[1, 1]"),
    ({"width_weight": math.inf}, "width_weight", "inf"),
    ({"checkpoint_every": 0}, "checkpoint_every", "0"),
    ({"seed": -1}, "seed", "-1"),
    ({"alignment": "rotation"}, "alignment", "str"),
    ({"progress": 3}, "progress", "3"),
]


@pytest.mark.parametrize(("kwargs", "name", "value"), DAS_BAD, ids=[str(c[0]) for c in DAS_BAD])
def test_das_refuses_bad_arguments_before_any_forward_pass(
    das_setup, monkeypatch, kwargs, name, value
):
    m, data = das_setup
    monkeypatch.setattr(T, "source_activations", expensive)
    monkeypatch.setattr(T, "base_resume", expensive)
    with pytest.raises(ArgumentError) as e:
        fl.das(m, data, "h", **kwargs)
    assert_refused(e, name, value)


def test_das_refuses_one_example_and_wrong_types(das_setup, monkeypatch):
    m, data = das_setup
    monkeypatch.setattr(T, "source_activations", expensive)
    one = fl.InterchangeData(base=data.base[:1], source=data.source[:1], labels=data.labels[:1])
    with pytest.raises(ArgumentError) as e:
        fl.das(m, one, "h")
    assert_refused(e, "len(data)", "1", "at least 2")
    with pytest.raises(ArgumentError) as e:
        fl.das(m, {"base": data.base}, "h")
    assert_refused(e, "data", "dict")
    with pytest.raises(ArgumentError) as e:
        fl.das(_Net(), data, "h")
    assert_refused(e, "model", "_Net")


def test_das_width_dependent_checks_still_name_the_width(das_setup):
    m, data = das_setup
    with pytest.raises(fl.ShapeError, match="between 1 and the site width 4"):
        fl.das(m, data, "h", dims=5, epochs=1)
    with pytest.raises(fl.ShapeError, match=r"cl_dims \[\[0\], \[7\]\] out of range"):
        fl.das(m, data, "h", epochs=1, cl_dims=[[0], [7]])


def test_das_valid_arguments_unchanged(das_setup):
    m, data = das_setup
    a = fl.das(m, data, "h", dims=[1, 2], epochs=3, lr=0.05, batch_size=3, seed=2)
    b = fl.das(m, data, "h", dims=[1, 2], epochs=3.0, lr=0.05, batch_size=3, seed=2)
    assert a.iia == b.iia and (a.alignment_params == b.alignment_params).all()
    assert a.history.equals(b.history)


@pytest.mark.parametrize(
    ("kwargs", "name", "value"),
    [
        ({"batch_size": 0}, "batch_size", "0"),
        ({"seed": -5}, "seed", "-5"),
        ({"blur": 0.0}, "blur", "0.0"),
    ],
)
def test_evaluate_alignment_refuses_bad_arguments(das_setup, monkeypatch, kwargs, name, value):
    from faithlens.das.alignment import make_alignment

    m, data = das_setup
    monkeypatch.setattr(T, "source_activations", expensive)
    with pytest.raises(ArgumentError) as e:
        T.evaluate_alignment(m, make_alignment("rotation", 4), data, "h", dims=[0], **kwargs)
    assert_refused(e, name, value)


SYN_BAD = [
    ({"classifier_epochs": 0}, "classifier_epochs", "0"),
    ({"classifier_epochs": -1}, "classifier_epochs", "-1"),
    ({"classifier_patience": 0}, "classifier_patience", "0"),
    ({"n_per_class": 1}, "n_per_class", "1"),
    ({"extra_dims": -1}, "extra_dims", "-1"),
    ({"noise": math.nan}, "noise", "nan"),
    ({"noise": -0.1}, "noise", "-0.1"),
    ({"seed": -1}, "seed", "-1"),
]


@pytest.mark.parametrize(("kwargs", "name", "value"), SYN_BAD, ids=[str(c[0]) for c in SYN_BAD])
def test_synthetic_das_refuses_bad_arguments_before_training(monkeypatch, kwargs, name, value):
    import faithlens.tasks.synthetic_das as S

    monkeypatch.setattr(S, "train_classifier", expensive)
    monkeypatch.setattr(S, "natural_features", expensive)
    with pytest.raises(ArgumentError) as e:
        S.synthetic_das("og_holdouts", **kwargs)
    assert_refused(e, name, value)


@pytest.mark.parametrize(
    ("kwargs", "name", "value"),
    [
        ({"epochs": 0}, "epochs", "0"),
        ({"patience": 0}, "patience", "0"),
        ({"lr": math.nan}, "lr", "nan"),
        ({"batch_size": 0}, "batch_size", "0"),
        ({"weight_decay": -1.0}, "weight_decay", "-1.0"),
    ],
)
def test_train_classifier_refuses_bad_arguments(kwargs, name, value):
    import numpy as np

    from faithlens.tasks.synthetic_das import train_classifier

    h = np.zeros((20, 3), dtype=np.float32)
    with pytest.raises(ArgumentError) as e:
        train_classifier(h, np.zeros(20, dtype=np.int64), 2, seed=0, **kwargs)
    assert_refused(e, name, value)


# ---------------------------------------------------------------- scrubbing


class _Op(nn.Module):
    def __init__(self, f):
        super().__init__()
        self.f = f

    def forward(self, *a):
        return self.f(*a)


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.A = _Op(lambda a: 2 * a)
        self.B = _Op(lambda b: 3 * b)
        self.C = _Op(lambda a, b: a + b)

    def forward(self, x0, x1):
        return self.C(self.A(x0), self.B(x1))


def _scrub_setup(rows: int = 50):
    from faithlens import scrubbing as sc

    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 10, (rows, 2), generator=g).float()
    data = sc.ScrubData(x0=x[:, :1], x1=x[:, 1:], y=2 * x[:, :1] + 3 * x[:, 1:])
    h = sc.Hypothesis("A only")
    h.add("A", sc.to("A"), feature=lambda d: d["x0"][:, 0])
    return fl.wrap(_Toy()), h, data, sc.MSE("y")


SCRUB_BAD = [
    ({"n": 1}, "n", "1"),
    ({"n": 0}, "n", "0"),
    ({"n": -3}, "n", "-3"),
    ({"n": 2.5}, "n", "2.5"),
    ({"seed": -1}, "seed", "-1"),
    ({"batch_size": 0}, "batch_size", "0"),
    ({"n_boot": 1}, "n_boot", "1"),
    ({"n_boot": 0}, "n_boot", "0"),
    ({"level": 1.0}, "level", "1.0"),
    ({"level": 95}, "level", "95"),
    ({"level": math.nan}, "level", "nan"),
    ({"progress": "yes"}, "progress", "yes"),
]


@pytest.mark.parametrize(("kwargs", "name", "value"), SCRUB_BAD, ids=[str(c[0]) for c in SCRUB_BAD])
def test_scrub_refuses_bad_arguments_before_planning(monkeypatch, kwargs, name, value):
    E = importlib.import_module("faithlens.scrubbing.evaluate")

    m, h, data, beh = _scrub_setup()
    monkeypatch.setattr(E, "prepare", expensive)
    monkeypatch.setattr(E, "run_prepared", expensive)
    with pytest.raises(ArgumentError) as e:
        fl.scrub(m, data, h, behaviour=beh, **kwargs)
    assert_refused(e, name, value)


def test_scrub_refuses_a_one_row_pool_before_running(monkeypatch):
    E = importlib.import_module("faithlens.scrubbing.evaluate")

    m, h, data, beh = _scrub_setup(rows=1)
    monkeypatch.setattr(E, "run_prepared", expensive)
    with pytest.raises(ArgumentError) as e:
        fl.scrub(m, data, h, behaviour=beh)
    assert_refused(e, "data", "1 row", "at least 2")
    prep = E.prepare(m, h, data, behaviour=beh)  # a dry run of one row is fine
    with pytest.raises(ArgumentError) as e:
        E.finish(prep)
    assert_refused(e, "n=1", "at least 2")


def test_scrub_valid_arguments_unchanged():
    m, h, data, beh = _scrub_setup()
    a = fl.scrub(m, data, h, n=40, behaviour=beh, n_boot=50, seed=3)
    b = fl.scrub(m, data, h, n=40.0, behaviour=beh, n_boot=50, seed=3)
    assert a.table.equals(b.table) and (a.scrubbed == b.scrubbed).all()


ADV_BAD = [
    ({"budget": 0}, "budget", "0"),
    ({"budget": -1}, "budget", "-1"),
    ({"steps": 0}, "steps", "0"),
    ({"steps": -2}, "steps", "-2"),
    ({"min_z": math.nan}, "min_z", "nan"),
    ({"min_z": -1.0}, "min_z", "-1.0"),
    ({"n": 1}, "n", "1"),
    ({"seed": -4}, "seed", "-4"),
    ({"batch_size": -1}, "batch_size", "-1"),
]


@pytest.mark.parametrize(("kwargs", "name", "value"), ADV_BAD, ids=[str(c[0]) for c in ADV_BAD])
def test_adversary_refuses_bad_arguments_before_any_scrub(monkeypatch, kwargs, name, value):
    from faithlens import scrubbing as sc

    A = importlib.import_module("faithlens.scrubbing.adversary")
    m, h, data, beh = _scrub_setup()
    monkeypatch.setattr(A, "prepare", expensive)
    monkeypatch.setattr(A, "finish", expensive)
    monkeypatch.setattr(A, "as_model", expensive)
    with pytest.raises(ArgumentError) as e:
        sc.adversary(m, data, h, behaviour=beh, features={"x1": lambda d: d["x1"][:, 0]}, **kwargs)
    assert_refused(e, name, value)


@pytest.mark.parametrize(
    ("kwargs", "name", "value"),
    [
        ({"bandwidth": 0}, "bandwidth", "0"),
        ({"bandwidth": math.nan}, "bandwidth", "nan"),
        ({"bandwidth": "wide"}, "bandwidth", "wide"),
        ({"bandwidth": 1.0, "kernel": "tophat"}, "kernel", "tophat"),
    ],
)
def test_kernel_sampler_refuses_bad_arguments(kwargs, name, value):
    from faithlens import scrubbing as sc

    with pytest.raises(ArgumentError) as e:
        sc.Kernel(lambda d: d["x0"], **kwargs)
    assert_refused(e, name, value)


def test_samplers_refuse_an_empty_pool():
    import numpy as np

    from faithlens import scrubbing as sc
    from faithlens.scrubbing.data import Table

    _, _, data, _ = _scrub_setup(rows=5)
    t = Table(data)
    t.source[:] = False  # every row generated: nothing to draw from
    ref = np.arange(3)
    for s in (
        sc.Random(),
        sc.SameFeature(lambda d: d["x0"][:, 0]),
        sc.Kernel(lambda d: d["x0"], 1.0),
    ):
        with pytest.raises(fl.InputError, match="pool to sample from is empty"):
            s.draw(t, ref, np.zeros(3), np.random.default_rng(0), "test")


# ---------------------------------------------------------------- zoo


ZOO_BAD = [
    ({"threads": 0}, "threads", "0"),
    ({"threads": -2}, "threads", "-2"),
    ({"seed": -1}, "seed", "-1"),
    ({"until": -1}, "until", "-1"),
    ({"device": "gpu"}, "device", "gpu"),
    ({"progress": 5}, "progress", "5"),
]


@pytest.mark.parametrize(("kwargs", "name", "value"), ZOO_BAD, ids=[str(c[0]) for c in ZOO_BAD])
def test_zoo_train_refuses_bad_arguments_before_building(
    tmp_path, monkeypatch, kwargs, name, value
):
    from faithlens import zoo

    training = importlib.import_module("faithlens.zoo.training")
    monkeypatch.setattr(training, "ZooTransformer", expensive)
    with pytest.raises(ArgumentError) as e:
        zoo.train(zoo.recipe("paren"), tmp_path / "run", **kwargs)
    assert_refused(e, name, value)
    assert not (tmp_path / "run").exists()  # nothing written


def test_zoo_train_refuses_a_file_as_folder_and_a_non_recipe(tmp_path, monkeypatch):
    from faithlens import zoo

    training = importlib.import_module("faithlens.zoo.training")
    monkeypatch.setattr(training, "ZooTransformer", expensive)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ArgumentError) as e:
        zoo.train(zoo.recipe("paren"), f)
    assert_refused(e, "out_dir", "file")
    with pytest.raises(ArgumentError) as e:
        zoo.train("paren", tmp_path / "run")
    assert_refused(e, "recipe", "str")


SCHEDULE_BAD = [
    ({"steps": 0}, "Schedule.steps", "0"),
    ({"batch_size": -1}, "Schedule.batch_size", "-1"),
    ({"lr": math.nan}, "Schedule.lr", "nan"),
    ({"lr": 0.0}, "Schedule.lr", "0.0"),
    ({"warmup": -1}, "Schedule.warmup", "-1"),
    ({"min_lr_ratio": 1.5}, "Schedule.min_lr_ratio", "1.5"),
    ({"weight_decay": -0.1}, "Schedule.weight_decay", "-0.1"),
    ({"betas": (0.9, 1.0)}, "Schedule.betas", "1.0"),
    ({"betas": (0.9,)}, "Schedule.betas", "(0.9,)"),
    ({"grad_clip": 0.0}, "Schedule.grad_clip", "0.0"),
    ({"eval_every": -1}, "Schedule.eval_every", "-1"),
    ({"checkpoint_every": 0}, "Schedule.checkpoint_every", "0"),
    ({"log_every": 0}, "Schedule.log_every", "0"),
]


@pytest.mark.parametrize(
    ("kwargs", "name", "value"), SCHEDULE_BAD, ids=[str(c[0]) for c in SCHEDULE_BAD]
)
def test_zoo_schedule_refuses_bad_settings(kwargs, name, value):
    from faithlens.zoo.training import Schedule

    with pytest.raises(ArgumentError) as e:
        Schedule(**{"steps": 10, "batch_size": 4, **kwargs})
    assert_refused(e, name, value)


# ---------------------------------------------------------------- neurons


def _probe_data():
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(60, 5, generator=g)
    con = (torch.rand(60, 3, generator=g) < 0.3).float()
    return acts, con


EXPLAIN_BAD = [
    ({"n_boot": 1}, "n_boot", "1"),
    ({"n_boot": -1}, "n_boot", "-1"),
    ({"level": 1.0}, "level", "1.0"),
    ({"level": math.nan}, "level", "nan"),
    ({"delta": 0.0}, "delta", "0.0"),
    ({"alpha": 0.0}, "alpha", "0.0"),
    ({"alpha": math.nan}, "alpha", "nan"),
    ({"threshold": math.inf}, "threshold", "inf"),
    ({"holdout": 1.0}, "holdout", "1.0"),
    ({"holdout": -0.5}, "holdout", "-0.5"),
    ({"direction": "both"}, "direction", "both"),
    ({"interval": "wald"}, "interval", "wald"),
    ({"bound": "exact"}, "bound", "exact"),
    ({"seed": -1}, "seed", "-1"),
    ({"max_memory": 0}, "max_memory", "0"),
    ({"progress": 1}, "progress", "1"),
    ({"device": "gpu"}, "device", "gpu"),
]


@pytest.mark.parametrize(
    ("kwargs", "name", "value"), EXPLAIN_BAD, ids=[str(c[0]) for c in EXPLAIN_BAD]
)
def test_neurons_explain_refuses_bad_arguments_before_work(monkeypatch, kwargs, name, value):
    E = importlib.import_module("faithlens.neurons.explain")
    monkeypatch.setattr(E, "as_activations", expensive)
    monkeypatch.setattr(E, "run_explain", expensive)
    acts, con = _probe_data()
    with pytest.raises(ArgumentError) as e:
        fl.neurons.explain(acts, con, "iou", **kwargs)
    assert_refused(e, name, value)


@pytest.mark.parametrize(
    ("units", "value"),
    [
        ([7], "7"),
        ([-1], "-1"),
        ([], "[]"),
        ([1, 1], "[1, 1]"),
        (slice(2, 99), "2:99"),
        (slice(3, 3), "slice(3, 3"),
    ],
)
def test_activations_units_refuses_missing_units(units, value):
    acts, _ = _probe_data()
    with pytest.raises(ArgumentError) as e:
        fl.neurons.Activations(acts).units(units)
    assert_refused(e, "units", value)


def test_activations_units_valid_selection_unchanged():
    acts, _ = _probe_data()
    a = fl.neurons.Activations(acts)
    assert torch.equal(a.units([4, 0]).values, acts[:, [4, 0]])
    assert torch.equal(a.units(slice(1, 3)).values, acts[:, 1:3])


# ---------------------------------------------------------------- representations

READ_BAD = [
    ({"method": "svm"}, "method", "svm"),
    ({"level": 0.3}, "level", "0.3"),
    ({"level": math.nan}, "level", "nan"),
    ({"n_stability": -1}, "n_stability", "-1"),
    ({"n_boot": 1}, "n_boot", "1"),
    ({"seed": -1}, "seed", "-1"),
    ({"batch_size": 0}, "batch_size", "0"),
    ({"test": 1.5}, "test", "1.5"),
    ({"test": 0.0}, "test", "0.0"),
    ({"position": "first"}, "position", "first"),
    ({"position": 3}, "position", "3"),
    ({"progress": 7}, "progress", "7"),
]


@pytest.mark.parametrize(("kwargs", "name", "value"), READ_BAD, ids=[str(c[0]) for c in READ_BAD])
def test_represent_read_refuses_bad_arguments_before_collecting(monkeypatch, kwargs, name, value):
    from faithlens.representations import ContrastPairs, read

    R = importlib.import_module("faithlens.representations.reading")
    monkeypatch.setattr(R, "collect", expensive)
    pairs = ContrastPairs(
        positive=[f"yes {i}" for i in range(8)], negative=[f"no {i}" for i in range(8)]
    )
    with pytest.raises(ArgumentError) as e:
        read(object(), pairs, **kwargs)
    assert_refused(e, name, value)


def _planted_reading():
    from tests.helpers.represent import planted, planted_reading

    return planted(), planted_reading("pca")


FAITH_BAD = [
    ({"coef": math.nan}, "coef", "nan"),
    ({"coef": 0.0}, "coef", "0.0"),
    ({"coef": -1.0}, "coef", "-1.0"),
    ({"prompt": "first"}, "prompt", "first"),
    ({"metric": "accuracy"}, "metric", "accuracy"),
    ({"min_effect": -0.1}, "min_effect", "-0.1"),
    ({"n_random": -1}, "n_random", "-1"),
    ({"n_stability": -1}, "n_stability", "-1"),
    ({"stable_threshold": 2.0}, "stable_threshold", "2.0"),
    ({"max_divergence_ratio": 0.0}, "max_divergence_ratio", "0.0"),
    ({"persistence_tokens": 0}, "persistence_tokens", "0"),
    ({"persistence_tokens": -1}, "persistence_tokens", "-1"),
    ({"alpha": 1.0}, "alpha", "1.0"),
    ({"n_boot": 1}, "n_boot", "1"),
    ({"level": 1.0}, "level", "1.0"),
    ({"seed": -1}, "seed", "-1"),
    ({"batch_size": 0}, "batch_size", "0"),
]


@pytest.mark.parametrize(("kwargs", "name", "value"), FAITH_BAD, ids=[str(c[0]) for c in FAITH_BAD])
def test_represent_faithfulness_refuses_bad_arguments_before_measuring(
    monkeypatch, kwargs, name, value
):
    C = importlib.import_module("faithlens.representations.checks")
    pm, reading = _planted_reading()
    beh = pm.behaviour(4)
    for f in ("measure", "compare", "specificity", "persistence", "generate"):
        monkeypatch.setattr(C, f, expensive)
    with pytest.raises(ArgumentError) as e:
        C.faithfulness(pm.model, beh, reading, layers=[1], checks=["causal"], **kwargs)
    assert_refused(e, name, value)


COMPARE_BAD = [
    ({"n_boot": 0}, "n_boot", "0"),
    ({"level": 0.0}, "level", "0.0"),
    ({"seed": -1}, "seed", "-1"),
    ({"batch_size": 0}, "batch_size", "0"),
    ({"metric": "bleu"}, "metric", "bleu"),
    ({"metric": "rate", "max_new_tokens": -1}, "max_new_tokens", "-1"),
    ({"metric": "rate", "max_new_tokens": 0}, "max_new_tokens", "0"),
]


@pytest.mark.parametrize(
    ("kwargs", "name", "value"), COMPARE_BAD, ids=[str(c[0]) for c in COMPARE_BAD]
)
def test_represent_compare_refuses_bad_arguments_before_measuring(monkeypatch, kwargs, name, value):
    C = importlib.import_module("faithlens.representations.checks")
    pm, reading = _planted_reading()
    monkeypatch.setattr(C, "measure", expensive)
    with pytest.raises(ArgumentError) as e:
        C.compare(pm.model, pm.behaviour(4), [reading.steering([1], 1.0)], **kwargs)
    assert_refused(e, name, value)


SIMULATE_BAD = [
    ({"n_boot": 1}, "n_boot", "1"),
    ({"level": 1.0}, "level", "1.0"),
    ({"delta": math.nan}, "delta", "nan"),
    ({"interval": "wald"}, "interval", "wald"),
    ({"seed": -1}, "seed", "-1"),
    ({"alpha": 0.0}, "alpha", "0.0"),
    ({"max_memory": 0}, "max_memory", "0"),
]


@pytest.mark.parametrize(
    ("kwargs", "name", "value"), SIMULATE_BAD, ids=[str(c[0]) for c in SIMULATE_BAD]
)
def test_neurons_simulate_refuses_bad_arguments_before_sampling(monkeypatch, kwargs, name, value):
    S = importlib.import_module("faithlens.neurons.simulate")
    monkeypatch.setattr(S, "Design", expensive)
    with pytest.raises(ArgumentError) as e:
        S.simulate(["iou"], [100], **kwargs)
    assert_refused(e, name, value)


@pytest.mark.parametrize(
    ("kwargs", "name", "value"),
    [
        ({"eps": 0.0}, "eps", "0.0"),
        ({"tol": -1.0}, "tol", "-1.0"),
        ({"seed": -1}, "seed", "-1"),
        ({"direction": "both"}, "direction", "both"),
        ({"max_memory": -5}, "max_memory", "-5"),
        ({"frequencies": (0.6,)}, "frequencies", "0.6"),
        ({"frequencies": ()}, "frequencies", "()"),
        ({"frequencies": (0.1, 0.001)}, "frequencies", "0.001"),  # 1 positive at n=1000
    ],
)
def test_neurons_sanity_refuses_bad_arguments_before_running(monkeypatch, kwargs, name, value):
    S = importlib.import_module("faithlens.neurons.sanity")
    monkeypatch.setattr(S, "full_pass", expensive)
    monkeypatch.setattr(S, "Problem", expensive)
    with pytest.raises(ArgumentError) as e:
        S.sanity_checks(["iou"], n=1000, seeds=2, **kwargs)
    assert_refused(e, name, value)


def test_reading_steering_and_scan_refuse_bad_arguments(monkeypatch):
    pm, reading = _planted_reading()
    with pytest.raises(ArgumentError) as e:
        reading.steering([1], math.nan)
    assert_refused(e, "coef", "nan")
    with pytest.raises(ArgumentError) as e:
        reading.steering([], 1.0)
    assert_refused(e, "layers", "[]")
    with pytest.raises(ArgumentError) as e:
        reading.ablation([])
    assert_refused(e, "layers", "[]")
    R = importlib.import_module("faithlens.representations.reading")
    monkeypatch.setattr(R, "encode", expensive)
    with pytest.raises(ArgumentError) as e:
        reading.scan(pm.model, ["a b"], batch_size=0)
    assert_refused(e, "batch_size", "0")
    with pytest.raises(ArgumentError) as e:
        reading.scan(pm.model, ["a b"], layers=[])
    assert_refused(e, "layers", "[]")


@pytest.mark.parametrize(
    ("kwargs", "name", "value"),
    [
        ({"device": "gpu"}, "device", "gpu"),
        ({"dtype": torch.int64}, "dtype", "torch.int64"),
        ({"dtype": "float32"}, "dtype", "float32"),
    ],
)
def test_zoo_load_refuses_bad_arguments_before_reading_weights(monkeypatch, kwargs, name, value):
    from faithlens import zoo

    Z = importlib.import_module("faithlens.zoo")
    monkeypatch.setattr(Z, "load_weights", expensive)
    with pytest.raises(ArgumentError) as e:
        zoo.load("paren", **kwargs)
    assert_refused(e, name, value)


RUN_CL_BAD = [
    ({"divisions": ["og_holdouts", "nope"]}, "divisions", "nope"),
    ({"divisions": "og_holdouts"}, "divisions", "og_holdouts"),
    ({"seeds": []}, "seeds", "[]"),
    ({"seeds": [1, -2]}, "seeds", "-2"),
    ({"losses": ["DAS", "KL"]}, "losses", "KL"),
    ({"epochs": 0}, "epochs", "0"),
    ({"eval_every": 0}, "eval_every", "0"),
    ({"lr": math.nan}, "lr", "nan"),
    ({"cl_weight": 0.0}, "cl_weight", "0.0"),
    ({"method": "rotatoin"}, "method", "rotatoin"),
    ({"n_per_class": 1}, "n_per_class", "1"),
    ({"classifier_epochs": 0}, "classifier_epochs", "0"),
    ({"log": "print"}, "log", "print"),
]


@pytest.mark.parametrize(
    ("kwargs", "name", "value"), RUN_CL_BAD, ids=[str(c[0]) for c in RUN_CL_BAD]
)
def test_run_cl_synthetic_refuses_bad_arguments_before_training(monkeypatch, kwargs, name, value):
    S = importlib.import_module("faithlens.das.synthetic")
    monkeypatch.setattr(S, "synthetic_das", expensive)
    monkeypatch.setattr(S, "das", expensive)
    with pytest.raises(ArgumentError) as e:
        S.run_cl_synthetic(**kwargs)
    assert_refused(e, name, value)


DISSECT_BAD = [
    ({"quantile": 0.0}, "quantile", "0.0"),
    ({"quantile": math.nan}, "quantile", "nan"),
    ({"n_boot": 1}, "n_boot", "1"),
    ({"level": 1.0}, "level", "1.0"),
    ({"delta": -0.1}, "delta", "-0.1"),
    ({"interval": "wald"}, "interval", "wald"),
    ({"seed": -1}, "seed", "-1"),
    ({"batch_size": 0}, "batch_size", "0"),
    ({"device": "gpu"}, "device", "gpu"),
]


@pytest.mark.parametrize(
    ("kwargs", "name", "value"), DISSECT_BAD, ids=[str(c[0]) for c in DISSECT_BAD]
)
def test_neurons_dissect_refuses_bad_arguments_before_collecting(monkeypatch, kwargs, name, value):
    D = importlib.import_module("faithlens.neurons.dissect")
    monkeypatch.setattr(D, "collect_maps", expensive)
    monkeypatch.setattr(D, "_as_4d", expensive)
    with pytest.raises(ArgumentError) as e:
        D.dissect(
            "pool", torch.zeros(2, 1, 4, 4), model=object(), inputs=torch.zeros(2, 1), **kwargs
        )
    assert_refused(e, name, value)


@pytest.mark.parametrize(
    ("kwargs", "name", "value"),
    [
        ({"n": 1}, "n", "1"),
        ({"n": 0}, "n", "0"),
        ({"n": 10_000}, "n", "10000"),
        ({"seed": -1}, "seed", "-1"),
    ],
)
def test_represent_shipped_data_refuses_bad_sizes(kwargs, name, value):
    from faithlens.representations import fact_completion, honesty_pairs, truth_pairs

    for build in (
        lambda: truth_pairs(**kwargs),
        lambda: honesty_pairs(None, chat=False, **kwargs),
        lambda: fact_completion(None, chat=False, **kwargs),
    ):
        with pytest.raises(ArgumentError) as e:
            build()
        assert_refused(e, name, value)


def test_represent_specificity_without_random_directions_is_refused(monkeypatch):
    C = importlib.import_module("faithlens.representations.checks")
    pm, reading = _planted_reading()
    for f in ("measure", "compare", "specificity", "persistence", "generate"):
        monkeypatch.setattr(C, f, expensive)
    with pytest.raises(ArgumentError) as e:
        C.faithfulness(
            pm.model, pm.behaviour(4), reading, layers=[1], checks=["specific"], n_random=0
        )
    assert_refused(e, "n_random", "0")
    assert "n_random >= 19" in str(e.value)


# ------------------------------------------------------------------ logit lens and DLA

LENS_BAD = [
    ({"layers": [5]}, "layers", "5"),
    ({"layers": []}, "layers", "[]"),
    ({"site": "mlp_out"}, "site", "mlp_out"),
    ({"which": "both"}, "which", "both"),
    ({"n_boot": 0}, "n_boot", "0"),
    ({"level": 1.5}, "level", "1.5"),
    ({"seed": -1}, "seed", "-1"),
    ({"max_memory": 0}, "max_memory", "0"),
]


LENS_CASES = [("logit_lens", *c) for c in LENS_BAD] + [
    ("direct_logit_attribution", *c) for c in LENS_BAD if c[1] not in ("layers", "site")
]


@pytest.mark.parametrize(
    ("method", "kwargs", "name", "value"),
    LENS_CASES,
    ids=[f"{c[0]}-{c[1]}" for c in LENS_CASES],
)
def test_lenses_refuse_bad_arguments_before_any_forward_pass(
    tiny_gpt2, monkeypatch, method, kwargs, name, value
):
    from tests.helpers.tasks import padded_task

    model = fl.wrap(tiny_gpt2)
    task = padded_task(model)
    monkeypatch.setattr(fl.Model, "run", expensive)
    with pytest.raises(FaithlensError) as exc:
        getattr(fl, method)(model, task, **kwargs)
    assert_refused(exc, name, value)
