"""How much memory a batch may use: chunk sizes chosen from what the device has free."""

from __future__ import annotations

import os

import torch

#: On a CPU, batches beyond a few thousand tokens per forward pass gain no speed but cost memory.
CPU_TOKENS_PER_PASS = int(os.environ.get("FAITHLENS_CPU_TOKENS", "4096"))


def available_bytes(device: torch.device) -> int:
    """Free memory on ``device`` (CUDA: free device memory; CPU: available system memory)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    import psutil

    return int(psutil.virtual_memory().available)


def budget_bytes(device: torch.device, fraction: float = 0.25) -> int:
    """The share of free memory one batched computation may take."""
    return max(64 << 20, int(available_bytes(device) * fraction))


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
