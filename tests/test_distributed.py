"""The Ray executor (faithlens.distributed): same numbers as in process, faults lose nothing.

The tests that need ray start a local cluster of two CPUs once for the module (loopback only, no
dashboard) and shut it down at the end; they skip where ray is not installed (CI installs it
from the lock: ``faithlens[ray]`` is part of ``[all]``).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import faithlens as fl
from faithlens import distributed as D
from faithlens import scrubbing as sc
from faithlens.errors import ArgumentError, InputError, MissingExtraError
from faithlens.executor import InProcess, current_executor, executor
from faithlens.patching import exact
from faithlens.tasks.induction import induction_task

# the tests that start a local Ray cluster run in one pytest-xdist process, one after another
pytestmark = pytest.mark.xdist_group("ray")

FIELDS = ("effect", "se", "ci_low", "ci_high", "patched", "base", "source")


# ---- without ray -----------------------------------------------------------------------------


def test_without_ray_the_error_names_the_extra(monkeypatch):
    """The module imports without ray; building the executor says what to install."""
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'faithlens\[ray\]'"):
        D.RayExecutor(workers=1)
    with pytest.raises(MissingExtraError), executor("ray", workers=1):
        pass


def test_model_spec_and_names():
    m = fl.load("zoo:induction")
    spec = D.model_spec(m)
    assert (spec.source, spec.dtype, spec.device) == ("zoo:induction", "float32", "cpu")
    assert spec.fingerprint == D.model_spec(fl.load("zoo:induction")).fingerprint
    assert D.load_checked(spec).spec == "zoo:induction"
    assert D.target_name(exact._run_chunk) == "faithlens.patching.exact:_run_chunk"
    assert D.resolve("faithlens.patching.exact:_run_chunk") is exact._run_chunk
    with pytest.raises(InputError, match="module-level function"):
        D.target_name(lambda m, x, t: x)
    wrapped = fl.wrap(m.module)
    with pytest.raises(ArgumentError, match=r"not loaded by fl.load.*fl.load\(name or path\)"):
        D.model_spec(wrapped)


def test_load_checked_refuses_other_weights():
    m = fl.load("zoo:induction")
    with torch.no_grad():
        next(m.module.parameters()).add_(1.0)
    with pytest.raises(InputError, match="other weights"):
        D.load_checked(D.model_spec(m))


def test_local_paths_are_recorded_absolute(tmp_path, monkeypatch):
    """A worker's working directory is not ours: a path spec is absolute."""
    shipped = Path(fl.zoo.__file__).parent / "weights" / "induction.safetensors"
    (tmp_path / "copy.safetensors").write_bytes(shipped.read_bytes())
    monkeypatch.chdir(tmp_path)
    loaded = fl.load("copy.safetensors")
    assert loaded.spec == str(tmp_path.resolve() / "copy.safetensors")
    spec = D.model_spec(loaded)
    assert spec.fingerprint == D.model_spec(fl.load("zoo:induction")).fingerprint
    monkeypatch.chdir("/")
    assert D.load_checked(spec).spec == spec.source


# ---- on a local cluster ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray", reason="ray is not installed: pip install 'faithlens[ray]'")
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def sweep_case():
    m = fl.load("zoo:induction")
    task = induction_task(16, seed=0)
    ticks: list[tuple[int, int]] = []
    # 1 MB: several chunks of examples, so the chunks spread over both workers
    ref = fl.patch(
        m, task, "head", n_boot=100, max_memory=1 << 20, progress=lambda d, t: ticks.append((d, t))
    )
    return m, task, ref, ticks


def _patch(m, task, ticks=None):
    progress = None if ticks is None else (lambda d, t: ticks.append((d, t)))
    return fl.patch(m, task, "head", n_boot=100, max_memory=1 << 20, progress=progress)


def _same(a, b):
    for f in FIELDS:
        x, y = np.asarray(getattr(a, f)), np.asarray(getattr(b, f))
        assert np.array_equal(x, y, equal_nan=True), f


@pytest.mark.slow
def test_patch_on_two_workers_equals_in_process(cluster, sweep_case):
    m, task, ref, ref_ticks = sweep_case
    ticks: list[tuple[int, int]] = []
    with executor("ray", workers=2) as ex:
        assert isinstance(ex, D.RayExecutor) and current_executor() is ex
        assert len(set(ex.worker_pids())) == 2
        got = _patch(m, task, ticks)
        assert ex.replaced == 0
    _same(ref, got)
    assert ticks == ref_ticks  # progress replayed in chunk order, as in process
    assert isinstance(current_executor(), InProcess)


