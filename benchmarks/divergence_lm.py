"""The divergence paper on a real LM: DAS and Boundless DAS, with and without the CL loss.

For SmolLM2-135M on IOI and on the in-house entity-attribute task
(:mod:`faithlens.tasks.entity_attribute`, city -> country), at ``resid_post.L`` of the last
token for each layer ``L``: train the alignment on a seeded half of the pairs, then on the other
half report

- IIA with a bootstrap CI, the no-intervention rate (how often the base run already gives the
  counterfactual label), the random-subspace control IIA (``draws`` seeded random subspaces of the
  learned size) and the selectivity IIA - control (paired bootstrap CI);
- the divergence of the intervened activations from the natural ones (base and source
  activations of the same held-out pairs) with its natural-vs-natural baseline
  (:func:`faithlens.divergences`, grouped by pair): exact EMD and MMD, intervened, baseline,
  excess (± SE over splits) and ratio; for each DAS+CL row also its intervened divergence
  minus the DAS row's of the same cell, paired split by split (``emd_minus_das`` ± SE).

CL targets (the divergence paper's modified CL loss): the mean natural activation of the pairs'
source prompts that share the counterfactual value (entity task: the source city's country; IOI:
whether the indirect object is named first or second). ``--cl-weight`` is the weight of the CL
term (``L_IIA + w L_CL``; default 100, fl.das's default); a comma list trains one DAS+CL row per
weight, with the same pairs, seed and initial rotation as the DAS row. The modified CL loss
compares the intervened and target activations on aligned coordinates only: by default
(``--cl-dims aligned``) fl.das's ``[0, k)`` and ``[k, 2k)`` with ``k = --dims``, which for
Boundless DAS (whose mask keeps hundreds of coordinates) is a small part of what is
interchanged; ``--cl-dims all`` compares them on the whole width.

Every training run's per-epoch history (``iia_loss``: the IIA cross-entropy, ``cl_loss``:
``L_CL`` unweighted, each the mean over the epoch's mini-batches; ``iia``: training IIA;
``loss``: the total; ``objective``: DAS or DAS+CL) is written to history.csv: the sizes of the
two loss terms, to choose the CL weight from.

    python benchmarks/divergence_lm.py                       # small defaults (see --help)
    python benchmarks/divergence_lm.py --layers 8,16,24 --n 96 --epochs 60   # a bigger run

The commands of the measured runs (mini-batches ``--batch-size 8``, ``--lr 0.1``) are in
docs/divergence.md.

The alignments are trained without fl.das's own controls (``controls="none"``): the controls
here are measured on the held-out half instead.

Seeded; prints the table; writes results.csv, results.md and divergence_lm.png to --out.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import faithlens as fl
from faithlens.das import control_task, random_subspace_correct
from faithlens.das.selectivity import base_predictions, intervals_of
from faithlens.das.train import evaluate_alignment, source_activations
from faithlens.models.sites import Site
from faithlens.tasks import entity_attribute as ent
from faithlens.tasks.interchange import InterchangeData

LOSSES = {"DAS": "iia", "DAS+CL": "iia+cl"}


def task_data(model: Any, task: str, n: int, seed: int) -> tuple[InterchangeData, list[str], str]:
    """The pairs, each pair's counterfactual value (CL class, control-task value) and the
    model's own accuracy on the task, as a sentence."""
    if task == "entity":
        acc = ent.entity_accuracy(model, "country")
        ok = [c for c in ent.CITIES if c.name in set(acc.city[acc.correct])]
        data = ent.entity_attribute(model, n, seed, attribute="country", cities=ok)
        line = (
            f"entity (city -> country): model accuracy {acc.correct.mean():.3f} among "
            f"{acc.value.nunique()} values "
            f"({int(acc.correct.sum())}/{len(acc)} usable cities, top-1 over the vocabulary "
            f"{acc.top1.mean():.3f}); pairs use the {len(ok)} correct cities"
        )
        return data, list(data.meta["source_value"]), line
    t = fl.tasks.ioi(model, n=n, seed=seed)
    out = model.run(t.clean, logits_at=t.positions)
    assert out.logits is not None
    lg = out.logits[:, -1] if out.logits.dim() == 3 else out.logits
    pick = lg.gather(1, t.answers[:, :2].to(lg.device))
    acc = float((pick[:, 0] > pick[:, 1]).float().mean())
    line = f"ioi: model accuracy logit(IO) > logit(S) on the clean prompts {acc:.3f} (n={n})"
    return InterchangeData.from_task(t), ["ABBA" if i % 2 == 0 else "BABA" for i in range(n)], line


