"""Representation analysis of truthfulness in SmolLM2-135M-Instruct, with faithfulness checks.

1. The behaviour: as an assistant asked to complete a sentence with a true fact, does the model
   prefer the true completion ("The capital of France is" -> " Paris" over " Beijing")? Measured
   by the teacher-forced log-probability margin of the whole completion and by judging greedy
   generations, each with a confidence interval.
2. Reading: a truth direction per layer from true vs false statements (the shipped
   ``contrast_truth.jsonl``), by PCA of paired differences, mean difference and a logistic
   probe, with held-out accuracy and AUROC.
3. Steering: add -c..+c times the direction at layers 10-16, at every prompt and generated
   token; the behaviour's change with CIs, next to random directions of the same norm.
4. What the direction detects among "true" and the 11 topics of the facts (Paper A's
   certified explanations and Bootstrap-Explanation sets, applied to the read-out).
5. The faithfulness report: causal, specific, stable, on-distribution, readable, who writes
   it, and one-shot vs continual injection.

Run:  python examples/represent_smollm2.py --out runs/represent
      python examples/represent_smollm2.py --small --out /tmp/x    (a 1-minute smoke run)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

import faithlens as fl
from faithlens import stats
from faithlens.representations import (
    compare,
    explain_direction,
    fact_completion,
    facts,
    faithfulness,
    honesty_pairs,
    label_rates,
    read,
    truth_pairs,
)
from faithlens.representations.reading import collect


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--n", type=int, default=48, help="behaviour prompts (facts)")
    ap.add_argument("--n-pairs", type=int, default=None, help="contrast pairs (default: all 247)")
    ap.add_argument("--layers", default="10-16", help="steering layers, e.g. 10-16")
    ap.add_argument("--coef", type=float, default=1.0, help="steering size in pair separations")
    ap.add_argument("--n-random", type=int, default=19, help="random directions (specificity)")
    ap.add_argument("--tokens", type=int, default=12, help="tokens generated per prompt")
    ap.add_argument("--honesty", action="store_true", help="also read the RepE honesty direction")
    ap.add_argument("--small", action="store_true", help="a tiny smoke run (tests use it)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/represent_smollm2"))
    a = ap.parse_args(argv)
    if a.small:
        a.n, a.n_pairs, a.n_random, a.tokens = 6, 40, 2, 3
    n_boot = 200 if a.small else 1000
    lo, hi = (int(x) for x in a.layers.split("-"))
    layers = list(range(lo, hi + 1))
    a.out.mkdir(parents=True, exist_ok=True)

    model = fl.load("smollm2")
    print(model)

    # 1. the behaviour, and whether the model shows it ------------------------------------
    beh = fact_completion(model, n=a.n, seed=a.seed + 1)
    margin = beh.margin(model)
    m_iv = stats.mean_interval(margin, n_boot=n_boot, seed=a.seed)
    gens = beh.generate(model, max_new_tokens=a.tokens)
    labels = beh.labels(gens)
    k = sum(lab == "positive" for lab in labels)
    r_iv = stats.proportion_interval(k, len(labels))
    print(
        f"\n[behaviour] truthful completion of {len(beh)} facts: log p(true) - log p(false) = "
        f"{float(m_iv.estimate):.2f} nats [{float(m_iv.low):.2f}, {float(m_iv.high):.2f}]; "
        f"greedy generations judged true {float(r_iv.estimate):.2f} "
        f"[{float(r_iv.low):.2f}, {float(r_iv.high):.2f}] ({label_rates(labels)})"
    )
    for p, t, lab in list(zip(beh.prompts, gens.texts, labels))[:4]:
        print(f"   [{lab}] ...{p[-32:]!r} -> {t!r}")

    # 2. reading vectors per layer ---------------------------------------------------------
    pairs = truth_pairs(n=a.n_pairs, seed=a.seed)
    acts = collect(model, pairs)
    readings = {
        m: read(None, acts, method=m, n_boot=n_boot, seed=a.seed, n_stability=0 if a.small else 50)
        for m in ("pca", "mean_diff", "logistic")
    }
    rd = readings["pca"]
    rd.save(a.out / "reading_pca")
    rd.plot().savefig(a.out / "reading_pca.png", dpi=150)
    print(f"\n[reading] {rd.summary().splitlines()[0]}")
    for m, r in readings.items():
        b = r.best_layer()
        j = r.layers.index(b)
        print(
            f"   {m:<10} best layer {b:>2}: accuracy {r.accuracy[j]:.2f} "
            f"[{r.accuracy_low[j]:.2f}, {r.accuracy_high[j]:.2f}], AUROC {r.auroc[j]:.2f}"
        )
    cos = rd.cosine(readings["mean_diff"])
    print(f"   cos(pca, mean_diff) over the steering layers: {np.round(cos[layers], 2).tolist()}")
    # what does the direction detect: truth, or the topic of the statement? (Paper A's machinery)
    topic_of = {f.id: f.topic for f in facts()}
    topics = sorted({topic_of[g] for g in pairs.group_ids})
    cands = {t: [topic_of[g] == t for g in pairs.group_ids] for t in topics}
    expl = explain_direction(rd, acts, layers[-1], cands, n_boot=100 if a.small else 500)
    win = expl.explanations()[expl.units[0]]
    be = [c for c, keep in zip(expl.concepts, expl.be_set()[0]) if keep]
    print(
        f"   layer {layers[-1]}'s read-out explained (AUROC vs true / {len(topics)} topics): "
        f"certified {win!r}, BE set {be}"
    )
    if a.honesty:
        hp = honesty_pairs(model, n=a.n_pairs, seed=a.seed)
        rh = read(model, hp, method="pca", n_boot=n_boot, seed=a.seed)
        rh.save(a.out / "reading_honesty")
        print(f"   honesty (RepE persona): {rh.summary().splitlines()[1]}")

    # 3. steering: dose-response next to random directions ---------------------------------
    coefs = [-2 * a.coef, -a.coef, a.coef, 2 * a.coef] if not a.small else [-a.coef, a.coef]
    conds = [rd.steering(layers, c) for c in coefs]
    # two isotropic random directions of the same norm (the report draws 19 covariance-matched)
    rand = (
        []
        if a.small
        else [rd.steering(layers, -a.coef).random_like(seed=a.seed + i) for i in range(2)]
    )
    sweep = compare(
        model,
        beh,
        conds + rand,
        kinds=["steer"] * len(conds) + ["random"] * len(rand),
        coefs=coefs + [-a.coef] * len(rand),
        n_boot=n_boot,
        seed=a.seed,
    )
    sweep.save(a.out / "steering")
    sweep.plot().savefig(a.out / "steering.png", dpi=150)
    print(f"\n[steering] {sweep.summary()}")
    steered = beh.generate(model, rd.steering(layers, -2 * a.coef), max_new_tokens=a.tokens)
    s_labels = beh.labels(steered)
    print(f"   generations under -{2 * a.coef:g}: {label_rates(s_labels)}")
    for p, t, lab in list(zip(beh.prompts, steered.texts, s_labels))[:4]:
        print(f"   [{lab}] ...{p[-32:]!r} -> {t!r}")

    # 4. every faithfulness check ----------------------------------------------------------
    report = faithfulness(
        model,
        beh,
        rd,
        layers=layers,
        coef=a.coef,
        pairs=pairs,
        n_random=a.n_random,
        n_stability=10 if a.small else 50,
        persistence_tokens=a.tokens,
        n_boot=n_boot,
        seed=a.seed,
        on_check=lambda s: print(f"   ... {s}", flush=True),
    )
    report.save(a.out / "report")
    report.plot().savefig(a.out / "report.png", dpi=150)
    print(f"\n[faithfulness]\n{report.summary()}")
    print(f"\nwrote {a.out}/")
    return {
        "behaviour": margin,
        "reading": rd,
        "steering": sweep,
        "report": report,
        "explanation": expl,
    }


if __name__ == "__main__":
    main()
