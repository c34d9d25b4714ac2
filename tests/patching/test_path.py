"""Path patching against the plain-PyTorch reference (three explicit hooked runs per sender)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import faithlens as fl
from tests.helpers.builders import BUILDERS
from tests.helpers.reference import reference_path_patch
from tests.helpers.tasks import padded_task


def _senders(model):
    return ["head.0.1", "head.1.2", *(["mlp.0"] if model.d_mlp else [])]


@pytest.mark.parametrize(
    "receivers, ports, positions, receiver_positions, direction",
    [
        (["head.2.0", "mlp.1"], ("q", "k", "v"), "all", "all", "denoising"),
        (["head.2.0", "head.2.3"], ("k",), "last", "last", "noising"),
        (["head.2.1"], ("q", "v"), "all", "last", "denoising"),
        (["logits"], ("q", "k", "v"), "all", "all", "denoising"),
        (["logits"], ("q", "k", "v"), "last", "all", "noising"),
    ],
)
def test_path_patching_equals_reference(
    tiny_causal, receivers, ports, positions, receiver_positions, direction
):
    _, hf = tiny_causal
    model = fl.wrap(hf)
    task = padded_task(model)
    senders = _senders(model)
    recv = [r for r in receivers if model.d_mlp or not r.startswith("mlp")]
    res = fl.path_patch(
        model,
        task,
        senders,
        recv,
        receiver_ports=ports,
        positions=positions,
        receiver_positions=receiver_positions,
        direction=direction,
        n_boot=50,
        max_rows=12,
    )
    ref = reference_path_patch(
        hf, task, senders, recv, ports, positions, receiver_positions, direction
    )
    assert res.site == senders and res.method == "path"
    assert res.patched.shape == ref.shape
    np.testing.assert_allclose(res.patched, ref, atol=1e-4, rtol=0)
    # the effects are normalised like activation patching, with intervals
    assert np.all(res.ci_low <= res.effect + 1e-12) and np.all(res.effect <= res.ci_high + 1e-12)


def test_path_to_logits_from_the_last_layer_is_activation_patching(tiny_causal):
    """From a head of the last layer, the only path to the output in an attention-only model is
    the direct one: path patching into the logits is activation patching of the head."""
    arch, hf = tiny_causal
    model = fl.wrap(hf)
    task = padded_task(model)
    heads = ["head.2.0", "head.2.3"]
    path = fl.path_patch(model, task, heads, "logits", n_boot=20)
    act = fl.patch(model, task, heads, n_boot=20)
    if not model.d_mlp:
        np.testing.assert_allclose(path.patched, act.patched, atol=1e-5)
    else:
        # the last MLP reads the head in a sequential block: that path is cut
        assert not np.allclose(path.patched, act.patched, atol=1e-5) or arch == "gpt_neox"


def test_sender_groups_skip_senders_without_an_edge(tiny_llama):
    model = fl.wrap(tiny_llama)
    task = padded_task(model)
    res = fl.path_patch(model, task, "head", ["head.1.0"], receiver_ports="q", n_boot=20)
    assert res.site == [f"head.0.{h}" for h in range(6)]
    assert res.meta["senders_without_edge"] == [f"head.{L}.{h}" for L in (1, 2) for h in range(6)]
    named = fl.path_patch(model, task, ["head.0.4"], ["head.1.0"], receiver_ports="q", n_boot=20)
    np.testing.assert_allclose(named.patched[0], res.patched[4], atol=1e-6)
    assert res.meta["receiver_ports"] == ["q"] and res.meta["receivers"] == ["head.1.0"]
    mlps = fl.path_patch(model, task, "mlp", ["mlp.2"], n_boot=20)
    assert mlps.site == ["mlp.0", "mlp.1"] and mlps.kind == ["mlp", "mlp"]


def test_path_patching_result_reads_as_path_patching(tiny_llama, tmp_path):
    model = fl.wrap(tiny_llama)
    task = padded_task(model)
    res = fl.path_patch(model, task, ["head.0.1", "mlp.0"], ["head.2.0"], n_boot=20)
    text = res.summary()
    assert "path patching" in text and "head.2.0" in text
    with pytest.raises(fl.InputError, match="path patching"):
        res.interventions()
    res.save(tmp_path / "r")
    back = fl.Result.load(tmp_path / "r")
    assert back.meta == res.meta and np.allclose(back.patched, res.patched)
    assert back.plot().axes


def test_path_patching_bad_input(tiny_llama):
    model = fl.wrap(tiny_llama)
    task = padded_task(model)
    with pytest.raises(fl.InputError, match="no direct edge"):
        fl.path_patch(model, task, ["head.2.0"], ["head.1.0"])
    with pytest.raises(fl.InputError, match="cannot be combined"):
        fl.path_patch(model, task, ["head.0.0"], ["logits", "head.1.0"])
    with pytest.raises(fl.InputError, match="receiver_ports"):
        fl.path_patch(model, task, ["head.0.0"], ["head.1.0"], receiver_ports=["query"])
    with pytest.raises(fl.InputError, match="positions='each': must be one of"):
        fl.path_patch(model, task, ["head.0.0"], ["head.1.0"], positions="each")
    with pytest.raises(fl.InputError, match="not a head or an MLP"):
        fl.path_patch(model, task, ["embed"], ["head.1.0"])
    with pytest.raises(fl.SiteError, match=r"head\.9\.9"):
        fl.path_patch(model, task, ["head.9.9"], ["head.1.0"])
    with pytest.raises(fl.InputError, match="Task"):
        fl.path_patch(model, "ioi", ["head.0.0"], ["head.1.0"])  # type: ignore[arg-type]
    # post-LN (BERT): the residual stream is not a sum of component outputs
    bert = fl.wrap(BUILDERS["bert"]())
    with pytest.raises(fl.InputError, match="not a sum of component outputs"):
        fl.path_patch(bert, fl.tasks.random_token_task(bert, 2, 6), "head", "logits")


@pytest.mark.slow
def test_path_patching_on_smollm2_ioi_equals_reference(smollm2):
    """IOI on SmolLM2: two heads and an MLP into two late heads' queries and an MLP."""
    task = fl.tasks.ioi(smollm2, n=6, seed=0)
    senders = ["head.14.3", "mlp.20", "head.22.2"]
    receivers = ["head.25.1", "head.27.4", "mlp.28"]
    res = fl.path_patch(
        smollm2, task, senders, receivers, receiver_ports="q", receiver_positions="last", n_boot=50
    )
    ref = reference_path_patch(
        smollm2.module, task, senders, receivers, ("q",), receiver_positions="last"
    )
    np.testing.assert_allclose(res.patched, ref, atol=1e-4, rtol=0)
    direct = fl.path_patch(smollm2, task, senders, "logits", n_boot=50)
    ref = reference_path_patch(smollm2.module, task, senders, ["logits"])
    np.testing.assert_allclose(direct.patched, ref, atol=1e-4, rtol=0)


