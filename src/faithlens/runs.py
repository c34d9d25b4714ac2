"""The batched run engine: hooks in, hooks out, always removed.

``run(model, inputs, interventions, cache)`` resolves every site and checks every source before
the first forward pass, registers one hook per hooked tensor (several interventions and caches on
the same module share it), runs the model's own ``forward`` and removes the hooks in a
``finally``, also when the run raises.

Speed comes from three options:

- ``start_at=Resume(layer, hidden, offset, kv)``: recompute only layers ``layer..`` from a cached
  residual stream, and in a causal model only positions ``offset..`` (earlier positions are read
  from cached keys and values); ``Resume.decode(kv, offset)`` computes only the new positions from
  the embedding on (incremental decoding: one generated token at a time);
- ``logits_at``: unembed only the positions a metric reads;
- ``stop_at``: stop after a site has been computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .errors import InputError, ShapeError, SiteError
from .hooks import HookState, Op, Stop, gather_hook, register, vocab_subset
from .interventions import Intervention
from .models.model import Inputs, Model, use_engine
from .models.probe import site_positions
from .models.sites import (
    HookPoint,
    Selection,
    Site,
    SiteInfo,
    SiteLike,
    as_rows,
    as_site,
    resolve_positions,
    resolve_units,
)

if TYPE_CHECKING:
    from torch.utils.hooks import RemovableHandle

    from .models.adapters import Adapter


@dataclass(frozen=True, eq=False)
class Resume:
    """Start a run at ``resid_pre.layer`` from a cached residual stream.

    ``hidden`` is ``[batch, seq - offset, d_model]``: the residual stream entering ``layer`` at
    positions ``offset..``. When ``offset > 0`` (causal models only), ``kv`` holds every layer's
    cached keys and values for positions ``< offset`` (``[(keys, values)]``, each
    ``[batch, kv_heads, offset, d_head]``), so those positions are not recomputed.

    ``hidden=None`` (only with ``layer=0`` and ``offset > 0``) runs the new positions through the
    whole model, embedding included, on top of the cached keys and values: incremental decoding.
    Build it with :meth:`Resume.decode`.
    """

    layer: int
    hidden: Tensor | None
    offset: int = 0
    kv: Sequence[tuple[Tensor, Tensor]] | None = None

    @classmethod
    def decode(cls, kv: Sequence[tuple[Tensor, Tensor]], offset: int | None = None) -> Resume:
        """Continue a causal run from its keys and values (``RunOutput.kv``): only positions
        ``offset..`` (default: the cached length) are computed, from the embedding on."""
        if not kv:
            raise InputError("Resume.decode needs the cached keys and values of a run")
        cached = int(kv[0][0].shape[-2])
        return cls(layer=0, hidden=None, offset=cached if offset is None else offset, kv=kv)

    @classmethod
    def from_run(
        cls, out: RunOutput, layer: int, model: Model, *, offset: int = 0, repeat: int = 1
    ) -> Resume:
        """Resume from a run that cached ``resid_pre.layer`` (or the final residual) and, when
        ``offset > 0``, returned its keys and values (``return_kv=True``)."""
        name = (
            f"resid_pre.{layer}" if layer < model.n_layers else f"resid_post.{model.n_layers - 1}"
        )
        if name not in out.cache:
            raise InputError(f"Resume.from_run: the run did not cache {name!r}")
        hidden = out.cache[name][:, offset:]
        kv = None
        if offset > 0:
            if out.kv is None:
                raise InputError(
                    "Resume.from_run: run the source with return_kv=True to resume at an offset"
                )
            kv = [(k[:, :, :offset], v[:, :, :offset]) for k, v in out.kv]
        if repeat > 1:
            hidden = hidden.repeat(repeat, 1, 1)
            if kv is not None:
                kv = [(k.repeat(repeat, 1, 1, 1), v.repeat(repeat, 1, 1, 1)) for k, v in kv]
        return cls(layer=layer, hidden=hidden, offset=offset, kv=kv)


@dataclass(eq=False)
class RunOutput:
    """What a run returns: logits (``[batch, positions, vocab]``; only the positions asked for
    with ``logits_at``), the cached activations by site name, the raw module output, and, with
    ``return_kv``, each layer's keys and values."""

    logits: Tensor | None
    cache: dict[str, Tensor]
    raw: Any = None
    kv: list[tuple[Tensor, Tensor]] | None = None
    offset: int = 0
    _grads: dict[str, tuple[Tensor, Selection]] = field(default_factory=dict)

    def __getitem__(self, site: str) -> Tensor:
        if site not in self.cache:
            raise SiteError(f"{site!r} was not cached in this run; cached: {sorted(self.cache)}")
        return self.cache[site]

    def grad_leaf(self, site: SiteLike) -> tuple[Tensor, Selection]:
        """The zero tensor added to a ``grad_sites`` site's hooked tensor (differentiate with
        respect to it, e.g. with ``torch.autograd.grad``) and the site's selection of it."""
        name = str(as_site(site).name)
        if name not in self._grads:
            raise SiteError(f"{name!r} was not in grad_sites; grad sites: {sorted(self._grads)}")
        return self._grads[name]

    def grad(self, site: SiteLike) -> Tensor:
        """Gradient of what you called ``.backward()`` on with respect to a ``grad_sites`` site."""
        name = str(as_site(site).name)
        if name not in self._grads:
            raise SiteError(f"{name!r} was not in grad_sites; grad sites: {sorted(self._grads)}")
        delta, sel = self._grads[name]
        if delta.grad is None:
            raise InputError(
                "no gradient yet: call .backward() on a function of this run's outputs"
            )
        return sel.get(delta.grad)


