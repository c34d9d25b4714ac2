"""Attribution patching: the first-order (gradient) approximation of activation patching.

For a site with base activation ``a`` and source activation ``a'``, patching changes the metric
by about ``grad_a m . (a' - a)``. Two forward passes (source, base with gradients) and one
backward pass give this estimate for every site at once. Per example ``i`` the estimate is
``m_base_i + sum over the patched positions and units of grad . (a' - a)``, and the effect is
normalised and bootstrapped exactly like exact patching.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from .. import validate
from ..models.model import Model
from ..tasks.base import Task
from .exact import resolve_sites
from .result import PatchingResult
from .sweep import build_result, check_arguments, effects


@validate.renamed_argument("task", "data")
def attribution_patch(
    model: Model,
    data: Task,
    sites: str | Sequence[str] = "head",
    positions: str = "all",
    *,
    direction: str = "denoising",
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> PatchingResult:
    """Gradient-based estimate of :func:`faithlens.patch` for every site, same result shape."""
    check_arguments(
        "attribution_patch",
        data,
        positions,
        direction,
        model=model,
        n_boot=n_boot,
        level=level,
        seed=seed,
    )
    names = resolve_sites(model, sites)
    data = data.to(model.device)
    base_in, src_in = (
        (data.corrupt, data.clean) if direction == "denoising" else (data.clean, data.corrupt)
    )

    src = model.run(src_in, cache=names, logits_at=data.positions)
    assert src.logits is not None
    m_src = data.metric(src.logits[:, 0], data.answers)

    # Gradients only with respect to the sites (not the weights): requires_grad is turned off on
    # the parameters for the duration, so no .grad is written into the user's model.
    params = [p for p in model.module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        base = model.run(
            base_in, cache=names, logits_at=data.positions, grad=True, grad_sites=names
        )
        assert base.logits is not None
        m_base_t = data.metric(base.logits[:, 0], data.answers)
        deltas = [base.grad_leaf(name)[0] for name in names]
        grads = torch.autograd.grad(m_base_t.sum(), deltas, allow_unused=True)
    finally:
        for p in params:
            p.requires_grad_(True)
    grad_by_site = {}
    for name, g, dlt in zip(names, grads, deltas):
        sel = base.grad_leaf(name)[1]
        grad_by_site[name] = sel.get(g if g is not None else torch.zeros_like(dlt))

    n = data.n
    m_base = m_base_t.detach().double().cpu().numpy()
    rows = []
    conds: list[tuple[str, int | None]] = []
    for name in names:
        diff = (src.cache[name] - base.cache[name].detach()).float()
        contrib = (diff * grad_by_site[name].float()).sum(-1)  # [n, seq] (or [n]: no positions)
        if contrib.dim() == 1:
            contrib = contrib[:, None]
        if positions == "all":
            rows.append(contrib.sum(-1))
            conds.append((name, None))
        elif positions == "last":
            rows.append(contrib[torch.arange(n), data.positions])
            conds.append((name, None))
        else:
            for t in range(contrib.shape[1]):
                rows.append(contrib[:, t])
                conds.append((name, t))
    est_delta = torch.stack(rows).double().cpu().numpy()
    patched = m_base[None, :] + est_delta
    m_source = m_src.double().cpu().numpy()
    est, note = effects(
        "attribution_patch", patched, m_base, m_source, n_boot=n_boot, level=level, seed=seed
    )
    infos = {name: model.site_info(name) for name in names}
    return build_result(
        model,
        data,
        est,
        note,
        site=[c[0] for c in conds],
        kind=[infos[c[0]].kind for c in conds],
        layer=[infos[c[0]].layer for c in conds],
        head=[infos[c[0]].head for c in conds],
        position=[c[1] for c in conds],
        patched=np.asarray(patched),
        base=m_base,
        source=m_src.double().cpu().numpy(),
        method="attribution",
        direction=direction,
        positions=positions,
        level=level,
        n_boot=n_boot,
        seed=seed,
        meta={},
    )
