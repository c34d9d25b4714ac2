"""The recipe ``faithlens zoo compile-tracr``: compile tracr's programs and export them.

Needs tracr (``pip install 'faithlens[tracr]'``, which brings jax and dm-haiku); nothing else in
faithlens does. Per program of :data:`~faithlens.zoo.tracr.TRACR_PROGRAMS` it

1. builds the RASP program from ``tracr.compiler.lib`` and compiles it (``compiler_bos="BOS"``);
2. copies tracr's weights into a :class:`~faithlens.zoo.ZooTransformer` (``norm=False``, ReLU,
   bidirectional, tracr's residual width, heads, head width and MLP width; haiku's ``[in, out]``
   matrices transposed; the unembedding is tracr's projection of the residual stream onto the
   output space, plus a zero column for a numerical program so that ``logit_diff`` reads its
   value);
3. marks which residual labels vary with the input tokens (walking the RASP graph: the tokens
   vary, the indices and constants do not, a Map or Aggregate varies if an input does, a
   Select varies if its keys or queries vary and its predicate is not TRUE or FALSE) and derives
   the true circuit from the exported weights (:func:`faithlens.zoo.tracr.derive_circuit`);
4. draws, seeded, parity inputs of every length and a patching task (full-length clean and
   corrupted inputs, one position where tracr's outputs differ), runs tracr on all of them, and
   checks that the exported model's outputs equal tracr's;
5. writes ``tracr_NAME.safetensors`` and ``NAME.json`` (into the package by default).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import InputError
from .config import ZooConfig
from .model import ZooTransformer
from .tracr import (
    BOS,
    TRACR_PROGRAMS,
    TracrProgram,
    check_parity,
    derive_circuit,
    program_of,
    sop_of,
)
from .training import save_weights

#: tracr's selector predicates that ignore their keys and queries.
_CONSTANT_PREDICATES = ("TRUE", "FALSE")
#: Residual labels that never vary between a clean and a corrupted input of the same length.
_FIXED_TOKENS = (f"tokens:{BOS}", "tokens:compiler_pad")


def require_tracr() -> Any:
    """tracr's compiler, or a clear error naming the extra that installs it."""
    try:
        from tracr.compiler import compiling
    except ImportError as e:
        raise InputError(
            "compiling tracr programs needs tracr, the optional extra 'tracr' of faithlens "
            "(tracr-pypi 1.0.0 with jax and dm-haiku): pip install 'faithlens[tracr]'; the "
            f"shipped tracr models load without it ({e})"
        ) from None
    return compiling


def build_program(spec: TracrProgram) -> Any:
    """The RASP program of ``spec`` from tracr's library. RASP numbers its expressions from a
    process-wide counter (``reverse_1``) the first time a label is read; it restarts here, and
    the library's module-level ``length`` (which make_reverse and make_shuffle_dyck read, and
    which keeps the number it was first given) is built afresh, so a program's labels do not
    depend on what was compiled before it."""
    import itertools

    from tracr.compiler import lib
    from tracr.rasp import rasp

    rasp.RASPExpr._ids = itertools.count(1)  # tracr's own label counter, restarted
    lib.length = lib.make_length()  # unnumbered until this program's compilation reads it

    builders = {
        "reverse": lambda: lib.make_reverse(rasp.tokens),
        "hist": lambda: lib.make_hist(),
        "sort_unique": lambda: lib.make_sort_unique(rasp.tokens, rasp.tokens),
        "sort": lambda: lib.make_sort(
            rasp.tokens, rasp.tokens, max_seq_len=spec.max_seq_len, min_key=1
        ),
        "frac_prevs": lambda: lib.make_frac_prevs(rasp.tokens == "x"),
        "count": lambda: lib.make_count(rasp.tokens, "a"),
        "pair_balance": lambda: lib.make_pair_balance(rasp.tokens, "(", ")"),
        "shuffle_dyck": lambda: lib.make_shuffle_dyck(["()"]),
    }
    return builders[spec.name]()


def varying_sops(program: Any) -> dict[str, bool]:
    """Every SOp label of the program's graph -> whether its value depends on the tokens."""
    from tracr.rasp import rasp

    memo: dict[int, bool] = {}

    def varies(expr: Any) -> bool:
        key = id(expr)
        if key in memo:
            return memo[key]
        children = list(expr.children)
        if isinstance(expr, rasp.TokensType):
            out = True
        elif isinstance(expr, rasp.IndicesType):
            out = False
        elif isinstance(expr, rasp.Select):
            kids = [varies(c) for c in children]  # visit both
            # a Comparison has a name; a plain function (make_count's) reads its inputs
            pred = getattr(expr.predicate, "name", None)
            out = pred not in _CONSTANT_PREDICATES and any(kids)
        else:
            out = any([varies(c) for c in children])
        memo[key] = out
        return out

    labels: dict[str, bool] = {}
    for expr in _exprs(program):
        labels[expr.label] = varies(expr)
    return labels


