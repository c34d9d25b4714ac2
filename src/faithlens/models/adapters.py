"""Architecture adapters: canonical site names on the real module tree.

An adapter never reimplements a model. It says which module's input or output each canonical
site is (a declarative :class:`Layout` per architecture), how heads are laid out in the
last dimension, how to resume a forward pass at a layer from a cached residual stream (by running
the model's own ``forward`` over the remaining layers), and where the unembedding is.

Supported: the Hugging Face families of ``layouts.py`` (mixture-of-experts: :mod:`.moe`; OPT:
:mod:`.opt`; encoder-decoders: :mod:`.encdec`), vision models (:mod:`.vision`), other Hugging
Face architectures through an inferred, verified layout (:mod:`.infer`), faithlens' zoo and any
``nn.Module`` by raw module paths (:class:`GenericAdapter`); ``docs/models.md`` has the tests.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InputError, SiteError, nearest
from . import layouts
from .layouts import ALIASES, FACTORIES, LAYOUTS, OWN_ADAPTERS, REFUSED, VARIANTS, Layout
from .sites import HookPoint, SiteInfo

RAW_PREFIX = "module:"


def raw_site(name: str, root: nn.Module) -> SiteInfo:
    """Resolve ``module:PATH`` (output) / ``module:PATH:in`` / ``module:PATH:in2`` (2nd input)."""
    body = name[len(RAW_PREFIX) :]
    io = "out"
    index = 0
    if ":" in body:
        body, spec = body.rsplit(":", 1)
        if spec.startswith("in"):
            io = "in"
            index = int(spec[2:]) if spec[2:] else 0
        elif spec.startswith("out"):
            index = int(spec[3:]) if spec[3:] else 0
        else:
            raise SiteError(
                f"raw site {name!r}: write module:PATH, module:PATH:in or module:PATH:out1"
            )
    names = dict(root.named_modules())
    if body not in names:
        close = nearest(body, [n for n in names if n])
        raise SiteError(f"no module named {body!r} in this model; nearest module paths: {close}")
    return SiteInfo(name=name, kind="module", hook=HookPoint(body, io, index), width=None)  # type: ignore[arg-type]


class Adapter:
    """Base adapter: knows the sites of one model. Subclasses fill in the site table."""

    arch: str = "generic"
    is_causal: bool = False
    ordered: bool = True  # the sites have one order in the forward pass (not encoder-decoders)
    n_layers: int = 0
    n_heads: int = 0
    n_kv_heads: int = 0
    d_model: int = 0
    d_head: int = 0
    d_mlp: int = 0
    d_vocab: int = 0

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self._sites: dict[str, SiteInfo] = {}

    # -- sites ---------------------------------------------------------------------------------
    @property
    def site_table(self) -> dict[str, SiteInfo]:
        return self._sites

    def site_info(self, name: str) -> SiteInfo:
        if name.startswith(RAW_PREFIX):
            return raw_site(name, self.module)
        info = self._sites.get(name)
        if info is None:
            raise SiteError(self._unknown(name))
        return info

    def _unknown(self, name: str) -> str:
        close = nearest(name, self._sites)
        extra = ""
        kind = name.split(".")[0]
        if kind in ("k", "v") and self.n_kv_heads and self.n_kv_heads != self.n_heads:
            extra = (
                f" This model uses grouped-query attention: key/value heads are numbered "
                f"0..{self.n_kv_heads - 1}, and query head H reads key/value head "
                f"H // {self.n_heads // self.n_kv_heads} (see Model.kv_head)."
            )
        if kind == "pattern":
            extra = " Attention patterns are sites after fl.models.patterns.expose_patterns."
        return (
            f"unknown site {name!r} on this {self.arch} model. Nearest valid names: {close}."
            f"{extra} Model.sites() lists them all; raw modules are 'module:PATH'."
        )

    # -- running -------------------------------------------------------------------------------
    def forward(self, module: nn.Module, inputs: Any, **kwargs: Any) -> Any:
        if isinstance(inputs, dict):
            return module(**inputs, **kwargs)
        if isinstance(inputs, tuple):
            return module(*inputs, **kwargs)
        return module(inputs, **kwargs)

    def logits_of(self, output: Any) -> Tensor | None:
        if isinstance(output, Tensor):
            return output
        if hasattr(output, "logits") and output.logits is not None:
            return output.logits
        if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
            return output[0]
        return None

    @property
    def unembed_module(self) -> str | None:
        """The module whose input is gathered when logits are wanted at a few positions only."""
        return None

    @property
    def supports_resume(self) -> bool:
        return False

    @property
    def qkv_layout(self) -> str:
        """How the query, key and value projections are stored: ``"separate"`` (one each), or
        fused into one tensor (``"gpt2"``, ``"neox"``), so a q/k/v site hooks the fused one."""
        return "separate"

    @property
    def takes_use_cache(self) -> bool:
        """Whether the module's ``forward`` takes ``use_cache`` (Hugging Face models)."""
        return False

    @contextlib.contextmanager
    def resumed(self, layer: int, hidden: Tensor) -> Iterator[None]:
        raise InputError(f"{self.arch} models cannot resume a run at a layer")
        yield  # pragma: no cover

    def make_kv_cache(self, kv: Sequence[tuple[Tensor, Tensor]]) -> Any:
        raise InputError(f"{self.arch} models do not take cached keys and values")

    @property
    def kv_kwarg(self) -> str:
        """The keyword the module's ``forward`` takes a key/value cache by: ``cache``
        (transformers >= 5.2x, which deprecates ``past_key_values`` for removal in 5.40) or
        ``past_key_values`` (older releases and modules that only know that name)."""
        try:
            params = inspect.signature(self.module.forward).parameters
        except (TypeError, ValueError):
            return "past_key_values"
        return "cache" if "cache" in params else "past_key_values"

    def kv_of(self, output: Any) -> list[tuple[Tensor, Tensor]] | None:
        return None

    # -- weights -------------------------------------------------------------------------------
    def o_proj(self, layer: int) -> tuple[Tensor, Tensor | None]:
        """The attention output projection of ``layer`` as (W [d_model, n_heads*d_head], bias)."""
        raise InputError(f"{self.arch} adapter does not expose attention output weights")

    def head_outputs(self, layer: int, z: Tensor) -> Tensor:
        """Per-head contributions to the attention output: ``z`` ``[..., n_heads*d_head]`` ->
        ``[..., n_heads, d_model]`` (without the output bias)."""
        w, _ = self.o_proj(layer)
        zh = z.reshape(*z.shape[:-1], self.n_heads, self.d_head)
        wh = w.reshape(w.shape[0], self.n_heads, self.d_head)
        return torch.einsum("...hd,mhd->...hm", zh, wh.to(zh))

    def unembed_weight(self) -> tuple[Tensor, Tensor | None]:
        raise InputError(f"{self.arch} adapter has no unembedding")

    def reader(self, name: str) -> tuple[Tensor, Tensor | None] | None:
        """The linear map that reads site ``name``: ``(weight [out, width], bias)``, or None
        when no single linear map reads it (e.g. the residual stream, which later layers also
        carry forward unchanged).

        Generic rule: a site that is the input of an ``nn.Linear`` (or a GPT-2 ``Conv1D``) is read
        by that layer's weight, restricted to the site's slice of the input (a head's columns of
        the attention output projection, the MLP neurons' columns of the down projection).
        """
        info = self.site_info(name)
        if info.hook.io != "in" or info.hook.index != 0:
            return None
        return _linear_reader(self.module, info.hook.module, info.start, info.stop)


