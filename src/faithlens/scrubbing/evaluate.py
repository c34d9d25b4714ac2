"""The causal scrubbing engine: plan, sample, evaluate in batched runs, measure.

``fl.scrub(model, hypothesis, data, n=...)``:

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
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from .. import validate as V
from ..errors import InputError
from ..executor import current_executor
from ..graph import (
    ComponentGraph,
    CopyRef,
    EvalStats,
    Feed,
    Mixed,
    MixedCopy,
    Plan,
    TransformerGraph,
    Uniform,
    graph_for,
)
from ..models.model import Model, wrap
from ..progress import Progress
from .data import ScrubData, Table
from .hypothesis import Hypothesis, trees
from .metrics import (
    ScrubBehaviour as Behaviour,
)
from .metrics import (
    TaskMetric,
    cancellation,
    kl_to_original,
    mean_interval,
    recovered,
    warnings_for,
)
from .plan import Planner, SymMixed, SymPlan, SymUniform, UnionFind, plan
from .results import ScrubResult
from .samplers import Random, Sampler, conjoin

# ---------------------------------------------------------------------------------------------
# Random streams
# ---------------------------------------------------------------------------------------------


def stream(seed: int, name: str, n: int) -> tuple[np.ndarray, np.random.Generator]:
    """Seeded uniforms for a named stream (stable across runs and Python versions)."""
    h = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")
    rng = np.random.default_rng([seed, h])
    return rng.random(n), rng


# ---------------------------------------------------------------------------------------------
# Data table and feed
# ---------------------------------------------------------------------------------------------


class DataVectors:
    """Distinct datum vectors (``[n]`` table rows each), deduplicated; id 0 is the reference."""

    def __init__(self, ref: np.ndarray) -> None:
        self.vectors: list[np.ndarray] = []
        self.labels: list[list[str]] = []
        self._ids: dict[bytes, int] = {}
        self.add(ref, "reference")

    def add(self, v: np.ndarray, label: str) -> int:
        key = np.ascontiguousarray(v, dtype=np.int64).tobytes()
        got = self._ids.get(key)
        if got is None:
            got = len(self.vectors)
            self._ids[key] = got
            self.vectors.append(np.asarray(v, dtype=np.int64))
            self.labels.append([])
        if label not in self.labels[got]:
            self.labels[got].append(label)
        return got

    def __len__(self) -> int:
        return len(self.vectors)


@dataclass
class TableFeed:
    """The graph's ``DataFeed``, reading datum vectors from a :class:`~.data.Table`."""

    table: Table
    data: DataVectors
    fields_names: tuple[str, ...]
    device: torch.device

    def fields(self, datum: int, rows: Tensor) -> dict[str, Tensor]:
        idx = torch.from_numpy(self.data.vectors[datum][rows.cpu().numpy()])
        got = self.table.data.tensors(self.fields_names, idx, self.device)
        if not got:
            raise InputError(
                f"the data have none of the model's input columns {list(self.fields_names)}"
            )
        return got

    def rows(self, datum: int, rows: Tensor) -> ScrubData:
        return self.table.data.take(self.data.vectors[datum][rows.cpu().numpy()])


# ---------------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------------


@dataclass
class Sampled:
    """The data of one planned hypothesis: datum keys -> ids, and per-node diagnostics."""

    sym: SymPlan
    key_ids: dict[tuple[Hashable, ...], int]
    diagnostics: list[dict[str, Any]] = field(default_factory=list)
    vectors: dict[tuple[str, ...], np.ndarray] = field(default_factory=dict)


def _pair_name(sym: SymPlan, owners: tuple[str, ...]) -> str:
    return sym.pairs[owners].name(sym.trees)