def _reachable(
    info: SiteInfo, model: Model, start: int | None, stop: SiteInfo | None
) -> str | None:
    """Why a canonical site is not reached by a run (None when it is)."""
    n = model.n_layers
    order = info.order(n)
    if order is None:
        return None
    if start is not None:
        if info.kind == "embed":
            return f"the run resumes at layer {start}, after the embedding"
        if info.layer is not None and info.layer < start:
            return f"the run resumes at layer {start}, after layer {info.layer}"
    if stop is not None:
        s_order = stop.order(n)
        if s_order is not None and order > s_order:
            return f"the run stops at {stop.name}, before it"
    return None


def _seq_for(model: Model, info: SiteInfo, inputs: Inputs, offset: int) -> int | None:
    """The positions a run computes at a site: the tokens from ``offset`` on (a decoder site's
    own tokens on an encoder-decoder); on inputs without token ids (pixels, embeddings), those
    the model's own modules make there (a canonical site or a spatial one;
    :func:`faithlens.models.probe.site_positions`), else None."""
    own = inputs.kwargs.get(info.seq_key) if info.seq_key is not None else None
    if isinstance(own, Tensor):  # a decoder's tokens (encoder-decoders)
        return int(own.shape[1]) - offset
    if inputs.ids is not None:
        return int(inputs.ids.shape[1]) - offset
    if info.width is None and not info.hook.spatial:
        return None
    return site_positions(model.module, info.hook, inputs.args, dict(inputs.kwargs))


def _last_for(info: SiteInfo, inputs: Inputs) -> Tensor | None:
    """Each example's last real position on the site's own position axis."""
    own = inputs.kwargs.get(info.seq_key) if info.seq_key is not None else None
    if not isinstance(own, Tensor) or info.seq_key is None:
        return inputs.last
    return Inputs(
        ids=own, mask=inputs.kwargs.get(info.seq_key.replace("input_ids", "attention_mask"))
    ).last


def _build_selection(
    model: Model,
    site: Site,
    info: SiteInfo,
    rows: Any,
    batch: int,
    inputs: Inputs,
    offset: int,
) -> Selection:
    rows_idx, row_slice = as_rows(rows, batch)
    seq = _seq_for(model, info, inputs, offset)
    positions = None
    if site.positions is not None:
        if seq is None and info.kind != "module":
            raise SiteError(f"site {site.name} has no position axis")
        positions = resolve_positions(
            site.positions,
            batch=batch,
            rows=rows_idx,
            seq=seq if seq is not None else 0,
            last=_last_for(info, inputs),
            offset=offset,
            site=site.name,
        )
    dims = resolve_units(site.units, info, None)
    return Selection(info, rows_idx, positions, dims, row_slice, site)


def _full_width(model: Model, info: SiteInfo) -> int | None:
    """Width of the whole hooked tensor (heads share one tensor), when known."""
    if info.width is None:
        return None
    if info.full is not None:
        return info.full
    a = model.adapter
    if info.kind == "head":
        return a.n_heads * a.d_head
    if info.kind in ("q", "k", "v"):
        if a.qkv_layout in ("gpt2", "neox"):
            return (a.n_heads + 2 * a.n_kv_heads) * a.d_head
        return (a.n_heads if info.kind == "q" else a.n_kv_heads) * a.d_head
    return info.width


