"""**who writes it**: the contrast along a direction split exactly into the embedding, every
attention head, every attention output bias and every MLP upstream."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ... import stats
from ...errors import InputError
from ...models.model import Inputs, Model
from ...models.sites import Site
from ..data import ContrastPairs, Prompt
from ..generation import encode
from ..reading import right_pad
from ..results import WritersResult

_ADDITIVE = ("llama", "gpt2", "gpt_neox")


def components(
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
        if last_mlp >= L and f"mlp_out.{L}" in model.adapter.site_table:  # not attention-only
            out.append((f"mlp_out.{L}", f"mlp_out.{L}", L, None))
    return out


def component_vectors(
    model: Model,
    inputs: Inputs,
    positions: Tensor,
    comps: list[tuple[str, str, int | None, int | None]],
    target: str,
) -> tuple[Tensor, Tensor]:
    """Each component's output at one token per example, ``[b, n_components, d]`` (float32, or
    the model's dtype where it is wider), and
    the residual ``target`` there, ``[b, d]``: one run of ``inputs`` cached at ``positions``
    (``[b]``) and stopped at ``target``. Heads are written through the output projection, the
    attention output bias is its own component; the parts add up to ``target`` on a pre-norm
    residual stream."""
    a = model.adapter
    cache_names = sorted({c[1] for c in comps if c[1]} | {target})
    res = model.run(
        inputs, cache=[Site(s, positions=positions) for s in cache_names], stop_at=target
    )
    first = res.cache[target][:, 0]
    total = first.to(torch.promote_types(first.dtype, torch.float32))
    b, d = total.shape
    out = torch.zeros(b, len(comps), d, device=total.device, dtype=total.dtype)
    per_layer_z: dict[int, Tensor] = {}
    for j, (name, csite, L, H) in enumerate(comps):
        if name.startswith("attn_bias"):
            assert L is not None
            _, bias = a.o_proj(L)
            if bias is not None:
                out[:, j] = bias.detach().to(total)
        elif H is not None:
            assert L is not None
            if L not in per_layer_z:
                z = torch.cat([res.cache[f"head.{L}.{h}"][:, 0] for h in range(model.n_heads)], -1)
                with torch.no_grad():
                    per_layer_z[L] = a.head_outputs(L, z).to(total)  # [b, H, d]
            out[:, j] = per_layer_z[L][:, H]
        else:
            out[:, j] = res.cache[csite][:, 0].to(total)
    return out, total


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
    from ..pair_activations import token_positions

    seqs = encode(model, prompts)
    n = len(seqs)
    target = f"{site}.{layer}"
    out = np.zeros((n, len(comps)))
    total = np.zeros(n)
    rr = r.to(model.device).float()
    for b0 in range(0, n, batch_size):
        rows = list(range(b0, min(n, b0 + batch_size)))
        inp = right_pad(model, [seqs[i] for i in rows])
        pos = token_positions(inp, position)
        if pos is None:
            raise InputError("who-writes-it reads one token: position must be 'last' or an offset")
        vecs, resid = component_vectors(model, inp, pos, comps, target)
        total[b0 : b0 + len(rows)] = (resid.float() @ rr).cpu().numpy()
        out[b0 : b0 + len(rows)] = (vecs.float() @ rr).cpu().numpy()
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
    comps = components(model, site, layer)
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