def sample(
    sym: SymPlan, table: Table, ref: np.ndarray, data: DataVectors, seed: int, label: str
) -> Sampled:
    """Draw every datum of a planned hypothesis (before any forward pass)."""
    out = Sampled(sym, {})
    n = len(ref)
    uf = sym.uf
    # sampled-together groups: labels that share a node (in a join) are one group
    labels = UnionFind()
    for pn in sym.pairs.values():
        gs = sorted(pn.groups)
        for g in gs:
            labels.union(gs[0], g)
    for pn in sorted(sym.pairs.values(), key=lambda p: (p.depth, repr(p.owners))):
        parent = ref if pn.parent is None else out.vectors[pn.parent]
        name = _pair_name(sym, pn.owners)
        where = f"hypothesis {label!r}, node {name!r}"
        sampler = Planner.sampler_of(pn, where)
        if pn.groups:
            sname = "group:" + str(labels.find(sorted(pn.groups)[0]))
        else:
            sname = "node:" + "|".join(pn.owners)
        u, rng = stream(seed, sname, n)
        draw = sampler.draw(table, parent, u, rng, where)
        out.vectors[pn.owners] = draw.idx
        cs = draw.class_size
        out.diagnostics.append(
            {
                "node": name,
                "sampler": sampler.describe(),
                "mean_class_size": float(np.mean(cs)) if cs is not None else float("nan"),
                "min_class_size": float(np.min(cs)) if cs is not None else float("nan"),
                "self_share": float(np.mean(draw.idx == parent)),
                "ref_share": float(np.mean(draw.idx == ref)),
                "distinct": len(np.unique(draw.idx)),
                "conditioned": not isinstance(sampler, Random) and sampler.kind != "exact",
            }
        )
    keys = sym.datum_keys()
    # unimportant inputs: one datum per union-find group of "other" keys
    groups: dict[Hashable, list[Hashable]] = {}
    for k in sym.other_samplers:
        groups.setdefault(uf.find(k), []).append(k)
    other_vec: dict[Hashable, np.ndarray] = {}
    for key in sorted({k for k in (sym.canonical(k) for k in keys) if k[0] == "other"}, key=repr):
        root = key[1]
        members = groups.get(root, [])
        samplers: list[Sampler] = [sym.other_samplers[m][0] for m in members]
        conditioned = [m for m in members if not isinstance(sym.other_samplers[m][0], Random)]
        refs = {sym.other_reference(m) for m in conditioned}
        where = f"hypothesis {label!r}, unimportant inputs {root!r}"
        if len(refs) > 1:
            raise InputError(
                f"{where}: these unimportant inputs are sampled together but conditioned on "
                f"different nodes' data ({sorted(_pair_name(sym, r) for r in refs)})"
            )
        reference = out.vectors[next(iter(refs))] if refs else ref
        sampler = conjoin(samplers) if samplers else Random()
        u, rng = stream(seed, "other:" + repr(root), n)
        other_vec[root] = sampler.draw(table, reference, u, rng, where).idx
    for key in keys:
        ck = sym.canonical(key)
        if ck[0] == "ds":
            owners = ck[1]
            assert isinstance(owners, tuple)
            out.key_ids[key] = data.add(out.vectors[owners], f"{label}:{_pair_name(sym, owners)}")
        else:
            out.key_ids[key] = data.add(
                other_vec[ck[1]], f"{label}:unimportant({_other_label(sym, ck[1])})"
            )
    for owners, v in out.vectors.items():
        out.key_ids.setdefault(("ds", owners), data.add(v, f"{label}:{_pair_name(sym, owners)}"))
    return out


def _other_label(sym: SymPlan, root: Hashable) -> str:
    if isinstance(root, tuple) and len(root) >= 2 and isinstance(root[0], int):
        i, owner = root[0], root[1]
        if owner == "*":
            return "all"
        node = sym.trees[i].nodes.get(str(owner))
        name = node.name if node is not None else str(owner)
        return name + (f" via {root[2]}<-{root[4]}" if len(root) > 2 else "")
    return str(root)


# ---------------------------------------------------------------------------------------------
# Concrete plans
# ---------------------------------------------------------------------------------------------


