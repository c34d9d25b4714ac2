"""Verifying a :class:`~faithlens.models.layouts.Layout` on a model: the checks that an inferred
layout (:mod:`faithlens.models.infer`) must pass before faithlens uses it. Each failure is an
:class:`InferenceError` naming the part of the architecture that does not hold. On a small
random input:

* ``resid_pre.L`` equals the model's own ``output_hidden_states`` at every layer, and the
  ``logits`` site equals the model's logits (exactly: they are the same tensors);
* the residual stream is rebuilt from the inferred components: ``resid_post.L`` is
  ``resid_pre.L + attn_out.L + mlp_out.L`` (and ``resid_mid.L`` is ``resid_pre.L + attn_out.L``);
* the head concatenation point: zeroing value head G zeroes exactly the output-projection
  input slices of the query heads that read it, and (without post-norms) ``attn_out.L`` is the
  sum of the per-head contributions plus the output bias;
* resuming the model's forward at a layer from the cached ``resid_pre`` reproduces the logits.

A post-LN block (BERT) is checked as ``resid_mid = norm1(resid_pre + attn_out)`` and
``resid_post = norm2(resid_mid + mlp_out)`` instead of the sum.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .adapters import HFAdapter
from .layouts import Layout

TOL = 1e-5  # float32 sums in a different order: far above rounding, far below any real term


class InferenceError(Exception):
    """A part of the architecture that could not be inferred (``part``) and why."""

    def __init__(self, part: str, reason: str) -> None:
        super().__init__(f"{part}: {reason}")
        self.part = part
        self.reason = reason


def first_tensor(x: Any) -> Tensor | None:
    """A tensor, or the first element of a tuple of them (a module's output)."""
    if isinstance(x, Tensor):
        return x
    if hasattr(x, "to_tuple"):  # a Hugging Face ModelOutput
        x = x.to_tuple()
    if isinstance(x, (tuple, list)) and x and isinstance(x[0], Tensor):
        return x[0]
    return None


def same(a: Tensor | None, b: Tensor | None, tol: float = 0.0) -> bool:
    """Equal shapes and values: exactly (``tol=0``), or within ``tol`` of the larger scale."""
    if a is None or b is None or a.shape != b.shape:
        return False
    if tol == 0.0:
        return bool(torch.equal(a, b))
    scale = max(1.0, float(b.abs().max()))
    return bool((a - b).abs().max() <= tol * scale)


class InferredAdapter(HFAdapter):
    """An :class:`HFAdapter` on an inferred :class:`Layout`, with the widths the module tree
    showed (a config may name them in ways the hand-written families do not)."""

    inferred = True

    def __init__(
        self,
        module: nn.Module,
        layout: Layout,
        dims: dict[str, int],
        post_ln: tuple[str, str] | None = None,
    ) -> None:
        self._dims = dict(dims)
        #: a post-LN block's norms (after attention, after the MLP), relative to a block
        self.post_ln = post_ln
        super().__init__(module, layout)

    def _build_sites(self) -> None:
        for name, value in self._dims.items():
            setattr(self, name, value)
        super()._build_sites()


def site_values(
    adapter: HFAdapter, ids: Tensor, names: list[str], edit: Any = None
) -> dict[str, Tensor]:
    """The tensors at ``names`` (whole hooked tensors, not slices) in one forward pass;
    ``edit`` = (module path, function of its output) changes one module's output first."""
    infos = {n: adapter.site_info(n) for n in names}
    got: dict[str, Tensor] = {}
    handles = []
    root = adapter.module

    def grab(name: str, t: Any) -> None:
        if name not in got and isinstance(t, Tensor):
            got[name] = t.detach().clone()

    for name, info in infos.items():
        hook = info.hook
        mod = root.get_submodule(hook.module) if hook.module else root
        if hook.io == "in":

            def pre(
                _m: nn.Module,
                a: tuple[Any, ...],
                kw: dict[str, Any],
                name: str = name,
                hook: Any = hook,
            ) -> None:
                grab(name, a[hook.index] if len(a) > hook.index else kw.get(hook.kwarg or ""))

            handles.append(mod.register_forward_pre_hook(pre, with_kwargs=True))
        else:

            def post(_m: nn.Module, _a: Any, out: Any, name: str = name) -> None:
                grab(name, first_tensor(out) if not hasattr(out, "logits") else out.logits)

            handles.append(mod.register_forward_hook(post))
    if edit is not None:
        handles.append(
            root.get_submodule(edit[0]).register_forward_hook(lambda _m, _a, out: edit[1](out))
        )
    try:
        with torch.no_grad():
            adapter.forward(root, {"input_ids": ids}, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return got


def check_heads(adapter: HFAdapter, ids: Tensor, layer: int) -> str | None:
    """Zero value head G: exactly the query heads reading it must get zero output-projection
    input. None when it holds, else what went wrong."""
    n_q, n_kv = adapter.n_heads, adapter.n_kv_heads
    o_name = f"head.{layer}.0"
    base = site_values(adapter, ids, [o_name])[o_name]
    for g in sorted({0, n_kv - 1}):
        info = adapter.site_info(f"v.{layer}.{g}")

        def zero(out: Any, info: Any = info) -> Any:
            t = first_tensor(out)
            assert t is not None
            t = t.clone()
            t[..., info.start : info.stop] = 0
            return t if isinstance(out, Tensor) else (t, *out[1:])

        z = site_values(adapter, ids, [o_name], edit=(info.hook.module, zero))[o_name]
        for h in range(n_q):
            sl = slice(h * adapter.d_head, (h + 1) * adapter.d_head)
            reads = h // (n_q // n_kv) == g
            if reads and float(z[..., sl].abs().max()) > 1e-6:
                return f"zeroing value head {g} leaves query head {h}'s output non-zero"
            if not reads and not torch.equal(z[..., sl], base[..., sl]):
                return f"zeroing value head {g} changes query head {h}, which does not read it"
    return None


def _post_ln_holds(adapter: HFAdapter, layer: int, vals: dict[str, Tensor], tol: float) -> bool:
    """For a post-LN adapter: ``resid_mid = norm1(resid_pre + attn_out)`` and
    ``resid_post = norm2(resid_mid + mlp_out)`` at ``layer``; raises if they do not hold."""
    norms = getattr(adapter, "post_ln", None)
    if norms is None:
        return False
    block = adapter.module.get_submodule(adapter.site_info(f"resid_pre.{layer}").hook.module)
    n1, n2 = (block.get_submodule(n) for n in norms)
    pre, a = vals[f"resid_pre.{layer}"], vals[f"attn_out.{layer}"]
    mid, m, post = vals[f"resid_mid.{layer}"], vals[f"mlp_out.{layer}"], vals[f"resid_post.{layer}"]
    with torch.no_grad():
        if not same(n1(pre + a), mid, tol) or not same(n2(mid + m), post, tol):
            raise InferenceError(
                "attention and MLP outputs (attn_out / mlp_out)",
                f"post-LN layer {layer}: resid_mid.{layer} is not {norms[0]}(resid_pre + attn_out)"
                f" or resid_post.{layer} is not {norms[1]}(resid_mid + mlp_out)",
            )
    return True


def verify(adapter: HFAdapter, ids: Tensor, tol: float = TOL) -> None:
    """Check an adapter's layout on ``ids`` (the checks of the module docstring); raise
    :class:`InferenceError` naming the first part that does not hold."""
    module = adapter.module
    with torch.no_grad():
        out = module(input_ids=ids, output_hidden_states=True, use_cache=False)
    logits = adapter.logits_of(out)
    hidden = getattr(out, "hidden_states", None)
    names = [n for n in adapter.site_table if not n.startswith(("q.", "k.", "v."))]
    names = [n for n in names if not n.startswith("head.") or n.endswith(".0")]
    vals = site_values(adapter, ids, names)
    post_ln = getattr(adapter, "post_ln", None)
    if hidden is not None:
        for L in range(adapter.n_layers):
            if not torch.equal(vals[f"resid_pre.{L}"], hidden[L]):
                raise InferenceError(
                    "block list", f"resid_pre.{L} is not the model's hidden state {L}"
                )
    if "logits" in vals and logits is not None and not torch.equal(vals["logits"], logits):
        raise InferenceError("lm_head", "the logits site is not the model's logits")
    for L in range(adapter.n_layers):
        pre, post, a = vals[f"resid_pre.{L}"], vals[f"resid_post.{L}"], vals[f"attn_out.{L}"]
        m = vals.get(f"mlp_out.{L}", torch.zeros_like(a))
        if _post_ln_holds(adapter, L, vals, tol):
            pass
        elif not same(pre + a + m, post, tol):
            raise InferenceError(
                "attention and MLP outputs (attn_out / mlp_out)",
                f"resid_post.{L} is not resid_pre.{L} + attn_out.{L} + mlp_out.{L}",
            )
        mid = vals.get(f"resid_mid.{L}")
        if mid is not None and post_ln is None and not same(pre + a, mid, tol):
            raise InferenceError(
                "norm before the MLP (resid_mid)",
                f"resid_mid.{L} is not resid_pre.{L} + attn_out.{L}",
            )
        if not adapter.post_norm:
            w_bias = adapter.o_proj(L)[1]
            heads = adapter.head_outputs(L, vals[f"head.{L}.0"]).sum(-2)
            if w_bias is not None:
                heads = heads + w_bias
            if not same(heads, a, tol):
                raise InferenceError(
                    "head concatenation point (o_proj input)",
                    f"attn_out.{L} is not the sum of the per-head outputs of its output projection",
                )
    for L in sorted({0, adapter.n_layers - 1}):
        wrong = check_heads(adapter, ids, L)
        if wrong is not None:
            raise InferenceError("head concatenation point (o_proj input)", f"layer {L}: {wrong}")
    if logits is not None:
        for L in sorted({1, adapter.n_layers - 1} - {0}):
            with torch.no_grad(), adapter.resumed(L, vals[f"resid_pre.{L}"]):
                again = adapter.logits_of(module(input_ids=ids, use_cache=False))
            if again is None or not same(again, logits, tol):
                raise InferenceError(
                    "embedding output (resid_pre.0)",
                    f"resuming the model at layer {L} from resid_pre.{L} does not give its logits",
                )


def refuse_encoder_decoder(cfg: Any) -> None:
    """Layouts are inferred for one stack of blocks: an encoder-decoder is refused."""
    if getattr(cfg, "is_encoder_decoder", False):
        raise InferenceError(
            "encoder-decoder",
            "two stacks joined by cross-attention; layouts are inferred for one stack of blocks "
            "(BART and T5 have their own adapter)",
        )


def check_final_norm(module: nn.Module, base: str, final_norm: str | None) -> None:
    """The final norm found must be a leaf module (not, say, a whole decoder stack)."""
    if final_norm is None:
        return
    found = module.get_submodule(f"{base}.{final_norm}" if base else final_norm)
    if any(True for _ in found.children()):
        raise InferenceError(
            "final norm", f"{final_norm} is a {type(found).__name__} with submodules, not a norm"
        )


def causal_or_fail(module: nn.Module, ids: Tensor) -> bool:
    """Whether the model is causal (:func:`faithlens.models.trace.is_causal`); a forward that
    cannot tell is an :class:`InferenceError`, never a guess (truncation and resuming rely on
    it)."""
    from .trace import is_causal  # trace imports this module

    try:
        return is_causal(module, ids)
    except Exception as e:  # a forward that takes no use_cache, or an output with no tensor
        raise InferenceError("causal mask", f"{type(e).__name__}: {e}") from e


__all__ = [
    "TOL",
    "InferenceError",
    "InferredAdapter",
    "causal_or_fail",
    "check_final_norm",
    "check_heads",
    "first_tensor",
    "refuse_encoder_decoder",
    "same",
    "site_values",
    "verify",
]
