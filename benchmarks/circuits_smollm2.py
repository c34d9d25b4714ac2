"""Benchmark: circuit discovery on a real model, IOI on SmolLM2, and EAP-IG's peak memory.

The experiment (issue 15): SmolLM2-135M-Instruct (``fl.load("smollm2")``: 30 layers of 9 query
heads in 3 key/value groups, MLPs; 70,651 edges in ``fl.circuits.EdgeGraph``) on
``fl.tasks.build("ioi", model, n=--n, seed=--seed)`` (ABC corruptions, logit difference at each
example's last token), every step in this process, one after the other, wall time each:

1. The scorers of ``--methods`` score every edge (``--score-boot`` bootstrap resamples of each
   edge's interval): by default ``fl.circuits.eap`` and ``fl.circuits.eap_ig(steps=--steps)``;
   ``exact`` (``fl.circuits.exact``, resumable with ``--checkpoint``) and ``acdc``
   (``fl.circuits.acdc(tau=--acdc-tau)``) run one resumed forward pass per edge (70,651 of
   them): exact took 68 minutes at n = 4 on one thread (about six hours at n = 16); ACDC
   re-measures after each kept edge and more of every later layer's ports once edges are
   removed: hours at n = 4.
2. ``fl.circuits.faithfulness_curve`` of each ranking on MIB's grid (counterfactual ablation):
   CPR and CMD with percentile intervals over the examples (``--n-boot`` resamples).
3. The circuit kept at ``--keep`` (a fraction of the edges, one of the grid's sizes) by each
   method: its edge count, how many of its edges lie on a path from the input to the logits
   (``fl.circuits.connected``), how many enter a grouped key/value port, and its faithfulness
   with CI (the curve's row at that size, equal to ``fl.circuits.faithfulness`` of ``top_k``).
4. The causal-scrubbing score of that circuit: ``fl.circuits.scrub`` (its edges important,
   every other edge resampled from one random IOI prompt per reference, ``unimportant="global"``,
   evaluated as the circuit's DAG), % loss recovered against the random-input baseline with a
   BCa interval over the references (every task example once, or ``--scrub-n`` drawn), and the
   same for a random circuit of the same size (a control); each also with the shared prompt
   drawn among the other prompts of the reference's length
   (``other=SameFeature(field("positions"), exclude_self=True)``:
   IOI's prompts are right-padded to 14 to 16 tokens), against the model on an unrelated prompt
   of the same length; wall time each. The per-node tree
   (``circuit.to_hypothesis(model=model)`` + ``fl.scrub``) is refused for circuits of this depth
   (more than ``MAX_NODES`` paths from the logits).

With ``--only scrub``, steps 1 and 4 alone (no curves): the kept circuit is the top ``--keep``
of the edges by ``|score|`` (706 at 1 %, as the curve's row), scored by ``--scrub-methods``,
scrubbed on the discovery prompts or on ``--scrub-pool`` held-out ones (seed + 1). With
``--load DIR`` (a folder a ``--save`` run wrote), the methods saved there are scrubbed from their
saved scores (``exact``: its top ``--keep``; ``acdc``: the circuit it kept) without scoring again.

With ``--only exact``, exact edge patching of the candidates EAP and EAP-IG rank first (the
union of each one's top ``--keep``; ``fl.circuits.exact(edges=...)``, about 0.3 s per edge at
n = 16 on one thread): each first-order ranking's agreement with the exact effects (Pearson r of
the scores, Spearman rho of ``|score|``, sign agreement where the exact interval excludes 0,
overlap of the top 100), and the faithfulness at MIB's sizes up to ``--keep`` of the top k by
each method and by the exact effects among the candidates (a two-stage selection).

With ``--memory`` (or ``--only memory``), EAP-IG's peak memory on ``--memory-n`` examples
(default 64) and ``--steps`` steps against one forward-backward pass of the same clean batch,
each in a fresh child process (``getrusage`` maximum resident set size of the child: the only
honest peak on CPU, as torch's CPU allocations are invisible to ``tracemalloc``). Children:

``setup``     load the model and build the task (no forward pass): the floor.
``fwdbwd``    one forward pass of the clean batch through the Hugging Face module from input
              embeddings that require a gradient, parameters frozen (as EAP-IG freezes them),
              logits at the metric positions only (as EAP-IG computes them), the metric summed,
              one backward pass.
``eap-ig``    ``fl.circuits.eap_ig(model, task, steps=--steps, n_boot=--memory-boot)``.

The ratio is printed on the total peaks and on the peaks above the floor.

Run from the repository root (``PYTHONPATH=src``)::

    python benchmarks/circuits_smollm2.py                      # n = 16 (36 min on a loaded 2-core CPU)
    python benchmarks/circuits_smollm2.py --n 8                # about half that
    python benchmarks/circuits_smollm2.py --only memory         # the memory check alone
    python benchmarks/circuits_smollm2.py --only scrub          # kept circuits' scrubbing scores
    python benchmarks/circuits_smollm2.py --only exact          # exact patching of the candidates
    python benchmarks/circuits_smollm2.py --n 64 --memory --markdown out.md   # a full run
    python benchmarks/circuits_smollm2.py --n 4 --methods eap,eap_ig,exact --save runs/n4
    python benchmarks/circuits_smollm2.py --n 4 --methods acdc --save runs/n4   # (in parallel)
    python benchmarks/circuits_smollm2.py --only scrub --load runs/n4 --scrub-methods exact,acdc \
        --scrub-pool 64
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from typing import Any

import numpy as np
import torch

import faithlens as fl
from faithlens.errors import InputError

MEMORY_CHILD = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(int(sys.argv[3]))
mode, n, steps, n_boot, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
import faithlens as fl
model = fl.load("smollm2")
task = fl.tasks.build("ioi", model, n=n, seed=seed)
out = {"seq": int(task.clean.ids.shape[1])}
t = time.perf_counter()
if mode == "fwdbwd":
    hf = model.module
    for p in hf.parameters():
        p.requires_grad_(False)
    ids, mask = task.clean.ids, task.clean.mask
    emb = hf.get_input_embeddings()(ids).detach().requires_grad_(True)
    hidden = hf.model(inputs_embeds=emb, attention_mask=mask).last_hidden_state
    logits = hf.lm_head(hidden[torch.arange(n), task.positions])
    m = task.metric(logits, task.answers)
    m.sum().backward()
    out["metric"] = float(m.mean())
    out["grad_norm"] = float(emb.grad.norm())
elif mode == "eap-ig":
    s = fl.circuits.eap_ig(model, task, steps=steps, n_boot=n_boot, seed=seed)
    out["top"] = [str(s.edge[i]) for i in s.ranking("abs")[:3].tolist()]
out["seconds"] = time.perf_counter() - t
out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def _memory_child(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, "-c", MEMORY_CHILD, mode, str(args.memory_n), str(args.threads)]
    cmd += [str(args.steps), str(args.memory_boot), str(args.seed)]
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
    if p.returncode != 0:
        raise SystemExit(f"memory child {mode} failed:\n{p.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(p.stdout.strip().splitlines()[-1])
    return out


def memory(args: argparse.Namespace) -> list[str]:
    """EAP-IG's peak RSS against one forward-backward pass, each in a fresh child."""
    rows = {m: _memory_child(m, args) for m in ("setup", "fwdbwd", "eap-ig")}
    s, f, e = (rows[m]["peak_mb"] for m in ("setup", "fwdbwd", "eap-ig"))
    lines = [
        f"Peak memory (max RSS of a fresh child), SmolLM2 IOI, n = {args.memory_n} "
        f"(seq {rows['setup']['seq']} tokens), EAP-IG {args.steps} steps, "
        f"{args.memory_boot} bootstrap resamples, {args.threads} thread(s):",
        "",
        "| child | peak RSS MB | above setup MB | seconds |",
        "|---|---|---|---|",
        f"| setup (load + task) | {s:.0f} | 0 | - |",
        f"| one forward-backward | {f:.0f} | {f - s:.0f} | {rows['fwdbwd']['seconds']:.1f} |",
        f"| eap_ig | {e:.0f} | {e - s:.0f} | {rows['eap-ig']['seconds']:.1f} |",
        "",
        f"EAP-IG / forward-backward: {e / f:.2f}x on total peaks, "
        f"{(e - s) / max(f - s, 1e-9):.2f}x above the floor (goal <= 2x).",
    ]
    return lines