class PlanBuilder:
    """Concrete, hash-consed copies from symbolic plans (several hypotheses share copies)."""

    def __init__(self) -> None:
        self.copies: dict[int, MixedCopy] = {}
        self._sig: dict[Hashable, CopyRef] = {}

    def add(self, sampled: Sampled) -> CopyRef:
        sym = sampled.sym
        ids = sampled.key_ids
        local: dict[int, CopyRef] = {}

        def conv(ref: SymUniform | SymMixed) -> CopyRef:
            if isinstance(ref, SymUniform):
                return Uniform(ref.node, ids[ref.datum])
            return local[ref.id]

        for c in sym.copies.values():  # post-order: children first
            inputs = ids[("ds", c.owners)]
            feeds = [(p, s, atom, conv(ch)) for p, s, atom, ch in c.feeds]
            counts = Counter(ch.datum for _, _, _, ch in feeds if isinstance(ch, Uniform))
            base = max(counts, key=lambda d: (counts[d], d == inputs, -d)) if counts else inputs
            kept = tuple(
                sorted(
                    (
                        Feed(p, s, ch, atom)
                        for p, s, atom, ch in feeds
                        if not (isinstance(ch, Uniform) and ch.datum == base)
                    ),
                    key=repr,
                )
            )
            if not kept and base == inputs:
                local[c.ref.id] = Uniform(c.ref.node, base)
                continue
            sig = (c.ref.node, base, inputs, kept)
            got = self._sig.get(sig)
            if got is None:
                mid = len(self.copies)
                got = Mixed(mid, c.ref.node)
                self.copies[mid] = MixedCopy(got, base, kept, inputs)
                self._sig[sig] = got
            local[c.ref.id] = got
        return conv(sym.root)


# ---------------------------------------------------------------------------------------------
# The public entry points
# ---------------------------------------------------------------------------------------------


def as_model(model: Any) -> Model:
    if isinstance(model, Model):
        return model
    if isinstance(model, nn.Module):
        return wrap(model)
    raise InputError(f"scrub needs a faithlens Model or an nn.Module, not {type(model).__name__}")


def as_data(data: Any) -> tuple[ScrubData, Behaviour | None]:
    from ..tasks.base import Task

    if isinstance(data, ScrubData):
        return data, None
    if isinstance(data, Task):
        return ScrubData.from_task(data), TaskMetric(data.metric)
    if isinstance(data, Mapping):
        return ScrubData(dict(data)), None
    raise InputError(
        f"scrub data must be a ScrubData, a Task or a dict of columns, not {type(data).__name__}"
    )


def _baselines(baselines: Any) -> dict[str, Hypothesis]:
    if baselines is None:
        return {}
    if isinstance(baselines, (str, Hypothesis)):
        baselines = [baselines]
    out: dict[str, Hypothesis] = {}
    items = baselines.items() if isinstance(baselines, Mapping) else [(None, b) for b in baselines]
    for name, b in items:
        if isinstance(b, Hypothesis):
            out[name or b.name] = b
        elif isinstance(b, str) and b in (
            "random",
            "random_input",
            "randomized",
            "shuffled_labels",
        ):
            out[name or "random"] = Hypothesis.random("random input")
        else:
            raise InputError(
                f"unknown baseline {b!r}: use 'random' (the model on an unrelated input, scored "
                "against the reference labels) or a Hypothesis"
            )
    return out


def seq_len(graph: ComponentGraph, data: ScrubData) -> int | None:
    if isinstance(graph, TransformerGraph):
        return int(data[graph.ids_field].shape[1])
    if graph.positions:
        for name in graph.input_fields():
            v = data.get(name) if name in data else None
            if isinstance(v, Tensor) and v.dim() >= 2:
                return int(v.shape[1])
    return None


