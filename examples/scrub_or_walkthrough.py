"""The main post's walkthrough: D = A or B with A = z1 > 3, B = z2 > 3, C unimportant.

A small network reads z1, z2, z3 through modules A, B, C and combines them in D; it is trained
on the OR task. We then test three hypotheses by causal scrubbing:

1. the right one (A tracks z1 > 3, B tracks z2 > 3, C does not matter);
2. a wrong threshold for A (z1 > 6);
3. B forgotten (B's paths are resampled with the rest).

Run: ``python examples/scrub_or_walkthrough.py``.
"""

from __future__ import annotations

import torch

import faithlens as fl
from faithlens import scrubbing as sc


class OrNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.A = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.ReLU())
        self.B = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.ReLU())
        self.C = torch.nn.Sequential(torch.nn.Linear(1, 8), torch.nn.ReLU())
        self.D = torch.nn.Sequential(
            torch.nn.Linear(24, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1)
        )

    def forward(self, z1, z2, z3):
        return self.D(torch.cat([self.A(z1), self.B(z2), self.C(z3)], -1))


def train(steps: int = 300, seed: int = 0) -> OrNet:
    torch.manual_seed(seed)
    net = OrNet()
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(steps):
        z = torch.randint(0, 10, (128, 3)).float()
        y = ((z[:, 0] > 3) | (z[:, 1] > 3)).float()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            net(z[:, :1], z[:, 1:2], z[:, 2:]).squeeze(-1), y
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def main(n: int = 2000) -> dict[str, float]:
    model = fl.wrap(train())
    z = torch.randint(0, 10, (n, 3), generator=torch.Generator().manual_seed(1)).float()
    data = sc.ScrubData(
        z1=z[:, :1], z2=z[:, 1:2], z3=z[:, 2:], label=((z[:, 0] > 3) | (z[:, 1] > 3)).long()
    )

    def or_feature(d):
        return (d["z1"][:, 0] > 3) | (d["z2"][:, 0] > 3)

    def hypothesis(threshold: int, with_b: bool = True) -> sc.Hypothesis:
        # D's output is the model's output, so D is the root
        h = sc.Hypothesis(f"A = z1 > {threshold}{'' if with_b else ', no B'}", feature=or_feature)
        h.add("A", sc.to("A"), feature=lambda d: d["z1"][:, 0] > threshold)
        if with_b:
            h.add("B", sc.to("B"), feature=lambda d: d["z2"][:, 0] > 3)
        return h

    out = {}
    for h in (hypothesis(3), hypothesis(6), hypothesis(3, with_b=False)):
        r = fl.scrub(model, data, h, behaviour=sc.BinaryCrossEntropy("label"), seed=0)
        print(r.summary(), end="\n\n")
        out[h.name] = r.recovered()
    print(sc.dry_run(model, data, hypothesis(3), n=3, behaviour=sc.BinaryCrossEntropy("label")))
    return out


if __name__ == "__main__":
    main()
