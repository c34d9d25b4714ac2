"""**readable**: a direction read straight through the final norm and the unembedding."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ... import stats
from ...errors import InputError
from ...models.model import Model
from ..results import LogitLensResult


def unembed(model: Model, x: Tensor) -> Tensor:
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
    logits = unembed(model, torch.cat([r[None], -r[None], rand]))
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
