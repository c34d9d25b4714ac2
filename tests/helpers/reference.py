"""A plain-PyTorch reference for activation and attribution patching.

Written independently of faithlens' engine: its own table of module paths per architecture, bare
forward hooks, one full forward pass per condition. Tests and benchmarks compare faithlens
against it.
"""

from __future__ import annotations

import torch
from torch import nn

# (layers path, head-output module (its input), mlp module (its output), heads slice width attr)
PATHS = {
    "llama": ("model.layers", "self_attn.o_proj", "mlp"),
    "gpt2": ("transformer.h", "attn.c_proj", "mlp"),
    "gpt_neox": ("gpt_neox.layers", "attention.dense", "mlp"),
    "faithlens_zoo": ("blocks", "attn.o_proj", "mlp"),
    "gemma3_text": ("model.layers", "self_attn.o_proj", "mlp"),
}
# Families whose attention and MLP outputs pass through a norm before the residual stream: the
# modules whose outputs are what ``attn_out`` and ``mlp_out`` add to it.
POST_NORMS = {"gemma3_text": ("post_attention_layernorm", "post_feedforward_layernorm")}


def site_target(hf, site: str):
    """(module, 'in'|'out', slice) for a site name, from this file's own table."""
    arch = hf.config.model_type
    layers, o_proj, mlp = PATHS[arch]
    parts = site.split(".")
    kind, layer = parts[0], int(parts[1])
    block = hf.get_submodule(f"{layers}.{layer}")
    if kind == "head":
        n_heads = hf.config.num_attention_heads
        d_head = getattr(hf.config, "head_dim", None) or hf.config.hidden_size // n_heads
        h = int(parts[2])
        return block.get_submodule(o_proj), "in", slice(h * d_head, (h + 1) * d_head)
    post = POST_NORMS.get(arch)
    if kind == "mlp_out":
        return block.get_submodule(post[1] if post else mlp), "out", slice(None)
    if kind == "resid_pre":
        return block, "in", slice(None)
    if kind == "attn_out":
        return block.get_submodule(post[0] if post else o_proj.split(".")[0]), "out", slice(None)
    raise ValueError(site)


def _forward(hf, ids, mask):
    return hf(input_ids=ids, attention_mask=mask).logits


def capture(hf, site, ids, mask):
    module, io, sl = site_target(hf, site)
    store = {}
    if io == "in":
        h = module.register_forward_pre_hook(
            lambda m, a: store.__setitem__("x", a[0].detach().clone())
        )
    else:

        def post(m, a, o):
            store["x"] = (o if isinstance(o, torch.Tensor) else o[0]).detach().clone()

        h = module.register_forward_hook(post)
    try:
        with torch.no_grad():
            _forward(hf, ids, mask)
    finally:
        h.remove()
    return store["x"][..., sl]


def patched_logits(hf, site, ids, mask, source, positions):
    """One forward pass on ``ids`` with ``source`` written into ``site`` at ``positions``
    (None: all positions; a LongTensor [n]: one position per example; an int)."""
    module, io, sl = site_target(hf, site)
    n = ids.shape[0]

    def write(x):
        x = x.clone()
        if positions is None:
            x[..., sl] = source
        elif isinstance(positions, int):
            x[:, positions, sl] = source[:, positions]
        else:
            r = torch.arange(n)
            x[r, positions, sl] = source[r, positions]
        return x

    if io == "in":
        h = module.register_forward_pre_hook(lambda m, a: (write(a[0]), *a[1:]))
    else:

        def post(m, a, o):
            if isinstance(o, torch.Tensor):
                return write(o)
            return (write(o[0]), *o[1:])

        h = module.register_forward_hook(post)
    try:
        with torch.no_grad():
            return _forward(hf, ids, mask)
    finally:
        h.remove()


def logit_diff(logits, positions, answers):
    r = torch.arange(logits.shape[0])
    last = logits[r, positions]
    return last[r, answers[:, 0]] - last[r, answers[:, 1]]


def reference_patch(hf, task, sites, positions="all", direction="denoising"):
    """Per (condition, example) metric, conditions ordered like faithlens.patch's plan."""
    clean, corrupt = task.clean, task.corrupt
    base, src = (corrupt, clean) if direction == "denoising" else (clean, corrupt)
    rows = []
    for site in sites:
        source = capture(hf, site, src.ids, src.mask)
        if positions == "all":
            specs = [None]
        elif positions == "last":
            specs = [task.positions]
        else:
            specs = list(range(task.seq_len))
        for p in specs:
            logits = patched_logits(hf, site, base.ids, base.mask, source, p)
            rows.append(logit_diff(logits, task.positions, task.answers))
    return torch.stack(rows).double().numpy()