def _exprs(program: Any) -> list[Any]:
    """Every expression of the program's graph."""
    out = []
    stack = [program]
    seen: set[int] = set()
    while stack:
        expr = stack.pop()
        if id(expr) in seen:
            continue
        seen.add(id(expr))
        out.append(expr)
        stack.extend(expr.children)
    return out


def fixed_selectors(program: Any, sops: dict[str, bool]) -> list[str]:
    """The attention SOps (Aggregate, SelectorWidth) whose selector does not depend on the
    tokens: the heads computing them attend the same way on any input of a given length, so
    their query and key inputs carry nothing that a same-length corruption could change."""
    from tracr.rasp import rasp

    return sorted(
        e.label
        for e in _exprs(program)
        if isinstance(e, (rasp.Aggregate, rasp.SelectorWidth)) and not sops[e.selector.label]
    )


def varying_labels(residual_labels: list[str], sops: dict[str, bool]) -> list[str]:
    """The residual labels whose variable depends on the input tokens."""
    out = []
    sops = {"tokens": True, "indices": False, **sops}  # embedded even where the program
    for lab in residual_labels:  # does not use them
        if lab == "one" or lab in _FIXED_TOKENS:
            continue
        sop = sop_of(lab)
        if sop not in sops:
            raise InputError(f"residual label {lab!r} names no SOp of the program ({sorted(sops)})")
        if sops[sop]:
            out.append(lab)
    return out


def _f32(x: Any) -> torch.Tensor:
    return torch.tensor(np.asarray(x), dtype=torch.float32)


def export(assembled: Any, spec: TracrProgram, out_labels: list[str]) -> ZooTransformer:
    """A zoo transformer with the assembled tracr model's weights (module docstring)."""
    cfg_t = assembled.model_config
    p = assembled.params
    labels = list(assembled.residual_labels)
    d = len(labels)
    d_out = len(out_labels) if spec.categorical else 2
    cfg = ZooConfig(
        n_layers=cfg_t.num_layers,
        n_heads=cfg_t.num_heads,
        d_model=d,
        d_vocab=int(np.asarray(p["token_embed"]["embeddings"]).shape[0]),
        n_ctx=int(np.asarray(p["pos_embed"]["embeddings"]).shape[0]),
        d_head=cfg_t.key_size,
        d_mlp=cfg_t.mlp_hidden_size,
        d_out=d_out,
        causal=False,
        act="relu",
        norm=False,
    )
    model = ZooTransformer(cfg)
    state = {
        "embed.weight": _f32(p["token_embed"]["embeddings"]),
        "pos_embed.weight": _f32(p["pos_embed"]["embeddings"]),
    }
    names = {"q_proj": "query", "k_proj": "key", "v_proj": "value", "o_proj": "linear"}
    for L in range(cfg.n_layers):
        for ours, theirs in names.items():
            lin = p[f"transformer/layer_{L}/attn/{theirs}"]
            state[f"blocks.{L}.attn.{ours}.weight"] = _f32(lin["w"]).T.contiguous()
            state[f"blocks.{L}.attn.{ours}.bias"] = _f32(lin["b"])
        for ours, theirs in (("fc_in", "linear_1"), ("fc_out", "linear_2")):
            lin = p[f"transformer/layer_{L}/mlp/{theirs}"]
            state[f"blocks.{L}.mlp.{ours}.weight"] = _f32(lin["w"]).T.contiguous()
            state[f"blocks.{L}.mlp.{ours}.bias"] = _f32(lin["b"])
    unembed = torch.zeros(d_out, d)
    for j, lab in enumerate(out_labels):
        unembed[j, labels.index(lab)] = 1.0
    state["unembed.weight"] = unembed
    state["unembed.bias"] = torch.zeros(d_out)
    model.load_state_dict(state, strict=True)
    return model.eval()


def _inputs(spec: TracrProgram, rng: np.random.Generator, length: int) -> list[Any]:
    vocab = list(spec.vocab)
    if spec.unique:
        picked = rng.choice(len(vocab), size=length, replace=False)
    else:
        picked = rng.integers(0, len(vocab), size=length)
    return [vocab[int(i)] for i in picked]


def _tracr_out(assembled: Any, seq: list[Any], w_out: np.ndarray) -> tuple[list[Any], np.ndarray]:
    """tracr's decoded output and its raw output (final residual times the unembedding)."""
    res = assembled.apply([BOS, *seq])
    raw = np.asarray(res.transformer_output)[0] @ w_out.T
    return list(res.decoded), raw


def _jsonable(v: Any) -> Any:
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    return v


