"""The logit lens over layers and direct logit attribution, against references computed by hand
from cached activations and the weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import faithlens as fl
from faithlens.errors import ArgumentError, InputError
from faithlens.representations.lenses import frozen_norm
from tests.helpers.builders import BUILDERS, VOCAB


def _task(n: int = 6, seq: int = 7, seed: int = 0) -> fl.Task:
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(1, VOCAB, (n, seq), generator=g)
    corrupt = torch.randint(1, VOCAB, (n, seq), generator=g)
    answers = torch.randint(1, VOCAB, (n, 3), generator=g)
    lengths = [seq - (i % 3) for i in range(n)]  # padded rows: metric positions differ
    return fl.Task.from_token_ids(
        [c[:k].tolist() for c, k in zip(clean, lengths, strict=True)],
        [c[:k].tolist() for c, k in zip(corrupt, lengths, strict=True)],
        [tuple(a.tolist()) for a in answers],
        name="random",
    )


def _model(arch: str) -> fl.Model:
    return fl.wrap(BUILDERS[arch]().double())


def _hand_lens(model: fl.Model, task: fl.Task, site: str) -> np.ndarray:
    """Per example: the residual ``site`` at the metric position through ln_final and W_U."""
    out = model.run(task.clean, cache=[site])
    x = out.cache[site][torch.arange(task.n), task.positions]
    norm = model.module.get_submodule(model.adapter.site_info("ln_final").hook.module)
    w, b = model.adapter.unembed_weight()
    with torch.no_grad():
        logits = norm(x) @ w.T + (0 if b is None else b)
    picked = logits.gather(-1, task.answers)
    return (picked[:, 0] - picked[:, 1:].mean(-1)).numpy()


@pytest.mark.parametrize("arch", ["faithlens_zoo-attn_only", "gpt2", "llama", "gpt_neox"])
def test_logit_lens_matches_a_hand_reading_and_the_model_at_the_last_layer(arch):
    model, task = _model(arch), _task()
    res = fl.logit_lens(model, task, n_boot=200, seed=1)
    assert res.layers == list(range(model.n_layers))
    for i, L in enumerate(res.layers):
        hand = _hand_lens(model, task, f"resid_post.{L}")
        np.testing.assert_allclose(res.per_example[0, i], hand, atol=1e-5)  # float32 logits
        assert res.logit_diff[i] == pytest.approx(hand.mean(), abs=1e-5)
    own = task.evaluate(model).numpy()
    assert res.model_logit_diff == pytest.approx(own.mean(), abs=1e-5)
    assert res.logit_diff[-1] == pytest.approx(own.mean(), abs=1e-5)
    assert ((res.prob >= 0) & (res.prob <= 1)).all()
    assert ((res.rank >= 0) & (res.rank < VOCAB)).all()
    low, high = res.logit_diff_low, res.logit_diff_high
    assert ((low <= res.logit_diff) & (res.logit_diff <= high)).all()


def test_logit_lens_rank_and_probability_by_hand():
    model, task = _model("gpt2"), _task(n=4)
    res = fl.logit_lens(model, task, layers=[1], site="resid_mid", which="corrupt", n_boot=100)
    out = model.run(task.corrupt, cache=["resid_mid.1"])
    x = out.cache["resid_mid.1"][torch.arange(task.n), task.positions]
    norm = model.module.get_submodule("transformer.ln_f")
    with torch.no_grad():
        logits = norm(x) @ model.module.lm_head.weight.T
    correct = task.answers[:, 0]
    p = torch.softmax(logits, -1)[torch.arange(task.n), correct].numpy()
    rank = np.array([int((row > row[c]).sum()) for row, c in zip(logits, correct, strict=True)])
    np.testing.assert_allclose(res.per_example[1, 0], p, atol=1e-6)
    np.testing.assert_array_equal(res.per_example[2, 0], rank)
    assert res.at(1)["site"] == "resid_mid.1"


def _hand_dla(model: fl.Model, task: fl.Task) -> dict[str, np.ndarray]:
    """Every component's direct effect from the cached head outputs (``head.L.H``, through its
    slice of the output projection), MLP outputs and embedding, through the final LayerNorm with
    its scale taken from the final residual, and the unembedding."""
    n, H, dh = task.n, model.n_heads, model.d_head
    last = model.n_layers - 1
    names = ["resid_pre.0", f"resid_post.{last}"]
    names += [f"head.{L}.{h}" for L in range(model.n_layers) for h in range(H)]
    names += [f"mlp_out.{L}" for L in range(model.n_layers) if f"mlp_out.{L}" in model.sites()]
    out = model.run(task.clean, cache=names)
    at = {k: v[torch.arange(n), task.positions] for k, v in out.cache.items()}
    norm = model.module.get_submodule(model.adapter.site_info("ln_final").hook.module)
    resid = at[f"resid_post.{last}"]
    centred = resid - resid.mean(-1, keepdim=True)
    sigma = torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + norm.eps)
    W_U = model.adapter.unembed_weight()[0]
    d = W_U[task.answers[:, 0]] - W_U[task.answers[:, 1:]].mean(1)

    def direct(v: torch.Tensor) -> np.ndarray:
        v = v - v.mean(-1, keepdim=True)
        return ((v / sigma * norm.weight) * d).sum(-1).detach().numpy()

    hand = {"embed": direct(at["resid_pre.0"])}
    for L in range(model.n_layers):
        W_O, b_O = model.adapter.o_proj(L)
        for h in range(H):
            hand[f"head.{L}.{h}"] = direct(at[f"head.{L}.{h}"] @ W_O[:, h * dh : (h + 1) * dh].T)
        hand[f"attn_bias.{L}"] = direct(b_O.expand(n, -1)) if b_O is not None else np.zeros(n)
        if f"mlp_out.{L}" in at:
            hand[f"mlp_out.{L}"] = direct(at[f"mlp_out.{L}"])
    hand["bias"] = (norm.bias * d).sum(-1).detach().numpy()
    return hand


@pytest.mark.parametrize("arch", ["faithlens_zoo", "faithlens_zoo-attn_only", "gpt2"])
def test_dla_matches_a_brute_force_reference_and_sums_to_the_logit_diff(arch):
    model = _model(arch)
    task = _task(n=5)
    res = fl.direct_logit_attribution(model, task, n_boot=200, seed=2)
    hand = _hand_dla(model, task)
    assert sorted(res.components) == sorted(hand)
    for i, name in enumerate(res.components):
        np.testing.assert_allclose(res.per_example[i], hand[name], atol=1e-9, err_msg=name)
    own = task.evaluate(model).numpy()
    np.testing.assert_allclose(res.per_example.sum(0), own, atol=1e-5)  # own: float32
    assert res.total == pytest.approx(own.mean(), abs=1e-5)  # read through float32 logits
    assert res.residual < 1e-5
    c, lo, hi = res.contribution, res.contribution_low, res.contribution_high
    assert ((lo <= c + 1e-12) & (c <= hi + 1e-12)).all()


def test_max_memory_chunks_the_examples_and_keeps_the_numbers():
    # `faithlens dla ... --max-memory 1G` (docs/lenses.md) failed: the tokens-per-pass cap was
    # passed with max_memory
    model = _model("gpt2")
    task = _task(n=5)
    whole = fl.direct_logit_attribution(model, task, n_boot=50, seed=2)
    tiny = fl.direct_logit_attribution(model, task, n_boot=50, seed=2, max_memory=1)
    np.testing.assert_allclose(tiny.per_example, whole.per_example, atol=1e-9)
    lens = fl.logit_lens(model, task, n_boot=50, max_memory=10**9)
    assert np.isfinite(lens.to_frame()["logit_diff"]).all()


def test_dla_sums_to_the_logit_diff_through_an_rmsnorm():
    model, task = _model("llama"), _task(n=4)
    res = fl.direct_logit_attribution(model, task, n_boot=100)
    own = task.evaluate(model).numpy()
    np.testing.assert_allclose(res.per_example.sum(0), own, atol=1e-5)  # own: float32
    assert res.of("bias")["contribution"] == 0.0
    assert len(res.top(3)) == 3


def test_frozen_norm_refuses_a_norm_that_is_not_layer_or_rms():
    model = _model("gpt2")
    norm = model.module.transformer.ln_f
    x = torch.randn(3, model.d_model, dtype=torch.float64)
    linear, bias = frozen_norm(model, x)
    with torch.no_grad():
        np.testing.assert_allclose((linear(x) + bias).numpy(), norm(x).numpy(), atol=1e-12)
    model.module.transformer.ln_f = torch.nn.Tanh()  # no eps: refused
    with pytest.raises(InputError, match="cannot freeze its scale"):
        frozen_norm(model, x)


def test_bad_arguments_are_refused_before_work():
    model, task = _model("gpt2"), _task(n=3)
    with pytest.raises(ArgumentError, match="data"):
        fl.logit_lens(model, [1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(ArgumentError, match="layers"):
        fl.logit_lens(model, task, layers=[7])
    with pytest.raises(ArgumentError, match="site"):
        fl.logit_lens(model, task, site="mlp_out")
    with pytest.raises(ArgumentError, match="which"):
        fl.direct_logit_attribution(model, task, which="both")
    with pytest.raises(ArgumentError, match="n_boot"):
        fl.direct_logit_attribution(model, task, n_boot=0)


def test_results_round_trip(tmp_path):
    model, task = _model("faithlens_zoo-attn_only"), _task(n=4)
    lens = fl.logit_lens(model, task, n_boot=50)
    dla = fl.direct_logit_attribution(model, task, n_boot=50)
    for res, name in ((lens, "lens"), (dla, "dla")):
        res.save(tmp_path / name)
        back = type(res).load(tmp_path / name)
        assert back.to_frame().equals(res.to_frame())
        assert "±" in res.summary()
        res.plot()


def _gemma3() -> fl.Model:
    """A tiny Gemma 3: RMSNorm with a ``1 + w`` gain, and sandwich norms around each block."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(8)
    cfg = Gemma3TextConfig(
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        hidden_size=32,
        intermediate_size=64,
        head_dim=8,
        vocab_size=VOCAB,
        pad_token_id=0,
    )
    return fl.wrap(Gemma3ForCausalLM(cfg).eval().double())


