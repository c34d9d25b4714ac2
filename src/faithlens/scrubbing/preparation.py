"""Causal scrubbing's preparation: everything decided before the first forward pass (the model,
the data, the graph and its rewrites, the references, the sampled plans of the hypothesis and
its baselines), the argument checks, and the chunked evaluation of a prepared plan. See
:mod:`.evaluate` for the whole pipeline.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .. import validate as V
from ..errors import InputError
from ..executor import InProcess, current_executor
from ..graph import (
    ComponentGraph,
    CopyRef,
    EvalStats,
    Plan,
    TransformerGraph,
    Uniform,
    graph_for,
)
from ..models.model import Model, wrap
from ..progress import Progress
from .checkpoint import Chunk, ScrubCheckpoint, scrub_key
from .data import ScrubData, Table
from .hypothesis import Hypothesis, trees
from .metrics import (
    ScrubBehaviour as Behaviour,
)
from .metrics import (
    TaskMetric,
    kl_to_original,
)
from .plan import plan
from .sampling import DataVectors, PlanBuilder, Sampled, TableFeed, sample, stream

# ---------------------------------------------------------------------------------------------
# Preparation (before any forward pass), argument checks and the chunked evaluation
# ---------------------------------------------------------------------------------------------


def as_model(model: Any) -> Model:
    if isinstance(model, Model):
        return model
    if isinstance(model, nn.Module):
        return wrap(model)
    raise InputError(f"scrub needs a faithlens Model or an nn.Module, not {type(model).__name__}")


def as_data(data: Any, graph: ComponentGraph | None = None) -> tuple[ScrubData, Behaviour | None]:
    """The pool of a scrub and its default behaviour. A task built from tensors (pixels,
    embeddings) needs ``graph``: its tensors become the columns of the graph's inputs."""
    from ..tasks.base import Task
    from ..tasks.tensors import TensorTask, require_tokens

    if isinstance(data, ScrubData):
        return data, None
    if isinstance(data, TensorTask):
        if graph is None:
            require_tokens(data, "scrub")
        assert graph is not None
        if isinstance(graph, TransformerGraph):
            refuse_transformer(graph.model, data)
        return ScrubData.from_task(data, graph.input_fields()), TaskMetric(data.metric)
    if isinstance(data, Task):
        if data.is_multi_token:
            from ..tasks.multi_token import refusal

            raise InputError(refusal(data, "scrub"))
        return ScrubData.from_task(data), TaskMetric(data.metric)
    if isinstance(data, Mapping):
        return ScrubData(dict(data)), None
    raise InputError(
        f"scrub data must be a ScrubData, a Task or a dict of columns, not {type(data).__name__}"
    )


def tensor_task_graph(
    model: Model, data: Any, graph: ComponentGraph | None
) -> ComponentGraph | None:
    """For a task built from tensors (whose columns are the graph's inputs): ``graph``, else
    the model's default graph, after checking the model (a transformer on tensors, a ViT on
    pixels, is refused before its graph is built). None for any other data: their graph is
    built after the data are checked."""
    from ..tasks.tensors import TensorTask

    if not isinstance(data, TensorTask):
        return None
    data.check_model(model, "scrub", logits=False)
    a = model.adapter
    if isinstance(graph, TransformerGraph) or (graph is None and a.n_layers and a.n_heads):
        refuse_transformer(model, data)
    return graph if graph is not None else graph_for(model)


