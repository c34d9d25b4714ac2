"""Mixture-of-experts language models (Mixtral, Qwen2-MoE, Qwen3-MoE): the dense model's
canonical sites plus each expert's output and the router's weights.

In these Hugging Face models an MLP block holds a router (``mlp.gate``), which picks ``top_k``
experts for each token and weighs them, and the experts (``mlp.experts``), whose weights are
stored as stacked tensors and which see the tokens flattened to ``[batch * pos, width]``. No
module returns one expert's output, so two sites are :class:`~faithlens.models.sites.View`\\ s of
the experts' call:

* ``router.L`` (``[batch, pos, n_experts]``): the weight each expert receives at each token, zero
  for the experts not chosen (after top-k and, where the model does it, renormalisation). It is
  read from the experts' input; writing it routes each token to the ``top_k`` experts of largest
  written weight, with those weights.
* ``expert_out.L.E`` (``[batch, pos, d_model]``): expert ``E``'s weighted output at each token
  (zero where it is not chosen); the routed experts' outputs sum to the experts' output. They are
  computed by calling the experts' own ``forward`` with all other experts' weights set to zero;
  a changed value is added to the model's own output as the difference.

Neither changes a run that does not intervene on it: the model's own forward is untouched (exact
parity). ``mlp_post`` (one MLP's neurons) is not offered on a layer with experts; a dense layer
of the same model (Qwen-MoE's ``mlp_only_layers``) keeps it. Path-level methods
(:class:`~faithlens.graph.TransformerGraph`) see the whole MLP block, router, experts and
shared expert included, as one node: experts are parts of it, not nodes of their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import SiteError
from .adapters import HFAdapter
from .layouts import Layout
from .sites import Call, HookPoint, SiteInfo, View

EXPERTS = "mlp.experts"  # relative to a layer: the routed experts of a sparse MLP block


def _expert_args(call: Call) -> tuple[Tensor, Tensor, Tensor]:
    """(hidden states [tokens, width], chosen experts [tokens, k], their weights [tokens, k])."""
    if len(call.args) < 3:
        raise SiteError(
            f"the experts module {type(call.module).__name__} was not called as "
            "experts(hidden_states, top_k_index, top_k_weights); its router and expert sites "
            "cannot be read"
        )
    hidden, index, weights = call.args[:3]
    return hidden, index, weights


@dataclass(frozen=True)
class RouterWeights(View):
    """``router.L``: the experts' routing as dense weights ``[batch, pos, n_experts]``."""

    n_experts: int

    def expose(self, call: Call) -> Tensor:
        _, index, weights = _expert_args(call)
        dense = weights.new_zeros(index.shape[0], self.n_experts).scatter(1, index, weights)
        return dense.reshape(call.batch, -1, self.n_experts)

    def absorb(self, call: Call, old: Tensor, new: Tensor) -> Any:
        hidden, index, weights = _expert_args(call)
        flat = new.reshape(-1, self.n_experts)
        values, chosen = flat.topk(index.shape[1], dim=-1)
        return (hidden, chosen.to(index.dtype), values.to(weights.dtype), *call.args[3:])


@dataclass(frozen=True)
class ExpertOutputs(View):
    """``expert_out.L.E``: every expert's weighted output, ``[batch, pos, n_experts * d_model]``
    (expert E's is the slice ``E * d_model:(E + 1) * d_model``)."""

    n_experts: int

    def expose(self, call: Call) -> Tensor:
        hidden, index, weights = _expert_args(call)
        out = call.output
        assert isinstance(out, Tensor)
        forward = call.module.forward  # the module's own computation, without hooks
        parts = out.new_zeros(out.shape[0], self.n_experts, out.shape[-1])
        for e in range(self.n_experts):
            routed = index == e
            tokens = routed.any(-1).nonzero().flatten()
            if tokens.numel() == 0:
                continue
            only = torch.where(routed[tokens], weights[tokens], torch.zeros_like(weights[tokens]))
            parts[tokens, e] = forward(hidden[tokens], index[tokens], only).to(out.dtype)
        return parts.reshape(call.batch, -1, self.n_experts * out.shape[-1])

    def absorb(self, call: Call, old: Tensor, new: Tensor) -> Any:
        out = call.output
        assert isinstance(out, Tensor)
        change = (new - old).reshape(out.shape[0], self.n_experts, out.shape[-1]).sum(1)
        return out + change.to(out.dtype)


class MoEAdapter(HFAdapter):
    """A Hugging Face mixture-of-experts decoder: its dense layout plus ``router.L`` and
    ``expert_out.L.E`` on every layer with routed experts."""

    def __init__(self, module: nn.Module, layout: Layout) -> None:
        cfg = module.config
        n = getattr(cfg, "num_local_experts", None) or getattr(cfg, "num_experts", None)
        self.n_experts = int(n or 0)
        self.top_k = int(getattr(cfg, "num_experts_per_tok", 0) or 0)
        super().__init__(module, layout)

    def moe_layers(self) -> list[int]:
        """The layers whose MLP block routes tokens to experts."""
        return [L for L in range(self.n_layers) if self._has(self._layer_path(L, EXPERTS))]

    def _build_sites(self) -> None:
        super()._build_sites()
        moe = set(self.moe_layers())
        table, self._sites = self._sites, {}
        for name, info in table.items():
            if info.layer in moe and info.kind == "mlp_post":
                continue  # no single MLP: its neurons are the experts'
            if info.layer in moe and info.kind == "mlp_out":
                self._add_experts(info.layer)
            self._sites[name] = info

    def _add_experts(self, layer: int) -> None:
        path, d, n = self._layer_path(layer, EXPERTS), self.d_model, self.n_experts
        router = HookPoint(path, "in", 1, view=RouterWeights(n))
        self._add(SiteInfo(f"router.{layer}", "router", router, n, layer=layer))
        outputs = HookPoint(path, "out", 0, view=ExpertOutputs(n))
        for e in range(n):
            self._add(
                SiteInfo(
                    f"expert_out.{layer}.{e}",
                    "expert_out",
                    outputs,
                    d,
                    start=e * d,
                    layer=layer,
                    full=n * d,
                )
            )

    def reader(self, name: str) -> tuple[Tensor, Tensor | None] | None:
        """See :meth:`HFAdapter.reader`; on a layer with experts no single linear map reads
        ``mlp_in`` (the router and every expert do)."""
        info = self.site_info(name)
        if info.kind == "mlp_in" and info.layer in self.moe_layers():
            return None
        return super().reader(name)


__all__ = ["EXPERTS", "ExpertOutputs", "MoEAdapter", "RouterWeights"]