@pytest.mark.slow
def test_path_patch_on_two_workers_equals_in_process(cluster):
    """Path patching's chunks of examples run on the workers; every array is the in-process
    one, and so are the progress calls."""
    m = fl.load("zoo:induction")
    task = induction_task(16, seed=0)
    cases = [
        {"receivers": "logits"},
        {"receivers": ["head.1.0", "head.1.1"], "receiver_ports": "qk", "positions": "last"},
    ]
    for kw in cases:
        calls: list[list[tuple[int, int]]] = [[], []]

        def run(ticks: list[tuple[int, int]], kw: dict = kw) -> fl.PatchingResult:
            return fl.path_patch(
                m,
                task,
                "head",
                n_boot=100,
                max_memory=1 << 19,  # several chunks of examples
                progress=lambda d, t: ticks.append((d, t)),
                **kw,
            )

        ref = run(calls[0])
        with executor("ray", workers=2) as ex:
            got = run(calls[1])
            assert ex.replaced == 0
        _same(ref, got)
        assert calls[0] == calls[1] and len(calls[0]) > 2, kw


def _scrub_case(m, task, **kw):
    h = sc.Hypothesis("induction head, its key from the previous-token head")
    a = h.add("h10", sc.to("head.1.0", direct=True), sampler="random")
    a.add("k01", sc.to("head.0.1", port="k"), sampler="exact")
    # 64 KB: several chunks of reference rows, so they spread over both workers
    return sc.scrub(m, task, h, n_boot=50, max_memory=1 << 16, **kw)


def _same_scrub(a, b):
    for f in ("scrubbed", "original", "baseline_values", "kl", "references"):
        assert np.array_equal(getattr(a, f), getattr(b, f), equal_nan=True), f
    assert a.table.equals(b.table)
    assert a.stats == b.stats  # runs, rows and layer-rows summed over the workers' chunks


@pytest.mark.slow
def test_scrub_on_two_workers_equals_in_process(cluster):
    """Scrubbing's chunks of reference rows run on the workers (the graph, plan and data are
    pickled once, the model is a reference each worker resolves to its own copy)."""
    m = fl.load("zoo:induction")
    task = induction_task(24, seed=0)
    ticks: list[list[tuple[int, int]]] = [[], []]
    ref = _scrub_case(m, task, progress=lambda d, t: ticks[0].append((d, t)))
    with executor("ray", workers=2) as ex, warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no fallback to this process
        got = _scrub_case(m, task, progress=lambda d, t: ticks[1].append((d, t)))
        assert ex.replaced == 0
    _same_scrub(ref, got)
    assert ticks[0] == ticks[1] and len(ticks[0]) > 2


@pytest.mark.slow
def test_killed_scrub_resumes_on_the_workers(cluster, tmp_path, monkeypatch):
    """A scrub killed after two chunks in process resumes on two workers from its checkpoint
    folder (the calling process wrote the chunks): the uninterrupted result."""
    from faithlens.scrubbing import preparation

    m = fl.load("zoo:induction")
    task = induction_task(24, seed=0)
    ref = _scrub_case(m, task)
    real, calls = preparation.rows_chunk, [0]

    def killed_on_the_third(*args):
        calls[0] += 1
        if calls[0] == 3:
            raise KeyboardInterrupt
        return real(*args)

    folder = tmp_path / "ckpt"
    with monkeypatch.context() as mp:
        mp.setattr(preparation, "rows_chunk", killed_on_the_third)
        with pytest.raises(KeyboardInterrupt):
            _scrub_case(m, task, checkpoint=folder)
    assert len(list(folder.glob("chunk_*.npz"))) == 2
    with executor("ray", workers=2) as ex:
        got = _scrub_case(m, task, checkpoint=folder)
        assert ex.replaced == 0
    _same_scrub(ref, got)


@pytest.mark.slow
def test_a_device_mapped_model_runs_on_the_workers_as_here(cluster):
    """The spec carries the device map: each worker places its model alike (here every module
    on the CPU) and the sweep is the in-process one bit for bit."""
    m = fl.load("zoo:induction", device_map="cpu")
    task = induction_task(16, seed=0)
    ref = _patch(m, task)
    with executor("ray", workers=2) as ex:
        got = _patch(m, task)
        assert ex.replaced == 0
    _same(ref, got)


