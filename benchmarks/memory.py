"""Peak memory of the statistics-heavy paths, each measured in a fresh subprocess.

(a) ``fl.patch`` on ``zoo:induction`` (every head, and one head alone, whose bootstrap scipy
    ran unbatched: positions="all", 1000 BCa resamples) at ``--n`` examples (default 4096),
    against the forward passes it cannot do without: the clean
    and the corrupted run of every example, in one batch each, logits at the metric position
    (what a user computes to get the clean and corrupted metric). Both children load the same
    model and task first; ``setup`` (load + task, no forward pass) is the floor. Goal: patch
    <= 1.5x forward.
(b) ``faithlens zoo train paren`` for ``--train-steps`` steps (default 20): training is a few MB;
    the end of the run evaluates on 10,000 validation strings with a bootstrap CI of the loss,
    the step whose BCa jackknife took 2.6 GB. Also that evaluation alone on the shipped weights
    (``paren-eval``). Goal: < 1 GB.

Peak RSS comes from ``getrusage`` of each child (its own maximum resident set), so every figure
includes the interpreter, torch and the model; ratios are against the baseline measured in the
same invocation. Run from the repository root::

    PYTHONPATH=src python benchmarks/memory.py            # both
    PYTHONPATH=src python benchmarks/memory.py --only patch --n 4096
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, sys
import torch
torch.set_num_threads(int(sys.argv[3]))
mode, n = sys.argv[1], int(sys.argv[2])
out = {}
if mode in ("setup", "forward", "patch", "patch-one"):
    import faithlens as fl
    from faithlens.tasks.induction import induction_task
    model = fl.load("zoo:induction")
    task = induction_task(n, seed=0).to(model.device)
    if mode == "forward":
        with torch.no_grad():
            for x in (task.clean, task.corrupt):
                o = model.run(x, logits_at=task.positions)
                out.setdefault("metric", []).append(float(task.metric(o.logits[:, 0], task.answers).mean()))
                del o
    elif mode in ("patch", "patch-one"):
        r = fl.patch(model, task, "head" if mode == "patch" else ["head.1.0"], positions="all")
        out["effect0"] = float(r.effect[0])
        out["ci0"] = [float(r.ci_low[0]), float(r.ci_high[0])]
elif mode == "paren-eval":
    import faithlens as fl
    from faithlens.zoo import recipes
    rec = recipes.ParenRecipe()
    model = fl.load("zoo:paren").module
    with torch.no_grad():
        m = rec.evaluate(model)
    out["bce_loss"] = m["bce_loss"]
out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def child(mode: str, n: int, threads: int) -> dict:
    p = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(n), str(threads)],
        capture_output=True,
        text=True,
        env={**os.environ},
    )
    if p.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def train(steps: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "faithlens", "zoo", "train", "paren"]
        cmd += ["--steps", str(steps), "--out", os.path.join(tmp, "run")]
        pid = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).pid
        _, status, usage = os.wait4(pid, 0)
        if status != 0:
            raise SystemExit(f"faithlens zoo train paren exited with status {status}")
        return usage.ru_maxrss / 1024


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("patch", "train"), default=None)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--train-steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if args.only in (None, "patch"):
        modes = ("setup", "forward", "patch", "patch-one")
        rows = {m: child(m, args.n, args.threads) for m in modes}
        s, f, p, p1 = (rows[m]["peak_mb"] for m in modes)
        print(f"(a) zoo:induction, n = {args.n}, positions='all', 1000 BCa resamples")
        print(f"    setup (load + task)        {s:8.0f} MB")
        print(f"    forward passes alone       {f:8.0f} MB   (+{f - s:.0f} MB over setup)")
        print(
            f"    fl.patch, every head       {p:8.0f} MB   (+{p - s:.0f} MB)  {p / f:5.2f}x forward"
        )
        print(
            f"    fl.patch, head.1.0 alone   {p1:8.0f} MB   (+{p1 - s:.0f} MB)  {p1 / f:5.2f}x forward"
        )
        print("    (goal <= 1.5x forward)")
        for m in ("patch", "patch-one"):
            print(f"    {m}: effect[0] = {rows[m]['effect0']:.9f}, CI {rows[m]['ci0']}")
    if args.only in (None, "train"):
        ev = child("paren-eval", 0, args.threads)
        t = train(args.train_steps)
        print("(b) zoo:paren")
        print(f"    validation evaluation (10,000 strings, bootstrap CI)  {ev['peak_mb']:8.0f} MB")
        print(f"    faithlens zoo train paren --steps {args.train_steps:<5}           {t:8.0f} MB")
        print(f"    (goal < 1024 MB); bce_loss CI {ev['bce_loss']}")


if __name__ == "__main__":
    main()
