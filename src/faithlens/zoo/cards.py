"""Model cards: what a zoo model is, how it was trained and how well it does."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .training import Recipe, TrainingRun


def _fmt(v: Any) -> str:
    if isinstance(v, dict) and "estimate" in v:
        est, lo, hi = v["estimate"], v.get("low"), v.get("high")
        n = v.get("n")
        ci = f" (95% CI {lo:.4g} to {hi:.4g})" if lo is not None else ""
        return f"{est:.4g}{ci}" + (f", n = {n:,}" if n else "")
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def render_card(recipe: Recipe, run: TrainingRun) -> str:
    """The markdown model card of a finished training run."""
    cfg = recipe.config
    sched = run.schedule
    m = run.machine
    metric_rows = "\n".join(
        f"| `{k}` | {_fmt(v)} |"
        for k, v in run.metrics.items()
        if not (isinstance(v, float) and "_score." in k)
    )
    scores = {k: v for k, v in run.metrics.items() if "_score." in k}
    score_block = ""
    if scores:
        kinds = sorted({k.split("_score.")[0] for k in scores})
        heads = sorted(
            {k.split("_score.")[1] for k in scores}, key=lambda s: tuple(map(int, s.split(".")))
        )
        head_rows = "\n".join(
            f"| {h} | " + " | ".join(f"{scores[f'{kd}_score.{h}']:.3f}" for kd in kinds) + " |"
            for h in heads
        )
        score_block = (
            "\n### Attention scores per head\n\n"
            "Mean attention from each query to the previous token (`prev_token`) and, inside "
            "repeated spans, to the token after the current token's earlier occurrence "
            "(`induction`), on the validation sequences.\n\n"
            f"| head | {' | '.join(kinds)} |\n|---|{'---|' * len(kinds)}\n{head_rows}\n"
        )
    problems = (
        "".join(f"\n- **Target missed:** {p}" for p in run.problems) or "\n- All targets met."
    )
    arch = (
        f"`{cfg.describe()}`: {run.n_params:,} parameters, stored as float32 safetensors. "
        f"Pre-LayerNorm blocks, "
        + (
            "no MLPs (attention-only), "
            if cfg.attn_only
            else f"{cfg.act} MLPs of width {cfg.d_mlp}, "
        )
        + (
            "learned absolute positions added to the residual stream, "
            if cfg.positions == "learned"
            else "shortformer positions (added to the query and key inputs of every layer only), "
        )
        + ("causal attention, " if cfg.causal else "bidirectional attention with padding masked, ")
        + f"a final LayerNorm and an unembedding to {cfg.d_out} outputs."
    )
    recipe_text = (
        f"AdamW (betas {tuple(sched['betas'])}, weight decay {sched['weight_decay']} on "
        f"matrices), learning rate {sched['lr']} with {sched['warmup']} warm-up steps and cosine "
        f"decay to {sched['min_lr_ratio']} of it, gradient clipping at {sched['grad_clip']}, "
        f"batch {sched['batch_size']}, {sched['steps']:,} steps, seed {run.seed}; weights "
        f"initialised normal(0, {cfg.init_std})."
    )
    timing = (
        f"{run.seconds / 60:.1f} minutes for {run.steps:,} steps on {m.get('threads')} torch "
        f"thread(s) ({m.get('cpu_count')} CPUs, {m.get('processor')}, torch {m.get('torch')}). "
        f"Load average at the start {m.get('load_start')}, at the end {m.get('load_end')}: "
        "other jobs shared the CPU, so this is an upper bound for an idle 2-core machine."
    )
    return f"""# zoo:{recipe.name}

{recipe.description}.

Load it with `fl.load("zoo:{recipe.name}")`; retrain it with `faithlens zoo train {recipe.name}`.

## Architecture

{arch}

## Data

{recipe.data_description()}

## Recipe

{recipe_text}

## Evaluation

| metric | value |
|---|---|
{metric_rows}
{score_block}
{problems}

## Training time

{timing}
"""
