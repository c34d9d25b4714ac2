"""The logit lens over layers and direct logit attribution, on a task's answers.

- :func:`logit_lens`: the residual stream after (or before) each layer read straight through the
  model's own final norm and unembedding at each example's metric position: the answer's logit
  difference, its probability and its rank, with bootstrap confidence intervals over examples.
- :func:`direct_logit_attribution`: the final residual stream split into its components (the
  embedding, every attention head through the output projection, every attention output bias,
  every MLP) and each one's direct contribution to the answer's logit difference through the
  unembedding, with the final norm's scale frozen at the run's own value (the usual
  approximation: the norm is linear once its scale is fixed). With the scale frozen the parts
  add up to the logit difference read from the final residual exactly.

Both share :func:`faithlens.representations.checks.lens.unembed` and
:func:`faithlens.representations.checks.writing.component_vectors` with the representation
checks (the readable and who-writes-it checks), so they are computed once, one way.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .. import stats, validate
from ..errors import InputError
from ..executor import Executor, current_executor, on_executor
from ..models.model import Inputs, Model
from ..models.sites import Site
from ..tasks.base import Task
from ..tasks.metrics import AnswerSet
from .checks.lens import unembed
from .checks.writing import component_vectors, components
from .lens_results import DirectLogitAttribution, LayerLensResult

Progress = Callable[[int, int], None]
SITES = ("resid_pre", "resid_mid", "resid_post")
#: The largest |sum of components - residual| accepted, relative to the residual's norm, before
#: a model's residual stream is called non-additive (a post-norm or sandwich-norm block).
ADDITIVE_TOLERANCE = 1e-3


def _check_common(
    model: Model, data: Task, which: str, n_boot: int, level: float, seed: int, fn: str
) -> None:
    if not isinstance(data, Task):
        raise validate.fail(
            "data",
            type(data).__name__,
            "is not a Task",
            "give a fl.Task (fl.Task.from_prompts, or a task builder such as fl.tasks.ioi)",
        )
    validate.choice("which", which, ("clean", "corrupt"))
    validate.n_boot(n_boot)
    validate.level(level)
    validate.nonnegative_int("seed", seed)
    data.check_model(model, fn, multi_token=fn == "logit_lens")
    if isinstance(data.metric, AnswerSet):
        raise validate.fail(
            "data",
            data.name,
            "scores sets of answers (AnswerSet, padded by repeating members), but the lenses "
            "read one correct answer against the mean logit of the wrong ones",
            "give one correct and one (or more distinct) wrong answer per example",
        )
    model.adapter.unembed_weight()  # a model without an unembedding is refused here


def _layers(model: Model, layers: int | Sequence[int] | None) -> list[int]:
    n = model.n_layers
    if layers is None:
        return list(range(n))
    chosen = [layers] if isinstance(layers, int) else list(layers)
    if not chosen:
        raise validate.fail("layers", layers, "is empty", f"give layers in 0..{n - 1} or None")
    for L in chosen:
        validate.int_in_range("layers", L, 0, n - 1, fix=f"give layers in 0..{n - 1}")
    return sorted(set(chosen))


def _chunks(model: Model, data: Task, n_vectors: int, max_memory: int | None) -> list[slice]:
    """Example chunks sized so that one chunk's cached vectors and vocabulary rows fit (a
    multi-token task reads ``k`` positions: ``k`` vectors per layer and ``k`` vocabulary rows,
    in float64 for the teacher-forced log-probabilities)."""
    vocab = int(model.adapter.unembed_weight()[0].shape[0])
    k = int(data.reads.shape[1]) if data.is_multi_token and data.reads is not None else 1
    width = 4 if k == 1 else 8
    per_item = 4 * (k * n_vectors * model.d_model + data.seq_len * model.d_model)
    per_item += width * 3 * k * vocab
    ex = current_executor()
    size = ex.chunk_size(
        len(data),
        per_item,
        device=model.device,
        max_memory=max_memory,
        tokens_per_item=data.seq_len,
    )
    return ex.chunks(len(data), size)


def _answer_reads(logits: Tensor, answers: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per row: logit(correct) - mean logit(wrong), p(correct), and correct's rank (0: top)."""
    lg = logits.double()
    ans = answers.to(lg.device)
    picked = lg.gather(-1, ans)
    diff = picked[:, 0] - picked[:, 1:].mean(-1)
    prob = torch.softmax(lg, -1).gather(-1, ans[:, :1])[:, 0]
    rank = (lg > picked[:, :1]).sum(-1).double()
    return diff, prob, rank