def test_gemma3_lens_ends_at_the_model_and_dla_is_refused():
    model, task = _gemma3(), _task(n=4)
    lens = fl.logit_lens(model, task, n_boot=50)
    assert lens.logit_diff[-1] == pytest.approx(lens.model_logit_diff, abs=1e-5)
    for i, L in enumerate(lens.layers):
        hand = _hand_lens(model, task, f"resid_post.{L}")
        np.testing.assert_allclose(lens.per_example[0, i], hand, atol=1e-5)
    # the frozen-scale map rebuilds Gemma's RMSNorm (gain 1 + w) exactly
    norm = model.module.get_submodule(model.adapter.site_info("ln_final").hook.module)
    x = torch.randn(3, model.d_model, dtype=torch.float64)
    linear, bias = frozen_norm(model, x)
    with torch.no_grad():
        np.testing.assert_allclose((linear(x) + bias).numpy(), norm(x).numpy(), atol=1e-6)
    # each block's outputs pass through a norm before they join the residual: not additive
    with pytest.raises(InputError, match="not the sum of its components"):
        fl.direct_logit_attribution(model, task, n_boot=50)


# ------------------------------------------------------------------ multi-token answers

MT = dict(
    clean=[[5, 17, 3, 9], [8, 40, 12], [2, 61, 7, 30, 2]],
    corrupt=[[5, 21, 3, 9], [8, 33, 12], [2, 14, 7, 30, 2]],
    correct=[[17, 3], [40], [61, 7, 30]],
    wrong=[[21], [33, 12, 4], [14, 7]],
)


