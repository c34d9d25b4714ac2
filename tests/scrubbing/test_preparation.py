"""Causal scrubbing on a task built from tensors (pixels): a CNN through its traced LayerGraph,
against known truth (a network whose output provably reads one branch only) and a hand-made
resampling reference; what cannot be fed pixels is refused before any work."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import faithlens as fl
from faithlens import scrubbing as sc
from faithlens.errors import InputError


class OneBranch(nn.Module):
    """logits = head(mean(a(x[:, :1]))) + 0 * b(x[:, 1:]): only branch ``a`` reaches the output."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 1, 3, padding=1, bias=False)
        self.b = nn.Conv2d(1, 1, 3, padding=1, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(1, 2)
        with torch.no_grad():
            self.a.weight.fill_(1 / 9)
            self.b.weight.normal_(generator=torch.Generator().manual_seed(0))
            self.head.weight.copy_(torch.tensor([[-3.0], [3.0]]))
            self.head.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.a(x[:, :1]) + 0 * self.b(x[:, 1:])).flatten(1))


class TwoBranches(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Conv2d(1, 2, 3, padding=1)
        self.b = nn.Conv2d(1, 2, 3, padding=1)
        self.head = nn.Linear(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head((self.a(x[:, :1]) + self.b(x[:, 1:])).mean((2, 3)))


def _one_branch_task(n: int = 64):
    g = torch.Generator().manual_seed(0)
    label = torch.arange(n) % 2
    x = torch.randn(n, 2, 6, 6, generator=g)
    x[:, 0] = (2 * label - 1).float()[:, None, None]  # channel 0 is the label (+-1), 1 is noise
    corrupt = torch.randn(n, 2, 6, 6, generator=g)
    return x, fl.Task.from_tensors(x, corrupt, labels=label, metric="loss")


def _recovered(res):
    return res.intervals()["% recovered vs random"]


def test_keeping_the_branch_the_output_reads_recovers_all_and_discarding_it_none():
    x, task = _one_branch_task()
    net = OneBranch().eval()
    m = fl.wrap(net, sites={"a": "a", "b": "b"}, example=x[:1])
    keep = sc.Hypothesis("a carries the label")
    keep.add("a", sc.to("a"), feature=sc.field("label"))
    drop = sc.Hypothesis("b carries the label")
    drop.add("b", sc.to("b"), feature=sc.field("label"))
    kept = sc.scrub(m, task, keep, n=400, n_boot=200)
    dropped = sc.scrub(m, task, drop, n=400, n_boot=200)
    # the random baseline is far worse than the model (else % recovered means nothing)
    base = kept.intervals()["baseline random"]
    orig = kept.intervals()["original"]
    assert base.low > orig.high + 1.0
    # a's input in the same class is the same image channel: the scrubbed run is the model's
    np.testing.assert_allclose(kept.scrubbed, kept.original, atol=1e-6)
    r = _recovered(kept)
    assert abs(r.estimate - 100.0) < 1e-6 and r.low <= 100.0 <= r.high
    # discarding a: it reads a random image, like the baseline: ~0 %, far from 100 %
    d = _recovered(dropped)
    assert d.high < 60.0 and d.low < 0.0 + 4 * max(d.se, 1.0)
    assert abs(d.estimate) < 4 * d.se + 5.0


def test_scrubbed_values_equal_a_hand_made_resampling_reference():
    net = TwoBranches().eval()
    x = torch.randn(8, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    label = torch.arange(8) % 3
    task = fl.Task.from_tensors(x, x.flip(0), labels=label)  # metric: log-prob of the label
    m = fl.wrap(net)
    h = sc.Hypothesis("a reads the label")
    h.add("a", sc.to("a"), feature=sc.field("label"))
    prep = sc.prepare(m, h, task, n=6, seed=3)
    rows = {lab: v for v, labs in zip(prep.data.vectors, prep.data.labels) for lab in labs}
    ref, ia = rows["reference"], rows["a reads the label:a"]
    ib = rows["a reads the label:unimportant(root)"]
    assert (label[ia] == label[ref]).all()  # a's datum has the reference's label
    with torch.no_grad():
        xa, xb = x[torch.as_tensor(ia)], x[torch.as_tensor(ib)]
        logits = net.head((net.a(xa[:, :1]) + net.b(xb[:, 1:])).mean((2, 3)))
        want = logits.log_softmax(-1).gather(1, label[torch.as_tensor(ref)][:, None])[:, 0]
        orig = net(x[torch.as_tensor(ref)]).log_softmax(-1)
    res = sc.scrub(m, task, h, n=6, seed=3, n_boot=50)
    np.testing.assert_array_equal(res.references, ref)
    np.testing.assert_allclose(res.scrubbed, want.double().numpy(), atol=1e-6)
    np.testing.assert_allclose(
        res.original,
        orig.gather(1, label[torch.as_tensor(ref)][:, None])[:, 0].double().numpy(),
        atol=1e-6,
    )


def test_a_tensor_task_gets_its_columns_from_the_graphs_inputs():
    x = torch.randn(4, 2, 4, 4)
    task = fl.Task.from_tensors(x, x.flip(0), answers=[[0, 1], [1, 2], [2, 0], [0, 2]])
    data = sc.ScrubData.from_task(task, ["x"])
    assert sorted(data.columns) == ["answers", "label", "positions", "x"]
    assert torch.equal(data["x"], x) and torch.equal(data["label"], torch.tensor([0, 1, 2, 0]))
    with pytest.raises(InputError, match="name the model inputs"):
        sc.ScrubData.from_task(task)
    with pytest.raises(InputError, match="one tensor per forward argument"):
        sc.ScrubData.from_task(task, ["x", "y"])
    with pytest.raises(InputError, match="clash"):
        sc.ScrubData.from_task(task, ["label"])


def test_the_vision_scrubbing_and_neurons_example_in_docs_patching_md_runs():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "patching.md").read_text()
    section = text.split("## Vision models", 1)[1].split("\n## ", 1)[0]
    blocks = [b.split("```", 1)[0] for b in section.split("```python\n")[1:]]
    assert len(blocks) == 2
    scope: dict = {}
    for i, code in enumerate(blocks):
        exec(compile(code, f"docs/patching.md (vision block {i})", "exec"), scope)
    r = scope["scrubbed"].intervals()["% recovered vs random"]
    assert abs(r.estimate - 100.0) < 1e-6
    assert len(scope["units"].to_frame()) > 0 and len(scope["maps"].to_frame()) > 0


def test_the_adversary_takes_a_tensor_task_with_the_scrubs_numbers():
    x, task = _one_branch_task()
    m = fl.wrap(OneBranch().eval())
    h = sc.Hypothesis("b carries the label")
    h.add("b", sc.to("b"), feature=sc.field("label"))
    adv = sc.adversary(m, task, h, n=200, features={"label": sc.field("label")}, budget=2)
    plain = sc.scrub(m, task, h, n=200, n_boot=50)
    assert isinstance(adv, sc.AdversaryResult) and adv.evaluations >= 1
    np.testing.assert_allclose(adv.base_expectation, plain.expectation, rtol=1e-9)
    np.testing.assert_allclose(adv.original, float(plain.original.mean()), rtol=1e-9)
