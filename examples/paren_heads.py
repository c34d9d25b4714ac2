"""Which heads of zoo:paren play the roles Redwood found in their paren-balance checker?

Redwood's causal-scrubbing writeup (main post section 5.1, paren post) describes their
3-layer, 2-head balancer as:

- **head 0.0, the proportion head**: at position i it writes p_i, the proportion of open parens
  at positions >= i, along one direction;
- **heads 1.0 and 2.0, the count heads**: they copy the position-1 information (the whole-string
  proportion p_1, and whether the first paren is open) to position 0 and detect count-test
  failures;
- **head 2.1, the horizon head**: it detects that some suffix has more ``(`` than ``)``
  (horizon-test failures).

``zoo:paren`` is trained from scratch with the same architecture and data, so its heads may
divide the work differently. This script finds out with three measurements, each with 95 %
confidence intervals:

1. **Direct logit attribution (DLA)** at position 0: every component's contribution to
   ``logit(balanced) - logit(unbalanced)`` through the final LayerNorm (its scale frozen at the
   value of each example, so the contributions sum exactly to the logit difference). A count head
   pushes towards "unbalanced" on strings that fail the count test and not on strings that fail
   only the horizon test; a horizon head the other way round.
2. **Counterfactual patching from balanced strings**: each head's output (alone, or the chosen
   count heads together) is replaced by its output on a random *balanced* string of the same
   length. If the head carries the evidence of a failure, the model now calls the failing string
   balanced: its accuracy on that failure category drops.
3. **The proportion probe**: how well each layer-0 head's output at position 1 predicts p_1 (a
   cross-validated linear R^2), and how its attention is spread over the parens.

Run it: ``python examples/paren_heads.py [--n 4000] [--seed 0] [--model zoo:paren]``; ``--model``
takes a model trained with another seed (``faithlens zoo train paren --seed 1``: the
``.safetensors`` file it writes). ``HeadRoles.paren_roles()`` turns the result into the
:class:`~faithlens.scrubbing.paren.ParenRoles` that the scrubbing hypotheses take.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

import faithlens as fl
from faithlens.scrubbing.paren import ParenRoles
from faithlens.stats import mean_interval, proportion_interval
from faithlens.tasks import paren as par

FAILURES = ("count_only", "horizon_only")


@dataclass
class HeadRoles:
    """Which heads play Redwood's roles, with the tables that justify it."""

    proportion_head: str
    count_heads: list[str]
    horizon_head: str
    heads: list[str]
    dla: pd.DataFrame
    patching: pd.DataFrame
    probe: pd.DataFrame
    joint: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [
            "Redwood role         -> head(s) in the model",
            f"proportion head 0.0  -> {self.proportion_head}",
            f"count heads 1.0, 2.0 -> {', '.join(self.count_heads)}",
            f"horizon head 2.1     -> {self.horizon_head}",
        ]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def paren_roles(self) -> ParenRoles:
        """The roles for :func:`faithlens.scrubbing.paren.replicate_paren`: the count heads found
        here, plus every other head after layer 0 that is not the horizon head (as for
        ``zoo:paren``, where the scrubbing shows head 2.0 to carry count evidence too)."""
        later = [h for h in self.heads if not h.startswith("head.0.")]
        extra = [h for h in later if h not in self.count_heads and h != self.horizon_head]
        return ParenRoles(
            proportion=self.proportion_head,
            count=tuple(sorted([*self.count_heads, *extra])),
            horizon=self.horizon_head,
            role_count=tuple(sorted(self.count_heads)),
        )


def _heads(model: fl.Model) -> list[str]:
    return [f"head.{l}.{h}" for l in range(model.n_layers) for h in range(model.n_heads)]


def _components(model: fl.Model) -> list[str]:
    out = ["embed"]
    for l in range(model.n_layers):
        out += [f"head.{l}.{h}" for h in range(model.n_heads)] + [f"attn_bias.{l}"]
        if model.adapter.has_mlp:  # type: ignore[attr-defined]
            out.append(f"mlp_out.{l}")
    return out


