"""Activation and attribution patching against the plain-PyTorch reference."""

from __future__ import annotations

import numpy as np
import pytest

import faithlens as fl
from tests.helpers.reference import reference_attribution, reference_patch
from tests.helpers.tasks import padded_task

SITES = ["head.0.1", "head.1.3", "head.2.0", "mlp_out.0", "mlp_out.2", "resid_pre.1", "attn_out.2"]


def sites_of(model):
    """SITES that exist on this model (attention-only models have no MLP sites)."""
    return [s for s in SITES if model.d_mlp or not s.startswith("mlp")]


@pytest.mark.parametrize("positions", ["all", "last", "each"])
@pytest.mark.parametrize("direction", ["denoising", "noising"])
def test_exact_patching_equals_reference(tiny_causal, positions, direction):
    _, hf = tiny_causal
    model = fl.wrap(hf)
    task = padded_task(model)
    sites = sites_of(model)
    res = fl.patch(
        model, task, sites, positions=positions, direction=direction, n_boot=50, max_rows=12
    )
    ref = reference_patch(hf, task, sites, positions=positions, direction=direction)
    assert res.patched.shape == ref.shape
    np.testing.assert_allclose(res.patched, ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("positions", ["all", "last", "each"])
def test_attribution_patching_equals_reference(tiny_causal, positions):
    _, hf = tiny_causal
    model = fl.wrap(hf)
    task = padded_task(model)
    sites = [s for s in sites_of(model) if not s.startswith("resid")]
    res = fl.attribution_patch(model, task, sites, positions=positions, n_boot=50)
    ref = reference_attribution(hf, task, sites, positions=positions)
    np.testing.assert_allclose(res.patched, ref, atol=1e-4, rtol=0)
    assert all(p.grad is None for p in hf.parameters())
    assert all(p.requires_grad for p in hf.parameters())


def test_effect_formula_and_bootstrap(tiny_llama):
    model = fl.wrap(tiny_llama)
    task = padded_task(model)
    res = fl.patch(model, task, ["head.1.0", "resid_pre.0"], n_boot=200)
    b, s = res.base.mean(), res.source.mean()
    np.testing.assert_allclose(res.effect, (res.patched.mean(-1) - b) / (s - b), rtol=1e-10)
    # patching the whole residual stream before layer 0 reproduces the source run exactly
    i = res.site.index("resid_pre.0")
    np.testing.assert_allclose(res.patched[i], res.source, atol=1e-5)
    assert abs(res.effect[i] - 1) < 1e-5
    assert np.all(res.ci_low <= res.effect + 1e-9) and np.all(res.effect <= res.ci_high + 1e-9)


def test_result_frame_save_load_plot(tiny_llama, tmp_path):
    model = fl.wrap(tiny_llama)
    task = padded_task(model)
    res = fl.patch(model, task, "head", n_boot=100)
    df = res.to_frame()
    assert list(df.columns[:7]) == [
        "site",
        "kind",
        "layer",
        "head",
        "position",
        "effect",
        "effect_se",
    ]
    assert {"effect_ci_low", "effect_ci_high", "level"} <= set(df.columns)
    assert len(df) == model.n_layers * model.n_heads
    res.save(tmp_path / "r")
    back = fl.Result.load(tmp_path / "r")
    assert isinstance(back, fl.PatchingResult)
    np.testing.assert_array_equal(back.effect, res.effect)
    assert back.site == res.site and back.head == res.head
    fig = res.plot()
    fig.savefig(tmp_path / "heat.png")
    assert (tmp_path / "heat.png").stat().st_size > 1000
    assert "activation patching" in res.summary()


def test_chunking_does_not_change_results(tiny_gpt2):
    model = fl.wrap(tiny_gpt2)
    task = padded_task(model)
    a = fl.patch(model, task, "head", positions="each", n_boot=20)
    b = fl.patch(model, task, "head", positions="each", n_boot=20, max_rows=7)
    np.testing.assert_allclose(a.patched, b.patched, atol=1e-5)


@pytest.mark.parametrize("positions", ["all", "last", "each"])
def test_progress_counts_every_pass_once(tiny_gpt2, positions):
    model = fl.wrap(tiny_gpt2)
    task = padded_task(model)  # examples of several lengths: several chunks of examples
    calls: list[tuple[int, int]] = []
    fl.patch(
        model,
        task,
        "head",
        positions=positions,
        n_boot=20,
        max_rows=7,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls, "no progress reported"
    total = calls[0][1]
    assert [d for d, _ in calls] == list(range(1, total + 1))
    assert all(t == total for _, t in calls)


def test_noop_conditions_are_exact(tiny_llama):
    model = fl.wrap(tiny_llama)
    task = padded_task(model)
    res = fl.patch(model, task, ["head.0.0"], positions="each", n_boot=20)
    first = int(task.first_difference().min())
    assert res.meta["conditions_skipped_as_noop"] == first
    ref = reference_patch(tiny_llama, task, ["head.0.0"], positions="each")
    np.testing.assert_allclose(res.patched[:first], ref[:first], atol=1e-5)


def test_interventions_round_trip_through_bind(tiny_llama):
    model = fl.wrap(tiny_llama)
    task = padded_task(model)
    res = fl.patch(model, task, "head", positions="last", n_boot=20)
    ivs = res.interventions(top=3)
    assert len(ivs) == 3 and all(iv.source == "clean" for iv in ivs)
    bound = task.bind(model, ivs)
    best = int(np.argmax(np.abs(res.effect)))
    out = task.evaluate(model, "corrupt", bound[:1])
    np.testing.assert_allclose(out.double().numpy(), res.patched[best], atol=1e-5)


def test_killed_run_resumes_from_its_finished_chunks(tmp_path, monkeypatch):
    """A run killed after k chunks and started again with the same checkpoint folder computes
    only the chunks it had not finished, and gives the uninterrupted result, progress included."""
    from faithlens.errors import ArgumentError, CheckpointError
    from faithlens.patching import exact
    from faithlens.tasks.induction import induction_task

    m = fl.load("zoo:induction")
    task = induction_task(16, seed=0)
    kw = {"n_boot": 50, "max_memory": 1 << 20}  # several chunks of examples
    ticks: list[list[tuple[int, int]]] = [[], []]
    ref = fl.patch(m, task, "head", progress=lambda d, t: ticks[0].append((d, t)), **kw)
    real = exact._run_chunk
    calls: list[int] = []

    def counted(model, cp, *args):
        calls.append(int(cp.rows[0]))
        if len(calls) == 4 and kill:
            raise KeyboardInterrupt  # the run is killed while running its fourth chunk
        return real(model, cp, *args)

    monkeypatch.setattr(exact, "_run_chunk", counted)
    folder = tmp_path / "ckpt"
    kill = True
    with pytest.raises(KeyboardInterrupt):
        fl.patch(m, task, "head", checkpoint=folder, **kw)
    assert len(list(folder.glob("chunk_*.npz"))) == 3 and not list(folder.glob(".tmp*"))
    first = calls[:3]
    calls.clear()
    kill = False
    got = fl.patch(
        m, task, "head", checkpoint=folder, progress=lambda d, t: ticks[1].append((d, t)), **kw
    )
    n_chunks = len(list(folder.glob("chunk_*.npz")))
    assert n_chunks > 4 and len(calls) == n_chunks - 3 and not set(calls) & set(first)
    for f in ("effect", "se", "ci_low", "ci_high", "patched", "base", "source"):
        assert np.array_equal(getattr(ref, f), getattr(got, f), equal_nan=True), f
    assert ticks[0] == ticks[1]
    calls.clear()
    again = fl.patch(m, task, "head", checkpoint=folder, **kw)  # everything read back
    assert calls == [] and np.array_equal(again.effect, ref.effect)
    # another run's folder is refused, never resumed; a bad path is refused before any work
    with pytest.raises(CheckpointError, match="belongs to another run"):
        fl.patch(m, task, "head", direction="noising", checkpoint=folder, **kw)
    (folder / "chunk_0000001.npz").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match=r"chunk_0000001\.npz is not a readable"):
        fl.patch(m, task, "head", checkpoint=folder, **kw)
    with pytest.raises(ArgumentError, match="checkpoint=3: must be a folder path"):
        fl.patch(m, task, "head", checkpoint=3, **kw)


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
@pytest.mark.parametrize("positions", ["all", "last"])
def test_resid_post_sites_patch_like_a_plain_run(arch, positions):
    """``resid_post.L`` is layer L's output: a sweep resumed after layer L never computed it and
    was refused ("can never happen"); it now recomputes layer L, with the plain run's numbers."""
    import torch

    from tests.helpers.builders import BUILDERS, VOCAB

    model = fl.wrap(BUILDERS[arch]().double())
    g = torch.Generator().manual_seed(3)
    clean = torch.randint(1, VOCAB, (4, 6), generator=g).tolist()
    corrupt = torch.randint(1, VOCAB, (4, 6), generator=g).tolist()
    task = fl.Task.from_token_ids(clean, corrupt, [(5, 9)] * 4)
    res = fl.patch(model, task, "resid_post", positions=positions, n_boot=50)
    names = [f"resid_post.{L}" for L in range(model.n_layers)]
    src = model.run(task.clean, cache=names).cache
    for i, name in enumerate(names):
        where = "last" if positions == "last" else None
        pos = task.positions[:, None] if where else None
        site = fl.Site(name, positions=pos)
        source = src[name] if pos is None else src[name][torch.arange(task.n)[:, None], pos]
        want = task.evaluate(model, "corrupt", [fl.Patch(site, source=source)])
        np.testing.assert_allclose(res.patched[i], want.numpy(), rtol=0, atol=1e-5)