@pytest.mark.slow
def test_scrub_work_that_does_not_pickle_runs_here_with_one_warning(cluster):
    """A lambda behaviour cannot be sent to workers: the chunks run in this process, with the
    same numbers, and the warning says so once and names the fix."""
    m = fl.load("zoo:induction")
    task = induction_task(12, seed=0)
    beh = sc.Fn(lambda out, ref: out.reshape(len(out), -1).mean(-1), name="mean logit")
    ref = _scrub_case(m, task, behaviour=beh)
    with executor("ray", workers=2):
        with pytest.warns(UserWarning, match="cannot be sent to workers.*no lambdas"):
            got = _scrub_case(m, task, behaviour=beh)
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)
            again = _scrub_case(m, task, behaviour=beh)  # warned once
    _same_scrub(ref, got)
    _same_scrub(ref, again)


@pytest.mark.slow
def test_same_chunks_as_in_process(cluster):
    with executor("ray", workers=1) as ex:
        ip = InProcess()
        for n, b, mem in [(16, 1000, 1 << 20), (5000, 123_457, None), (7, 3, 64)]:
            kw = {"device": torch.device("cpu"), "max_memory": mem}
            assert ex.chunk_size(n, b, **kw) == ip.chunk_size(n, b, **kw)
        assert ex.chunks(10, 3) == ip.chunks(10, 3)
        assert list(ex.map(lambda x: x + 1, [1, 2])) == [2, 3]  # closures run here


@pytest.mark.slow
def test_killed_worker_loses_nothing(cluster, sweep_case, tmp_path, monkeypatch):
    """A worker dies on its first chunk: its chunks run on another worker, the result is the
    in-process one."""
    m, task, ref, _ = sweep_case
    flag = tmp_path / "crash-once"
    flag.touch()
    monkeypatch.setenv(D.CRASH_ENV, str(flag))
    with executor("ray", workers=2) as ex:
        got = _patch(m, task)
        assert not flag.exists()  # one worker took the flag and died
        assert ex.replaced >= 1
    _same(ref, got)


@pytest.mark.slow
def test_killed_run_resumes_on_the_workers(cluster, sweep_case, tmp_path, monkeypatch):
    """A run killed after 3 chunks in process resumes on Ray workers from its checkpoint
    folder: the remaining chunks run there, the result is the uninterrupted one."""
    m, task, ref, ref_ticks = sweep_case
    folder = tmp_path / "ckpt"
    real = exact._run_chunk
    calls: list[int] = []

    def killed_on_the_fourth(model, cp, *args):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(model, cp, *args)

    with monkeypatch.context() as mp:
        mp.setattr(exact, "_run_chunk", killed_on_the_fourth)
        with pytest.raises(KeyboardInterrupt):
            fl.patch(m, task, "head", n_boot=100, max_memory=1 << 20, checkpoint=folder)
    assert len(list(folder.glob("chunk_*.npz"))) == 3
    ticks: list[tuple[int, int]] = []
    with executor("ray", workers=2):
        got = fl.patch(
            m,
            task,
            "head",
            n_boot=100,
            max_memory=1 << 20,
            checkpoint=folder,
            progress=lambda d, t: ticks.append((d, t)),
        )
    _same(ref, got)
    assert ticks == ref_ticks
    assert len(list(folder.glob("chunk_*.npz"))) > 4


@pytest.mark.slow
def test_errors_and_refusals(cluster):
    m = fl.load("zoo:induction")
    task = induction_task(4, seed=0)
    with executor("ray", workers=1, max_retries=0) as ex:
        # an error in the method's own code comes back as itself
        with pytest.raises(AttributeError):
            list(ex.map_model(m, exact._run_chunk, [None], ["attn.0"], "denoising", 8))
        # weights changed after fl.load cannot be reproduced on a worker
        with torch.no_grad():
            next(m.module.parameters()).add_(1.0)
        with pytest.raises(InputError, match="other weights"):
            fl.patch(m, task, "head", n_boot=10)
        assert list(ex.map_model(m, exact._run_chunk, [])) == []
    with (
        executor("ray", workers=1, gpus_per_worker=1) as ex,
        pytest.raises(ArgumentError, match="gpus_per_worker=1: must be more than 0 exactly when"),
    ):
        ex.map_model(fl.load("zoo:induction"), exact._run_chunk, [None])
    with pytest.raises(ArgumentError, match="workers=0"):
        D.RayExecutor(workers=0)


