"""Appendix 7 of the causal scrubbing write-up: a false hypothesis that scores better than the
model, and adversarial validation (appendix 8) that exposes it.

The model guesses the last bit of a hash: in EASY mode it guesses (here: the parity of the
number, which is unrelated to the hash), in HARD mode it says "I don't know". The false
hypothesis says the output is the model's guess on EASY inputs and the *correct* answer on HARD
inputs. Scrubbing then swaps HARD inputs with EASY inputs whose guess happens to be right, and
the scrubbed model wins more reward than the model. The adversary finds the missing feature.

Run: ``python examples/scrub_hash_game.py``.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

import faithlens as fl
from faithlens import scrubbing as sc


class Guesser(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Identity()

    def forward(self, num, mode):
        guess = torch.remainder(num[:, 0], 2).long()
        logits = torch.full((num.shape[0], 3), -10.0)
        logits[torch.arange(num.shape[0]), guess] = 10.0
        logits[mode[:, 0] > 0.5] = torch.tensor([-10.0, -10.0, 10.0])  # "I don't know"
        return self.net(logits)


def minus_reward(out, ref):
    pred, y = out.argmax(-1), ref["label"].to(out.device)
    hard = ref["mode"][:, 0].to(out.device) > 0.5
    right = pred == y
    reward = torch.where(hard, torch.where(right, 10.0, -20.0), torch.where(right, 2.0, -1.0))
    return -torch.where(pred == 2, 0.0, reward)


def main(n: int = 4000) -> tuple[float, float]:
    rng = np.random.default_rng(0)
    num = rng.integers(0, 1 << 20, n)
    mode = rng.integers(0, 2, n)
    bit = [
        hashlib.blake2b(int(v).to_bytes(8, "little"), digest_size=1).digest()[0] & 1 for v in num
    ]
    data = sc.ScrubData(
        num=torch.tensor(num, dtype=torch.float32)[:, None],
        mode=torch.tensor(mode, dtype=torch.float32)[:, None],
        label=torch.tensor(bit),
        guess=torch.tensor(num % 2),
    )

    def claimed_answer(d):  # EASY: the model's guess; HARD: the correct answer
        return torch.where(d["mode"][:, 0] > 0.5, d["label"], d["guess"])

    model = fl.wrap(Guesser())
    beh = sc.Fn(minus_reward, name="minus reward")
    h = sc.Hypothesis("guess on EASY, right answer on HARD", feature=claimed_answer)
    r = fl.scrub(model, data, h, behaviour=beh, seed=0)
    print(r.summary(), end="\n\n")
    adv = fl.adversary(
        model,
        data,
        h,
        behaviour=beh,
        seed=0,
        budget=8,
        features={
            "mode": lambda d: d["mode"][:, 0],
            "num mod 3": lambda d: torch.remainder(d["num"][:, 0], 3),
        },
    )
    print(adv.summary())
    return r.recovered(), adv.recovered_after


if __name__ == "__main__":
    main()