def with_cl_targets(data: InterchangeData, site: Site, model: Any, values: list[str]) -> Any:
    src = source_activations(model, data, site).reshape(len(data), -1)
    return replace(data, cl_targets=ent.class_mean_targets(src, values, values))


def divergence_row(model: Any, held: InterchangeData, site: Site, itv: torch.Tensor) -> dict:
    nat_b = model.run(held.base, cache=[site]).cache[site.name].reshape(len(held), -1)
    nat_s = source_activations(model, held, site).reshape(len(held), -1)
    nat = torch.cat([nat_b, nat_s]).double().cpu()
    ids = np.arange(len(held))
    div = fl.divergences(
        nat, itv.double(), metrics=["emd", "mmd"], groups=(np.r_[ids, ids], ids), seed=0
    )
    row: dict[str, Any] = {}
    for m in ("emd", "mmd"):
        r = div[m]
        for k in ("intervened", "baseline", "excess", "excess_se", "ratio"):
            row[f"{m}_{k}"] = float(r[k])
        # the intervened value on each split (the splits depend on the held-out pairs and the
        # seed only, so rows of one cell share them: their difference is paired split by split)
        row[f"{m}_splits"] = div.values[div.metrics.index(m), :, 0].astype(float).tolist()
    return row


def paired_difference(row: dict, ref: dict) -> None:
    """``{emd,mmd}_minus_das`` (± ``_se``): the row's intervened divergence minus the DAS row's
    of the same cell, mean ± SE over the shared splits (the baseline cancels)."""
    for m in ("emd", "mmd"):
        d = np.asarray(row[f"{m}_splits"]) - np.asarray(ref[f"{m}_splits"])
        row[f"{m}_minus_das"] = float(d.mean())
        row[f"{m}_minus_das_se"] = float(d.std(ddof=1) / np.sqrt(len(d)))


def cl_weights(text: str) -> list[float]:
    """``--cl-weight``: a comma list of finite weights > 0."""
    out = []
    for part in text.split(","):
        try:
            w = float(part)
        except ValueError:
            w = float("nan")
        if not (np.isfinite(w) and w > 0):
            raise SystemExit(
                f"--cl-weight {text!r}: {part!r} is not a finite weight > 0 (e.g. 1,10)"
            )
        out.append(w)
    return out


def one_run(
    model: Any, a: argparse.Namespace, ctx: dict, method: str, loss: str, weight: float
) -> tuple[dict, pd.DataFrame]:
    """One cell (a row of the table) and its training history."""
    t0 = time.perf_counter()
    site, train, held = ctx["site"], ctx["train"], ctx["held"]
    kw: dict[str, Any] = {"epochs": a.epochs, "lr": a.lr, "seed": a.seed, "select": "iia"}
    kw["batch_size"] = a.batch_size
    cl: dict[str, Any] = {}
    if loss == "DAS+CL":
        cl["cl_weight"] = weight
        if a.cl_dims == "all":
            cl["cl_dims"] = [list(range(ctx["width"]))]
    res = fl.das(
        model,
        train,
        site,
        dims=a.dims,
        method=method,
        loss=LOSSES[loss],
        controls="none",
        **cl,
        **kw,
    )
    dims = list(res.dims)
    ev = evaluate_alignment(model, res.alignment, held, site, dims=dims, seed=a.seed)
    own = np.asarray(ev.correct, dtype=np.float64)
    ctl = [random_subspace_correct(model, held, site, len(dims), draws=a.draws, seed=a.seed)]
    names = ["random_subspace"]
    if a.task_control and ctx["task"] == "entity":
        # the control task is trained with the IIA loss whatever the row's loss: once per
        # (layer, method), shared by that cell's rows
        cache = ctx.setdefault("task_control", {})
        if method not in cache:
            ctrl_tr = control_task(train, values=ctx["train_values"], seed=a.seed)
            ctrl_ev = control_task(held, values=ctx["held_values"], seed=a.seed)
            cres = fl.das(
                model, ctrl_tr, site, dims=a.dims, method=method, loss="iia", controls="none", **kw
            )
            cev = evaluate_alignment(
                model, cres.alignment, ctrl_ev, site, dims=list(cres.dims), seed=a.seed
            )
            cache[method] = np.asarray(cev.correct, dtype=np.float64)
        ctl.append(cache[method])
        names.append("task")
    iia, control, sel = intervals_of(own, np.stack(ctl), n_boot=a.n_boot, level=0.95, seed=a.seed)
    row = {
        "task": ctx["task"],
        "layer": ctx["layer"],
        "method": "DAS" if method == "rotation" else "Boundless",
        "loss": loss,
        "cl_weight": weight if loss == "DAS+CL" else float("nan"),
        "cl_dims": a.cl_dims if loss == "DAS+CL" else "",
        "n_train": len(train),
        "n_held": len(held),
        "dims": len(dims),
        "epoch": res.selected_epoch,
        "iia": iia.estimate,
        "iia_low": iia.ci_low,
        "iia_high": iia.ci_high,
        "no_intervention": ctx["null"],
    }
    for i, c in enumerate(names):
        row[f"{c}_iia"] = float(np.asarray(control.estimate)[i])
        row[f"{c}_sel"] = float(np.asarray(sel.estimate)[i])
        row[f"{c}_sel_low"] = float(np.asarray(sel.ci_low)[i])
        row[f"{c}_sel_high"] = float(np.asarray(sel.ci_high)[i])
    row.update(divergence_row(model, held, site, ev.intervened))
    row["wall_s"] = time.perf_counter() - t0
    hist = res.history.copy()
    # the history's own "loss" column is the total training loss: the row's loss is "objective"
    for k, v in [("cl_weight", weight), ("objective", loss), ("method", row["method"])]:
        hist.insert(0, k, v)
    hist.insert(0, "layer", ctx["layer"])
    hist.insert(0, "task", ctx["task"])
    return row, hist


