"""A small CNN on scikit-learn's bundled digits: a model whose units have known explanations.

scikit-learn ships 1,797 8x8 handwritten digits (no download). :class:`DigitsCNN` is

    conv1 (1->16, 3x3) -> ReLU -> conv2 (16->32, 3x3) -> ReLU -> max-pool 2 -> [32, 4, 4]
    -> global average pool -> head (32->10 logits)

trained on the first 1,200 digits of a seeded shuffle (Adam, lr 3e-3, 80 epochs, batch 32, one
CPU thread: about 20 seconds; 96.8% accuracy on the rest); the other 597 are the probing set. The weights ship with faithlens
(``faithlens/data/digits_cnn.safetensors``, 20 kB). The recipe that made them::

    python -c "from faithlens.neurons.digits import train_digits_cnn, save_weights; \\
               save_weights(train_digits_cnn(seed=0))"

Ground truth for neuron explanation: output logit ``j`` should be explained by the concept
"digit j" (:func:`digit_concepts`, which adds even, >= 5, loop digits {0, 6, 8, 9} and primes
{2, 3, 5, 7}); the channels of ``pool`` can be dissected against pixel-region concepts
(:func:`pixel_concepts`: ink, ink in each half, centre ink, horizontal strokes).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import InputError
from .probing import Concepts

if TYPE_CHECKING:
    from ..models.model import Model

WEIGHTS = "digits_cnn.safetensors"
N_TRAIN = 1200


class DigitsCNN(nn.Module):
    """Two conv layers, max-pool, global average pool, linear head (10 logits)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.act2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.flat = nn.Flatten()
        self.head = nn.Linear(32, 10)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 3:
            x = x[:, None]
        h = self.pool(self.act2(self.conv2(self.act1(self.conv1(x)))))
        return self.head(self.flat(self.gap(h)))


@dataclass(frozen=True)
class DigitsData:
    """Images ``[n, 1, 8, 8]`` in ``[0, 1]`` and labels, split into train and probe sets."""

    x_train: Tensor
    y_train: Tensor
    x_probe: Tensor
    y_probe: Tensor


def load_digits_data(seed: int = 0, n_train: int = N_TRAIN) -> DigitsData:
    """scikit-learn's digits, shuffled with ``seed``: ``n_train`` to train, the rest to probe."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    if not 0 < n_train < len(y):
        raise InputError(f"n_train must be between 1 and {len(y) - 1}")
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(y)))
    tr, pr = order[:n_train], order[n_train:]
    return DigitsData(x[tr], y[tr], x[pr], y[pr])


def train_digits_cnn(
    seed: int = 0, epochs: int = 80, lr: float = 3e-3, batch_size: int = 32
) -> DigitsCNN:
    """The training recipe of the shipped weights (seeded; about 20 seconds on one CPU
    thread, which is faster than several for a network this small)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(seed, epochs, lr, batch_size)
    finally:
        torch.set_num_threads(threads)


def _train(seed: int, epochs: int, lr: float, batch_size: int) -> DigitsCNN:
    torch.manual_seed(seed)
    data = load_digits_data(seed)
    net = DigitsCNN()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    n = len(data.y_train)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            loss = nn.functional.cross_entropy(net(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def weights_path() -> Path:
    """Where the shipped weights live."""
    return Path(str(resources.files("faithlens").joinpath("data", WEIGHTS)))


def save_weights(net: DigitsCNN, path: str | Path | None = None) -> Path:
    """Save weights as safetensors (default: the shipped file)."""
    from safetensors.torch import save_file

    out = Path(path) if path is not None else weights_path()
    save_file({k: v.detach().contiguous() for k, v in net.state_dict().items()}, str(out))
    return out


def digits_cnn(path: str | Path | None = None) -> DigitsCNN:
    """The trained network with the shipped weights (or weights saved at ``path``)."""
    from safetensors.torch import load_file

    src = Path(path) if path is not None else weights_path()
    if not src.exists():
        raise InputError(
            f"no digits CNN weights at {src}; make them with save_weights(train_digits_cnn(seed=0))"
        )
    net = DigitsCNN()
    net.load_state_dict(load_file(str(src)))
    return net.eval()


def digits_model(path: str | Path | None = None) -> Model:
    """The trained network as a faithlens model with sites ``conv1``, ``conv2``, ``pool``
    (``[n, 32, 4, 4]`` maps) and ``logits``."""
    from ..models.model import wrap

    return wrap(
        digits_cnn(path),
        sites={"conv1": "act1", "conv2": "act2", "pool": "pool", "logits": "head"},
        name="digits-cnn",
    )


def accuracy(net: nn.Module, x: Tensor, y: Tensor) -> float:
    """Classification accuracy of ``net`` on images ``x`` with labels ``y``."""
    with torch.no_grad():
        return float((net(x).argmax(-1) == y).float().mean())


DERIVED = {
    "even": (0, 2, 4, 6, 8),
    "at least 5": (5, 6, 7, 8, 9),
    "loop": (0, 6, 8, 9),
    "prime": (2, 3, 5, 7),
}


def digit_concepts(y: Tensor) -> Concepts:
    """Image-level concepts: ``digit 0`` ... ``digit 9`` and the derived sets in
    :data:`DERIVED`."""
    y = torch.as_tensor(y).long().reshape(-1)
    cols = [(y == d).float() for d in range(10)]
    names = [f"digit {d}" for d in range(10)]
    for name, members in DERIVED.items():
        cols.append(torch.isin(y, torch.tensor(members)).float())
        names.append(name)
    return Concepts(torch.stack(cols, 1), tuple(names))


PIXEL_CONCEPTS = (
    "ink",
    "ink top half",
    "ink bottom half",
    "ink left half",
    "ink right half",
    "centre ink",
    "horizontal stroke",
)


def pixel_concepts(images: Tensor, ink: float = 0.5) -> tuple[Tensor, tuple[str, ...]]:
    """Pixel masks ``[n, 7, 8, 8]`` for Network Dissection: ink (intensity >= ``ink``), ink in
    the top / bottom / left / right half, ink in the centre 4x4, and horizontal strokes (ink in a
    horizontal run of at least 3 pixels)."""
    x = images.reshape(images.shape[0], 8, 8)
    on = (x >= ink).float()
    rows = torch.arange(8)[:, None].expand(8, 8)
    cols = torch.arange(8)[None, :].expand(8, 8)
    top = (rows < 4).float()
    left = (cols < 4).float()
    centre = ((rows >= 2) & (rows < 6) & (cols >= 2) & (cols < 6)).float()
    # a pixel is in a horizontal stroke if it belongs to a run of >= 3 inked pixels in its row
    run = torch.zeros_like(on)
    for start in range(6):
        seg = on[:, :, start : start + 3].prod(-1, keepdim=True)
        run[:, :, start : start + 3] = torch.maximum(
            run[:, :, start : start + 3], seg.expand(-1, -1, 3)
        )
    masks = torch.stack(
        [on, on * top, on * (1 - top), on * left, on * (1 - left), on * centre, run], 1
    )
    return masks, PIXEL_CONCEPTS


__all__ = [
    "DERIVED",
    "PIXEL_CONCEPTS",
    "DigitsCNN",
    "DigitsData",
    "accuracy",
    "digit_concepts",
    "digits_cnn",
    "digits_model",
    "load_digits_data",
    "pixel_concepts",
    "save_weights",
    "train_digits_cnn",
    "weights_path",
]
