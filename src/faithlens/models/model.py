"""``faithlens.Model``: a wrapped module, its adapter, its tokenizer, and ``run``."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from .. import validate
from ..errors import InputError, SiteError
from .adapters import RAW_PREFIX, Adapter, GenericAdapter, hf_adapter
from .sites import KINDS, SITE_GROUPS, Site, SiteInfo, SiteLike, as_site
from .vision import ConvAdapter

if TYPE_CHECKING:
    from ..interventions import Intervention
    from ..runs import RunOutput


@dataclass(frozen=True, eq=False)
class Inputs:
    """A batch ready for a model: token ids with their attention mask, or raw tensors.

    ``ids`` / ``mask`` are ``[batch, seq]`` for language models (right-padded); ``args`` holds
    positional tensors for generic modules; ``kwargs`` extra keyword arguments.
    """

    ids: Tensor | None = None
    mask: Tensor | None = None
    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        if self.ids is not None:
            return int(self.ids.shape[0])
        for a in self.args:
            if isinstance(a, Tensor):
                return int(a.shape[0])
        raise InputError("these inputs hold no tensor to take a batch size from")

    @property
    def seq_len(self) -> int | None:
        return int(self.ids.shape[1]) if self.ids is not None else None

    @property
    def last(self) -> Tensor | None:
        """Index of each example's last real (non-padding) token, ``[batch]``."""
        if self.ids is None:
            return None
        if self.mask is None:
            return torch.full((self.ids.shape[0],), self.ids.shape[1] - 1, dtype=torch.long)
        lengths = self.mask.long().sum(-1)
        return (lengths - 1).clamp(min=0)

    def select(self, rows: Tensor | slice) -> Inputs:
        """The same inputs restricted to some examples."""

        def pick(t: Any) -> Any:
            return t[rows] if isinstance(t, Tensor) else t

        return Inputs(
            ids=pick(self.ids),
            mask=pick(self.mask),
            args=tuple(pick(a) for a in self.args),
            kwargs={k: pick(v) for k, v in self.kwargs.items()},
        )

    def repeat(self, times: int) -> Inputs:
        """Stack ``times`` copies along the batch (condition-major: copy c is rows c*n..)."""

        def rep(t: Any) -> Any:
            if not isinstance(t, Tensor):
                return t
            return t.repeat(times, *([1] * (t.dim() - 1)))

        return Inputs(
            ids=rep(self.ids),
            mask=rep(self.mask),
            args=tuple(rep(a) for a in self.args),
            kwargs={k: rep(v) for k, v in self.kwargs.items()},
        )

    def to(self, device: torch.device | str) -> Inputs:
        def mv(t: Any) -> Any:
            return t.to(device) if isinstance(t, Tensor) else t

        return Inputs(
            ids=mv(self.ids),
            mask=mv(self.mask),
            args=tuple(mv(a) for a in self.args),
            kwargs={k: mv(v) for k, v in self.kwargs.items()},
        )


