"""tracr's compiled RASP programs as zoo models, with their circuits known by construction.

tracr (Lindner et al. 2023) compiles a RASP program into a transformer whose every weight is set
by hand: each attention head and MLP reads named directions of the residual stream (one per
value of each intermediate variable, ``"reverse_1:a"``) and writes others. The recipe
``faithlens zoo compile-tracr`` (:mod:`faithlens.zoo.tracr_compile`, which needs tracr: the
optional extra ``faithlens[tracr]``) compiles the programs in :data:`TRACR_PROGRAMS`, exports
each to a :class:`~faithlens.zoo.ZooTransformer` (``norm=False``, ReLU MLPs, bidirectional,
tracr's own residual layout, token and position embeddings and the unembedding onto the output
space) and ships, in the package, per program:

- ``zoo/weights/tracr_NAME.safetensors``: the weights;
- ``zoo/tracr/NAME.json``: the residual stream's labels, which labels vary with the input
  tokens, the true circuit, the parity inputs with tracr's outputs on them, and a patching task
  (clean and corrupted inputs of the same length with tracr's outputs).

Everything here reads those files only: no jax. **The true circuit** is the set of edges
``u->v`` (:mod:`faithlens.circuits.edges` names) such that a residual direction that ``u``
writes (a nonzero column of its output matrix) and port ``v`` reads (a nonzero row of its input
matrix) belongs to a variable that depends on the input tokens. Variables computed from the
positions and constants only (the length, ``opp_idx``, the ``one`` direction, the BOS token)
are the same in a clean input and a corrupted input of the same length, so their edges carry
nothing that patching could change: they are not in the circuit, and every edge outside it has
an exact-patching effect of zero (``tests/zoo/test_tracr.py`` checks both).
"""

from __future__ import annotations

import importlib.resources
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor

from ..errors import InputError
from ..models.model import Inputs, Model
from ..tasks.base import Task
from ..tasks.metrics import LogitDiff
from .model import ZooBlock, ZooTransformer
from .tokenizer import VocabTokenizer
from .training import load_weights

#: tracr's beginning-of-sequence token (the compiler's ``compiler_bos``).
BOS = "BOS"


@dataclass(frozen=True)
class TracrProgram:
    """One of tracr's library programs as the recipe compiles it.

    ``vocab`` is the input vocabulary, ``max_seq_len`` the longest input (without BOS);
    ``unique`` draws inputs without repeated tokens (``sort_unique`` needs distinct keys).
    """

    name: str
    description: str
    vocab: tuple[str | int, ...]
    max_seq_len: int
    categorical: bool = True
    unique: bool = False


#: The programs the recipe compiles (tracr's ``compiler/lib.py``).
TRACR_PROGRAMS: dict[str, TracrProgram] = {
    p.name: p
    for p in (
        TracrProgram("reverse", "the input reversed (make_reverse)", ("a", "b", "c"), 5),
        TracrProgram("hist", "each token's count in the input (make_hist)", ("a", "b", "c"), 5),
        TracrProgram(
            "sort_unique",
            "distinct tokens sorted (make_sort_unique)",
            (1, 2, 3, 4, 5, 6, 7),
            5,
            True,
            True,
        ),
        TracrProgram("sort", "tokens sorted, repeats allowed (make_sort)", (1, 2, 3, 4, 5), 5),
        TracrProgram(
            "frac_prevs",
            "the fraction of tokens so far that are 'x' (make_frac_prevs; numerical)",
            ("x", "y"),
            5,
            categorical=False,
        ),
        TracrProgram(
            "count",
            "the number of 'a' tokens in the input, at every position (make_count(tokens, 'a'))",
            ("a", "b", "c"),
            5,
        ),
        TracrProgram(
            "pair_balance",
            "the fraction of tokens so far that are '(' minus those that are ')' "
            "(make_pair_balance; numerical)",
            ("(", ")"),
            5,
            categorical=False,
        ),
        TracrProgram(
            "shuffle_dyck",
            "whether the parentheses are balanced, at every position "
            "(make_shuffle_dyck(['()']), one pair type)",
            ("(", ")"),
            6,
        ),
    )
}


def zoo_name(program: str) -> str:
    """The zoo model name of a tracr program (``reverse`` -> ``tracr_reverse``)."""
    return f"tracr_{program}"