def _timed(times: dict[str, float], name: str, fn: Any) -> Any:
    t = time.perf_counter()
    out = fn()
    times[name] = time.perf_counter() - t
    print(f"  {name}: {times[name]:.1f} s", flush=True)
    return out


def _scrub_attempt(model: Any, task: Any, edges: list[str], args: argparse.Namespace) -> str:
    """The circuit's causal-scrubbing score (``fl.circuits.scrub``, the global mode as one DAG)
    and a random circuit's of the same size; a sentence on each, with wall time."""
    circuit = fl.circuits.Circuit(tuple(edges), how=f"top {len(edges)}", of=0, model=model.name)
    try:  # the per-node tree: refused at this depth
        circuit.to_hypothesis(model=model)
        tree = "its per-node tree fits"
    except InputError as err:
        tree = f"its per-node tree is refused ({str(err).split(';')[0]})"
    names = fl.circuits.EdgeGraph(model).names
    rng = np.random.default_rng(args.seed)
    control = list(rng.choice(names, len(edges), replace=False))
    out = []
    same = fl.scrubbing.SameFeature(fl.scrubbing.field("positions"), exclude_self=True)
    # with the shared prompt of the reference's length, the baseline is too: the model on an
    # unrelated prompt of the same length
    same_base = {"random": fl.scrubbing.Hypothesis("random input, same length", sampler=same)}
    for label, e, other in (
        ("circuit", edges, None),
        ("circuit, shared prompt of the reference's length", edges, same),
        ("random circuit, same size", control, None),
        ("random circuit, shared prompt of the reference's length", control, same),
    ):
        t = time.perf_counter()
        r = fl.circuits.scrub(
            model,
            task,
            e,
            args.scrub_n,
            other=other,
            baselines=("random",) if other is None else same_base,
            seed=args.seed,
            n_boot=args.n_boot,
        )
        iv = r.interval_of("% recovered vs random")
        kl = float(np.mean(r.kl)) if len(r.kl) else float("nan")
        out.append(
            f"{label}: {iv.estimate:.1f} % [{iv.ci_low:.1f}, {iv.ci_high:.1f}] loss recovered "
            f"(logit difference scrubbed {r.expectation:.2f}, model "
            f"{r.original_expectation:.2f}, baseline "
            f"{r.intervals()['baseline random'].estimate:.2f}; mean KL {kl:.3f}; n = {r.n}; "
            f"lengths mixed for {100 * r.stats['variable_lengths_share']:.0f} %; "
            f"{r.stats['mixed_copies']} copies; {time.perf_counter() - t:.0f} s)"
        )
    return "\n  - ".join(["", *out]) + f"\n  - {tree}"