def compile_program(
    name: str, *, seed: int = 0, n_parity: int = 32, n_task: int = 64
) -> tuple[ZooTransformer, dict[str, Any]]:
    """Compile one program; return the exported model and the JSON it ships with."""
    compiling = require_tracr()
    spec = TRACR_PROGRAMS[program_of(name)]
    program = build_program(spec)
    assembled = compiling.compile_rasp_to_model(
        program, vocab=set(spec.vocab), max_seq_len=spec.max_seq_len, compiler_bos=BOS
    )
    import jax

    assembled.forward = jax.jit(assembled.forward)  # the same function, compiled once a length
    enc = assembled.input_encoder.encoding_map
    input_tokens = [str(t) for t, _ in sorted(enc.items(), key=lambda kv: kv[1])]
    if spec.categorical:
        out_map = assembled.output_encoder.encoding_map
        out_values = [v for v, _ in sorted(out_map.items(), key=lambda kv: kv[1])]
        out_labels = [f"{program.label}:{v}" for v in out_values]
    else:
        out_values, out_labels = [], [program.label]
    labels = list(assembled.residual_labels)
    model = export(assembled, spec, out_labels)
    w_out = model.unembed.weight.detach().numpy().astype(np.float64)
    sops = varying_sops(program)
    varying = varying_labels(labels, sops)
    fixed = fixed_selectors(program, sops)
    data: dict[str, Any] = {
        "program": spec.name,
        "description": spec.description,
        "tracr": "tracr-pypi==1.0.0",
        "seed": seed,
        "vocab": list(spec.vocab),
        "max_seq_len": spec.max_seq_len,
        "categorical": spec.categorical,
        "input_tokens": input_tokens,
        "pad_token": "compiler_pad",
        "output_values": [_jsonable(v) for v in out_values],
        "output_labels": out_labels,
        "residual_labels": labels,
        "sops": sops,
        "varying_labels": varying,
        "fixed_selectors": fixed,
        "circuit": derive_circuit(model, labels, varying, fixed),
    }
    rng = np.random.default_rng(seed)
    parity: dict[str, list[Any]] = {"inputs": [], "decoded": [], "outputs": []}
    for i in range(n_parity):
        seq = _inputs(spec, rng, 1 + i % spec.max_seq_len)
        decoded, raw = _tracr_out(assembled, seq, w_out)
        parity["inputs"].append(seq)
        parity["decoded"].append([_jsonable(v) for v in decoded])
        parity["outputs"].append(raw.astype(np.float32).tolist())
    data["parity"] = parity
    data["task"] = _task(assembled, spec, rng, w_out, out_values, n_task)
    check_parity(model, data)
    return model, data


def _task(
    assembled: Any,
    spec: TracrProgram,
    rng: np.random.Generator,
    w_out: np.ndarray,
    out_values: list[Any],
    n: int,
) -> dict[str, Any]:
    """Full-length clean/corrupted pairs and one position (after BOS) where tracr's outputs on
    them differ; answers are (clean value, corrupted value) column ids, or (0, 1) for a
    numerical program (its value minus the zero column)."""
    task: dict[str, list[Any]] = {"clean": [], "corrupt": [], "positions": [], "answers": []}
    tries = 0
    while len(task["clean"]) < n:
        tries += 1
        if tries > 20 * n:
            raise InputError(f"tracr {spec.name}: could not draw {n} differing pairs")
        a = _inputs(spec, rng, spec.max_seq_len)
        b = _inputs(spec, rng, spec.max_seq_len)
        da, _ = _tracr_out(assembled, a, w_out)
        db, _ = _tracr_out(assembled, b, w_out)
        diff = [i for i in range(1, len(da)) if da[i] != db[i]]
        if not diff:
            continue
        pos = int(diff[int(rng.integers(0, len(diff)))])
        ans = (
            [0, 1]
            if not spec.categorical
            else [out_values.index(da[pos]), out_values.index(db[pos])]
        )
        task["clean"].append(a)
        task["corrupt"].append(b)
        task["positions"].append(pos)
        task["answers"].append(ans)
    return task


def compile_tracr(
    programs: list[str] | None = None,
    *,
    out: str | Path | None = None,
    seed: int = 0,
    n_parity: int = 32,
    n_task: int = 64,
) -> list[Path]:
    """Compile ``programs`` (default: all of :data:`TRACR_PROGRAMS`) and write each model's
    weights and JSON, into ``out`` or (default) the package's ``zoo/weights`` and ``zoo/tracr``.
    Returns the files written."""
    require_tracr()
    names = [program_of(p) for p in (programs or list(TRACR_PROGRAMS))]
    from .tracr import info_file, weights_file

    root = Path(out) if out is not None else None
    written: list[Path] = []
    for name in names:
        model, data = compile_program(name, seed=seed, n_parity=n_parity, n_task=n_task)
        wpath = weights_file(name, root)
        jpath = info_file(name, root)
        save_weights(model, wpath, {"name": f"tracr_{name}", "source": "tracr", "seed": seed})
        jpath.parent.mkdir(parents=True, exist_ok=True)
        jpath.write_text(json.dumps(data, indent=1, default=_jsonable) + "\n")
        written += [wpath, jpath]
    return written


__all__ = [
    "build_program",
    "compile_program",
    "compile_tracr",
    "export",
    "fixed_selectors",
    "require_tracr",
    "varying_labels",
    "varying_sops",
]