def loss_name(r: dict) -> str:
    if r["loss"] != "DAS+CL":
        return str(r["loss"])
    return f"DAS+CL ({r['cl_weight']:g}{', all dims' if r['cl_dims'] == 'all' else ''})"


def markdown(df: pd.DataFrame) -> str:
    head = (
        "| task | layer | method | loss | IIA [95% CI] | no-interv. | random-subspace IIA | "
        "selectivity [95% CI] | task-control IIA, selectivity [95% CI] | "
        "EMD int. / base (ratio) | EMD excess ± SE | EMD - DAS's ± SE | MMD excess ± SE | "
        "sel. epoch | dims | s |"
    )
    lines = [head, "|" + "---|" * 16]
    for r in df.to_dict("records"):
        task = "not run"
        if np.isfinite(r.get("task_iia", np.nan)):
            task = (
                f"{r['task_iia']:.3f}, {r['task_sel']:.3f} "
                f"[{r['task_sel_low']:.3f}, {r['task_sel_high']:.3f}]"
            )
        minus = "-"
        if np.isfinite(r.get("emd_minus_das", np.nan)):
            minus = f"{r['emd_minus_das']:.3g} ± {r['emd_minus_das_se']:.2g}"
        lines.append(
            f"| {r['task']} | {r['layer']} | {r['method']} | {loss_name(r)} | {r['iia']:.3f} "
            f"[{r['iia_low']:.3f}, {r['iia_high']:.3f}] | {r['no_intervention']:.3f} | "
            f"{r['random_subspace_iia']:.3f} | {r['random_subspace_sel']:.3f} "
            f"[{r['random_subspace_sel_low']:.3f}, {r['random_subspace_sel_high']:.3f}] | "
            f"{task} | "
            f"{r['emd_intervened']:.3g} / {r['emd_baseline']:.3g} ({r['emd_ratio']:.2f}) | "
            f"{r['emd_excess']:.3g} ± {r['emd_excess_se']:.2g} | {minus} | "
            f"{r['mmd_excess']:.3g} ± {r['mmd_excess_se']:.2g} | {r['epoch']} | {r['dims']} | "
            f"{r['wall_s']:.0f} |"
        )
    return "\n".join(lines)