def refuse_transformer(model: Model, task: Any) -> None:
    """A :class:`TransformerGraph` feeds token ids to its ``embed`` node: it cannot resample a
    task built from tensors."""
    raise InputError(
        f"scrub: {model.name} is a transformer whose inputs are tensors (a ViT on pixels) and "
        f"the task {task.name!r} is built from tensors, but a TransformerGraph feeds token ids "
        "to its embed node, so its head and MLP paths cannot be resampled from pixels. Scrub a "
        "CNN or any module through a LayerGraph (the default for a module without attention "
        "heads; or graph=faithlens.graph.LayerGraph(model, parents=..., inputs=...)), or "
        "measure the ViT's heads and MLPs with fl.patch"
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
        from .evaluate import dry_run_text  # the dry runs live in evaluate, which imports this

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
    g_tensors = tensor_task_graph(m, data, graph)
    pool, default_b = as_data(data, g_tensors)
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
    g0 = g_tensors if g_tensors is not None else graph if graph is not None else graph_for(m)
    g = g0
    for rw in hypothesis.rewrites:
        g = rw.apply(g)
    if references is not None:
        refs = references if isinstance(references, ScrubData) else as_data(references, g0)[0]
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
    checkpoint: str | os.PathLike[str] | None = None,
) -> tuple[list[np.ndarray], np.ndarray, EvalStats]:
    """Evaluate every root of a prepared plan: per-example behaviour for each root, and the KL
    of the scrubbed outputs (root 1) from the model's (root 0).

    Each chunk of reference rows is a work item of :meth:`Executor.map_model`: an executor with
    workers receives the chunk's rows and, once per run, the pickled graph, plan, data and
    behaviour, in which the model (and its modules and weights) is a reference its worker
    resolves to its own copy. Work that the standard pickle cannot send (a lambda or a local
    function as the behaviour or a ``phi``) runs in this process, with a warning. With
    ``checkpoint`` (a folder, :mod:`.checkpoint`), each finished chunk is saved there and the
    chunks a killed run finished are read back, not evaluated again."""
    n = len(prep.ref)
    ex = current_executor()
    chunks = ex.chunks(n, chunk_size(prep, batch_size, max_memory))
    store = None if checkpoint is None else ScrubCheckpoint(checkpoint, scrub_key(prep, chunks))
    saved = [store.load_chunk(i) if store is not None else None for i in range(len(chunks))]
    runs = _chunk_runs(prep, [c for c, s in zip(chunks, saved) if s is None])
    values: list[list[np.ndarray]] = [[] for _ in prep.plan.roots]
    kls: list[np.ndarray] = []
    stats = EvalStats()
    done = 0
    for i, (chunk, got) in enumerate(zip(chunks, saved)):
        if got is None:
            got = next(runs)
            if store is not None:
                store.save_chunk(i, got)
        vals, kl, st = got
        for j, v in enumerate(vals):
            values[j].append(v)
        if kl is not None:
            kls.append(kl)
        for f in fields(EvalStats):
            setattr(stats, f.name, getattr(stats, f.name) + getattr(st, f.name))
        done += chunk.stop - chunk.start
        if progress is not None:
            progress(done, n)
    return [np.concatenate(v) for v in values], (np.concatenate(kls) if kls else np.zeros(0)), stats


def _chunk_runs(prep: Prepared, chunks: list[slice]) -> Iterator[Chunk]:
    """Every chunk's (values, KL, stats) through the executor in force, in order."""
    g = prep.graph
    ex = current_executor()
    work = RowsWork(
        g,
        prep.plan,
        TableFeed(prep.table, prep.data, g.input_fields(), g.model.device),
        prep.table,
        prep.ref,
        prep.behaviour,
    )
    if isinstance(ex, InProcess):
        return ex.map_model(g.model, rows_chunk, chunks, Sent(work))
    try:
        sent = Sent.packed(work, g.model)
    except (pickle.PicklingError, TypeError, AttributeError) as e:
        _warn_here(e)
        here = Sent(work)
        return ex.map(lambda c: rows_chunk(g.model, c, here, _no_tick), chunks)
    return ex.map_model(g.model, rows_chunk, chunks, sent)


@dataclass(frozen=True)
class RowsWork:
    """What every chunk of reference rows needs: the (rewritten) graph, the plan, the feed of
    data, the references and the behaviour."""

    graph: ComponentGraph
    plan: Plan
    feed: TableFeed
    table: Table
    ref: np.ndarray
    behaviour: Behaviour


_WARNED: set[str] = set()
#: the worker's last unpickled work: (id of its model, digest) -> work
_UNPACKED: dict[tuple[int, str], RowsWork] = {}