def test_path_patching_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    """A run killed after two chunks of examples and started again with the same folder runs
    only the other chunks, with the same result and progress calls; another run's folder is
    refused."""
    from faithlens.errors import CheckpointError
    from faithlens.patching import path
    from faithlens.tasks.induction import induction_task

    m = fl.load("zoo:induction")
    task = induction_task(16, seed=0)
    kw = {"n_boot": 50, "max_memory": 1 << 19}
    ticks: list[list[tuple[int, int]]] = [[], []]
    ref = fl.path_patch(m, task, "head", progress=lambda d, t: ticks[0].append((d, t)), **kw)
    real, calls = path._run_chunk, [0]

    def chunk(*args):
        calls[0] += 1
        if calls[0] > 2:
            raise RuntimeError("killed")
        return real(*args)

    folder = tmp_path / "ck"
    monkeypatch.setattr(path, "_run_chunk", chunk)
    with pytest.raises(RuntimeError, match="killed"):
        fl.path_patch(m, task, "head", checkpoint=folder, **kw)
    assert len(list(folder.glob("chunk_*.npz"))) == 2
    calls[0] = -(10**6)
    got = fl.path_patch(
        m, task, "head", checkpoint=folder, progress=lambda d, t: ticks[1].append((d, t)), **kw
    )
    n_chunks = len(list(folder.glob("chunk_*.npz")))
    assert calls[0] == -(10**6) + n_chunks - 2 and n_chunks > 2
    for f in ("effect", "se", "ci_low", "ci_high", "patched", "base", "source"):
        assert np.array_equal(getattr(ref, f), getattr(got, f), equal_nan=True), f
    assert ticks[0] == ticks[1]
    with pytest.raises(CheckpointError, match="another run"):
        fl.path_patch(m, task, "head", direction="noising", checkpoint=folder, **kw)