def _same_edges(a, b):
    assert a.edge == b.edge
    for f in ("values", "clean", "corrupt", "score", "score_se", "score_ci_low", "score_ci_high"):
        assert np.array_equal(getattr(a, f), getattr(b, f), equal_nan=True), f


@pytest.mark.slow
def test_edge_scores_on_two_workers_equal_in_process(cluster):
    """The edge scorers' chunks of examples run on the workers (each builds its own edge graph
    once; EAP-IG's parameters are frozen there): every array and progress call is the
    in-process one."""
    m = fl.load("zoo:induction")
    task = induction_task(12, seed=0)
    scorers = [
        (fl.circuits.exact, {}),
        (fl.circuits.eap_ig, {"steps": 2}),
    ]
    for scorer, kw in scorers:
        calls: list[list[tuple[int, int]]] = [[], []]

        def run(ticks, scorer=scorer, kw=kw):
            return scorer(
                m,
                task,
                n_boot=50,
                max_memory=1 << 21,  # several chunks of examples, 3 rows a pass
                progress=lambda d, t: ticks.append((d, t)),
                **kw,
            )

        ref = run(calls[0])
        with executor("ray", workers=2) as ex:
            got = run(calls[1])
            assert ex.replaced == 0
        _same_edges(ref, got)
        assert calls[0] == calls[1] and len(calls[0]) > 2, scorer
        assert all(p.requires_grad for p in m.module.parameters())  # unfrozen here