def reference_attribution(hf, task, sites, positions="all", direction="denoising"):
    """First-order estimates with bare hooks and torch.autograd.grad, per (condition, example)."""
    clean, corrupt = task.clean, task.corrupt
    base, src = (corrupt, clean) if direction == "denoising" else (clean, corrupt)
    sources = {s: capture(hf, s, src.ids, src.mask) for s in sites}
    acts, handles = {}, []
    for s in sites:
        module, io, sl = site_target(hf, s)

        def hook_in(m, a, s=s, sl=sl):
            x = a[0]
            d = torch.zeros_like(x[..., sl], requires_grad=True)
            acts[s] = (x[..., sl].detach(), d)
            x = x.clone()
            x[..., sl] = x[..., sl] + d
            return (x, *a[1:])

        def hook_out(m, a, o, s=s, sl=sl):
            x = o if isinstance(o, torch.Tensor) else o[0]
            d = torch.zeros_like(x[..., sl], requires_grad=True)
            acts[s] = (x[..., sl].detach(), d)
            x = x.clone()
            x[..., sl] = x[..., sl] + d
            return x if isinstance(o, torch.Tensor) else (x, *o[1:])

        if io == "in":
            handles.append(module.register_forward_pre_hook(hook_in))
        else:
            handles.append(module.register_forward_hook(hook_out))
    try:
        logits = _forward(hf, base.ids, base.mask)
        m = logit_diff(logits, task.positions, task.answers)
        grads = torch.autograd.grad(m.sum(), [acts[s][1] for s in sites])
    finally:
        for h in handles:
            h.remove()
    hf.zero_grad(set_to_none=True)
    rows = []
    n = base.ids.shape[0]
    for s, g in zip(sites, grads):
        contrib = ((sources[s] - acts[s][0]) * g).sum(-1)
        if positions == "all":
            rows.append(m.detach() + contrib.sum(-1))
        elif positions == "last":
            rows.append(m.detach() + contrib[torch.arange(n), task.positions])
        else:
            rows.extend(m.detach() + contrib[:, t] for t in range(task.seq_len))
    return torch.stack(rows).double().numpy()


# Receiver inputs for path patching: (attention module path, q/k/v layout) per architecture.
QKV = {
    "llama": ("self_attn", "separate"),
    "faithlens_zoo": ("attn", "separate"),
    "gpt2": ("attn.c_attn", "concat"),  # [q | k | v], each n_heads * d_head
    "gpt_neox": ("attention.query_key_value", "per_head"),  # per head [q | k | v]
}


def receiver_target(hf, node: str, port: str):
    """(module, io, slice) of a path-patching receiver's input, from this file's own table."""
    arch = hf.config.model_type
    layers, _, mlp = PATHS[arch]
    parts = node.split(".")
    block = hf.get_submodule(f"{layers}.{int(parts[1])}")
    if parts[0] == "mlp":
        return block.get_submodule(mlp), "in", slice(None)
    cfg = hf.config
    n_heads = cfg.num_attention_heads
    d_head = cfg.hidden_size // n_heads
    h = int(parts[2])
    path, layout = QKV[arch]
    if layout == "separate":
        n_kv = getattr(cfg, "num_key_value_heads", None) or n_heads
        g = h if port == "q" else h // (n_heads // n_kv)
        return (
            block.get_submodule(f"{path}.{port}_proj"),
            "out",
            slice(g * d_head, (g + 1) * d_head),
        )
    j = "qkv".index(port)
    if layout == "concat":
        start = j * cfg.hidden_size + h * d_head
    else:
        start = h * 3 * d_head + j * d_head
    return block.get_submodule(path), "out", slice(start, start + d_head)


def _hook(module, io, fn):
    """Register ``fn(x) -> x`` on a module's first input or its (first) output."""
    if io == "in":
        return module.register_forward_pre_hook(lambda m, a: (fn(a[0]), *a[1:]))

    def post(m, a, o):
        if isinstance(o, torch.Tensor):
            return fn(o)
        return (fn(o[0]), *o[1:])

    return module.register_forward_hook(post)


def _writer(sl, value, positions):
    def fn(x):
        x = x.clone()
        if positions is None:
            x[..., sl] = value
        else:
            r = torch.arange(x.shape[0])
            x[r, positions, sl] = value[r, positions]
        return x

    return fn


def _recorder(store, key, sl):
    def fn(x):
        store[key] = x[..., sl].detach().clone()
        return x

    return fn