@dataclass
class Prepared:
    """Everything decided before the first forward pass."""

    model: Model
    graph: ComponentGraph
    table: Table
    ref: np.ndarray
    data: DataVectors
    behaviour: Behaviour
    hypothesis: Hypothesis
    sampled: Sampled
    baselines: dict[str, Sampled]
    plan: Plan
    names: list[str]
    rewrites: list[Any]
    graph_before: ComponentGraph

    def describe(self, rows: Sequence[int] = (0, 1, 2), max_feeds: int = 10) -> str:
        """The dry-run view: every copy the evaluation computes, which datum every input slot
        receives, and the data of a few reference examples."""
        return dry_run_text(self, rows, max_feeds)


def prepare(
    model: Any,
    hypothesis: Hypothesis,
    data: Any,
    n: int | None = None,
    *,
    behaviour: Behaviour | None = None,
    graph: ComponentGraph | None = None,
    baselines: Any = ("random",),
    references: ScrubData | None = None,
    seed: int = 0,
) -> Prepared:
    """Plan, validate and sample a scrubbing experiment without running the model on it."""
    V.nonnegative_int("seed", seed)
    m = as_model(model)
    if not isinstance(hypothesis, Hypothesis):
        raise InputError(f"scrub needs a faithlens Hypothesis, not {type(hypothesis).__name__}")
    pool, default_b = as_data(data)
    beh = behaviour or default_b
    if beh is None:
        raise InputError(
            "scrub needs a behaviour to measure: pass behaviour=CrossEntropy('label'), MSE('y'), "
            "BinaryCrossEntropy('label'), TaskMetric(...) or Fn(...)"
        )
    if not isinstance(beh, Behaviour):
        raise InputError(
            f"behaviour must be a faithlens.scrubbing Behaviour, not {type(beh).__name__}"
        )
    g0 = graph if graph is not None else graph_for(m)
    g = g0
    for rw in hypothesis.rewrites:
        g = rw.apply(g)
    if references is not None:
        refs = references if isinstance(references, ScrubData) else as_data(references)[0]
        table = Table(pool)
        ref = table.add(refs, source=False)
        if n is not None:
            raise InputError("give either references= or n=, not both")
    else:
        table = Table(pool)
        if n is None:
            ref = np.arange(len(pool))
        else:
            n = V.positive_int("n", n, fix="give n >= 2 reference examples, or None for every row")
            u, _ = stream(seed, "references", n)
            ref = np.minimum((u * len(pool)).astype(np.int64), len(pool) - 1)
    missing = [
        f
        for f in g.input_fields()
        if f not in pool and not (isinstance(g, TransformerGraph) and f == g.mask_field)
    ]
    if missing:
        raise InputError(
            f"the data have no columns {missing} for the model's inputs; columns: {pool.columns}"
        )
    seq = seq_len(g, pool)
    dv = DataVectors(ref)
    ref_rows = table.data.take(ref)
    sym = plan(trees(hypothesis), g, seq=seq, n=len(ref), columns=ref_rows.__getitem__)
    base_syms = {
        name: plan(trees(b), g, seq=seq, n=len(ref), columns=ref_rows.__getitem__)
        for name, b in _baselines(baselines).items()
    }
    sampled = sample(sym, table, ref, dv, seed, hypothesis.name)
    base_sampled = {name: sample(s, table, ref, dv, seed, name) for name, s in base_syms.items()}
    builder = PlanBuilder()
    roots: list[CopyRef] = [Uniform(g.output, 0), builder.add(sampled)]
    roots += [builder.add(s) for s in base_sampled.values()]
    p = Plan(roots, builder.copies)
    return Prepared(
        m,
        g,
        table,
        ref,
        dv,
        beh,
        hypothesis,
        sampled,
        base_sampled,
        p,
        ["original", hypothesis.name, *base_sampled],
        list(hypothesis.rewrites),
        g0,
    )