@pytest.mark.slow
def test_attribution_patch_on_two_workers_equals_in_process(cluster, tmp_path, monkeypatch):
    """Attribution patching's chunks of examples run on the workers with the in-process result
    and progress calls; a run killed in process resumes there from its checkpoint folder."""
    from faithlens.patching import attribution

    m = fl.load("zoo:induction")
    task = induction_task(16, seed=0)
    kw = {"n_boot": 50, "max_memory": 1 << 20}  # several chunks of examples
    ticks: list[list[tuple[int, int]]] = [[], [], []]
    ref = fl.attribution_patch(m, task, "head", progress=lambda d, t: ticks[0].append((d, t)), **kw)
    folder = tmp_path / "ckpt"
    real = attribution._run_chunk
    calls: list[int] = []

    def killed_on_the_third(model, sub, *args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(model, sub, *args)

    with monkeypatch.context() as mp:
        mp.setattr(attribution, "_run_chunk", killed_on_the_third)
        with pytest.raises(KeyboardInterrupt):
            fl.attribution_patch(m, task, "head", checkpoint=folder, **kw)
    with executor("ray", workers=2) as ex:
        got = fl.attribution_patch(
            m, task, "head", progress=lambda d, t: ticks[1].append((d, t)), **kw
        )
        resumed = fl.attribution_patch(
            m, task, "head", checkpoint=folder, progress=lambda d, t: ticks[2].append((d, t)), **kw
        )
        assert ex.replaced == 0
    _same(ref, got)
    _same(ref, resumed)
    assert ticks[0] == ticks[1] == ticks[2] and len(ticks[0]) > 2


@pytest.mark.slow
def test_neuron_bootstrap_on_two_workers_equals_in_process(cluster, tmp_path):
    """The neuron bootstrap's unit blocks run on the workers (work with no model: the problem
    and the resamples travel once per run); frequencies and bands are the in-process ones, and
    a checkpoint folder written in process is resumed there."""
    from faithlens import neurons as N

    g = torch.Generator().manual_seed(0)
    n = 1500
    c = (torch.rand(n, 5, generator=g) < 0.2).float()
    x = torch.cat(
        [3 * c[:, :3] + torch.randn(n, 3, generator=g), torch.randn(n, 5, generator=g)], 1
    )
    kw = {"metric": ["iou", "auprc"], "n_boot": 100, "seed": 1, "max_memory": 60_000}
    ticks: list[list[tuple[int, int]]] = [[], [], []]
    ref = N.explain(x, c, progress=lambda d, t: ticks[0].append((d, t)), **kw)
    folder = tmp_path / "ck"
    N.explain(x, c, checkpoint=folder, **kw)
    blocks = sorted(folder.glob("block_*.npz"))
    assert len(blocks) >= 3
    for f in blocks[1:]:
        f.unlink()  # as if killed after its first block
    with executor("ray", workers=2) as ex:
        got = N.explain(x, c, progress=lambda d, t: ticks[1].append((d, t)), **kw)
        resumed = N.explain(
            x, c, checkpoint=folder, progress=lambda d, t: ticks[2].append((d, t)), **kw
        )
        assert ex.replaced == 0
    for r in (got, resumed):
        for f in ("freq", "lower", "upper", "scores"):
            assert np.array_equal(getattr(ref, f), getattr(r, f), equal_nan=True), f
    assert np.isfinite(ref.lower).sum() > 0  # bands were computed: the comparison can fail
    assert ticks[0] == ticks[1] == ticks[2]


#: How far a half-precision run of the zoo:induction head sweep may land from float32 (docs/
#: scale.md, "Half precision"): measured 0.0052 / 0.00070 on the effect and 0.057 / 0.0064 on
#: the per-example metric (values up to 4.4); the bounds leave a margin of about 2x.
HALF_TOLERANCE = {"bfloat16": (0.012, 0.12), "float16": (0.002, 0.015)}


@pytest.mark.parametrize("dtype", sorted(HALF_TOLERANCE))
def test_half_precision_stays_within_its_documented_tolerance(dtype):
    """A model loaded in bfloat16 / float16 (what a large model on one worker uses) gives the
    float32 sweep within the documented tolerance, and its spec carries the dtype."""
    task = induction_task(16, seed=0)
    ref = fl.patch(fl.load("zoo:induction"), task, "head", n_boot=50)
    m = fl.load("zoo:induction", dtype=getattr(torch, dtype))
    assert D.model_spec(m).dtype == dtype
    got = fl.patch(m, task, "head", n_boot=50)
    effect_tol, metric_tol = HALF_TOLERANCE[dtype]
    np.testing.assert_allclose(got.effect, ref.effect, atol=effect_tol, rtol=0)
    np.testing.assert_allclose(got.patched, ref.patched, atol=metric_tol, rtol=0)
    assert not np.array_equal(got.patched, ref.patched)  # it did run in half precision


@pytest.mark.slow
def test_bfloat16_model_on_workers_equals_in_process(cluster):
    """Workers load the model in the dtype of its spec: a bfloat16 sweep on two workers is the
    in-process bfloat16 sweep bit for bit."""
    m = fl.load("zoo:induction", dtype=torch.bfloat16)
    task = induction_task(16, seed=0)
    ref = _patch(m, task)
    with executor("ray", workers=2) as ex:
        got = _patch(m, task)
        assert ex.replaced == 0
    _same(ref, got)


@pytest.mark.slow
def test_executor_argument_runs_one_call_on_ray(cluster, sweep_case):
    """``executor="ray"`` builds a Ray executor for one call (the cluster's two CPUs: two
    workers) and stops its workers after it; the result is the in-process one."""
    m, task, ref, _ = sweep_case
    got = fl.patch(m, task, "head", n_boot=100, max_memory=1 << 20, executor="ray")
    _same(ref, got)
    assert isinstance(current_executor(), InProcess)


@pytest.mark.slow
def test_das_trainings_on_two_workers_equals_in_process(cluster, tmp_path):
    """A DAS sweep's trainings (one per site and seed) run on the workers: every result is the
    in-process one bit for bit; the trainings' checkpoints are written in the sweep's folder."""
    from faithlens.das.trainings import das_trainings
    from faithlens.tasks.interchange import InterchangeData
    from tests.helpers.das_compare import same_das

    m = fl.load("zoo:induction")
    data = InterchangeData.from_task(induction_task(8, seed=0))
    kw = {"seeds": [0, 1], "dims": 2, "epochs": 4, "eval_every": 2}
    ref = das_trainings(m, data, ["resid_pre.1"], **kw)
    with executor("ray", workers=2) as ex:
        got = das_trainings(m, data, ["resid_pre.1"], checkpoint=tmp_path / "ck", **kw)
        assert ex.replaced == 0
    assert len(got) == 2
    for a, b in zip(ref, got):
        same_das(a, b)
    assert (tmp_path / "ck" / "001" / "das_checkpoint.pt").exists()


@pytest.mark.slow
def test_faithfulness_curve_on_two_workers_equals_in_process(cluster):
    """Each circuit size of the curve is a work item: curve, areas, intervals and per-example
    metrics are the in-process ones bit for bit, under the counterfactual and a mean ablation,
    and the progress calls too."""
    m = fl.load("zoo:induction")
    task = induction_task(12, seed=0)
    scores = fl.circuits.eap(m, task, n_boot=20)
    fields = ("faithfulness", "faithfulness_ci_low", "faithfulness_ci_high", "patched", "clean")
    fields += ("corrupt", "cpr", "cmd", "cpr_ci_low", "cmd_ci_high")
    for ablation in ("counterfactual", "mean"):
        ticks: list[list[tuple[int, int]]] = [[], []]
        kw = {"sizes": (0.05, 0.2, 0.5, 1.0), "ablation": ablation, "n_boot": 50}
        ref = fl.circuits.faithfulness_curve(
            m, task, scores, progress=lambda d, t, c=ticks[0]: c.append((d, t)), **kw
        )
        with executor("ray", workers=2) as ex:
            got = fl.circuits.faithfulness_curve(
                m, task, scores, progress=lambda d, t, c=ticks[1]: c.append((d, t)), **kw
            )
            assert ex.replaced == 0
        for f in fields:
            assert np.array_equal(getattr(ref, f), getattr(got, f), equal_nan=True), (ablation, f)
        assert ticks[0] == ticks[1] == [(i, 4) for i in range(1, 5)]
    # one circuit: its chunks of examples are the work items
    kw = {"ablation": "mean", "n_boot": 50, "max_memory": 1 << 18}
    ref_one = fl.circuits.faithfulness(m, task, scores.top_k(6), **kw)
    got_one = fl.circuits.faithfulness(m, task, scores.top_k(6), executor="ray", **kw)
    for f in ("faithfulness", "faithfulness_ci_low", "patched", "clean", "corrupt"):
        assert np.array_equal(getattr(ref_one, f), getattr(got_one, f), equal_nan=True), f


@pytest.mark.slow
def test_das_sweep_on_two_workers_equals_in_process(cluster):
    """Each (layer, position) cell of the DAS sweep is a work item (its alignment and its
    controls; a worker rebuilds the random-init model from the seed): every interval is the
    in-process one bit for bit, and so are the progress calls."""
    from faithlens.das.sweep import das_sweep
    from faithlens.tasks.interchange import InterchangeData

    m = fl.load("zoo:induction")
    data = InterchangeData.from_task(induction_task(16, seed=0))
    ticks: list[list[tuple[int, int]]] = [[], []]
    kw = {"layers": [0, 1], "positions": [None, "last"], "site": "resid_pre", "dims": 2}
    kw |= {"train": {"epochs": 2, "eval_every": 1}, "n_boot": 50, "pairs": "all"}
    ref = das_sweep(m, data, progress=lambda d, t: ticks[0].append((d, t)), **kw)
    got = das_sweep(m, data, progress=lambda d, t: ticks[1].append((d, t)), executor="ray", **kw)
    for f in ("iia", "iia_low", "control_iia", "selectivity", "selectivity_high", "n_dims"):
        assert np.array_equal(getattr(ref, f), getattr(got, f), equal_nan=True), f
    assert ticks[0] == ticks[1] and len(ticks[0]) == 4 * 4
    assert isinstance(current_executor(), InProcess)


@pytest.mark.slow
def test_killed_command_resumes_on_ray_workers(cluster, tmp_path, monkeypatch):
    """``faithlens patch --out DIR`` killed in process resumes from ``.DIR.partial`` on two Ray
    workers (``--executor ray``) with the uninterrupted result; the partial folder is gone."""
    from typer.testing import CliRunner

    from faithlens.cli import app
    from faithlens.cli._resume import partial_folder

    runner = CliRunner()
    args = ["patch", "--model", "zoo:induction", "--task", "induction", "--n", "8"]
    args += ["--n-boot", "20", "--max-memory", "1M"]
    assert runner.invoke(app, [*args, "--out", str(tmp_path / "whole")]).exit_code == 0
    out = tmp_path / "killed"
    real, calls = exact._run_chunk, [0]

    def chunk(*a):
        calls[0] += 1
        if calls[0] > 2:
            raise RuntimeError("killed")
        return real(*a)

    with monkeypatch.context() as mp:
        mp.setattr(exact, "_run_chunk", chunk)
        assert runner.invoke(app, [*args, "--out", str(out)]).exit_code != 0
    assert len(list(partial_folder(out).rglob("chunk_*.npz"))) == 2
    res = runner.invoke(app, ["--executor", "ray", "--workers", "2", *args, "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "resuming" in res.output and not partial_folder(out).exists()
    _same(fl.PatchingResult.load(tmp_path / "whole"), fl.PatchingResult.load(out))


@pytest.mark.slow
def test_zoo_seeds_train_on_two_workers_with_the_in_process_weights(cluster, tmp_path):
    """Each seed of a zoo recipe is a work item with no model: the workers train them in
    parallel, each into its own folder, with the weights of the in-process trainings."""
    import dataclasses

    from faithlens import zoo
    from faithlens.zoo.seeds import train_seeds

    r = zoo.recipe("induction")
    r.schedule = dataclasses.replace(r.schedule, steps=3)
    ref = train_seeds(r, tmp_path / "here", [0, 1], evaluate=False)
    with executor("ray", workers=2) as ex:
        got = train_seeds(r, tmp_path / "ray", [0, 1], evaluate=False)
        assert ex.replaced == 0
    assert [g.seed for g in got] == [0, 1] and all(g.complete for g in got)
    for s, (a, b) in enumerate(zip(ref, got)):
        wa, wb = (
            zoo.read_weights(tmp_path / d / f"seed_{s}" / "induction.safetensors")[1]
            for d in ("here", "ray")
        )
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
        assert a.history["loss"].tolist() == b.history["loss"].tolist()


# ---- chunks sized by each worker's own memory (Executor.map_sized) ---------------------------


def _acts(n: int = 40, layers: int = 6, d: int = 16):
    from faithlens.representations.reading import ContrastActivations

    rng = np.random.default_rng(0)
    pos = rng.standard_normal((n, layers, d)).astype(np.float32)
    neg = pos - np.linspace(0.1, 2, layers, dtype=np.float32)[None, :, None] * np.eye(d)[0]
    neg = (neg + 0.5 * rng.standard_normal((n, layers, d))).astype(np.float32)
    return ContrastActivations(
        pos, neg, list(range(layers)), "resid_post", "last", tuple(f"g{i}" for i in range(n))
    )


READ_FIELDS = (
    "directions",
    "means",
    "separation",
    "spread",
    "accuracy",
    "accuracy_low",
    "accuracy_high",
    "auroc",
    "auroc_low",
    "auroc_high",
    "stability",
    "stability_low",
    "stability_high",
    "test_pos",
    "test_neg",
)


def test_a_worker_reports_its_own_memory(monkeypatch):
    """Without ``worker_memory`` a CPU worker plans with its node's budget (FAITHLENS_MEMORY or
    the default) capped by the memory available there; bad ``worker_memory`` is refused
    before a cluster starts."""
    from faithlens import _memory

    monkeypatch.setattr(_memory, "available_bytes", lambda d: 5 << 30)
    monkeypatch.setenv("FAITHLENS_MEMORY", "3G")
    assert D.Worker(1).memory(None) == 3 << 30
    monkeypatch.setenv("FAITHLENS_MEMORY", "8G")
    assert D.Worker(1).memory(None) == 5 << 30
    assert D.Worker(1, memory=7).memory(None) == 7
    for bad, workers in (([1], 2), ([1, 2], None), (0, 2), ("1G", 2), ([1, -1], 2)):
        with pytest.raises(ArgumentError, match="worker_memory"):
            D.RayExecutor(workers=workers, worker_memory=bad)


@pytest.mark.slow
def test_chunks_follow_each_workers_memory(cluster, tmp_path, monkeypatch):
    """fl.read's per-layer fits are items of ``map_sized``: a worker that reports 1 byte takes
    one layer per chunk, one that reports a terabyte the rest; a worker killed on its first
    chunk is replaced (and asked for its memory again) and its layers retried. Every array is
    the in-process one, bit for bit."""
    from faithlens.representations.reading import read

    acts = _acts()
    ref = read(None, acts, n_stability=5, n_boot=50, seed=3)
    flag = tmp_path / "crash-once"
    flag.touch()
    monkeypatch.setenv(D.CRASH_ENV, str(flag))
    with executor("ray", workers=2, worker_memory=[1, 1 << 40]) as ex:
        got = read(None, acts, n_stability=5, n_boot=50, seed=3)
        assert ex.replaced == 1 and not flag.exists()
        sizes = [{r.stop - r.start for s, r in ex.sent if s == slot} for slot in (0, 1)]
        assert sizes[0] == {1} and max(sizes[1]) > 1, ex.sent
        covered = sorted(i for _, r in ex.sent for i in range(r.start, r.stop))
        assert set(covered) == set(range(6))
    for f in READ_FIELDS:
        assert np.array_equal(getattr(ref, f), getattr(got, f), equal_nan=True), f


@pytest.mark.slow
def test_representation_activations_on_two_workers_equal_in_process(cluster, monkeypatch):
    """The forward passes that collect a reading's activations run on the workers, one chunk
    of prompts each (planned here, as in process): the arrays and progress calls are the
    in-process ones bit for bit, at the last token, an offset and the mean. A model built in
    this process (no spec: the planted model) still collects here, under the Ray executor."""
    from faithlens.representations import planted_model, read
    from faithlens.representations.pair_activations import activations

    m = fl.load("zoo:induction")
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(1, 20, (int(k),), generator=gen).tolist() for k in range(3, 24)]
    cases = [{"position": "last"}, {"position": -1, "layers": [0]}, {"position": "mean"}]
    calls: list[list[tuple[int, int]]] = [[], []]

    def run(i: int) -> list[np.ndarray]:
        prog = lambda d, t: calls[i].append((d, t))  # noqa: E731
        return [activations(m, prompts, batch_size=4, progress=prog, **kw) for kw in cases]

    pm = planted_model(0)
    plain = pm.pairs(16, 0)
    ref, ref_planted = run(0), read(pm.model, plain, n_boot=20)
    real, sent = D.RayExecutor.map_model, []

    def spy(self, model, fn, items, *args, **kw):
        sent.append((fn.__name__, model))
        return real(self, model, fn, items, *args, **kw)

    monkeypatch.setattr(D.RayExecutor, "map_model", spy)
    with executor("ray", workers=2) as ex:
        got, got_planted = run(1), read(pm.model, plain, n_boot=20)
        assert ex.replaced == 0
    assert calls[0] == calls[1] and len(calls[0]) == 3 * 6
    assert sent == [("activation_chunk", m)] * 3  # the zoo model's passes; the planted ones here
    for a, b in zip(ref, got):
        assert np.array_equal(a, b)
    assert np.array_equal(ref_planted.directions, got_planted.directions)
    assert np.array_equal(ref_planted.test_pos, got_planted.test_pos)


def test_lenses_on_two_workers_equal_in_process(cluster):
    """The logit lens's and DLA's chunks of examples run on the workers (the chunks planned
    here, as in process): every array and progress call is the in-process one."""
    m = fl.load("zoo:induction")
    task = induction_task(16, seed=0)
    calls: list[list[tuple[int, int]]] = [[], []]

    def run(i: int):
        prog = lambda d, t: calls[i].append((d, t))  # noqa: E731
        lens = fl.logit_lens(m, task, n_boot=50, max_memory=30_000, progress=prog)
        dla = fl.direct_logit_attribution(m, task, n_boot=50, max_memory=30_000, progress=prog)
        return lens, dla

    ref = run(0)
    with executor("ray", workers=2) as ex:
        got = run(1)
        assert ex.replaced == 0
    assert calls[0] == calls[1] and len(calls[0]) > 4
    for f in ("per_example", "logit_diff", "logit_diff_low", "prob", "rank_high"):
        assert np.array_equal(getattr(ref[0], f), getattr(got[0], f)), f
    assert ref[0].model_logit_diff == got[0].model_logit_diff
    for f in ("per_example", "contribution", "contribution_low", "contribution_high"):
        assert np.array_equal(getattr(ref[1], f), getattr(got[1], f)), f
    assert (ref[1].total, ref[1].residual) == (got[1].total, got[1].residual)


@pytest.mark.slow
def test_zoo_train_seeds_command_on_ray_workers(cluster, tmp_path):
    """``faithlens --executor ray --workers 2 zoo train induction --seeds 0,1`` trains each
    seed on a worker, with the weights of the in-process trainings."""
    import dataclasses

    from typer.testing import CliRunner

    from faithlens import zoo
    from faithlens.cli import app
    from faithlens.zoo.seeds import train_seeds

    r = zoo.recipe("induction")
    r.schedule = dataclasses.replace(r.schedule, steps=3)
    train_seeds(r, tmp_path / "here", [0, 1], evaluate=False)
    argv = ["--executor", "ray", "--workers", "2", "zoo", "train", "induction", "--steps", "3"]
    res = CliRunner().invoke(app, [*argv, "--seeds", "0,1", "--out", str(tmp_path / "ray")])
    assert res.exit_code == 0, res.output
    for s in (0, 1):
        wa, wb = (
            zoo.read_weights(tmp_path / d / f"seed_{s}" / "induction.safetensors")[1]
            for d in ("here", "ray")
        )
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