def run(
    model: Model,
    inputs: Any,
    interventions: Sequence[Intervention] = (),
    cache: Sequence[SiteLike] = (),
    *,
    start_at: Resume | None = None,
    stop_at: SiteLike | None = None,
    logits_at: Any = None,
    logit_tokens: Tensor | None = None,
    grad: bool = False,
    grad_sites: Sequence[SiteLike] = (),
    return_kv: bool = False,
) -> RunOutput:
    """Run ``model`` on ``inputs`` with ``interventions``, caching the sites in ``cache``.

    Args:
        inputs: strings, token ids, a tokenizer output, :class:`Inputs`, or a generic module's
            input tensors.
        interventions: applied in order; several may share a site (composed in order) or a batch
            (through their ``rows``).
        cache: sites whose (post-intervention) activations to return, with their selections.
        start_at: a :class:`Resume`: recompute from a layer (and, in a causal model, from a
            position) using a cached residual stream.
        stop_at: a site after which the forward pass stops (no logits are returned).
        logits_at: positions at which to compute logits: ``"last"`` (each example's last real
            token), an int, or per-example indices ``[batch]`` / ``[batch, k]``. Default: all.
            A model with one output per example (``[batch, classes]``, an image classifier)
            returns it as ``[batch, 1, classes]`` when ``logits_at`` is given (its one position).
        logit_tokens: compute only these vocabulary columns (token ids ``[k]``): the logits are
            then ``[..., k]`` in this order. For metrics that read a few answer tokens.
        grad: build the autograd graph (default: no_grad).
        grad_sites: sites whose gradients ``RunOutput.grad(site)`` returns after ``backward``.
        return_kv: also return every layer's keys and values (causal Hugging Face models).
    """
    adapter = model.adapter
    inp = model.prepare(inputs)
    offset = _check_resume(model, inp, start_at)
    stop_info = adapter.site_info(as_site(stop_at).name) if stop_at is not None else None
    if stop_info is not None and not stop_info.is_raw and not adapter.ordered:
        raise InputError(
            f"stop_at={stop_info.name!r}: this {model.arch} model's sites have no single order "
            "in the forward pass (an encoder-decoder's two stacks), so faithlens cannot tell "
            "which other sites a run stopped there reaches; run the whole model"
        )
    # A decoding run (no hidden state) starts at the embedding: every site is reached.
    start_layer = start_at.layer if start_at is not None and start_at.hidden is not None else None
    plan = _group_by_hook(
        model, inp, offset, interventions, cache, grad_sites, start_layer, stop_info
    )
    if grad_sites and not grad:
        raise InputError("grad_sites needs grad=True")
    state = HookState(batch=inp.batch_size, offset=offset, grad=grad)
    gather: Tensor | None = None
    if logits_at is not None and inp.ids is not None:
        gather = resolve_positions(
            logits_at,
            batch=inp.batch_size,
            rows=None,
            seq=int(inp.ids.shape[1]) - offset,
            last=inp.last,
            offset=offset,
            site="logits_at",
        )
    vocab_ctx: Any = _null()
    if logit_tokens is not None:
        vocab_ctx = vocab_subset(model, logit_tokens)
    model_in, call_kwargs = _call_arguments(model, inp, offset, start_at, return_kv)
    out_raw, stopped = _hooked_forward(
        model, inp, model_in, call_kwargs, plan, state, stop_info, gather, grad, start_at, vocab_ctx
    )
    return _collect(model, plan, state, out_raw, stopped, gather, offset, return_kv, logits_at)


