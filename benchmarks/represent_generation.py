"""Speed of steered generation and continuation scoring (faithlens.representations).

Ratios against baselines run in the same process on the same prompts:

- ``generate`` (the engine, keys and values reused with ``Resume.decode``, steering at every
  token) vs Hugging Face ``generate`` with a bare forward hook adding the same vector, and vs a
  naive loop that re-runs the whole sequence through the engine at every step;
- ``Behaviour.margin`` (one prompt pass, both continuations on its cached keys and values) vs
  two full teacher-forced passes (prompt + continuation, once per continuation).

    python benchmarks/represent_generation.py [--model smollm2] [--n 16] [--tokens 16]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

import faithlens as fl
from faithlens.representations import Steering, fact_completion, generate
from faithlens.representations.generation import encode, left_pad, padded_inputs, position_ids


def best_of(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--layer", type=int, default=12)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    m = fl.load(a.model)
    beh = fact_completion(m, n=a.n, seed=0)
    v = torch.randn(m.d_model, generator=torch.Generator().manual_seed(0))
    st = Steering({f"resid_post.{a.layer}": v})
    layer_mod = m.module.get_submodule(m.site_info(f"resid_post.{a.layer}").hook.module)

    def ours() -> object:
        return generate(m, beh.prompts, st, max_new_tokens=a.tokens, stop=[])

    seqs = encode(m, beh.prompts)
    ids, mask, P = left_pad(m, seqs)

    def hf() -> object:
        h = layer_mod.register_forward_hook(
            lambda mod, args, out: (out[0] + v, *out[1:]) if isinstance(out, tuple) else out + v
        )
        try:
            with torch.no_grad():
                return m.module.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    max_new_tokens=a.tokens,
                    min_new_tokens=a.tokens,
                    do_sample=False,
                    pad_token_id=0,
                )
        finally:
            h.remove()

    def naive() -> object:
        cur, cm = ids, mask
        ivs = st.prompt_interventions(1)  # every position
        for _ in range(a.tokens):
            out = m.run(
                padded_inputs(cur, cm, position_ids(cm), m), ivs, logits_at=cur.shape[1] - 1
            )
            assert out.logits is not None
            nxt = out.logits[:, -1].argmax(-1)
            cur = torch.cat([cur, nxt[:, None]], 1)
            cm = torch.cat([cm, torch.ones_like(cm[:, :1])], 1)
        return cur

    # the three decode the same greedy tokens
    mine = ours().tokens  # type: ignore[attr-defined]
    ref = naive()[:, ids.shape[1] :].numpy()
    agree = float((mine == ref).mean())
    t_ours, t_hf, t_naive = (best_of(f, a.repeat) for f in (ours, hf, naive))
    print(
        f"{m.name}: {a.n} prompts x {a.tokens} new tokens, steering at every token "
        f"(token agreement with the naive loop: {agree:.3f})"
    )
    print(f"  faithlens generate      {t_ours:7.2f} s")
    print(
        f"  HF generate + hook      {t_hf:7.2f} s   ratio faithlens / HF    = {t_ours / t_hf:.2f}"
    )
    print(
        f"  naive full re-run loop  {t_naive:7.2f} s   ratio naive / faithlens = {t_naive / t_ours:.2f}"
    )

    def margin() -> object:
        return beh.margin(m, st)

    def two_passes() -> object:
        from faithlens.representations.generation import score_alternatives

        a1 = score_alternatives(m, beh.prompts, [beh.positive], st)[0]
        a2 = score_alternatives(m, beh.prompts, [beh.negative], st)[0]
        return np.nansum(a1, 1) - np.nansum(a2, 1)

    def full_passes() -> object:
        out = []
        for conts in (beh.positive, beh.negative):
            tails = [m.tokenizer(c, add_special_tokens=False)["input_ids"] for c in conts]
            fi, fm, Pp = left_pad(m, seqs, tails)
            r = m.run(
                padded_inputs(fi, fm, position_ids(fm), m),
                st.prompt_interventions(fi.shape[1]),
                logits_at=list(range(Pp - 1, fi.shape[1] - 1)),
            )
            assert r.logits is not None
            lp = torch.log_softmax(r.logits.float(), -1).gather(-1, fi[:, Pp:, None])[..., 0]
            out.append((lp * fm[:, Pp:]).sum(1).numpy())
        return out[0] - out[1]

    diff = float(np.abs(np.asarray(margin()) - np.asarray(full_passes())).max())
    t_m, t_two, t_full = (best_of(f, a.repeat) for f in (margin, two_passes, full_passes))
    print(f"  margin (shared prompt)  {t_m:7.2f} s   (max |diff| vs full passes {diff:.1e})")
    print(f"  two separate scorings   {t_two:7.2f} s   ratio = {t_two / t_m:.2f}")
    print(f"  two full passes         {t_full:7.2f} s   ratio = {t_full / t_m:.2f}")


if __name__ == "__main__":
    main()
