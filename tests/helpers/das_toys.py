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


def planted(
    k: int, *, width: int = 8, n: int = 256, seed: int = 0, scale: float = 32.0
) -> tuple[fl.Model, InterchangeData, torch.Tensor]:
    """A planted ``k``-dimensional causal variable at site ``"h"`` (width ``width``).

    The site is the input itself (a frozen identity layer); the readout is linear with
    ``width`` classes, ``logits = scale * h @ R`` for a random orthogonal ``R``, so every direction
    of ``h`` matters and a subspace interchange is right on every pair only for the planted
    subspace. The variable lives in the span of ``Q`` (``[width, k]``, orthonormal columns of a
    random rotation); the counterfactual label of (base ``b``, source ``s``) is the model's
    output on ``b + Q Q^T (s - b)``. Returns the model, the data and ``Q``.
    """
    g = torch.Generator().manual_seed(1000 + seed)
    q, _ = torch.linalg.qr(torch.randn(width, width, generator=g))
    r, _ = torch.linalg.qr(torch.randn(width, width, generator=g))
    basis = q[:, :k].contiguous()
    net = torch.nn.Sequential(
        torch.nn.Linear(width, width, bias=False), torch.nn.Linear(width, width, bias=False)
    )
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(width))
        net[1].weight.copy_(scale * r.T)
    base = torch.randn(n, width, generator=g)
    source = torch.randn(n, width, generator=g)
    cf = base + (source - base) @ basis @ basis.T
    with torch.no_grad():
        labels = net(cf).argmax(-1)
    model = fl.wrap(net, sites={"h": "0"}, name=f"planted-{k}-{seed}")
    data = InterchangeData(base=base, source=source, labels=labels, name=f"planted-{k}")
    return model, data, basis


def principal_angles_deg(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Principal angles (degrees, ascending) between the column spans of ``a`` and ``b``."""
    qa, _ = torch.linalg.qr(a.double())
    qb, _ = torch.linalg.qr(b.double())
    s = torch.linalg.svdvals(qa.T @ qb).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.arccos(s)).flip(0)
