"""Patching plots (``faithlens.report.plots``): titles that fit the figure and say what was
patched."""

from __future__ import annotations

import pytest
import torch

import faithlens as fl
from faithlens.report.plots import fit_title, patching_title, subplots


@pytest.fixture(scope="module")
def induction():
    torch.set_num_threads(1)
    m = fl.load("zoo:induction")
    return m, fl.tasks.build("induction", m, n=8, seed=0)


def _title_inside_figure(fig) -> bool:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # lay out and render, as savefig would
    box = fig.axes[0].title.get_window_extent(canvas.get_renderer())
    width = fig.get_figwidth() * fig.dpi
    return box.x0 >= 0 and box.x1 <= width


def test_a_long_title_on_a_small_heatmap_is_wrapped_not_clipped(induction):
    # the "ath patching": the title was wider than a small heatmap and cut at both ends
    m, t = induction
    res = fl.patch(m, t, "head", n_boot=50)  # a 2 x 4 heatmap: the smallest figure
    fig = res.plot()
    assert fig.axes[0].get_title().replace("\n", " ").startswith("exact patching (denoising)")
    assert _title_inside_figure(fig)
    fig, ax = subplots(figsize=(3.0, 2.0))
    fit_title(ax, "a very long title " * 8)
    assert ax.get_title().count("\n") >= 2 and _title_inside_figure(fig)


def test_path_patching_title_names_its_receivers(induction):
    m, t = induction
    res = fl.path_patch(m, t, ["head.0.0", "head.0.1"], ["head.1.1"], n_boot=50)
    title = patching_title(res)
    assert title.startswith("path patching (denoising): senders into head.1.1")
    assert "induction" in title
    assert "head.1.1" in res.plot().axes[0].get_title().replace("\n", " ")
    direct = fl.path_patch(m, t, ["head.0.0", "head.1.1"], "logits", n_boot=50)
    assert "senders into the logits (direct effect)" in patching_title(direct)


def test_per_position_heatmap_labels_positions_with_tokens(induction):
    m, t = induction
    assert m.tokenizer is not None
    res = fl.patch(m, t, ["resid_pre.1"], positions="each", n_boot=20)
    toks = res.meta["position_tokens"]
    ids = t.clean.ids[0].tolist()
    assert toks == {str(p): m.tokenizer.decode([ids[p]]) for p in sorted(set(res.position))}
    fig = res.plot()
    labels = [x.get_text() for x in fig.axes[0].get_xticklabels()]
    assert labels == [f"{p} {toks[str(p)]!r}" for p in sorted(set(res.position))]
    assert "token of example 0" in fig.axes[0].get_xlabel()


def test_position_tokens_survive_save_and_load(induction, tmp_path):
    m, t = induction
    res = fl.patch(m, t, ["resid_pre.1"], positions="each", n_boot=20)
    res.save(tmp_path / "r")
    assert (
        fl.PatchingResult.load(tmp_path / "r").meta["position_tokens"]
        == res.meta["position_tokens"]
    )
