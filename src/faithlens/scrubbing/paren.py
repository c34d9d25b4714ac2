"""Redwood's causal-scrubbing hypotheses about the paren-balance checker, on ``zoo:paren``.

Redwood's write-up (main post section 5.1, the paren post) makes three claims about their
3-layer, 2-head balancer; ``examples/paren_heads.py`` found which heads of ``zoo:paren`` play
each role (docs/zoo.md):

=====================  =====================  ==========================================
Redwood's role         zoo:paren              what the hypothesis conditions on
=====================  =====================  ==========================================
proportion head 0.0    head 0.0               ``p_1`` (claim 2), via ``phi(p) = v (2p - 1)``
count heads 1.0, 2.0   heads 1.0, 1.1, 2.0    ``count_test`` and ``starts_with_open``
horizon head 2.1       head 2.1               ``horizon_test``; per position ``horizon_i``
=====================  =====================  ==========================================

Head 2.0 was not singled out by ``paren_heads.py``, but scrubbing shows it carries count evidence
(conditioning it on the count features keeps all that its exact output recovers), so claim 1 has
three count heads; ``"claim 1 (heads 1.0, 1.1)"`` is the version with the two role heads.

Our last MLP makes the decision from the heads' evidence (its direct contribution separates the
classes by 11.6 logits, the heads' by at most 3.3), so a head's paths to the output are stated as
*every path that avoids the other role heads*: the direct edge and the paths through the MLPs
(:meth:`ParenRoles.routes`: ``to("head.1.0", excluding=["head.1.1", "head.2.0", "head.2.1"])``).
Redwood's "direct paths" are the same claim on a model whose heads write the answer themselves.
Which heads play which role is a :class:`ParenRoles` (default: ``zoo:paren``'s), so the same
hypotheses apply to paren models trained with other seeds (``examples/paren_seeds.py``).

- **claim 1**: the output depends only on the count heads (conditioned on ``count_test`` and
  ``starts_with_open``, or on ``count_test`` alone: :func:`paren_hypotheses` builds both) and the
  horizon head (conditioned on ``horizon_test``); everything else shares one random datum.
- **claim 2**: each count head reads only its input at position 1, and that input depends only on
  head 0.0 through ``phi(p) = v (2 p - 1)`` (conditioned on ``p_1`` for strings that start with
  ``(``, one class for the others) and on the embeddings along paths that avoid head 0.0
  (conditioned on ``starts_with_open``); head 0.0's residual ``node - phi`` is resampled.
- **claim 3**: the horizon head's input at each position ``i`` depends only on ``horizon_i``
  (padding; END after ``(``; END after ``)``; ``p_i > 1/2``; ``p_i <= 1/2``), with ``p_i`` either
  the raw proportion or the proportion as head 0.0 weighs the parens (``adjusted p``).

:func:`paren_scrub_data` builds the pool with every feature as a column, :func:`paren_hypotheses`
the hypotheses, and :func:`replicate_paren` runs them all on the same references and random
numbers (paired comparisons) and returns a :class:`ParenReplication`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ..errors import InputError
from ..models.model import Model
from ..results import Result, with_intervals
from ..stats import Interval, mean_interval
from ..tasks import paren as par
from .data import ScrubData
from .data import field as column
from .evaluate import scrub
from .hypothesis import Hypothesis, InterpNode
from .metrics import BinaryCrossEntropy
from .paths import input_of, to
from .results import ScrubResult
from .rewrites import phi
from .samplers import SameFeature

PROPORTION_HEAD = "head.0.0"
#: The count heads: 1.0 and 1.1 (examples/paren_heads.py) and 2.0, which the scrubbing shows to
#: carry count evidence too (conditioning it on ``count_test`` and ``starts_with_open`` keeps all
#: that its exact output recovers; docs/replications.md).
COUNT_HEADS = ("head.1.0", "head.1.1", "head.2.0")
#: The count heads that examples/paren_heads.py found by patching and attribution.
ROLE_COUNT_HEADS = ("head.1.0", "head.1.1")
HORIZON_HEAD = "head.2.1"


def _head_index(head: str, what: str) -> tuple[int, int]:
    parts = head.split(".")
    if len(parts) != 3 or parts[0] != "head" or not (parts[1].isdigit() and parts[2].isdigit()):
        raise InputError(f"{what} must be a head named 'head.L.H' (e.g. 'head.1.0'), not {head!r}")
    return int(parts[1]), int(parts[2])


@dataclass(frozen=True)
class ParenRoles:
    """Which heads of a paren-balance model play the roles of Redwood's hypotheses.

    The defaults are ``zoo:paren``'s (examples/paren_heads.py, docs/replications.md). A model
    trained with another seed divides the work differently: find its roles with
    ``examples/paren_heads.py`` and pass them to :func:`paren_hypotheses` or
    :func:`replicate_paren`.

    Attributes:
        proportion: Redwood's head 0.0, which writes the proportion of open parens (claim 2
            rewrites its output at position 1 as ``phi(p)``); it must come before every count head.
        count: the heads conditioned on the count features (Redwood's 1.0 and 2.0).
        horizon: the head conditioned on the horizon test (Redwood's 2.1).
        role_count: the count heads that attribution and patching singled out, for the
            ``"claim 1 (heads ...)"`` variant; a subset of ``count``.
    """

    proportion: str = PROPORTION_HEAD
    count: tuple[str, ...] = COUNT_HEADS
    horizon: str = HORIZON_HEAD
    role_count: tuple[str, ...] = ROLE_COUNT_HEADS

    def __post_init__(self) -> None:
        object.__setattr__(self, "count", tuple(self.count))
        object.__setattr__(self, "role_count", tuple(self.role_count))
        layer = _head_index(self.proportion, "the proportion head")[0]
        _head_index(self.horizon, "the horizon head")
        if not self.count:
            raise InputError("ParenRoles needs at least one count head")
        for h in self.count:
            if _head_index(h, "a count head")[0] <= layer:
                raise InputError(
                    f"count head {h} must be in a later layer than the proportion head "
                    f"{self.proportion} (claim 2 explains what it reads from it)"
                )
        if len(set(self.count)) != len(self.count) or self.horizon in self.count:
            raise InputError(
                f"the count heads {list(self.count)} and the horizon head {self.horizon!r} must be "
                "distinct"
            )
        extra = [h for h in self.role_count if h not in self.count]
        if extra or not self.role_count:
            raise InputError(
                f"role_count must be a non-empty subset of the count heads {list(self.count)}; "
                + (f"these are not count heads: {extra}" if extra else "it is empty")
            )

    @property
    def heads(self) -> tuple[str, ...]:
        """The count and horizon heads: each gets its own node in claim 1."""
        return (*self.count, self.horizon)

    def check(self, model: Model) -> None:
        """Raise :class:`InputError` if a role names a head that ``model`` does not have."""
        for h in (self.proportion, *self.heads):
            layer, head = _head_index(h, "a role head")
            if layer >= model.n_layers or head >= model.n_heads:
                raise InputError(
                    f"{h} is not a head of {model.name} ({model.n_layers} layers, "
                    f"{model.n_heads} heads per layer); fix the ParenRoles"
                )

    def routes(self, head: str) -> Any:
        """The paths from ``head`` to the output that avoid the other role heads: a role head's
        node claims only the evidence that does not pass through another role head's node."""
        return to(head, excluding=[h for h in self.heads if h != head])


#: The hypotheses of :func:`paren_hypotheses`, in order, with Redwood's published % loss
#: recovered (main post and paren post; ``None``: no published number).
PAREN_HYPOTHESES: dict[str, float | None] = {
    "claim 1 (heads 1.0, 1.1)": None,
    "claim 1 (count only)": 88.0,
    "claim 1": 93.0,
    "claims 1+2": 88.0,
    "claims 1+3 (raw p)": None,
    "claims 1+3": 84.0,
    "claims 1+2+3": 72.0,
}


class PositionFeature:
    """The feature ``data[column][:, position]`` (a per-position class), named for printing."""

    def __init__(self, column: str, position: int) -> None:
        self.column = column
        self.position = position
        self.__name__ = self.__qualname__ = f"{column}[{position}]"

    def __call__(self, data: ScrubData) -> Any:
        return data[self.column][:, self.position]

    def __repr__(self) -> str:
        return self.__name__


def head_attention(model: Model, data: par.ParenData, head: str = PROPORTION_HEAD) -> Tensor:
    """The attention pattern ``[n, query, key]`` of ``head`` ("head.L.H") on ``data``."""
    L, H = _head_index(head, "head")
    site = f"module:blocks.{L}.attn.pattern"
    out = model.run(data.inputs(), cache=[site])
    return out.cache[site][:, H].detach().float().cpu()


def paren_scrub_data(
    model: Model, data: par.ParenData, roles: ParenRoles | None = None
) -> ScrubData:
    """The scrubbing pool for ``zoo:paren``: inputs, labels and every feature the hypotheses
    condition on (one column each; per-position classes are ``[n, n_ctx]``). The adjusted
    proportions use the attention of ``roles.proportion``."""
    roles = roles or ParenRoles()
    p = data.p_open
    so = data.starts_with_open
    ct = data.count_test
    # p_1 for strings that start open, one class (-1) for the others (Redwood's claim 2)
    p1 = torch.where(so, p[:, 1].double(), torch.full_like(p[:, 1].double(), -1.0))
    adj = par.adjusted_p_open(data.ids, head_attention(model, data, roles.proportion))
    return ScrubData(
        ids=data.ids,
        mask=data.mask,
        label=data.labels,
        pos0=torch.zeros(len(data), dtype=torch.long),
        count_test=ct.long(),
        starts_open=so.long(),
        count_and_open=(2 * ct.long() + so.long()),
        horizon_test=data.horizon_test.long(),
        length=data.lengths.long(),
        p1=torch.round(p1 * 10_000).long(),
        horizon_raw=data.horizon_classes(),
        horizon_adjusted=data.horizon_classes(adj.to(p.dtype)),
        p_raw=torch.nan_to_num(p.double(), nan=0.5),
    )


def open_direction(model: Model, data: par.ParenData, head: str = PROPORTION_HEAD) -> Tensor:
    """The "open direction" ``v`` of the proportion head: the least-squares fit of its output at
    position 1 (over ``data``) as ``c + v (2 p_1 - 1)``. ``phi(p) = v (2 p - 1)``."""
    layer, h = _head_index(head, "the proportion head")
    out = model.run(data.inputs(), cache=[head])
    z = out.cache[head][:, 1].detach().double().cpu()  # [n, d_head]
    w_o, b_o = model.adapter.o_proj(layer)
    del b_o
    dh = z.shape[-1]
    y = z @ w_o[:, h * dh : (h + 1) * dh].detach().double().cpu().T  # [n, d_model]
    x = 2 * data.p_open[:, 1].double() - 1
    xc = x - x.mean()
    v = (xc[:, None] * (y - y.mean(0))).sum(0) / (xc * xc).sum().clamp(min=1e-12)
    return v.float()


def _phi_fn(v: Tensor) -> Callable[[ScrubData], Tensor]:
    def phi_open(d: ScrubData) -> Tensor:
        p = d["p_raw"].to(v.device, torch.float32)  # [n, T]
        return (2 * p - 1)[..., None] * v.to(p.device)

    return phi_open


def _add_count(
    h: Hypothesis,
    roles: ParenRoles,
    head: str,
    feature: str,
    claim2: bool,
    other: Any,
    proportion: str,
) -> InterpNode:
    node = h.add(f"count {head[5:]}", roles.routes(head), feature=column(feature), other=other)
    if claim2:
        at1 = node.add(f"{head[5:]} input at 1", input_of(positions=[1]), sampler="exact")
        at1.add(f"{head[5:]} p_1", to(proportion), feature=column("p1"))
        at1.add(
            f"{head[5:]} open",
            to("embed", excluding=[proportion, f"{roles.proportion}/res"]),
            feature=column("starts_open"),
        )
    return node


def _add_horizon(
    h: Hypothesis, roles: ParenRoles, claim3: str | None, n_ctx: int, other: Any
) -> InterpNode:
    node = h.add(
        f"horizon {roles.horizon[5:]}",
        roles.routes(roles.horizon),
        feature=column("horizon_test"),
        other=other,
    )
    if claim3 is not None:
        for i in range(n_ctx):
            node.add(
                f"horizon input at {i}",
                input_of(positions=[i]),
                feature=PositionFeature(f"horizon_{claim3}", i),
            )
    return node


def paren_hypothesis(
    name: str,
    *,
    count_feature: str = "count_and_open",
    claim2: bool = False,
    claim3: str | None = None,
    v: Tensor | None = None,
    n_ctx: int = par.N_CTX,
    same_length: bool = True,
    roles: ParenRoles | None = None,
    count_heads: Sequence[str] | None = None,
) -> Hypothesis:
    """One hypothesis about ``zoo:paren`` (see the module docstring).

    Args:
        count_feature: what the count heads are conditioned on: ``"count_and_open"`` (Redwood's
            claim 1) or ``"count_test"``.
        claim2: the count heads read only their input at position 1, explained by ``phi`` of
            head 0.0 and the embeddings (needs ``v``, the open direction).
        roles: which heads play which role (default: ``zoo:paren``'s).
        count_heads: the heads conditioned on ``count_feature`` (default ``roles.count``); the
            other count heads of ``roles`` are left to the random datum.
        claim3: ``"raw"`` or ``"adjusted"``: the horizon head's input at each position is
            conditioned on that position's horizon class.
        same_length: the unimportant inputs *inside* a head (the positions it is claimed not
            to read) are drawn from strings of the same length as the head's datum (Redwood's
            node for the padding mask, conditioned on the input length); otherwise at random.
    """
    roles = roles or ParenRoles()
    heads = roles.count if count_heads is None else tuple(count_heads)
    unknown = [c for c in heads if c not in roles.count]
    if unknown or not heads:
        raise InputError(
            f"count_heads must be a non-empty subset of roles.count {list(roles.count)}; got "
            f"{list(heads)}"
        )
    rewrites = []
    proportion = roles.proportion
    if claim2:
        if v is None:
            raise InputError("claim 2 needs v, the open direction (open_direction(model, data))")
        rewrites.append(phi(roles.proportion, _phi_fn(v), name="phi"))
        proportion = f"{roles.proportion}/phi"
    h = Hypothesis(
        name, rewrites=rewrites, mixed_lengths=_mixed_lengths(claim2, claim3, same_length)
    )
    other = SameFeature(column("length")) if same_length else None
    for head in heads:
        _add_count(h, roles, head, count_feature, claim2, other, proportion)
    _add_horizon(h, roles, claim3, n_ctx, other)
    return h


def _mixed_lengths(claim2: bool, claim3: str | None, same_length: bool) -> str | None:
    """Why claims 2 and 3 combine strings of different lengths (Redwood's hypotheses do): the
    claimed position's input comes from a string that agrees on the position's feature, of any
    length, while the rest of the head's input (and so its padding mask) comes from a string of
    the head's own length. Stated only with ``same_length`` (Redwood's padding-mask node);
    without it the mask is not kept consistent, and the scrub warns."""
    if not same_length or not (claim2 or claim3):
        return None
    parts = []
    if claim2:
        parts.append(
            "claim 2: the count heads read only their input at position 1, which comes from a "
            "string agreeing on the count features, of any length"
        )
    if claim3:
        parts.append(
            "claim 3: the horizon head's input at each position comes from a string with the "
            "same horizon class there (padding is a class), of any length"
        )
    return (
        "; ".join(parts) + "; the rest of each head's input, and so its padding mask, comes from "
        "a string of the head's own length (Redwood's padding-mask node, conditioned on length)"
    )


def paren_hypotheses(
    v: Tensor,
    *,
    n_ctx: int = par.N_CTX,
    same_length: bool = True,
    roles: ParenRoles | None = None,
) -> dict[str, Hypothesis]:
    """The hypotheses of Redwood's table, in order (keys of :data:`PAREN_HYPOTHESES`).
    ``"claim 1 (heads 1.0, 1.1)"`` conditions only ``roles.role_count``."""
    roles = roles or ParenRoles()
    kw: dict[str, Any] = {"n_ctx": n_ctx, "same_length": same_length, "v": v, "roles": roles}
    return {
        "claim 1 (heads 1.0, 1.1)": paren_hypothesis(
            "claim 1 (heads 1.0, 1.1)", count_heads=roles.role_count, **kw
        ),
        "claim 1 (count only)": paren_hypothesis(
            "claim 1 (count only)", count_feature="count_test", **kw
        ),
        "claim 1": paren_hypothesis("claim 1", **kw),
        "claims 1+2": paren_hypothesis("claims 1+2", claim2=True, **kw),
        "claims 1+3 (raw p)": paren_hypothesis("claims 1+3 (raw p)", claim3="raw", **kw),
        "claims 1+3": paren_hypothesis("claims 1+3", claim3="adjusted", **kw),
        "claims 1+2+3": paren_hypothesis("claims 1+2+3", claim2=True, claim3="adjusted", **kw),
    }


#: The comparisons of Redwood's pattern: (better, worse) hypothesis names.
PAREN_COMPARISONS: tuple[tuple[str, str], ...] = (
    ("claim 1", "claim 1 (heads 1.0, 1.1)"),
    ("claim 1", "claim 1 (count only)"),
    ("claim 1", "claims 1+2"),
    ("claim 1", "claims 1+3"),
    ("claims 1+2", "claims 1+2+3"),
    ("claims 1+3", "claims 1+2+3"),
    ("claims 1+3", "claims 1+3 (raw p)"),
)


@dataclass(frozen=True)
class ParenReplication(Result):
    """Redwood's paren-balance hypotheses scrubbed on ``zoo:paren``.

    ``table``: per hypothesis, the scrubbed loss and % loss recovered (vs the random-input
    baseline) with standard errors and confidence intervals, next to Redwood's published
    number. ``comparisons``: paired differences of the scrubbed loss between hypotheses (same
    references and random numbers), with their CIs.

    ``intervals()``: ``loss`` (its interval the normal one from ``loss_se``: the table keeps no
    other), ``recovered`` and ``difference`` (the comparisons), one element per row;
    ``to_frame()`` is ``table`` with the uniform columns ``q, q_se, q_ci_low, q_ci_high, level``.
    """

    model: str
    n: int
    seed: int
    level: float
    same_length: bool
    original_loss: float
    baseline_loss: float
    table: pd.DataFrame
    comparisons: pd.DataFrame
    warnings: dict[str, list[str]] = field(default_factory=dict)
    kind = "paren_replication"

    def intervals(self) -> dict[str, Interval]:
        t, c = self.table, self.comparisons

        def col(frame: pd.DataFrame, name: str) -> np.ndarray:
            return frame[name].to_numpy(dtype=np.float64)

        r = [col(t, k) for k in ("recovered", "recovered_se", "recovered_low", "recovered_high")]
        d = [col(c, k) for k in ("difference", "se", "low", "high")]
        return {
            "loss": Interval.from_se(col(t, "loss"), col(t, "loss_se"), self.level),
            "recovered": Interval(r[0], r[1], r[2], r[3], self.level),
            "difference": Interval(d[0], d[1], d[2], d[3], self.level),
        }

    def to_frame(self) -> pd.DataFrame:
        old = ("loss_se", "recovered_se", "recovered_low", "recovered_high")
        return with_intervals(self.table, self.intervals(), drop=old)

    def recovered(self, name: str) -> float:
        return float(dict(zip(self.table.hypothesis, self.table.recovered))[name])

    def summary(self) -> str:
        pct = round(100 * self.level)
        lines = [
            f"Redwood's paren hypotheses on {self.model} ({self.n} references, seed {self.seed}); "
            f"BCE of the model {self.original_loss:.4f}, random input {self.baseline_loss:.3f}",
            f"{'hypothesis':<22} scrubbed BCE; % recovered ({pct}% CIs); Redwood's % recovered",
        ]
        ivs = self.intervals()
        for i, r in enumerate(self.table.to_dict("records")):
            pub = "-" if pd.isna(r["published"]) else f"{r['published']:.0f}"
            lines.append(
                f"{r['hypothesis']:<22} {ivs['loss'][i]:.3f}; {ivs['recovered'][i]:.1f} %; {pub}"
            )
        lines.append("paired differences of the scrubbed loss (worse - better):")
        for i, c in enumerate(self.comparisons.to_dict("records")):
            verdict = "holds" if c["low"] > 0 else "not shown"
            lines.append(
                f"  {c['worse']!r} - {c['better']!r}: {ivs['difference'][i]:+.3f} ({verdict})"
            )
        for name, ws in self.warnings.items():
            for w in ws:
                lines.append(f"warning ({name}): {w.splitlines()[0]}")
        return "\n".join(lines)


def replicate_paren(
    model: Model,
    n: int = 2000,
    *,
    pool: int = 4000,
    seed: int = 0,
    names: Sequence[str] | None = None,
    same_length: bool = True,
    roles: ParenRoles | None = None,
    level: float = 0.95,
    n_boot: int = 1000,
    progress: Callable[[str], None] | None = None,
) -> tuple[ParenReplication, dict[str, ScrubResult]]:
    """Scrub Redwood's paren hypotheses on ``model`` (``fl.load("zoo:paren")``).

    ``pool`` strings are drawn from the training mixture (seeded); ``n`` references are drawn
    from them, the same for every hypothesis, with the same random numbers, so differences
    between hypotheses are paired. ``roles`` says which heads play Redwood's roles (default:
    ``zoo:paren``'s). Returns the summary and every :class:`ScrubResult`.
    """
    names = list(PAREN_HYPOTHESES) if names is None else list(names)
    unknown = [k for k in names if k not in PAREN_HYPOTHESES]
    if unknown:
        raise InputError(f"unknown paren hypotheses {unknown}; known: {list(PAREN_HYPOTHESES)}")
    if n < 2 or pool < 2:
        raise InputError(f"n and pool must be at least 2 (got n={n}, pool={pool})")
    roles = roles or ParenRoles()
    roles.check(model)
    pd_data = par.ParenData.sample(pool, seed=seed)
    data = paren_scrub_data(model, pd_data, roles)
    v = open_direction(model, pd_data, roles.proportion)
    hyps = paren_hypotheses(v, n_ctx=pd_data.n_ctx, same_length=same_length, roles=roles)
    beh = BinaryCrossEntropy("label", positions_column="pos0")
    results: dict[str, ScrubResult] = {}
    for name in names:
        if progress is not None:
            progress(name)
        results[name] = scrub(
            model, data, hyps[name], n=n, behaviour=beh, seed=seed, level=level, n_boot=n_boot
        )
    rows = []
    for name, r in results.items():
        lo, hi = r.recovered_ci()
        row = r.table.set_index("quantity")["se"].to_dict()
        rows.append(
            {
                "hypothesis": name,
                "loss": r.expectation,
                "loss_se": r.se,
                "recovered": r.recovered(),
                "recovered_se": float(row["% recovered vs random"]),
                "recovered_low": lo,
                "recovered_high": hi,
                "published": PAREN_HYPOTHESES[name],
                "distinct_data": int(r.stats.get("distinct_data", 0)),
            }
        )
    comps = []
    for better, worse in PAREN_COMPARISONS:
        if better in results and worse in results:
            d = results[worse].scrubbed - results[better].scrubbed
            iv = mean_interval(d, n_boot=n_boot, level=level, seed=seed)
            comps.append(
                {
                    "better": better,
                    "worse": worse,
                    "difference": float(iv.estimate),
                    "se": float(iv.se),
                    "low": float(iv.low),
                    "high": float(iv.high),
                }
            )
    first = next(iter(results.values()))
    rep = ParenReplication(
        model=model.name,
        n=n,
        seed=seed,
        level=level,
        same_length=same_length,
        original_loss=first.original_expectation,
        baseline_loss=float(first.baseline("random").mean()),
        table=pd.DataFrame(rows),
        comparisons=pd.DataFrame(
            comps, columns=["better", "worse", "difference", "se", "low", "high"]
        ),
        warnings={k: list(r.warnings) for k, r in results.items() if r.warnings},
    )
    return rep, results


__all__ = [
    "COUNT_HEADS",
    "HORIZON_HEAD",
    "PAREN_COMPARISONS",
    "PAREN_HYPOTHESES",
    "PROPORTION_HEAD",
    "ParenRoles",
    "ROLE_COUNT_HEADS",
    "ParenReplication",
    "PositionFeature",
    "head_attention",
    "open_direction",
    "paren_hypotheses",
    "paren_hypothesis",
    "paren_scrub_data",
    "replicate_paren",
]
