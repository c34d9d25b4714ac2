"""faithlens.validate: every shared argument check, good values normalised, bad values refused
with an ArgumentError naming the argument and the value."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from faithlens import validate
from faithlens.errors import ArgumentError, FaithlensError, InputError


@pytest.mark.parametrize(
    "fn, args, want",
    [
        (validate.positive_int, ("n", 3), 3),
        (validate.positive_int, ("n", 3.0), 3),
        (validate.positive_int, ("n", np.int64(7)), 7),
        (validate.nonnegative_int, ("seed", 0), 0),
        (validate.nonnegative_int, ("seed", 12), 12),
        (validate.int_in_range, ("layer", 2, 0, 2), 2),
        (validate.int_in_range, ("layer", 0, 0, 2), 0),
        (validate.finite_float, ("coef", 2), 2.0),
        (validate.finite_float, ("coef", -1.5), -1.5),
        (validate.finite_float, ("coef", np.float32(0.25)), 0.25),
        (validate.positive_float, ("lr", 1e-3), 1e-3),
        (validate.probability, ("p", 0.5), 0.5),
        (validate.level, (0.95,), 0.95),
        (validate.level, (0.5, "--level"), 0.5),
        (validate.n_boot, (2,), 2),
        (validate.n_boot, (1000, "--n-boot"), 1000),
        (validate.choice, ("direction", "noising", ("denoising", "noising")), "noising"),
        (validate.min_examples, ("n", 2), 2),
    ],
)
def test_good_values_are_normalised(fn, args, want):
    got = fn(*args)
    assert got == want and type(got) is type(want)


def test_probability_closed_interval_accepts_the_ends():
    assert validate.probability("p", 0.0, open_=False) == 0.0
    assert validate.probability("p", 1, open_=False) == 1.0


def test_finite_float_bounds():
    assert validate.finite_float("x", 1.0, low=1.0) == 1.0
    assert validate.finite_float("x", 1.0, high=1.0) == 1.0
    with pytest.raises(ArgumentError, match=r"x=1\.0: must be > 1\.0"):
        validate.finite_float("x", 1.0, low=1.0, low_open=True)
    with pytest.raises(ArgumentError, match=r"x=1\.0: must be < 1\.0"):
        validate.finite_float("x", 1.0, high=1.0, high_open=True)


@pytest.mark.parametrize(
    "fn, args, shown",
    [
        (validate.positive_int, ("--n", 0), "--n=0"),
        (validate.positive_int, ("--n", -3), "--n=-3"),
        (validate.positive_int, ("n", 2.5), "n=2.5"),
        (validate.positive_int, ("n", "4"), "n='4'"),
        (validate.positive_int, ("n", True), "n=True"),
        (validate.positive_int, ("n", None), "n=None"),
        (validate.nonnegative_int, ("--seed", -1), "--seed=-1"),
        (validate.nonnegative_int, ("seed", float("nan")), "seed=nan"),
        (validate.int_in_range, ("--layer", 99, 0, 29), "--layer=99"),
        (validate.int_in_range, ("--layer", -1, 0, 29), "--layer=-1"),
        (validate.finite_float, ("coef", float("nan")), "coef=nan"),
        (validate.finite_float, ("coef", float("inf")), "coef=inf"),
        (validate.finite_float, ("coef", -math.inf), "coef=-inf"),
        (validate.finite_float, ("coef", "1.0"), "coef='1.0'"),
        (validate.finite_float, ("coef", False), "coef=False"),
        (validate.positive_float, ("lr", 0.0), "lr=0.0"),
        (validate.positive_float, ("lr", -1e-3), "lr=-0.001"),
        (validate.probability, ("p", 0.0), "p=0.0"),
        (validate.probability, ("p", 1.0), "p=1.0"),
        (validate.probability, ("p", 1.5), "p=1.5"),
        (validate.probability, ("p", float("nan")), "p=nan"),
        (validate.level, (0,), "level=0"),
        (validate.level, (1.5,), "level=1.5"),
        (validate.level, (1,), "level=1"),
        (validate.level, (float("nan"), "--level"), "--level=nan"),
        (validate.n_boot, (0,), "n_boot=0"),
        (validate.n_boot, (1, "--n-boot"), "--n-boot=1"),
        (validate.n_boot, (-5,), "n_boot=-5"),
        (validate.n_boot, (2.5,), "n_boot=2.5"),
        (validate.choice, ("--direction", "sideways", ("denoising", "noising")), "sideways"),
        (validate.min_examples, ("n", 1), "n=1"),
        (validate.min_examples, ("n", 0, 3), "n=0"),
        (validate.device, ("nonsense", "--device"), "--device='nonsense'"),
        (validate.device, (42,), "device=42"),
    ],
)
def test_bad_values_name_the_argument_and_the_value(fn, args, shown):
    with pytest.raises(ArgumentError) as e:
        fn(*args)
    assert shown in str(e.value)
    # The error family: an ArgumentError is an InputError, a FaithlensError and a ValueError.
    assert isinstance(e.value, InputError) and isinstance(e.value, FaithlensError)
    assert isinstance(e.value, ValueError)


def test_choice_lists_the_options():
    with pytest.raises(ArgumentError, match="'denoising', 'noising'"):
        validate.choice("direction", "x", ("denoising", "noising"))


def test_fail_builds_the_message():
    e = validate.fail("--top", -3, "must be a positive integer", "e.g. 15")
    assert isinstance(e, ArgumentError)
    assert str(e) == "--top=-3: must be a positive integer. e.g. 15"
    assert str(validate.fail("x", 1, "bad")) == "x=1: bad"


def test_device_cpu_and_meta():
    assert validate.device("cpu") == torch.device("cpu")
    assert validate.device(torch.device("cpu")) == torch.device("cpu")
    assert validate.device("meta") == torch.device("meta")


@pytest.mark.parametrize("value", ["cuda", "cuda:0", "cuda:3"])
def test_device_cuda_without_cuda(monkeypatch, value):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ArgumentError, match=f"device='{value}': CUDA is not available"):
        validate.device(value)


def test_device_cuda_index_beyond_the_machine(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert validate.device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ArgumentError, match=r"device='cuda:1': this machine has 1 CUDA"):
        validate.device("cuda:1")


def test_device_mps_without_mps(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ArgumentError, match="device='mps': MPS is not available"):
        validate.device("mps")


def test_output_dir(tmp_path):
    assert validate.output_dir(tmp_path / "a" / "b") == tmp_path / "a" / "b"
    assert validate.output_dir(str(tmp_path)) == tmp_path
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ArgumentError, match=r"out=.*is a file, not a folder"):
        validate.output_dir(f)
    with pytest.raises(ArgumentError, match=r"--out=.*is a file, not a folder"):
        validate.output_dir(f / "sub", "--out")


def test_output_file(tmp_path):
    assert validate.output_file(tmp_path / "new" / "plot.png") == tmp_path / "new" / "plot.png"
    with pytest.raises(ArgumentError, match=r"plot=.*is a folder, not a file"):
        validate.output_file(tmp_path)
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ArgumentError, match="is a file, not a folder"):
        validate.output_file(f / "plot.png")


def test_unwritable_locations(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    # Whoever runs the tests (root writes anywhere): the permission check itself is os.access.
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != ro)
    with pytest.raises(ArgumentError, match="not writable"):
        validate.output_dir(ro)
    with pytest.raises(ArgumentError, match="not writable"):
        validate.output_dir(ro / "new")
    with pytest.raises(ArgumentError, match="not writable"):
        validate.output_file(ro / "plot.png")
    monkeypatch.undo()
    assert validate.output_dir(ro / "new") == ro / "new"


# --------------------------------------------------------------------------------------------
# renamed_argument / reordered_arguments
# --------------------------------------------------------------------------------------------


@validate.renamed_argument("task", "data")
def _two(model, data, sites="head", *, seed=0):
    return (model, data, sites, seed)


@validate.renamed_argument("old", "new")
def _keyword_only(x, *, new=None):
    return (x, new)


def test_renamed_argument_maps_the_old_keyword_with_a_warning():
    import inspect
    import warnings

    assert list(inspect.signature(_two).parameters) == ["model", "data", "sites", "seed"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert _two(1, 2) == _two(1, data=2) == (1, 2, "head", 0)
        assert _keyword_only(1, new=2) == (1, 2)
    with pytest.warns(DeprecationWarning, match=r"_two: task= is deprecated.*use data="):
        assert _two(1, task=2, sites="mlp") == (1, 2, "mlp", 0)
    with pytest.warns(DeprecationWarning, match="old= is deprecated"):
        assert _keyword_only(1, old=2) == (1, 2)
    # the old and the new name together: by keyword, or the new one by position
    for args, kw in (((1, 2), {"task": 3}), ((1,), {"data": 2, "task": 3})):
        with pytest.raises(ArgumentError, match="task= and data were both given"):
            _two(*args, **kw)
    with pytest.raises(ArgumentError, match="old= and new were both given"):
        _keyword_only(1, old=2, new=3)
    # a keyword-only new name is never given by position: extra positionals are Python's error
    with pytest.raises(TypeError, match="positional"):
        _keyword_only(1, 2, old=3)  # type: ignore[misc]


def test_renamed_argument_checks_the_function():
    with pytest.raises(TypeError, match="must take 'data' and not 'task'"):
        validate.renamed_argument("task", "data")(lambda model, task: None)


class _H:
    pass


@validate.reordered_arguments(("model", "h", "data"), lambda a: len(a) > 1 and isinstance(a[1], _H))
def _reordered(model, data, h, n=None, *, seed=0):
    return (model, data, h, n, seed)


def test_reordered_arguments_accept_the_old_order_with_a_warning():
    import warnings

    h = _H()
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        assert _reordered(1, "d", h) == (1, "d", h, None, 0)
        assert _reordered(1, h="x", data="d") == (1, "d", "x", None, 0)
    for args, kw in (
        ((1, h, "d"), {}),
        ((1, h, "d", 5), {"seed": 2}),  # later positionals keep their places
        ((1, h), {"data": "d", "n": 5, "seed": 2}),
    ):
        with pytest.warns(
            DeprecationWarning, match=r"_reordered\(model, h.*_reordered\(model, data, h"
        ):
            got = _reordered(*args, **kw)
        assert got[:3] == (1, "d", h)
    assert _reordered(1, h, "d", 5, seed=2) == (1, "d", h, 5, 2)
    with pytest.raises(TypeError, match="multiple values for argument 'data'"):
        _reordered(1, h, "d", data="e")


def test_reordered_arguments_check_the_function():
    with pytest.raises(TypeError, match="must reorder its parameters"):
        validate.reordered_arguments(("a", "b"), lambda a: True)(lambda a, b: None)
    with pytest.raises(TypeError, match="must reorder its parameters"):
        validate.reordered_arguments(("a", "c"), lambda a: True)(lambda a, b: None)