# ------------------------------------------------------------------ multi-token answers

# prompts of 4, 3 and 5 tokens; answers of 1 to 3 tokens (the wrong ones of other lengths)
MT_CLEAN = [[5, 17, 3, 9], [8, 40, 12], [2, 61, 7, 30, 2]]
MT_CORRUPT = [[5, 21, 3, 9], [8, 33, 12], [2, 14, 7, 30, 2]]
MT_CORRECT = [[17, 3], [40], [61, 7, 30]]
MT_WRONG = [[21], [33, 12, 4], [14, 7]]


def _teacher_forced(logits, part):
    """log p(answer | prompt) by hand: the log-softmax at each read position, the answer token
    picked, padding masked, summed."""
    lp = torch.log_softmax(logits.double(), -1)
    rows = torch.arange(part.n)[:, None]
    picked = lp[rows, part.reads].gather(-1, part.answers[..., None])[..., 0]
    return (picked * part.answer_mask).sum(-1)


@pytest.mark.parametrize(
    "receivers, direction", [(["logits"], "denoising"), (["head.2.0", "mlp.1"], "noising")]
)
def test_path_patching_a_multi_token_task_equals_reference(tiny_causal, receivers, direction):
    """log p(correct) - log p(wrong), each continuation teacher-forced in its own runs and
    subtracted per example, against the hooked reference run on each continuation."""
    _, hf = tiny_causal
    model = fl.wrap(hf)
    task = fl.Task.multi_token(model, MT_CLEAN, MT_CORRUPT, MT_CORRECT, MT_WRONG)
    senders = _senders(model)
    recv = [r for r in receivers if model.d_mlp or not r.startswith("mlp")]
    res = fl.path_patch(model, task, senders, recv, direction=direction, n_boot=50, max_rows=8)
    ref = sum(
        sign
        * reference_path_patch(hf, part, senders, recv, direction=direction, score=_teacher_forced)
        for part, sign in task.parts()
    )
    assert res.metric == "seq_logprob_diff" and res.patched.shape == (len(senders), 3)
    np.testing.assert_allclose(res.patched, ref, atol=1e-4, rtol=0)
    # the unpatched runs are the task's own metric
    base = "corrupt" if direction == "denoising" else "clean"
    np.testing.assert_allclose(res.base, task.evaluate(model, base).numpy(), atol=1e-4)


def test_path_patching_a_multi_token_task_refuses_last(tiny_gpt2):
    model = fl.wrap(tiny_gpt2)
    task = fl.Task.multi_token(model, MT_CLEAN, MT_CORRUPT, MT_CORRECT, MT_WRONG)
    for kw in ({"positions": "last"}, {"receiver_positions": "last"}):
        with pytest.raises(fl.InputError, match="multi-token"):
            fl.path_patch(model, task, "head", ["head.1.0"], n_boot=10, **kw)
