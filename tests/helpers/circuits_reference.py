"""A plain-PyTorch reference for edge patching: bare hooks, explicit forward passes per edge.

Written independently of faithlens' engine (its own table of module paths, from
``tests.helpers.reference``): an edge ``u->v`` corrupted alone means that the reader port ``v``
reads ``clean residual + u(corrupt) - u(clean)`` and everything else runs clean.

- into a head's q / k / v: one forward pass with the change added to the layer's input records
  the port's projection output, a second clean pass writes it into that projection's slice;
- into an MLP: one forward pass with the change added to the input of the MLP's norm;
- into the logits: one forward pass with the change added to the input of the final norm.

EAP's reference is the gradient of the same passes with respect to the port's added change at
zero (autograd through the bare hooks, one port at a time), times each writer's change.
"""

from __future__ import annotations

import torch

from tests.helpers.reference import (
    PATHS,
    _forward,
    _hook,
    _writer,
    capture,
    receiver_target,
)

# (the MLP's norm inside a block, the final norm) per architecture
NORMS = {
    "gpt2": ("ln_2", "transformer.ln_f"),
    "llama": ("post_attention_layernorm", "model.norm"),
    "gpt_neox": ("post_attention_layernorm", "gpt_neox.final_layer_norm"),
    "faithlens_zoo": ("ln2", "ln_final"),
}


def _o_proj_slice(hf, layer: int, head: int) -> torch.Tensor:
    """``W`` with ``z_head @ W`` the head's contribution to the residual stream."""
    arch = hf.config.model_type
    layers, o_proj, _ = PATHS[arch]
    mod = hf.get_submodule(f"{layers}.{layer}.{o_proj}")
    d_head = hf.config.hidden_size // hf.config.num_attention_heads
    sl = slice(head * d_head, (head + 1) * d_head)
    if arch == "gpt2":  # Conv1D: weight [in, out]
        return mod.weight[sl, :]
    return mod.weight[:, sl].T


def writer_change(hf, task, writer: str) -> torch.Tensor:
    """``u(corrupt) - u(clean)`` in the residual stream, for a MIB writer name."""
    key = (id(hf), id(task), writer)
    if key not in _CHANGES:
        _CHANGES.clear() if len(_CHANGES) > 256 else None
        _CHANGES[key] = _writer_change(hf, task, writer)
    return _CHANGES[key]


_CHANGES: dict = {}


def _writer_change(hf, task, writer: str) -> torch.Tensor:
    clean, corrupt = task.clean, task.corrupt
    if writer == "input":
        site = "resid_pre.0"
    elif writer.startswith("a"):
        L, H = (int(x) for x in writer[1:].split(".h"))
        w = _o_proj_slice(hf, L, H)
        z_clean = capture(hf, f"head.{L}.{H}", clean.ids, clean.mask)
        z_corrupt = capture(hf, f"head.{L}.{H}", corrupt.ids, corrupt.mask)
        return (z_corrupt - z_clean) @ w.detach()
    else:
        site = f"mlp_out.{int(writer[1:])}"
    return capture(hf, site, corrupt.ids, corrupt.mask) - capture(hf, site, clean.ids, clean.mask)


def _metric(logits, task) -> torch.Tensor:
    r = torch.arange(logits.shape[0])
    last = logits[r, task.positions].double()
    return last[r, task.answers[:, 0]] - last[r, task.answers[:, 1]]


def _add(delta):
    def fn(x):
        return x + delta.to(x)

    return fn


