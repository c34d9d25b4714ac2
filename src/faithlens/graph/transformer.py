"""The component graph of a pre-LN transformer: the residual stream as a sum of components.

:class:`TransformerGraph` has nodes ``embed`` (the input: token + position embeddings,
``resid_pre.0``), one node per attention head ``head.L.H`` (its contribution through the output
projection) with separate ``q``, ``k`` and ``v`` input ports, one node per MLP ``mlp.L``, and the
output ``logits``. Every port reads the sum of the outputs of the components before it, so a
receiver's input can be assembled as ``resid(base datum) - sender(base) + sender(copy)``. It is
built from canonical sites only, so any adapter that exposes them works; the decomposition is
checked numerically when the graph is built.

This module holds the structure, the sites each node reads and writes, running the model from a
layer on, and the slow per-node path (:meth:`TransformerGraph.compute`, ``node_value``,
``port_input``) used by references and checks. The batched evaluator of plans is
:mod:`.evaluate_transformer`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..errors import InputError, SiteError
from ..interventions import Intervention, Patch
from ..models.model import Inputs, Model
from ..runs import Resume, RunOutput
from . import evaluate_transformer
from .evaluate import DataFeed, EvalStats, Plan, Uniform
from .nodes import GraphNode, LinearPart, PhiPart, ResidualPart
from .structure import ComponentGraph


def _close(a: Tensor, b: Tensor, rtol: float = 1e-4, atol: float = 1e-5) -> bool:
    a64, b64 = a.double(), b.double()
    scale = float(b64.abs().max()) if b64.numel() else 0.0
    return bool((a64 - b64).abs().max() <= atol + rtol * max(scale, 1.0))


def _as_inputs(fields: Mapping[str, Tensor], ids: str, mask: str) -> Inputs:
    if ids not in fields:
        raise InputError(f"the data have no {ids!r} field holding token ids")
    return Inputs(ids=fields[ids], mask=fields.get(mask))


class TransformerGraph(ComponentGraph):
    """The residual stream of a pre-LN transformer as a sum of component outputs.

    Args:
        model: any faithlens model whose adapter exposes the canonical sites (``resid_pre.L``,
            ``head.L.H``, ``q/k/v.L.H``, ``attn_out.L``, ``mlp_in.L``, ``mlp_out.L``,
            ``resid_post.L``) and the attention output weights (``adapter.o_proj``).
        split_heads: one node per head (True) or one ``attn.L`` node per layer (False).
        split_qkv: give each head separate ``q``, ``k``, ``v`` ports (True) or one ``in`` port.
        ids, mask: the names of the token-id and attention-mask fields in the data.

    Raises :class:`~faithlens.errors.InputError` when the residual stream is not a sum of
    component outputs (post-LN models such as BERT: use a :class:`LayerGraph`).
    """

    kind = "transformer"

    def __init__(
        self,
        model: Model,
        *,
        split_heads: bool = True,
        split_qkv: bool = True,
        ids: str = "ids",
        mask: str = "mask",
    ) -> None:
        super().__init__(model)
        a = model.adapter
        if not a.n_layers or not a.n_heads:
            raise InputError(
                f"{model.name} has no transformer layers that faithlens knows of; use "
                "LayerGraph(model, ...) for a graph of its modules"
            )
        if not getattr(a, "ordered", True):
            raise InputError(
                f"{model.name} ({a.arch}) is an encoder-decoder: its decoder reads the encoder "
                "through cross-attention, which a TransformerGraph has no edges for, so path "
                "patching and scrubbing would not be exact. Patch, ablate or cache its enc./dec. "
                "sites with fl.patch / fl.run"
            )
        if split_qkv and not split_heads:
            raise InputError("split_qkv needs split_heads=True (Q/K/V ports belong to heads)")
        self.n_layers = a.n_layers
        self.n_heads = a.n_heads
        self.n_kv = a.n_kv_heads or a.n_heads
        self.split_heads = split_heads
        self.split_qkv = split_qkv
        self.ids_field, self.mask_field = ids, mask
        self.positions = True
        # Attention-only models (faithlens' zoo) have no MLP modules and hence no mlp sites.
        self.has_mlp = bool(getattr(a, "has_mlp", True))
        self.mlp_norm_input: list[str] = []
        if split_heads and getattr(a, "post_norm", False):
            raise InputError(
                f"{model.name} ({a.arch}) normalises each attention block's output (a post-"
                "attention norm) before adding it to the residual stream: single heads are not "
                "additive components of the residual stream, so head nodes (path patching, "
                "head-level scrubbing) would not be exact. Attention blocks and MLPs are: build "
                "TransformerGraph(model, split_heads=False, split_qkv=False)"
            )
        for L in range(self.n_layers if self.has_mlp else 0):
            try:
                info = a.site_info(f"mlp_in.{L}")
            except SiteError as e:
                raise InputError(
                    f"{model.name}: a TransformerGraph needs the canonical site mlp_in.{L} (the "
                    "pre-norm MLP's normalised input), which this adapter does not expose. Post-LN "
                    "models such as BERT are not a sum of component outputs; build a LayerGraph "
                    "of their layers instead (LayerGraph.chain)"
                ) from e
            norm_site = getattr(a, "mlp_norm_site", None)  # a flattened norm input (OPT)
            if callable(norm_site):
                self.mlp_norm_input.append(norm_site(L))
                continue
            norm = getattr(a, "mlp_norm_module", None)
            path = norm(L) if callable(norm) else info.hook.module
            self.mlp_norm_input.append(
                f"module:{path if path is not None else info.hook.module}:in"
            )
        self.parallel = self._probe()
        self._build()

    def node(self, name: str) -> GraphNode:
        kind, _, rest = name.partition(".")
        if kind in ("expert_out", "router") and name not in self.nodes:
            layer = rest.split(".")[0]
            raise SiteError(
                f"{name!r} is a part of layer {layer}'s mixture-of-experts MLP block, which this "
                f"graph has as one node, 'mlp.{layer}' (router, experts and any shared expert "
                f"together): path-level methods send and receive along the block. Patch, ablate "
                f"or cache {name!r} itself with fl.patch / fl.run"
            )
        return super().node(name)

    # -- structure -----------------------------------------------------------------------------
    def _build(self) -> None:
        n = self.n_layers
        self.inputs = ("embed",)
        self.output = "logits"
        self._add(GraphNode("embed", "input", (), 0), {})
        before: list[str] = ["embed"]
        hports = ("q", "k", "v") if self.split_qkv else ("in",)
        for L in range(n):
            heads: list[str] = []
            if self.split_heads:
                for H in range(self.n_heads):
                    name = f"head.{L}.{H}"
                    self._add(
                        GraphNode(name, "head", hports, 1 + 2 * L, L, H),
                        {p: tuple(before) for p in hports},
                    )
                    heads.append(name)
            else:
                name = f"attn.{L}"
                self._add(GraphNode(name, "attn", ("in",), 1 + 2 * L, L), {"in": tuple(before)})
                heads.append(name)
            before_heads = tuple(before)
            before.extend(heads)
            if self.has_mlp:
                mlp_senders = before_heads if self.parallel else tuple(before)
                self._add(GraphNode(f"mlp.{L}", "mlp", ("in",), 2 + 2 * L, L), {"in": mlp_senders})
                before.append(f"mlp.{L}")
        self._add(GraphNode("logits", "output", ("in",), 2 + 2 * n + 1), {"in": tuple(before)})

    def input_fields(self) -> tuple[str, ...]:
        return (self.ids_field, self.mask_field)

    def model_inputs(self, fields: Mapping[str, Tensor]) -> Inputs:
        return _as_inputs(fields, self.ids_field, self.mask_field)

    def _probe(self) -> bool:
        """Check numerically that the residual stream is a sum of component outputs; return
        whether MLPs read the same residual as attention (parallel blocks, GPT-NeoX)."""
        m = self.model
        vocab = max(int(m.adapter.d_vocab or 0), 2)
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(0, vocab, (2, 5), generator=g)
        inp = Inputs(ids=ids, mask=torch.ones_like(ids))
        n = self.n_layers
        sites: list[str] = []
        for L in range(n):
            sites += [f"resid_pre.{L}", f"attn_out.{L}", f"resid_post.{L}"]
            if self.has_mlp:
                sites += [f"mlp_out.{L}", self.mlp_norm_input[L]]
            if self.split_heads:
                sites += [f"head.{L}.{H}" for H in range(self.n_heads)]
        out = m.run(inp, cache=sites, logits_at=[0])
        c = out.cache
        parallel: bool | None = None
        for L in range(n):
            pre, attn = c[f"resid_pre.{L}"], c[f"attn_out.{L}"]
            mlp = c[f"mlp_out.{L}"] if self.has_mlp else torch.zeros_like(attn)
            if not _close(c[f"resid_post.{L}"], pre + attn + mlp, rtol=1e-3):
                raise InputError(
                    f"{m.name}: the residual stream is not a sum of component outputs at layer "
                    f"{L} (resid_post != resid_pre + attn_out + mlp_out; a post-LN model such as "
                    "BERT?). Build a LayerGraph of its layers instead."
                )
            if n > L + 1 and not _close(c[f"resid_pre.{L + 1}"], c[f"resid_post.{L}"]):
                raise InputError(f"{m.name}: resid_pre.{L + 1} differs from resid_post.{L}")
            if self.has_mlp:
                norm_in = c[self.mlp_norm_input[L]]
                seq = _close(norm_in, pre + attn, rtol=1e-3)
                par = _close(norm_in, pre, rtol=1e-3)
                this = par and not seq
                if not (seq or par):
                    raise InputError(
                        f"{m.name}: the MLP of layer {L} reads neither resid_pre nor resid_pre + "
                        "attn_out; faithlens cannot decompose this block"
                    )
                if parallel is None:
                    parallel = this
            if self.split_heads:
                z = torch.cat([c[f"head.{L}.{H}"] for H in range(self.n_heads)], -1)
                _w, b = m.adapter.o_proj(L)
                total = m.adapter.head_outputs(L, z).sum(-2) + (b if b is not None else 0)
                if not _close(total, attn, rtol=1e-3):
                    raise InputError(
                        f"{m.name}: the heads of layer {L} do not sum to attn_out.{L} through "
                        "the output projection; build the graph with split_heads=False"
                    )
        return bool(parallel)

    # -- sites ---------------------------------------------------------------------------------
    def port_site(self, node: GraphNode) -> str:
        """The site holding the (pre-norm) residual a node's ports read."""
        if node.is_output:
            return f"resid_post.{self.n_layers - 1}"
        assert node.layer is not None
        if node.kind == "mlp" and not self.parallel:
            return self.mlp_norm_input[node.layer]
        return f"resid_pre.{node.layer}"

    def value_site(self, node: GraphNode) -> str:
        if node.is_input:
            return "resid_pre.0"
        if node.kind == "head":
            return f"head.{node.layer}.{node.head}"
        if node.kind == "attn":
            return f"attn_out.{node.layer}"
        if node.kind == "mlp":
            return f"mlp_out.{node.layer}"
        raise AssertionError(node)

    def site_layer(self, site: str) -> float:
        """Where a site sits in the forward pass (for stop_at), in layers."""
        if site.startswith("module:") or site in self.mlp_norm_input:
            L = self.mlp_norm_input.index(site)
            return L + 0.6
        if site == "ln_final":
            return self.n_layers - 1 + 0.95
        kind, _, rest = site.partition(".")
        L = int(rest.split(".")[0]) if rest else 0
        return (
            L
            + {
                "resid_pre": 0.0,
                "q": 0.2,
                "k": 0.2,
                "v": 0.2,
                "head": 0.3,
                "attn_out": 0.4,
                "mlp_in": 0.6,
                "mlp_out": 0.8,
                "resid_post": 0.9,
            }[kind]
        )

    def stop_site(self, sites: Iterable[str]) -> str | None:
        last = max(self.site_layer(s) for s in sites)
        L = int(last)
        frac = last - L
        if self.n_layers - 1 <= L and frac >= 0.9:
            return "ln_final" if "ln_final" in self.model.adapter.site_table else None
        if frac <= 0.0:
            return f"resid_pre.{L}"
        if frac <= 0.3:
            return f"head.{L}.0" if self.split_heads else f"attn_out.{L}"
        if frac <= 0.4:
            return f"attn_out.{L}"
        if frac <= 0.6:
            return f"mlp_in.{L}"
        if frac <= 0.8:
            return f"mlp_out.{L}"
        return f"resid_post.{L}"

    def contribution_of(self, node: GraphNode, raw: Tensor) -> Tensor:
        """A node's contribution to the residual stream from its cached site value."""
        if node.kind == "head":
            assert node.layer is not None and node.head is not None
            w, _ = self.model.adapter.o_proj(node.layer)
            dh = self.model.adapter.d_head
            wh = w[:, node.head * dh : (node.head + 1) * dh]
            return raw @ wh.to(raw).T
        return raw

    # -- evaluation ----------------------------------------------------------------------------
    def run_from(
        self,
        layer: int,
        hidden: Tensor,
        inputs: Inputs,
        interventions: Sequence[Intervention],
        cache: Sequence[str],
        stop_at: str | None,
        logits_at: Any = None,
        stats: EvalStats | None = None,
    ) -> RunOutput:
        m = self.model
        hidden = hidden.to(device=m.device, dtype=m.dtype)
        if m.adapter.supports_resume:
            out = m.run(
                inputs,
                interventions,
                cache,
                start_at=Resume(layer, hidden),
                stop_at=stop_at,
                logits_at=logits_at,
            )
            ran = (int(self.site_layer(stop_at)) + 1 - layer) if stop_at else self.n_layers - layer
        else:
            site = (
                f"resid_pre.{layer}" if layer < self.n_layers else f"resid_post.{self.n_layers - 1}"
            )
            out = m.run(
                inputs,
                [Patch(site, hidden), *interventions],
                cache,
                stop_at=stop_at,
                logits_at=logits_at,
            )
            ran = (int(self.site_layer(stop_at)) + 1) if stop_at else self.n_layers
        if stats is not None:
            stats.add(int(hidden.shape[0]), ran)
        return out

    @torch.no_grad()
    def uniform_values(
        self,
        refs: Sequence[Uniform],
        feed: DataFeed,
        rows: Tensor,
        out_positions: Tensor | None = None,
    ) -> list[Tensor]:
        """Values of uniform copies (clean activations, or their parts); see
        :func:`faithlens.graph.evaluate_transformer.uniform_values`."""
        return evaluate_transformer.uniform_values(self, refs, feed, rows, out_positions)

    @torch.no_grad()
    def evaluate(
        self,
        plan: Plan,
        feed: DataFeed,
        rows: Tensor,
        *,
        out_positions: Tensor | None = None,
        stats: EvalStats | None = None,
    ) -> list[Tensor]:
        """The outputs (one per root) of the treeified model described by ``plan`` at reference
        rows ``rows``; see :func:`faithlens.graph.evaluate_transformer.evaluate`."""
        return evaluate_transformer.evaluate(
            self, plan, feed, rows, out_positions=out_positions, stats=stats
        )

    def base_node(self, name: str) -> GraphNode:
        n = self.node(name)
        if n.base is None:
            return n
        return GraphNode(n.base, n.kind, n.ports, n.order, n.layer, n.head)

    # -- the slow path -------------------------------------------------------------------------
    @torch.no_grad()
    def compute(
        self,
        node: str,
        port_inputs: Mapping[str, Tensor],
        base_fields: Mapping[str, Tensor],
        *,
        out_positions: Tensor | None = None,
        phi_rows: Any = None,
    ) -> Tensor:
        n = self.node(node)
        inputs = self.model_inputs(base_fields)
        if isinstance(n.part, PhiPart):
            return torch.as_tensor(n.part.fn(phi_rows))
        if n.is_output:
            out = self.run_from(
                self.n_layers, port_inputs["in"], inputs, [], [], None, logits_at=out_positions
            )
            assert out.logits is not None
            value = out.logits
        elif n.kind == "mlp":
            assert n.layer is not None
            x = port_inputs["in"].to(self.model.dtype)

            ivs: list[Intervention] = (
                [] if self.parallel else [Patch(self.mlp_norm_input[n.layer], source=x)]
            )
            out = self.run_from(
                n.layer, x, inputs, ivs, [f"mlp_out.{n.layer}"], f"mlp_out.{n.layer}"
            )
            value = out.cache[f"mlp_out.{n.layer}"]
        else:
            value = self._compute_head(self.base_node(node), port_inputs, inputs)
        part = n.part
        if isinstance(part, LinearPart):
            return part.fn(value)
        if isinstance(part, ResidualPart):
            total = sum(torch.as_tensor(fn(phi_rows)).to(value) for fn in part.fns)
            return part.apply(value, total)
        return value

    def _compute_head(
        self, n: GraphNode, port_inputs: Mapping[str, Tensor], inputs: Inputs
    ) -> Tensor:

        L = n.layer
        assert L is not None
        if n.kind == "attn" or not self.split_qkv:
            out = self.run_from(
                L,
                port_inputs["in"],
                inputs,
                [],
                [self.value_site(n)],
                f"head.{L}.0" if n.kind == "head" else f"attn_out.{L}",
            )
            return self.contribution_of(n, out.cache[self.value_site(n)])
        assert n.head is not None
        g = n.head // (self.n_heads // self.n_kv)
        proj: dict[str, Tensor] = {}
        for port, site in (("q", f"q.{L}.{n.head}"), ("k", f"k.{L}.{g}"), ("v", f"v.{L}.{g}")):
            o = self.run_from(L, port_inputs[port], inputs, [], [site], f"head.{L}.0")
            proj[port] = o.cache[site]
        ivs: list[Intervention] = [
            Patch(f"q.{L}.{n.head}", source=proj["q"]),
            Patch(f"k.{L}.{g}", source=proj["k"]),
            Patch(f"v.{L}.{g}", source=proj["v"]),
        ]
        out = self.run_from(L, port_inputs["q"], inputs, ivs, [f"head.{L}.{n.head}"], f"head.{L}.0")
        return self.contribution_of(n, out.cache[f"head.{L}.{n.head}"])

    @torch.no_grad()
    def port_input(self, node: str, datum_fields: Mapping[str, Tensor]) -> Tensor:
        """The residual a node's ports read on a clean run (for references and checks)."""
        site = self.port_site(self.node(node))
        out = self.model.run(self.model_inputs(datum_fields), cache=[site], logits_at=[0])
        return out.cache[site]

    @torch.no_grad()
    def node_value(
        self,
        node: str,
        datum_fields: Mapping[str, Tensor],
        phi_rows: Any = None,
        out_positions: Tensor | None = None,
    ) -> Tensor:
        """A node's clean value (contribution) on one datum (slow path)."""
        n = self.node(node)
        inputs = self.model_inputs(datum_fields)
        if n.is_output:
            out = self.model.run(inputs, logits_at=out_positions)
            assert out.logits is not None
            return out.logits
        if isinstance(n.part, PhiPart):
            return torch.as_tensor(n.part.fn(phi_rows))
        base = self.base_node(node)
        site = self.value_site(base)
        out = self.model.run(inputs, cache=[site], logits_at=[0])
        value = self.contribution_of(base, out.cache[site])
        if isinstance(n.part, LinearPart):
            return n.part.fn(value)
        if isinstance(n.part, ResidualPart):
            return n.part.apply(
                value, sum(torch.as_tensor(fn(phi_rows)).to(value) for fn in n.part.fns)
            )
        return value


__all__ = ["TransformerGraph"]
