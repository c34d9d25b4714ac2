"""The component graph: a model as a DAG of components, for path-level methods.

Path-level methods (causal scrubbing, path patching) need more than sites: they need to know
which components read which, so that a receiver's input can be rebuilt from senders evaluated on
*different* inputs. This module describes a model as a graph and evaluates *treeified* copies of
it in batched runs of the real model (through :func:`faithlens.runs.run`).

Two kinds of graph:

- :class:`TransformerGraph`: the residual stream of a pre-LN transformer as a sum of component
  outputs. Nodes are ``embed`` (the input: token + position embeddings, ``resid_pre.0``), one
  node per attention head ``head.L.H`` (its contribution through the output projection) with
  separate ``q``, ``k`` and ``v`` input ports, one node per MLP ``mlp.L``, and the output
  ``logits``. Every port reads the sum of the outputs of the components before it, so a
  receiver's input can be assembled as ``resid(base datum) - sender(base) + sender(copy)``. It is
  built from canonical sites only, so any adapter that exposes them works; the decomposition is
  checked numerically when the graph is built.
- :class:`LayerGraph`: any module, as a DAG of submodules (``fl.wrap(module)`` with raw module
  sites); built from a ``torch.fx`` trace or from explicit parent lists. A receiver is computed
  by running the module with each parent's output patched.

A :class:`Plan` lists the copies of nodes a treeified evaluation needs: a copy is *uniform* when
every input slot below it receives the same datum (its value is an ordinary activation on that
datum, computed once per datum in a clean run) or *mixed* (its port inputs are assembled from
the copies of its senders, with optional per-position splits). ``graph.evaluate(plan, ...)``
computes every mixed copy once, in topological order, stacking copies of one layer (or one
module) along the batch.

Nodes can be split into parts (extensionally equal rewrites): a linear map of the node's output
(a subspace projection and its orthogonal complement, a fixed share, a position slice), a
function ``phi`` of the input, and the residual ``node - phi``. See :meth:`ComponentGraph.split`.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor, nn

from ..errors import InputError, ShapeError, SiteError, nearest
from .model import Inputs, Model

if TYPE_CHECKING:
    from ..interventions import Intervention
    from ..runs import RunOutput


# ---------------------------------------------------------------------------------------------
# Positions
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PositionSet:
    """A set of sequence positions: fixed indices (negative count from the end) or one or more
    indices per reference example (``per_row``: ``[N]`` or ``[N, k]``)."""

    static: tuple[int, ...] | None = None
    per_row: Tensor | None = None
    label: str = ""

    def __post_init__(self) -> None:
        if (self.static is None) == (self.per_row is None):
            raise InputError("a PositionSet holds either fixed positions or per-example positions")
        if self.static is not None and len(self.static) == 0:
            raise InputError("an empty list of positions selects nothing")

    @classmethod
    def of(cls, positions: Any) -> PositionSet:
        if isinstance(positions, PositionSet):
            return positions
        if isinstance(positions, int):
            return cls(static=(int(positions),), label=str(positions))
        if isinstance(positions, Tensor):
            p = positions.long()
            if p.dim() == 0:
                return cls(static=(int(p),), label=str(int(p)))
            return cls(per_row=p if p.dim() == 2 else p[:, None], label="per-example")
        if isinstance(positions, Sequence) and not isinstance(positions, str):
            vals = tuple(int(v) for v in positions)
            return cls(static=vals, label=",".join(map(str, vals)))
        raise InputError(
            f"positions must be an int, a list of ints or a tensor of per-example positions, not "
            f"{positions!r}"
        )

    def __hash__(self) -> int:
        return hash(self.static) if self.static is not None else id(self.per_row)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PositionSet):
            return NotImplemented
        if self.static is not None or other.static is not None:
            return self.static == other.static
        return self.per_row is other.per_row

    def __repr__(self) -> str:
        return f"positions[{self.label}]"

    def check(self, seq: int, n: int | None, where: str) -> None:
        if self.static is not None:
            bad = [p for p in self.static if not -seq <= p < seq]
            if bad:
                raise SiteError(f"{where}: positions {bad} are out of range for sequences of {seq}")
        else:
            assert self.per_row is not None
            if n is not None and self.per_row.shape[0] != n:
                raise ShapeError(
                    f"{where}: per-example positions have {self.per_row.shape[0]} rows but there "
                    f"are {n} reference examples"
                )
            if bool(((self.per_row < -seq) | (self.per_row >= seq)).any()):
                raise SiteError(f"{where}: per-example positions out of range for length {seq}")

    def mask(self, rows: Tensor, seq: int) -> Tensor:
        """Boolean ``[len(rows), seq]``: which positions of each row are in the set."""
        m = torch.zeros(len(rows), seq, dtype=torch.bool)
        if self.static is not None:
            idx = torch.tensor([p % seq for p in self.static], dtype=torch.long)
            m[:, idx] = True
            return m
        assert self.per_row is not None
        p = self.per_row[rows.cpu()].long() % seq
        m.scatter_(1, p, True)
        return m


@dataclass(frozen=True)
class PositionAtom:
    """Positions in every ``include`` set and in no ``exclude`` set (a cell of a partition)."""

    include: frozenset[PositionSet] = frozenset()
    exclude: frozenset[PositionSet] = frozenset()

    def mask(self, rows: Tensor, seq: int) -> Tensor:
        m = torch.ones(len(rows), seq, dtype=torch.bool)
        for s in self.include:
            m &= s.mask(rows, seq)
        for s in self.exclude:
            m &= ~s.mask(rows, seq)
        return m

    def __repr__(self) -> str:
        inc = " & ".join(repr(s) for s in self.include) or "all"
        exc = "".join(f" - {s!r}" for s in self.exclude)
        return inc + exc


# ---------------------------------------------------------------------------------------------
# Parts (rewrites of one node into a sum of parts)
# ---------------------------------------------------------------------------------------------


class Part:
    """One term of a node split into a sum of terms."""

    label: str = "part"

    def describe(self) -> str:
        return self.label


@dataclass(frozen=True, eq=False)
class LinearPart(Part):
    """``fn(node output)`` for a linear ``fn`` (projection, complement, share, position slice)."""

    fn: Callable[[Tensor], Tensor]
    label: str = "linear"


@dataclass(frozen=True, eq=False)
class PhiPart(Part):
    """``phi(datum)``: a function of the input only (its port reads the input directly)."""

    fn: Callable[[Any], Tensor]
    label: str = "phi"


@dataclass(frozen=True, eq=False)
class ResidualPart(Part):
    """``node(inputs) - sum(phi(datum))``: what the phi terms do not explain. It reads the node's
    own ports plus ``phi_in``, a direct edge from the input that feeds the phis it subtracts."""

    fns: tuple[Callable[[Any], Tensor], ...]
    label: str = "residual"
    scale: float = 1.0

    def apply(self, value: Tensor, phis: Tensor | int) -> Tensor:
        """``scale * (node - phis)``: a share of what the phi terms do not explain."""
        out = value - phis
        return out if self.scale == 1.0 else self.scale * out


PHI_PORT = "phi_in"


# ---------------------------------------------------------------------------------------------
# Nodes and plans
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GraphNode:
    """A node of a component graph.

    ``kind`` is ``input``, ``head``, ``attn``, ``mlp``, ``module`` or ``output``; a part of a
    split node keeps its base's kind and names it in ``base``.
    """

    name: str
    kind: str
    ports: tuple[str, ...]
    order: int
    layer: int | None = None
    head: int | None = None
    base: str | None = None
    part: Part | None = field(default=None, compare=False)

    @property
    def is_input(self) -> bool:
        return self.kind == "input"

    @property
    def is_output(self) -> bool:
        return self.kind == "output"


@dataclass(frozen=True)
class Uniform:
    """A copy whose every input slot receives ``datum``: an ordinary activation."""

    node: str
    datum: int


@dataclass(frozen=True)
class Mixed:
    """A copy whose inputs are assembled from other copies (see :class:`MixedCopy`)."""

    id: int
    node: str


CopyRef = Uniform | Mixed


@dataclass(frozen=True)
class Feed:
    """Port ``port`` of a mixed copy reads ``child`` (a copy of ``sender``) at ``positions``
    (None: every position)."""

    port: str
    sender: str
    child: CopyRef
    positions: PositionAtom | None = None


@dataclass(frozen=True)
class MixedCopy:
    """A copy of ``node`` computed from assembled inputs. ``base`` is the datum every sender
    *not* listed in ``feeds`` is evaluated on (and whose attention mask / non-patched inputs the
    computation uses, unless ``inputs`` names another datum for that)."""

    ref: Mixed
    base: int
    feeds: tuple[Feed, ...]
    inputs: int | None = None

    @property
    def node(self) -> str:
        return self.ref.node

    @property
    def run_datum(self) -> int:
        """The datum whose model inputs (attention mask, positions) the computation uses."""
        return self.base if self.inputs is None else self.inputs


@dataclass
class Plan:
    """The copies of one or more treeified evaluations: ``roots`` are copies of the output
    (evaluating several roots in one plan shares their clean runs)."""

    roots: list[CopyRef]
    copies: dict[int, MixedCopy] = field(default_factory=dict)

    def uniform_refs(self) -> set[Uniform]:
        out: set[Uniform] = set()
        for r in self.roots:
            if isinstance(r, Uniform):
                out.add(r)
        for c in self.copies.values():
            for f in c.feeds:
                if isinstance(f.child, Uniform):
                    out.add(f.child)
        return out

    def data(self) -> set[int]:
        """Every datum the evaluation reads."""
        out = {u.datum for u in self.uniform_refs()}
        out.update(c.base for c in self.copies.values())
        out.update(c.run_datum for c in self.copies.values())
        return out


@dataclass
class EvalStats:
    """Work done by evaluations: runs, rows, and layer-rows (rows x transformer blocks run),
    the unit in which a forward pass of N examples over L layers costs N * L."""

    runs: int = 0
    rows: int = 0
    layer_rows: int = 0
    clean_runs: int = 0
    mixed_copies: int = 0

    def add(self, rows: int, layers: int, clean: bool = False) -> None:
        self.runs += 1
        self.rows += rows
        self.layer_rows += rows * max(layers, 0)
        if clean:
            self.clean_runs += 1


class DataFeed(Protocol):
    """Where a graph evaluation gets the data of each datum (a vector of dataset indices)."""

    def fields(self, datum: int, rows: Tensor) -> dict[str, Tensor]:
        """The model input fields of ``datum`` at reference rows ``rows``."""
        ...

    def rows(self, datum: int, rows: Tensor) -> Any:
        """The full dataset rows of ``datum`` (what ``phi`` functions receive)."""
        ...


# ---------------------------------------------------------------------------------------------
# The base graph
# ---------------------------------------------------------------------------------------------


class ComponentGraph:
    """A model as a DAG of components with typed input ports. Subclasses build the structure and
    evaluate plans; this class holds the structure, queries and rewrites."""

    kind = "graph"

    def __init__(self, model: Model) -> None:
        self.model = model
        self._nodes: dict[str, GraphNode] = {}
        self._senders: dict[tuple[str, str], tuple[str, ...]] = {}
        self._receivers: dict[str, list[tuple[str, str]]] | None = None
        self._ancestors: dict[str, frozenset[str]] = {}
        self.inputs: tuple[str, ...] = ()
        self.output: str = ""
        self.positions = False  # whether activations have a position axis (axis 1)
        self.rewrites: tuple[str, ...] = ()

    # -- structure -----------------------------------------------------------------------------
    def _add(self, node: GraphNode, senders: Mapping[str, Sequence[str]]) -> None:
        self._nodes[node.name] = node
        for port in node.ports:
            self._senders[(node.name, port)] = tuple(senders.get(port, ()))

    @property
    def nodes(self) -> dict[str, GraphNode]:
        return self._nodes

    def node(self, name: str) -> GraphNode:
        n = self._nodes.get(name)
        if n is None:
            parts = [k for k, v in self._nodes.items() if v.base == name]
            if parts:
                raise SiteError(
                    f"node {name!r} was split by a rewrite into {parts}; name one of its parts"
                )
            raise SiteError(
                f"no node {name!r} in this {self.kind} graph. Nearest: "
                f"{nearest(name, self._nodes)}. Graph.nodes lists them all."
            )
        return n

    def expand(self, name: str) -> tuple[str, ...]:
        """A node name, or the parts a rewrite split it into (for 'through' / 'excluding')."""
        if name in self._nodes:
            return (name,)
        parts = tuple(k for k, v in self._nodes.items() if v.base == name)
        if parts:
            return parts
        self.node(name)  # raises with the nearest names
        return ()

    def ports(self, name: str) -> tuple[str, ...]:
        return self.node(name).ports

    def senders(self, name: str, port: str) -> tuple[str, ...]:
        return self._senders[(name, port)]

    def receivers(self, name: str) -> list[tuple[str, str]]:
        if self._receivers is None:
            rec: dict[str, list[tuple[str, str]]] = defaultdict(list)
            for (r, p), ss in self._senders.items():
                for s in ss:
                    rec[s].append((r, p))
            self._receivers = dict(rec)
        return self._receivers.get(name, [])

    def ancestors(self, name: str) -> frozenset[str]:
        """Every node upstream of ``name`` (its senders, their senders, ...)."""
        got = self._ancestors.get(name)
        if got is not None:
            return got
        out: set[str] = set()
        for p in self.node(name).ports:
            for s in self.senders(name, p):
                out.add(s)
                out |= self.ancestors(s)
        res = frozenset(out)
        self._ancestors[name] = res
        return res

    def reaches(self, src: str, target: str, avoid: frozenset[str] = frozenset()) -> bool:
        """Is there a path src <- ... <- target that visits no node of ``avoid`` in between?"""
        if src == target:
            return True
        if target not in self.ancestors(src):
            return False
        if not avoid:
            return True
        seen: set[str] = set()
        stack = [src]
        while stack:
            cur = stack.pop()
            for p in self.node(cur).ports:
                for s in self.senders(cur, p):
                    if s == target:
                        return True
                    if s in avoid or s in seen or target not in self.ancestors(s):
                        continue
                    seen.add(s)
                    stack.append(s)
        return False

    def topo(self) -> list[str]:
        return sorted(self._nodes, key=lambda n: (self._nodes[n].order, n))

    def describe(self) -> str:
        lines = [
            f"{self.kind} graph: {len(self._nodes)} nodes, inputs {list(self.inputs)}, "
            f"output {self.output!r}"
        ]
        if self.rewrites:
            lines.append("rewrites: " + "; ".join(self.rewrites))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.describe().splitlines()[0]

    # -- rewrites ------------------------------------------------------------------------------
    def _clone(self) -> ComponentGraph:
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new._nodes = dict(self._nodes)
        new._senders = dict(self._senders)
        new._receivers = None
        new._ancestors = {}
        return new

    def split(self, name: str, parts: Mapping[str, Part], *, note: str = "") -> ComponentGraph:
        """A new graph in which node ``name`` is replaced by ``name/<part>`` for each part: every
        receiver reads the parts instead of the node. The parts must sum to the node; check that
        with :meth:`check_split` (the scrubbing rewrites do it before use)."""
        node = self.node(name)
        if node.is_input or node.is_output:
            raise InputError(f"cannot split the {node.kind} node {name!r}; split a component")
        if node.base is not None:
            raise InputError(f"{name!r} is already a part of {node.base!r}; split the base node")
        if not parts:
            raise InputError(f"split of {name!r}: give at least one part")
        new = self._clone()
        del new._nodes[name]
        own = {p: self.senders(name, p) for p in node.ports}
        for p in node.ports:
            del new._senders[(name, p)]
        names = []
        for label, part in parts.items():
            pname = f"{name}/{label}"
            if pname in self._nodes:
                raise InputError(f"node {pname!r} already exists")
            names.append(pname)
            if isinstance(part, PhiPart):
                ports: tuple[str, ...] = (PHI_PORT,)
                senders: Mapping[str, Sequence[str]] = {PHI_PORT: self.inputs}
            elif isinstance(part, ResidualPart):
                ports = (*node.ports, PHI_PORT)
                senders = {**own, PHI_PORT: self.inputs}
            elif isinstance(part, LinearPart):
                ports, senders = node.ports, own
            else:
                raise InputError(f"unknown part type {type(part).__name__}")
            new._add(
                GraphNode(pname, node.kind, ports, node.order, node.layer, node.head, name, part),
                senders,
            )
        for key, ss in list(new._senders.items()):
            if name in ss:
                out: list[str] = []
                for s in ss:
                    out.extend(names if s == name else [s])
                new._senders[key] = tuple(out)
        desc = f"{name} = " + " + ".join(
            f"{n}[{p.describe()}]" for n, p in zip(names, parts.values())
        )
        new.rewrites = (*self.rewrites, note or desc)
        return new

    def parts_of(self, name: str) -> list[str]:
        return [k for k, v in self._nodes.items() if v.base == name]

    # -- evaluation (subclasses) ---------------------------------------------------------------
    def model_inputs(self, fields: Mapping[str, Tensor]) -> Any:
        raise NotImplementedError

    def input_fields(self) -> tuple[str, ...]:
        raise NotImplementedError

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
        """The outputs (one per root) of the treeified model described by ``plan`` at
        reference rows ``rows``."""
        raise NotImplementedError

    @torch.no_grad()
    def compute(
        self,
        node: str,
        port_inputs: Mapping[str, Tensor],
        base_fields: Mapping[str, Tensor],
        *,
        out_positions: Tensor | None = None,
    ) -> Tensor:
        """One node evaluated on explicit port inputs (the slow path; for references and checks).

        For a transformer, ``port_inputs`` maps each port to its residual-stream input; for a
        layer graph, each *sender* name to its value. ``base_fields`` are the model inputs the
        run uses for everything else (attention masks, unpatched inputs)."""
        raise NotImplementedError

    @torch.no_grad()
    def uniform_values(
        self,
        refs: Sequence[Uniform],
        feed: DataFeed,
        rows: Tensor,
        out_positions: Tensor | None = None,
    ) -> list[Tensor]:
        """Values of uniform copies (ordinary activations on one datum, or their parts)."""
        raise NotImplementedError

    @torch.no_grad()
    def node_value(
        self,
        node: str,
        datum_fields: Mapping[str, Tensor],
        phi_rows: Any = None,
        out_positions: Tensor | None = None,
    ) -> Tensor:
        """A node's value on one datum's model inputs (slow path, for references and checks)."""
        raise NotImplementedError

    # -- helpers -------------------------------------------------------------------------------
    @staticmethod
    def _cat_fields(items: Sequence[Mapping[str, Tensor]]) -> dict[str, Tensor]:
        keys = list(items[0])
        return {k: torch.cat([it[k] for it in items], 0) for k in keys}

    def _phi_value(
        self,
        fns: Sequence[Callable[[Any], Tensor]],
        feeds: Sequence[Feed],
        base: int,
        feed: DataFeed,
        rows: Tensor,
        like: Tensor | None,
    ) -> Tensor:
        """sum_k phi_k(datum), where the datum may differ by position (feeds on the phi port)."""

        def phis(datum: int) -> Tensor:
            data = feed.rows(datum, rows)
            total: Tensor | None = None
            for fn in fns:
                v = torch.as_tensor(fn(data))
                total = v if total is None else total + v
            assert total is not None
            return total

        dev = self.model.device
        out = phis(base).to(dev)
        if like is not None:
            if tuple(out.shape) != tuple(like.shape):
                raise ShapeError(
                    f"a phi function returned shape {tuple(out.shape)}; the node it explains has "
                    f"shape {tuple(like.shape)}"
                )
            out = out.to(like)
        if not feeds:
            return out
        seq = out.shape[1] if out.dim() == 3 else None
        for f in feeds:
            assert isinstance(f.child, Uniform), "phi ports read the input directly"
            v = phis(f.child.datum).to(out)
            if f.positions is None:
                out = v
            else:
                if seq is None:
                    raise ShapeError("position splits need [batch, position, width] activations")
                m = f.positions.mask(rows.cpu(), seq).to(out.device)[..., None]
                out = torch.where(m, v, out)
        return out


def _close(a: Tensor, b: Tensor, rtol: float = 1e-4, atol: float = 1e-5) -> bool:
    a64, b64 = a.double(), b.double()
    scale = float(b64.abs().max()) if b64.numel() else 0.0
    return bool((a64 - b64).abs().max() <= atol + rtol * max(scale, 1.0))


# ---------------------------------------------------------------------------------------------
# Transformers
# ---------------------------------------------------------------------------------------------


def _as_inputs(fields: Mapping[str, Tensor], ids: str, mask: str) -> Inputs:
    if ids not in fields:
        raise InputError(f"the data have no {ids!r} field holding token ids")
    return Inputs(ids=fields[ids], mask=fields.get(mask))


class TransformerGraph(ComponentGraph):
    """The residual stream of a pre-LN transformer as a sum of component outputs.

    Args:
        model: any faithlens model whose adapter exposes the canonical sites (``resid_pre.L``,
            ``head.L.H``, ``q/k/v.L.H``, ``attn_out.L``, ``mlp_in.L``, ``mlp_out.L``,
            ``resid_post.L``) and the attention output weights (``adapter.o_proj``).
        split_heads: one node per head (True) or one ``attn.L`` node per layer (False).
        split_qkv: give each head separate ``q``, ``k``, ``v`` ports (True) or one ``in`` port.
        ids, mask: the names of the token-id and attention-mask fields in the data.

    Raises :class:`~faithlens.errors.InputError` when the residual stream is not a sum of
    component outputs (post-LN models such as BERT: use a :class:`LayerGraph`).
    """

    kind = "transformer"

    def __init__(
        self,
        model: Model,
        *,
        split_heads: bool = True,
        split_qkv: bool = True,
        ids: str = "ids",
        mask: str = "mask",
    ) -> None:
        super().__init__(model)
        a = model.adapter
        if not a.n_layers or not a.n_heads:
            raise InputError(
                f"{model.name} has no transformer layers that faithlens knows of; use "
                "LayerGraph(model, ...) for a graph of its modules"
            )
        if split_qkv and not split_heads:
            raise InputError("split_qkv needs split_heads=True (Q/K/V ports belong to heads)")
        self.n_layers = a.n_layers
        self.n_heads = a.n_heads
        self.n_kv = a.n_kv_heads or a.n_heads
        self.split_heads = split_heads
        self.split_qkv = split_qkv
        self.ids_field, self.mask_field = ids, mask
        self.positions = True
        # Attention-only models (faithlens' zoo) have no MLP modules and hence no mlp sites.
        self.has_mlp = bool(getattr(a, "has_mlp", True))
        self._mlp_norm_in: list[str] = []
        if split_heads and getattr(a, "post_norm", False):
            raise InputError(
                f"{model.name} ({a.arch}) normalises each attention block's output (a post-"
                "attention norm) before adding it to the residual stream: single heads are not "
                "additive components of the residual stream, so head nodes (path patching, "
                "head-level scrubbing) would not be exact. Attention blocks and MLPs are: build "
                "TransformerGraph(model, split_heads=False, split_qkv=False)"
            )
        for L in range(self.n_layers if self.has_mlp else 0):
            try:
                info = a.site_info(f"mlp_in.{L}")
            except SiteError as e:
                raise InputError(
                    f"{model.name}: a TransformerGraph needs the canonical site mlp_in.{L} (the "
                    "pre-norm MLP's normalised input), which this adapter does not expose. Post-LN "
                    "models such as BERT are not a sum of component outputs; build a LayerGraph "
                    "of their layers instead (LayerGraph.chain)"
                ) from e
            norm = getattr(a, "mlp_norm_module", None)
            path = norm(L) if callable(norm) else info.hook.module
            self._mlp_norm_in.append(f"module:{path if path is not None else info.hook.module}:in")
        self.parallel = self._probe()
        self._build()

    # -- structure -----------------------------------------------------------------------------
    def _build(self) -> None:
        n = self.n_layers
        self.inputs = ("embed",)
        self.output = "logits"
        self._add(GraphNode("embed", "input", (), 0), {})
        before: list[str] = ["embed"]
        hports = ("q", "k", "v") if self.split_qkv else ("in",)
        for L in range(n):
            heads: list[str] = []
            if self.split_heads:
                for H in range(self.n_heads):
                    name = f"head.{L}.{H}"
                    self._add(
                        GraphNode(name, "head", hports, 1 + 2 * L, L, H),
                        {p: tuple(before) for p in hports},
                    )
                    heads.append(name)
            else:
                name = f"attn.{L}"
                self._add(GraphNode(name, "attn", ("in",), 1 + 2 * L, L), {"in": tuple(before)})
                heads.append(name)
            before_heads = tuple(before)
            before.extend(heads)
            if self.has_mlp:
                mlp_senders = before_heads if self.parallel else tuple(before)
                self._add(GraphNode(f"mlp.{L}", "mlp", ("in",), 2 + 2 * L, L), {"in": mlp_senders})
                before.append(f"mlp.{L}")
        self._add(GraphNode("logits", "output", ("in",), 2 + 2 * n + 1), {"in": tuple(before)})

    def input_fields(self) -> tuple[str, ...]:
        return (self.ids_field, self.mask_field)

    def model_inputs(self, fields: Mapping[str, Tensor]) -> Inputs:
        return _as_inputs(fields, self.ids_field, self.mask_field)

    def _probe(self) -> bool:
        """Check numerically that the residual stream is a sum of component outputs; return
        whether MLPs read the same residual as attention (parallel blocks, GPT-NeoX)."""
        m = self.model
        vocab = max(int(m.adapter.d_vocab or 0), 2)
        g = torch.Generator().manual_seed(0)
        ids = torch.randint(0, vocab, (2, 5), generator=g)
        inp = Inputs(ids=ids, mask=torch.ones_like(ids))
        n = self.n_layers
        sites: list[str] = []
        for L in range(n):
            sites += [f"resid_pre.{L}", f"attn_out.{L}", f"resid_post.{L}"]
            if self.has_mlp:
                sites += [f"mlp_out.{L}", self._mlp_norm_in[L]]
            if self.split_heads:
                sites += [f"head.{L}.{H}" for H in range(self.n_heads)]
        out = m.run(inp, cache=sites, logits_at=[0])
        c = out.cache
        parallel: bool | None = None
        for L in range(n):
            pre, attn = c[f"resid_pre.{L}"], c[f"attn_out.{L}"]
            mlp = c[f"mlp_out.{L}"] if self.has_mlp else torch.zeros_like(attn)
            if not _close(c[f"resid_post.{L}"], pre + attn + mlp, rtol=1e-3):
                raise InputError(
                    f"{m.name}: the residual stream is not a sum of component outputs at layer "
                    f"{L} (resid_post != resid_pre + attn_out + mlp_out; a post-LN model such as "
                    "BERT?). Build a LayerGraph of its layers instead."
                )
            if n > L + 1 and not _close(c[f"resid_pre.{L + 1}"], c[f"resid_post.{L}"]):
                raise InputError(f"{m.name}: resid_pre.{L + 1} differs from resid_post.{L}")
            if self.has_mlp:
                norm_in = c[self._mlp_norm_in[L]]
                seq = _close(norm_in, pre + attn, rtol=1e-3)
                par = _close(norm_in, pre, rtol=1e-3)
                this = par and not seq
                if not (seq or par):
                    raise InputError(
                        f"{m.name}: the MLP of layer {L} reads neither resid_pre nor resid_pre + "
                        "attn_out; faithlens cannot decompose this block"
                    )
                if parallel is None:
                    parallel = this
            if self.split_heads:
                z = torch.cat([c[f"head.{L}.{H}"] for H in range(self.n_heads)], -1)
                _w, b = m.adapter.o_proj(L)
                total = m.adapter.head_outputs(L, z).sum(-2) + (b if b is not None else 0)
                if not _close(total, attn, rtol=1e-3):
                    raise InputError(
                        f"{m.name}: the heads of layer {L} do not sum to attn_out.{L} through "
                        "the output projection; build the graph with split_heads=False"
                    )
        return bool(parallel)

    # -- sites ---------------------------------------------------------------------------------
    def _port_site(self, node: GraphNode) -> str:
        """The site holding the (pre-norm) residual a node's ports read."""
        if node.is_output:
            return f"resid_post.{self.n_layers - 1}"
        assert node.layer is not None
        if node.kind == "mlp" and not self.parallel:
            return self._mlp_norm_in[node.layer]
        return f"resid_pre.{node.layer}"

    def _value_site(self, node: GraphNode) -> str:
        if node.is_input:
            return "resid_pre.0"
        if node.kind == "head":
            return f"head.{node.layer}.{node.head}"
        if node.kind == "attn":
            return f"attn_out.{node.layer}"
        if node.kind == "mlp":
            return f"mlp_out.{node.layer}"
        raise AssertionError(node)

    def _site_layer(self, site: str) -> float:
        """Where a site sits in the forward pass (for stop_at), in layers."""
        if site.startswith("module:"):
            L = self._mlp_norm_in.index(site)
            return L + 0.6
        if site == "ln_final":
            return self.n_layers - 1 + 0.95
        kind, _, rest = site.partition(".")
        L = int(rest.split(".")[0]) if rest else 0
        return (
            L
            + {
                "resid_pre": 0.0,
                "q": 0.2,
                "k": 0.2,
                "v": 0.2,
                "head": 0.3,
                "attn_out": 0.4,
                "mlp_in": 0.6,
                "mlp_out": 0.8,
                "resid_post": 0.9,
            }[kind]
        )

    def _stop_site(self, sites: Iterable[str]) -> str | None:
        last = max(self._site_layer(s) for s in sites)
        L = int(last)
        frac = last - L
        if self.n_layers - 1 <= L and frac >= 0.9:
            return "ln_final" if "ln_final" in self.model.adapter.site_table else None
        if frac <= 0.0:
            return f"resid_pre.{L}"
        if frac <= 0.3:
            return f"head.{L}.0" if self.split_heads else f"attn_out.{L}"
        if frac <= 0.4:
            return f"attn_out.{L}"
        if frac <= 0.6:
            return f"mlp_in.{L}"
        if frac <= 0.8:
            return f"mlp_out.{L}"
        return f"resid_post.{L}"

    def _contrib(self, node: GraphNode, raw: Tensor) -> Tensor:
        """A node's contribution to the residual stream from its cached site value."""
        if node.kind == "head":
            assert node.layer is not None and node.head is not None
            w, _ = self.model.adapter.o_proj(node.layer)
            dh = self.model.adapter.d_head
            wh = w[:, node.head * dh : (node.head + 1) * dh]
            return raw @ wh.to(raw).T
        return raw

    # -- evaluation ----------------------------------------------------------------------------
    def _run_from(
        self,
        layer: int,
        hidden: Tensor,
        inputs: Inputs,
        interventions: Sequence[Intervention],
        cache: Sequence[str],
        stop_at: str | None,
        logits_at: Any = None,
        stats: EvalStats | None = None,
    ) -> RunOutput:
        from ..interventions import Patch
        from ..runs import Resume

        m = self.model
        hidden = hidden.to(device=m.device, dtype=m.dtype)
        if m.adapter.supports_resume:
            out = m.run(
                inputs,
                interventions,
                cache,
                start_at=Resume(layer, hidden),
                stop_at=stop_at,
                logits_at=logits_at,
            )
            ran = (int(self._site_layer(stop_at)) + 1 - layer) if stop_at else self.n_layers - layer
        else:
            site = (
                f"resid_pre.{layer}" if layer < self.n_layers else f"resid_post.{self.n_layers - 1}"
            )
            out = m.run(
                inputs,
                [Patch(site, hidden), *interventions],
                cache,
                stop_at=stop_at,
                logits_at=logits_at,
            )
            ran = (int(self._site_layer(stop_at)) + 1) if stop_at else self.n_layers
        if stats is not None:
            stats.add(int(hidden.shape[0]), ran)
        return out

    def _clean_run(
        self,
        fields: Mapping[str, Tensor],
        sites: set[str],
        logits_at: Any,
        want_logits: bool,
        stats: EvalStats | None,
    ) -> RunOutput:
        inputs = self.model_inputs(fields)
        stop = None if want_logits or not sites else self._stop_site(sites)
        la = logits_at if want_logits else ([0] if stop is None else None)
        out = self.model.run(inputs, cache=sorted(sites), stop_at=stop, logits_at=la)
        if stats is not None:
            layers = self.n_layers if stop is None else int(self._site_layer(stop)) + 1
            stats.add(int(inputs.batch_size), layers, clean=True)
        return out

    @torch.no_grad()
    def uniform_values(
        self,
        refs: Sequence[Uniform],
        feed: DataFeed,
        rows: Tensor,
        out_positions: Tensor | None = None,
    ) -> list[Tensor]:
        """Values of uniform copies (clean activations, or their parts)."""
        cache = _CleanCache(self, feed, rows, out_positions, None)
        for r in refs:
            cache.want_value(r)
        cache.run()
        return [cache.value(r) for r in refs]

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
        cache = _CleanCache(self, feed, rows, out_positions, stats)
        for root in plan.roots:
            if isinstance(root, Uniform):
                cache.want_value(root)
        for c in plan.copies.values():
            node = self.node(c.node)
            for port in node.ports:
                if port == PHI_PORT:
                    continue
                cache.want_site(c.base, self._port_site(node))
            for f in c.feeds:
                if f.port == PHI_PORT:
                    continue
                cache.want_value(Uniform(f.sender, c.base))
                if isinstance(f.child, Uniform):
                    cache.want_value(f.child)
        cache.run()
        values: dict[int, Tensor] = {}
        # heads of a layer before its MLP (which may read them), layers in order
        by_stage: dict[tuple[int, int], list[MixedCopy]] = defaultdict(list)
        for c in plan.copies.values():
            node = self.node(c.node)
            if node.is_output:
                stage = (self.n_layers, 0)
            else:
                assert node.layer is not None
                stage = (node.layer, int(node.kind == "mlp" and not self.parallel))
            by_stage[stage].append(c)
        for stage in sorted(by_stage):
            copies = by_stage[stage]
            if stats is not None:
                stats.mixed_copies += len(copies)
            if stage[0] == self.n_layers:
                for c in copies:
                    values[c.ref.id] = self._output_copy(
                        c, cache, values, feed, rows, out_positions, stats
                    )
            else:
                values.update(
                    self._layer_copies(stage[0], copies, cache, values, feed, rows, stats)
                )
        return [cache.value(r) if isinstance(r, Uniform) else values[r.id] for r in plan.roots]

    def _child_value(
        self, ref: CopyRef, cache: _CleanCache, values: Mapping[int, Tensor]
    ) -> Tensor:
        return cache.value(ref) if isinstance(ref, Uniform) else values[ref.id]

    def _assemble(
        self,
        c: MixedCopy,
        port: str,
        cache: _CleanCache,
        values: Mapping[int, Tensor],
        rows: Tensor,
    ) -> Tensor:
        node = self.node(c.node)
        x = cache.site(c.base, self._port_site(node)).float()
        seq = x.shape[1]
        for f in c.feeds:
            if f.port != port:
                continue
            delta = (
                self._child_value(f.child, cache, values).float()
                - cache.value(Uniform(f.sender, c.base)).float()
            )
            if f.positions is not None:
                delta = delta * f.positions.mask(rows.cpu(), seq).to(delta.device)[..., None]
            x = x + delta
        return x

    def _port_key(self, c: MixedCopy, port: str) -> Hashable:
        node = self.node(c.node)
        feeds = tuple(
            sorted(((f.sender, f.child, f.positions) for f in c.feeds if f.port == port), key=repr)
        )
        return (self._port_site(node), c.base, c.run_datum, feeds)

    def _finish_part(self, c: MixedCopy, value: Tensor, feed: DataFeed, rows: Tensor) -> Tensor:
        """Apply a part's transform to its base node's value on the copy's inputs."""
        node = self.node(c.node)
        part = node.part
        if part is None:
            return value
        if isinstance(part, LinearPart):
            return part.fn(value)
        if isinstance(part, ResidualPart):
            phi_feeds = [f for f in c.feeds if f.port == PHI_PORT]
            return part.apply(
                value, self._phi_value(part.fns, phi_feeds, c.base, feed, rows, value)
            )
        raise AssertionError(part)

    def _layer_copies(
        self,
        L: int,
        copies: Sequence[MixedCopy],
        cache: _CleanCache,
        values: Mapping[int, Tensor],
        feed: DataFeed,
        rows: Tensor,
        stats: EvalStats | None,
    ) -> dict[int, Tensor]:
        """Compute every mixed copy of layer L: one run over stacked distinct port inputs (heads
        and MLPs), and a second run patching q/k/v where a head's ports differ."""
        out: dict[int, Tensor] = {}
        phi_only = [c for c in copies if isinstance(self.node(c.node).part, PhiPart)]
        for c in phi_only:
            node = self.node(c.node)
            assert isinstance(node.part, PhiPart)
            feeds = [f for f in c.feeds if f.port == PHI_PORT]
            out[c.ref.id] = self._phi_value((node.part.fn,), feeds, c.base, feed, rows, None)
        copies = [c for c in copies if c not in phi_only]
        if not copies:
            return out
        blocks: dict[Hashable, int] = {}  # port-input key -> block index
        block_x: list[Tensor] = []
        block_base: list[int] = []

        def block_for(key: Hashable, c: MixedCopy, port: str) -> int:
            if key not in blocks:
                blocks[key] = len(block_x)
                block_x.append(self._assemble(c, port, cache, values, rows))
                block_base.append(c.run_datum)
            return blocks[key]

        head_plain: list[tuple[MixedCopy, int]] = []
        head_split: list[tuple[MixedCopy, dict[str, int]]] = []
        mlp_copies: list[tuple[MixedCopy, Hashable]] = []
        for c in copies:
            node = self.node(c.node)
            ports = [p for p in node.ports if p != PHI_PORT]
            if node.kind in ("head", "attn"):
                keys = {p: self._port_key(c, p) for p in ports}
                if len(set(keys.values())) == 1:
                    head_plain.append((c, block_for(keys[ports[0]], c, ports[0])))
                else:
                    head_split.append((c, {p: block_for(keys[p], c, p) for p in ports}))
            elif node.kind == "mlp":
                key = self._port_key(c, "in")
                if self.parallel:
                    block_for(key, c, "in")
                mlp_copies.append((c, key))
            else:
                raise AssertionError(node.kind)
        # sequential MLPs: patch the MLP's pre-norm input of some block with their own input
        mlp_patch: dict[int, Tensor] = {}
        mlp_block: dict[int, int] = {}
        if not self.parallel:
            distinct: dict[Hashable, int] = {}
            for c, key in mlp_copies:
                if key in distinct:
                    mlp_block[c.ref.id] = distinct[key]
                    continue
                b = len(distinct)
                y = self._assemble(c, "in", cache, values, rows)
                if b >= len(block_x):
                    block_x.append(y)
                    block_base.append(c.run_datum)
                mlp_patch[b] = y
                distinct[key] = b
                mlp_block[c.ref.id] = b
        else:
            for c, key in mlp_copies:
                mlp_block[c.ref.id] = blocks[key]
        r = len(rows)
        hidden = torch.cat(block_x, 0)
        inputs = self.model_inputs(self._cat_fields([feed.fields(b, rows) for b in block_base]))
        from ..interventions import Patch

        ivs: list[Intervention] = []
        if mlp_patch:
            idx = torch.cat([torch.arange(b * r, (b + 1) * r) for b in sorted(mlp_patch)])
            src = torch.cat([mlp_patch[b] for b in sorted(mlp_patch)], 0).to(self.model.dtype)
            ivs.append(Patch(self._mlp_norm_in[L], source=src, rows=idx))
        head_sites = {self._value_site(self._base_node(c.node)) for c, _ in head_plain}
        qkv_sites: set[str] = set()
        for c, _ in head_split:
            n = self._base_node(c.node)
            assert n.head is not None
            g = n.head // (self.n_heads // self.n_kv)
            qkv_sites |= {f"q.{L}.{n.head}", f"k.{L}.{g}", f"v.{L}.{g}"}
        cache_sites = sorted(head_sites | qkv_sites | ({f"mlp_out.{L}"} if mlp_copies else set()))
        stop = (
            f"mlp_out.{L}"
            if mlp_copies
            else (f"head.{L}.0" if self.split_heads else f"attn_out.{L}")
        )
        run_a = self._run_from(L, hidden, inputs, ivs, cache_sites, stop, stats=stats)
        for c, b in head_plain:
            n = self._base_node(c.node)
            raw = run_a.cache[self._value_site(n)][b * r : (b + 1) * r]
            out[c.ref.id] = self._finish_part(c, self._contrib(n, raw), feed, rows)
        for c, _key in mlp_copies:
            b = mlp_block[c.ref.id]
            raw = run_a.cache[f"mlp_out.{L}"][b * r : (b + 1) * r]
            out[c.ref.id] = self._finish_part(c, raw, feed, rows)
        if head_split:
            out.update(
                self._split_heads_run(L, head_split, run_a, block_x, block_base, feed, rows, stats)
            )
        return out

    def _base_node(self, name: str) -> GraphNode:
        n = self.node(name)
        if n.base is None:
            return n
        return GraphNode(n.base, n.kind, n.ports, n.order, n.layer, n.head)

    def _split_heads_run(
        self,
        L: int,
        items: Sequence[tuple[MixedCopy, dict[str, int]]],
        run_a: RunOutput,
        block_x: Sequence[Tensor],
        block_base: Sequence[int],
        feed: DataFeed,
        rows: Tensor,
        stats: EvalStats | None,
    ) -> dict[int, Tensor]:
        """Heads whose q, k, v inputs differ: patch each head's q/k/v with the projections of
        its own port inputs (computed in run A). Heads sharing a key/value group in one block
        must agree on k and v, so copies are packed into blocks without conflicts."""
        from ..interventions import Patch

        r = len(rows)
        per_group = self.n_heads // self.n_kv
        packs: list[dict[str, Any]] = []
        for c, blk in items:
            n = self._base_node(c.node)
            assert n.head is not None
            g = n.head // per_group
            for pack in packs:
                if n.head in pack["q"]:
                    continue
                if pack["k"].get(g, blk["k"]) != blk["k"] or pack["v"].get(g, blk["v"]) != blk["v"]:
                    continue
                break
            else:
                pack = {"q": {}, "k": {}, "v": {}, "items": []}
                packs.append(pack)
            pack["q"][n.head] = blk["q"]
            pack["k"][g] = blk["k"]
            pack["v"][g] = blk["v"]
            pack["items"].append((c, n))

        def rows_of(site: str, b: int) -> Tensor:
            return run_a.cache[site][b * r : (b + 1) * r]

        ivs: list[Intervention] = []
        hidden: list[Tensor] = []
        bases: list[int] = []
        for j, pack in enumerate(packs):
            idx = torch.arange(j * r, (j + 1) * r)
            for h, b in pack["q"].items():
                ivs.append(Patch(f"q.{L}.{h}", source=rows_of(f"q.{L}.{h}", b), rows=idx))
            for g, b in pack["k"].items():
                ivs.append(Patch(f"k.{L}.{g}", source=rows_of(f"k.{L}.{g}", b), rows=idx))
            for g, b in pack["v"].items():
                ivs.append(Patch(f"v.{L}.{g}", source=rows_of(f"v.{L}.{g}", b), rows=idx))
            first_q = next(iter(pack["q"].values()))
            hidden.append(block_x[first_q])
            bases.append(block_base[first_q])
        inputs = self.model_inputs(self._cat_fields([feed.fields(b, rows) for b in bases]))
        sites = sorted({f"head.{L}.{n.head}" for p in packs for _, n in p["items"]})
        run_b = self._run_from(
            L, torch.cat(hidden, 0), inputs, ivs, sites, f"head.{L}.0", stats=stats
        )
        out: dict[int, Tensor] = {}
        for j, pack in enumerate(packs):
            for c, n in pack["items"]:
                raw = run_b.cache[f"head.{L}.{n.head}"][j * r : (j + 1) * r]
                out[c.ref.id] = self._finish_part(c, self._contrib(n, raw), feed, rows)
        return out

    def _output_copy(
        self,
        c: MixedCopy,
        cache: _CleanCache,
        values: Mapping[int, Tensor],
        feed: DataFeed,
        rows: Tensor,
        out_positions: Tensor | None,
        stats: EvalStats | None,
    ) -> Tensor:
        x = self._assemble(c, "in", cache, values, rows)
        inputs = self.model_inputs(feed.fields(c.run_datum, rows))
        out = self._run_from(
            self.n_layers, x, inputs, [], [], None, logits_at=out_positions, stats=stats
        )
        assert out.logits is not None
        return out.logits

    # -- the slow path -------------------------------------------------------------------------
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
        n = self.node(node)
        inputs = self.model_inputs(base_fields)
        if isinstance(n.part, PhiPart):
            return torch.as_tensor(n.part.fn(phi_rows))
        if n.is_output:
            out = self._run_from(
                self.n_layers, port_inputs["in"], inputs, [], [], None, logits_at=out_positions
            )
            assert out.logits is not None
            value = out.logits
        elif n.kind == "mlp":
            assert n.layer is not None
            x = port_inputs["in"].to(self.model.dtype)
            from ..interventions import Patch

            ivs: list[Intervention] = (
                [] if self.parallel else [Patch(self._mlp_norm_in[n.layer], source=x)]
            )
            out = self._run_from(
                n.layer, x, inputs, ivs, [f"mlp_out.{n.layer}"], f"mlp_out.{n.layer}"
            )
            value = out.cache[f"mlp_out.{n.layer}"]
        else:
            value = self._compute_head(self._base_node(node), port_inputs, inputs)
        part = n.part
        if isinstance(part, LinearPart):
            return part.fn(value)
        if isinstance(part, ResidualPart):
            total = sum(torch.as_tensor(fn(phi_rows)).to(value) for fn in part.fns)
            return part.apply(value, total)
        return value

    def _compute_head(
        self, n: GraphNode, port_inputs: Mapping[str, Tensor], inputs: Inputs
    ) -> Tensor:
        from ..interventions import Patch

        L = n.layer
        assert L is not None
        if n.kind == "attn" or not self.split_qkv:
            out = self._run_from(
                L,
                port_inputs["in"],
                inputs,
                [],
                [self._value_site(n)],
                f"head.{L}.0" if n.kind == "head" else f"attn_out.{L}",
            )
            return self._contrib(n, out.cache[self._value_site(n)])
        assert n.head is not None
        g = n.head // (self.n_heads // self.n_kv)
        proj: dict[str, Tensor] = {}
        for port, site in (("q", f"q.{L}.{n.head}"), ("k", f"k.{L}.{g}"), ("v", f"v.{L}.{g}")):
            o = self._run_from(L, port_inputs[port], inputs, [], [site], f"head.{L}.0")
            proj[port] = o.cache[site]
        ivs: list[Intervention] = [
            Patch(f"q.{L}.{n.head}", source=proj["q"]),
            Patch(f"k.{L}.{g}", source=proj["k"]),
            Patch(f"v.{L}.{g}", source=proj["v"]),
        ]
        out = self._run_from(
            L, port_inputs["q"], inputs, ivs, [f"head.{L}.{n.head}"], f"head.{L}.0"
        )
        return self._contrib(n, out.cache[f"head.{L}.{n.head}"])

    @torch.no_grad()
    def port_input(self, node: str, datum_fields: Mapping[str, Tensor]) -> Tensor:
        """The residual a node's ports read on a clean run (for references and checks)."""
        site = self._port_site(self.node(node))
        out = self.model.run(self.model_inputs(datum_fields), cache=[site], logits_at=[0])
        return out.cache[site]

    @torch.no_grad()
    def node_value(
        self,
        node: str,
        datum_fields: Mapping[str, Tensor],
        phi_rows: Any = None,
        out_positions: Tensor | None = None,
    ) -> Tensor:
        """A node's clean value (contribution) on one datum (slow path)."""
        n = self.node(node)
        inputs = self.model_inputs(datum_fields)
        if n.is_output:
            out = self.model.run(inputs, logits_at=out_positions)
            assert out.logits is not None
            return out.logits
        if isinstance(n.part, PhiPart):
            return torch.as_tensor(n.part.fn(phi_rows))
        base = self._base_node(node)
        site = self._value_site(base)
        out = self.model.run(inputs, cache=[site], logits_at=[0])
        value = self._contrib(base, out.cache[site])
        if isinstance(n.part, LinearPart):
            return n.part.fn(value)
        if isinstance(n.part, ResidualPart):
            return n.part.apply(
                value, sum(torch.as_tensor(fn(phi_rows)).to(value) for fn in n.part.fns)
            )
        return value


