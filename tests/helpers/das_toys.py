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


class _SequenceToy(torch.nn.Module):
    """Token ids -> embedding (``"l0"``) -> every position moved one step right (``"l1"``) ->
    logits from the last position."""

    def __init__(self, vocab: int, width: int, seq: int) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width)
        self.shift = _Shift()
        self.read = torch.nn.Linear(width, width, bias=False)
        self.seq = seq

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        h = self.shift(self.embed(input_ids))
        out: torch.Tensor = self.read(h[:, self.seq - 1])
        return out


class _Shift(torch.nn.Module):
    """Moves every position one step right (the last wraps to the first)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.roll(x, 1, dims=1)


def planted_sequence(
    k: int = 2,
    *,
    width: int = 8,
    seq: int = 3,
    vocab: int = 64,
    n: int = 256,
    seed: int = 0,
    scale: float = 32.0,
) -> tuple[fl.Model, InterchangeData, torch.Tensor]:
    """:func:`planted` spread over positions and two layers, for sweeps with a known answer.

    Inputs are ``[n, seq]`` token ids with random ``width``-dim embeddings (``"l0"``); layer
    ``"l1"`` moves every position one step right, and the logits read the last position of
    ``"l1"`` (``scale * h R``). The variable (the span of ``Q`` in the embedding) is interchanged
    at position ``seq - 2``, so it lives at (``"l0"``, ``seq - 2``) and at (``"l1"``,
    ``seq - 1``); every other (layer, position) carries nothing the output reads.
    """
    g = torch.Generator().manual_seed(2000 + seed)
    q, _ = torch.linalg.qr(torch.randn(width, width, generator=g))
    r, _ = torch.linalg.qr(torch.randn(width, width, generator=g))
    basis = q[:, :k].contiguous()
    net = _SequenceToy(vocab, width, seq)
    with torch.no_grad():
        net.embed.weight.copy_(torch.randn(vocab, width, generator=g))
        net.read.weight.copy_(scale * r.T)
    base = torch.randint(0, vocab, (n, seq), generator=g)
    source = torch.randint(0, vocab, (n, seq), generator=g)
    at = seq - 2
    with torch.no_grad():
        eb, es = net.embed(base[:, at]), net.embed(source[:, at])
        labels = ((eb + (es - eb) @ basis @ basis.T) @ net.read.weight.T).argmax(-1)
    model = fl.wrap(net, sites={"l0": "embed", "l1": "shift"}, name=f"planted-seq-{k}-{seed}")
    ones = torch.ones(n, seq, dtype=torch.long)
    data = InterchangeData(
        base=fl.Inputs(ids=base, mask=ones),
        source=fl.Inputs(ids=source, mask=ones),
        labels=labels,
        name=f"planted-seq-{k}",
    )
    return model, data, basis