def _inputs(data: Task, which: str, rows: slice) -> tuple[Inputs, Tensor, Tensor]:
    inputs = (data.clean if which == "clean" else data.corrupt).select(rows)
    return inputs, data.positions[rows], data.answers[rows]


def _ticker(progress: Progress | None, total: int) -> Callable[[], None]:
    """A ``tick`` that calls ``progress(done, total)`` after each chunk."""
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    return tick


def _single_reads(
    model: Model, data: Task, which: str, names: list[str], rows: slice
) -> tuple[np.ndarray, np.ndarray]:
    """A chunk's model logit difference ``[b]`` and lens reads ``[3, layers, b]``."""
    inputs, pos, ans = _inputs(data, which, rows)
    out = model.run(inputs, cache=[Site(s, positions=pos) for s in names], logits_at=pos)
    assert out.logits is not None
    reads = np.zeros((3, len(names), len(ans)))
    for i, name in enumerate(names):
        triple = _answer_reads(unembed(model, out.cache[name][:, 0]), ans)
        for q in range(3):
            reads[q, i] = triple[q].cpu().numpy()
    return _answer_reads(out.logits[:, 0], ans)[0].cpu().numpy(), reads


def _seq_logprob(logits: Tensor, answers: Tensor, mask: Tensor) -> Tensor:
    """log p(answer) by teacher forcing from logits ``[b, k, vocab]`` at the positions read."""
    lp = torch.log_softmax(logits.double(), -1)
    picked = lp.gather(-1, answers.to(lp.device)[..., None])[..., 0]
    return picked.masked_fill(~mask.to(lp.device).bool(), 0.0).sum(-1)


def _multi_reads(
    model: Model, data: Task, which: str, names: list[str], rows: slice
) -> tuple[np.ndarray, np.ndarray]:
    """As :func:`_single_reads` for a multi-token task: per layer the task's metric under the
    lens (``log p(correct) - log p(wrong)``, each continuation teacher-forced in its own run),
    the probability of the whole correct continuation and the rank of its first token."""
    final: Tensor | float = 0.0
    reads: np.ndarray | None = None
    for part, sign in data.parts():
        assert part.reads is not None and part.answer_mask is not None
        inputs = (part.clean if which == "clean" else part.corrupt).select(rows)
        at, ans, mask = part.reads[rows], part.answers[rows], part.answer_mask[rows]
        out = model.run(inputs, cache=[Site(s, positions=at) for s in names], logits_at=at)
        assert out.logits is not None
        final = final + sign * _seq_logprob(out.logits, ans, mask).cpu()
        if reads is None:
            reads = np.zeros((3, len(names), len(ans)))
        for i, name in enumerate(names):
            x = out.cache[name]  # [b, k, d]
            lg = unembed(model, x.reshape(-1, x.shape[-1])).reshape(*x.shape[:2], -1)
            lp = _seq_logprob(lg, ans, mask).cpu()
            reads[0, i] += sign * lp.numpy()
            if sign > 0:  # the correct continuation
                reads[1, i] = lp.exp().numpy()
                first = lg[:, 0].double()
                top = first.gather(-1, ans[:, :1].to(first.device))
                reads[2, i] = (first > top).sum(-1).double().cpu().numpy()
    assert reads is not None and isinstance(final, Tensor)
    return final.numpy(), reads


