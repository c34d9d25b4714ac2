"""How much memory a batch may use: chunk sizes from a fixed budget, never from free memory.

Chunk sizes decide which examples share a forward pass, and batched kernels round differently
for different batch shapes (by ~1e-7 in float32). So that the same seed and configuration give
byte-identical results on any machine in any state, every chunk size follows from the memory
*budget* (a fixed default per device type, ``FAITHLENS_MEMORY``, or a method's ``max_memory``)
and from the model and data shapes, never from the memory free at the time. Only when the budget
does not fit in the free memory is it shrunk to fit, with a :class:`MemoryBudgetWarning` (the
numbers may then differ in the last digits from a run with the full budget).
"""

from __future__ import annotations

import os
import re
import warnings

import torch

#: On a CPU, batches beyond a few thousand tokens per forward pass gain no speed but cost memory.
CPU_TOKENS_PER_PASS = int(os.environ.get("FAITHLENS_CPU_TOKENS", "4096"))

#: The memory batched computations may plan with, per device type, unless ``FAITHLENS_MEMORY``
#: says otherwise. A method takes ``fraction`` of it (a quarter by default).
DEFAULT_MEMORY = {"cpu": 8 << 30, "cuda": 16 << 30}
_OTHER_DEVICES = 4 << 30


class MemoryBudgetWarning(UserWarning):
    """The memory budget does not fit in the free memory; chunks follow the free memory."""


def _parse_bytes(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", text.lower())
    if m is None:
        from .validate import fail

        raise fail("FAITHLENS_MEMORY", text, "is not a size", "use bytes or e.g. 8G or 512M")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2)]
    return int(float(m.group(1)) * scale)


def configured_bytes(device: torch.device) -> int:
    """The memory budget of ``device``'s type: ``FAITHLENS_MEMORY`` or :data:`DEFAULT_MEMORY`."""
    env = os.environ.get("FAITHLENS_MEMORY")
    if env:
        return max(64 << 20, _parse_bytes(env))
    return DEFAULT_MEMORY.get(device.type, _OTHER_DEVICES)


def available_bytes(device: torch.device) -> int:
    """Free memory on ``device`` (CUDA: free device memory; CPU: available system memory)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


def budget_bytes(device: torch.device, fraction: float = 0.25) -> int:
    """The share of the configured memory one batched computation may take (a fixed number,
    shrunk with a :class:`MemoryBudgetWarning` only where it exceeds the free memory)."""
    want = max(64 << 20, int(configured_bytes(device) * fraction))
    free = available_bytes(device)
    if want > free:
        warnings.warn(
            f"faithlens: the memory budget ({want / 2**30:.2f} GiB) exceeds the free memory "
            f"on {device} ({free / 2**30:.2f} GiB); chunks are sized to the free memory, so "
            "results may differ in the last digits from a run with more free memory. Set "
            "FAITHLENS_MEMORY (e.g. FAITHLENS_MEMORY=1G) for chunk sizes that fit here.",
            MemoryBudgetWarning,
            stacklevel=2,
        )
        return max(64 << 20, int(free * 0.5))
    return want


def rows_that_fit(
    bytes_per_row: int,
    device: torch.device,
    *,
    tokens_per_row: int = 1,
    fraction: float = 0.25,
    limit: int | None = None,
) -> int:
    """How many batch rows fit the memory budget (and, on a CPU, the tokens-per-pass cap)."""
    rows = budget_bytes(device, fraction) // max(1, bytes_per_row)
    if device.type == "cpu":
        rows = min(rows, max(1, CPU_TOKENS_PER_PASS // max(1, tokens_per_row)))
    if limit is not None:
        rows = min(rows, limit)
    return max(1, int(rows))