def _warn_here(e: Exception) -> None:
    msg = (
        "scrub: this scrub's work cannot be sent to workers (it does not pickle: "
        f"{type(e).__name__}: {e}), so its chunks run in this process; define the behaviour's "
        "and phi functions at module level (no lambdas or local functions) to fan it out"
    )
    if msg not in _WARNED:
        _WARNED.add(msg)
        warnings.warn(msg, UserWarning, stacklevel=4)


def _no_tick() -> None:
    return None


def _model_refs(model: Model) -> dict[int, tuple[str, str]]:
    """id -> (kind, name) of the model and its modules, parameters and buffers."""
    refs: dict[int, tuple[str, str]] = {id(model): ("model", "")}
    for name, mod in model.module.named_modules():
        refs.setdefault(id(mod), ("module", name))
    for name, p in model.module.named_parameters():
        refs.setdefault(id(p), ("parameter", name))
    for name, b in model.module.named_buffers():
        refs.setdefault(id(b), ("buffer", name))
    return refs


class _Pickler(pickle.Pickler):
    def __init__(self, f: io.BytesIO, model: Model) -> None:
        super().__init__(f, protocol=pickle.HIGHEST_PROTOCOL)
        self._refs = _model_refs(model)

    def persistent_id(self, obj: Any) -> tuple[str, str] | None:
        return self._refs.get(id(obj))


class _Unpickler(pickle.Unpickler):
    def __init__(self, f: io.BytesIO, model: Model) -> None:
        super().__init__(f)
        self._model = model

    def persistent_load(self, pid: Any) -> Any:
        kind, name = pid
        m = self._model
        if kind == "model":
            return m
        get = {
            "module": m.module.get_submodule,
            "parameter": m.module.get_parameter,
            "buffer": m.module.get_buffer,
        }[kind]
        return get(name)


class Sent:
    """The work of every chunk: here (``Sent(work)``), or pickled with the model as a reference
    (:meth:`packed`), which :meth:`get` resolves to the model the chunk runs on."""

    def __init__(self, work: RowsWork | None = None) -> None:
        self._work = work
        self._blob: bytes | None = None
        self._digest = ""

    @classmethod
    def packed(cls, work: RowsWork, model: Model) -> Sent:
        """Raises what :mod:`pickle` raises for work it cannot send."""
        f = io.BytesIO()
        _Pickler(f, model).dump(work)
        out = cls()
        out._blob = f.getvalue()
        out._digest = hashlib.sha256(out._blob).hexdigest()
        return out

    def __getstate__(self) -> dict[str, Any]:
        if self._blob is None:
            raise pickle.PicklingError("unpacked scrub work is not sent: use Sent.packed")
        return {"_work": None, "_blob": self._blob, "_digest": self._digest}

    def get(self, model: Model) -> RowsWork:
        if self._work is not None:
            return self._work
        assert self._blob is not None
        key = (id(model), self._digest)
        work = _UNPACKED.get(key)
        if work is None:
            work = _Unpickler(io.BytesIO(self._blob), model).load()
            _UNPACKED.clear()  # one run's work at a time
            _UNPACKED[key] = work
        return work


def rows_chunk(
    model: Model, chunk: slice, sent: Sent, tick: Callable[[], None]
) -> tuple[list[np.ndarray], np.ndarray | None, EvalStats]:
    """Every root's behaviour on one chunk of reference rows, the KL of root 1, and the work
    the chunk's evaluation did (module-level: workers run it by name)."""
    w = sent.get(model)
    beh = w.behaviour
    stats = EvalStats()
    rows = torch.arange(chunk.start, chunk.stop)
    ref_rows = w.table.data.take(w.ref[rows.numpy()])
    pos = beh.positions(ref_rows)
    outs = w.graph.evaluate(w.plan, w.feed, rows, out_positions=pos, stats=stats)
    vals = [beh(o, ref_rows).detach().double().cpu().numpy() for o in outs]
    kl = None
    if len(outs) > 1 and outs[0].shape == outs[1].shape:
        lp, lq = beh.log_probs(outs[0]), beh.log_probs(outs[1])
        if lp is not None and lq is not None:
            kl = kl_to_original(lp, lq).detach().double().cpu().numpy()
    tick()
    return vals, kl, stats


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
