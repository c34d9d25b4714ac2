"""**on-distribution**: activations at the prompt tokens, steered or not, and the divergence
audit of steered activations against natural ones."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ...errors import InputError
from ...models.model import Model
from ..data import Prompt
from ..generation import encode, left_pad, padded_inputs, position_ids
from ..steering import Steering


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
    from ...divergence import divergences

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