class _CleanCache:
    """Clean runs, one per datum, caching exactly the sites a plan reads."""

    def __init__(
        self,
        graph: TransformerGraph,
        feed: DataFeed,
        rows: Tensor,
        out_positions: Tensor | None,
        stats: EvalStats | None,
    ) -> None:
        self.g = graph
        self.feed = feed
        self.rows = rows
        self.out_positions = out_positions
        self.stats = stats
        self.sites: dict[int, set[str]] = defaultdict(set)
        self.logits: set[int] = set()
        self.phi: set[Uniform] = set()
        self.store: dict[int, dict[str, Tensor]] = {}
        self.logit_store: dict[int, Tensor] = {}
        self.values: dict[Uniform, Tensor] = {}

    def want_site(self, datum: int, site: str) -> None:
        self.sites[datum].add(site)

    def want_value(self, ref: Uniform) -> None:
        n = self.g.node(ref.node)
        if n.is_output:
            self.logits.add(ref.datum)
            return
        if isinstance(n.part, PhiPart):
            return
        base = self.g._base_node(ref.node)
        self.sites[ref.datum].add(self.g._value_site(base))

    def run(self) -> None:
        for d in sorted(set(self.sites) | self.logits):
            out = self.g._clean_run(
                self.feed.fields(d, self.rows),
                self.sites.get(d, set()),
                self.out_positions,
                d in self.logits,
                self.stats,
            )
            self.store[d] = out.cache
            if d in self.logits:
                assert out.logits is not None
                self.logit_store[d] = out.logits

    def site(self, datum: int, site: str) -> Tensor:
        return self.store[datum][site]

    def value(self, ref: Uniform) -> Tensor:
        got = self.values.get(ref)
        if got is not None:
            return got
        n = self.g.node(ref.node)
        if n.is_output:
            v = self.logit_store[ref.datum]
        elif isinstance(n.part, PhiPart):
            v = self.g._phi_value((n.part.fn,), (), ref.datum, self.feed, self.rows, None)
        else:
            base = self.g._base_node(ref.node)
            v = self.g._contrib(base, self.store[ref.datum][self.g._value_site(base)])
            if isinstance(n.part, LinearPart):
                v = n.part.fn(v)
            elif isinstance(n.part, ResidualPart):
                v = n.part.apply(
                    v, self.g._phi_value(n.part.fns, (), ref.datum, self.feed, self.rows, v)
                )
        self.values[ref] = v
        return v


