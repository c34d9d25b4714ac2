"""Layouts inferred for Hugging Face architectures that have no hand-written one.

For a model whose ``config.model_type`` has no :class:`~faithlens.models.layouts.Layout`,
:func:`infer_layout` finds the block list, the token embedding, the query/key/value and output
projections, the MLP projections, the norms, the final norm and the language-model head from
the module tree, the weight shapes and one traced forward pass on a small random input
(parallel or sequential blocks, post-norms, fused q/k/v are told apart by which tensors are
equal, not by names). :func:`infer_adapter` then verifies it on another small input
(:func:`faithlens.models.layout_check.verify`) before anything uses it.

A check that fails raises :class:`InferenceError` naming the part that could not be inferred;
:func:`faithlens.models.adapters.hf_adapter` then falls back to raw module sites with a
warning, or refuses (``infer="strict"``).
"""

from __future__ import annotations

import logging
import re
import warnings
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InputError
from .adapters import Adapter, GenericAdapter
from .layout_check import (
    TOL,
    InferenceError,
    InferredAdapter,
    causal_or_fail,
    check_final_norm,
    check_heads,
    refuse_encoder_decoder,
    same,
    verify,
)
from .layouts import LAYOUTS, Layout
from .trace import Call, io_dims, trace_model


def _cfg_int(cfg: Any, *names: str) -> int | None:
    for n in names:
        v = getattr(cfg, n, None)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
    return None


def _inside(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent + ".")


def _rel(path: str, prefix: str) -> str:
    return path[len(prefix) + 1 :] if prefix else path


@dataclass
class _Found:
    """What the module tree and the trace say, before the layout is assembled."""

    base: str
    layers: str  # full path of the block list
    calls: dict[str, Call]
    logits: Tensor | None
    hidden: tuple[Tensor, ...] | None
    d_model: int
    n_heads: int
    d_head: int
    vocab: int


def _find_layers(module: nn.Module, n_layers: int | None) -> str:
    lists = [
        (name, mod)
        for name, mod in module.named_modules()
        if isinstance(mod, nn.ModuleList)
        and len(mod) > 0
        and len({type(m) for m in mod}) == 1
        and (n_layers is None or len(mod) == n_layers)
    ]
    if not lists:
        want = f"of {n_layers} blocks " if n_layers else ""
        raise InferenceError("block list", f"no nn.ModuleList {want}of one block type")
    lists.sort(key=lambda nm: (nm[0].count("."), -len(nm[1])))
    return lists[0][0]


def _embedding(f: _Found, module: nn.Module) -> tuple[str, str]:
    """(token embedding, module whose output is resid_pre.0), relative to the base model."""
    names = dict(module.named_modules())
    embeds = [
        n
        for n, m in names.items()
        if isinstance(m, nn.Embedding)
        and m.num_embeddings == f.vocab
        and not _inside(n, f.layers)
        and n in f.calls
    ]
    if not embeds:
        raise InferenceError(
            "token embedding", f"no nn.Embedding of {f.vocab} rows runs outside the blocks"
        )
    embed = min(embeds, key=lambda n: f.calls[n].order)
    first = f.calls.get(f"{f.layers}.0")
    if first is None or first.inp is None:
        raise InferenceError("block list", f"block {f.layers}.0 did not run on hidden states")
    outs = [
        n
        for n, c in f.calls.items()
        if n
        and n != f.base
        and not _inside(n, f.layers)
        and c.done < first.order
        and same(c.out, first.inp)
    ]
    if not outs:
        raise InferenceError(
            "embedding output (resid_pre.0)",
            "no module outside the blocks returns the hidden states block 0 reads (they are "
            "made outside any module), so a run cannot resume from a cached residual stream",
        )
    embed_out = max(outs, key=lambda n: f.calls[n].done)
    return _rel(embed, f.base), _rel(embed_out, f.base)


