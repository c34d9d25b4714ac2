"""Generation and teacher-forced scoring through the engine: parity with Hugging Face, left
padding, steering schedules against plain hooks, sampling, stop tokens, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import faithlens as fl
from faithlens.representations import Steering, continuation_logprobs, generate
from faithlens.representations.generation import Generations, score_alternatives
from faithlens.results import Result
from tests.helpers import builders

PROMPTS = [(5, 17, 33, 2, 8), (40, 41, 42, 43, 44, 45, 46, 47), (9, 60, 3)]


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def lm(request, tiny_llama, tiny_gpt2):
    hf = tiny_llama if request.param == "llama" else tiny_gpt2
    return fl.wrap(hf)


def test_greedy_generation_matches_hugging_face(lm):
    eos = lm.module.config.eos_token_id  # both stop there; HF keeps the stop token
    gens = generate(lm, PROMPTS, max_new_tokens=6, stop=[eos])
    for i, p in enumerate(PROMPTS):
        ids = torch.tensor([p])
        ref = lm.module.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=6,
            do_sample=False,
            pad_token_id=0,
        )[0, len(p) :].tolist()
        if eos in ref:
            ref = ref[: ref.index(eos)]
        assert [t for t in gens.tokens[i].tolist() if t >= 0] == ref


def test_left_padded_batch_equals_single_prompts(lm):
    gens = generate(lm, PROMPTS, max_new_tokens=5, stop=[])
    for i, p in enumerate(PROMPTS):
        one = generate(lm, [p], max_new_tokens=5, stop=[])
        assert one.tokens[0].tolist() == gens.tokens[i].tolist()
        np.testing.assert_allclose(one.logprobs[0], gens.logprobs[i], atol=1e-5)


def _plain_logprobs(hf, prompt, cont, edit=None):
    """Reference: one unpadded forward pass of prompt + continuation with a bare hook."""
    ids = torch.tensor([list(prompt) + list(cont)])
    handle = None
    if edit is not None:
        module, fn = edit
        handle = module.register_forward_hook(
            lambda m, a, o: (fn(o[0].clone()), *o[1:]) if isinstance(o, tuple) else fn(o.clone())
        )
    try:
        with torch.no_grad():
            lp = torch.log_softmax(hf(input_ids=ids).logits[0].float(), -1)
    finally:
        if handle is not None:
            handle.remove()
    P = len(prompt)
    return np.array([float(lp[P - 1 + k, t]) for k, t in enumerate(cont)])


def _layer(hf, i):
    return hf.model.layers[i] if hasattr(hf, "model") else hf.transformer.h[i]


def test_teacher_forcing_matches_a_plain_forward_pass(lm):
    conts = [(7, 8, 9), (11,), (12, 13)]
    got = continuation_logprobs(lm, PROMPTS, conts)
    for i, (p, c) in enumerate(zip(PROMPTS, conts)):
        np.testing.assert_allclose(got[i, : len(c)], _plain_logprobs(lm.module, p, c), atol=1e-5)
        assert np.all(np.isnan(got[i, len(c) :]))
    # scoring several alternatives on one prompt pass gives the same numbers
    a, b = score_alternatives(lm, PROMPTS, [conts, [(1, 2)] * 3])
    np.testing.assert_allclose(a, got, atol=1e-6, equal_nan=True)
    np.testing.assert_allclose(b[0], _plain_logprobs(lm.module, PROMPTS[0], (1, 2)), atol=1e-5)


@pytest.mark.parametrize(
    ("when", "first_k", "prompt", "steered"),
    [
        ("all", None, "all", lambda P, T: range(T)),
        ("prompt", None, "all", lambda P, T: range(P)),
        ("generated", None, "all", lambda P, T: range(P, T)),
        ("all", 1, "all", lambda P, T: range(P + 1)),
        ("all", None, "last", lambda P, T: [P - 1, *range(P, T)]),
    ],
)
def test_steering_schedules_match_a_plain_hook(lm, when, first_k, prompt, steered):
    g = torch.Generator().manual_seed(0)
    v = torch.randn(lm.d_model, generator=g) * 2
    st = Steering({"resid_post.1": v}, when=when, first_k=first_k, prompt=prompt)
    p, c = PROMPTS[0], (7, 8, 9)
    P, T = len(p), len(p) + len(c)
    keep = list(steered(P, T))

    def edit(h):
        h[:, keep] += v
        return h

    ref = _plain_logprobs(lm.module, p, c, (_layer(lm.module, 1), edit))
    got = continuation_logprobs(lm, [p, PROMPTS[1]], [c, (1,)], st)[0]
    np.testing.assert_allclose(got, ref, atol=1e-5)
    # generation applies the same schedule: its log-probs equal teacher forcing of its tokens
    gens = generate(lm, PROMPTS, st, max_new_tokens=4, stop=[])
    tf = continuation_logprobs(lm, PROMPTS, [tuple(r) for r in gens.tokens], st)
    np.testing.assert_allclose(tf, gens.logprobs, atol=1e-5)


def test_project_out_removes_the_direction(lm):
    v = torch.randn(lm.d_model, generator=torch.Generator().manual_seed(1))
    u = v / v.norm()
    st = Steering({"resid_post.0": v}, operator="project_out")

    def edit(h):
        return h - (h @ u)[..., None] * u

    ref = _plain_logprobs(lm.module, PROMPTS[0], (3, 4), (_layer(lm.module, 0), edit))
    got = continuation_logprobs(lm, [PROMPTS[0]], [(3, 4)], st)[0]
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_sampling_is_seeded_and_top_k_1_is_greedy(lm):
    a = generate(lm, PROMPTS, max_new_tokens=6, temperature=1.5, seed=3, stop=[])
    b = generate(lm, PROMPTS, max_new_tokens=6, temperature=1.5, seed=3, stop=[])
    c = generate(lm, PROMPTS, max_new_tokens=6, temperature=1.5, seed=4, stop=[])
    greedy = generate(lm, PROMPTS, max_new_tokens=6, stop=[])
    k1 = generate(lm, PROMPTS, max_new_tokens=6, temperature=1.0, top_k=1, seed=9, stop=[])
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert not np.array_equal(a.tokens, c.tokens)
    np.testing.assert_array_equal(k1.tokens, greedy.tokens)


def test_stop_tokens_and_tracking(lm):
    greedy = generate(lm, PROMPTS, max_new_tokens=4, stop=[], track=[1, 2])
    assert greedy.tracked.shape == (3, 4, 2) and np.all(np.isfinite(greedy.tracked))
    first = int(greedy.tokens[0, 0])
    stopped = generate(lm, PROMPTS, max_new_tokens=4, stop=[first])
    assert stopped.lengths[0] == 0 and np.all(stopped.tokens[0] == -1)
    assert np.all(np.isnan(stopped.logprobs[0]))


def test_generations_result_roundtrip(tmp_path, lm):
    g = generate(lm, PROMPTS, max_new_tokens=3, stop=[], track=[5])
    g.save(tmp_path / "g")
    back = Result.load(tmp_path / "g")
    assert isinstance(back, Generations)
    np.testing.assert_array_equal(back.tokens, g.tokens)
    assert back.track == [5] and len(back.to_frame()) == 3
    assert "generations" in g.summary() and g.plot().axes


def test_bad_input():
    lm = fl.wrap(builders.bert())
    with pytest.raises(fl.InputError, match="causal"):
        generate(lm, PROMPTS, max_new_tokens=2)
    m = fl.wrap(builders.llama())
    with pytest.raises(fl.InputError, match="max_new_tokens"):
        generate(m, PROMPTS, max_new_tokens=0)
    with pytest.raises(fl.InputError, match="temperature"):
        generate(m, PROMPTS, temperature=-1)
    with pytest.raises(fl.InputError, match="track"):
        generate(m, PROMPTS, track=[10_000])
    with pytest.raises(fl.InputError, match="empty"):
        generate(m, [()])
    with pytest.raises(fl.InputError, match="one per prompt"):
        continuation_logprobs(m, PROMPTS, [(1,)])
    with pytest.raises(fl.ShapeError, match="width"):
        generate(m, PROMPTS, Steering({"resid_post.0": torch.ones(5)}))
    with pytest.raises(fl.SiteError):
        generate(m, PROMPTS, Steering({"resid_post.9": torch.ones(m.d_model)}))
    with pytest.raises(fl.InputError, match="when"):
        Steering({"resid_post.0": torch.ones(3)}, when="sometimes")
    with pytest.raises(fl.InputError, match="zero vector"):
        Steering({"resid_post.0": torch.zeros(3)}, operator="project_out")
    with pytest.raises(fl.InputError, match="NaN"):
        Steering({"resid_post.0": torch.tensor([1.0, float("nan")])})


def test_resume_decode_errors(tiny_llama):
    m = fl.wrap(tiny_llama)
    ids = torch.tensor([list(PROMPTS[1])])
    out = m.run(ids[:, :5], return_kv=True)
    with pytest.raises(fl.InputError, match="layer=0"):
        m.run(ids[:, :6], start_at=fl.Resume(1, None, 5, out.kv))
    with pytest.raises(fl.ShapeError, match="examples"):
        m.run(ids[:, :6].repeat(2, 1), start_at=fl.Resume.decode(out.kv))
    with pytest.raises(fl.InputError, match="keys and values"):
        fl.Resume.decode([])
    # the decoded step equals the same position of a full run
    full = m.run(ids[:, :6]).logits
    step = m.run(ids[:, :6], start_at=fl.Resume.decode(out.kv)).logits
    assert torch.allclose(step[:, -1], full[:, 5], atol=1e-5)


def test_left_padding_is_allowed_only_with_explicit_positions(tiny_llama):
    m = fl.wrap(tiny_llama)
    ids = torch.tensor([[0, 5, 6], [7, 8, 9]])
    mask = torch.tensor([[0, 1, 1], [1, 1, 1]])
    with pytest.raises(fl.InputError, match="right padding"):
        m.run(fl.Inputs(ids=ids, mask=mask))
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    out = m.run(fl.Inputs(ids=ids, mask=mask, kwargs={"position_ids": pos}))
    alone = m.run(torch.tensor([[5, 6]]))
    assert torch.allclose(out.logits[0, 1:], alone.logits[0], atol=1e-5)
