"""The component graph: a model as a DAG of components, for path-level methods.

Path-level methods (causal scrubbing, path patching) need more than sites: they need to know
which components read which, so that a receiver's input can be rebuilt from senders evaluated on
*different* inputs. This package describes a model as a graph and evaluates *treeified* copies
of it in batched runs of the real model (through :func:`faithlens.runs.run`). It sits between
``runs`` and the methods: it imports ``models``, ``interventions`` and ``runs``, and nothing
above them.

Public API
----------

Graphs (``structure.py``, ``transformer.py``, ``layers.py``, ``default.py``):

- ``ComponentGraph``: the base class; nodes with typed input ports and the senders each port
  reads. Queries: ``nodes``, ``node(name)``, ``ports(name)``, ``senders(name, port)``,
  ``receivers(name)``, ``ancestors(name)``, ``reaches(src, target, avoid)``, ``topo()``,
  ``expand(name)``, ``parts_of(name)``, ``describe()``. Rewrite: ``split(name, parts)``.
  Evaluation: ``evaluate(plan, feed, rows, *, out_positions, stats)`` (the treeified
  evaluator), ``uniform_values(refs, feed, rows)``; slow per-node path for references and
  checks: ``compute(node, port_inputs, base_fields)``, ``node_value(node, datum_fields)``.
- ``TransformerGraph(model, *, split_heads=True, split_qkv=True, ids="ids", mask="mask")``: the
  residual stream of a pre-LN transformer as a sum of component outputs (``embed``,
  ``head.L.H`` with ``q``/``k``/``v`` ports or ``attn.L``, ``mlp.L``, ``logits``); checked
  numerically when built. Also ``port_input(node, datum_fields)``.
- ``LayerGraph(model, parents, inputs, *, positions=False, output="output")``: any module as a
  DAG of submodules; ``LayerGraph.trace(model)``, ``LayerGraph.chain(model, modules, inputs)``,
  ``LayerGraph.whole(model)``.
- ``graph_for(model, **kwargs)``: the default graph of a model (a ``TransformerGraph`` for
  transformers, else a traced ``LayerGraph``, else the whole module as one node).

Nodes and parts (``nodes.py``):

- ``GraphNode``: a node (``name``, ``kind``, ``ports``, ``order``, ``layer``, ``head``,
  ``base``, ``part``).
- ``Part``, ``LinearPart(fn)``, ``PhiPart(fn)``, ``ResidualPart(fns)``: the terms a node is
  split into (extensionally equal rewrites); ``PHI_PORT``: the port phi terms read the input by.

Positions (``positions.py``):

- ``PositionSet``: fixed or per-example sequence positions (``PositionSet.of(...)``).
- ``PositionAtom``: a cell of a partition of the positions.

The treeified evaluator (``evaluate.py``; per graph kind ``evaluate_transformer.py`` and
``evaluate_layers.py``):

- ``Plan(roots, copies)``: the copies one or more treeified evaluations need.
- ``Uniform(node, datum)``: a copy whose every input slot reads one datum (an ordinary
  activation); ``Mixed(id, node)``: a copy with assembled inputs, described by
  ``MixedCopy(ref, base, feeds, inputs)``; ``CopyRef``: either reference.
- ``Feed(port, sender, child, positions)``: a port of a mixed copy reads a copy of a sender.
- ``DataFeed``: the protocol an evaluation reads each datum's model inputs and rows through.
- ``EvalStats``: the work an evaluation did (runs, rows, layer-rows, clean runs, mixed copies).
"""

from __future__ import annotations

from .default import graph_for
from .evaluate import CopyRef, DataFeed, EvalStats, Feed, Mixed, MixedCopy, Plan, Uniform
from .layers import LayerGraph
from .nodes import PHI_PORT, GraphNode, LinearPart, Part, PhiPart, ResidualPart
from .positions import PositionAtom, PositionSet
from .structure import ComponentGraph
from .transformer import TransformerGraph

__all__ = [
    "PHI_PORT",
    "ComponentGraph",
    "CopyRef",
    "DataFeed",
    "EvalStats",
    "Feed",
    "GraphNode",
    "LayerGraph",
    "LinearPart",
    "Mixed",
    "MixedCopy",
    "Part",
    "PhiPart",
    "Plan",
    "PositionAtom",
    "PositionSet",
    "ResidualPart",
    "TransformerGraph",
    "Uniform",
    "graph_for",
]