def _linear_weight(mod: nn.Module) -> tuple[Tensor, Tensor | None] | None:
    """(weight [out, in], bias) of an ``nn.Linear`` or a GPT-2 style ``Conv1D`` (stored
    ``[in, out]``); None for any other module."""
    w = getattr(mod, "weight", None)
    if not isinstance(w, Tensor) or w.dim() != 2:
        return None
    b = getattr(mod, "bias", None)
    bias = b if isinstance(b, Tensor) else None
    if isinstance(mod, nn.Linear):
        return w, bias
    if type(mod).__name__ == "Conv1D":
        return w.t(), bias
    return None


def _linear_reader(
    root: nn.Module, path: str, start: int = 0, stop: int | None = None
) -> tuple[Tensor, Tensor | None] | None:
    mod = root.get_submodule(path) if path else root
    found = _linear_weight(mod)
    if found is None:
        return None
    w, b = found
    if start == 0 and (stop is None or stop == w.shape[1]):
        return w, b
    # A slice of the input (one head): the bias belongs to the whole layer, not to the slice.
    return w[:, start:stop], None


class GenericAdapter(Adapter):
    """Any ``nn.Module``: raw module paths, plus named aliases the user gives to ``fl.wrap``."""

    arch = "generic"

    def __init__(self, module: nn.Module, sites: dict[str, str] | None = None) -> None:
        super().__init__(module)
        for alias, target in (sites or {}).items():
            target = target if target.startswith(RAW_PREFIX) else RAW_PREFIX + target
            info = raw_site(target, module)
            self._sites[alias] = SiteInfo(name=alias, kind="module", hook=info.hook, width=None)

    def site_info(self, name: str) -> SiteInfo:
        if name in self._sites or name.startswith(RAW_PREFIX):
            return super().site_info(name)
        modules = [n for n, _ in self.module.named_modules() if n]
        close = nearest(name, [*self._sites, *(RAW_PREFIX + m for m in modules)])
        raise SiteError(
            f"unknown site {name!r}. A wrapped module names its sites by module path "
            f"('module:PATH', 'module:PATH:in') or by the aliases given to fl.wrap(sites=...). "
            f"Nearest: {close}"
        )