def direct_logit_attribution(model: fl.Model, data: par.ParenData) -> tuple[pd.DataFrame, float]:
    """Per example and component, the direct contribution to logit(balanced) - logit(unbalanced)
    at position 0 (``[n, components]``), and the largest error of their sum (a check)."""
    L, H = model.n_layers, model.n_heads
    last = f"resid_post.{L - 1}"
    sites = [fl.Site(s, positions=0) for s in ["resid_pre.0", last, *_heads(model)]]
    if model.adapter.has_mlp:  # type: ignore[attr-defined]
        sites += [fl.Site(f"mlp_out.{l}", positions=0) for l in range(L)]
    out = model.run(data.inputs(), cache=sites, logits_at=0)
    assert out.logits is not None
    ln = model.module.ln_final
    w_u, b_u = model.adapter.unembed_weight()
    diff = w_u[par.BALANCED] - w_u[par.UNBALANCED]
    u = (ln.weight * diff).detach()
    with torch.no_grad():
        const = float(
            ln.bias @ diff + (b_u[par.BALANCED] - b_u[par.UNBALANCED] if b_u is not None else 0)
        )
    x = out.cache[last][:, 0]
    sigma = (x.var(-1, unbiased=False) + ln.eps).sqrt()

    def dla(c: torch.Tensor) -> np.ndarray:
        c = c.expand_as(x)
        return (((c - c.mean(-1, keepdim=True)) / sigma[:, None]) @ u).detach().numpy()

    cols: dict[str, np.ndarray] = {"embed": dla(out.cache["resid_pre.0"][:, 0])}
    for l in range(L):
        z = torch.cat([out.cache[f"head.{l}.{h}"][:, 0] for h in range(H)], dim=-1)
        per_head = model.adapter.head_outputs(l, z)
        for h in range(H):
            cols[f"head.{l}.{h}"] = dla(per_head[:, h])
        _, bias = model.adapter.o_proj(l)
        cols[f"attn_bias.{l}"] = dla(bias if bias is not None else torch.zeros_like(x[0]))
        if f"mlp_out.{l}" in out.cache:
            cols[f"mlp_out.{l}"] = dla(out.cache[f"mlp_out.{l}"][:, 0])
    frame = pd.DataFrame(cols)
    logit_diff = (out.logits[:, 0, par.BALANCED] - out.logits[:, 0, par.UNBALANCED]).numpy()
    err = float(np.abs(frame.sum(axis=1).to_numpy() + const - logit_diff).max())
    return frame, err


def _mean_difference(a: np.ndarray, b: np.ndarray, seed: int) -> tuple[float, float, float]:
    """mean(a) - mean(b) for two independent groups, with a percentile bootstrap 95 % CI."""
    rng = np.random.default_rng(seed)
    boots = a[rng.integers(0, a.size, (1000, a.size))].mean(1) - b[
        rng.integers(0, b.size, (1000, b.size))
    ].mean(1)
    low, high = np.quantile(boots, [0.025, 0.975])
    return float(a.mean() - b.mean()), float(low), float(high)


def dla_table(frame: pd.DataFrame, data: par.ParenData, seed: int = 0) -> pd.DataFrame:
    """Mean DLA per component and category, and the specificity scores with 95 % CIs.

    ``count_specificity`` = mean DLA on strings failing only the horizon test - mean DLA on
    strings failing only the count test: positive for a component that pushes towards
    "unbalanced" on count failures *and not* on horizon failures (a count head), negative for
    the opposite (a horizon head). ``separation`` = mean DLA on balanced strings - mean DLA on
    unbalanced ones (how much the component pushes the decision at all)."""
    cats = np.asarray(data.categories)
    rows = []
    for comp in frame.columns:
        v = frame[comp].to_numpy()
        row: dict[str, Any] = {"component": comp}
        for c in par.CATEGORIES:
            row[f"dla_{c}"] = float(v[cats == c].mean())
        spec = _mean_difference(v[cats == "horizon_only"], v[cats == "count_only"], seed)
        row["count_specificity"], row["spec_low"], row["spec_high"] = spec
        sep = _mean_difference(v[cats == "balanced"], v[cats != "balanced"], seed)
        row["separation"], row["sep_low"], row["sep_high"] = sep
        rows.append(row)
    return pd.DataFrame(rows)