def _head_and_norm(f: _Found, module: nn.Module) -> tuple[str | None, str | None]:
    """(lm_head relative to the top module, final norm relative to the base model)."""
    names = dict(module.named_modules())
    last = f.calls.get(f"{f.layers}.{len(module.get_submodule(f.layers)) - 1}")  # type: ignore[arg-type]
    assert last is not None
    heads = [
        n
        for n, m in names.items()
        if (d := io_dims(m)) is not None
        and d[1] == f.vocab
        and not _inside(n, f.layers)
        and n in f.calls
        and f.calls[n].order > last.done
    ]
    head = max(heads, key=lambda n: f.calls[n].done) if heads else None
    if head is not None and f.logits is not None:
        # final-logit soft-capping (read from the config) is the one change allowed after it
        capped = getattr(module.config, "final_logit_softcapping", None) is not None
        if not capped and not same(f.calls[head].out, f.logits):
            raise InferenceError(
                "lm_head",
                f"the model changes the output of {head} outside any module (a logit scale?), "
                "so it is not the model's logits",
            )
    # the base model's output (its last hidden state); without one, what the head reads
    if f.base:
        final = f.calls[f.base].out
    else:
        final = f.calls[head].inp if head is not None else f.hidden[-1] if f.hidden else None
    if final is None or same(final, last.out):
        return head, None
    norms = [
        n
        for n, c in f.calls.items()
        if n
        and n not in (f.base, head)
        and (not f.base or _inside(n, f.base))
        and not _inside(n, f.layers)
        and c.order > last.done
        and same(c.out, final)
    ]
    if not norms:
        raise InferenceError(
            "final norm", "the model's last hidden state is returned by no module after the blocks"
        )
    return head, _rel(min(norms, key=lambda n: (n.count("."), f.calls[n].order)), f.base)


@dataclass
class _Attn:
    o_proj: str
    qkv: str  # 'separate' | 'fused'
    q: str
    k: str
    v: str
    n_kv: int
    conv1d: bool


_NAME = {
    "q": r"(^|_)q($|_)|query|^wq$",
    "k": r"(^|_)k($|_)|key|^wk$",
    "v": r"(^|_)v($|_)|value|^wv$",
}


