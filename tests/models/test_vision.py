"""Vision adapters: spatial sites of a plain CNN (ConvAdapter) and of ResNet, a ViT and a CNN
patched through fl.patch against hand-made plain-PyTorch hook references, registration with
hf_adapter, and bad inputs refused with the argument named."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from torch import nn

import faithlens as fl
from faithlens.errors import InputError, ShapeError, SiteError
from faithlens.models import ConvAdapter
from faithlens.models.adapters import hf_adapter
from faithlens.models.vision import ResNetAdapter, VisionTransformerAdapter, pixels
from tests.helpers.models_coverage import VISION

N = 6


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 5),
    ).eval()


@pytest.fixture(scope="module")
def cnn():
    net = _cnn()
    x = pixels(N, 3, 8, seed=1)
    adapter = ConvAdapter(net, {"conv1": "1", "conv2": "3", "feat": "5"}, example=x[:1])
    return net, fl.wrap(net, adapter=adapter), x, pixels(N, 3, 8, seed=2)


def _answers():
    return torch.tensor([[i % 5, (i + 2) % 5] for i in range(N)])


def test_conv_adapter_sites_are_channels_by_positions(cnn):
    net, m, x, _ = cnn
    info = {k: (i.kind, i.width, i.hook.spatial) for k, i in m.adapter.site_table.items()}
    assert info == {
        "conv1": ("conv", 4, True),
        "conv2": ("conv", 6, True),
        "feat": ("dense", 6, False),
    }
    out = m.run(x, cache=["conv1", "conv2", "feat"])
    with torch.no_grad():
        c1 = net[1](net[0](x))
    assert out.cache["conv1"].shape == (N, 64, 4)
    assert torch.equal(out.cache["conv1"], c1.flatten(2).transpose(1, 2))
    assert out.cache["conv2"].shape == (N, 16, 6)
    assert out.cache["feat"].shape == (N, 6)
    assert m.sites("conv") == ["conv1", "conv2"]


def test_positions_are_row_major_and_units_are_channels(cnn):
    net, m, x, _ = cnn
    # position 1 * 8 + 3 is row 1, column 3; unit 2 is channel 2
    got = m.run(x, cache=[fl.Site("conv1", positions=[11], units=[2])]).cache["conv1"]
    with torch.no_grad():
        c1 = net[1](net[0](x))
    assert got.shape == (N, 1, 1)
    assert torch.equal(got[:, 0, 0], c1[:, 2, 1, 3])
    # zeroing that one cell equals a plain hook doing it
    h = net[1].register_forward_hook(
        lambda _m, _a, o: o.index_put(
            (torch.arange(N), torch.tensor(2), torch.tensor(1), torch.tensor(3)), torch.tensor(0.0)
        )
    )
    try:
        with torch.no_grad():
            ref = net(x)
    finally:
        h.remove()
    zeroed = m.run(x, [fl.Zero(fl.Site("conv1", positions=[11], units=[2]))]).logits
    assert torch.allclose(zeroed, ref, atol=1e-6)
    # the string form [:, position, units]
    same = m.run(x, cache=["conv1[:, 11, 2:3]"]).cache["conv1"]
    assert torch.equal(same, got)


def _cnn_reference(net, clean, corrupt, answers, pos=None):
    """Metric of the corrupted run with conv2's output patched from the clean run (at one
    spatial position, or everywhere), with plain PyTorch hooks."""
    store = {}
    h = net[3].register_forward_hook(lambda _m, _a, o: store.__setitem__("o", o.clone()))
    with torch.no_grad():
        net(clean)
    h.remove()

    def put(_m, _a, o):
        if pos is None:
            return store["o"]
        o = o.clone()
        w = o.shape[3]
        o[:, :, pos // w, pos % w] = store["o"][:, :, pos // w, pos % w]
        return o

    h = net[3].register_forward_hook(put)
    try:
        with torch.no_grad():
            logits = net(corrupt)
    finally:
        h.remove()
    picked = logits.gather(1, answers)
    return (picked[:, 0] - picked[:, 1]).double().numpy()


def test_cnn_patching_equals_a_hand_made_hook_reference(cnn):
    net, m, x, y = cnn
    task = fl.Task.from_tensors(x, y, answers=_answers())
    res = fl.patch(m, task, ["conv2"], n_boot=50)
    np.testing.assert_allclose(res.patched[0], _cnn_reference(net, x, y, task.answers), atol=1e-5)
    each = fl.patch(m, task, ["conv2"], positions="each", n_boot=50)
    assert list(each.position) == list(range(16))
    for p in (0, 5, 15):
        want = _cnn_reference(net, x, y, task.answers, pos=p)
        np.testing.assert_allclose(each.patched[p], want, atol=1e-5)


def test_vit_patching_equals_a_hand_made_hook_reference():
    f = next(v for v in VISION if v.key == "vit")
    hf = f.build()
    m = fl.wrap(hf)
    x, y = pixels(N, 3, 8, seed=3), pixels(N, 3, 8, seed=4)
    task = fl.Task.from_tensors(x, y, answers=_answers())
    layer = hf.vit.layers[1]
    store = {}
    h = layer.register_forward_pre_hook(lambda _m, a: store.__setitem__("r", a[0].clone()))
    with torch.no_grad():
        hf(x)
    h.remove()

    def run_with(pos):
        def put(_m, a, k):
            r = a[0].clone()
            r[:, pos] = store["r"][:, pos]
            return (r, *a[1:]), k

        hook = layer.register_forward_pre_hook(put, with_kwargs=True)
        try:
            with torch.no_grad():
                logits = hf(y).logits
        finally:
            hook.remove()
        picked = logits.gather(1, task.answers)
        return (picked[:, 0] - picked[:, 1]).double().numpy()

    res = fl.patch(m, task, ["resid_pre.1"], positions="each", n_boot=50)
    assert len(res.position) == 5  # the CLS token and 4 patches
    for p in range(5):
        np.testing.assert_allclose(res.patched[p], run_with(p), atol=1e-5)
    full = fl.patch(m, task, ["resid_pre.1"], n_boot=50)
    np.testing.assert_allclose(full.patched[0], run_with(slice(None)), atol=1e-5)


def test_hf_adapter_builds_the_vision_adapters():
    kinds = {"vit": VisionTransformerAdapter, "clip_vision_model": VisionTransformerAdapter}
    for f in VISION:
        a = hf_adapter(f.build())
        assert isinstance(a, kinds.get(f.key, ResNetAdapter))
        assert a.arch == f.arch and a.token_inputs is False


@pytest.mark.parametrize(
    "make, error, match",
    [
        (lambda net, x: ConvAdapter(net, {}, example=x[:1]), InputError, "needs sites"),
        (
            lambda net, x: ConvAdapter(net, {"c": "nope"}, example=x[:1]),
            SiteError,
            "no module named 'nope'",
        ),
        (lambda net, x: ConvAdapter(net, {"c": "1"}, example="x"), InputError, "needs example"),
    ],
    ids=["no-sites", "unknown-module", "no-example"],
)
def test_conv_adapter_refuses_bad_arguments(make, error, match):
    net = _cnn()
    with pytest.raises(error, match=match):
        make(net, pixels(1, 3, 8))


def test_unknown_site_names_the_sites(cnn):
    _, m, x, _ = cnn
    with pytest.raises(SiteError, match="conv1"):
        m.run(x, cache=["conv3"])


def test_selection_on_a_raw_four_dimensional_site_points_to_spatial_sites(cnn):
    _, m, x, _ = cnn
    with pytest.raises(ShapeError, match="example=inputs"):
        m.run(x, cache=[fl.Site("module:1", units=[0])])


def test_the_vision_example_in_docs_patching_md_runs():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "patching.md").read_text()
    section = text.split("## Vision models", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    scope: dict = {}
    exec(compile(code, "docs/patching.md", "exec"), scope)
    assert len(scope["res"].position) == 64 and np.isfinite(scope["approx"].patched).all()


def test_wrap_with_an_example_builds_a_conv_adapter():
    net = _cnn()
    x = pixels(2, 3, 8)
    m = fl.wrap(net, sites={"conv2": "3"}, example=x[:1])
    assert isinstance(m.adapter, ConvAdapter)
    assert m.run(x, cache=["conv2"]).cache["conv2"].shape == (2, 16, 6)
    with pytest.raises(InputError, match="sites="):
        fl.wrap(net, example=x[:1])


@pytest.mark.parametrize(
    "key, shape",
    [("vit", (N, 3, 16, 16)), ("vit", (N, 1, 8, 8)), ("resnet", (N, 1, 16, 16))],
    ids=["vit-image-size", "vit-channels", "resnet-channels"],
)
def test_inputs_of_the_wrong_shape_are_refused_before_any_work(key, shape):
    f = next(v for v in VISION if v.key == key)
    m = fl.wrap(f.build())
    x = torch.randn(*shape)
    task = fl.Task.from_tensors(x, x + 1, answers=_answers())
    site = "resid_pre.1" if key == "vit" else "block.1.0"
    want = re.escape(f"cannot run on inputs of per-example shape [{shape[1:]}]")
    with pytest.raises(InputError, match=want):
        fl.patch(m, task, [site], n_boot=20)


def test_a_vision_adapters_own_kinds_are_site_groups():
    f = next(v for v in VISION if v.key == "resnet")
    m = fl.wrap(f.build())
    x, y = pixels(N, 3, 16, seed=1), pixels(N, 3, 16, seed=2)
    task = fl.Task.from_tensors(x, y, answers=_answers())
    res = fl.patch(m, task, "block", n_boot=20)
    assert list(res.site) == m.sites("block") == ["block.0.0", "block.1.0", "block.1.1"]