def reference_path_patch(
    hf,
    task,
    senders,
    receivers,
    ports=("q", "k", "v"),
    positions="all",
    receiver_positions="all",
    direction="denoising",
    score=None,
):
    """Path patching with bare hooks, three explicit runs per sender (source, A, B), per
    (sender, example) metric. ``receivers == ["logits"]``: run A's own output. ``score(logits,
    task)``: the metric from the full logits (default: the logit difference at the task's
    positions)."""
    clean, corrupt = task.clean, task.corrupt
    base, src = (corrupt, clean) if direction == "denoising" else (clean, corrupt)
    arch = hf.config.model_type
    layers_path = PATHS[arch][0]
    n_layers = len(hf.get_submodule(layers_path))
    parallel = arch == "gpt_neox" and bool(getattr(hf.config, "use_parallel_residual", True))
    spos = None if positions == "all" else task.positions
    rpos = None if receiver_positions == "all" else task.positions
    to_logits = list(receivers) == ["logits"]
    recv = (
        []
        if to_logits
        else [(r, p) for r in receivers for p in (ports if r.startswith("head") else ("in",))]
    )
    rows = []
    for s in senders:
        kind, ls = s.split(".")[0], int(s.split(".")[1])
        site = s if kind == "head" else f"mlp_out.{ls}"
        value = capture(hf, site, src.ids, src.mask)

        def edge(r, kind=kind, ls=ls):
            lr = int(r.split(".")[1])
            if r.startswith("head"):
                return lr > ls
            return lr > ls or (lr == ls and kind == "head" and not parallel)

        targets = [(r, p) for r, p in recv if edge(r)]
        last = n_layers - 1 if to_logits else max(int(r.split(".")[1]) for r, _ in recv)
        has_mlp = isinstance(getattr(hf.get_submodule(f"{layers_path}.0"), "mlp", None), nn.Module)
        frozen = [f"mlp_out.{ls}"] if kind == "head" and has_mlp else []
        for L in range(ls + 1, last + 1):
            frozen += [f"attn_out.{L}", *([f"mlp_out.{L}"] if has_mlp else [])]
        # the base run's values, captured before any hook of run A is in place
        kept = {f: capture(hf, f, base.ids, base.mask) for f in frozen}
        handles = []
        store = {}
        try:
            m, io, sl = site_target(hf, site)
            handles.append(_hook(m, io, _writer(sl, value, spos)))
            for f in frozen:
                m, io, sl = site_target(hf, f)
                handles.append(_hook(m, io, _writer(sl, kept[f], None)))
            for r, p in targets:
                m, io, sl = receiver_target(hf, r, p)
                handles.append(_hook(m, io, _recorder(store, (r, p), sl)))
            with torch.no_grad():
                logits = _forward(hf, base.ids, base.mask)
        finally:
            for h in handles:
                h.remove()
        if not to_logits:
            handles = []
            try:
                for r, p in targets:
                    m, io, sl = receiver_target(hf, r, p)
                    handles.append(_hook(m, io, _writer(sl, store[(r, p)], rpos)))
                with torch.no_grad():
                    logits = _forward(hf, base.ids, base.mask)
            finally:
                for h in handles:
                    h.remove()
        if score is None:
            rows.append(logit_diff(logits, task.positions, task.answers))
        else:
            rows.append(score(logits, task))
    return torch.stack(rows).double().numpy()


def plain_capture(module, path, io, ids, mask=None, index=0):
    """Reference: capture a module's input/output with a bare forward hook."""
    target = module.get_submodule(path)
    store = {}
    if io == "in":
        h = target.register_forward_pre_hook(
            lambda m, a: store.__setitem__("x", a[index].detach().clone())
        )
    else:

        def post(m, a, o):
            store["x"] = (o if isinstance(o, torch.Tensor) else o[index]).detach().clone()

        h = target.register_forward_hook(post)
    try:
        with torch.no_grad():
            module(input_ids=ids, attention_mask=mask) if mask is not None else module(
                input_ids=ids
            )
    finally:
        h.remove()
    return store["x"]


def run_with_plain_edit(hf, path, io, ids, edit):
    """Reference: the logits with a bare hook that applies ``edit`` to the whole tensor entering
    (``io="in"``) or leaving (``"out"``) the module at ``path``."""
    target = hf.get_submodule(path)
    if io == "in":
        h = target.register_forward_pre_hook(lambda m, a: (edit(a[0].clone()), *a[1:]))
    else:

        def post(m, a, o):
            if isinstance(o, torch.Tensor):
                return edit(o.clone())
            return (edit(o[0].clone()), *o[1:])

        h = target.register_forward_hook(post)
    try:
        with torch.no_grad():
            return hf(input_ids=ids).logits
    finally:
        h.remove()


def assert_matches_plain_edit(model, interventions, path, io, ids, edit, atol=1e-5):
    """A faithlens run with ``interventions`` gives the logits of :func:`run_with_plain_edit`."""
    out = model.run(ids, interventions).logits
    ref = run_with_plain_edit(model.module, path, io, ids, edit)
    assert torch.allclose(out, ref, atol=atol)
