"""Explain SmolLM2's MLP neurons by token-level concepts, with guarantees.

    python examples/neurons_smollm2.py                      # 2000 sentences, layer 4, all 1536 neurons
    python examples/neurons_smollm2.py --n-texts 300 --units 128 --n-boot 100   # a quick look

The probing set is the shipped word corpus (template sentences whose slots are filled from the
shipped word list: animals, colours, months, pronouns...), so every token's concepts are known
without a download. Tokens of one sentence are not independent, so each sentence is one draw:
the bounds hold for ratios of per-sentence means and the bootstrap resamples whole sentences.
Thresholds come from a held-out share of the sentences, which keeps the grouped bounds tight
(no uniformity over thresholds is needed).

Prints how many neurons are certified, the most selective neurons with their IoU intervals, the
BE prediction sets (stability), and, for comparison only, how many would be certified if tokens
were independent draws (they are not: the gap is the price of within-sentence dependence);
saves the result and a stability plot with --out.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import faithlens as fl
import faithlens.neurons as N


def main(argv: list[str] | None = None) -> N.NeuronExplanation:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--site", default="mlp_post.4")
    ap.add_argument("--n-texts", type=int, default=2000)
    ap.add_argument("--units", type=int, default=0, help="only the first N neurons (0: all)")
    ap.add_argument(
        "--alpha", type=float, default=0.01, help="top quantile of activations that fires"
    )
    ap.add_argument(
        "--holdout", type=float, default=0.2, help="share of sentences that sets thresholds"
    )
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    model = fl.load(args.model)
    texts = N.word_corpus(args.n_texts, seed=args.seed)
    t0 = time.perf_counter()
    acts, concepts = N.probe_tokens(model, texts, args.site)
    if args.units:
        acts = acts.units(range(min(args.units, acts.n_units)))
    # concepts seen in fewer than 10 sentences cannot be bounded usefully: leave them out
    assert acts.groups is not None
    n_sent = [
        len(set(acts.groups[concepts.values[:, j] > 0].tolist()))
        for j in range(concepts.n_concepts)
    ]
    common = [name for name, k in zip(concepts.names, n_sent) if k >= 10]
    if len(common) < concepts.n_concepts:
        print(
            f"leaving out {concepts.n_concepts - len(common)} concepts seen in fewer than 10 sentences"
        )
        concepts = concepts.select(common)
    print(
        f"{model.name} {args.site}: {acts.n_units} neurons on {acts.n_samples} tokens of "
        f"{len(texts)} sentences, {concepts.n_concepts} concepts "
        f"({time.perf_counter() - t0:.1f} s to probe)"
    )

    t0 = time.perf_counter()
    res = N.explain(
        acts,
        concepts,
        ["iou", "f1"],
        alpha=args.alpha,
        holdout=args.holdout,
        n_boot=args.n_boot,
        seed=args.seed,
        skip_constant=True,
    )
    print(f"explained in {time.perf_counter() - t0:.1f} s")
    print(res.summary(max_units=0))

    df = res.to_frame()
    iou = df[df.metric == "iou"].sort_values("score", ascending=False)
    print("\nmost selective neurons (IoU):")
    cols = [
        "unit",
        "status",
        "top_scoring",
        "score",
        "score_ci_low",
        "score_ci_high",
        "provable_size",
        "be_set",
    ]
    print(iou[cols].head(12).to_string(index=False, float_format="%.3f"))
    be = res.be_set("iou")
    live = [u for u in range(len(res.units)) if u not in res.skipped]
    single = float((be[live].sum(1) == 1).mean())
    print(
        f"\nstability: {single:.0%} of neurons have a single-concept 90% BE set; "
        f"certified: {int(res.certified('iou').sum())} (IoU), {int(res.certified('f1').sum())} (F1)"
    )
    # What the dependence between tokens costs: the same explanation if every token were an
    # independent draw. Tokens of a sentence are NOT independent, so these are not guarantees;
    # the comparison shows how much of the width above comes from treating sentences as draws.
    flat = N.Activations(acts.values, acts.unit_names)
    naive = N.explain(
        flat, concepts, "iou", alpha=args.alpha, n_boot=0, seed=args.seed, skip_constant=True
    )
    print(
        f"for comparison only, if tokens were independent (they are not): "
        f"{int(naive.certified().sum())} neurons would be certified by IoU"
    )

    top = iou["unit"].iloc[0]
    print(f"\nall concepts for the most selective neuron {top}:")
    print(res.unit(top, "iou", top=5).to_string(index=False, float_format="%.3f"))

    if args.out is not None:
        best = [res.units.index(u) for u in iou["unit"].head(4)]
        fig = res.plot(metric="iou", units=best)
        res.save(args.out, extras={"stability.png": lambda p: fig.savefig(p, dpi=120)})
        print(f"\nsaved to {args.out}")
    return res


if __name__ == "__main__":
    main()
