"""A plain-PyTorch reference for activation and attribution patching.

Written independently of faithlens' engine: its own table of module paths per architecture, bare
forward hooks, one full forward pass per condition. Tests and benchmarks compare faithlens
against it.
"""

from __future__ import annotations

import torch

# (layers path, head-output module (its input), mlp module (its output), heads slice width attr)
PATHS = {
    "llama": ("model.layers", "self_attn.o_proj", "mlp"),
    "gpt2": ("transformer.h", "attn.c_proj", "mlp"),
    "gpt_neox": ("gpt_neox.layers", "attention.dense", "mlp"),
    "faithlens_zoo": ("blocks", "attn.o_proj", "mlp"),
}


def site_target(hf, site: str):
    """(module, 'in'|'out', slice) for a site name, from this file's own table."""
    arch = hf.config.model_type
    layers, o_proj, mlp = PATHS[arch]
    parts = site.split(".")
    kind, layer = parts[0], int(parts[1])
    block = hf.get_submodule(f"{layers}.{layer}")
    if kind == "head":
        n_heads = hf.config.num_attention_heads
        d_head = hf.config.hidden_size // n_heads
        h = int(parts[2])
        return block.get_submodule(o_proj), "in", slice(h * d_head, (h + 1) * d_head)
    if kind == "mlp_out":
        return block.get_submodule(mlp), "out", slice(None)
    if kind == "resid_pre":
        return block, "in", slice(None)
    if kind == "attn_out":
        return block.get_submodule(o_proj.split(".")[0]), "out", slice(None)
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
