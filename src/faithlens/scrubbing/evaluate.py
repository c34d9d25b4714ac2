"""The causal scrubbing engine: plan, sample, evaluate in batched runs, measure.

``fl.scrub(model, data, hypothesis, n=...)``:

1. builds the model's component graph (and applies the hypothesis' rewrites);
2. plans the treeified evaluation and validates the hypothesis (no forward pass yet);
3. draws the reference examples and every interpretation node's datum, top-down, with seeded
   common random numbers (Redwood's batched semantics: row ``i`` of every vector is the datum
   of reference example ``i``'s scrub tree);
4. checks every rewrite numerically;
5. evaluates the model's output, the scrubbed output and every baseline in one plan, in
   chunks of reference rows: one clean run per distinct datum, one batched run per layer for
   the mixed copies;
6. returns a :class:`~.results.ScrubResult` with the expectation, standard errors, bootstrap
   intervals, % loss recovered against each named baseline, per-example values, KL to the
   model's outputs, sampling diagnostics and warnings.

Steps 1-4 and the chunked evaluation of step 5 live in :mod:`.preparation` (:func:`prepare`,
:func:`run_prepared`), the draws of step 3 and the concrete plan in :mod:`.sampling`; this module
holds the entry points, the summary (:func:`finish`), the warnings and the dry runs, and
re-exports the names that moved.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from torch import Tensor, nn

from .. import validate as V
from ..executor import Executor, on_executor
from ..graph import (
    ComponentGraph,
    CopyRef,
    Mixed,
    TransformerGraph,
    Uniform,
    graph_for,
)
from ..models.model import Model
from ..progress import Progress
from .data import ScrubData
from .hypothesis import Hypothesis, hypothesis_first, trees
from .metrics import (
    ScrubBehaviour as Behaviour,
)
from .metrics import (
    cancellation,
    mean_se_interval,
    recovered,
    warnings_for,
)
from .preparation import (
    Prepared,
    as_model,
    check_rewrites,
    check_scrub_args,
    enough_references,
    prepare,
    run_prepared,
)
from .preparation import as_data as as_data
from .preparation import chunk_size as chunk_size
from .preparation import seq_len as seq_len
from .results import ScrubResult
from .sampling import DataVectors, sample, stream
from .sampling import PlanBuilder as PlanBuilder
from .sampling import Sampled as Sampled
from .sampling import TableFeed as TableFeed

# ---------------------------------------------------------------------------------------------
# The public entry points
# ---------------------------------------------------------------------------------------------


@V.reordered_arguments(("model", "hypothesis", "data"), hypothesis_first)
@on_executor
def scrub(
    model: Model | nn.Module,
    data: Any,
    hypothesis: Hypothesis,
    n: int | None = None,
    *,
    behaviour: Behaviour | None = None,
    graph: ComponentGraph | None = None,
    baselines: Any = ("random",),
    references: ScrubData | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    progress: Progress | None = None,
    max_memory: int | None = None,
    executor: str | Executor | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
) -> ScrubResult:
    """Test ``hypothesis`` on ``model`` by causal scrubbing.

    Args:
        model: a faithlens model (``fl.load`` / ``fl.wrap``) or an ``nn.Module``.
        data: the pool the samplers draw from (:class:`ScrubData`, a dict of columns, or a
            :class:`~faithlens.tasks.Task`, whose metric is then the default behaviour).
        hypothesis: a :class:`Hypothesis` (or a join of hypotheses). The old order
            ``scrub(model, hypothesis, data)`` still works for one release, with a
            DeprecationWarning.
        n: the number of reference examples, drawn from the pool with replacement (Redwood's
            semantics); None uses every row once, in order.
        behaviour: what to measure per example (see :mod:`faithlens.scrubbing.metrics`).
        graph: the component graph (default: a :class:`TransformerGraph` for transformers, a
            traced :class:`LayerGraph` for other modules).
        baselines: named baselines for % loss recovered: ``"random"`` (the model on an unrelated
            input scored against the reference labels), hypotheses, or a dict name -> either.
        references: reference rows given separately from the pool (instead of ``n``).
        seed: every draw is seeded; the same seed gives the same result.
        batch_size: deprecated (one release; use ``max_memory``): reference rows per chunk.
        n_boot, level: bootstrap resamples and confidence level.
        progress: called with (done, total) after each chunk.
        max_memory: bytes one chunk of reference rows may use (default: the configured memory
            budget).
        executor: where the chunks run for this call: ``"ray"`` (a Ray executor built for
            the call), an :class:`~faithlens.executor.Executor`, or ``None`` (the one in
            force: :func:`faithlens.executor.executor`); the numbers do not change.
        checkpoint: a folder where each finished chunk of reference rows is saved; a run killed
            as a whole and started again with it evaluates only the unfinished chunks, with the
            same result. Keyed on the model, the data, the hypothesis and the arguments: a
            folder of another run raises :class:`~faithlens.errors.CheckpointError`.
    """
    check_scrub_args(
        n=n,
        seed=seed,
        batch_size=batch_size,
        n_boot=n_boot,
        level=level,
        progress=progress,
        max_memory=max_memory,
    )
    V.replaced_knob("scrub", "batch_size", batch_size, "max_memory", max_memory)
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise V.fail("checkpoint", checkpoint, "must be a folder path", "give a str or a Path")
    prep = prepare(
        model,
        hypothesis,
        data,
        n,
        behaviour=behaviour,
        graph=graph,
        baselines=baselines,
        references=references,
        seed=seed,
    )
    enough_references(prep, n)
    check_rewrites(prep)
    return finish(
        prep,
        batch_size=batch_size,
        n_boot=n_boot,
        level=level,
        progress=progress,
        seed=seed,
        max_memory=max_memory,
        checkpoint=checkpoint,
    )


def finish(
    prep: Prepared,
    *,
    batch_size: int | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    progress: Progress | None = None,
    seed: int = 0,
    max_memory: int | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
) -> ScrubResult:
    """Run a prepared experiment (see :func:`prepare`) and summarise it (``checkpoint``: as
    :func:`scrub`)."""
    check_scrub_args(
        seed=seed,
        batch_size=batch_size,
        n_boot=n_boot,
        level=level,
        progress=progress,
        max_memory=max_memory,
    )
    enough_references(prep, None if len(prep.ref) >= 2 else len(prep.ref))
    vals, kl, stats = run_prepared(
        prep,
        batch_size=batch_size,
        progress=progress,
        max_memory=max_memory,
        checkpoint=checkpoint,
    )
    orig, h = vals[0], vals[1]
    bnames = list(prep.baselines)
    bvals = np.stack(vals[2:]) if bnames else np.zeros((0, len(orig)))
    rows = []
    for name, v in [("original", orig), ("scrubbed", h), *zip(bnames, bvals)]:
        est, se, lo, hi = mean_se_interval(v, n_boot=n_boot, level=level, seed=seed)
        rows.append(
            {
                "quantity": name if name in ("original", "scrubbed") else f"baseline {name}",
                "estimate": est,
                "se": se,
                "low": lo,
                "high": hi,
            }
        )
    d = h - orig
    est, se, lo, hi = mean_se_interval(d, n_boot=n_boot, level=level, seed=seed)
    rows.append(
        {"quantity": "scrubbed - original", "estimate": est, "se": se, "low": lo, "high": hi}
    )
    pct: dict[str, tuple[float, float, float, float]] = {}
    for name, b in zip(bnames, bvals):
        pct[name] = recovered(orig, h, b, n_boot=n_boot, level=level, seed=seed)
        e, s, lo, hi = pct[name]
        rows.append(
            {"quantity": f"% recovered vs {name}", "estimate": e, "se": s, "low": lo, "high": hi}
        )
    table = pd.DataFrame(rows)
    diag = pd.DataFrame(prep.sampled.diagnostics)
    self_share = {
        r["node"]: float(r["self_share"]) for r in prep.sampled.diagnostics if r["conditioned"]
    }
    warns = warnings_for(
        orig=orig,
        h=h,
        bases=dict(zip(bnames, bvals)),
        pct=pct,
        higher_is_better=prep.behaviour.higher_is_better,
        node_self_share=self_share,
    )
    mixing = length_mixing(prep)
    lw = length_warning(prep, mixing)
    if lw is not None:
        warns.append(lw)
    n = len(prep.ref)
    n_layers = getattr(prep.graph, "n_layers", 1) or 1
    info: dict[str, Any] = {
        "distinct_data": len(prep.data),
        "mixed_copies": len(prep.plan.copies),
        "runs": stats.runs,
        "clean_runs": stats.clean_runs,
        "layer_rows": stats.layer_rows,
        "forward_pass_equivalents": stats.layer_rows / max(n * n_layers, 1),
        "graph": prep.graph.kind,
        "rewrites": list(prep.graph.rewrites),
        "cancellation": cancellation(orig, h),
    }
    if mixing is not None:
        info["variable_lengths"] = {**mixing, "intended": prep.hypothesis.mixed_lengths}
    return ScrubResult(
        hypothesis=prep.hypothesis.name,
        description=prep.hypothesis.describe(),
        behaviour=prep.behaviour.name,
        higher_is_better=prep.behaviour.higher_is_better,
        n=n,
        seed=seed,
        level=level,
        scrubbed=h,
        original=orig,
        baseline_names=bnames,
        baseline_values=bvals,
        kl=kl,
        references=prep.ref.copy(),
        table=table,
        nodes=diag,
        warnings=warns,
        stats=info,
    )


def _positional_nodes(prep: Prepared) -> list[str]:
    """Names of the interpretation nodes whose paths are restricted to positions."""
    out: list[str] = []
    for t in trees(prep.hypothesis):
        for node in t.nodes.values():
            if any(r.positions is not None or r.end_positions is not None for r in node.routes):
                out.append(node.name)
    return list(dict.fromkeys(out))


def length_mixing(prep: Prepared) -> dict[str, Any] | None:
    """Whether a hypothesis with position-specific claims mixes data of different lengths
    (non-padding tokens, from the attention mask): with right padding, position i then holds
    different tokens, or padding, in different data, and attention masks follow the datum each
    copy runs with. None when the data are equal-length or no claim names positions; otherwise
    the positional nodes and rewrites, how many of the hypothesis' mixed copies combine lengths
    (``copies`` of ``of``) and the largest share of examples affected (``max_share``)."""
    g = prep.graph
    if not isinstance(g, TransformerGraph) or g.mask_field not in prep.table.data:
        return None
    nodes = _positional_nodes(prep)
    split = [rw.describe() for rw in prep.rewrites if getattr(rw, "label", "") == "split_positions"]
    if not nodes and not split:
        return None
    mask = prep.table.data[g.mask_field]
    if not isinstance(mask, Tensor):
        return None
    lengths = (mask != 0).sum(-1).cpu().numpy()
    if np.all(lengths == lengths[0]):
        return None
    vec = prep.data.vectors
    plan_ = prep.plan

    def run_datum(ref: CopyRef) -> int:
        if isinstance(ref, Uniform):
            return ref.datum
        c = plan_.copies[ref.id]
        return c.inputs if c.inputs is not None else c.base

    # the mixed copies of the hypothesis (not of its baselines): does a copy read inputs from
    # data whose length differs from the datum it runs with (whose attention mask it uses)?
    seen: set[int] = set()
    stack = [r for r in plan_.roots[1:2] if isinstance(r, Mixed)]
    mixed_share: list[float] = []
    while stack:
        ref = stack.pop()
        if ref.id in seen:
            continue
        seen.add(ref.id)
        c = plan_.copies[ref.id]
        own = lengths[vec[run_datum(ref)]]
        bad = np.zeros(len(own), dtype=bool)
        for d in {c.base, *(run_datum(f.child) for f in c.feeds)}:
            bad |= lengths[vec[d]] != own
        mixed_share.append(float(bad.mean()))
        stack.extend(f.child for f in c.feeds if isinstance(f.child, Mixed))
    hit = [x for x in mixed_share if x > 0]
    if not hit:
        return None
    return {
        "nodes": nodes,
        "rewrites": split,
        "copies": len(hit),
        "of": len(mixed_share),
        "max_share": max(hit),
    }


def length_warning(prep: Prepared, found: dict[str, Any] | None = None) -> str | None:
    """The VARIABLE LENGTHS warning when :func:`length_mixing` finds data of different lengths
    combined (``found``: its answer, computed here when not given) and the hypothesis does not
    say it means that (``Hypothesis(mixed_lengths=...)``); None otherwise."""
    if found is None:
        found = length_mixing(prep)
    if found is None or prep.hypothesis.mixed_lengths:
        return None
    nodes, split = found["nodes"], found["rewrites"]
    what = [f"nodes {nodes[:6]}{' ...' if len(nodes) > 6 else ''}"] if nodes else []
    what += [f"rewrites {split}"] if split else []
    return (
        f"VARIABLE LENGTHS: the hypothesis makes position-specific claims ({'; '.join(what)}) "
        f"and {found['copies']} of the {found['of']} mixed copies it computes combine inputs "
        "from data whose length differs from the datum they run with (for up to "
        f"{100 * found['max_share']:.0f} % of the examples). With right padding, a position holds "
        "different tokens (or padding) in different data, and a copy's attention mask is that "
        "of the datum it runs with. If that is not intended, condition the position-specific "
        "nodes on the length (e.g. other=SameFeature(field('length'))) or use equal-length data; "
        "if it is, say why with Hypothesis(mixed_lengths=...)."
    )


@V.reordered_arguments(("model", "hypothesis", "data"), hypothesis_first)
def dry_run(
    model: Any,
    data: Any,
    hypothesis: Hypothesis,
    n: int | None = None,
    *,
    rows: Sequence[int] = (0, 1, 2),
    **kwargs: Any,
) -> str:
    """The dry-run view of an experiment (no forward pass): every copy the evaluation computes,
    which datum each input slot receives, and the data of a few reference examples."""
    prep = prepare(model, hypothesis, data, n, **kwargs)
    return prep.describe(rows)


def dry_run_text(prep: Prepared, rows: Sequence[int], max_feeds: int) -> str:
    g = prep.graph
    lines = [prep.hypothesis.describe(), "", g.describe()]
    lines.append("")
    lines.append(f"data ({len(prep.data)} distinct vectors of {len(prep.ref)} rows):")
    for i, labels in enumerate(prep.data.labels):
        lines.append(f"  d{i}: {', '.join(labels)}")
    lines.append("")
    root = prep.plan.roots[1]
    lines.append(
        f"copies of {prep.hypothesis.name!r} ({len(prep.plan.copies)} mixed copies in the "
        "shared plan); 'uniform dK' means every input slot below gets datum dK:"
    )
    seen: set[int] = set()

    def show(ref: CopyRef, depth: int, via: str) -> None:
        pad = "  " * (depth + 1)
        if isinstance(ref, Uniform):
            lines.append(f"{pad}{via}{ref.node} [uniform d{ref.datum}]")
            return
        c = prep.plan.copies[ref.id]
        tag = f"{ref.node} [mixed #{ref.id}: unlisted inputs get d{c.base}; runs with the inputs of d{c.run_datum}]"
        if ref.id in seen:
            lines.append(f"{pad}{via}{tag} (shown above)")
            return
        seen.add(ref.id)
        lines.append(f"{pad}{via}{tag}")
        for f in c.feeds[:max_feeds]:
            pos = f" @ {f.positions!r}" if f.positions is not None else ""
            show(f.child, depth + 1, f"{f.port} <- {f.sender}{pos}: ")
        if len(c.feeds) > max_feeds:
            lines.append(f"{pad}  ... {len(c.feeds) - max_feeds} more inputs")
        node = g.node(c.node)
        for port in node.ports:
            listed = {f.sender for f in c.feeds if f.port == port and f.positions is None}
            rest = [x for x in g.senders(c.node, port) if x not in listed]
            if rest:
                names = ", ".join(rest[:4]) + (
                    f", ... ({len(rest)} in all)" if len(rest) > 4 else ""
                )
                lines.append(f"{pad}  {port} <- {names}: [uniform d{c.base}] (every other input)")

    show(root, 0, "")
    lines.append("")
    lines.append("reference examples (table row of each datum):")
    for r in rows:
        if r >= len(prep.ref):
            continue
        cells = [f"d{i}={int(v[r])}" for i, v in enumerate(prep.data.vectors)]
        lines.append(f"  example {r}: " + " ".join(cells))
    lines.append("")
    lines.append("sampling diagnostics:")
    for d in prep.sampled.diagnostics:
        lines.append(
            f"  {d['node']}: {d['sampler']}; mean class size {d['mean_class_size']:.1f}; drew "
            f"its own reference for {100 * d['self_share']:.0f} % of examples"
        )
    return "\n".join(lines)


def default_graph(model: Any, **kwargs: Any) -> ComponentGraph:
    """The component graph ``scrub`` uses by default for a model."""
    return graph_for(as_model(model), **kwargs)


__all__ = [
    "DataVectors",
    "Prepared",
    "dry_run",
    "prepare",
    "run_prepared",
    "sample",
    "scrub",
    "stream",
]