def _hand_multi_lens(model: fl.Model, part: fl.Task, site: str, which: str):
    """Per example of one continuation: the residual ``site`` at every position read, through
    ln_final and W_U by hand; log p(answer) summed over its real tokens, and the first answer
    token's rank at the first position read."""
    inputs = part.clean if which == "clean" else part.corrupt
    x = model.run(inputs, cache=[site]).cache[site]
    x = x[torch.arange(part.n)[:, None], part.reads]  # [n, k, d]
    norm = model.module.get_submodule(model.adapter.site_info("ln_final").hook.module)
    w, b = model.adapter.unembed_weight()
    with torch.no_grad():
        logits = (norm(x) @ w.T + (0 if b is None else b)).double()
    lp = torch.log_softmax(logits, -1).gather(-1, part.answers[..., None])[..., 0]
    seq = (lp * part.answer_mask).sum(-1)
    first = logits[:, 0]
    rank = (first > first.gather(-1, part.answers[:, :1])).sum(-1)
    return seq.numpy(), rank.double().numpy()


@pytest.mark.parametrize("arch", ["gpt2", "llama", "faithlens_zoo-attn_only"])
@pytest.mark.parametrize("which", ["clean", "corrupt"])
def test_logit_lens_reads_a_multi_token_task_by_teacher_forcing(arch, which):
    model = _model(arch)
    task = fl.Task.multi_token(model, **MT)
    res = fl.logit_lens(model, task, which=which, n_boot=50, seed=0)
    assert res.meta["metric"] == "seq_logprob_diff" and "seq_logprob_diff" in res.summary()
    right, wrong = [p for p, _ in task.parts()]
    for i, L in enumerate(res.layers):
        good, rank = _hand_multi_lens(model, right, f"resid_post.{L}", which)
        bad, _ = _hand_multi_lens(model, wrong, f"resid_post.{L}", which)
        np.testing.assert_allclose(res.per_example[0, i], good - bad, atol=1e-5)
        np.testing.assert_allclose(res.per_example[1, i], np.exp(good), atol=1e-6)
        np.testing.assert_array_equal(res.per_example[2, i], rank)
    # the last layer's resid_post through the final norm is the model itself: its own metric
    own = task.evaluate(model, which).numpy()
    assert res.model_logit_diff == pytest.approx(own.mean(), abs=1e-5)
    assert res.logit_diff[-1] == pytest.approx(own.mean(), abs=1e-5)
    # without wrong answers: log p(correct) alone
    alone = fl.Task.multi_token(model, MT["clean"], MT["corrupt"], MT["correct"])
    solo = fl.logit_lens(model, alone, which=which, n_boot=50)
    assert solo.meta["metric"] == "seq_logprob"
    np.testing.assert_allclose(solo.per_example[0, -1], alone.evaluate(model, which), atol=1e-5)
    # one example per chunk: the chunks' reads land in their own rows, one tick per chunk
    ticks = []
    chunked = fl.logit_lens(
        model,
        task,
        which=which,
        n_boot=50,
        seed=0,
        max_memory=1,
        progress=lambda d, t: ticks.append((d, t)),
    )
    np.testing.assert_allclose(chunked.per_example, res.per_example, atol=1e-9)
    assert ticks == [(i, task.n) for i in range(1, task.n + 1)]


def test_dla_still_refuses_a_multi_token_task():
    # a continuation's log-probability is not linear in the residual stream
    model = _model("gpt2")
    task = fl.Task.multi_token(model, **MT)
    with pytest.raises(InputError, match="multi-token answers"):
        fl.direct_logit_attribution(model, task, n_boot=10)


@pytest.mark.parametrize("fn", [fl.logit_lens, fl.direct_logit_attribution])
def test_an_answer_set_task_is_refused(fn):
    # the lenses read one correct answer against the mean wrong logit: a set (padded by
    # repeating members) would be read as something else
    model = _model("gpt2")
    base = _task(n=3)
    task = fl.Task.from_token_ids(
        base.clean.ids.tolist(), base.corrupt.ids.tolist(), [(1, 2, 3, 4)] * 3,
        metric=fl.tasks.AnswerSet(n_correct=2),
    )  # fmt: skip
    with pytest.raises(InputError, match="AnswerSet"):
        fn(model, task, n_boot=10)
