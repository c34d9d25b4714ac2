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
