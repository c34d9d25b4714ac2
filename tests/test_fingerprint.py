"""Fingerprints of models and data: equal values hash equal, any change hashes differently."""

from __future__ import annotations

import copy
import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch

from faithlens.fingerprint import data_fingerprint, model_fingerprint


def _net(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.LayerNorm(7), torch.nn.Linear(7, 3))
    net.register_buffer("counter", torch.arange(4))
    return net


def test_model_fingerprint_same_weights_same_hash():
    a, b = _net(0), _net(0)
    assert a is not b
    assert model_fingerprint(a) == model_fingerprint(b)
    assert model_fingerprint(a) == model_fingerprint(copy.deepcopy(a))
    assert len(model_fingerprint(a)) == 64 and model_fingerprint(a) != model_fingerprint(_net(1))


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(
            lambda m: m[0].weight.data.__setitem__((2, 3), m[0].weight[2, 3] + 1e-6),
            id="one-weight",
        ),
        pytest.param(lambda m: m[1].bias.data.__setitem__(0, 1.0), id="one-bias"),
        pytest.param(lambda m: m.counter.__setitem__(3, 9), id="one-buffer-element"),
        pytest.param(lambda m: m.double(), id="dtype"),
        pytest.param(lambda m: m.register_buffer("extra", torch.zeros(1)), id="one-more-buffer"),
    ],
)
def test_model_fingerprint_sees_one_change(change):
    ref = _net(0)
    other = _net(0)
    with torch.no_grad():
        change(other)
    assert model_fingerprint(other) != model_fingerprint(ref)


def test_model_fingerprint_sees_renamed_parameters():
    a = torch.nn.Module()
    a.x = torch.nn.Parameter(torch.ones(2))
    b = torch.nn.Module()
    b.y = torch.nn.Parameter(torch.ones(2))
    assert model_fingerprint(a) != model_fingerprint(b)


def test_model_fingerprint_handles_bfloat16_and_empty():
    net = _net(0).to(torch.bfloat16)
    assert model_fingerprint(net) == model_fingerprint(copy.deepcopy(net))
    empty = torch.nn.Module()
    assert model_fingerprint(empty) == model_fingerprint(torch.nn.Module())


@dataclasses.dataclass
class _Batch:
    ids: torch.Tensor
    names: list[str]


def _data() -> tuple:
    return (
        torch.arange(12).reshape(3, 4),
        np.linspace(0, 1, 5, dtype=np.float32),
        {"labels": torch.tensor([1, 0, 1]), "pos": [-1, 2]},
        _Batch(torch.ones(2, 2), ["a", "b"]),
        "task",
        3,
        0.5,
        None,
    )


def test_data_fingerprint_same_values_same_hash():
    assert data_fingerprint(*_data()) == data_fingerprint(*_data())
    # dict order does not matter
    assert data_fingerprint({"a": 1, "b": 2}) == data_fingerprint({"b": 2, "a": 1})
    # non-contiguous views hash by value
    t = torch.arange(20.0).reshape(4, 5)
    assert data_fingerprint(t.T) == data_fingerprint(t.T.contiguous())


@pytest.mark.parametrize(
    "a, b",
    [
        pytest.param(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.5]), id="one-element"),
        pytest.param(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 2.0]).double(), id="dtype"),
        pytest.param(torch.zeros(2, 3), torch.zeros(3, 2), id="shape"),
        pytest.param(np.array([1, 2, 3]), np.array([1, 2, 4]), id="array-element"),
        pytest.param([1, 2], (1, 2), id="list-vs-tuple"),
        pytest.param(1, 1.0, id="int-vs-float"),
        pytest.param(True, 1, id="bool-vs-int"),
        pytest.param("ab", ["a", "b"], id="str-vs-list"),
        pytest.param(["ab", "c"], ["a", "bc"], id="string-boundaries"),
        pytest.param({"a": 1}, {"a": 2}, id="dict-value"),
        pytest.param({"a": 1}, {"b": 1}, id="dict-key"),
        pytest.param(None, 0, id="none-vs-zero"),
    ],
)
def test_data_fingerprint_sees_one_change(a, b):
    assert data_fingerprint(a) != data_fingerprint(b)


def test_data_fingerprint_sees_one_changed_element_in_a_big_tensor():
    x = torch.randn(300, 40, generator=torch.Generator().manual_seed(0))
    y = x.clone()
    y[123, 7] = torch.nextafter(y[123, 7], torch.tensor(float("inf")))
    assert data_fingerprint(x) != data_fingerprint(y)
    assert data_fingerprint(x) == data_fingerprint(x.clone())


def test_data_fingerprint_refuses_what_it_cannot_hash_stably():
    with pytest.raises(TypeError, match="cannot fingerprint a object"):
        data_fingerprint(object())


def test_fingerprints_are_stable_across_processes():
    code = (
        "import torch; from faithlens.fingerprint import data_fingerprint as d;"
        "print(d(torch.arange(6).reshape(2, 3), [1.5, 'x', None], {'k': (1, 2)}))"
    )
    here = data_fingerprint(torch.arange(6).reshape(2, 3), [1.5, "x", None], {"k": (1, 2)})
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300
    )
    assert out.stdout.strip() == here
