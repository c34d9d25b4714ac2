"""Edge scores and circuits in MIB's / EAP-IG's graph file, both ways.

MIB's circuit-localization track reads circuits as the JSON graphs of EAP-IG's ``Graph``
(``Graph.to_json`` / ``Graph.from_json``)::

    {"cfg": {"n_layers": L, "n_heads": H, "parallel_attn_mlp": bool, "d_model": D},
     "nodes": {"input": {"in_graph": bool}, "a0.h0": {...}, "m0": {...}, ..., "logits": {...}},
     "edges": {"input->a0.h0<q>": {"score": float, "in_graph": bool}, ...}}

faithlens' edge names are that file's, so :func:`write_mib` writes a model's scores (and, if
given, a circuit as the edges ``in_graph``) for EAP-IG's and MIB's tools, and :func:`read_mib`
reads such a file (written by faithlens, EAP-IG or a MIB submission) back as a
:class:`~faithlens.circuits.Circuit` of this model, so a circuit found elsewhere gets
faithlens' faithfulness, scrubbing and divergence audit.

Two differences between the graphs, handled explicitly:

- **grouped-query attention**: EAP-IG's graph has a key and a value port per query head
  (``a1.h3<k>``); faithlens has one per key/value head (``a1.kv1<k>``), since one query head's
  key cannot be patched alone. Written, a key/value edge becomes one edge per query head of its
  group, each with the group's score divided by the group size (so the group's edges sum to the
  port's score) and the port's ``in_graph``. Read, the group's per-head edges become the port's
  edge: its score the sum of theirs, in the circuit when any of them is (the port carries them
  all).
- **models without MLPs** (attention-only): the file's MLP nodes and their edges are written
  with score 0 and out of the graph (EAP-IG's graph always has them); read, an MLP edge in the
  graph is refused.

Nodes are ``in_graph`` as EAP-IG's ``prune`` leaves them: a node with an in-graph outgoing edge
and (the input excepted) an in-graph incoming one; ``logits`` always. Per-position scores
(``positions="each"``) have no place in this format and are refused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import validate
from ..errors import InputError
from ..folders import atomic_file
from ..models.model import Model
from .common import circuit_names
from .edges import HEAD_PORTS, EdgeGraph
from .scores import Circuit, EdgeScores


def _cfg(eg: EdgeGraph) -> dict[str, Any]:
    return {
        "n_layers": eg.n_layers,
        "n_heads": eg.n_heads,
        "parallel_attn_mlp": bool(eg.graph.parallel),
        "d_model": int(eg.model.d_model),
    }


def _mib_edges(cfg: dict[str, Any]) -> list[str]:
    """Every edge of EAP-IG's graph of ``cfg`` (``Graph.from_model``), in its order."""
    layers, heads, parallel = cfg["n_layers"], cfg["n_heads"], cfg["parallel_attn_mlp"]
    stream = ["input"]
    out: list[str] = []
    for L in range(layers):
        attn = [f"a{L}.h{h}" for h in range(heads)]
        for u in stream:
            out += [f"{u}->{a}<{p}>" for a in attn for p in HEAD_PORTS]
        if parallel:
            out += [f"{u}->m{L}" for u in stream]
            stream = [*stream, *attn, f"m{L}"]
        else:
            stream = [*stream, *attn]
            out += [f"{u}->m{L}" for u in stream]
            stream.append(f"m{L}")
    return out + [f"{u}->logits" for u in stream]


def _ours(eg: EdgeGraph, name: str) -> str:
    """faithlens' edge for an edge of EAP-IG's graph (a query head's key/value port becomes
    its group's)."""
    writer, _, reader = name.partition("->")
    if eg.grouped and reader.endswith(("<k>", "<v>")):
        node, _, port = reader.partition("<")
        layer, head = node[1:].split(".h")
        group = eg.n_heads // eg.n_kv
        return f"{writer}->a{layer}.kv{int(head) // group}<{port}"
    return name


def _nodes(cfg: dict[str, Any], in_graph: dict[str, bool]) -> dict[str, dict[str, bool]]:
    """Each node's ``in_graph``, as EAP-IG's ``prune`` leaves it."""
    names = ["input"]
    for L in range(cfg["n_layers"]):
        names += [f"a{L}.h{h}" for h in range(cfg["n_heads"])] + [f"m{L}"]
    out_edges = {n: False for n in names}
    in_edges = {n: False for n in names}
    for e, kept in in_graph.items():
        if kept:
            writer, _, reader = e.partition("->")
            out_edges[writer] = True
            if reader != "logits":
                in_edges[reader.split("<")[0]] = True
    nodes = {n: {"in_graph": out_edges[n] and (n == "input" or in_edges[n])} for n in names}
    nodes["logits"] = {"in_graph": True}
    return nodes


