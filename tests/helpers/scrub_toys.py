"""Toy models and data shared by the causal scrubbing tests (not a test module)."""

from __future__ import annotations

import hashlib
import textwrap

import numpy as np
import torch
from torch import nn

import faithlens as fl
from faithlens import scrubbing as sc


class Op(nn.Module):
    """A graph node computing a fixed function of its inputs."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


class Toy(nn.Module):
    """A toy circuit: named submodules A, B (and optional C) and an output module ``out``.

    ``wiring`` is a function (module, x0, x1, x2) -> output that calls the submodules; it is
    traced by torch.fx, so the graph is read from it."""

    def __init__(self, fns, wiring):
        super().__init__()
        for k, f in fns.items():
            self.add_module(k, Op(f))
        self._wiring = wiring

    def forward(self, x0, x1, x2):
        return self._wiring(self, x0, x1, x2)


def int_data(n=1000, cols=3, high=10, label=None, seed=0):
    """Redwood's IntDataset: integer inputs x0.. in [0, high), float [n, 1] columns."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, high, (n, cols), generator=g).float()
    cols_d = {f"x{i}": x[:, i : i + 1] for i in range(cols)}
    if label is not None:
        cols_d["y"] = label(*[x[:, i : i + 1] for i in range(cols)])
    return sc.ScrubData(cols_d)


def feat(col, fn=None):
    def f(d):
        v = d[col][:, 0]
        return v if fn is None else fn(v)

    f.__name__ = col if fn is None else f"{fn.__name__}({col})"
    return f


# ---- appendix 7: the EASY/HARD hash game --------------------------------------------------


def hash_bit(n: np.ndarray) -> np.ndarray:
    return np.array(
        [hashlib.blake2b(int(v).to_bytes(8, "little"), digest_size=1).digest()[0] & 1 for v in n]
    )


class HashGuesser(nn.Module):
    """Guesses parity(n) in EASY mode (uncorrelated with the hash), says 'I don't know' in HARD."""

    def __init__(self):
        super().__init__()
        self.net = Op(self._f)

    @staticmethod
    def _f(num, mode):
        guess = torch.remainder(num[:, 0], 2).long()
        logits = torch.full((num.shape[0], 3), -10.0)
        logits[torch.arange(num.shape[0]), guess] = 10.0
        hard = mode[:, 0] > 0.5
        logits[hard] = torch.tensor([-10.0, -10.0, 10.0])
        return logits

    def forward(self, num, mode):
        return self.net(num, mode)


def hash_game(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    num = rng.integers(0, 1 << 20, n)
    mode = rng.integers(0, 2, n)
    y = hash_bit(num)
    data = sc.ScrubData(
        num=torch.tensor(num, dtype=torch.float32)[:, None],
        mode=torch.tensor(mode, dtype=torch.float32)[:, None],
        label=torch.tensor(y),
        guess=torch.tensor(num % 2),
    )
    return fl.wrap(HashGuesser()), data


def reward_loss(out, ref):
    """Minus the game's reward for the model's answer (argmax) against the reference."""
    pred = out.argmax(-1)
    y = ref["label"].to(out.device)
    hard = ref["mode"][:, 0].to(out.device) > 0.5
    right = pred == y
    idk = pred == 2
    easy = torch.where(right, 2.0, -1.0)
    hardr = torch.where(right, 10.0, -20.0)
    r = torch.where(hard, hardr, easy)
    return -torch.where(idk, 0.0, r)


def hyp_answer(d):
    """The false hypothesis: the model outputs its guess on EASY, the correct answer on HARD."""
    hard = d["mode"][:, 0] > 0.5
    return torch.where(hard, d["label"], d["guess"])


#: A hypothesis file (the CLI's user code) on a two-branch toy: ``faithlens scrub`` end to end.
HYPOTHESIS_FILE = textwrap.dedent(
    """
    import torch
    from torch import nn

    import faithlens as fl
    from faithlens import scrubbing as sc


    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.A = nn.Identity()
            self.B = nn.Identity()
            self.C = nn.Identity()

        def forward(self, x0, x1):
            return self.C(self.A(x0) + self.B(x1))


    def model():
        return fl.wrap(Toy())


    def data(model, n, seed):
        g = torch.Generator().manual_seed(seed)
        x = torch.randint(0, 10, (80, 2), generator=g).float()
        return sc.ScrubData(x0=x[:, :1], x1=x[:, 1:], y=x[:, :1] + x[:, 1:])


    behaviour = sc.MSE("y")
    hypothesis = sc.Hypothesis("A only")
    hypothesis.add("A", sc.to("A"), feature=lambda d: d["x0"][:, 0])
    features = {"x1": lambda d: d["x1"][:, 0]}
    """
)


def write_hypothesis_file(folder):
    """:data:`HYPOTHESIS_FILE` written to ``folder/hypothesis.py``; returns its path."""
    path = folder / "hypothesis.py"
    path.write_text(HYPOTHESIS_FILE)
    return path
