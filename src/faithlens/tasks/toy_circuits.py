"""The two toy circuits of Grant et al. (2025), section 3: pernicious divergences, exactly.

:class:`HiddenPathwayCircuit` (section 3.3): ``s = sum_k ReLU(W h + b)_k`` on ``h in R^4``;
behaviour "A" when ``s > 0``, "B" otherwise. Mean-difference steering ``B1 + delta_{B->A}`` flips
B1 to A, but only through hidden unit 3, which no natural input activates.

:class:`DormantBehaviourCircuit` (section 3.4): a ReLU precursor layer and a ReLU readout over
three classes. ``delta_{B->A}`` computed from the common B states moves them to class A, but the
rare state ``B2`` lands in class C: a dormant behaviour.

Both are plain ``nn.Module`` s; :func:`hidden_pathway_model` / :func:`dormant_behaviour_model`
wrap them for faithlens with the sites ``"h"`` (the input, read by the first linear layer),
``"pre"`` (its pre-activations) and ``"hidden"`` (the ReLU units).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..models.model import Model, wrap

# -- section 3.3 ---------------------------------------------------------------------------------
HP_W = [[0.75, 0.25, 0.0, 0.5], [0.0, 1.0, 0.0, 0.0], [1.0, 1.0, -1.0, -1.0]]
HP_B = [-0.5, -0.5, 0.0]
HP_STATES = {
    "A1": [1.0, 0.0, 1.0, 0.0],
    "A2": [0.0, 1.0, 1.0, 0.0],
    "B1": [0.0, 0.0, 1.0, 0.0],
    "B2": [0.0, 0.0, 1.0, 1.0],
}

# -- section 3.4 ---------------------------------------------------------------------------------
DB_WP = [
    [1.0, 0.0, 0.0, 0.5, 0.0],
    [0.0, 1.0, 0.0, 0.0, 0.0],
    [1.0, 1.0, -1.0, -1.0, 1.0],
    [0.0, 0.0, 0.0, 0.0, 1.0],
]
DB_BP = [-0.5, -0.5, 0.0, 0.0]
DB_WO = [[1.25, 1.0, 1.0, 0.0], [-1.0, -1.0, -1.0, 0.0], [0.0, 0.0, 1.0, 1.0]]
DB_BO = [-0.25, 0.25, -1.0]
DB_STATES = {
    "A1": [1.0, 0.0, 1.0, 0.0, 0.0],
    "A2": [0.0, 1.0, 1.0, 0.0, 0.0],
    "B1": [0.0, 0.0, 1.0, 0.0, 0.0],
    "B2": [0.0, 0.0, 1.0, 0.0, 1.0],  # the rare B case
    "B3": [0.0, 0.0, 1.0, 1.0, 0.0],
    "C": [0.0, 0.0, 0.0, 0.0, 1.0],
}
DB_CLASSES = {"A1": 0, "A2": 0, "B1": 1, "B2": 1, "B3": 1, "C": 2}


def _linear(w: list[list[float]], b: list[float]) -> nn.Linear:
    lin = nn.Linear(len(w[0]), len(w))
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(w))
        lin.bias.copy_(torch.tensor(b))
    lin.requires_grad_(False)
    return lin


class HiddenPathwayCircuit(nn.Module):
    """``s = sum_k ReLU(W h + b)_k`` (returned as ``[n, 1]``); "A" iff ``s > 0``."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = _linear(HP_W, HP_B)
        self.act = nn.ReLU()

    def forward(self, h: Tensor) -> Tensor:
        return self.act(self.layer(h)).sum(-1, keepdim=True)


class DormantBehaviourCircuit(nn.Module):
    """``h' = ReLU(W_p h + b_p)``, ``y = ReLU(W_o h' + b_o)``; the class is ``argmax y``."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = _linear(DB_WP, DB_BP)
        self.act = nn.ReLU()
        self.readout = _linear(DB_WO, DB_BO)
        self.out_act = nn.ReLU()

    def forward(self, h: Tensor) -> Tensor:
        return self.out_act(self.readout(self.act(self.layer(h))))


def states(which: dict[str, list[float]], names: list[str] | None = None) -> Tensor:
    """The named states as a ``[n, width]`` tensor (all of them by default, in order)."""
    keys = names if names is not None else list(which)
    return torch.tensor([which[k] for k in keys])


def mean_difference(a: Tensor, b: Tensor) -> Tensor:
    """``delta_{B->A}``: the mean over all pairs of ``h_a - h_b`` (= ``mean(A) - mean(B)``)."""
    return (a[:, None, :] - b[None, :, :]).reshape(-1, a.shape[-1]).mean(0)


_SITES = {"h": "layer:in", "pre": "layer", "hidden": "act"}


def hidden_pathway_model() -> Model:
    """The section 3.3 circuit wrapped for faithlens (sites ``h``, ``pre``, ``hidden``)."""
    return wrap(HiddenPathwayCircuit(), sites=_SITES, name="hidden-pathway-circuit")


def dormant_behaviour_model() -> Model:
    """The section 3.4 circuit wrapped for faithlens (sites ``h``, ``pre``, ``hidden``,
    ``out``)."""
    return wrap(
        DormantBehaviourCircuit(),
        sites={**_SITES, "out": "out_act"},
        name="dormant-behaviour-circuit",
    )


__all__ = [
    "DB_CLASSES",
    "DB_STATES",
    "HP_STATES",
    "DormantBehaviourCircuit",
    "HiddenPathwayCircuit",
    "dormant_behaviour_model",
    "hidden_pathway_model",
    "mean_difference",
    "states",
]