# ---------------------------------------------------------------------------------------------
# Generic graphs of modules
# ---------------------------------------------------------------------------------------------


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

    def _site(self, node: str) -> str:
        return f"module:{node}"

    def _is_out(self, base: str) -> bool:
        return base == self.output

    def _combine(
        self,
        pieces: Sequence[tuple[PositionAtom | None, Tensor]],
        base: Tensor | None,
        rows: Tensor,
    ) -> Tensor:
        out = base
        for atom, v in pieces:
            if atom is None:
                out = v
                continue
            if out is None:
                out = torch.zeros_like(v)
            if v.dim() < 2 or not self.positions:
                raise ShapeError(
                    "a position split needs [batch, position, ...] activations; build the graph "
                    "with positions=True"
                )
            m = atom.mask(rows.cpu(), v.shape[1]).to(v.device)
            m = m.reshape(*m.shape, *([1] * (v.dim() - 2)))
            out = torch.where(m, v, out)
        assert out is not None
        return out

    @torch.no_grad()
    def uniform_values(
        self,
        refs: Sequence[Uniform],
        feed: DataFeed,
        rows: Tensor,
        out_positions: Tensor | None = None,
    ) -> list[Tensor]:
        store = self._clean(refs, feed, rows, None)
        return [self._uniform(r, store, feed, rows) for r in refs]

    def _clean(
        self, refs: Iterable[Uniform], feed: DataFeed, rows: Tensor, stats: EvalStats | None
    ) -> dict[int, dict[str, Tensor]]:
        want: dict[int, set[str]] = defaultdict(set)
        for r in refs:
            n = self.node(r.node)
            if n.is_input or isinstance(n.part, PhiPart):
                want.setdefault(r.datum, set())
                continue
            want[r.datum].add("output" if n.is_output else self._site(n.base or n.name))
        store: dict[int, dict[str, Tensor]] = {}
        for d, sites in sorted(want.items()):
            fields = feed.fields(d, rows)
            if not sites:
                store[d] = {}
                continue
            out = self.model.run(
                self.model_inputs(fields), cache=sorted(s for s in sites if s != "output")
            )
            got = dict(out.cache)
            if "output" in sites:
                assert out.logits is not None
                got["output"] = out.logits
            store[d] = got
            if stats is not None:
                stats.add(len(rows), 1, clean=True)
        return store

    def _uniform(
        self, r: Uniform, store: Mapping[int, Mapping[str, Tensor]], feed: DataFeed, rows: Tensor
    ) -> Tensor:
        n = self.node(r.node)
        if n.is_input:
            return feed.fields(r.datum, rows)[n.name]
        if isinstance(n.part, PhiPart):
            return self._phi_value((n.part.fn,), (), r.datum, feed, rows, None)
        v = store[r.datum]["output" if n.is_output else self._site(n.base or n.name)]
        if isinstance(n.part, LinearPart):
            return n.part.fn(v)
        if isinstance(n.part, ResidualPart):
            return n.part.apply(v, self._phi_value(n.part.fns, (), r.datum, feed, rows, v))
        return v

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
        refs = plan.uniform_refs()
        for c in plan.copies.values():
            node = self.node(c.node)
            for p in node.ports:
                if p != PHI_PORT:
                    refs.update(Uniform(s, c.base) for s in self.senders(c.node, p))
        store = self._clean(refs, feed, rows, stats)
        values: dict[int, Tensor] = {}

        def val(ref: CopyRef) -> Tensor:
            return (
                self._uniform(ref, store, feed, rows)
                if isinstance(ref, Uniform)
                else values[ref.id]
            )

        by_node: dict[str, list[MixedCopy]] = defaultdict(list)
        for c in plan.copies.values():
            by_node[self.node(c.node).base or c.node].append(c)
        for base in sorted(by_node, key=lambda b: (self._order_of(b), b)):
            copies = by_node[base]
            if stats is not None:
                stats.mixed_copies += len(copies)
            phi_copies = [c for c in copies if isinstance(self.node(c.node).part, PhiPart)]
            for c in phi_copies:
                part = self.node(c.node).part
                assert isinstance(part, PhiPart)
                values[c.ref.id] = self._phi_value(
                    (part.fn,), [f for f in c.feeds if f.port == PHI_PORT], c.base, feed, rows, None
                )
            rest = [c for c in copies if c not in phi_copies]
            if rest:
                values.update(self._node_copies(base, rest, val, feed, rows, stats))
        return [val(r) for r in plan.roots]

    def _order_of(self, base: str) -> int:
        if base in self._nodes:
            return self._nodes[base].order
        return min(v.order for v in self._nodes.values() if v.base == base)

    def _sender_values(
        self, c: MixedCopy, val: Callable[[CopyRef], Tensor], rows: Tensor
    ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """(input field -> assembled input, module node -> assembled output) for one copy."""
        node = self.node(c.node)
        pieces: dict[str, list[tuple[PositionAtom | None, Tensor]]] = defaultdict(list)
        for f in c.feeds:
            if f.port == PHI_PORT:
                continue
            pieces[f.sender].append((f.positions, val(f.child)))
        inputs: dict[str, Tensor] = {}
        modules: dict[str, Tensor] = {}
        part_sums: dict[str, Tensor] = {}
        for s in self.senders(c.node, node.ports[0]):
            sn = self.node(s)
            got = pieces.get(s)
            default = val(Uniform(s, c.base))
            v = self._combine(got, default, rows) if got else default
            if sn.is_input:
                inputs[s] = v
            elif sn.base is not None:
                part_sums[sn.base] = part_sums[sn.base] + v if sn.base in part_sums else v
            else:
                modules[s] = v
        modules.update(part_sums)
        return inputs, modules

    def _node_copies(
        self,
        base: str,
        copies: Sequence[MixedCopy],
        val: Callable[[CopyRef], Tensor],
        feed: DataFeed,
        rows: Tensor,
        stats: EvalStats | None,
    ) -> dict[int, Tensor]:
        from ..interventions import Patch

        r = len(rows)
        fields_list: list[dict[str, Tensor]] = []
        patches: dict[str, list[Tensor]] = defaultdict(list)
        for c in copies:
            inputs, modules = self._sender_values(c, val, rows)
            f = dict(feed.fields(c.base, rows))
            f.update(inputs)
            fields_list.append(f)
            for m, v in modules.items():
                patches[m].append(v)
        for m, vs in patches.items():
            if len(vs) != len(copies):
                raise AssertionError(f"every copy of {base} must patch {m}")
        fields = self._cat_fields(fields_list)
        ivs = [Patch(self._site(m), source=torch.cat(vs, 0)) for m, vs in patches.items()]
        is_out = self._is_out(base)
        out = self.model.run(
            self.model_inputs(fields),
            ivs,
            cache=[] if is_out else [self._site(base)],
            stop_at=None if is_out else self._site(base),
        )
        if stats is not None:
            stats.add(len(copies) * r, 1)
        full = out.logits if is_out else out.cache[self._site(base)]
        assert full is not None
        res: dict[int, Tensor] = {}
        for j, c in enumerate(copies):
            v = full[j * r : (j + 1) * r]
            part = self.node(c.node).part
            if isinstance(part, LinearPart):
                v = part.fn(v)
            elif isinstance(part, ResidualPart):
                v = part.apply(
                    v,
                    self._phi_value(
                        part.fns, [f for f in c.feeds if f.port == PHI_PORT], c.base, feed, rows, v
                    ),
                )
            res[c.ref.id] = v
        return res

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
        from ..interventions import Patch

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
        is_out = self._is_out(base)
        out = self.model.run(
            self.model_inputs(fields),
            [Patch(self._site(m), source=v) for m, v in patch.items()],
            cache=[] if is_out else [self._site(base)],
            stop_at=None if is_out else self._site(base),
        )
        got = out.logits if is_out else out.cache[self._site(base)]
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
            self.model_inputs(datum_fields), cache=[] if self._is_out(base) else [self._site(base)]
        )
        v = out.logits if self._is_out(base) else out.cache[self._site(base)]
        assert v is not None
        if isinstance(n.part, LinearPart):
            return n.part.fn(v)
        if isinstance(n.part, ResidualPart):
            return n.part.apply(v, sum(torch.as_tensor(fn(phi_rows)).to(v) for fn in n.part.fns))
        return v


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


__all__ = [
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