def _check_resume(model: Model, inp: Inputs, start_at: Resume | None) -> int:
    """Step 1 (resolve and validate): check a :class:`Resume` against the model and the inputs;
    the first position the run computes (0 without one)."""
    if start_at is None:
        return 0
    batch = inp.batch_size
    offset = int(start_at.offset)
    if not model.adapter.supports_resume:
        raise InputError(f"{model.arch} models cannot resume a run at a layer")
    if not 0 <= start_at.layer <= model.n_layers:
        raise InputError(f"Resume layer {start_at.layer} out of range 0..{model.n_layers}")
    if offset:
        if not model.is_causal:
            raise InputError(
                "only causal models can resume from cached keys and values (offset > 0)"
            )
        if start_at.kv is None:
            raise InputError("Resume with offset > 0 needs the cached keys and values (kv=...)")
        if inp.ids is None or offset >= inp.ids.shape[1]:
            raise InputError(f"Resume offset {offset} leaves no position to recompute")
    if start_at.hidden is None:
        if start_at.layer != 0 or not offset:
            raise InputError(
                "Resume without a hidden state continues from cached keys and values: it "
                "needs layer=0 and offset > 0 (use Resume.decode(kv))"
            )
        assert start_at.kv is not None  # checked above (offset > 0)
        cached_rows = int(start_at.kv[0][0].shape[0])
        if cached_rows != batch:
            raise ShapeError(
                f"the cached keys and values hold {cached_rows} examples but the inputs "
                f"have {batch}"
            )
    elif start_at.hidden.shape[0] != batch:
        raise ShapeError(
            f"Resume hidden state has {start_at.hidden.shape[0]} examples but the inputs have {batch}"
        )
    want_seq = (inp.ids.shape[1] - offset) if inp.ids is not None else None
    if (
        want_seq is not None
        and start_at.hidden is not None
        and start_at.hidden.shape[1] != want_seq
    ):
        raise ShapeError(
            f"Resume hidden state covers {start_at.hidden.shape[1]} positions; the inputs "
            f"have {want_seq} positions from offset {offset}"
        )
    return offset


@dataclass(eq=False)
class _Plan:
    """What a run does at each hooked tensor, resolved before any work."""

    ops: dict[HookPoint, list[Op]] = field(default_factory=dict)
    # interventions to check for having run: (intervention, its site, its hook point)
    checks: list[tuple[Intervention, SiteInfo, HookPoint]] = field(default_factory=list)
    grad_names: list[str] = field(default_factory=list)


def _group_by_hook(
    model: Model,
    inp: Inputs,
    offset: int,
    interventions: Sequence[Intervention],
    cache: Sequence[SiteLike],
    grad_sites: Sequence[SiteLike],
    start_layer: int | None,
    stop_info: SiteInfo | None,
) -> _Plan:
    """Step 2 (group by hook point): resolve every intervention, cache and grad site (checking
    that the run reaches it and that each intervention fits its selection), grouped by the
    hooked tensor they share."""
    adapter = model.adapter
    batch = inp.batch_size
    plan = _Plan()

    def add(kind: str, site: Site, rows: Any, iv: Intervention | None = None) -> Selection:
        info = adapter.site_info(site.name)
        why = _reachable(info, model, start_layer, stop_info)
        if why is not None:
            what = "an intervention on" if kind == "intervene" else "caching"
            raise SiteError(f"{what} {site.name} can never happen: {why}")
        sel = _build_selection(model, site, info, rows, batch, inp, offset)
        plan.ops.setdefault(info.hook, []).append(Op(kind, sel, site.name, iv))
        return sel

    for iv in interventions:
        if not isinstance(iv, Intervention):
            raise InputError(
                f"interventions must be faithlens interventions (Zero, Patch, ...), not {type(iv).__name__}"
            )
        sel = add("intervene", iv.site_spec, iv.rows, iv)
        info = sel.info
        seq = _seq_for(model, info, inp, offset)
        width = _full_width(model, info)
        if width is not None:
            shape = sel.view_shape(batch, seq, width)
            assert info.width is not None
            abs_seq = seq + offset if seq is not None else None
            site_shape = (
                (batch, abs_seq, info.width) if abs_seq is not None else (batch, info.width)
            )
            iv.validate(tuple(shape), site_shape)
        plan.checks.append((iv, info, info.hook))
    for c in cache:
        add("cache", as_site(c), None)
    for g in grad_sites:
        gs = as_site(g)
        add("grad", gs, None)
        plan.grad_names.append(gs.name)
    return plan


def _call_arguments(
    model: Model, inp: Inputs, offset: int, start_at: Resume | None, return_kv: bool
) -> tuple[Any, dict[str, Any]]:
    """The module's inputs (``None``: a generic module's own arguments) and keyword arguments
    (the key/value cache of a resumed causal run)."""
    adapter = model.adapter
    call_kwargs: dict[str, Any] = {}
    if inp.ids is None:
        return None, call_kwargs
    mi: dict[str, Any] = {"input_ids": inp.ids[:, offset:]}
    if inp.mask is not None:
        mi["attention_mask"] = inp.mask
    mi.update(inp.kwargs)
    if adapter.takes_use_cache and model.is_causal:
        call_kwargs["use_cache"] = bool(return_kv or offset)
    if offset:
        assert start_at is not None and start_at.kv is not None
        call_kwargs[adapter.kv_kwarg] = adapter.make_kv_cache(start_at.kv)
    return mi, call_kwargs