def chunk_size(prep: Prepared, batch_size: int | None, max_memory: int | None = None) -> int:
    """Reference rows per chunk: ``batch_size``, else what fits the memory budget (from the
    executor, :mod:`faithlens.executor`): ``max_memory`` bytes, or the configured budget.
    Graphs other than a :class:`TransformerGraph` have no per-row estimate: up to 4096 rows."""
    n = len(prep.ref)
    if batch_size is not None:
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        return min(batch_size, n)
    g = prep.graph
    if not isinstance(g, TransformerGraph):
        return min(n, 4096)
    seq = int(prep.table.data[g.ids_field].shape[1])
    d = g.model.d_model
    # cached activations per row: a few sites per datum, the assembled inputs of mixed copies,
    # and the logits of every root at the positions the behaviour reads
    tensors = 4 * len(prep.plan.data()) + 6 * len(prep.plan.copies) + 4
    vocab = max(int(g.model.adapter.d_vocab or 1), 1)
    per_row = 4 * (tensors * seq * d + len(prep.plan.roots) * 2 * vocab)
    if max_memory is not None:
        return current_executor().chunk_size(n, per_row, max_memory=max_memory)
    return current_executor().chunk_size(n, per_row, device=g.model.device, tokens_per_item=seq)


def run_prepared(
    prep: Prepared,
    *,
    batch_size: int | None = None,
    progress: Progress | None = None,
    max_memory: int | None = None,
) -> tuple[list[np.ndarray], np.ndarray, EvalStats]:
    """Evaluate every root of a prepared plan: per-example behaviour for each root, and the KL
    of the scrubbed outputs (root 1) from the model's (root 0)."""
    g, beh = prep.graph, prep.behaviour
    feed = TableFeed(prep.table, prep.data, g.input_fields(), g.model.device)
    n = len(prep.ref)
    ex = current_executor()
    chunks = ex.chunks(n, chunk_size(prep, batch_size, max_memory))
    values: list[list[np.ndarray]] = [[] for _ in prep.plan.roots]
    kls: list[np.ndarray] = []
    stats = EvalStats()

    def one(chunk: slice) -> tuple[list[np.ndarray], np.ndarray | None]:
        """Every root's behaviour on one chunk of reference rows, and the KL of root 1."""
        rows = torch.arange(chunk.start, chunk.stop)
        ref_rows = prep.table.data.take(prep.ref[rows.numpy()])
        pos = beh.positions(ref_rows)
        outs = g.evaluate(prep.plan, feed, rows, out_positions=pos, stats=stats)
        vals = [beh(o, ref_rows).detach().double().cpu().numpy() for o in outs]
        kl = None
        if len(outs) > 1 and outs[0].shape == outs[1].shape:
            lp, lq = beh.log_probs(outs[0]), beh.log_probs(outs[1])
            if lp is not None and lq is not None:
                kl = kl_to_original(lp, lq).detach().double().cpu().numpy()
        return vals, kl

    done = 0
    for chunk, (vals, kl) in zip(chunks, ex.map(one, chunks)):
        for j, v in enumerate(vals):
            values[j].append(v)
        if kl is not None:
            kls.append(kl)
        done += chunk.stop - chunk.start
        if progress is not None:
            progress(done, n)
    return [np.concatenate(v) for v in values], (np.concatenate(kls) if kls else np.zeros(0)), stats


def check_rewrites(prep: Prepared, rows: int = 16) -> None:
    """Check every rewrite of the hypothesis numerically before use."""
    if not prep.rewrites:
        return
    feed = TableFeed(prep.table, prep.data, prep.graph.input_fields(), prep.model.device)
    r = torch.arange(min(rows, len(prep.ref)))
    g = prep.graph_before
    for rw in prep.rewrites:
        after = rw.apply(g)
        rw.check(g, after, feed, r)
        g = after


