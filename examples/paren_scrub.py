"""Redwood's causal-scrubbing hypotheses about the paren-balance checker, on ``zoo:paren``.

Redwood (causal scrubbing main post section 5.1, paren post) scrubbed three claims about their
balancer: (1) the output depends only on the count heads (conditioned on the count test and on
whether the string starts with ``(``) and on the horizon head (conditioned on the horizon test);
(2) the count heads read only position 1, where the proportion head writes ``phi(p) = v (2p-1)``;
(3) the horizon head's input at each position depends only on that position's horizon class
(with the proportion ``p`` raw, or "adjusted" to the proportion head's real attention). Their
% loss recovered: 93 (claim 1), 88 (1+2), 84 (1+3, adjusted p), 72 (1+2+3).

The hypotheses live in :mod:`faithlens.scrubbing.paren` (so that ``faithlens demo`` reuses
them); the head roles come from ``examples/paren_heads.py``. Every hypothesis is scrubbed on the
same references and random numbers, so the differences between them are paired.

Run it: ``python examples/paren_scrub.py [--n 4000] [--pool 4000] [--seed 0] [--out DIR]``.
"""

from __future__ import annotations

import argparse

import faithlens as fl
from faithlens.scrubbing.paren import ParenReplication, replicate_paren


def main(argv: list[str] | None = None) -> ParenReplication:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000, help="reference examples per hypothesis")
    ap.add_argument("--pool", type=int, default=4000, help="strings the samplers draw from")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--random-other",
        action="store_true",
        help="draw the unimportant inputs inside a head at random, not from strings of the "
        "head's datum's length",
    )
    ap.add_argument("--out", default=None, help="save the result (and every scrub) here")
    args = ap.parse_args(argv)
    model = fl.load("zoo:paren")
    rep, results = replicate_paren(
        model,
        n=args.n,
        pool=args.pool,
        seed=args.seed,
        same_length=not args.random_other,
        progress=lambda name: print(f"scrubbing {name!r} ...", flush=True),
    )
    print(rep.summary())
    if args.out:
        # one atomic save: the report, with every scrub in a subfolder
        rep.save(args.out, extras={f"scrub{i}": r.save for i, r in enumerate(results.values())})
        print(f"saved to {args.out}")
    return rep


if __name__ == "__main__":
    main()
