"""A tiny model and interchange data for DAS tests that need a fast, seeded training run."""

from __future__ import annotations

import torch

import faithlens as fl
from faithlens.tasks.interchange import InterchangeData


def toy_model(seed: int = 0) -> fl.Model:
    g = torch.Generator().manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(6, 10), torch.nn.Tanh(), torch.nn.Linear(10, 4))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return fl.wrap(net, sites={"h": "0"}, name=f"toy-{seed}")


def toy_data(seed: int = 0, n: int = 48) -> InterchangeData:
    g = torch.Generator().manual_seed(seed)
    return InterchangeData(
        base=torch.randn(n, 6, generator=g),
        source=torch.randn(n, 6, generator=g),
        labels=torch.randint(0, 4, (n,), generator=g),
        name="toy",
    )