def plot(df: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(df.task))
    fig, axes = plt.subplots(2, len(tasks), figsize=(5 * len(tasks), 7), squeeze=False)
    for j, t in enumerate(tasks):
        sub = df[df.task == t]
        for (m, lo), g in sub.groupby(["method", sub.apply(loss_name, axis=1)], sort=False):
            g = g.sort_values("layer")
            lab = f"{m} {lo}"
            err = [g.iia - g.iia_low, g.iia_high - g.iia]
            axes[0, j].errorbar(g.layer, g.iia, yerr=err, marker="o", capsize=3, label=lab)
            axes[1, j].plot(g.layer, g.emd_ratio, marker="o", label=lab)
        axes[0, j].plot(sub.layer, sub.random_subspace_iia, "k:", label="random subspace")
        axes[0, j].set(title=f"{t}: held-out IIA", ylim=(-0.02, 1.02), xlabel="layer")
        axes[1, j].axhline(1.0, color="gray", lw=0.8)
        axes[1, j].set(title=f"{t}: EMD intervened / natural baseline", xlabel="layer")
        axes[0, j].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--tasks", default="entity,ioi", help="entity, ioi (comma-separated)")
    ap.add_argument("--layers", default="10,20,27", help="resid_post layers (default 10,20,27)")
    ap.add_argument("--methods", default="rotation,boundless")
    ap.add_argument("--losses", default="DAS,DAS+CL")
    ap.add_argument(
        "--cl-weight",
        default="100",
        help="weight of the CL term, or a comma list: one DAS+CL row per weight (default 100)",
    )
    ap.add_argument(
        "--cl-dims",
        choices=["aligned", "all"],
        default="aligned",
        help="coordinates the CL loss compares: fl.das's default, the first 2 x --dims aligned "
        "ones (aligned), or the whole width (all: the CL term on the full activation)",
    )
    ap.add_argument("--n", type=int, default=32, help="pairs per task, half held out")
    ap.add_argument("--dims", type=int, default=8, help="DAS subspace size")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--batch-size", type=int, default=None, help="Adam batch (default: full)")
    ap.add_argument("--draws", type=int, default=3, help="random subspaces of the control")
    ap.add_argument("--task-control", action="store_true", help="entity: train the task control")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/divergence_lm")
    a = ap.parse_args()
    weights = cl_weights(a.cl_weight)
    torch.manual_seed(a.seed)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    model = fl.load(a.model)
    rows, hists = [], []
    t_all = time.perf_counter()
    for task in a.tasks.split(","):
        data, values, line = task_data(model, task, a.n, a.seed)
        print(line, flush=True)
        perm = np.random.default_rng(a.seed).permutation(len(data))
        tr, ev = np.sort(perm[len(data) // 2 :]), np.sort(perm[: len(data) // 2])
        for layer in [int(x) for x in a.layers.split(",")]:
            site = Site(f"resid_post.{layer}", positions="last")
            full = with_cl_targets(data, site, model, values)
            held = full.subset(ev.tolist())
            null = float((base_predictions(model, held) == held.labels.numpy()).mean())
            ctx = {
                "task": task,
                "layer": layer,
                "site": site,
                "train": full.subset(tr.tolist()),
                "held": held,
                "null": null,
                "train_values": [values[i] for i in tr],
                "held_values": [values[i] for i in ev],
                "width": int(full.cl_targets.shape[-1]),
            }
            for method in a.methods.split(","):
                for loss in a.losses.split(","):
                    for w in weights if loss == "DAS+CL" else [float("nan")]:
                        row, hist = one_run(model, a, ctx, method, loss, w)
                        if loss == "DAS":
                            ctx[f"das_{method}"] = row
                        elif f"das_{method}" in ctx:
                            paired_difference(row, ctx[f"das_{method}"])
                        rows.append(row)
                        hists.append(hist)
                        print(
                            f"{task} L{layer} {row['method']} {loss_name(row)}: IIA "
                            f"{row['iia']:.3f} [{row['iia_low']:.3f}, {row['iia_high']:.3f}] "
                            f"ctrl {row['random_subspace_iia']:.3f}; EMD excess "
                            f"{row['emd_excess']:.3g} ± {row['emd_excess_se']:.2g}; "
                            f"{row['wall_s']:.0f} s",
                            flush=True,
                        )
                        pd.DataFrame(rows).to_csv(out / "results.csv", index=False)
                        pd.concat(hists).to_csv(out / "history.csv", index=False)
    df = pd.DataFrame(rows)
    md = markdown(df)
    note = (
        f"\n\nseed {a.seed}, n={a.n} pairs per task (half held out), dims {a.dims}, "
        f"{a.epochs} epochs, batch {a.batch_size or 'full'}, lr {a.lr}, {a.draws} random "
        f"subspaces; CL weight(s) {', '.join(f'{w:g}' for w in weights)} on the {a.cl_dims} "
        f"coordinates; total wall {time.perf_counter() - t_all:.0f} s"
    )
    (out / "results.md").write_text(md + note + "\n")
    print(md + note)
    plot(df, out / "divergence_lm.png")


if __name__ == "__main__":
    main()
