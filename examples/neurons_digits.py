"""Neuron explanations with known answers: a small CNN on scikit-learn's digits (replication R2).

    python examples/neurons_digits.py            # (a) logits, (b) dissection, (c) planted unit
    python examples/neurons_digits.py --quick

(a) Output logit j should be explained by "digit j": how many logits are identified and certified
    as the probing set grows (n = 50 ... 597 held-out digits), by IoU, AUROC and accuracy.
(b) Network Dissection of the 32 pool channels against pixel-region concepts: detectors, and the
    fraction of channels whose 90% BE set is a single concept, as the number of images grows.
(c) A planted unit "loop digit + noise": coverage of the BE sets for "loop" over 100 random probe
    subsets (target: at least 90%).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import faithlens.neurons as N
from faithlens.neurons import digits as D


def main(argv: list[str] | None = None) -> dict[str, object]:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    sizes = (150, 597) if args.quick else (50, 100, 300, 597)
    subsets = 10 if args.quick else 100
    model, data = D.digits_model(), D.load_digits_data(0)
    print(
        f"digits CNN: {D.accuracy(D.digits_cnn(), data.x_probe, data.y_probe):.3f} accuracy on "
        f"{len(data.y_probe)} held-out digits"
    )
    out: dict[str, object] = {}

    print("\n(a) logits vs digit concepts (alpha = 0.1)")
    rows = []
    for n in sizes:
        x, y = data.x_probe[:n], data.y_probe[:n]
        res = N.explain(
            N.collect(model, x, "logits"),
            D.digit_concepts(y),
            ["iou", "auroc", "accuracy"],
            alpha=0.1,
            n_boot=args.n_boot,
            seed=args.seed,
        )
        for m in res.metrics:
            win = res.top_scoring(m)
            right = np.array([res.concepts[w] == f"digit {j}" for j, w in enumerate(win)])
            rows.append(
                (
                    n,
                    m,
                    int(right.sum()),
                    int(res.certified(m).sum()),
                    float(res.be_set(m).sum(1).mean()),
                )
            )
    print("    n  metric    identified  certified  mean BE size")
    for n, m, ok, cert, size in rows:
        print(f"{n:5d}  {m:9s} {ok:6d}/10 {cert:7d}/10 {size:10.2f}")
    out["logits"] = rows

    print("\n(b) Network Dissection of the pool channels (quantile 0.1)")
    masks, names = D.pixel_concepts(data.x_probe)
    drows = []
    for n in sizes:
        dis = N.dissect(
            "pool",
            masks[:n],
            concept_names=names,
            model=model,
            inputs=data.x_probe[:n],
            quantile=0.1,
            n_boot=args.n_boot,
            seed=args.seed,
        )
        live = [u for u in range(len(dis.units)) if u not in dis.skipped]
        single = float((dis.be_set()[live].sum(1) == 1).mean())
        drows.append(
            (
                n,
                len(live),
                int(dis.detectors()[live].sum()),
                single,
                int(dis.certified()[live].sum()),
            )
        )
    print(" images  live channels  detectors  singleton BE sets  certified")
    for n, live_n, det, single, cert in drows:
        print(f"{n:7d}  {live_n:13d}  {det:9d}  {single:17.0%}  {cert:9d}")
    out["dissection"] = drows
    counts = {}
    for u in range(len(dis.units)):
        if u not in dis.skipped:
            k = dis.concepts[int(dis.top_scoring()[u])]
            counts[k] = counts.get(k, 0) + 1
    print("    labels of the live channels at 597 images:", counts)

    print("\n(c) planted unit: loop digit + noise, 100 random subsets of 150 digits")
    con = D.digit_concepts(data.y_probe)
    loop = con.names.index("loop")
    rng = np.random.default_rng(args.seed)
    hits = 0
    for _ in range(subsets):
        idx = torch.from_numpy(rng.choice(len(data.y_probe), 150, replace=False))
        c = con.values[idx]
        unit = c[:, loop] + 0.6 * torch.from_numpy(rng.standard_normal(150).astype(np.float32))
        res = N.explain(
            unit[:, None],
            N.Concepts(c, con.names),
            "iou",
            alpha=0.4,
            n_boot=args.n_boot,
            seed=int(rng.integers(1 << 30)),
        )
        hits += bool(res.be_set()[0, loop])
    cover = hits / subsets
    print(f"    BE sets contain 'loop' in {cover:.0%} of {subsets} subsets (target >= 90%)")
    out["planted_coverage"] = cover
    return out


if __name__ == "__main__":
    main()
