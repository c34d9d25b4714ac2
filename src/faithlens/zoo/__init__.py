"""faithlens' model zoo: a small interpretable transformer, training recipes, shipped weights.

- :class:`ZooTransformer` / :class:`ZooConfig`: layers, heads, d_model and d_mlp configurable;
  attention-only (``d_mlp=0``); causal or bidirectional; padding mask; learned or shortformer
  positions. Its canonical sites work like any Hugging Face model's (``fl.wrap(model)``).
- Shipped models (``fl.load("zoo:NAME")``): ``paren`` (Redwood's paren-balance checker, trained
  from scratch) and ``induction`` (a 2-layer attention-only model with a previous-token head and
  induction heads). ``faithlens zoo list`` / ``faithlens zoo card NAME`` describe them.
- :func:`train` with a :func:`recipe` retrains them (seeded, checkpointed, resumable).
- tracr's compiled programs (``fl.load("zoo:tracr_reverse")``, ``tracr_hist``, ``tracr_sort``,
  ``tracr_sort_unique``, ``tracr_frac_prevs``, ``tracr_count``, ``tracr_pair_balance``,
  ``tracr_shuffle_dyck``) with their true circuits:
  :mod:`faithlens.zoo.tracr` (compiled by ``faithlens zoo compile-tracr``, which needs the
  optional extra ``faithlens[tracr]``; loading them does not).
- Redwood's causal-scrubbing hypotheses about the paren balancer, on ``zoo:paren``, are a
  scrubbing method and live above the zoo: :mod:`faithlens.scrubbing.paren`
  (``fl.scrubbing.replicate_paren`` / ``fl.scrubbing.paren_hypotheses``).
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from ..models.model import Model
from . import tracr
from .config import ZooConfig
from .model import ZooAdapter, ZooCache, ZooOutput, ZooTransformer
from .recipes import RECIPES, InductionRecipe, ParenRecipe, head_scores, recipe
from .tokenizer import VocabTokenizer
from .training import (
    Recipe,
    Schedule,
    TrainingRun,
    load_weights,
    read_weights,
    save_weights,
    train,
)


def _package_dir(sub: str) -> Path:
    return Path(str(importlib.resources.files("faithlens.zoo"))) / sub


def weights_path(name: str) -> Path:
    """Where the shipped weights of zoo model ``name`` live."""
    return _package_dir("weights") / f"{name}.safetensors"


def card_path(name: str) -> Path:
    return _package_dir("cards") / f"{name}.md"


@dataclass(frozen=True)
class ZooEntry:
    """A shipped zoo model."""

    name: str
    description: str
    config: ZooConfig
    n_params: int
    size_bytes: int
    info: dict[str, Any]
    weights: Path
    card: Path


def available() -> list[str]:
    """Names of the zoo models (those with a recipe)."""
    return sorted(RECIPES)


def entries() -> list[ZooEntry]:
    """The shipped zoo models (those whose weights are in the package)."""
    out = []
    for name in available():
        path = weights_path(name)
        if not path.exists():
            continue
        config, state, info = read_weights(path)
        out.append(
            ZooEntry(
                name=name,
                description=RECIPES[name]().description,
                config=config,
                n_params=sum(int(t.numel()) for t in state.values()),
                size_bytes=path.stat().st_size,
                info=info,
                weights=path,
                card=card_path(name),
            )
        )
    return out


def card(name: str) -> str:
    """The model card (markdown) of a shipped zoo model."""
    _check_name(name)
    path = card_path(name)
    if not path.exists():
        raise InputError(f"zoo model {name!r} has no model card at {path}")
    return path.read_text()


def _check_name(name: str) -> None:
    if name not in RECIPES:
        raise InputError(f"no zoo model named {name!r}; zoo models: {available()}")


def load(
    name: str,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> Model:
    """A zoo model as a :class:`faithlens.Model` (``fl.load("zoo:NAME")`` calls this).

    ``name`` is a zoo model name (``"paren"``, ``"induction"``, ``"tracr_reverse"``...: the
    weights shipped in the package) or the path of a ``.safetensors`` file written by :func:`train` (the file's stem
    names the recipe, whose tokenizer is attached).
    """
    from .. import validate as V

    if not isinstance(name, (str, Path)):
        raise V.fail("name", name, "must be a zoo model name or a .safetensors path")
    name = str(name)
    if device is not None:
        V.device(device)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise V.fail("dtype", dtype, "must be a floating torch dtype", "e.g. torch.float32")
    path = Path(name).expanduser()
    if name.endswith(".safetensors") or path.is_file():
        if not path.is_file():
            raise InputError(f"no zoo weights file at {path}")
        module, info = load_weights(path, device=device, dtype=dtype)
        rname = str(info.get("name", path.stem))
        tok = RECIPES[rname]().tokenizer() if rname in RECIPES else None
        return Model(module, module.faithlens_adapter(), tokenizer=tok, name=f"zoo:{path}")
    if name.startswith("tracr_"):
        from .tracr import load_tracr

        return load_tracr(name, device=device, dtype=dtype)
    _check_name(name)
    path = weights_path(name)
    if not path.exists():
        raise InputError(
            f"the weights of zoo model {name!r} are not in this installation ({path}); train them "
            f"with `faithlens zoo train {name}` and load the file it writes"
        )
    module, _ = load_weights(path, device=device, dtype=dtype)
    tok = RECIPES[name]().tokenizer()
    return Model(module, module.faithlens_adapter(), tokenizer=tok, name=f"zoo:{name}")


__all__ = [
    "RECIPES",
    "InductionRecipe",
    "ParenRecipe",
    "Recipe",
    "Schedule",
    "TrainingRun",
    "VocabTokenizer",
    "ZooAdapter",
    "ZooCache",
    "ZooConfig",
    "ZooEntry",
    "ZooOutput",
    "ZooTransformer",
    "available",
    "card",
    "card_path",
    "entries",
    "head_scores",
    "load",
    "load_weights",
    "read_weights",
    "recipe",
    "save_weights",
    "tracr",
    "train",
    "weights_path",
]