def write_mib(
    path: str | os.PathLike[str],
    scores: EdgeScores,
    model: Model,
    *,
    circuit: Circuit | Sequence[str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``scores`` (of ``model``'s every edge) as an EAP-IG / MIB graph JSON at ``path``
    (atomically), with ``circuit``'s edges ``in_graph`` (none without one: a file of scores, for
    EAP-IG's ``apply_topn`` / ``apply_greedy``). Returns the path."""
    eg = EdgeGraph(model)
    if not isinstance(scores, EdgeScores):
        raise validate.fail(
            "scores", type(scores).__name__, "must be an EdgeScores", "pass fl.circuits.eap(...)"
        )
    if scores.meta.get("positions") == "each" or "subset" in scores.meta:
        raise InputError(
            "write_mib writes one score per edge of the whole graph: these scores are per "
            "position or cover a subset of the edges; score every edge with positions='all'"
        )
    if list(scores.edge) != eg.names:
        raise InputError(
            f"scores are for another edge graph ({len(scores.edge)} edges, model "
            f"{scores.model!r}) than {model.name!r}'s ({len(eg)} edges): score this model"
        )
    keep = set() if circuit is None else set(circuit_names(eg, circuit, whole="MIB's file"))
    score = dict(zip(scores.edge, (float(s) for s in scores.score)))
    group = eg.n_heads // eg.n_kv
    cfg = _cfg(eg)
    edges: dict[str, dict[str, Any]] = {}
    for name in _mib_edges(cfg):
        ours = _ours(eg, name)
        if ours not in score:  # an MLP edge of an attention-only model
            edges[name] = {"score": 0.0, "in_graph": False}
            continue
        share = group if ours != name else 1
        edges[name] = {"score": score[ours] / share, "in_graph": ours in keep}
    nodes = _nodes(cfg, {k: v["in_graph"] for k, v in edges.items()})
    target = Path(path)
    with atomic_file(target, overwrite=overwrite, name="path") as tmp, open(tmp, "w") as fh:
        json.dump({"cfg": cfg, "nodes": nodes, "edges": edges}, fh)
    return target


def read_mib(path: str | os.PathLike[str], model: Model) -> Circuit:
    """The circuit in an EAP-IG / MIB graph JSON (its edges ``in_graph``) as a
    :class:`~faithlens.circuits.Circuit` of ``model``, with the file's scores (``circuit.scores``).
    The file's ``cfg`` must describe ``model``'s graph (layers, heads, parallel blocks)."""
    p = Path(path)
    try:
        d = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise validate.fail(
            "path", str(p), f"cannot be read as JSON ({e})", "give a MIB graph file"
        ) from None
    if not isinstance(d, dict) or not {"cfg", "edges"} <= set(d):
        raise validate.fail(
            "path", str(p), "is not a MIB / EAP-IG graph (no 'cfg' and 'edges')", "give one"
        )
    eg = EdgeGraph(model)
    want = _cfg(eg)
    for key in ("n_layers", "n_heads", "parallel_attn_mlp"):
        if key in d["cfg"] and d["cfg"][key] != want[key]:
            raise InputError(
                f"{p}: the graph's {key} is {d['cfg'][key]!r}, {model.name}'s is {want[key]!r}: "
                "read a circuit of this model"
            )
    scores: dict[str, float] = {}
    kept: set[str] = set()
    known = set(eg.names)
    for name, info in d["edges"].items():
        ours = _ours(eg, name)
        if ours not in known:
            if info.get("in_graph"):
                raise InputError(
                    f"{p}: edge {name!r} is in the circuit, but {model.name} has no such edge "
                    "(an MLP edge of an attention-only model?)"
                )
            continue
        scores[ours] = scores.get(ours, 0.0) + float(info.get("score") or 0.0)
        if info.get("in_graph"):
            kept.add(ours)
    edges = [e for e in eg.names if e in kept]
    return Circuit(
        tuple(edges),
        f"MIB graph {p.name}",
        len(eg),
        model.name,
        tuple(scores.get(e, 0.0) for e in edges),
    )


__all__ = ["read_mib", "write_mib"]
