"""Faithfulness checks of a representation (a reading vector per layer).

A direction that *reads* a concept well is not yet an explanation of what the model does with
it. The checks here ask, each with its uncertainty:

- **causal** (:func:`compare`): projecting the direction out changes the behaviour, and adding
  it moves the behaviour the right way (positive coefficient up, negative down);
- **specific** (:func:`specificity`): random directions of the same norm at the same layers do
  not (an empirical p-value against them);
- **stable**: bootstrap refits over the contrast pairs give nearly the same direction
  (:func:`faithlens.representations.reading.stability`);
- **on-distribution** (:func:`on_distribution`): the steered activations stay within the natural
  spread, measured by the divergence audit against a natural-vs-natural baseline;
- **readable** (:func:`logit_lens`): the direction read straight through the unembedding gives
  a concentrated token distribution, compared with random directions (Paper B found the
  dishonesty direction unreadable);
- **who writes it** (:func:`writers`): the exact split of the contrast along the direction into
  the embedding, every attention head and every MLP upstream;
- **persistence** (:func:`persistence`): whether a one-shot push at the prompt keeps its effect
  over a generation, or needs injection at every token (Paper B's continual-injection test).

:func:`faithfulness` runs them all and returns a :class:`FaithfulnessReport`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from .. import stats
from .. import validate as V
from ..errors import InputError
from ..models.model import Model
from ..models.sites import Site
from .behaviour import Behaviour
from .data import ContrastPairs, Prompt
from .generation import encode, generate, left_pad, padded_inputs, position_ids
from .reading import ReadingResult, right_pad, stability
from .results import (
    FaithfulnessReport,
    LogitLensResult,
    PersistenceResult,
    SteeringResult,
    WritersResult,
)
from .steering import Steering, as_steerings

Metric = str | Callable[[Model, Any], np.ndarray]
Progress = Callable[[int, int], None]


# --------------------------------------------------------------------------------------------
# behaviour under conditions
# --------------------------------------------------------------------------------------------


def measure(
    model: Model,
    behaviour: Behaviour,
    steering: Steering | Sequence[Steering] | None = None,
    *,
    metric: Metric = "margin",
    batch_size: int = 16,
    **gen_kwargs: Any,
) -> np.ndarray:
    """One number per prompt: ``"margin"`` (teacher-forced ``log p(pos) - log p(neg)``),
    ``"margin_per_token"``, ``"rate"`` (1 where the judged generation shows the behaviour;
    ``gen_kwargs`` go to :func:`generate`), or ``metric(model, steering) -> [n]``."""
    if callable(metric):
        out = np.asarray(metric(model, steering), dtype=np.float64)
        if out.shape != (len(behaviour),):
            raise InputError(
                f"the metric returned shape {out.shape}; it must return one number per prompt "
                f"({len(behaviour)})"
            )
    elif metric == "margin":
        out = behaviour.margin(model, steering, batch_size=batch_size)
    elif metric == "margin_per_token":
        out = behaviour.margin(model, steering, per_token=True, batch_size=batch_size)
    elif metric == "rate":
        gen_kwargs.setdefault("batch_size", batch_size)
        out = behaviour.rate(model, steering, **gen_kwargs)
    else:
        raise InputError(
            f"metric must be 'margin', 'margin_per_token', 'rate' or a callable, not {metric!r}"
        )
    if not np.all(np.isfinite(out)):
        from ..errors import MetricError

        bad = np.flatnonzero(~np.isfinite(out))[:8].tolist()
        raise MetricError(f"the behaviour metric is NaN or infinite for prompts {bad}")
    return out


def _metric_name(metric: Metric) -> str:
    return metric if isinstance(metric, str) else getattr(metric, "__name__", "custom")


def _diff_mean(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.asarray((a - b).mean(axis=axis))


def compare(
    model: Model,
    behaviour: Behaviour,
    conditions: Sequence[Steering | Sequence[Steering]],
    *,
    kinds: Sequence[str] | None = None,
    coefs: Sequence[float] | None = None,
    metric: Metric = "margin",
    baseline: np.ndarray | None = None,
    precomputed: dict[int, np.ndarray] | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    batch_size: int = 16,
    progress: Progress | None = None,
    **gen_kwargs: Any,
) -> SteeringResult:
    """The behaviour under each condition (a :class:`Steering` or several applied together),
    paired with the unsteered baseline: mean effect with a bootstrap CI over prompts.
    ``baseline`` / ``precomputed`` (``{condition index: values}``) reuse metric values that
    were already measured."""
    V.n_boot(n_boot)
    V.level(level)
    V.nonnegative_int("seed", seed)
    V.positive_int("batch_size", batch_size)
    if isinstance(metric, str):
        V.choice("metric", metric, ("margin", "margin_per_token", "rate"))
    if "max_new_tokens" in gen_kwargs:
        V.positive_int("max_new_tokens", gen_kwargs["max_new_tokens"], fix="generate >= 1 token")
    conds = [as_steerings(c) for c in conditions]
    if not conds:
        raise InputError("compare needs at least one condition")
    for c in conds:
        if not c:
            raise InputError("every condition needs at least one Steering")
        for s in c:
            s.check(model)
    n_c = len(conds)
    if kinds is not None and len(kinds) != n_c:
        raise InputError(f"{len(kinds)} kinds for {n_c} conditions")
    if coefs is not None and len(coefs) != n_c:
        raise InputError(f"{len(coefs)} coefficients for {n_c} conditions")
    if baseline is None:
        baseline = measure(
            model, behaviour, None, metric=metric, batch_size=batch_size, **gen_kwargs
        )
    base = np.asarray(baseline, dtype=np.float64)
    if base.shape != (len(behaviour),):
        raise InputError(f"baseline has shape {base.shape}; expected ({len(behaviour)},)")
    values = np.empty((n_c, len(behaviour)))
    pre = precomputed or {}
    for i, c in enumerate(conds):
        if i in pre:
            v = np.asarray(pre[i], dtype=np.float64)
            if v.shape != (len(behaviour),):
                raise InputError(f"precomputed values for condition {i} have shape {v.shape}")
            values[i] = v
        else:
            values[i] = measure(
                model, behaviour, c, metric=metric, batch_size=batch_size, **gen_kwargs
            )
        if progress is not None:
            progress(i + 1, n_c)
    iv = stats.bootstrap(_diff_mean, (values, base), n_boot=n_boot, level=level, seed=seed)
    labels = [" + ".join(s.label for s in c) for c in conds]
    return SteeringResult(
        conditions=labels,
        kind=list(kinds) if kinds is not None else ["steer"] * n_c,
        coef=[float(x) for x in coefs] if coefs is not None else [float("nan")] * n_c,
        values=values,
        baseline=base,
        effect=np.asarray(iv.estimate).reshape(-1),
        effect_se=np.asarray(iv.se).reshape(-1),
        effect_low=np.asarray(iv.low).reshape(-1),
        effect_high=np.asarray(iv.high).reshape(-1),
        metric=_metric_name(metric),
        behaviour=behaviour.name,
        model=model.name,
        level=level,
        n_boot=n_boot,
        seed=seed,
    )


def steering_sweep(
    model: Model,
    reading: ReadingResult,
    behaviour: Behaviour,
    layers: Sequence[int] | int,
    coefs: Sequence[float] = (-2.0, -1.0, -0.5, 0.5, 1.0, 2.0),
    *,
    scale: str = "separation",
    when: str = "all",
    metric: Metric = "margin",
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    batch_size: int = 16,
    progress: Progress | None = None,
    **gen_kwargs: Any,
) -> SteeringResult:
    """Dose-response: the behaviour under ``coef * reading vector`` for each coefficient."""
    if not coefs:
        raise InputError("give at least one coefficient")
    conds = [reading.steering(layers, float(c), scale=scale, when=when) for c in coefs]
    return compare(
        model,
        behaviour,
        conds,
        kinds=["steer"] * len(conds),
        coefs=list(coefs),
        metric=metric,
        n_boot=n_boot,
        level=level,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
        **gen_kwargs,
    )


def specificity(
    model: Model,
    behaviour: Behaviour,
    steering: Steering,
    *,
    n_random: int = 19,
    null: str = "covariance",
    natural: dict[str, Any] | None = None,
    draw_seed: int | None = None,
    metric: Metric = "margin",
    baseline: np.ndarray | None = None,
    target: np.ndarray | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    batch_size: int = 16,
    progress: Progress | None = None,
    **gen_kwargs: Any,
) -> tuple[SteeringResult, float]:
    """The steering's effect next to ``n_random`` random directions of the same norms at the
    same sites and schedule. Returns the effects (first condition: the steering itself) and the
    empirical two-sided p-value ``(1 + #{|random| >= |effect|}) / (1 + n_random)``.

    ``null="covariance"`` (default): directions drawn from the covariance of natural activations
    at each site (``natural``: ``{site: [N, width]}``; default: every token of the behaviour's
    prompts), then scaled to the same norm. Like a concept direction, they lie along directions
    the activations actually vary in, so removing or adding them is as disruptive as removing or
    adding a typical feature. ``"isotropic"``: directions uniform on the sphere, the classic but
    weaker null (in a language model's residual stream almost every isotropic direction has
    little variance, and ablating it does nothing). Random direction ``i`` is drawn with seed
    ``draw_seed + i`` (default ``seed + 1000``); ``seed`` seeds the bootstrap. ``baseline`` and
    ``target`` reuse already measured metric values (unsteered, and under ``steering``)."""
    if n_random < 1:
        raise InputError(f"n_random must be at least 1, got {n_random}")
    if null not in ("isotropic", "covariance"):
        raise InputError(f"null must be 'isotropic' or 'covariance', not {null!r}")
    if null == "covariance" and natural is None:
        natural, _ = site_tokens(model, behaviour.prompts, steering.sites, batch_size=batch_size)
    nat_t = (
        {k: torch.as_tensor(np.asarray(v)) for k, v in natural.items()}
        if null == "covariance" and natural is not None
        else None
    )
    rand = [
        steering.random_like(
            seed=(seed + 1000 if draw_seed is None else draw_seed) + i,
            natural=nat_t,
            label=f"{null} random #{i}",
        )
        for i in range(n_random)
    ]
    res = compare(
        model,
        behaviour,
        [steering, *rand],
        kinds=["target"] + ["random" if steering.operator == "add" else "random_ablate"] * n_random,
        metric=metric,
        baseline=baseline,
        precomputed=None if target is None else {0: target},
        n_boot=n_boot,
        level=level,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
        **gen_kwargs,
    )
    p = float(stats.empirical_p(res.effect[0], res.effect[1:], alternative="two-sided"))
    return res, p


# --------------------------------------------------------------------------------------------
# persistence (Paper B's continual-injection test)
# --------------------------------------------------------------------------------------------


def persistence(
    model: Model,
    behaviour: Behaviour,
    steering: Steering,
    *,
    max_new_tokens: int = 12,
    reference: Sequence[Prompt] | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    batch_size: int = 16,
) -> PersistenceResult:
    """Per-token log-probability of a reference continuation with no injection, one-shot
    injection (prompt only) and continual injection (prompt and every generated token).

    The reference is the unsteered model's own greedy continuation of each prompt (Paper B
    compared "output log probabilities at every token position both with and without the
    injection"), or the continuations given in ``reference``.
    """
    from .generation import continuation_logprobs

    if reference is None:
        gens = generate(
            model, behaviour.prompts, max_new_tokens=max_new_tokens, stop=[], batch_size=batch_size
        )
        refs: list[Prompt] = [tuple(int(t) for t in row if t >= 0) for row in gens.tokens]
        ref_name = "unsteered generation"
    else:
        if len(reference) != len(behaviour):
            raise InputError(
                f"{len(reference)} reference continuations for {len(behaviour)} prompts"
            )
        refs = list(reference)
        ref_name = "reference continuation"
    schedules = {
        "none": None,
        "one-shot": steering.at("prompt", label=f"{steering.label} (one-shot)"),
        "continual": steering.at("all", label=f"{steering.label} (continual)"),
    }
    vals = []
    for s in schedules.values():
        vals.append(continuation_logprobs(model, behaviour.prompts, refs, s, batch_size=batch_size))
    values = np.stack(vals)  # [S, n, T]
    S, _n, T = values.shape
    mean = np.full((S, T), np.nan)
    low = np.full((S, T), np.nan)
    high = np.full((S, T), np.nan)
    for t in range(T):
        ok = np.all(np.isfinite(values[:, :, t]), axis=0)
        if ok.sum() < 2:
            continue
        d = values[:, ok, t] - values[0, ok, t]
        iv = stats.bootstrap(
            lambda a, axis=-1: np.asarray(a.mean(axis=axis)),
            (d,),
            n_boot=n_boot,
            level=level,
            seed=seed + t,
        )
        mean[:, t], low[:, t], high[:, t] = iv.estimate, iv.low, iv.high
    return PersistenceResult(
        schedules=list(schedules),
        values=values,
        mean=mean,
        low=low,
        high=high,
        reference=ref_name,
        behaviour=behaviour.name,
        model=model.name,
        level=level,
        seed=seed,
        meta={"steering": steering.describe()},
    )


# --------------------------------------------------------------------------------------------
# readable: the direction through the unembedding
# --------------------------------------------------------------------------------------------


def _unembed(model: Model, x: Tensor) -> Tensor:
    """``W_U norm(x)`` for directions ``x`` ``[k, d]`` (the final norm, when the model has one,
    is the module's own)."""
    w, b = model.adapter.unembed_weight()
    h = x.to(device=model.device, dtype=model.dtype)[:, None, :]
    if "ln_final" in model.adapter.site_table:
        norm = model.module.get_submodule(model.adapter.site_info("ln_final").hook.module)
        with torch.no_grad():
            h = norm(h)
    with torch.no_grad():
        logits = h[:, 0] @ w.T
        if b is not None:
            logits = logits + b
    return logits.float()


def _entropy(logits: Tensor) -> np.ndarray:
    lp = torch.log_softmax(logits.double(), -1)
    return (-(lp.exp() * lp).sum(-1)).cpu().numpy()


def logit_lens(
    model: Model,
    direction: Tensor | np.ndarray,
    *,
    k: int = 10,
    n_random: int = 200,
    alpha: float = 0.05,
    seed: int = 0,
    label: str = "",
) -> LogitLensResult:
    """Read a direction through the final norm and the unembedding (Paper B, E1): the entropy
    of ``softmax(W_U norm(r))`` against ``n_random`` random directions, and the top tokens of
    ``+r`` and ``-r``. The final RMSNorm / LayerNorm makes the answer independent of the
    direction's scale."""
    r = torch.as_tensor(np.asarray(direction), dtype=torch.float32).reshape(-1)
    if r.shape[0] != model.d_model:
        raise InputError(f"the direction has width {r.shape[0]}; the model's is {model.d_model}")
    if not bool(torch.isfinite(r).all()) or float(r.norm()) == 0:
        raise InputError("the direction is zero or not finite")
    if n_random < 1 or not 0 < alpha < 1:
        raise InputError("n_random must be >= 1 and alpha in (0, 1)")
    r = r / r.norm()
    g = torch.Generator().manual_seed(seed)
    rand = torch.randn(n_random, r.shape[0], generator=g)
    rand = rand / rand.norm(dim=1, keepdim=True)
    logits = _unembed(model, torch.cat([r[None], -r[None], rand]))
    ent = _entropy(logits)
    H, null = float(ent[0]), ent[2:]
    p = float(stats.empirical_p(H, null, alternative="less"))
    V = logits.shape[-1]

    def top(row: Tensor) -> tuple[list[str], list[float]]:
        pr = torch.softmax(row.double(), -1)
        vals, idx = torch.topk(pr, min(k, V))
        toks = (
            model.to_str_tokens(idx.tolist())
            if model.tokenizer is not None
            else [str(i) for i in idx.tolist()]
        )
        return toks, [float(v) for v in vals]

    tt, tp = top(logits[0])
    bt, bp = top(logits[1])
    return LogitLensResult(
        entropy=H,
        max_entropy=float(np.log(V)),
        null=null,
        p_value=p,
        readable=bool(p <= alpha),
        top_tokens=tt,
        top_probs=tp,
        bottom_tokens=bt,
        bottom_probs=bp,
        alpha=alpha,
        label=label,
        model=model.name,
        seed=seed,
    )


# --------------------------------------------------------------------------------------------
# who writes it: direct attribution to upstream components
# --------------------------------------------------------------------------------------------

_ADDITIVE = ("llama", "gpt2", "gpt_neox")


def _components(
    model: Model, site: str, layer: int
) -> list[tuple[str, str, int | None, int | None]]:
    """(name, site to cache, layer, head) of every component summing to ``site.layer``."""
    if site == "resid_pre":
        last_attn, last_mlp = layer - 1, layer - 1
    elif site == "resid_mid":
        last_attn, last_mlp = layer, layer - 1
    elif site == "resid_post":
        last_attn, last_mlp = layer, layer
    else:
        raise InputError(
            f"who-writes-it decomposes the residual stream: site must be resid_pre, resid_mid "
            f"or resid_post, not {site!r}"
        )
    out: list[tuple[str, str, int | None, int | None]] = [("embed", "resid_pre.0", None, None)]
    for L in range(0, max(last_attn, last_mlp) + 1):
        if last_attn >= L:
            for H in range(model.n_heads):
                out.append((f"head.{L}.{H}", f"head.{L}.{H}", L, H))
            out.append((f"attn_bias.{L}", "", L, None))
        if last_mlp >= L:
            out.append((f"mlp_out.{L}", f"mlp_out.{L}", L, None))
    return out


def _projections(
    model: Model,
    prompts: Sequence[Prompt],
    comps: list[tuple[str, str, int | None, int | None]],
    r: Tensor,
    site: str,
    layer: int,
    position: str | int,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """``[n, n_components]`` projections of each component's output on ``r`` at one token, and
    ``[n]`` projections of the residual itself."""
    from .reading import token_positions

    seqs = encode(model, prompts)
    n = len(seqs)
    a = model.adapter
    target = f"{site}.{layer}"
    out = np.zeros((n, len(comps)))
    total = np.zeros(n)
    cache_names = sorted({c[1] for c in comps if c[1]} | {target})
    rr = r.to(model.device)
    for b0 in range(0, n, batch_size):
        rows = list(range(b0, min(n, b0 + batch_size)))
        inp = right_pad(model, [seqs[i] for i in rows])
        pos = token_positions(inp, position)
        if pos is None:
            raise InputError("who-writes-it reads one token: position must be 'last' or an offset")
        res = model.run(inp, cache=[Site(s, positions=pos) for s in cache_names], stop_at=target)
        total[b0 : b0 + len(rows)] = (res.cache[target][:, 0].float() @ rr.float()).cpu().numpy()
        per_layer_z: dict[int, Tensor] = {}
        for j, (name, csite, L, H) in enumerate(comps):
            if name.startswith("attn_bias"):
                assert L is not None
                _, bias = a.o_proj(L)
                v = 0.0 if bias is None else float(bias.detach().float() @ rr.float())
                out[b0 : b0 + len(rows), j] = v
                continue
            if H is not None:
                assert L is not None
                if L not in per_layer_z:
                    z = torch.cat(
                        [res.cache[f"head.{L}.{h}"][:, 0] for h in range(model.n_heads)], -1
                    )
                    with torch.no_grad():
                        per_layer_z[L] = a.head_outputs(L, z).float()  # [b, H, d]
                out[b0 : b0 + len(rows), j] = (per_layer_z[L][:, H] @ rr.float()).cpu().numpy()
            else:
                out[b0 : b0 + len(rows), j] = (
                    (res.cache[csite][:, 0].float() @ rr.float()).cpu().numpy()
                )
    return out, total


def gini(x: np.ndarray) -> float:
    """Gini coefficient of non-negative values (0: all equal; -> 1: one holds everything)."""
    v = np.sort(np.abs(np.asarray(x, dtype=np.float64)))
    n = len(v)
    if n == 0 or v.sum() == 0:
        return 0.0
    return float((2 * np.arange(1, n + 1) - n - 1) @ v / (n * v.sum()))


def writers(
    model: Model,
    pairs: ContrastPairs,
    direction: Tensor | np.ndarray,
    layer: int,
    *,
    site: str = "resid_post",
    position: str | int = "last",
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    batch_size: int = 16,
    label: str = "",
) -> WritersResult:
    """Who writes the direction: the contrast ``<h(x+) - h(x-), r>`` at ``site.layer`` split into
    the embedding stage, each attention head (through the output projection), each attention
    output bias and each MLP of the layers before it. The parts add up to the read-out exactly
    (pre-norm residual architectures: Llama, GPT-2, GPT-NeoX)."""
    if model.arch not in _ADDITIVE:
        raise InputError(
            f"who-writes-it needs a pre-norm residual stream that is the sum of its components "
            f"(Llama, GPT-2, GPT-NeoX); {model.name} is {model.arch}"
        )
    if not isinstance(pairs, ContrastPairs):
        raise InputError(f"pairs must be ContrastPairs, not {type(pairs).__name__}")
    if not 0 <= layer < model.n_layers:
        raise InputError(f"layer {layer} out of range 0..{model.n_layers - 1}")
    model.site_info(f"{site}.{layer}")
    r = torch.as_tensor(np.asarray(direction), dtype=torch.float32).reshape(-1)
    if r.shape[0] != model.d_model or float(r.norm()) == 0:
        raise InputError(f"the direction must be a non-zero vector of width {model.d_model}")
    r = r / r.norm()
    comps = _components(model, site, layer)
    pp, tp = _projections(model, pairs.positive, comps, r, site, layer, position, batch_size)
    pn, tn = _projections(model, pairs.negative, comps, r, site, layer, position, batch_size)
    diff = (pp - pn).T  # [C, n]
    tot = tp - tn
    residual = float(np.max(np.abs(diff.sum(0) - tot)))
    iv = stats.bootstrap(
        lambda a, axis=-1: np.asarray(a.mean(axis=axis)),
        (diff,),
        n_boot=n_boot,
        level=level,
        seed=seed,
    )
    tiv = stats.mean_interval(tot, n_boot=n_boot, level=level, seed=seed)
    contrib = diff.mean(1)
    total = float(tot.mean())
    order = np.argsort(-contrib * np.sign(total if total != 0 else 1.0))
    csum = np.cumsum(contrib[order])
    hit = np.flatnonzero(np.abs(csum) >= 0.8 * abs(total)) if total != 0 else np.array([0])
    k80 = int(hit[0]) + 1 if hit.size else len(comps)
    return WritersResult(
        components=[c[0] for c in comps],
        layer=[c[2] for c in comps],
        head=[c[3] for c in comps],
        contribution=contrib,
        low=np.asarray(iv.low).reshape(-1),
        high=np.asarray(iv.high).reshape(-1),
        per_pair=diff,
        total=total,
        total_low=float(tiv.low),
        total_high=float(tiv.high),
        k80=k80,
        gini=gini(contrib),
        residual=residual,
        site=f"{site}.{layer}",
        label=label,
        model=model.name,
        level=level,
        seed=seed,
    )


# --------------------------------------------------------------------------------------------
# on-distribution: the divergence audit of steered activations
# --------------------------------------------------------------------------------------------


def site_tokens(
    model: Model,
    prompts: Sequence[Prompt],
    sites: Sequence[str],
    steering: Steering | None = None,
    *,
    batch_size: int = 16,
    last_only: bool = False,
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Activations of ``sites`` at every real prompt token (or only the last one), as a
    generation's prompt pass sees them, steered or not: ``{site: [tokens, width]}`` and the
    prompt index of each row."""
    seqs = encode(model, prompts)
    if not sites:
        raise InputError("give at least one site")
    order = sorted(sites, key=lambda s: model.site_info(s).order(model.n_layers) or (10**6, 0))
    rows_out: dict[str, list[np.ndarray]] = {s: [] for s in sites}
    groups: list[np.ndarray] = []
    for b0 in range(0, len(seqs), batch_size):
        idx = list(range(b0, min(len(seqs), b0 + batch_size)))
        ids, mask, P = left_pad(model, [seqs[i] for i in idx])
        ids, mask = ids.to(model.device), mask.to(model.device)
        ivs = steering.prompt_interventions(P) if steering is not None else []
        res = model.run(
            padded_inputs(ids, mask, position_ids(mask), model),
            ivs,
            cache=list(sites),
            stop_at=order[-1],
        )
        m = mask.cpu().numpy().astype(bool)
        if last_only:
            m[:, :-1] = False
        for s in sites:
            a = res.cache[s].float().cpu().numpy()
            for j in range(len(idx)):
                rows_out[s].append(a[j][m[j]])
        for j, i in enumerate(idx):
            groups.append(np.full(int(m[j].sum()), i))
    return {s: np.concatenate(v) for s, v in rows_out.items()}, np.concatenate(groups)


def on_distribution(
    model: Model,
    steering: Steering,
    prompts: Sequence[Prompt],
    *,
    natural: Sequence[Prompt] | None = None,
    site: str | None = None,
    metrics: Sequence[str] = ("nn_mse", "emd"),
    n_splits: int = 5,
    max_points: int = 2000,
    seed: int = 0,
    batch_size: int = 16,
) -> Any:
    """The divergence audit of steered activations (:func:`faithlens.divergence.divergences`):
    activations of ``site`` (default: the last steered site) at the prompt tokens the steering
    edits (every token, or the last one for ``Steering(prompt="last")``), steered vs natural,
    against the natural-vs-natural baseline. ``natural`` prompts default to ``prompts`` (then
    the split is by prompt). Returns a ``DivergenceResult``."""
    from ..divergence import divergences

    if steering.when == "generated":
        raise InputError(
            "on_distribution audits the prompt pass; this steering only acts on generated tokens"
        )
    sites = steering.sites
    target = site or sites[-1]
    info = model.site_info(target)
    steered_layers = [model.site_info(s).layer for s in sites]
    if info.layer is not None and all(L is not None and info.layer < L for L in steered_layers):
        raise InputError(f"{target} comes before every steered site ({sites}); audit a later site")
    nat_prompts = list(natural) if natural is not None else list(prompts)
    last = steering.prompt == "last"
    nat_d, gn = site_tokens(model, nat_prompts, [target], batch_size=batch_size, last_only=last)
    itv_d, gi = site_tokens(
        model, prompts, [target], steering, batch_size=batch_size, last_only=last
    )
    nat, itv = nat_d[target], itv_d[target]
    groups = (gn, gi) if natural is None and not last else None
    return divergences(
        nat,
        itv,
        metrics=list(metrics),
        n_splits=n_splits,
        max_points=max_points,
        seed=seed,
        groups=groups,
        paired=False if groups is None else None,
        label=f"{steering.label} at {target}",
    )


# --------------------------------------------------------------------------------------------
# what does the direction detect: Paper A's explanations of the read-out
# --------------------------------------------------------------------------------------------


def explain_direction(
    reading: ReadingResult,
    acts: Any,
    layer: int,
    concepts: dict[str, Any] | None = None,
    *,
    metric: str | Sequence[str] = "auroc",
    n_boot: int = 500,
    level: float = 0.9,
    delta: float = 0.05,
    seed: int = 0,
) -> Any:
    """Treat the read-out ``s(x) = <h - mu, r>`` of ``layer`` as a unit and explain it with
    :func:`faithlens.neurons.explain` (Paper A): which candidate concept does the direction
    detect, is the winner certified, and what is the Bootstrap-Explanation set?

    ``acts`` are the :class:`ContrastActivations` of the pairs (both members are samples; the
    two members of a pair form one group for the bootstrap). The concept the pairs contrast is
    always a candidate; ``concepts`` adds others, each one label per sample (``2 n``: positives
    first) or per pair (``n``: both members share it), e.g. the topic of each fact. A direction
    that really detects its concept has a BE set of one: that concept.
    """
    from ..neurons import explain
    from .reading import ContrastActivations

    if not isinstance(acts, ContrastActivations):
        raise InputError(
            f"acts must be ContrastActivations (from collect), not {type(acts).__name__}"
        )
    if acts.site != reading.site:
        raise InputError(f"the activations are of {acts.site}; the reading is of {reading.site}")
    if layer not in reading.layers:
        raise InputError(f"no reading vector for layer {layer}; layers: {reading.layers}")
    j = reading.layers.index(layer)
    pos, neg = acts.layer(layer)
    n = pos.shape[0]
    h = np.concatenate([pos, neg]).astype(np.float64)
    score = (h - reading.means[j].astype(np.float64)) @ reading.directions[j].astype(np.float64)
    cands: dict[str, np.ndarray] = {reading.concept: np.r_[np.ones(n), np.zeros(n)]}
    for name, lab in (concepts or {}).items():
        v = np.asarray(lab, dtype=np.float64).reshape(-1)
        if v.shape[0] == n:
            v = np.r_[v, v]
        if v.shape[0] != 2 * n:
            raise InputError(
                f"concept {name!r} has {v.shape[0]} labels; give one per pair ({n}) or per "
                f"sample ({2 * n}, positives first)"
            )
        if name in cands:
            raise InputError(f"concept {name!r} is given twice")
        cands[name] = v
    groups = np.r_[np.arange(n), np.arange(n)]
    return explain(
        score[:, None],
        cands,
        metric,
        n_boot=n_boot,
        level=level,
        delta=delta,
        groups=groups,
        unit_names=[f"{reading.concept} direction @ {reading.site}.{layer}"],
        seed=seed,
    )


# --------------------------------------------------------------------------------------------
# everything
# --------------------------------------------------------------------------------------------


def _row(
    check: str,
    criterion: str,
    estimate: float,
    low: float = float("nan"),
    high: float = float("nan"),
    reference: float = float("nan"),
    passed: bool = False,
    note: str = "",
) -> dict[str, Any]:
    return {
        "check": check,
        "criterion": criterion,
        "estimate": float(estimate),
        "ci_low": float(low),
        "ci_high": float(high),
        "reference": float(reference),
        "passed": bool(passed),
        "note": note,
    }


CHECKS = ("causal", "specific", "stable", "on_distribution", "readable", "writers", "persistence")


def faithfulness(
    model: Model,
    reading: ReadingResult,
    behaviour: Behaviour,
    *,
    layers: Sequence[int] | int,
    coef: float = 1.0,
    scale: str = "separation",
    prompt: str = "all",
    pairs: ContrastPairs | None = None,
    layer: int | None = None,
    checks: Sequence[str] = CHECKS,
    metric: Metric = "margin",
    min_effect: float = 0.1,
    n_random: int = 19,
    null: str = "covariance",
    n_stability: int = 50,
    stable_threshold: float = 0.9,
    max_divergence_ratio: float = 2.0,
    natural: Sequence[Prompt] | None = None,
    divergence_metrics: Sequence[str] = ("nn_mse", "emd"),
    persistence_tokens: int = 12,
    alpha: float = 0.05,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    batch_size: int = 16,
    progress: Callable[[str], None] | None = None,
) -> FaithfulnessReport:
    """Run the faithfulness checks of ``reading``'s direction on ``behaviour``.

    Steering adds ``±coef`` times the (``scale``-d) reading vector at ``layers``, at every prompt
    token (``prompt="all"``, RepE) or the last one (``"last"``) and at every generated token;
    ablation projects the direction out at the same layers and tokens. The analysis
    layer ``layer`` (default: the last steered layer) is where stability, readability and the
    writers are measured and where the divergence audit looks.

    Verdicts (one row each in ``report.checks``):

    - ``causal: ablation``: projecting the direction out changes the behaviour (CI excludes 0);
    - ``causal: steer +`` / ``causal: steer -``: ``+coef`` raises the metric, ``-coef`` lowers
      it (CIs exclude 0 on the right side).
      A causal effect must also be at least ``min_effect`` standard deviations of the baseline
      metric across prompts, so that a numerically tiny but consistent change does not count;
    - ``specific: steer -`` / ``specific: ablation``: the effect is larger than that of every
      random direction of the same norm, or p <= alpha when ``n_random >= 1/alpha - 1``;
      ``null="covariance"`` draws the random directions from the covariance of natural
      activations instead of isotropically (see :func:`specificity`);
    - ``stable``: mean bootstrap cosine >= ``stable_threshold`` (needs ``pairs`` unless the
      reading was fitted with ``n_stability``);
    - ``on-distribution``: the steered activations lie as close to natural ones as natural ones
      do to each other: the mean squared distance to the nearest natural activation (``nn_mse``
      of the divergence audit) is at most ``max_divergence_ratio`` times its natural-vs-natural
      baseline (the Sinkhorn divergence ``emd``, which also compares the *mixture* of states, is
      reported next to it);
    - ``readable``: the logit-lens entropy is lower than that of random directions (p <= alpha);
    - ``who writes it``: passes when the writing is sparse: 80% of the contrast comes from at
      most 5% of the components (at least 1);
    - ``persistent``: a one-shot push keeps at least half of the continual effect over the second
      half of a generation.

    ``readable``, ``who writes it`` and ``persistent`` describe *how* the representation is used;
    failing them does not make it unfaithful (Paper B's dishonesty direction fails all three).
    """
    unknown = [c for c in checks if c not in CHECKS]
    if unknown:
        raise InputError(f"unknown checks {unknown}; choose from {CHECKS}")
    V.positive_float("coef", coef, fix="coef must be positive: both signs are tested")
    V.choice("prompt", prompt, ("all", "last"))
    if isinstance(metric, str):
        V.choice("metric", metric, ("margin", "margin_per_token", "rate"))
    V.finite_float("min_effect", min_effect, low=0.0)
    V.nonnegative_int("n_random", n_random)
    V.nonnegative_int("n_stability", n_stability)
    V.finite_float("stable_threshold", stable_threshold, low=-1.0, high=1.0)
    V.positive_float("max_divergence_ratio", max_divergence_ratio)
    V.positive_int("persistence_tokens", persistence_tokens, fix="generate >= 1 token")
    V.probability("alpha", alpha, fix="use e.g. 0.05")
    V.n_boot(n_boot)
    V.level(level)
    V.nonnegative_int("seed", seed)
    V.positive_int("batch_size", batch_size)
    if progress is not None and not callable(progress):
        raise V.fail("progress", progress, "must be a callable (check name) or None")
    ls = [layers] if isinstance(layers, int) else [int(x) for x in layers]
    if not ls:
        raise InputError("give at least one steering layer")
    for L in ls:
        reading.direction(L)  # errors for layers the reading does not have
    an_layer = ls[-1] if layer is None else int(layer)
    r = reading.direction(an_layer)
    if null not in ("isotropic", "covariance"):
        raise InputError(f"null must be 'isotropic' or 'covariance', not {null!r}")
    if "writers" in checks and pairs is None:
        raise InputError("the who-writes-it check needs the contrast pairs (pairs=...)")
    if "stable" in checks and pairs is None and reading.n_stability == 0:
        raise InputError(
            "the stability check needs the contrast pairs (pairs=...) or a reading fitted with "
            "n_stability > 0"
        )
    say = progress or (lambda s: None)
    rows: list[dict[str, Any]] = []
    frames: dict[str, pd.DataFrame] = {}
    plus = reading.steering(ls, coef, scale=scale, prompt=prompt, label=f"steer +{coef:g}")
    minus = reading.steering(ls, -coef, scale=scale, prompt=prompt, label=f"steer -{coef:g}")
    ablate = reading.ablation(ls, prompt=prompt, label="ablate")
    min_p = max(alpha, 1.0 / (n_random + 1))
    steering_frames = []
    base: np.ndarray | None = None
    if "causal" in checks or "specific" in checks:
        say("behaviour under steering and ablation")
        base = measure(model, behaviour, None, metric=metric, batch_size=batch_size)
        res = compare(
            model,
            behaviour,
            [plus, minus, ablate],
            kinds=["steer", "steer", "ablate"],
            coefs=[coef, -coef, float("nan")],
            metric=metric,
            baseline=base,
            n_boot=n_boot,
            level=level,
            seed=seed,
            batch_size=batch_size,
        )
        steering_frames.append(res.to_frame())
        e = res.effect
        lo, hi = res.effect_low, res.effect_high
        sd = float(np.std(base, ddof=1)) if len(base) > 1 else 0.0
        floor = max(min_effect * sd, 1e-6)
        big = np.abs(e) >= floor
        note = f"min |effect| {floor:.3g} ({min_effect:g} SD of the baseline)"
        if "causal" in checks:
            rows.append(
                _row(
                    "causal: ablation",
                    "projecting r out changes the behaviour (CI excludes 0)",
                    e[2],
                    lo[2],
                    hi[2],
                    0.0,
                    bool((lo[2] > 0 or hi[2] < 0) and big[2]),
                    note,
                )
            )
            rows.append(
                _row(
                    "causal: steer +",
                    f"+{coef:g} x r raises the metric (CI > 0)",
                    e[0],
                    lo[0],
                    hi[0],
                    0.0,
                    bool(lo[0] > 0 and big[0]),
                    note,
                )
            )
            rows.append(
                _row(
                    "causal: steer -",
                    f"-{coef:g} x r lowers the metric (CI < 0)",
                    e[1],
                    lo[1],
                    hi[1],
                    0.0,
                    bool(hi[1] < 0 and big[1]),
                    note,
                )
            )
        if "specific" in checks:
            say(f"{n_random} {null} random directions (steering and ablation)")
            nat_acts = None
            if null == "covariance":
                nat_acts, _ = site_tokens(
                    model, behaviour.prompts, minus.sites, batch_size=batch_size
                )
            rs, p_steer = specificity(
                model,
                behaviour,
                minus,
                n_random=n_random,
                null=null,
                natural=nat_acts,
                metric=metric,
                baseline=base,
                target=res.values[1],
                n_boot=n_boot,
                level=level,
                seed=seed,
                batch_size=batch_size,
            )
            ra, p_abl = specificity(
                model,
                behaviour,
                ablate,
                n_random=n_random,
                null=null,
                natural=nat_acts,
                metric=metric,
                baseline=base,
                target=res.values[2],
                n_boot=n_boot,
                level=level,
                seed=seed,
                draw_seed=seed + 2000,
                batch_size=batch_size,
            )
            steering_frames += [rs.to_frame().iloc[1:], ra.to_frame().iloc[1:]]
            for name, what, sr, p_val in (
                (
                    "specific: steer -",
                    f"beyond {n_random} random directions of the same norm",
                    rs,
                    p_steer,
                ),
                ("specific: ablation", f"beyond ablating {n_random} random directions", ra, p_abl),
            ):
                rows.append(
                    _row(
                        name,
                        f"|effect| {what} ({null} null; p <= {min_p:.3g})",
                        sr.effect[0],
                        sr.effect_low[0],
                        sr.effect_high[0],
                        float(np.quantile(np.abs(sr.effect[1:]), 1 - alpha)),
                        bool(p_val <= min_p),
                        f"p = {p_val:.3f}",
                    )
                )
    frames["steering"] = (
        pd.concat(steering_frames, ignore_index=True) if steering_frames else pd.DataFrame()
    )

    if "stable" in checks:
        say("stability")
        if pairs is not None:
            from .reading import collect, fit_direction

            acts = collect(
                model,
                pairs,
                layers=[an_layer],
                site=reading.site,
                position=reading.position,
                batch_size=batch_size,
            )
            p_, q_ = acts.layer(an_layer)
            p_, q_ = p_.astype(np.float64), q_.astype(np.float64)
            full = fit_direction(p_, q_, reading.method, seed=seed)
            cos = stability(p_, q_, full, reading.method, n_boot=n_stability, seed=seed)
            agree = float(full @ r.numpy().astype(np.float64))
            qs = np.quantile(cos, [(1 - level) / 2, (1 + level) / 2])
            est, lo_s, hi_s = float(cos.mean()), float(qs[0]), float(qs[1])
            note = f"{n_stability} refits on {len(pairs)} pairs; cos with the reading = {agree:.3f}"
        else:
            j = reading.layers.index(an_layer)
            est, lo_s, hi_s = (
                float(reading.stability[j]),
                float(reading.stability_low[j]),
                float(reading.stability_high[j]),
            )
            note = f"{reading.n_stability} refits (from the reading)"
        rows.append(
            _row(
                "stable",
                f"mean bootstrap cosine >= {stable_threshold:g}",
                est,
                lo_s,
                hi_s,
                stable_threshold,
                bool(est >= stable_threshold),
                note,
            )
        )

    frames["divergence"] = pd.DataFrame()
    if "on_distribution" in checks:
        say("divergence audit of the steered activations")
        site = f"{reading.site}.{an_layer}"
        div = on_distribution(
            model,
            minus,
            behaviour.prompts,
            natural=natural,
            site=site,
            metrics=divergence_metrics,
            seed=seed,
            batch_size=batch_size,
        )
        t = div.to_frame()
        frames["divergence"] = t
        if "nn_mse" not in set(t["metric"]):
            raise InputError(
                "the on-distribution verdict reads the 'nn_mse' divergence; include it"
            )
        nn = t[t["metric"] == "nn_mse"].iloc[0]
        ratio = float(nn["ratio"])
        notes = [f"nn_mse {nn['intervened']:.3g} vs natural {nn['baseline']:.3g}"]
        for mname in ("emd", "auroc"):
            extra = t[t["metric"] == mname]
            if not extra.empty:
                notes.append(
                    f"{mname} {float(extra['intervened'].iloc[0]):.3g} (natural "
                    f"{float(extra['baseline'].iloc[0]):.3g})"
                )
        rows.append(
            _row(
                "on-distribution",
                f"steered/natural nearest-neighbour distance <= {max_divergence_ratio:g}x at {site}",
                ratio,
                float("nan"),
                float("nan"),
                max_divergence_ratio,
                bool(ratio <= max_divergence_ratio),
                "; ".join(notes),
            )
        )

    frames["logit_lens"] = pd.DataFrame()
    if "readable" in checks:
        say("logit lens")
        ll = logit_lens(
            model, r, alpha=alpha, seed=seed, label=f"{reading.concept} @ layer {an_layer}"
        )
        frames["logit_lens"] = ll.to_frame()
        rows.append(
            _row(
                "readable",
                f"logit-lens entropy below random directions (p <= {alpha:g})",
                ll.normalized,
                float("nan"),
                float("nan"),
                float(np.quantile(ll.null, alpha)) / ll.max_entropy,
                ll.readable,
                f"p = {ll.p_value:.3f}; top +r: {', '.join(repr(t) for t in ll.top_tokens[:3])}",
            )
        )

    frames["writers"] = pd.DataFrame()
    if "writers" in checks:
        say("who writes it")
        assert pairs is not None
        w = writers(
            model,
            pairs,
            r,
            an_layer,
            site=reading.site,
            position=reading.position,
            n_boot=n_boot,
            level=level,
            seed=seed,
            batch_size=batch_size,
        )
        frames["writers"] = w.to_frame()
        top = w.top(1).iloc[0]
        n_c = len(w.components)
        limit = max(1, int(0.05 * n_c))
        rows.append(
            _row(
                "who writes it",
                f"80% of the contrast from <= {limit} of {n_c} components",
                float(w.k80),
                float("nan"),
                float("nan"),
                float(limit),
                bool(w.k80 <= limit),
                f"top: {top['component']} ({100 * top['share']:.0f}%); Gini {w.gini:.2f}",
            )
        )

    frames["persistence"] = pd.DataFrame()
    if "persistence" in checks:
        say("persistence (one-shot vs continual injection)")
        pr = persistence(
            model,
            behaviour,
            minus,
            max_new_tokens=persistence_tokens,
            n_boot=n_boot,
            level=level,
            seed=seed,
            batch_size=batch_size,
        )
        frames["persistence"] = pr.to_frame()
        ratio = pr.late_ratio()
        rows.append(
            _row(
                "persistent",
                "a one-shot push keeps >= 50% of the continual effect late in the generation",
                ratio,
                float("nan"),
                float("nan"),
                0.5,
                bool(np.isfinite(ratio) and ratio >= 0.5),
            )
        )

    return FaithfulnessReport(
        checks=pd.DataFrame(
            rows,
            columns=[
                "check",
                "criterion",
                "estimate",
                "ci_low",
                "ci_high",
                "reference",
                "passed",
                "note",
            ],
        ),
        reading=reading.to_frame(),
        steering=frames["steering"],
        persistence=frames["persistence"],
        logit_lens=frames["logit_lens"],
        writers=frames["writers"],
        divergence=frames["divergence"],
        concept=reading.concept,
        behaviour=behaviour.name,
        layers=ls,
        layer=an_layer,
        coef=float(coef),
        model=model.name,
        seed=seed,
        meta={
            "metric": _metric_name(metric),
            "scale": scale,
            "n_random": n_random,
            "null": null,
            "prompt": prompt,
            "baseline_mean": float(base.mean()) if base is not None else float("nan"),
        },
    )


__all__ = [
    "CHECKS",
    "compare",
    "explain_direction",
    "faithfulness",
    "gini",
    "logit_lens",
    "measure",
    "on_distribution",
    "persistence",
    "site_tokens",
    "specificity",
    "steering_sweep",
    "writers",
]