def balanced_sources(data: par.ParenData, seed: int) -> fl.Inputs:
    """A uniformly random balanced string of the same length as each string."""
    g = torch.Generator().manual_seed(seed)
    steps = par.uniform_dyck(data.lengths // 2, data.n_ctx - 2, g)
    ids, mask = par.steps_to_ids(steps, data.lengths, data.n_ctx)
    return fl.Inputs(ids=ids, mask=mask)


def patch_from_balanced(
    model: fl.Model,
    data: par.ParenData,
    groups: dict[str, list[str]],
    seed: int = 0,
) -> pd.DataFrame:
    """Accuracy per failure category when each group of heads reads a balanced string instead
    (outputs patched at every position), with Wilson 95 % CIs."""
    src = balanced_sources(data, seed)
    needed = sorted({s for g in groups.values() for s in g})
    cache = model.run(src, cache=needed)
    task = par.paren_task(data=data, seed=seed).with_metric("accuracy")
    cats = np.asarray(data.categories)
    rows = []
    base = task.evaluate(model).numpy()
    for name, sites in {"(none)": [], **groups}.items():
        ivs = [fl.Patch(s, source=cache) for s in sites]
        acc = base if not sites else task.evaluate(model, interventions=ivs).numpy()
        row: dict[str, Any] = {"patched": name}
        for c in par.CATEGORIES:
            a = acc[cats == c]
            iv = proportion_interval(int(a.sum()), int(a.size))
            row[f"acc_{c}"] = float(iv.estimate)
            row[f"acc_{c}_low"] = float(iv.low)
            row[f"acc_{c}_high"] = float(iv.high)
        rows.append(row)
    return pd.DataFrame(rows)


def proportion_probe(
    model: fl.Model, data: par.ParenData, seed: int = 0, max_positions: int = 20_000
) -> pd.DataFrame:
    """Layer-0 heads: cross-validated R^2 of p_1 from the head's output at position 1; R^2 of the
    suffix proportion p_i from its output at each paren position i (with the position one-hot
    encoded; folds split by string, at most ``max_positions`` positions); and the share of its
    attention (from paren queries, over paren keys) on keys at or after the query.

    Redwood's head 0.0 attends to the suffix, so its output at i carries p_i, which is what the
    horizon classes of claim 3 condition on; a head that attends to the whole string carries p_1
    at every position instead (high ``r2_p1``, low ``r2_suffix_p``)."""
    from sklearn.linear_model import LinearRegression, Ridge
    from sklearn.model_selection import GroupKFold, KFold, cross_val_score

    heads = [f"head.0.{h}" for h in range(model.n_heads)]
    pattern = "module:blocks.0.attn.pattern"
    out = model.run(data.inputs(), cache=[*heads, pattern])
    p1 = data.p_open[:, 1].numpy()
    ids = data.ids
    is_paren = (ids == par.OPEN) | (ids == par.CLOSE)
    pos = torch.arange(ids.shape[1])
    at_or_after = pos[None, :] >= pos[:, None]  # [query, key]
    cv = KFold(5, shuffle=True, random_state=seed)
    rows_i, cols_i = torch.nonzero(is_paren, as_tuple=True)
    if rows_i.numel() > max_positions:
        keep = torch.randperm(rows_i.numel(), generator=torch.Generator().manual_seed(seed))
        rows_i, cols_i = rows_i[keep[:max_positions]], cols_i[keep[:max_positions]]
    onehot = torch.nn.functional.one_hot(cols_i, ids.shape[1]).numpy()
    p_i = data.p_open[rows_i, cols_i].double().numpy()
    rows = []
    for h, name in enumerate(heads):
        z = out.cache[name][:, 1].numpy()
        r2 = cross_val_score(LinearRegression(), z, p1, cv=cv, scoring="r2")
        zi = np.concatenate([out.cache[name][rows_i, cols_i].double().numpy(), onehot], axis=1)
        r2_i = cross_val_score(
            Ridge(alpha=1e-2), zi, p_i, cv=GroupKFold(5), groups=rows_i.numpy(), scoring="r2"
        )
        w = out.cache[pattern][:, h] * is_paren[:, None, :]
        share = (w * at_or_after).sum(-1) / w.sum(-1).clamp(min=1e-9)  # [n, query]
        # one number per string: the mean over its paren queries
        per_string = ((share * is_paren).sum(1) / is_paren.sum(1)).numpy()
        iv = mean_interval(per_string, seed=seed)
        rows.append(
            {
                "head": name,
                "r2_p1": float(r2.mean()),
                "r2_p1_se": float(r2.std(ddof=1) / np.sqrt(r2.size)),
                "r2_suffix_p": float(r2_i.mean()),
                "r2_suffix_p_se": float(r2_i.std(ddof=1) / np.sqrt(r2_i.size)),
                "attn_share_at_or_after": float(iv.estimate),
                "attn_share_low": float(iv.low),
                "attn_share_high": float(iv.high),
            }
        )
    return pd.DataFrame(rows)


def find_roles(model: fl.Model, n: int = 4000, seed: int = 0) -> HeadRoles:
    """Assign Redwood's roles to the heads of a paren-balance model."""
    data = par.ParenData.sample(n, seed=seed + 101)
    frame, err = direct_logit_attribution(model, data)
    if err > 1e-3:
        raise AssertionError(f"DLA does not add up to the logit difference (max error {err:.2g})")
    dla = dla_table(frame, data, seed=seed)
    heads = dla[dla.component.str.startswith("head.")].set_index("component")
    later = heads[[not c.startswith("head.0.") for c in heads.index]]
    # Count heads (Redwood has two): the heads after layer 0 whose direct contribution is most
    # specific to count failures.
    count_heads = list(later.sort_values("count_specificity", ascending=False).index[:2])
    probe = proportion_probe(model, data, seed=seed)
    proportion_head = str(probe.sort_values("r2_p1", ascending=False)["head"].iloc[0])
    single = {h: [h] for h in _heads(model)}
    patching = patch_from_balanced(model, data, single, seed=seed)
    # Horizon head: the head after layer 0 (and not a count head) whose output, read from a
    # balanced string, hides horizon failures the most.
    pat = patching.set_index("patched").drop("(none)")
    pat = pat[[not h.startswith("head.0.") for h in pat.index]]
    best = str(pat.acc_horizon_only.idxmin())
    horizon_head = str(pat.drop(count_heads).acc_horizon_only.idxmin())
    joint = patch_from_balanced(
        model,
        data,
        {
            "count heads": count_heads,
            "horizon head": [horizon_head],
            "all three": [*count_heads, horizon_head],
        },
        seed=seed,
    )
    notes = []
    if best != horizon_head:
        notes.append(
            f"{best} hides horizon failures the most when patched, but its direct contribution "
            f"makes it a count head; the horizon head is the next one, {horizon_head}"
        )
    top = dla.set_index("component")
    big = str(top.separation.abs().idxmax())
    if not big.startswith("head."):
        notes.append(
            f"the largest direct contribution is {big}'s (separation {top.separation[big]:.2f} "
            f"vs at most {top.separation[heads.index].abs().max():.2f} for a head): in this model "
            "an MLP turns the heads' evidence into the decision, so Redwood's direct-path claims "
            "need paths through it"
        )
    return HeadRoles(
        proportion_head=proportion_head,
        count_heads=count_heads,
        horizon_head=horizon_head,
        heads=_heads(model),
        dla=dla,
        patching=patching,
        probe=probe,
        joint=joint,
        notes=notes,
    )


def main(argv: list[str] | None = None) -> HeadRoles:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4000, help="number of strings")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--model",
        default="zoo:paren",
        help="the model: zoo:paren (shipped) or a .safetensors file from `faithlens zoo train paren`",
    )
    args = parser.parse_args(argv)
    model = fl.load(args.model)
    roles = find_roles(model, n=args.n, seed=args.seed)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 20)
    print(f"{model}\n")
    print("1. Direct logit attribution at position 0 (mean per category; scores with 95% CI)")
    cols = [
        "component",
        *(f"dla_{c}" for c in par.CATEGORIES),
        "count_specificity",
        "spec_low",
        "spec_high",
        "separation",
        "sep_low",
        "sep_high",
    ]
    print(roles.dla[cols].round(3).to_string(index=False), "\n")
    print("2. Accuracy when a head reads a random balanced string of the same length")
    show = [
        "patched",
        *(f"acc_{c}" for c in FAILURES),
        *(f"acc_{c}_{b}" for c in FAILURES for b in ("low", "high")),
    ]
    print(roles.patching[show].round(3).to_string(index=False))
    print(roles.joint[show].round(3).to_string(index=False), "\n")
    print(
        "3. Layer-0 heads: R^2 of p_1 from the output at position 1 and of p_i from the output at "
        "each paren position i; attention share on keys >= query"
    )
    print(roles.probe.round(3).to_string(index=False), "\n")
    print(roles.summary())
    return roles


if __name__ == "__main__":
    main()
