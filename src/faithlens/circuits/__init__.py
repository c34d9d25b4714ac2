"""Circuit discovery: the edge graph of a model, edge scores and the circuits they select.

A method-level package above ``patching`` (it reuses the patching sweeps' public helpers) and
``graph`` (the component graph that says which component reads which).

Public API
----------

- ``EdgeGraph(model)`` (``edges.py``): every writer's (``input``, ``a{L}.h{H}``, ``m{L}``)
  direct edge into every reader port (``a{L}.h{H}<q|k|v>``, ``m{L}``, ``logits``), named as in
  MIB / EAP-IG (``"a0.h1->a2.h0<q>"``); ``Writer``, ``Reader``, ``Edge``.
- ``exact(model, data, *, metric, n_boot, level, seed, max_memory, progress)`` (``exact.py``):
  every edge's effect by patching it alone.
- ``eap(model, data, *, metric, n_boot, level, seed, max_memory, progress)`` (``eap.py``):
  edge attribution patching, the first-order estimate of ``exact``.
- ``eap_ig(model, data, *, steps, metric, ...)`` (``eap_ig.py``): EAP with integrated gradients
  along the path from the corrupted to the clean input embeddings.
- ``acdc(model, data, *, tau, objective, metric, ...)`` (``acdc.py``): ACDC's greedy pruning from
  the logits backwards; its ``EdgeScores.kept()`` is the circuit. ``acdc_nodes`` prunes heads
  and MLPs instead (a ``NodeScores``, ``meta["kept"]`` the kept nodes).
- ``EdgeScores`` (``scores.py``): a score per edge with a bootstrap interval; ``top_k(k)`` and
  ``threshold(t)`` select a ``Circuit``.
- ``connected(edges, all_edges)`` (``select.py``): the edges on a path from the input to the
  logits; ``EdgeScores.greedy(k)`` grows a connected circuit from the logits backwards.
- ``exact_nodes(model, data, ...)`` and ``node_scores(eap_scores)`` (``nodes.py``): a score per
  head and MLP (all its outgoing edges at once), a ``NodeScores`` result.
- ``faithfulness(model, data, circuit, *, metric, n_boot, level, seed, max_memory, progress)``
  (``faithfulness.py``): the circuit's normalised faithfulness, every edge outside it corrupted;
  a ``CircuitFaithfulness`` result.
- ``circuit_interventions(model, data, circuit)`` (``faithfulness.py``): the interventions that
  run the circuit in one plain pass (for ``fl.audit``).
- ``scrub(model, data, circuit, n, *, unimportant="global", n_boot, level, seed, max_memory,
  progress)`` (``scrub.py``): the circuit's causal-scrubbing score (% loss recovered) with
  every edge outside it resampled from one random datum, evaluated as the circuit's DAG (no
  tree, any depth); a ``faithlens.scrubbing.ScrubResult``, equal to ``fl.scrub`` of
  ``circuit.to_hypothesis(model=model, unimportant="global")``.
- ``faithfulness_curve(model, data, scores, *, sizes, ablation, by, ...)`` (``curve.py``): the
  faithfulness of the top circuits at each size (MIB's grid ``MIB_SIZES``) and its areas CPR /
  CMD (``areas``) with bootstrap intervals; a ``FaithfulnessCurve`` result.
- ``write_mib(path, scores, model, *, circuit)`` and ``read_mib(path, model)`` (``mib.py``):
  scores and circuits as MIB's / EAP-IG's graph JSON, both ways (a circuit found with EAP-IG
  read back as a ``Circuit`` of the model).
- ``edge_auroc(scores, truth, *, by, n_boot, level, seed)`` (``truth.py``): the AUROC of an edge
  ranking against a true circuit (tracr's compiled models: ``faithlens.zoo.tracr``), with a
  bootstrap interval over examples.
"""

from __future__ import annotations

from .acdc import acdc, acdc_nodes
from .curve import MIB_SIZES, FaithfulnessCurve, areas, faithfulness_curve
from .eap import eap
from .eap_ig import eap_ig
from .edges import Edge, EdgeGraph, Reader, Writer
from .exact import exact
from .faithfulness import CircuitFaithfulness, circuit_interventions, faithfulness
from .mib import read_mib, write_mib
from .nodes import NodeScores, exact_nodes, node_scores
from .scores import Circuit, EdgeScores
from .scrub import scrub
from .select import connected
from .truth import edge_auroc

__all__ = [
    "MIB_SIZES",
    "Circuit",
    "CircuitFaithfulness",
    "Edge",
    "EdgeGraph",
    "EdgeScores",
    "FaithfulnessCurve",
    "NodeScores",
    "Reader",
    "Writer",
    "acdc",
    "acdc_nodes",
    "areas",
    "circuit_interventions",
    "connected",
    "eap",
    "eap_ig",
    "edge_auroc",
    "exact",
    "exact_nodes",
    "faithfulness",
    "faithfulness_curve",
    "node_scores",
    "read_mib",
    "scrub",
    "write_mib",
]