# --------------------------------------------------------------------------------------------
# Hugging Face transformers
# --------------------------------------------------------------------------------------------


def _cfg(config: Any, *names: str, default: Any = None) -> Any:
    for n in names:
        v = getattr(config, n, None)
        if v is not None:
            return v
    return default


class HFAdapter(Adapter):
    """A Hugging Face transformer described by a :class:`Layout`."""

    has_mlp: bool = True

    def __init__(self, module: nn.Module, layout: Layout) -> None:
        super().__init__(module)
        self.layout = layout
        self.arch = layout.arch
        self.is_causal = layout.causal
        cfg = module.config
        self.config: Any = cfg
        self.n_layers = int(_cfg(cfg, "num_hidden_layers", "n_layer"))
        self.n_heads = int(_cfg(cfg, "num_attention_heads", "n_head"))
        kv = layout.kv_heads if layout.kv_heads is not None else _cfg(cfg, "num_key_value_heads")
        self.n_kv_heads = int(kv if kv is not None else self.n_heads)
        self.d_model = int(_cfg(cfg, "hidden_size", "n_embd"))
        self.d_head = int(_cfg(cfg, "head_dim", default=self.d_model // self.n_heads))
        self.d_mlp = int(
            _cfg(cfg, "intermediate_size", "n_inner", "ffn_hidden_size", default=4 * self.d_model)
        )
        self.d_vocab = int(_cfg(cfg, "vocab_size", default=0))
        names = dict(module.named_modules())
        self._module_names = frozenset(names)
        self.prefix = f"{layout.base}." if layout.base and layout.base in names else ""
        if (
            self.prefix == ""
            and layout.base
            and not any(n.startswith(layout.layers) for n in names)
        ):
            raise InputError(f"this {layout.arch} model has no '{layout.base}.{layout.layers}'")
        heads = [h for h in (layout.head or "").split("|") if h and h in names]
        self.head_path: str | None = heads[0] if heads else None
        self.has_head = self.head_path is not None
        # Sliding-window layers: Hugging Face's own cache keeps only their last window of keys.
        self._sliding = layouts.has_sliding_layers(cfg)
        self._build_sites()

    # -- site table ----------------------------------------------------------------------------
    def _layer_path(self, layer: int, rel: str = "") -> str:
        base = f"{self.prefix}{self.layout.layers}.{layer}"
        return f"{base}.{rel}" if rel else base

    def _add(self, info: SiteInfo) -> None:
        self._sites[info.name] = info

    def _has(self, path: str) -> bool:
        """Whether the module tree has ``path`` (attention-only models have no MLP modules)."""
        return path in self._module_names

    def _io(self, layer: int, spec: str) -> HookPoint:
        """A layout entry as a hook point: ``PATH`` is the module's output, ``PATH:in`` its
        input (the first positional argument, or the ``hidden_states`` keyword)."""
        if spec.endswith(":in"):
            return HookPoint(self._layer_path(layer, spec[:-3]), "in", 0, "hidden_states")
        return HookPoint(self._layer_path(layer, spec), "out", 0)

    def mlp_norm_module(self, layer: int) -> str | None:
        """The module whose input is the residual stream the MLP of ``layer`` reads (its norm),
        or None for a model without MLP norms."""
        lo = self.layout
        rel = lo.mlp_norm or (lo.mlp_in if lo.mlp_in and not lo.mlp_in.endswith(":in") else None)
        return self._layer_path(layer, rel) if rel else None

    @property
    def post_norm(self) -> bool:
        """Whether attention and MLP outputs are normalised before they join the residual stream
        (Gemma 2/3): attn_out / mlp_out are additive, single heads are not."""
        return self.layout.post_norm

    def _build_sites(self) -> None:
        lo, d, dh = self.layout, self.d_model, self.d_head
        # A model without MLP modules (attention-only) gets no mlp_* / resid_mid sites: there
        # the residual after attention is resid_post.
        self.has_mlp = self._has(self._layer_path(0, lo.mlp_out)) if self.n_layers else False
        if not self.has_mlp:
            self.d_mlp = 0

        def add(name: str, kind: str, hook: HookPoint, width: int | None, **kw: Any) -> None:
            self._add(SiteInfo(name, kind, hook, width, **kw))

        add("embed", "embed", HookPoint(self.prefix + lo.embed, "out"), d)
        lp = self._layer_path
        for L in range(self.n_layers):
            add(
                f"resid_pre.{L}",
                "resid_pre",
                HookPoint(lp(L), "in", 0, "hidden_states"),
                d,
                layer=L,
            )
            add(f"resid_post.{L}", "resid_post", HookPoint(lp(L), "out", 0), d, layer=L)
            add(f"attn_out.{L}", "attn_out", HookPoint(lp(L, lo.attn_out), "out", 0), d, layer=L)
            if self.has_mlp:
                add(f"mlp_out.{L}", "mlp_out", HookPoint(lp(L, lo.mlp_out), "out", 0), d, layer=L)
                add(
                    f"mlp_post.{L}",
                    "mlp_post",
                    HookPoint(lp(L, lo.mlp_post), "in", 0),
                    self.d_mlp,
                    layer=L,
                )
            if lo.attn_in:
                add(f"attn_in.{L}", "attn_in", self._io(L, lo.attn_in), d, layer=L)
            if lo.mlp_in and self.has_mlp:
                add(f"mlp_in.{L}", "mlp_in", self._io(L, lo.mlp_in), d, layer=L)
            if lo.resid_mid and self.has_mlp:
                add(
                    f"resid_mid.{L}",
                    "resid_mid",
                    HookPoint(lp(L, lo.resid_mid), "in", 0),
                    d,
                    layer=L,
                )
            # Heads are slices of one tensor: the o_proj input (head outputs), the q/k/v
            # projection outputs (keys and values numbered by key/value head G).
            o_proj = HookPoint(lp(L, lo.o_proj), "in", 0)
            for H in range(self.n_heads):
                add(f"head.{L}.{H}", "head", o_proj, dh, start=H * dh, layer=L, head=H)
                q = HookPoint(lp(L, lo.q), "out", 0)
                add(f"q.{L}.{H}", "q", q, dh, start=self._qkv_start("q", H), layer=L, head=H)
            for G in range(self.n_kv_heads):
                for which, rel in (("k", lo.k), ("v", lo.v)):
                    hook = HookPoint(lp(L, rel), "out", 0)
                    start = self._qkv_start(which, G)
                    add(f"{which}.{L}.{G}", which, hook, dh, start=start, layer=L, head=G)
        if lo.final_norm and self._has(self.prefix + lo.final_norm):
            add("ln_final", "ln_final", HookPoint(self.prefix + lo.final_norm, "out", 0), d)
        if self.has_head:
            assert self.head_path is not None
            # Final-logit soft-capping (Gemma 2) is applied after the unembedding: the logits
            # site is then the model's own output, the capped logits.
            capped = getattr(self.config, "final_logit_softcapping", None) is not None
            hook = HookPoint("", "out", 0) if capped else HookPoint(self.head_path, "out", 0)
            add("logits", "logits", hook, self.d_vocab or None)
        elif lo.arch == "bert":
            # An encoder without a head: its 'logits' are the final hidden states.
            add("logits", "logits", HookPoint(self._layer_path(self.n_layers - 1), "out", 0), d)

    def _qkv_start(self, which: str, h: int) -> int:
        """Where query head (or key/value head) ``h`` starts in the q/k/v projection's output.

        ``gpt2``: ``[q heads | k heads | v heads]`` (GPT-2, Phi-3, Falcon multi-query).
        ``neox``: one block per key/value head, ``[its query heads | key | value]`` (GPT-NeoX,
        where each block is one head's ``[q | k | v]``; Falcon).
        """
        dh, nq, nkv = self.d_head, self.n_heads, self.n_kv_heads
        if self.layout.qkv == "separate":
            return h * dh
        if self.layout.qkv == "gpt2":
            block = {"q": 0, "k": nq, "v": nq + nkv}[which] * dh
            return block + h * dh
        if self.layout.qkv == "neox":
            r = nq // nkv  # query heads per key/value head
            if which == "q":
                return (h // r) * (r + 2) * dh + (h % r) * dh
            return h * (r + 2) * dh + (r if which == "k" else r + 1) * dh
        raise AssertionError(self.layout.qkv)

    # -- running -------------------------------------------------------------------------------
    @property
    def unembed_module(self) -> str | None:
        return self.head_path

    @property
    def supports_resume(self) -> bool:
        return True

    @property
    def qkv_layout(self) -> str:
        return self.layout.qkv

    @property
    def takes_use_cache(self) -> bool:
        return True

    def logits_of(self, output: Any) -> Tensor | None:
        if getattr(output, "logits", None) is not None:
            return output.logits
        if getattr(output, "last_hidden_state", None) is not None:
            return output.last_hidden_state
        return super().logits_of(output)

    @contextlib.contextmanager
    def resumed(self, layer: int, hidden: Tensor) -> Iterator[None]:
        """Run the model's own forward over layers ``layer..`` only, starting from ``hidden``.

        The layer list is swapped for its tail and the output of the embedding stage is replaced
        by ``hidden`` (the cached ``resid_pre.layer``); everything is restored on exit.
        """
        parent_path, _, attr = (self.prefix + self.layout.layers).rpartition(".")
        parent = self.module.get_submodule(parent_path) if parent_path else self.module
        original = getattr(parent, attr)
        embed_out = self.module.get_submodule(self.prefix + self.layout.embed_out)

        def replace(_m: nn.Module, _a: Any, out: Any) -> Any:
            want = tuple(out.shape[:-1]) if isinstance(out, Tensor) else None
            if want is not None and tuple(hidden.shape[:-1]) != want:
                raise InputError(
                    f"resumed hidden state has shape {tuple(hidden.shape)} but the inputs give "
                    f"{want} (batch, positions); pass the inputs the hidden state was cached on"
                )
            return hidden.to(out.dtype) if isinstance(out, Tensor) else hidden

        handle = embed_out.register_forward_hook(replace)
        setattr(parent, attr, nn.ModuleList(list(original)[layer:]))
        # Models with layers of different kinds (Gemma 2/3's sliding-window and global layers)
        # pick layer i's mask and rotary embedding from config.layer_types[i]: give the tail its
        # own kinds.
        types = getattr(self.config, "layer_types", None)
        swap_types = isinstance(types, list) and layer > 0 and len(set(types)) > 1
        if swap_types:
            assert isinstance(types, list)
            self.config.layer_types = types[layer:]
        try:
            yield
        finally:
            setattr(parent, attr, original)
            if swap_types:
                self.config.layer_types = types
            handle.remove()

    def forward(self, module: nn.Module, inputs: Any, **kwargs: Any) -> Any:
        # Sliding-window layers' own cache keeps only their last window of keys and values; a
        # run returning them (to resume at an earlier position) needs every position, so it
        # gets a cache that keeps them all (the attention mask still applies the window).
        if self._sliding and kwargs.get("use_cache") and self.kv_kwarg not in kwargs:
            from transformers import DynamicCache

            kwargs[self.kv_kwarg] = DynamicCache()
        return super().forward(module, inputs, **kwargs)

    def make_kv_cache(self, kv: Sequence[tuple[Tensor, Tensor]]) -> Any:
        if not self.is_causal:
            raise InputError(f"{self.arch} is bidirectional: a run cannot resume from cached keys")
        from transformers import DynamicCache

        data = [(k, v) for k, v in kv]
        if self._sliding:  # keep every position (see forward)
            return DynamicCache(ddp_cache_data=data)
        return DynamicCache(ddp_cache_data=data, config=self.config)

    def kv_of(self, output: Any) -> list[tuple[Tensor, Tensor]] | None:
        # ``cache`` first: reading ``past_key_values`` of a new ModelOutput warns (deprecated)
        cache = output.get("cache") if hasattr(output, "get") else None
        if cache is None:
            cache = getattr(output, "past_key_values", None)
        if cache is None:
            return None
        return [(layer.keys, layer.values) for layer in cache.layers]

    # -- weights -------------------------------------------------------------------------------
    def _linear(self, path: str, *, transposed: bool | None = None) -> tuple[Tensor, Tensor | None]:
        """(weight [out, in], bias) of a Linear, or of a GPT-2 Conv1D (stored [in, out])."""
        mod = self.module.get_submodule(path)
        w = mod.weight
        assert isinstance(w, Tensor)
        if self.layout.conv1d if transposed is None else transposed:
            w = w.t()
        b = getattr(mod, "bias", None)
        return w, b if isinstance(b, Tensor) else None

    def o_proj(self, layer: int) -> tuple[Tensor, Tensor | None]:
        return self._linear(self._layer_path(layer, self.layout.o_proj))

    def reader(self, name: str) -> tuple[Tensor, Tensor | None] | None:
        """See :meth:`Adapter.reader`. Also: ``attn_in.L`` is read by the stacked query, key
        and value projections, ``mlp_in.L`` by the MLP's input projections (gate and up)."""
        info = self.site_info(name)
        if info.kind in ("attn_in", "mlp_in") and info.layer is not None:
            lo = self.layout
            rels = (lo.q, lo.k, lo.v) if info.kind == "attn_in" else lo.mlp_in_proj
            mats, biases = [], []
            for rel in dict.fromkeys(rels):  # fused q/k/v appear once
                found = _linear_reader(self.module, self._layer_path(info.layer, rel))
                if found is None:
                    return None
                mats.append(found[0])
                biases.append(found[1])
            if not mats:
                return None
            bias = None
            if all(b is not None for b in biases):
                bias = torch.cat([b for b in biases if b is not None])
            return torch.cat(mats, 0), bias
        return super().reader(name)

    def unembed_weight(self) -> tuple[Tensor, Tensor | None]:
        if not self.has_head:
            raise InputError(f"this {self.arch} model has no language-model head")
        assert self.head_path is not None
        # lm_head is an nn.Linear on every supported architecture (GPT-2's too).
        return self._linear(self.head_path, transposed=False)


def hf_adapter(module: nn.Module, *, infer: str = "auto") -> Adapter:
    """The adapter for a Hugging Face model, chosen by ``config.model_type`` (an unknown one
    gets an inferred, verified layout: :func:`faithlens.models.infer.adapter_for_unknown`)."""
    from .infer import adapter_for_unknown, check_mode  # lazy: infer imports this module

    check_mode(infer)
    make = getattr(module, "faithlens_adapter", None)
    if callable(make):
        own = make()
        if not isinstance(own, Adapter):
            raise InputError(
                f"{type(module).__name__}.faithlens_adapter() returned a "
                f"{type(own).__name__}, not an Adapter; use fl.wrap(module)"
            )
        return own
    cfg = getattr(module, "config", None)
    model_type = getattr(cfg, "model_type", None)
    if model_type is None:
        raise InputError(
            f"{type(module).__name__} has no Hugging Face config; use fl.wrap(module) instead"
        )
    key = ALIASES.get(model_type, model_type)
    if key in REFUSED:
        raise InputError(
            f"faithlens cannot give exact canonical sites on Hugging Face model_type "
            f"{model_type!r}: {REFUSED[key]}. Use fl.wrap(model) and raw module sites "
            "('module:PATH')."
        )
    if key in FACTORIES:
        return FACTORIES[key](module)
    if key in ("bart", "t5"):  # encoder-decoders: two stacks, cross-attention; no Layout
        from .encdec import ENCDEC, EncDecAdapter

        return EncDecAdapter(module, ENCDEC[key])
    variant = VARIANTS.get(key)
    layout = variant(cfg) if variant is not None else LAYOUTS.get(key)
    if layout is None:
        return adapter_for_unknown(module, str(model_type), infer)
    if key in OWN_ADAPTERS:  # HFAdapter subclasses, in modules that import this one
        from .moe import MoEAdapter
        from .opt import OPTAdapter

        return {"moe": MoEAdapter, "opt": OPTAdapter}[OWN_ADAPTERS[key]](module, layout)
    return HFAdapter(module, layout)


AdapterFactory = Callable[[nn.Module], Adapter]