def _attention(f: _Found, block: nn.Module, calls: dict[str, Call], cfg: Any) -> _Attn:
    """The q/k/v and output projections of one block (paths relative to the block)."""
    lin = {n: d for n, m in block.named_modules() if n and (d := io_dims(m)) is not None}
    width = f.n_heads * f.d_head
    outs = [n for n, (i, o) in lin.items() if i == width and o == f.d_model and n in calls]
    if not outs:
        raise InferenceError(
            "attention output projection (o_proj)",
            f"no linear map from {f.n_heads} heads x {f.d_head} = {width} to {f.d_model} runs",
        )
    # the output projection reads the heads alone; q/k/v (and a square q) share their input
    shared = [
        n
        for n in outs
        if any(m != n and same(calls[m].inp, calls[n].inp) for m in lin if m in calls)
    ]
    alone = [n for n in outs if n not in shared]
    if not alone:
        raise InferenceError(
            "attention output projection (o_proj)",
            f"every linear map from {width} to {f.d_model} shares its input with another",
        )
    o_proj = min(alone, key=lambda n: calls[n].order)
    top = o_proj.split(".")[0]
    reads = [
        n
        for n, (i, _o) in lin.items()
        if i == f.d_model
        and n in calls
        and n != o_proj
        and calls[n].order < calls[o_proj].order
        and (_inside(n, top) or top == o_proj)
    ]
    conv1d = type(block.get_submodule(o_proj)).__name__ == "Conv1D"
    for n in reads:
        o = lin[n][1]
        if o % f.d_head == 0 and (o // f.d_head - f.n_heads) % 2 == 0 and o // f.d_head > f.n_heads:
            return _Attn(o_proj, "fused", n, n, n, (o // f.d_head - f.n_heads) // 2, conv1d)
    qs = [n for n in reads if lin[n][1] == width]
    rest = [n for n in reads if lin[n][1] % f.d_head == 0 and lin[n][1] <= width]
    picked: dict[str, str] = {}
    for which in ("q", "k", "v"):
        pool = qs if which == "q" else rest
        named = [
            n
            for n in pool
            if re.search(_NAME[which], n.rpartition(".")[2]) and n not in picked.values()
        ]
        if named:
            picked[which] = named[0]
    if len(picked) < 3:  # by the order they run: q, k, v
        order = sorted(reads, key=lambda n: calls[n].order)
        if len(order) >= 3 and lin[order[0]][1] == width:
            picked = dict(zip("qkv", order[:3], strict=False))
    if len(picked) < 3 or lin[picked["k"]][1] != lin[picked["v"]][1]:
        raise InferenceError(
            "query/key/value projections",
            f"no fused q/k/v and no three projections from {f.d_model} to heads x {f.d_head} "
            f"before {o_proj}",
        )
    return _Attn(
        o_proj,
        "separate",
        picked["q"],
        picked["k"],
        picked["v"],
        lin[picked["k"]][1] // f.d_head,
        conv1d,
    )


def _mlp(
    f: _Found, block: nn.Module, calls: dict[str, Call], attn: _Attn
) -> tuple[str, int, tuple[str, ...]]:
    """(MLP output projection, neurons, input projections) of one block."""
    lin = {n: d for n, m in block.named_modules() if n and (d := io_dims(m)) is not None}
    skip = {attn.o_proj, attn.q, attn.k, attn.v}
    outs = [n for n, (_i, o) in lin.items() if o == f.d_model and n not in skip and n in calls]
    if not outs:
        raise InferenceError("MLP output projection", f"no other linear map to {f.d_model} runs")
    post = max(outs, key=lambda n: calls[n].order)
    d_mlp = lin[post][0]
    top = post.split(".")[0]
    ins = tuple(
        n
        for n, (i, o) in lin.items()
        if i == f.d_model
        and n not in skip
        and n != post
        and n in calls
        and (_inside(n, top) or o in (d_mlp, 2 * d_mlp))
        and not _inside(n, attn.o_proj.split(".")[0])
    )
    return post, d_mlp, ins


def _side(calls: dict[str, Call], root: str, x: Tensor, other: str) -> set[str]:
    """Modules computing from ``root``: it, what is inside it, and what reads their outputs
    (a post-norm), never reaching into ``other`` (the other of attention and MLP)."""
    side = {n for n in calls if _inside(n, root)}
    grew = True
    while grew:
        grew = False
        for n, c in calls.items():
            if (
                n
                and n not in side
                and not _inside(n, other)
                and c.inp is not None
                and not same(c.inp, x)
            ) and any(same(c.inp, calls[s].out) for s in side):
                side.add(n)
                grew = True
    return side


def _post_ln(
    calls: dict[str, Call], attn: _Attn, post: str, ins: tuple[str, ...], tol: float
) -> dict[str, Any] | None:
    """A post-LN block (BERT, GPT-1): ``mid = norm1(x + attention)``, the MLP reads ``mid``, and
    the block returns ``norm2(mid + MLP)``. attn_out / mlp_out are then the output projections'
    outputs, resid_mid what the MLP reads, and the block has no attn_in / mlp_in."""
    x, y = calls[""].inp, calls[""].out
    a, m = calls[attn.o_proj].out, calls[post].out
    if not ins or x is None or a is None or m is None or x.shape != a.shape:
        return None
    entry = min(ins, key=lambda n: calls[n].order)
    mid = calls[entry].inp
    if mid is None or mid.shape != m.shape:
        return None
    n1 = [n for n in calls if n and same(calls[n].inp, x + a, tol) and same(calls[n].out, mid)]
    n2 = [n for n in calls if n and same(calls[n].inp, mid + m, tol) and same(calls[n].out, y)]
    if not n1 or not n2:
        return None
    return {
        "attn_out": attn.o_proj,
        "mlp_out": post,
        "post_norm": False,
        "attn_in": None,
        "mlp_in": None,
        "mlp_norm": None,
        "resid_mid": entry,
        "post_ln": (n1[0], n2[0]),
    }


def _block(
    calls: dict[str, Call], attn: _Attn, post: str, ins: tuple[str, ...], tol: float
) -> dict[str, Any]:
    """How one block adds attention and MLP to the residual stream (paths relative to it)."""
    x, y = calls[""].inp, calls[""].out
    if x is None or y is None:
        raise InferenceError("block list", "a block does not map hidden states to hidden states")
    attn_top = attn.o_proj.split(".")[0]
    mlp_top = post.split(".")[0]
    a_side = _side(calls, attn_top, x, mlp_top)
    m_side = _side(calls, mlp_top, x, attn_top)

    def shaped(side: set[str]) -> list[str]:
        keep = [n for n in side if (o := calls[n].out) is not None and o.shape == x.shape]
        return sorted(keep, key=lambda n: (n.count("."), calls[n].done))

    found = next(
        (
            (a, m)
            for a in shaped(a_side)
            for m in shaped(m_side)
            if same(x + calls[a].out + calls[m].out, y, tol)  # type: ignore[operator]
        ),
        None,
    )
    if found is None:
        post_ln = _post_ln(calls, attn, post, ins, tol)
        if post_ln is not None:
            return post_ln
        raise InferenceError(
            "attention and MLP outputs (attn_out / mlp_out)",
            "no attention-side and MLP-side module outputs add up with the block input to the "
            "block output, and it is no post-LN block either (a term added outside any module?)",
        )
    a, m = found
    for name, proj, what in ((a, attn.o_proj, "attention"), (m, post, "MLP")):
        # what joins the residual is the projection's output (or a post-norm of it): a sum of
        # experts or of two branches would make the projection's input no single set of units
        root = (
            calls[name].out
            if _inside(name, (attn_top if what != "MLP" else mlp_top))
            else calls[name].inp
        )
        if not same(root, calls[proj].out):
            raise InferenceError(
                "MLP output projection"
                if what == "MLP"
                else "attention output projection (o_proj)",
                f"the {what} output {name} is not the output of {proj} (a mixture of experts, or a "
                "second branch?)",
            )
    a_out = calls[a].out
    assert a_out is not None
    mid = x + a_out
    mlp_entry = mlp_top if mlp_top != post else min(ins or (post,), key=lambda n: calls[n].order)
    attn_entry = attn_top if attn_top != attn.o_proj else attn.q
    outside = [n for n in calls if n and not _inside(n, attn_top) and not _inside(n, mlp_top)]

    def feeding(entry: str) -> str | None:
        want = calls[entry].inp
        raw = calls[entry].raw_in
        hits = [n for n in outside if raw is not None and calls[n].raw_out is raw]
        hits = hits or [n for n in outside if same(calls[n].out, want)]
        return min(hits, key=lambda n: calls[n].order) if hits else None

    attn_norm, mlp_norm = feeding(attn_entry), feeding(mlp_entry)
    fields: dict[str, Any] = {
        "attn_out": a,
        "mlp_out": m,
        "post_norm": not _inside(a, attn_top),
        "attn_in": attn_norm,
        "mlp_in": mlp_norm,
        "mlp_norm": None,
    }
    mids = [n for n in outside if same(calls[n].inp, mid, tol)]
    if same(calls[mlp_entry].inp, mid, tol):
        mids.append(mlp_entry)
    if mids:  # sequential: the MLP reads the residual after attention
        fields["resid_mid"] = (
            mlp_norm if mlp_norm in mids else min(mids, key=lambda n: calls[n].order)
        )
        return fields
    fields["resid_mid"] = None
    if attn_norm is not None and attn_norm == mlp_norm:  # parallel, one norm for both
        fields.update(attn_in=f"{attn_top}:in", mlp_in=f"{mlp_top}:in", mlp_norm=attn_norm)
    return fields


def _dims(module: nn.Module, cfg: Any, layers: str) -> tuple[int, int, int, int]:
    n_heads = _cfg_int(cfg, "num_attention_heads", "n_head", "n_heads", "num_heads")
    d_model = _cfg_int(cfg, "hidden_size", "n_embd", "d_model", "dim")
    vocab = _cfg_int(cfg, "vocab_size")
    if n_heads is None or d_model is None or vocab is None:
        raise InferenceError(
            "config", "the config names no attention head count, hidden size or vocabulary size"
        )
    d_head = _cfg_int(cfg, "head_dim") or d_model // n_heads
    return d_model, n_heads, d_head, vocab


def infer_layout(
    module: nn.Module,
) -> tuple[Layout, dict[str, int], tuple[str, str] | None]:
    """The :class:`Layout` of a Hugging Face model read from its module tree and one traced
    forward pass, the widths it showed, and a post-LN block's two norms (relative to a block;
    None for a pre-norm block). Unverified: :func:`infer_adapter` verifies it."""
    cfg: Any = module.config
    refuse_encoder_decoder(cfg)
    module.eval()
    d_model, n_heads, d_head, vocab = _dims(module, cfg, "")
    n_layers = _cfg_int(cfg, "num_hidden_layers", "n_layer", "n_layers", "num_layers")
    layers = _find_layers(module, n_layers)
    base = layers.split(".")[0] if "." in layers else ""
    device = next(module.parameters()).device
    ids = torch.randint(1, vocab, (2, 7), generator=torch.Generator().manual_seed(0)).to(device)
    try:
        calls, out = trace_model(module, ids)
    except Exception as e:  # the model's own forward failed on a small random input
        raise InferenceError("forward pass", f"{type(e).__name__}: {e}") from e
    f = _Found(
        base,
        layers,
        calls,
        getattr(out, "logits", None),
        getattr(out, "hidden_states", None),
        d_model,
        n_heads,
        d_head,
        vocab,
    )
    embed, embed_out = _embedding(f, module)
    head, final_norm = _head_and_norm(f, module)
    check_final_norm(module, base, final_norm)
    causal = causal_or_fail(module, ids)
    prefix = f"{layers}.0."
    block_calls = {n[len(prefix) :]: c for n, c in calls.items() if n.startswith(prefix)}
    block_calls[""] = calls[f"{layers}.0"]
    block = module.get_submodule(f"{layers}.0")
    attn = _attention(f, block, block_calls, cfg)
    post, d_mlp, ins = _mlp(f, block, block_calls, attn)
    eps = float(torch.finfo(next(module.parameters()).dtype).eps)
    fields = _block(block_calls, attn, post, ins, max(TOL, 64 * eps))
    post_ln = fields.pop("post_ln", None)
    layout = Layout(
        arch=str(cfg.model_type),
        base=base,
        layers=_rel(layers, base),
        embed=embed,
        embed_out=embed_out,
        o_proj=attn.o_proj,
        qkv="gpt2" if attn.qkv == "fused" else "separate",
        q=attn.q,
        k=attn.k,
        v=attn.v,
        mlp_post=post,
        final_norm=final_norm,
        head=head,
        causal=causal,
        conv1d=attn.conv1d,
        mlp_in_proj=ins,
        kv_heads=attn.n_kv,
        **fields,
    )
    n = len(module.get_submodule(layers))  # type: ignore[arg-type]
    dims = {
        "n_layers": n,
        "n_heads": n_heads,
        "n_kv_heads": attn.n_kv,
        "d_model": d_model,
        "d_head": d_head,
        "d_mlp": d_mlp,
        "d_vocab": vocab,
    }
    return layout, dims, post_ln


def infer_adapter(module: nn.Module) -> InferredAdapter:
    """Infer the layout of a Hugging Face model and verify it (:func:`verify`).

    Raises :class:`InferenceError` naming the part that could not be inferred or verified."""
    layout, dims, post_ln = infer_layout(module)
    if not 0 < dims["n_kv_heads"] <= dims["n_heads"] or dims["n_heads"] % dims["n_kv_heads"]:
        raise InferenceError(
            "query/key/value projections",
            f"{dims['n_kv_heads']} key/value heads do not divide {dims['n_heads']} query heads",
        )
    ids = torch.randint(1, dims["d_vocab"], (2, 7), generator=torch.Generator().manual_seed(1))
    ids = ids.to(next(module.parameters()).device)
    eps = float(torch.finfo(next(module.parameters()).dtype).eps)
    tol = max(TOL, 64 * eps)
    styles = ("gpt2", "neox") if layout.qkv != "separate" else ("separate",)
    wrong = ""
    for style in styles:
        adapter = InferredAdapter(module, replace(layout, qkv=style), dims, post_ln)
        problem = check_heads(adapter, ids, 0)
        if problem is None:
            verify(adapter, ids, tol)
            return adapter
        wrong = problem
    raise InferenceError(
        "query/key/value projections"
        if len(styles) > 1
        else "head concatenation point (o_proj input)",
        f"no known head order of {layout.v} fits ({wrong}): neither all query heads, then all "
        "key heads, then all value heads, nor a query, key, value group per key/value head",
    )


MODES = ("auto", "strict", "off")


def check_mode(infer: str) -> None:
    """Refuse an ``infer=`` that is not one of :data:`MODES`."""
    if infer not in MODES:
        raise InputError(
            f"infer={infer!r} is not a mode; use one of {list(MODES)} ('auto': infer the layout "
            "of an unknown architecture, fall back to raw module sites if it fails)"
        )


def adapter_for_unknown(module: nn.Module, model_type: str, infer: str) -> Adapter:
    """The adapter of a Hugging Face model whose model_type has no hand-written layout: an
    inferred, verified one, or what ``infer`` asks when inference fails (``"auto"``: a warning
    naming the part and raw module sites; ``"strict"``: refuse; ``"off"``: never infer)."""
    check_mode(infer)
    if infer == "off":
        raise InputError(
            f"no faithlens adapter for Hugging Face model_type {model_type!r} (supported: "
            f"{sorted(LAYOUTS)}) and infer='off'. Pass infer='auto' to infer its layout, or use "
            "fl.wrap(model) and raw module sites ('module:PATH')."
        )
    try:
        adapter = infer_adapter(module)
    except InferenceError as e:
        msg = (
            f"faithlens could not infer the layout of Hugging Face model_type {model_type!r}: "
            f"the {e.part} ({e.reason})"
        )
        if infer == "strict":
            raise InputError(
                f"{msg}. Use fl.wrap(model) and raw module sites ('module:PATH')."
            ) from e
        warnings.warn(
            f"{msg}; only raw module sites ('module:PATH') are available on this model.",
            stacklevel=4,
        )
        return GenericAdapter(module)
    logging.getLogger("faithlens").info("inferred layout for %s, verified", model_type)
    return adapter


__all__ = [
    "MODES",
    "InferenceError",
    "InferredAdapter",
    "adapter_for_unknown",
    "check_mode",
    "infer_adapter",
    "infer_layout",
]