def program_of(name: str) -> str:
    """The tracr program of a zoo name (``tracr_reverse`` or ``reverse`` -> ``reverse``)."""
    prog = name.removeprefix("tracr_")
    if prog not in TRACR_PROGRAMS:
        raise InputError(
            f"no tracr model named {name!r}; tracr models: {[zoo_name(p) for p in TRACR_PROGRAMS]}"
        )
    return prog


def _zoo_dir() -> Path:
    return Path(str(importlib.resources.files("faithlens.zoo")))


def weights_file(name: str, root: Path | None = None) -> Path:
    """The shipped weights of a tracr model (``root``: a folder the recipe wrote instead)."""
    prog = program_of(name)
    return (root or _zoo_dir() / "weights") / f"{zoo_name(prog)}.safetensors"


def info_file(name: str, root: Path | None = None) -> Path:
    """The shipped JSON (labels, true circuit, parity data, task) of a tracr model."""
    prog = program_of(name)
    return (root / f"{prog}.json") if root else _zoo_dir() / "tracr" / f"{prog}.json"


def shipped() -> list[str]:
    """The tracr programs whose weights and JSON are in this installation."""
    return [p for p in TRACR_PROGRAMS if weights_file(p).is_file() and info_file(p).is_file()]


@cache
def _read_info(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(
            f"no tracr model data at {path}; compile it with `faithlens zoo compile-tracr` "
            "(needs the optional extra faithlens[tracr])"
        )
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def info(name: str) -> dict[str, Any]:
    """The shipped JSON of a tracr model (see the module docstring)."""
    return _read_info(info_file(name))


def tokenizer(data: dict[str, Any]) -> VocabTokenizer:
    """Space-separated tokens over tracr's input encoding, BOS added first."""
    return VocabTokenizer(data["input_tokens"], split="space", bos=BOS, pad=data["pad_token"])


def load_tracr(
    name: str,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> Model:
    """A shipped tracr model (``"tracr_reverse"`` or ``"reverse"``) as a :class:`Model`
    (``fl.load("zoo:tracr_reverse")`` calls this)."""
    prog = program_of(name)
    module, _ = load_weights(weights_file(prog), device=device, dtype=dtype)
    tok = tokenizer(info(prog))
    return Model(module, module.faithlens_adapter(), tokenizer=tok, name=f"zoo:{zoo_name(prog)}")


# ----------------------------------------------------------------------------------------------
# The true circuit
# ----------------------------------------------------------------------------------------------


def _cols(w: Tensor) -> set[int]:
    """Residual directions a reader reads: nonzero columns of an ``[out, d_model]`` weight."""
    return set(torch.nonzero(w.abs().sum(0)).flatten().tolist())


def _rows(w: Tensor) -> set[int]:
    """Residual directions a writer writes: nonzero rows of a ``[d_model, in]`` weight."""
    return set(torch.nonzero(w.abs().sum(1)).flatten().tolist())


def component_spaces(module: ZooTransformer) -> tuple[dict[str, set[int]], dict[str, set[int]]]:
    """(writes, reads): the residual directions each writer writes and each reader port reads,
    by edge-graph name (``input``, ``a0.h1``, ``m0``; ``a0.h1<q>``, ``m0``, ``logits``)."""
    cfg = module.config
    dh = cfg.head_width
    writes: dict[str, set[int]] = {
        "input": _cols(module.embed.weight) | _cols(module.pos_embed.weight)
    }
    reads: dict[str, set[int]] = {}
    for L, blk in enumerate(module.blocks):
        block = cast(ZooBlock, blk)
        attn = block.attn
        for H in range(cfg.n_heads):
            part = slice(H * dh, (H + 1) * dh)
            for port, proj in (("q", attn.q_proj), ("k", attn.k_proj), ("v", attn.v_proj)):
                reads[f"a{L}.h{H}<{port}>"] = _cols(proj.weight[part])
            writes[f"a{L}.h{H}"] = _rows(attn.o_proj.weight[:, part])
        mlp = block.mlp
        if mlp is not None:
            reads[f"m{L}"] = _cols(mlp.fc_in.weight)
            out = _rows(mlp.fc_out.weight)
            if mlp.fc_out.bias is not None:
                out |= set(torch.nonzero(mlp.fc_out.bias).flatten().tolist())
            writes[f"m{L}"] = out
    reads["logits"] = _cols(module.unembed.weight)
    return writes, reads


def _when(name: str, writer: bool) -> float:
    """When a component acts in the forward pass: a layer's q/k/v ports read (``L``), then its
    heads write (``L + 0.25``), its MLP reads (``L + 0.5``) and writes (``L + 0.75``)."""
    if name == "input":
        return -1.0
    if name == "logits":
        return float("inf")
    base = name.split("<")[0]
    if base.startswith("m"):
        return int(base[1:]) + (0.75 if writer else 0.5)
    return int(base[1:].split(".h")[0]) + (0.25 if writer else 0.0)


def sop_of(label: str) -> str:
    """The RASP variable of a residual label (``reverse_1:a`` -> ``reverse_1``; a selector
    width's attention output belongs to its SOp)."""
    return label.split(":")[0].removesuffix("_selector_width_attn_output")


def derive_circuit(
    module: ZooTransformer,
    labels: list[str],
    varying: list[str],
    fixed_selectors: Sequence[str] = (),
) -> dict[str, list[str]]:
    """The true circuit of a compiled model: each edge ``u->v`` (``v`` after ``u`` in the
    forward pass) whose shared directions include a label in ``varying``, with those labels.

    A head whose written variables are all in ``fixed_selectors`` (attention SOps whose selector
    does not depend on the tokens, such as ``length``'s ``Select(tokens, tokens, TRUE)``)
    attends the same way on every input of a length, so no edge into its query or key is in
    the circuit even when it reads the tokens; nor is a query or key label that cannot change
    the head's attention (:func:`inert_labels`)."""
    writes, reads = component_spaces(module)
    keep = set(varying)
    var = {i for i, lab in enumerate(labels) if lab in keep}
    fixed = set(fixed_selectors)
    out: dict[str, list[str]] = {}
    for r, rs in reads.items():
        live = var
        if r.endswith(("<q>", "<k>")):
            head = writes[r.split("<")[0]]
            if head and {sop_of(labels[i]) for i in head} <= fixed:
                continue
            inert = inert_labels(module, r, labels, [labels[i] for i in sorted(rs & var)])
            live = {i for i in var if labels[i] not in inert}
        for w, ws in writes.items():
            if _when(w, True) > _when(r, False):
                continue
            shared = sorted(ws & rs & live)
            if shared:
                out[f"{w}->{r}"] = [labels[i] for i in shared]
    return out


def inert_labels(
    module: ZooTransformer, port: str, labels: list[str], varying: Sequence[str]
) -> set[str]:
    """The varying labels that a head's query or key port reads but that cannot change its
    attention: a categorical variable (two or more labels of one SOp) whose every value gives
    the same row (query) or column (key) of the head's bilinear form ``W_Q^T W_K``. tracr
    compiles a selector into that form from the predicate's table, so a predicate that ignores
    its queries (``make_count``'s ``k == "a"``) gives equal rows, and the query edges carry
    nothing even though the query matrix reads the tokens. ``varying`` should be the labels
    the port reads (a label it does not read gives zero rows, which are trivially equal)."""
    head, kind = port[:-1].split("<")
    L, H = (int(x) for x in head[1:].split(".h"))
    attn = cast(ZooBlock, module.blocks[L]).attn
    dh = module.config.head_width
    part = slice(H * dh, (H + 1) * dh)
    form = (attn.q_proj.weight[part].T @ attn.k_proj.weight[part]).detach().double()
    if kind == "k":
        form = form.T  # one row per key direction
    tol = 1e-6 * max(float(form.abs().max()), 1.0)
    groups: dict[str, list[int]] = {}
    for lab in varying:
        groups.setdefault(sop_of(lab), []).append(labels.index(lab))
    out: set[str] = set()
    for idx in groups.values():
        rows = form[idx]
        if len(idx) > 1 and float((rows - rows[0]).abs().max()) <= tol:
            out |= {labels[i] for i in idx}
    return out


@dataclass(frozen=True)
class TracrCircuit:
    """The true circuit of a shipped tracr model: ``edges`` (edge-graph names) and, per edge,
    the residual labels it carries (``carried``)."""

    name: str
    edges: tuple[str, ...]
    carried: dict[str, list[str]]

    def __len__(self) -> int:
        return len(self.edges)

    def __contains__(self, edge: object) -> bool:
        return edge in self.carried


def tracr_circuit(name: str) -> TracrCircuit:
    """The true circuit shipped with a tracr model."""
    prog = program_of(name)
    carried = {k: list(v) for k, v in info(prog)["circuit"].items()}
    return TracrCircuit(zoo_name(prog), tuple(carried), carried)


# ----------------------------------------------------------------------------------------------
# Parity data and the patching task
# ----------------------------------------------------------------------------------------------


def encode(data: dict[str, Any], seq: list[Any]) -> list[int]:
    """Token ids of an input (BOS first) in tracr's input encoding."""
    index = {str(t): i for i, t in enumerate(data["input_tokens"])}
    return [index[BOS], *(index[str(t)] for t in seq)]


def check_parity(model: ZooTransformer, data: dict[str, Any], atol: float = 1e-4) -> float:
    """The largest gap between the model's outputs and tracr's on the parity inputs (raises if
    it exceeds ``atol`` or a decoded output differs: exactly for a categorical program, by more
    than ``atol`` for a numerical one)."""
    worst = 0.0
    with torch.no_grad():
        for seq, want, decoded in zip(
            data["parity"]["inputs"], data["parity"]["outputs"], data["parity"]["decoded"]
        ):
            ids = torch.tensor([encode(data, seq)])
            got = model(ids).logits[0].double()
            gap = float((got - torch.tensor(want, dtype=torch.float64)).abs().max())
            worst = max(worst, gap)
            ours = decode(data, got)
            if data["categorical"]:
                same = ours[1:] == decoded[1:]
            else:  # numerical: tracr's float32 value, within atol
                same = all(abs(a - b) <= atol for a, b in zip(ours[1:], decoded[1:]))
            if gap > atol or not same:
                raise InputError(
                    f"tracr {data['program']}: the exported model disagrees with tracr on "
                    f"{seq} (largest gap {gap:.2e}; ours {ours[1:]}, tracr's {decoded[1:]})"
                )
    return worst


def decode(data: dict[str, Any], logits: torch.Tensor) -> list[Any]:
    """Outputs per position as tracr decodes them (argmax over the output values, or the
    value of a numerical program); position 0 is BOS."""
    if data["categorical"]:
        vals = data["output_values"]
        return [BOS, *(vals[int(i)] for i in logits[1:].argmax(-1).tolist())]
    return [BOS, *(float(v) for v in logits[1:, 0].tolist())]


def tracr_task(name: str, n: int | None = None) -> Task:
    """The shipped patching task of a tracr model: clean and corrupted inputs of full length,
    the metric read at one position where tracr's outputs on the two differ. Categorical
    programs: ``logit_diff`` between the clean and the corrupted output value; numerical ones:
    the output value (``logit_diff`` between the value and a zero column)."""
    prog = program_of(name)
    data = info(prog)
    t = data["task"]
    rows = slice(None) if n is None else slice(0, n)
    clean = torch.tensor([encode(data, s) for s in t["clean"][rows]], dtype=torch.long)
    corrupt = torch.tensor([encode(data, s) for s in t["corrupt"][rows]], dtype=torch.long)
    ones = torch.ones_like(clean)
    return Task(
        name=f"tracr_{prog}",
        clean=Inputs(ids=clean, mask=ones),
        corrupt=Inputs(ids=corrupt, mask=ones.clone()),
        answers=torch.tensor(t["answers"][rows], dtype=torch.long),
        positions=torch.tensor(t["positions"][rows], dtype=torch.long),
        metric=LogitDiff(),
        meta={"program": prog, "source": "tracr"},
    )


__all__ = [
    "BOS",
    "check_parity",
    "decode",
    "TRACR_PROGRAMS",
    "TracrCircuit",
    "TracrProgram",
    "component_spaces",
    "derive_circuit",
    "encode",
    "inert_labels",
    "info",
    "info_file",
    "load_tracr",
    "program_of",
    "sop_of",
    "shipped",
    "tokenizer",
    "tracr_circuit",
    "tracr_task",
    "weights_file",
    "zoo_name",
]