def _hooked_forward(
    model: Model,
    inp: Inputs,
    model_in: Any,
    call_kwargs: dict[str, Any],
    plan: _Plan,
    state: HookState,
    stop_info: SiteInfo | None,
    gather: Tensor | None,
    grad: bool,
    start_at: Resume | None,
    vocab_ctx: Any,
) -> tuple[Any, bool]:
    """Steps 3-5: register the hooks, run the model's own forward, and remove the hooks in a
    ``finally`` (also when the run raises). The raw output, and whether a stop hook ended it."""
    adapter = model.adapter
    module = model.module
    handles: list[RemovableHandle] = []
    out_raw: Any = None
    stopped = False
    try:
        _register_hooks(handles, module, plan, state, stop_info, gather, adapter)
        ctx = torch.enable_grad() if grad else torch.no_grad()
        resume_ctx = (
            adapter.resumed(start_at.layer, start_at.hidden.to(model.device))
            if start_at is not None and start_at.hidden is not None
            else _null()
        )
        with ctx, resume_ctx, vocab_ctx:
            try:
                if model_in is None:
                    out_raw = module(*inp.args, **inp.kwargs)
                else:
                    out_raw = adapter.forward(module, model_in, **call_kwargs)
            except Stop:
                stopped = True
    finally:
        for h in handles:
            h.remove()
    return out_raw, stopped


def _register_hooks(
    handles: list[RemovableHandle],
    module: nn.Module,
    plan: _Plan,
    state: HookState,
    stop_info: SiteInfo | None,
    gather: Tensor | None,
    adapter: Adapter,
) -> None:
    """Step 3 (register hooks): one per hooked tensor, the stop hook and the logits gather,
    each appended to ``handles`` as soon as it is registered (so cleanup removes it)."""
    for hp, hp_ops in plan.ops.items():
        handles.append(register(module, hp, hp_ops, state, stop=False))
    if stop_info is not None:
        handles.append(register(module, stop_info.hook, [], state, stop=True))
    if gather is not None and adapter.unembed_module is not None:
        handles.append(gather_hook(module, adapter.unembed_module, gather))


def _collect(
    model: Model,
    plan: _Plan,
    state: HookState,
    out_raw: Any,
    stopped: bool,
    gather: Tensor | None,
    offset: int,
    return_kv: bool,
    logits_at: Any = None,
) -> RunOutput:
    """Step 6: check that every intervention ran, and gather the logits, keys and values,
    cache and gradient leaves into a :class:`RunOutput`."""
    adapter = model.adapter
    # Interventions whose hook never fired (raw module sites that the forward pass skips).
    for iv, _info, hp in plan.checks:
        if hp not in state.fired and not stopped:
            raise SiteError(
                f"the intervention {iv.describe()} never ran: module {hp.module!r} was not "
                "called in this forward pass"
            )
    logits: Tensor | None = None
    if not stopped:
        logits = adapter.logits_of(out_raw)
        if logits is not None and logits_at is not None and gather is None and logits.dim() == 2:
            # One output per example (an image classifier's class logits): position 0
            logits = logits[:, None]
        if logits is not None and gather is not None and adapter.unembed_module is None:
            rows = torch.arange(logits.shape[0], device=logits.device)[:, None]
            logits = logits[rows, gather.to(logits.device)]
    kv = adapter.kv_of(out_raw) if (return_kv and not stopped) else None
    result = RunOutput(logits=logits, cache=state.cache, raw=out_raw, kv=kv, offset=offset)
    for name in plan.grad_names:
        info = adapter.site_info(name)
        sel = next(
            op.selection for op in plan.ops[info.hook] if op.kind == "grad" and op.name == name
        )
        if info.hook in state.deltas:
            result._grads[name] = (state.deltas[info.hook], sel)
    return result


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


# Model.run (in models, below this module) calls the engine registered here.
use_engine(run)

__all__ = ["Resume", "RunOutput", "run"]