def _every(what: str, parts: int = 40) -> Any:
    """A progress callback printing ``what``'s progress about ``parts`` times, with the time
    (exact counts passes, ACDC edges: the totals differ by far)."""
    t0 = time.perf_counter()

    def tick(done: int, total: int) -> None:
        step = max(1, total // parts)
        if done % step == 0 or done == total:
            print(f"  {what}: {done} / {total} ({time.perf_counter() - t0:.0f} s)", flush=True)

    return tick


def _setup(args: argparse.Namespace, times: dict[str, float]) -> tuple[Any, Any, Any, dict, int]:
    """The model, the IOI task, the edge graph, the scorers' options and the kept size ``k``."""
    model = _timed(times, "load", lambda: fl.load("smollm2"))
    task = _timed(times, "task", lambda: fl.tasks.build("ioi", model, n=args.n, seed=args.seed))
    eg = fl.circuits.EdgeGraph(model)
    return model, task, eg, {"n_boot": args.score_boot, "seed": args.seed}, int(args.keep * len(eg))


def only_scrub(args: argparse.Namespace) -> list[str]:
    """Steps 1 and 4: each method's kept circuit (top ``--keep`` by |score|) and its score."""
    times: dict[str, float] = {}
    model, task, eg, common, k = _setup(args, times)
    pool = task
    if args.scrub_pool:  # held-out prompts for the scrub (another seed)
        pool = fl.tasks.build("ioi", model, n=args.scrub_pool, seed=args.seed + 1)
    lines = [
        f"SmolLM2-135M-Instruct, IOI n = {args.n} (seed {args.seed}), kept circuit: the top "
        f"{k} of {len(eg)} edges by |score|; causal scrubbing in the global mode "
        f"(fl.circuits.scrub) on {pool.n} IOI prompts (seed {args.seed + int(bool(args.scrub_pool))},"
        f" each a reference once), {args.n_boot} resamples; {args.threads} thread(s), "
        f"{platform.machine()} CPU ({os.cpu_count()} cores, shared).",
        "",
    ]
    for method in args.scrub_methods.split(","):
        saved = [
            os.path.join(d, method) for d in args.load if os.path.isdir(os.path.join(d, method))
        ]
        if saved:  # scores a --save run wrote (exact and acdc take an hour at n = 4)
            s = fl.circuits.EdgeScores.load(saved[0])
            if s.meta.get("kept") is not None:  # ACDC: the circuit it kept
                edges = list(s.kept().edges)
            else:
                edges = [str(s.edge[j]) for j in s.ranking("abs")[:k].tolist()]
            got = _timed(
                times, f"{method} scrub", lambda e=edges: _scrub_attempt(model, pool, e, args)
            )
            lines.append(f"- `{method}` ({saved[0]}, n = {s.n}), {len(edges)} edges: {got}")
            continue
        if method == "eap":
            s = _timed(times, "eap scores", lambda: fl.circuits.eap(model, task, **common))
        elif method == "eap_ig":
            s = _timed(
                times,
                "eap_ig scores",
                lambda: fl.circuits.eap_ig(model, task, steps=args.steps, **common),
            )
        else:
            raise SystemExit(
                f"--scrub-methods: {method!r} is not eap or eap_ig, and no --load folder holds it"
            )
        edges = [str(s.edge[j]) for j in s.ranking("abs")[:k].tolist()]
        got = _timed(times, f"{method} scrub", lambda e=edges: _scrub_attempt(model, pool, e, args))
        lines.append(f"- `{method}` top {k}: {got}")
    lines += ["", "Wall time per step: " + ", ".join(f"{a} {b:.1f} s" for a, b in times.items())]
    return lines


def exact_check(args: argparse.Namespace) -> list[str]:
    """Exact edge patching of the candidates EAP and EAP-IG rank first (the union of each
    one's top ``--keep``): how well each first-order ranking agrees with the exact effects,
    and the faithfulness of circuits ranked by the exact effects among those candidates (a
    two-stage selection: a cheap scorer proposes, exact patching decides) against each
    method's own top-k at the same sizes."""
    from scipy.stats import spearmanr

    times: dict[str, float] = {}
    model, task, eg, common, k = _setup(args, times)
    scores = {
        "eap": _timed(times, "eap scores", lambda: fl.circuits.eap(model, task, **common)),
        "eap_ig": _timed(
            times,
            "eap_ig scores",
            lambda: fl.circuits.eap_ig(model, task, steps=args.steps, **common),
        ),
    }
    tops = {m: [str(s.edge[j]) for j in s.ranking("abs")[:k].tolist()] for m, s in scores.items()}
    cand = sorted(set(tops["eap"]) | set(tops["eap_ig"]), key=eg.index)
    ex = _timed(
        times,
        f"exact on {len(cand)} candidates",
        lambda: fl.circuits.exact(model, task, edges=cand, **common),
    )
    exact_abs = np.abs(ex.score)
    sure = (ex.score_ci_low > 0) | (ex.score_ci_high < 0)
    lines = [
        f"SmolLM2-135M-Instruct, IOI n = {args.n} (seed {args.seed}), {len(eg)} edges; "
        f"candidates: the union of EAP's and EAP-IG's ({args.steps} steps) top {k} by |score| "
        f"({len(cand)} edges, {len(set(tops['eap']) & set(tops['eap_ig']))} in both), each "
        f"scored exactly (`fl.circuits.exact(edges=...)`, {times[f'exact on {len(cand)} candidates']:.0f} s, "
        f"{len(cand) and times[f'exact on {len(cand)} candidates'] / len(cand):.2f} s per edge); "
        f"{int(sure.sum())} of them have an exact effect whose 95 % interval excludes 0; "
        f"{args.threads} thread(s), {platform.machine()} CPU ({os.cpu_count()} cores, shared).",
        "",
        "| method | Pearson r (score vs exact) | Spearman rho (abs) | same sign (exact CI excludes 0) | top 100 shared with exact's top 100 |",
        "|---|---|---|---|---|",
    ]
    exact_top = set(np.asarray(ex.edge)[np.argsort(-exact_abs, kind="stable")[:100]].tolist())
    for m, s in scores.items():
        at = np.array([s.edge.index(e) for e in ex.edge])
        est = s.score[at]
        r = float(np.corrcoef(est, ex.score)[0, 1])
        rho = float(spearmanr(np.abs(est), exact_abs).statistic)
        sign = float(np.mean(np.sign(est[sure]) == np.sign(ex.score[sure])))
        mine = set(np.asarray(ex.edge)[np.argsort(-np.abs(est), kind="stable")[:100]].tolist())
        lines.append(
            f"| `{m}` | {r:.3f} | {rho:.3f} | {100 * sign:.0f} % | {len(mine & exact_top)} |"
        )
    sizes = [p for p in fl.circuits.MIB_SIZES if p <= args.keep]
    counts = [int(p * len(eg)) for p in sizes]
    ranked = {f"`{m}` top k": tops[m] for m in scores}
    ranked["exact, among the candidates"] = [
        str(ex.edge[j]) for j in np.argsort(-exact_abs, kind="stable").tolist()
    ]
    lines += [
        "",
        "Faithfulness (counterfactual ablation, 95 % CI) of the top k edges by each ranking:",
        "",
        "| ranking | " + " | ".join(f"{p:g} ({c} edges)" for p, c in zip(sizes, counts)) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for label, order in ranked.items():
        cells = []
        for c in counts:
            f = _timed(
                times,
                f"{label} f({c})",
                lambda c=c, order=order: fl.circuits.faithfulness(
                    model, task, order[:c], n_boot=args.n_boot, seed=args.seed
                ),
            )
            cells.append(f"{f.interval_of('faithfulness'):.2f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    top5 = ", ".join(
        f"`{ex.edge[j]}` {ex.score[j]:+.2f} (EAP {scores['eap'].score[scores['eap'].edge.index(ex.edge[j])]:+.2f}, "
        f"EAP-IG {scores['eap_ig'].score[scores['eap_ig'].edge.index(ex.edge[j])]:+.2f})"
        for j in np.argsort(-exact_abs, kind="stable")[:5].tolist()
    )
    lines += [
        "",
        f"Largest exact effects: {top5}.",
        "",
        "Wall time per step: " + ", ".join(f"{a} {b:.1f} s" for a, b in times.items()) + ".",
    ]
    return lines


def agreement(scores: dict[str, Any], k: int) -> list[str]:
    """Each method's ranking against exact edge patching's on every edge: Pearson r of the
    scores, Spearman rho of their magnitudes, the sign where the exact interval excludes 0, and
    how many of exact's top 100 and top ``k`` it shares."""
    from scipy.stats import spearmanr

    ex = scores["exact"]
    exact_abs = np.abs(ex.score)
    sure = (ex.score_ci_low > 0) | (ex.score_ci_high < 0)
    tops = {c: set(ex.ranking("abs")[:c].tolist()) for c in (100, k)}
    lines = [
        f"Agreement with exact edge patching on all {len(ex.edge)} edges ({int(sure.sum())} "
        "have an exact effect whose 95 % interval excludes 0):",
        "",
        f"| method | Pearson r | Spearman rho (abs) | same sign (exact CI excludes 0) | "
        f"exact's top 100 shared | exact's top {k} shared |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in scores.items():
        if name == "exact":
            continue
        if list(s.edge) != list(ex.edge):
            raise SystemExit(f"{name}'s edges differ from exact's")
        rho = float(spearmanr(np.abs(s.score), exact_abs).statistic)
        shared = [len(set(s.ranking("abs")[:c].tolist()) & tops[c]) for c in (100, k)]
        if s.meta.get("objective") == "kl":  # ACDC's KL changes: magnitudes only compare
            r_cell = sign_cell = "- (KL)"
        else:
            r_cell = f"{float(np.corrcoef(s.score, ex.score)[0, 1]):.3f}"
            same = np.sign(s.score[sure]) == np.sign(ex.score[sure])
            sign_cell = f"{100 * float(np.mean(same)):.0f} %"
        lines.append(
            f"| `{name}` | {r_cell} | {rho:.3f} | {sign_cell} | {shared[0]} | {shared[1]} |"
        )
    return lines


def acdc_circuit(model: Any, task: Any, s: Any, args: argparse.Namespace) -> str:
    """ACDC's own circuit (the edges it kept): size, edges on a path, faithfulness."""
    kept = s.kept()
    eg = fl.circuits.EdgeGraph(model)
    conn = fl.circuits.connected(list(kept.edges), eg.names)
    f = fl.circuits.faithfulness(model, task, kept, n_boot=args.n_boot, seed=args.seed)
    return (
        f"ACDC (tau {s.meta['tau']:g}, {s.meta['objective']}) kept {len(kept.edges)} edges, "
        f"{len(conn)} on a path input->logits, "
        f"{sum('.kv' in e for e in kept.edges)} into key/value ports; faithfulness "
        f"{f.interval_of('faithfulness'):.3f}."
    )


def run(args: argparse.Namespace) -> list[str]:
    """Steps 1 to 4 of the module docstring; the markdown lines of the results."""
    times: dict[str, float] = {}
    model = _timed(times, "load", lambda: fl.load("smollm2"))
    task = _timed(times, "task", lambda: fl.tasks.build("ioi", model, n=args.n, seed=args.seed))
    eg = fl.circuits.EdgeGraph(model)
    common = {"n_boot": args.score_boot, "seed": args.seed}
    every = {
        "eap": lambda: fl.circuits.eap(model, task, **common),
        f"eap_ig ({args.steps} steps)": lambda: fl.circuits.eap_ig(
            model, task, steps=args.steps, **common
        ),
        "exact": lambda: fl.circuits.exact(
            model, task, checkpoint=args.checkpoint, progress=_every("exact"), **common
        ),
        f"acdc (tau {args.acdc_tau:g})": lambda: fl.circuits.acdc(
            model,
            task,
            tau=args.acdc_tau,
            max_memory=args.acdc_memory,
            progress=_every("acdc"),
            **common,
        ),
    }
    wanted = args.methods.split(",")
    unknown = sorted(set(wanted) - {"eap", "eap_ig", "exact", "acdc"})
    if unknown:
        raise SystemExit(f"--methods: {unknown} are not among eap, eap_ig, exact, acdc")
    scorers = {k: v for k, v in every.items() if k.split(" ")[0] in wanted}
    sizes = list(fl.circuits.MIB_SIZES)
    if args.keep not in sizes:
        raise SystemExit(f"--keep {args.keep} is not one of MIB's sizes {sizes}")
    rows, kept_rows, scrubs, found, notes = [], [], [], {}, []
    for name, score in scorers.items():
        key = name.split(" ")[0]  # the method, without its options
        s = _timed(times, f"{name} scores", score)
        found[key] = s
        if s.method == "acdc":
            notes.append(
                _timed(times, "acdc circuit", lambda s=s: acdc_circuit(model, task, s, args))
            )
        if args.save:  # the scores and the curve, for analyses without a rerun
            s.save(os.path.join(args.save, key), overwrite=True)
        curve = _timed(
            times,
            f"{name} curve",
            lambda s=s: fl.circuits.faithfulness_curve(
                model, task, s, n_boot=args.n_boot, seed=args.seed
            ),
        )
        if args.save:
            curve.save(os.path.join(args.save, key + "_curve"), overwrite=True)
        f = curve.interval_of("faithfulness")
        at = {round(float(p), 3): i for i, p in enumerate(curve.size)}
        i = at[args.keep]
        edges = [str(s.edge[j]) for j in s.ranking("abs")[: int(curve.edges[i])].tolist()]
        conn = fl.circuits.connected(edges, eg.names)
        kv = sum(".kv" in e for e in edges)
        rows.append(
            f"| `{name}` | {curve.interval_of('cpr'):.3f} | {curve.interval_of('cmd'):.3f} | "
            + " / ".join(f"{f[at[p]].estimate:.2f}" for p in (0.01, 0.05, 0.1))
            + f" | {times[f'{name} scores']:.0f} s + {times[f'{name} curve']:.0f} s |"
        )
        kept_rows.append(f"| `{name}` | {len(edges)} | {len(conn)} | {kv} | {f[i]:.3f} |")
        print(curve.summary(), flush=True)
        if args.scrub:
            scrubs.append(
                f"- `{name}` top {len(edges)}: "
                + _timed(
                    times, f"{name} scrub", lambda e=edges: _scrub_attempt(model, task, e, args)
                )
            )
    m_clean, m_corrupt = float(np.mean(curve.clean)), float(np.mean(curve.corrupt))
    return [
        f"SmolLM2-135M-Instruct, IOI n = {args.n} (seed {args.seed}, seq "
        f"{int(task.clean.ids.shape[1])} tokens), {len(eg)} edges, logit difference clean "
        f"{m_clean:.2f}, corrupted {m_corrupt:.2f}; MIB's grid, counterfactual ablation; "
        f"{args.n_boot} resamples for curves, {args.score_boot} for edge scores; "
        f"{args.threads} thread(s), {platform.machine()} CPU ({os.cpu_count()} cores, shared).",
        "",
        "| method | CPR (95 % CI) | CMD (95 % CI) | f at 1 % / 5 % / 10 % of edges | time (scores + curve) |",
        "|---|---|---|---|---|",
        *rows,
        "",
        f"Circuit kept at {args.keep:g} of the edges (top by |score|):",
        "",
        "| method | edges | on a path input->logits | into key/value ports | faithfulness (95 % CI) |",
        "|---|---|---|---|---|",
        *kept_rows,
        "",
        "Causal scrubbing of the kept circuit:" if scrubs else "",
        *scrubs,
        *notes,
        "",
        *(agreement(found, int(args.keep * len(eg))) if "exact" in found else []),
        "",
        "Wall time per step: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()) + ".",
    ]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16, help="IOI examples for discovery")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=5, help="EAP-IG integration steps")
    ap.add_argument("--keep", type=float, default=0.01, help="the kept circuit's size (MIB grid)")
    ap.add_argument("--n-boot", type=int, default=1000, help="resamples for curves and scrub")
    ap.add_argument("--score-boot", type=int, default=200, help="resamples per edge score")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-scrub", dest="scrub", action="store_false")
    ap.add_argument("--scrub-n", type=int, default=None, help="scrub references (None: each once)")
    ap.add_argument("--memory", action="store_true", help="also the memory check")
    ap.add_argument("--only", choices=("discovery", "memory", "scrub", "exact"), default=None)
    ap.add_argument("--scrub-methods", default="eap,eap_ig", help="with --only scrub")
    ap.add_argument(
        "--scrub-pool",
        type=int,
        default=0,
        help="with --only scrub: held-out IOI prompts "
        "(seed + 1) to scrub on; 0: the discovery prompts",
    )
    ap.add_argument(
        "--methods",
        default="eap,eap_ig",
        help="scorers of the discovery run: eap, eap_ig, exact (every edge: hours on a CPU "
        "at n = 16), acdc (--acdc-tau)",
    )
    ap.add_argument("--acdc-tau", type=float, default=0.02, help="ACDC's threshold (KL)")
    ap.add_argument(
        "--acdc-memory",
        type=int,
        default=2**27,
        help="ACDC's max_memory: a smaller batch of candidate circuits wastes fewer runs when "
        "an edge is kept (the rest of its batch is measured again)",
    )
    ap.add_argument(
        "--load",
        action="append",
        default=[],
        help="with --only scrub: a folder a --save run wrote; its methods' saved scores are "
        "scrubbed (ACDC's kept circuit, the others' top --keep) instead of scoring again",
    )
    ap.add_argument("--save", default=None, help="save each method's scores and curve here")
    ap.add_argument("--checkpoint", default=None, help="exact's checkpoint folder (resumable)")
    ap.add_argument("--memory-n", type=int, default=64)
    ap.add_argument("--memory-boot", type=int, default=1000)
    ap.add_argument("--markdown", default=None, help="also write the tables to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    lines: list[str] = []
    if args.only in (None, "discovery"):
        lines += run(args)
    if args.only == "scrub":
        lines += only_scrub(args)
    if args.only == "exact":
        lines += exact_check(args)
    if args.only == "memory" or (args.only is None and args.memory):
        lines += ["", *memory(args)]
    text = "\n".join(lines)
    print(text)
    print(
        f"(this process' peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)"
    )
    if args.markdown:
        with open(args.markdown, "w") as fh:
            fh.write(text + "\n")


if __name__ == "__main__":
    main()