@on_executor
def logit_lens(
    model: Model,
    data: Task,
    *,
    layers: int | Sequence[int] | None = None,
    site: str = "resid_post",
    which: str = "clean",
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    max_memory: int | None = None,
    progress: Progress | None = None,
    executor: str | Executor | None = None,
) -> LayerLensResult:
    """The logit lens: ``site.L`` (the residual stream after layer ``L`` by default) at each
    example's metric position, read through the model's final norm and unembedding.

    Args:
        data: a :class:`~faithlens.Task`; its ``answers`` (correct, wrong...) are read at its
            ``positions``.
        layers: the layers to read (default: all).
        site: ``"resid_post"``, ``"resid_mid"`` or ``"resid_pre"``.
        which: read the ``"clean"`` or the ``"corrupt"`` inputs.
        n_boot, level, seed: the bootstrap over examples.
        max_memory: bytes one chunk of examples may use; default: the configured budget.
        progress: called as ``progress(done, total)`` after each chunk.
        executor: where the chunks of examples run (``"ray"``, an
            :class:`~faithlens.executor.Executor` or ``None``: the one in force); the numbers
            do not change.

    Returns a :class:`LayerLensResult`: per layer the mean logit difference
    (correct minus the mean of the wrong answers), probability and rank (0: the top token) of
    the correct answer, with CIs, and the model's own logit difference for comparison.

    A multi-token task (:meth:`Task.multi_token`) is read at every position its metric reads:
    ``logit_diff`` is then its metric under the lens (``log p(correct) - log p(wrong)``, or
    ``log p(correct)`` without wrong answers, teacher-forced; ``model_logit_diff`` the model's
    own), ``prob`` the probability of the whole correct continuation and ``rank`` the rank of
    its first token; ``meta["metric"]`` names the metric.
    """
    _check_common(model, data, which, n_boot, level, seed, "logit_lens")
    validate.choice("site", site, SITES)
    chosen = _layers(model, layers)
    validate.max_memory(max_memory)
    names = [f"{site}.{L}" for L in chosen]
    for name in names:
        model.site_info(name)
    n = len(data)
    reads = np.zeros((3, len(chosen), n))
    final = np.zeros(n)
    chunks = _chunks(model, data, len(chosen), max_memory)
    tick = _ticker(progress, len(chunks))
    runs = current_executor().map_model(model, lens_chunk, chunks, data, which, names, tick=tick)
    for rows, (fin_rows, reads_rows) in zip(chunks, runs):
        final[rows], reads[:, :, rows] = fin_rows, reads_rows
    ivs = [stats.mean_interval(reads[q], n_boot=n_boot, level=level, seed=seed) for q in range(3)]
    fin = stats.mean_interval(final, n_boot=n_boot, level=level, seed=seed)
    parts = [[np.asarray(p, dtype=np.float64).reshape(-1) for p in iv.parts] for iv in ivs]
    return LayerLensResult(
        layers=chosen,
        site=site,
        logit_diff=parts[0][0],
        logit_diff_se=parts[0][1],
        logit_diff_low=parts[0][2],
        logit_diff_high=parts[0][3],
        prob=parts[1][0],
        prob_se=parts[1][1],
        prob_low=parts[1][2],
        prob_high=parts[1][3],
        rank=parts[2][0],
        rank_se=parts[2][1],
        rank_low=parts[2][2],
        rank_high=parts[2][3],
        per_example=reads,
        model_logit_diff=float(fin.estimate),
        model_logit_diff_se=float(fin.se),
        model_logit_diff_low=float(fin.low),
        model_logit_diff_high=float(fin.high),
        which=which,
        model=model.name,
        task=data.name,
        level=level,
        n_boot=n_boot,
        seed=seed,
        meta={"metric": data.metric.name} if data.is_multi_token else {},
    )


def lens_chunk(
    model: Model,
    rows: slice,
    data: Task,
    which: str,
    names: list[str],
    tick: Callable[[], None],
) -> tuple[np.ndarray, np.ndarray]:
    """One chunk of examples of :func:`logit_lens` (a work item of
    :meth:`~faithlens.executor.Executor.map_model`): the model's own logit difference
    ``[rows]`` and the lens reads ``[3, layers, rows]``."""
    read = _multi_reads if data.is_multi_token else _single_reads
    final, reads = read(model, data, which, names, rows)
    tick()
    return final, reads


