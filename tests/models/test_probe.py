"""How many positions a site has on inputs without token ids, read once per input shape."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from faithlens.errors import InputError
from faithlens.models.probe import hooked_shape, site_positions, spatial_maps
from faithlens.models.sites import HookPoint


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.proj = nn.Linear(4, 2)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        h = self.conv(x).flatten(2).transpose(1, 2)  # [batch, h * w, 4]
        return self.proj(h).mean(1)


def test_positions_of_spatial_sequence_and_flat_sites():
    net = Net()
    x = torch.randn(3, 3, 8, 6)
    assert site_positions(net, HookPoint("conv", spatial=True), (x,), {}) == 12  # 4 x 3
    assert site_positions(net, HookPoint("proj", "in"), (x,), {}) == 12
    assert site_positions(net, HookPoint(""), (x,), {}) is None  # [batch, 2]: no positions
    assert hooked_shape(net, HookPoint("conv"), (x,), {}) == (4, 4, 3)


def test_shapes_are_read_once_per_input_shape():
    net = Net()
    hp = HookPoint("conv", spatial=True)
    site_positions(net, hp, (torch.randn(5, 3, 8, 8),), {})
    site_positions(net, hp, (torch.randn(2, 3, 8, 8),), {})  # another batch, same shape
    assert net.calls == 1
    assert site_positions(net, hp, (torch.randn(2, 3, 16, 16),), {}) == 64
    assert net.calls == 2


def test_spatial_maps_undo_the_site_layout():
    net = Net()
    x = torch.randn(2, 3, 8, 6)
    with torch.no_grad():
        maps = net.conv(x)
    hp = HookPoint("conv", spatial=True)
    flat = maps.flatten(2).transpose(1, 2)
    assert torch.equal(spatial_maps(net, hp, flat, (x,), {}), maps)
    assert spatial_maps(net, HookPoint("proj", "in"), flat, (x,), {}) is flat


def test_no_input_tensors_is_an_input_error():
    with pytest.raises(InputError, match="input tensors"):
        site_positions(Net(), HookPoint("conv", spatial=True), (), {})
