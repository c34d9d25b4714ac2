"""Benchmark: exact edge patching of every edge, faithlens against a plain hooked reference.

The experiment: a randomly initialised GPT-2 (``--layers`` layers of ``--heads`` heads, width
``--width``, MLPs, seed 0, float32), ``fl.tasks.random_token_task(model, n, seq, seed=0)``
(one corrupted token per prompt), metric = logit difference at the last position; every edge of
the edge graph (``fl.circuits.EdgeGraph``), patched alone in the noising direction.

``reference``
    ``tests/helpers/circuits_reference.py``'s ``reference_exact``: plain PyTorch with bare
    forward hooks on the Hugging Face modules, per edge one full forward pass on all examples
    (two for an edge into a head's query, key or value: one recording the port's projection
    from the shifted layer input, one writing it).
``faithlens``
    ``fl.circuits.exact(model, task, n_boot=1000)`` with its defaults: runs resumed at the
    reader's layer from the clean run's cached residual stream, edges that share a reader layer
    stacked in the batch (the bootstrap of every edge's interval included).

Both run in this process, one after the other, on the same model, after one warm-up pass; the
per-(edge, example) values are compared (they must agree within 1e-4) and the ratio of wall
times printed.

With ``--auto-circuit``, also EAP against auto-circuit (Miller et al.'s library, not a
faithlens dependency: install ``auto-circuit==1.0.1`` and ``transformer-lens`` in a scratch
virtual environment of your own, e.g. one created with ``--system-site-packages`` from the
project's). The same GPT-2 weights are loaded into a TransformerLens ``HookedTransformer``
(``convert_gpt2_weights``, no weight processing; its logits are checked against Hugging Face's)
and wrapped by ``patchable_model(factorized=True, separate_qkv=True)``; auto-circuit's EAP is
``mask_gradient_prune_scores(..., grad_function="logit", answer_function="avg_diff",
mask_val=0.0)`` on one batch of all examples, faithlens' ``fl.circuits.eap(model, task,
n_boot=1000)``. Edge names differ between the libraries, so the two score sets are compared as
sorted ``|score|`` lists (same number of edges, equal within 1e-6).

Run from the repository root: ``python benchmarks/circuits.py [--threads N] [--auto-circuit]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.helpers.circuits_reference import reference_exact  # noqa: E402

import faithlens as fl  # noqa: E402


def build(layers: int, heads: int, width: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(
        n_layer=layers,
        n_head=heads,
        n_embd=width,
        vocab_size=512,
        n_positions=64,
        bos_token_id=0,
        eos_token_id=0,
    )
    return GPT2LMHeadModel(cfg).eval()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--seq", type=int, default=16)
    p.add_argument("--auto-circuit", action="store_true", help="also EAP against auto-circuit")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    hf = build(args.layers, args.heads, args.width)
    model = fl.wrap(hf)
    task = fl.tasks.random_token_task(model, args.n, args.seq, seed=0)
    eg = fl.circuits.EdgeGraph(model)
    print(eg.describe())
    print(f"n={args.n} examples of {args.seq} tokens, {args.threads} thread(s)")
    model.run(task.clean)  # warm-up

    t = time.perf_counter()
    ref = reference_exact(hf, task, eg.names).numpy()
    t_ref = time.perf_counter() - t
    t = time.perf_counter()
    res = fl.circuits.exact(model, task, n_boot=1000)
    t_fl = time.perf_counter() - t

    err = float(np.abs(res.values - ref).max())
    print(f"reference (bare hooks, a pass per edge): {t_ref:8.2f} s")
    print(f"faithlens fl.circuits.exact:             {t_fl:8.2f} s")
    print(
        f"ratio: {t_ref / t_fl:.1f}x   max |difference| {err:.2e} (largest value {np.abs(ref).max():.2e})"
    )
    if err > 1e-4:
        raise SystemExit(f"the values differ by {err:.2e} > 1e-4")
    if args.auto_circuit:
        auto_circuit(hf, model, task, args)


def auto_circuit(hf, model, task, args) -> None:
    """EAP: auto-circuit's mask gradients against fl.circuits.eap (module docstring)."""
    from auto_circuit.data import PromptDataLoader, PromptDataset
    from auto_circuit.prune_algos.mask_gradient import mask_gradient_prune_scores
    from auto_circuit.utils.graph_utils import patchable_model
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights

    cfg = HookedTransformerConfig(
        n_layers=args.layers,
        d_model=args.width,
        d_head=args.width // args.heads,
        n_heads=args.heads,
        d_mlp=4 * args.width,
        d_vocab=512,
        n_ctx=64,
        act_fn="gelu_new",
        normalization_type="LN",
        default_prepend_bos=False,
        positional_embedding_type="standard",
    )
    tl = HookedTransformer(cfg)
    tl.load_state_dict(convert_gpt2_weights(hf, cfg), strict=False)
    tl.eval()
    tl.cfg.use_attn_result = True
    tl.cfg.use_split_qkv_input = True
    tl.cfg.use_hook_mlp_in = True
    tl.setup()
    with torch.no_grad():
        gap = (tl(task.clean.ids) - hf(task.clean.ids).logits).abs().max().item()
    print(f"TransformerLens vs Hugging Face logits: max |difference| {gap:.1e}")
    n = task.n
    ds = PromptDataset(
        task.clean.ids,
        task.corrupt.ids,
        [task.answers[i, :1] for i in range(n)],
        [task.answers[i, 1:2] for i in range(n)],
    )
    dl = PromptDataLoader(ds, seq_len=None, diverge_idx=0, batch_size=n, shuffle=False)
    pm = patchable_model(
        tl, factorized=True, slice_output="last_seq", separate_qkv=True, device=torch.device("cpu")
    )
    t = time.perf_counter()
    ps = mask_gradient_prune_scores(
        pm, dl, None, grad_function="logit", answer_function="avg_diff", mask_val=0.0
    )
    t_ac = time.perf_counter() - t
    t = time.perf_counter()
    res = fl.circuits.eap(model, task, n_boot=1000)
    t_fl = time.perf_counter() - t
    ac = np.sort(np.abs(np.concatenate([v.detach().flatten().numpy() for v in ps.values()])))
    ours = np.sort(np.abs(res.score))
    print(f"auto-circuit EAP (mask gradients):       {t_ac:8.2f} s   ({len(ac)} edges)")
    print(f"faithlens fl.circuits.eap (n_boot=1000): {t_fl:8.2f} s   ({len(ours)} edges)")
    if len(ac) != len(ours):
        raise SystemExit("the two libraries' edge graphs differ in size")
    err = float(np.abs(ac - ours).max())
    print(
        f"ratio (auto-circuit / faithlens): {t_ac / t_fl:.2f}x   sorted |score| max |difference| {err:.1e}"
    )
    if err > 1e-6:
        raise SystemExit(f"the sorted scores differ by {err:.2e} > 1e-6")


if __name__ == "__main__":
    main()
