"""The component graph of any module: a DAG of its submodules.

:class:`LayerGraph` describes a wrapped module (``fl.wrap(module)`` with raw module sites) as a
DAG of submodules, for toy circuits, small non-transformer models and post-LN transformers
(whose residual stream is not a sum of component outputs). It is built from a ``torch.fx`` trace
(:meth:`LayerGraph.trace`), a stack of layers (:meth:`LayerGraph.chain`), the module as one node
(:meth:`LayerGraph.whole`) or explicit parent lists. A receiver is computed by running the
module with each parent's output patched; the batched evaluator of plans is
:mod:`.evaluate_layers`.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import InputError, SiteError, nearest
from ..interventions import Patch
from ..models.model import Model
from . import evaluate_layers
from .evaluate import DataFeed, EvalStats, Plan, Uniform
from .nodes import GraphNode, LinearPart, PhiPart, ResidualPart
from .structure import ComponentGraph


class LayerGraph(ComponentGraph):
    """A module as a DAG of its submodules (for toy circuits and small non-transformer models).

    Args:
        model: a wrapped module (``fl.wrap(module)``).
        parents: for each node (a module path; its output is the node's value), the nodes and
            forward arguments it reads. ``"output"`` lists what the module's return value reads
            (or, with ``output=PATH``, the module whose output *is* the return value).
        inputs: the forward arguments in order; they are also the names of the data fields.
        positions: whether activations are ``[batch, position, width]`` (position splits).

    Use :meth:`trace` to read the structure from a ``torch.fx`` trace instead.
    """

    kind = "layers"

    def __init__(
        self,
        model: Model,
        parents: Mapping[str, Sequence[str]],
        inputs: Sequence[str],
        *,
        positions: bool = False,
        output: str = "output",
    ) -> None:
        super().__init__(model)
        self.inputs = tuple(inputs)
        self.output = output
        self.positions = positions
        if output not in parents:
            raise InputError(
                f"LayerGraph: parents must say what the output {output!r} reads ({output!r}: [...])"
            )
        modules = dict(model.module.named_modules())
        for inp in self.inputs:
            self._add(GraphNode(inp, "input", (), 0), {})
        order: dict[str, int] = {i: 0 for i in self.inputs}

        def rank(name: str, stack: tuple[str, ...] = ()) -> int:
            if name in order:
                return order[name]
            if name in stack:
                raise InputError(f"LayerGraph: the parents form a cycle through {name!r}")
            if name not in parents:
                raise InputError(
                    f"LayerGraph: {name!r} is read by another node but is neither an input "
                    f"({list(self.inputs)}) nor a node with parents"
                )
            r = 1 + max((rank(p, (*stack, name)) for p in parents[name]), default=0)
            order[name] = r
            return r

        for name, ps in parents.items():
            if name != "output" and name not in modules:
                raise SiteError(
                    f"LayerGraph: no module {name!r} in this model; nearest: "
                    f"{nearest(name, [m for m in modules if m])}"
                )
            if not ps:
                raise InputError(f"LayerGraph: node {name!r} reads nothing")
            rank(name)
        for name, ps in parents.items():
            kind = "output" if name == output else "module"
            self._add(GraphNode(name, kind, ("in",), order[name]), {"in": tuple(ps)})

    @classmethod
    def trace(
        cls,
        model: Model,
        nodes: Sequence[str] | None = None,
        *,
        positions: bool = False,
    ) -> LayerGraph:
        """Read the graph from a ``torch.fx`` trace of ``model.module``.

        ``nodes`` are the module paths to treat as components (default: the module's direct
        children). Anything else (arithmetic, other modules) is folded into the edges.
        """
        import torch.fx as fx

        root = model.module
        wanted = set(nodes) if nodes is not None else {n for n, _ in root.named_children()}
        if not wanted:
            raise InputError("LayerGraph.trace: the module has no submodules to use as nodes")

        class _Tracer(fx.Tracer):
            def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
                return qualname in wanted or super().is_leaf_module(m, qualname)

        try:
            graph = _Tracer().trace(root)
        except Exception as e:  # fx cannot trace data-dependent control flow
            raise InputError(
                f"LayerGraph.trace: torch.fx cannot trace {type(root).__name__} ({e}); give "
                "the structure explicitly: LayerGraph(model, parents={...}, inputs=[...])"
            ) from e
        inputs: list[str] = []
        deps: dict[fx.Node, set[str]] = {}
        parents: dict[str, list[str]] = {}
        calls: dict[str, int] = defaultdict(int)
        output = "output"
        for n in graph.nodes:
            ups: set[str] = set()
            for a in n.all_input_nodes:
                ups |= deps[a]
            if n.op == "placeholder":
                inputs.append(str(n.target))
                deps[n] = {str(n.target)}
            elif n.op == "call_module" and str(n.target) in wanted:
                name = str(n.target)
                calls[name] += 1
                if calls[name] > 1:
                    raise InputError(
                        f"LayerGraph.trace: module {name!r} is called more than once; a node "
                        "must be one call of one module"
                    )
                parents[name] = sorted(ups)
                deps[n] = {name}
            elif n.op == "output":
                ret = n.args[0]
                if (
                    isinstance(ret, fx.Node)
                    and ret.op == "call_module"
                    and str(ret.target) in wanted
                ):
                    output = str(ret.target)  # the return value is this module's output
                else:
                    parents["output"] = sorted(ups)
            else:
                deps[n] = ups
        missing = wanted - set(parents)
        if missing:
            raise InputError(f"LayerGraph.trace: modules {sorted(missing)} are never called")
        return cls(model, parents, inputs, positions=positions, output=output)

    @classmethod
    def chain(
        cls,
        model: Model,
        modules: Sequence[str],
        inputs: Sequence[str],
        *,
        shared: Sequence[str] = (),
        positions: bool = False,
    ) -> LayerGraph:
        """A stack of modules, each reading the previous one (the first reads ``inputs``) and the
        ``shared`` inputs (for example an attention mask every layer reads); the output reads
        the last module. For post-LN transformers (BERT, MiniLM), whose residual stream is not a
        sum of component outputs: ``LayerGraph.chain(m, [f"bert.encoder.layer.{i}" ...],
        ["input_ids", "attention_mask"], shared=["attention_mask"])``."""
        if not modules:
            raise InputError("LayerGraph.chain needs at least one module")
        first = [i for i in inputs if i not in shared]
        parents: dict[str, list[str]] = {modules[0]: [*first, *shared]}
        for a, b in itertools.pairwise(modules):
            parents[b] = [a, *shared]
        parents["output"] = [modules[-1]]
        return cls(model, parents, inputs, positions=positions)

    @classmethod
    def whole(cls, model: Model, inputs: Sequence[str] | None = None) -> LayerGraph:
        """The module as one node: the output reads every forward argument directly. Enough for
        hypotheses about the inputs only (the root and nodes at the inputs)."""
        if inputs is None:
            import inspect

            params = inspect.signature(model.module.forward).parameters.values()
            inputs = [
                p.name
                for p in params
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"
            ]
        if not inputs:
            raise InputError("LayerGraph.whole: name the module's inputs (inputs=[...])")
        return cls(model, {"output": list(inputs)}, inputs)

    def input_fields(self) -> tuple[str, ...]:
        return self.inputs

    def model_inputs(self, fields: Mapping[str, Tensor]) -> tuple[Tensor, ...]:
        missing = [i for i in self.inputs if i not in fields]
        if missing:
            raise InputError(f"the data have no fields {missing} for the model's inputs")
        return tuple(fields[i] for i in self.inputs)

    def node_site(self, node: str) -> str:
        return f"module:{node}"

    def is_output_node(self, base: str) -> bool:
        return base == self.output

    def order_of(self, base: str) -> int:
        if base in self._nodes:
            return self._nodes[base].order
        return min(v.order for v in self._nodes.values() if v.base == base)

    @torch.no_grad()
    def uniform_values(
        self,
        refs: Sequence[Uniform],
        feed: DataFeed,
        rows: Tensor,
        out_positions: Tensor | None = None,
    ) -> list[Tensor]:
        """Values of uniform copies (module outputs on one datum, inputs, or their parts); see
        :func:`faithlens.graph.evaluate_layers.uniform_values`."""
        return evaluate_layers.uniform_values(self, refs, feed, rows, out_positions)

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
        rows ``rows``; see :func:`faithlens.graph.evaluate_layers.evaluate`."""
        return evaluate_layers.evaluate(
            self, plan, feed, rows, out_positions=out_positions, stats=stats
        )

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
        """``port_inputs`` maps each sender of the node to its value (parts: their sum is
        patched on the base module)."""

        n = self.node(node)
        if isinstance(n.part, PhiPart):
            return torch.as_tensor(n.part.fn(phi_rows))
        fields = dict(base_fields)
        patch: dict[str, Tensor] = {}
        for s in self.senders(node, n.ports[0]):
            sn = self.node(s)
            v = port_inputs[s]
            if sn.is_input:
                fields[s] = v
            elif sn.base is not None:
                patch[sn.base] = patch[sn.base] + v if sn.base in patch else v
            else:
                patch[s] = v
        base = n.base or n.name
        is_out = self.is_output_node(base)
        out = self.model.run(
            self.model_inputs(fields),
            [Patch(self.node_site(m), source=v) for m, v in patch.items()],
            cache=[] if is_out else [self.node_site(base)],
            stop_at=None if is_out else self.node_site(base),
        )
        got = out.logits if is_out else out.cache[self.node_site(base)]
        assert got is not None
        v = got
        if isinstance(n.part, LinearPart):
            return n.part.fn(v)
        if isinstance(n.part, ResidualPart):
            return n.part.apply(v, sum(torch.as_tensor(fn(phi_rows)).to(v) for fn in n.part.fns))
        return v

    @torch.no_grad()
    def node_value(
        self,
        node: str,
        datum_fields: Mapping[str, Tensor],
        phi_rows: Any = None,
        out_positions: Tensor | None = None,
    ) -> Tensor:
        n = self.node(node)
        if n.is_input:
            return datum_fields[node]
        if isinstance(n.part, PhiPart):
            return torch.as_tensor(n.part.fn(phi_rows))
        base = n.base or n.name
        out = self.model.run(
            self.model_inputs(datum_fields),
            cache=[] if self.is_output_node(base) else [self.node_site(base)],
        )
        v = out.logits if self.is_output_node(base) else out.cache[self.node_site(base)]
        assert v is not None
        if isinstance(n.part, LinearPart):
            return n.part.fn(v)
        if isinstance(n.part, ResidualPart):
            return n.part.apply(v, sum(torch.as_tensor(fn(phi_rows)).to(v) for fn in n.part.fns))
        return v


__all__ = ["LayerGraph"]
