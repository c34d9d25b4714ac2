"""The inputs of the selectivity controls: a control task and a randomly initialised model.

- :func:`control_task`: the same interchange pairs with **arbitrary label mappings**
  (CausalGym's control task, after Hewitt & Liang's control tasks): every value of the causal
  variable is mapped to an arbitrary label of the same label set, so the format is kept (the
  labels are still outputs the data uses) and the structure is destroyed (the label no longer
  follows the model's own mechanism). An alignment that still reaches a high IIA on it does so by
  the expressivity of the alignment at the site, not because the site carries the variable.
- :func:`random_init`: a copy of the model with the same architecture and re-initialised
  weights (seeded). An alignment that reaches a high IIA there finds structure that training did
  not put into the model.

Neither touches the given model or data.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .. import validate as V
from ..models.model import Model
from ..tasks.interchange import InterchangeData


def _label_set(data: InterchangeData) -> np.ndarray:
    if data.candidates is not None:
        return np.arange(int(data.candidates.shape[1]))
    return np.unique(data.labels.cpu().numpy())


def _derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A uniformly drawn permutation of ``range(n)`` with no fixed point (``n >= 2``)."""
    while True:
        p = rng.permutation(n)
        if not bool((p == np.arange(n)).any()):
            return p


def control_task(data: InterchangeData, *, values: Any = None, seed: int = 0) -> InterchangeData:
    """``data`` with its labels replaced by an arbitrary mapping of the causal variable's values.

    ``values`` (``[n]``, any hashable per example, e.g. the source's value of the variable or
    its token id): each distinct value gets a label drawn uniformly from the data's label set
    (Hewitt & Liang's type-level control: one arbitrary label per value). By default the values
    are the counterfactual labels themselves and the mapping is a random permutation of the label
    set without a fixed point, so every control label differs from the real one. Seeded by
    ``seed``; ``cl_targets`` / ``cl_groups`` (which describe the real variable) are dropped; the
    mapping is kept in ``meta["control_mapping"]``.
    """
    if not isinstance(data, InterchangeData):
        raise V.fail("data", type(data).__name__, "must be an InterchangeData")
    V.nonnegative_int("seed", seed)
    labels = _label_set(data)
    if len(labels) < 2:
        raise V.fail(
            "data",
            f"{data.name} ({len(labels)} distinct label)",
            "a control task needs at least two labels to map values to",
            "give data whose counterfactual labels take at least two values",
        )
    rng = np.random.default_rng(seed)
    old = data.labels.cpu().numpy()
    if values is None:
        perm = _derangement(len(labels), rng)
        mapping = {int(v): int(labels[p]) for v, p in zip(labels, perm, strict=True)}
        keys: list[Any] = [int(x) for x in old]
    else:
        keys = [v.item() if isinstance(v, (Tensor, np.generic)) else v for v in values]
        if len(keys) != len(data):
            raise V.fail(
                "values", f"{len(keys)} values", f"need one value per example ({len(data)})"
            )
        distinct = sorted(set(keys), key=repr)
        drawn = rng.integers(0, len(labels), size=len(distinct))
        mapping = {v: int(labels[d]) for v, d in zip(distinct, drawn, strict=True)}
    new = torch.tensor([mapping[k] for k in keys], dtype=data.labels.dtype)
    meta = dict(data.meta)
    meta["control_mapping"] = {repr(k): v for k, v in mapping.items()}
    meta["control_seed"] = int(seed)
    return replace(
        data,
        labels=new.to(data.labels.device),
        cl_targets=None,
        cl_groups=None,
        name=f"{data.name}:control",
        meta=meta,
    )


def _redraw(p: Tensor) -> None:
    """A parameter no module resets: redrawn from a normal of its own mean and standard
    deviation (a constant tensor, such as a norm's scale, stays as it is)."""
    if p.numel() < 2:
        return
    std = float(p.detach().float().std())
    if std == 0.0 or not np.isfinite(std):
        return
    mean = float(p.detach().float().mean())
    with torch.no_grad():
        p.copy_(torch.randn(p.shape, dtype=torch.float32).mul_(std).add_(mean).to(p.dtype))


def random_init(model: Model, *, seed: int = 0) -> Model:
    """A copy of ``model`` with the same architecture and re-initialised weights.

    Every submodule with a ``reset_parameters`` method (``nn.Linear``, ``nn.Embedding``, the
    norms, convolutions, ...) is reset with its own initialisation under ``torch.manual_seed(seed)``
    (the global generator is left as it was); any other parameter is redrawn from a normal of
    its own mean and standard deviation. The tokenizer is shared; the given model is untouched.
    """
    if not isinstance(model, Model):
        raise V.fail("model", type(model).__name__, "must be a faithlens Model", "use fl.wrap")
    V.nonnegative_int("seed", seed)
    memo: dict[int, Any] = {}
    if model.tokenizer is not None:
        memo[id(model.tokenizer)] = model.tokenizer
    clone = copy.deepcopy(model, memo)
    module: nn.Module = clone.module
    reset: set[int] = set()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for sub in module.modules():
            fn = getattr(sub, "reset_parameters", None)
            if callable(fn):
                fn()
                reset.update(id(p) for p in sub.parameters(recurse=False))
        for p in module.parameters():
            if id(p) not in reset:
                _redraw(p)
    module.eval()
    clone.name = f"{model.name}:random-init-{seed}"
    clone.spec = None
    return clone


__all__ = ["control_task", "random_init"]
