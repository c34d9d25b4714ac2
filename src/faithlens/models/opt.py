"""OPT (Meta's Open Pre-trained Transformers), the pre-LN variant (OPT-125m, 1.3b and larger).

OPT's decoder layer flattens batch and positions into one axis before its MLP: its second norm
and ``fc1`` / ``fc2`` see ``[batch * pos, width]``. The MLP sites (``resid_mid``, ``mlp_in``,
``mlp_post``, ``mlp_out``) are those very tensors seen as ``[batch, pos, width]`` (a
:class:`~faithlens.models.sites.Flat` view; a changed value is written back flattened). OPT adds
its token and position embeddings outside any module, so no module's output is ``resid_pre.0``:
a run resumed at a layer replaces that layer's input instead (the embeddings are computed and
discarded). OPT-350m's post-LN variant, with its ``project_in`` / ``project_out``, is refused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from torch import Tensor, nn

from ..errors import InputError
from .adapters import HFAdapter
from .layouts import Layout
from .sites import Flat

# kinds whose tensors OPT's decoder layer holds flattened (after its reshape, before its view)
FLAT_KINDS = ("resid_mid", "mlp_in", "mlp_post", "mlp_out")


class OPTAdapter(HFAdapter):
    """OPT with the norm before attention and before the MLP (``do_layer_norm_before``)."""

    def __init__(self, module: nn.Module, layout: Layout) -> None:
        cfg: Any = module.config
        if not getattr(cfg, "do_layer_norm_before", True):
            raise InputError(
                "faithlens cannot give exact canonical sites on this OPT model: it normalises "
                "after attention and after the MLP (do_layer_norm_before=False, OPT-350m), so "
                "its residual stream is not a sum of component outputs and the MLP's input is "
                "not a residual-stream norm. Use fl.wrap(model, sites=...) with raw module sites"
            )
        width = getattr(cfg, "word_embed_proj_dim", None)
        if width is not None and int(width) != int(cfg.hidden_size):
            raise InputError(
                f"faithlens cannot give exact canonical sites on this OPT model: its embeddings "
                f"are {width} wide and projected to the residual width {cfg.hidden_size} "
                "(project_in / project_out). Use fl.wrap(model, sites=...) with raw module sites"
            )
        super().__init__(module, layout)

    def _build_sites(self) -> None:
        self.d_mlp = int(self.config.ffn_dim)
        super()._build_sites()
        for name, info in list(self._sites.items()):
            if info.kind in FLAT_KINDS:
                hook = replace(info.hook, kwarg=None, view=Flat(info.hook.io, info.hook.index))
                self._sites[name] = replace(info, hook=hook)

    def mlp_norm_site(self, layer: int) -> str:
        """The site of the residual stream the MLP of ``layer`` reads (its norm's input), for
        :class:`~faithlens.graph.TransformerGraph`: the flattened tensor as a canonical site."""
        return f"resid_mid.{layer}"

    @contextlib.contextmanager
    def resumed(self, layer: int, hidden: Tensor) -> Iterator[None]:
        """Run OPT's own forward over layers ``layer..`` only: the layer list is swapped for its
        tail and the tail's first input (the final norm's, past the last layer) is ``hidden``."""
        decoder = self.module.get_submodule(self.prefix.rstrip("."))
        original = decoder.get_submodule("layers")
        assert isinstance(original, nn.ModuleList)
        target: nn.Module
        if layer < len(original):
            target = original[layer]
        else:
            target = self.module.get_submodule(self.prefix + str(self.layout.final_norm))

        def swap(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            x = args[0] if args else kwargs["hidden_states"]
            if tuple(hidden.shape[:-1]) != tuple(x.shape[:-1]):
                raise InputError(
                    f"resumed hidden state has shape {tuple(hidden.shape)} but the inputs give "
                    f"{tuple(x.shape[:-1])} (batch, positions); pass the inputs the hidden state "
                    "was cached on"
                )
            new = hidden.to(x.dtype)
            if args:
                return (new, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": new}

        # prepended: before any hook of the run on the same module (resid_pre.layer)
        handle = target.register_forward_pre_hook(swap, with_kwargs=True, prepend=True)
        decoder.layers = nn.ModuleList(list(original)[layer:])
        try:
            yield
        finally:
            decoder.layers = original
            handle.remove()


__all__ = ["FLAT_KINDS", "OPTAdapter"]