class Model:
    """A model faithlens can intervene on. Build one with ``fl.load`` or ``fl.wrap``.

    The wrapped module is never modified permanently: hooks live only for the duration of a run.
    """

    def __init__(
        self,
        module: nn.Module,
        adapter: Adapter,
        tokenizer: Any = None,
        name: str | None = None,
        prepend_bos: bool = False,
    ) -> None:
        self.module = module
        self.adapter = adapter
        self.tokenizer = tokenizer
        self.name = name or type(module).__name__
        #: How ``fl.load`` loaded it (a name like ``"zoo:induction"`` or an absolute path), so
        #: that worker processes can load the same model (:mod:`faithlens.distributed`); ``None``
        #: for a module built or wrapped in this process.
        self.spec: str | None = None
        #: Whether :meth:`tokenize` lets a causal LM's tokenizer add its special tokens (Gemma
        #: is trained with ``<bos>`` first, and without it predicts poorly).
        self.prepend_bos = prepend_bos
        module.eval()

    # -- description ---------------------------------------------------------------------------
    def __repr__(self) -> str:
        a = self.adapter
        if a.n_layers and a.n_heads:
            return (
                f"faithlens.Model({self.name!r}, arch={a.arch}, layers={a.n_layers}, heads={a.n_heads}"
                f"{f'/{a.n_kv_heads} kv' if a.n_kv_heads != a.n_heads else ''}, d_model={a.d_model},"
                f" device={self.device}, dtype={self.dtype})"
            )
        return f"faithlens.Model({self.name!r}, arch={a.arch}, device={self.device})"

    @property
    def arch(self) -> str:
        return self.adapter.arch

    @property
    def n_layers(self) -> int:
        return self.adapter.n_layers

    @property
    def n_heads(self) -> int:
        return self.adapter.n_heads

    @property
    def n_kv_heads(self) -> int:
        return self.adapter.n_kv_heads

    @property
    def d_model(self) -> int:
        return self.adapter.d_model

    @property
    def d_head(self) -> int:
        return self.adapter.d_head

    @property
    def d_mlp(self) -> int:
        return self.adapter.d_mlp

    @property
    def is_causal(self) -> bool:
        return self.adapter.is_causal

    @property
    def device(self) -> torch.device:
        for p in self.module.parameters():
            return p.device
        return torch.device("cpu")

    @property
    def device_map(self) -> dict[str, str] | None:
        """Where each module lives when the model is spread over devices (``fl.load(...,
        device_map=...)``: module name -> device), else ``None``; :attr:`device` is then the
        device of the first parameter (where inputs go)."""
        placed = getattr(self.module, "hf_device_map", None)
        if not isinstance(placed, dict):
            return None
        return {str(k): str(v) for k, v in placed.items()}

    @property
    def dtype(self) -> torch.dtype:
        for p in self.module.parameters():
            return p.dtype
        return torch.float32

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> Model:
        if device is not None:
            device = validate.device(device, "device")
            if self.device_map is not None:
                raise validate.fail(
                    "device",
                    device,
                    "cannot move a model spread over devices by device_map",
                    "load it again with fl.load(..., device=...) or another device_map",
                )
        self.module.to(device=device, dtype=dtype)
        return self

    def kv_head(self, head: int) -> int:
        """The key/value head that query head ``head`` reads (grouped-query attention)."""
        if not 0 <= head < self.n_heads:
            raise SiteError(f"head {head} out of range: this model has {self.n_heads} heads")
        return head // (self.n_heads // self.n_kv_heads)

    # -- sites ---------------------------------------------------------------------------------
    def sites(self, kind: str | None = None, layer: int | None = None) -> list[str]:
        """Canonical site names, optionally filtered by kind (``"head"``, ``"mlp_out"``...) or
        group (``"mlp"``, ``"resid"``) and by layer."""
        table = self.adapter.site_table
        if kind is not None:
            want = SITE_GROUPS.get(kind, kind)
            own = {i.kind for i in table.values()}  # a vision adapter's kinds ("block"...)
            if want not in KINDS and want != "module" and want not in own:
                raise SiteError(f"unknown site kind {kind!r}; kinds are {list(KINDS)}")
        else:
            want = None
        if layer is not None:
            layers = sorted({i.layer for i in table.values() if i.layer is not None})
            if not layers:
                raise validate.fail(
                    "layer", layer, f"this {self.arch} model has no layered sites", "omit layer"
                )
            layer = validate.int_in_range(
                "layer",
                layer,
                layers[0],
                layers[-1],
                fix=f"this model has layers {layers[0]}..{layers[-1]}",
            )
        out = []
        for name, info in table.items():
            if want is not None and info.kind != want:
                continue
            if layer is not None and info.layer != layer:
                continue
            out.append(name)
        return out

    def site_info(self, site: SiteLike) -> SiteInfo:
        return self.adapter.site_info(as_site(site).name)

    def reader(self, site: SiteLike) -> tuple[Tensor, Tensor | None] | None:
        """The linear map reading ``site`` (``(weight [out, width], bias)``) or None; see
        :meth:`faithlens.models.adapters.Adapter.reader`."""
        return self.adapter.reader(as_site(site).name)

    def site(self, name: str, positions: Any = None, units: Any = None) -> Site:
        """A site with a position / unit selection; checks that the name exists."""
        self.site_info(name)
        return Site(name, positions, units)

    # -- tokens --------------------------------------------------------------------------------
    def require_tokenizer(self) -> Any:
        """The model's tokenizer; raises (asking for token ids) when it has none."""
        if self.tokenizer is None:
            raise InputError(
                f"{self.name} has no tokenizer; pass token ids (a LongTensor) instead of strings"
            )
        return self.tokenizer

    def tokenize(self, texts: str | Sequence[str]) -> Inputs:
        """Right-padded token ids and attention mask for a batch of strings."""
        tok = self.require_tokenizer()
        if isinstance(texts, str):
            texts = [texts]
        if len(texts) == 0:
            raise InputError("no prompts given")
        pad = tok.pad_token_id
        enc = [tok(t, add_special_tokens=self._add_special)["input_ids"] for t in texts]
        if pad is None:
            pad = tok.eos_token_id if tok.eos_token_id is not None else 0
        width = max(len(e) for e in enc)
        ids = torch.full((len(enc), width), int(pad), dtype=torch.long)
        mask = torch.zeros((len(enc), width), dtype=torch.long)
        for i, e in enumerate(enc):
            ids[i, : len(e)] = torch.tensor(e, dtype=torch.long)
            mask[i, : len(e)] = 1
        return Inputs(ids=ids, mask=mask)

    @property
    def _add_special(self) -> bool:
        # Causal LMs: no special tokens unless the model needs its <bos> (``prepend_bos``, set by
        # fl.load for Gemma); encoders need [CLS] ... [SEP].
        return self.prepend_bos or not self.is_causal

    def to_tokens(self, texts: str | Sequence[str]) -> Tensor:
        return self.tokenize(texts).ids  # type: ignore[return-value]

    def to_str_tokens(self, ids: Tensor | Sequence[int]) -> list[str]:
        tok = self.require_tokenizer()
        seq = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        return [tok.decode([i]) for i in seq]

    def token_id(self, text: str) -> int:
        """The id of ``text`` if it is exactly one token; a clear error otherwise."""
        tok = self.require_tokenizer()
        ids = tok(text, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            pieces = [tok.decode([i]) for i in ids]
            raise InputError(
                f"answer {text!r} is {len(ids)} tokens for this tokenizer ({pieces}); answers "
                "must be single tokens (mind the leading space: ' Mary', not 'Mary')"
            )
        return int(ids[0])

    def prepare(self, inputs: Any) -> Inputs:
        """Normalise strings, token tensors, tokenizer outputs or raw tensors into ``Inputs``."""
        if isinstance(inputs, Inputs):
            out = inputs
        elif isinstance(inputs, str) or (
            isinstance(inputs, Sequence) and inputs and all(isinstance(x, str) for x in inputs)
        ):
            out = self.tokenize(inputs)
        elif isinstance(inputs, Mapping):
            ids = inputs.get("input_ids")
            mask = inputs.get("attention_mask")
            rest = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
            out = Inputs(ids=ids, mask=mask, kwargs=rest)
        elif isinstance(inputs, Tensor):
            if self.adapter.site_table and not inputs.is_floating_point() and inputs.dim() == 2:
                out = Inputs(ids=inputs.long(), mask=torch.ones_like(inputs, dtype=torch.long))
            else:
                out = Inputs(args=(inputs,))
        elif isinstance(inputs, tuple):
            out = Inputs(args=inputs)
        else:
            raise InputError(
                f"cannot run on inputs of type {type(inputs).__name__}: pass strings, a tensor of "
                "token ids, a tokenizer output, or the module's input tensors"
            )
        # Left padding shifts every position, unless the caller gives the position ids itself
        # (as the decoding loop of faithlens.representations.generate does).
        explicit_positions = "position_ids" in out.kwargs
        if (
            out.mask is not None
            and out.mask.dim() == 2
            and out.mask.shape[1] > 1
            and not explicit_positions
        ):
            m = out.mask.long()
            if bool((m[:, 1:] > m[:, :-1]).any()):
                bad = (m[:, 1:] > m[:, :-1]).any(-1).nonzero().flatten().tolist()[:8]
                raise InputError(
                    f"examples {bad} are left-padded; faithlens needs right padding (real tokens "
                    "first, then padding) so that positions and rotary embeddings stay aligned. "
                    "Use model.tokenize(texts), which pads on the right (or pass explicit "
                    "position_ids in Inputs.kwargs)."
                )
        return out.to(self.device)

    # -- running -------------------------------------------------------------------------------
    def run(
        self,
        inputs: Any,
        interventions: Sequence[Intervention] = (),
        cache: Sequence[SiteLike] = (),
        **options: Any,
    ) -> RunOutput:
        """Run the model with interventions, caching the activations asked for: the same as
        :func:`faithlens.runs.run` (``model.run(x, ...)`` is ``fl.run(model, x, ...)``; see it
        for the keyword ``options``: ``start_at``, ``stop_at``, ``logits_at``, ``logit_tokens``,
        ``grad``, ``grad_sites``, ``return_kv``)."""
        if _ENGINE is None:  # importing any faithlens module imports faithlens.runs first
            raise RuntimeError("faithlens.runs is not imported, so no engine can run the model")
        return _ENGINE(self, inputs, interventions, cache, **options)


#: What :meth:`Model.run` calls: :func:`faithlens.runs.run` (``run(model, inputs, interventions,
#: cache, **options)``), which sits above ``models`` in the stack and registers itself with
#: :func:`use_engine` when it is imported, so that ``models`` imports nothing above it.
RunEngine = Callable[..., "RunOutput"]

_ENGINE: RunEngine | None = None


def use_engine(engine: RunEngine) -> None:
    """Make ``engine`` the one :meth:`Model.run` calls (``faithlens.runs`` does this)."""
    global _ENGINE
    _ENGINE = engine


def wrap(
    module: nn.Module,
    tokenizer: Any = None,
    *,
    sites: Mapping[str, str] | None = None,
    name: str | None = None,
    adapter: Adapter | None = None,
    example: Any = None,
    infer: str = "auto",
) -> Model:
    """Wrap any ``nn.Module``.

    Hugging Face models of a supported architecture get the canonical sites; any other module is
    addressed by raw module paths (``module:PATH``, ``module:PATH:in``) and by the aliases in
    ``sites`` (``{"hidden": "layers.1"}``). With ``example`` (one batch of the module's input
    tensors, e.g. ``images[:1]``) the aliases are the sites of a
    :class:`~faithlens.models.vision.ConvAdapter`: a convolutional output ``[batch, channels,
    h, w]`` is a site of ``channels`` units at ``h * w`` positions. A Hugging Face architecture
    without a hand-written layout gets an inferred one, verified on load (``infer``: ``"auto"``
    falls back to raw module sites with a warning if the check fails, ``"strict"`` refuses,
    ``"off"`` never infers; see :func:`faithlens.models.adapters.hf_adapter`).
    """
    if not isinstance(module, nn.Module):
        raise InputError(f"fl.wrap needs a torch.nn.Module, not {type(module).__name__}")
    if adapter is None and example is not None:
        if not sites:
            raise validate.fail(
                "example",
                type(example).__name__,
                "example= reads the shapes of the modules named in sites=, and none is named",
                'give sites={"conv1": "features.0", ...} as well',
            )
        adapter = ConvAdapter(module, dict(sites), example)
    if adapter is None:
        make = getattr(module, "faithlens_adapter", None)
        if callable(make):
            adapter = make()
        elif getattr(getattr(module, "config", None), "model_type", None) is not None and not sites:
            adapter = hf_adapter(module, infer=infer)
        else:
            adapter = GenericAdapter(module, dict(sites or {}))
    return Model(module, adapter, tokenizer=tokenizer, name=name)


__all__ = ["RAW_PREFIX", "Inputs", "Model", "wrap"]