def frozen_norm(model: Model, x: Tensor) -> tuple[Callable[[Tensor], Tensor], Tensor]:
    """The final norm with its scale frozen at the residuals ``x`` ``[b, d]``: a linear map of
    vectors ``[b, ..., d]`` (each row scaled by its own example's scale) and the constant term
    ``[d]`` (the norm's bias), in float64. A LayerNorm (centred) or an RMSNorm (a gain ``w`` or
    ``1 + w``, read off the module); anything else is refused, checked on ``x`` itself."""
    x = x.double()
    d = x.shape[-1]
    if "ln_final" not in model.adapter.site_table:
        return (lambda v: v.double()), torch.zeros(d, dtype=torch.float64, device=x.device)
    norm = model.module.get_submodule(model.adapter.site_info("ln_final").hook.module)
    centred = isinstance(norm, nn.LayerNorm)
    eps = getattr(norm, "eps", getattr(norm, "variance_epsilon", None))
    if not isinstance(eps, float):
        raise InputError(
            f"{model.name}: its final norm ({type(norm).__name__}) has no eps, so it is not a "
            "LayerNorm or an RMSNorm; direct logit attribution cannot freeze its scale"
        )
    dt = model.dtype
    with torch.no_grad():
        if isinstance(norm, nn.LayerNorm):
            w = norm.weight if norm.weight is not None else torch.ones(d)
            gain = w.detach().double().to(x.device)
            b = norm.bias
            bias = b.detach().double().to(x.device) if b is not None else 0 * gain
        else:  # an RMSNorm: its gain is what it makes of a row of ones
            ones = torch.ones(1, 1, d, dtype=dt, device=model.device)
            gain = norm(ones)[0, 0].double().to(x.device) * math.sqrt(1.0 + eps)
            bias = torch.zeros(d, dtype=torch.float64, device=x.device)
        actual = norm(x.to(device=model.device, dtype=dt)[:, None, :])[:, 0].double().to(x.device)

    def centre(v: Tensor) -> Tensor:
        return v - v.mean(-1, keepdim=True) if centred else v

    scale = torch.sqrt(centre(x).pow(2).mean(-1) + eps)  # [b]

    def linear(v: Tensor) -> Tensor:
        s = scale.reshape(-1, *([1] * (v.dim() - 1)))
        return gain * centre(v.double()) / s

    err = float((linear(x) + bias - actual).abs().max())
    if err > 1e-3 * max(1.0, float(actual.abs().max())):
        raise InputError(
            f"{model.name}: its final norm ({type(norm).__name__}) is not a LayerNorm or an "
            f"RMSNorm (a frozen-scale reconstruction is off by {err:.3g}); direct logit "
            "attribution cannot freeze its scale"
        )
    return linear, bias


