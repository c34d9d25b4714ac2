"""Causal scrubbing cost: batched, memoised evaluation vs forward passes and vs a naive
implementation, in the same run.

For each hypothesis with k distinct data on N reference examples, it prints

- ``ratio``: the engine's evaluation time divided by the time of one ordinary forward pass of
  the N examples (the goal: at most 1.5 * (k + 1)), and the same ratio in layer-rows (blocks
  run x rows, a machine-independent count);
- ``speed-up``: the per-example time of a naive recursive implementation (the main post's
  recursion, one example and one node copy at a time, no memoisation: see
  ``tests/helpers/scrub_reference.py``'s ``naive_scrub``) times N, divided by the engine's time; the
  naive outputs are checked against the engine's.

Usage: ``python benchmarks/scrub.py [--n 512] [--naive 3] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers.scrub_reference import naive_scrub  # noqa: E402

import faithlens as fl  # noqa: E402
from faithlens import scrubbing as sc  # noqa: E402
from faithlens.scrubbing.evaluate import TableFeed, prepare, run_prepared  # noqa: E402


def build(seq: int, vocab: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        hidden_size=128,
        intermediate_size=256,
        vocab_size=vocab,
        max_position_embeddings=seq,
    )
    return fl.wrap(LlamaForCausalLM(cfg).eval())


def hypotheses() -> list[sc.Hypothesis]:
    def tok(i: int):
        return lambda d: d["ids"][:, i] % 4

    direct = sc.Hypothesis("3 heads, direct paths")
    for j, (L, H) in enumerate([(3, 0), (3, 1), (2, 2)]):
        direct.add(f"h{L}{H}", sc.to(f"head.{L}.{H}", direct=True), feature=tok(j))
    deep = sc.Hypothesis("induction-like: Q/K/V paths")
    a = deep.add("h30", sc.to("head.3.0", direct=True), feature=tok(0))
    a.add("v", sc.to("embed", port="v", direct=True), feature=tok(1))
    k = a.add("k", sc.to("head.1.1", port="k", direct=True), feature=tok(2))
    k.add("k_in", sc.to("embed", direct=True), feature=tok(3))
    deep.add("m3", sc.to("mlp.3", direct=True), feature=tok(0))
    wide = sc.Hypothesis("8 direct components + 2 inputs")
    for j, s in enumerate(
        ["head.3.0", "head.3.1", "head.3.2", "head.3.3", "mlp.3", "mlp.2", "head.2.0", "head.2.1"]
    ):
        node = wide.add(s.replace(".", "_"), sc.to(s, direct=True), feature=tok(j % 4))
        if j < 2:
            node.add("in" + str(j), sc.input_of(port="q"), feature=tok(3))
    return [direct, deep, wide]


def time_it(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--naive", type=int, default=3, help="examples for the naive implementation")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    vocab = 64
    m = build(args.seq, vocab)
    g = torch.Generator().manual_seed(0)
    pool = 4 * args.n
    ids = torch.randint(0, vocab, (pool, args.seq), generator=g)
    data = sc.ScrubData(ids=ids, mask=torch.ones_like(ids), label=ids[:, -1])
    beh = sc.NextTokenLoss()
    inputs = fl.Inputs(ids=ids[: args.n], mask=torch.ones_like(ids[: args.n]))
    m.run(inputs)  # warm up
    t_fwd = time_it(lambda: m.run(inputs), args.repeats)
    print(f"model: 4 layers, 4 heads (2 kv), d_model 128; N = {args.n}, seq {args.seq}")
    print(f"one forward pass of N examples: {1000 * t_fwd:.1f} ms\n")
    header = (
        f"{'hypothesis':<32} {'k':>3} {'bound':>6} {'ratio':>6} {'layer-rows':>10} "
        f"{'engine ms':>10} {'naive ms/ex':>12} {'speed-up':>9}  ok"
    )
    print(header)
    print("-" * len(header))
    for h in hypotheses():
        prep = prepare(m, h, data, n=args.n, behaviour=beh, baselines=(), seed=0)
        k = len({d for d in prep.plan.data()})  # distinct data the evaluation reads
        out: dict[str, object] = {}

        def run(prep=prep, out=out) -> None:
            vals, _, stats = run_prepared(prep, batch_size=args.n)
            out["stats"] = stats

        run()
        t_eng = time_it(run, args.repeats)
        stats = out["stats"]
        layer_ratio = stats.layer_rows / (args.n * m.n_layers)  # type: ignore[attr-defined]
        ratio = t_eng / t_fwd
        bound = 1.5 * (k + 1)
        # the naive implementation on a few examples, checked against the engine
        feed = TableFeed(prep.table, prep.data, prep.graph.input_fields(), m.device)
        rows = list(range(args.naive))
        t = time.perf_counter()
        naive = naive_scrub(prep, rows)
        t_naive = (time.perf_counter() - t) / len(rows)
        fast = prep.graph.evaluate(prep.plan, feed, torch.tensor(rows))[1]
        same = all(torch.allclose(a, fast[i : i + 1], atol=1e-4) for i, a in enumerate(naive))
        speed = t_naive * args.n / t_eng
        print(
            f"{h.name:<32} {k:>3} {bound:>6.1f} {ratio:>6.2f} {layer_ratio:>10.2f} "
            f"{1000 * t_eng:>10.1f} {1000 * t_naive:>12.1f} {speed:>8.0f}x  "
            f"{'yes' if ratio <= bound and same else 'NO'}"
        )
    print(
        "\nratio = engine time / forward-pass time (goal <= bound = 1.5 (k + 1)); layer-rows: "
        "the same ratio counted in transformer blocks x rows; speed-up: naive per-example time "
        "x N / engine time; ok: within the bound and naive outputs equal the engine's."
    )


if __name__ == "__main__":
    main()