def port_metric(hf, task, reader: str, delta: torch.Tensor) -> torch.Tensor:
    """The logit difference per example when the reader port (MIB name) alone reads
    ``clean residual + delta`` (``delta`` may require grad: nothing is detached)."""
    arch = hf.config.model_type
    layers = PATHS[arch][0]
    clean = task.clean
    mlp_norm, final_norm = NORMS[arch]
    if reader == "logits" or reader.startswith("m"):
        module = (
            hf.get_submodule(final_norm)
            if reader == "logits"
            else hf.get_submodule(f"{layers}.{int(reader[1:])}.{mlp_norm}")
        )
        h = _hook(module, "in", _add(delta))
        try:
            return _metric(_forward(hf, clean.ids, clean.mask), task)
        finally:
            h.remove()
    head, port = reader[:-3], reader[-2]
    L = int(head[1:].split(".")[0])
    idx = int(head.split(".")[1].lstrip("hkv"))
    n_heads = hf.config.num_attention_heads
    n_kv = getattr(hf.config, "num_key_value_heads", None) or n_heads
    # a key/value port of a group: read through its first query head
    h_node = idx if ".h" in head else idx * (n_heads // n_kv)
    module, io, sl = receiver_target(hf, f"head.{L}.{h_node}", port)
    store: dict = {}

    def record(x):
        store["x"] = x[..., sl]
        return x

    handles = [
        _hook(hf.get_submodule(f"{layers}.{L}"), "in", _add(delta)),
        _hook(module, io, record),
    ]
    try:
        _forward(hf, clean.ids, clean.mask)
    finally:
        for h in handles:
            h.remove()
    h = _hook(module, io, _writer(sl, store["x"], None))
    try:
        return _metric(_forward(hf, clean.ids, clean.mask), task)
    finally:
        h.remove()


def reference_exact(hf, task, edges) -> torch.Tensor:
    """``m(edge corrupted) - m(clean)`` per (edge, example): one reader port patched per edge."""
    with torch.no_grad():
        base = _metric(_forward(hf, task.clean.ids, task.clean.mask), task)
        rows = []
        for e in edges:
            writer, reader = e.split("->")
            rows.append(port_metric(hf, task, reader, writer_change(hf, task, writer)) - base)
    return torch.stack(rows)


def _at(change: torch.Tensor, position: int) -> torch.Tensor:
    out = torch.zeros_like(change)
    out[:, position] = change[:, position]
    return out


def reference_exact_at(hf, task, edges, position: int) -> torch.Tensor:
    """``m(edge corrupted at one position) - m(clean)`` per (edge, example): the reader port
    reads the writer's change at ``position`` only (one patched port per edge)."""
    with torch.no_grad():
        base = _metric(_forward(hf, task.clean.ids, task.clean.mask), task)
        rows = []
        for e in edges:
            writer, reader = e.split("->")
            change = _at(writer_change(hf, task, writer), position)
            rows.append(port_metric(hf, task, reader, change) - base)
    return torch.stack(rows)


def reference_eap_at(hf, task, edges) -> torch.Tensor:
    """EAP per position ``[edges, seq, n]``: ``(u(corrupt) - u(clean))[p] . dm/d(input_v)[p]``,
    the gradient by autograd through the bare-hook passes (as :func:`reference_eap`), summed over
    the width only."""
    grads: dict[str, torch.Tensor] = {}
    rows = []
    for e in edges:
        writer, reader = e.split("->")
        change = writer_change(hf, task, writer)
        if reader not in grads:
            delta = torch.zeros_like(change, requires_grad=True)
            with torch.enable_grad():
                m = port_metric(hf, task, reader, delta)
                (grads[reader],) = torch.autograd.grad(m.sum(), delta)
        rows.append((change * grads[reader]).sum(-1).T)
    return torch.stack(rows).detach()


def reference_eap(hf, task, edges) -> torch.Tensor:
    """``(u(corrupt) - u(clean)) . dm/d(input_v)`` per (edge, example): the gradient of
    ``port_metric`` at ``delta = 0``, by autograd through the same bare-hook passes, one reader
    port at a time."""
    grads: dict[str, torch.Tensor] = {}
    rows = []
    for e in edges:
        writer, reader = e.split("->")
        change = writer_change(hf, task, writer)
        if reader not in grads:
            delta = torch.zeros_like(change, requires_grad=True)
            with torch.enable_grad():
                m = port_metric(hf, task, reader, delta)
                (grads[reader],) = torch.autograd.grad(m.sum(), delta)
        rows.append((change * grads[reader]).sum((-2, -1)))
    return torch.stack(rows).detach()


def reference_eap_ig(hf, task, edges, steps: int) -> torch.Tensor:
    """EAP-IG on the inputs, by brute force: for each step ``k = 1 .. steps`` the first block's
    input (the embeddings) is replaced by ``e_corrupt + k / steps (e_clean - e_corrupt)`` with a
    bare hook, and the gradient of ``port_metric`` at ``delta = 0`` is taken by autograd one
    reader port at a time; the mean over steps times each writer's change."""
    layers = PATHS[hf.config.model_type][0]
    e_clean = capture(hf, "resid_pre.0", task.clean.ids, task.clean.mask)
    e_corrupt = capture(hf, "resid_pre.0", task.corrupt.ids, task.corrupt.mask)
    first = hf.get_submodule(f"{layers}.0")
    grads: dict[str, torch.Tensor] = {}
    rows = []
    for e in edges:
        writer, reader = e.split("->")
        change = writer_change(hf, task, writer)
        if reader not in grads:
            total = torch.zeros_like(change)
            for k in range(1, steps + 1):
                point = e_corrupt + (k / steps) * (e_clean - e_corrupt)
                h = _hook(first, "in", lambda x, p=point: p.to(x))
                try:
                    delta = torch.zeros_like(change, requires_grad=True)
                    with torch.enable_grad():
                        m = port_metric(hf, task, reader, delta)
                        (g,) = torch.autograd.grad(m.sum(), delta)
                finally:
                    h.remove()
                total = total + g
            grads[reader] = total / steps
        rows.append((change * grads[reader]).sum((-2, -1)))
    return torch.stack(rows).detach()


def _node_targets(hf) -> list[tuple[torch.nn.Module, str]]:
    """``ig="activations"``'s nodes as (module, 'in'|'out') whose tensor is the node's output,
    from this file's own tables: the first block's input (the embeddings), then per layer the
    output projection's input (all heads together) and the MLP's output (none in an
    attention-only zoo model)."""
    layers, o_proj, mlp = PATHS[hf.config.model_type]
    out = [(hf.get_submodule(f"{layers}.0"), "in")]
    for L in range(hf.config.num_hidden_layers):
        block = hf.get_submodule(f"{layers}.{L}")
        out.append((block.get_submodule(o_proj), "in"))
        if getattr(block, mlp.split(".")[0], None) is not None:
            out.append((block.get_submodule(mlp), "out"))
    return out


def _module_value(hf, module, io, ids, mask) -> torch.Tensor:
    store: dict = {}

    def keep(x):
        store["x"] = x.detach().clone()
        return x

    h = _hook(module, io, keep)
    try:
        with torch.no_grad():
            _forward(hf, ids, mask)
    finally:
        h.remove()
    return store["x"]


def reference_eap_ig_activations(hf, task, edges, steps: int) -> torch.Tensor:
    """EAP-IG on the activations, by brute force: for each node (:func:`_node_targets`) and
    step ``k = 1 .. steps``, that node's output alone is replaced by
    ``corrupt + k / steps (clean - corrupt)`` with a bare hook (the hooked value is a constant,
    so no gradient flows back through it), the gradient of ``port_metric`` at ``delta = 0`` is
    taken by autograd one reader port at a time, and the mean over all (node, step) runs is
    multiplied by each writer's change."""
    clean, corrupt = task.clean, task.corrupt
    targets = _node_targets(hf)
    values = [
        (
            _module_value(hf, mod, io, clean.ids, clean.mask),
            _module_value(hf, mod, io, corrupt.ids, corrupt.mask),
        )
        for mod, io in targets
    ]
    grads: dict[str, torch.Tensor] = {}
    rows = []
    for e in edges:
        writer, reader = e.split("->")
        change = writer_change(hf, task, writer)
        if reader not in grads:
            total = torch.zeros_like(change)
            for (mod, io), (v_clean, v_corrupt) in zip(targets, values):
                for k in range(1, steps + 1):
                    point = v_corrupt + (k / steps) * (v_clean - v_corrupt)
                    h = _hook(mod, io, lambda x, p=point: p.to(x))
                    try:
                        delta = torch.zeros_like(change, requires_grad=True)
                        with torch.enable_grad():
                            m = port_metric(hf, task, reader, delta)
                            (g,) = torch.autograd.grad(m.sum(), delta, allow_unused=True)
                    finally:
                        h.remove()
                    total = total + (torch.zeros_like(change) if g is None else g)
            grads[reader] = total / (steps * len(targets))
        rows.append((change * grads[reader]).sum((-2, -1)))
    return torch.stack(rows).detach()