def check_scrub_args(
    *,
    n: Any = None,
    seed: Any = 0,
    batch_size: Any = None,
    n_boot: Any = 1000,
    level: Any = 0.95,
    progress: Any = None,
    cli: bool = False,
    max_memory: Any = None,
) -> None:
    """Refuse a bad :func:`scrub` argument before anything is planned or run (``cli=True``
    names the command-line options)."""

    def nm(name: str) -> str:
        return "--" + name.replace("_", "-") if cli else name

    if n is not None:
        V.min_examples(nm("n"), n, what="an expectation with a standard error")
    V.nonnegative_int(nm("seed"), seed)
    if batch_size is not None:
        V.positive_int(nm("batch_size"), batch_size, fix="omit it to size chunks from memory")
    V.n_boot(n_boot, nm("n_boot"))
    V.level(level, nm("level"))
    if progress is not None and not callable(progress):
        raise V.fail(nm("progress"), progress, "must be a callable (done, total) or None")
    V.max_memory(max_memory, nm("max_memory"))
    if batch_size is not None and max_memory is not None:
        V.replaced_knob("scrub", nm("batch_size"), batch_size, nm("max_memory"), max_memory)


def enough_references(prep: Prepared, n: int | None) -> None:
    """A standard error needs two reference examples (one gives se = 0)."""
    if len(prep.ref) < 2:
        name = "n" if n is not None else "data"
        raise V.fail(
            name,
            n if n is not None else f"a pool of {len(prep.ref)} row(s)",
            "scrubbing needs at least 2 reference examples for a standard error",
            "give n >= 2 (references are drawn with replacement) or a bigger pool",
        )


def scrub(
    model: Model | nn.Module,
    hypothesis: Hypothesis,
    data: Any,
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
) -> ScrubResult:
    """Test ``hypothesis`` on ``model`` by causal scrubbing.

    Args:
        model: a faithlens model (``fl.load`` / ``fl.wrap``) or an ``nn.Module``.
        hypothesis: a :class:`Hypothesis` (or a join of hypotheses).
        data: the pool the samplers draw from (:class:`ScrubData`, a dict of columns, or a
            :class:`~faithlens.tasks.Task`, whose metric is then the default behaviour).
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
) -> ScrubResult:
    """Run a prepared experiment (see :func:`prepare`) and summarise it."""
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
        prep, batch_size=batch_size, progress=progress, max_memory=max_memory
    )
    orig, h = vals[0], vals[1]
    bnames = list(prep.baselines)
    bvals = np.stack(vals[2:]) if bnames else np.zeros((0, len(orig)))
    rows = []
    for name, v in [("original", orig), ("scrubbed", h), *zip(bnames, bvals)]:
        est, se, lo, hi = mean_interval(v, n_boot=n_boot, level=level, seed=seed)
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
    est, se, lo, hi = mean_interval(d, n_boot=n_boot, level=level, seed=seed)
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
    lw = length_warning(prep)
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


def length_warning(prep: Prepared) -> str | None:
    """A warning when a hypothesis with position-specific claims mixes data of different
    lengths (non-padding tokens, from the attention mask): with right padding, position i then
    holds different tokens, or padding, in different data, and attention masks follow the datum
    each copy runs with. None when the data are equal-length or no claim names positions."""
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
    what = [f"nodes {nodes[:6]}{' ...' if len(nodes) > 6 else ''}"] if nodes else []
    what += [f"rewrites {split}"] if split else []
    return (
        f"VARIABLE LENGTHS: the hypothesis makes position-specific claims ({'; '.join(what)}) "
        f"and {len(hit)} of the {len(mixed_share)} mixed copies it computes combine inputs from "
        "data whose length differs from the datum they run with (for up to "
        f"{100 * max(hit):.0f} % of the examples). With right padding, a position holds "
        "different tokens (or padding) in different data, and a copy's attention mask is that "
        "of the datum it runs with. If that is not intended, condition the position-specific "
        "nodes on the length (e.g. other=SameFeature(field('length'))) or use equal-length data."
    )


def dry_run(
    model: Any,
    hypothesis: Hypothesis,
    data: Any,
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