@on_executor
def direct_logit_attribution(
    model: Model,
    data: Task,
    *,
    which: str = "clean",
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    max_memory: int | None = None,
    progress: Progress | None = None,
    executor: str | Executor | None = None,
) -> DirectLogitAttribution:
    """Direct logit attribution: each component's direct contribution to the answer's logit
    difference (correct minus the mean of the wrong answers) at each example's metric position.

    The final residual stream is the sum of the embedding, every head (through the output
    projection), every attention output bias and every MLP; each is mapped through the final
    norm with its scale frozen at the example's own and dotted with ``W_U[correct] - mean
    W_U[wrong]``. The norm's bias and the unembedding's bias are one more component, ``bias``.
    The parts add up, per example, to the logit difference read from the final residual
    (``total``; on the supported families the model's own); ``residual`` is the largest gap.

    Args: as :func:`logit_lens` (no layers: every component of every layer).

    Returns a :class:`DirectLogitAttribution` with each component's mean contribution and CI.
    """
    _check_common(model, data, which, n_boot, level, seed, "direct_logit_attribution")
    validate.max_memory(max_memory)
    last = model.n_layers - 1
    target = f"resid_post.{last}"
    comps = components(model, "resid_post", last)
    n = len(data)
    contrib = np.zeros((len(comps) + 1, n))
    total = np.zeros(n)
    chunks = _chunks(model, data, len(comps) + 1, max_memory)
    tick = _ticker(progress, len(chunks))
    args = (data, which, comps, target)
    runs = current_executor().map_model(model, dla_chunk, chunks, *args, tick=tick)
    for rows, (parts_rows, total_rows) in zip(chunks, runs):
        contrib[:, rows], total[rows] = parts_rows, total_rows
    residual = float(np.max(np.abs(contrib.sum(0) - total)))
    iv = stats.mean_interval(contrib, n_boot=n_boot, level=level, seed=seed)
    tiv = stats.mean_interval(total, n_boot=n_boot, level=level, seed=seed)
    est, se, lo, hi = (np.asarray(p, dtype=np.float64).reshape(-1) for p in iv.parts)
    return DirectLogitAttribution(
        components=[c[0] for c in comps] + ["bias"],
        layer=[c[2] for c in comps] + [None],
        head=[c[3] for c in comps] + [None],
        contribution=est,
        contribution_se=se,
        contribution_low=lo,
        contribution_high=hi,
        per_example=contrib,
        total=float(tiv.estimate),
        total_se=float(tiv.se),
        total_low=float(tiv.low),
        total_high=float(tiv.high),
        residual=residual,
        which=which,
        model=model.name,
        task=data.name,
        level=level,
        n_boot=n_boot,
        seed=seed,
    )


def dla_chunk(
    model: Model,
    rows: slice,
    data: Task,
    which: str,
    comps: list[tuple[str, str, int | None, int | None]],
    target: str,
    tick: Callable[[], None],
) -> tuple[np.ndarray, np.ndarray]:
    """One chunk of examples of :func:`direct_logit_attribution` (a work item of
    :meth:`~faithlens.executor.Executor.map_model`): the contributions ``[components + 1,
    rows]`` (the last row: the biases) and the logit difference read from the final residual
    ``[rows]``."""
    W, b = model.adapter.unembed_weight()
    W = W.detach()
    inputs, pos, ans = _inputs(data, which, rows)
    vecs, resid = component_vectors(model, inputs, pos, comps, target)
    gap = float((vecs.sum(1) - resid).norm(dim=-1).max())
    if gap > ADDITIVE_TOLERANCE * max(1.0, float(resid.norm(dim=-1).max())):
        raise InputError(
            f"{model.name}: its final residual stream is not the sum of its components "
            f"(off by {gap:.3g}; a post-norm or sandwich-norm block?), so direct logit "
            "attribution does not apply"
        )
    linear, bias = frozen_norm(model, resid)
    a = ans.to(W.device)
    # the answers' rows in float64 (exact: what rows of the whole matrix in float64 would be)
    dirs = (W[a[:, 0]].double() - W[a[:, 1:]].double().mean(1)).to(linear(resid).device)
    parts = (linear(vecs) * dirs[:, None, :]).sum(-1)  # [b, C]
    const = (bias[None] * dirs).sum(-1)
    if b is not None:
        bb = b.detach().double().to(a.device)
        const = const + (bb[a[:, 0]] - bb[a[:, 1:]].mean(1)).to(const.device)
    out = np.zeros((len(comps) + 1, parts.shape[0]))
    out[: len(comps)] = parts.T.cpu().numpy()
    out[len(comps)] = const.cpu().numpy()
    tick()
    return out, _answer_reads(unembed(model, resid), ans)[0].cpu().numpy()


__all__ = [
    "ADDITIVE_TOLERANCE",
    "SITES",
    "direct_logit_attribution",
    "dla_chunk",
    "frozen_norm",
    "lens_chunk",
    "logit_lens",
]
