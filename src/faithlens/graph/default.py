"""The default component graph of a model (:func:`graph_for`)."""

from __future__ import annotations

from typing import Any

from ..errors import InputError
from ..models.model import Model
from .layers import LayerGraph
from .structure import ComponentGraph
from .transformer import TransformerGraph


def graph_for(model: Model, **kwargs: Any) -> ComponentGraph:
    """The default component graph of a model: a :class:`TransformerGraph` when the adapter
    knows transformer layers, else a traced :class:`LayerGraph` (or, when the module cannot be
    traced, the whole module as one node: :meth:`LayerGraph.whole`)."""
    if model.adapter.n_layers and model.adapter.n_heads:
        return TransformerGraph(model, **kwargs)
    try:
        return LayerGraph.trace(model, **kwargs)
    except InputError:
        # not traceable (data-dependent Python in forward) or no submodules: the whole module
        # is one node, which still supports hypotheses about its inputs
        return LayerGraph.whole(model)


__all__ = ["graph_for"]
