"""What the commands share (``faithlens.cli._common``): the ``--max-memory`` size parser and the
deprecated memory knobs it replaces, and the ``--device-map`` parser."""

from __future__ import annotations

import io

import pytest

from faithlens.cli._common import (
    device_map_option,
    max_memory_option,
    parse_device_map,
    parse_size,
)
from faithlens.errors import ArgumentError

SIZES = [
    ("1", 1),
    ("1000000", 1_000_000),
    ("64K", 64 << 10),
    ("64kb", 64 << 10),
    ("64KiB", 64 << 10),
    ("512M", 512 << 20),
    ("2G", 2 << 30),
    ("1.5G", 3 << 29),
    (" 3 T ", 3 << 40),
    ("0.5K", 512),
]


@pytest.mark.parametrize(("text", "value"), SIZES, ids=[s[0] for s in SIZES])
def test_parse_size_reads_bytes_and_binary_suffixes(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "is not a size"),
        ("2X", "is not a size"),
        ("-1", "is not a size"),
        ("nan", "is not a size"),
        ("1e9", "is not a size"),
        ("1.5", "whole number of bytes"),
        ("0", "at least one byte"),
        ("0.0001K", "at least one byte"),
    ],
)
def test_parse_size_refuses_what_is_not_a_size(text, why):
    with pytest.raises(ArgumentError) as e:
        parse_size(text)
    assert str(e.value).startswith(f"--max-memory={text!r}: ") and why in str(e.value)
    assert "512M" in str(e.value)  # the fix shows a size that works


def test_max_memory_option_without_an_old_knob(capsys):
    assert max_memory_option(None) is None
    assert max_memory_option("1M") == 1 << 20
    assert capsys.readouterr().err == ""


def test_an_old_knob_alone_works_with_a_one_line_note(capsys):
    assert max_memory_option(None, old_option="--batch-size", old_value=8) is None
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "--batch-size is deprecated" in err and "--max-memory" in err


def test_an_old_knob_with_max_memory_is_refused(capsys):
    with pytest.raises(ArgumentError) as e:
        max_memory_option("2G", old_option="--batch-size", old_value=8)
    msg = str(e.value)
    assert msg.startswith("--batch-size=8: cannot be given together with --max-memory='2G'")
    assert "give only --max-memory" in msg
    assert capsys.readouterr().err == ""
    # not given: nothing to refuse or note
    assert max_memory_option("2G", old_option="--batch-size", old_value=None) == 2 << 30


# ------------------------------------------------------------------ output off a terminal


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_progress_writes_a_modest_number_of_lines():
    from faithlens.cli._common import PlainProgress

    clock, lines = FakeClock(), []
    p = PlainProgress("patching", lines.append, clock=clock)
    for done in range(1, 1001):  # 1000 quick steps, 0.1 s each: 100 s in all
        clock.now += 0.1
        p(done, 1000)
    assert lines[0] == "patching: 1/1000 (0%), 0s elapsed"
    assert lines[-1] == "patching: 1000/1000 (100%), 100s elapsed"
    assert 5 <= len(lines) <= 12  # about every 10 %, not one line per step
    # slow steps: a line at least every 30 s even when the 10 % mark is far away
    clock, lines = FakeClock(), []
    p = PlainProgress("training", lines.append, clock=clock)
    for done in range(1, 41):
        clock.now += 10.0
        p(done, 1000, info="loss 0.5")
    assert len(lines) >= 10 and lines[-1].endswith("  loss 0.5")


def test_a_long_run_prints_one_estimate_near_its_start():
    from faithlens.cli._common import PlainProgress

    clock, lines = FakeClock(), []
    p = PlainProgress("patching", lines.append, clock=clock)
    for done in range(1, 41):  # 40 steps of 6 s: 4 min
        clock.now += 6.0
        p(done, 40)
    said = [line for line in lines if "to go" in line]
    # one estimate, after the first step that gives 2 s of work to project from: 39 x 6 s left
    assert said == ["patching: about 4 min to go (estimated from 1/40 steps)"]
    assert lines[0] == said[0]
    # progress lines carry the time left until the end
    assert lines[2] == "patching: 5/40 (12%), 30s elapsed, about 4 min left"  # 35 x 6 s
    assert all("left" in line for line in lines[2:-1]) and "left" not in lines[-1]


def test_a_short_run_prints_no_estimate():
    from faithlens.cli._common import PlainProgress

    clock, lines = FakeClock(), []
    p = PlainProgress("x", lines.append, clock=clock)
    for done in range(1, 11):  # 10 steps of 1 s: under the 30 s that deserve an estimate
        clock.now += 1.0
        p(done, 10)
    assert not any("to go" in line for line in lines)


def test_durations_read_naturally():
    from faithlens.cli._common import duration

    assert [duration(s) for s in (40, 100, 3000, 7200)] == ["40 s", "2 min", "50 min", "2.0 h"]


def test_plain_progress_never_writes_twice_within_the_minimum_gap():
    from faithlens.cli._common import PlainProgress

    clock, lines = FakeClock(), []
    p = PlainProgress("x", lines.append, clock=clock)
    for done in range(1, 10):  # 9 of 10 done in no time: only the first line
        p(done, 10)
    assert len(lines) == 1
    p(10, 10)  # the last report is always written
    assert len(lines) == 2 and lines[-1].startswith("x: 10/10 (100%)")


def test_tables_in_a_log_are_full_width_and_index_columns_whole(monkeypatch):
    import pandas as pd

    from faithlens.cli import _common

    monkeypatch.delenv("COLUMNS", raising=False)
    wide = pd.DataFrame(
        {
            "a_rather_long_condition_name": ["patch head.23.3 + head.20.0 + head.24.4"] * 2,
            "metric_with_a_long_name": ["emd_norm", "match_corr"],
            "layer": [3.0, float("nan")],  # a gap makes pandas store layers as floats
            **{f"value_column_{i}": [0.123456, 1.5] for i in range(6)},
        }
    )
    log = io.StringIO()  # a file, as when the output goes to a log
    monkeypatch.setattr(_common, "console", _common.CliConsole(file=log))
    _common.print_frame(wide, title="wide")
    text = log.getvalue()
    assert max(len(line) for line in text.splitlines()) > 120  # not clamped to 80 columns
    assert "patch head.23.3 + head.20.0 + head.24.4" in text and "…" not in text
    assert "value_column_5" in text and "match_corr" in text
    assert "│     3 │" in text and "3.000" not in text


# ------------------------------------------------------------------ save_result: the report


def _patch_out(out, *extra):
    from typer.testing import CliRunner

    from faithlens.cli import app

    args = ["patch", "--model", "zoo:induction", "--task", "induction", "--n", "4"]
    return CliRunner().invoke(app, [*args, "--n-boot", "20", "--out", str(out), *extra])


def test_a_saved_result_gets_its_report_next_to_it(tmp_path):
    from faithlens.report.html import render_report
    from faithlens.results import Result

    out = tmp_path / "run"
    r = _patch_out(out)
    assert r.exit_code == 0, r.output
    page = out / "report.html"
    assert f"report: {page}" in " ".join(r.output.split())
    assert f"wrote {out}/result.json, table.parquet, arrays.npz, heatmap.png" in r.output
    html = page.read_text()
    assert "PatchingResult" in html and "<table" in html and "data:image/png;base64" in html
    # the page is a view, not part of the result: the folder still verifies and loads
    assert type(Result.load(out)).__name__ == "PatchingResult"
    # --overwrite replaces the folder and its page
    before = page.stat().st_mtime_ns
    assert _patch_out(out, "--overwrite").exit_code == 0
    assert page.stat().st_mtime_ns != before and render_report(out) == page


def test_a_report_that_cannot_be_drawn_does_not_lose_the_result(tmp_path, monkeypatch):
    import faithlens.report.html
    from faithlens.results import Result

    def broken(folder):
        raise RuntimeError("no page today")

    monkeypatch.setattr(faithlens.report.html, "render_report", broken)
    out = tmp_path / "run"
    r = _patch_out(out)
    text = " ".join(r.output.split())
    assert r.exit_code == 0, text
    assert "the result is saved but its report could not be written" in text
    assert "no page today" in text and f"faithlens report {out}" in text
    assert not (out / "report.html").exists()
    assert type(Result.load(out)).__name__ == "PatchingResult"


def test_cli_commands_save_results_only_through_save_result():
    """Every command that saves a result with --out goes through save_result (which writes the
    report); the demo writes several results into one folder, then their pages and an index
    (tests/cli/test_demo.py)."""
    import re
    from pathlib import Path

    import faithlens.cli

    root = Path(faithlens.cli.__file__).parent
    direct = []
    for f in sorted(root.glob("*.py")):
        if f.name in ("_common.py", "demo.py"):
            continue
        for line in f.read_text().splitlines():
            if re.search(r"\b(res|result|rep|eff|adv|logits|dis)\.save\(", line):
                direct.append(f"{f.name}: {line.strip()}")
    # the digits command saves two results into one atomic folder, then writes both reports
    assert direct == [
        'neurons.py: logits.save(tmp / "logits")',
        'neurons.py: dis.save(tmp / "dissection")',
    ], direct


def test_the_terminal_bar_prints_the_estimate_above_itself(monkeypatch):
    import io

    from rich.console import Console

    from faithlens.cli import _common

    clock = FakeClock()
    monkeypatch.setattr(_common.time, "monotonic", clock)
    buf = io.StringIO()
    out = Console(file=buf, force_terminal=True, width=120)
    with _common.progress_bar("scrubbing", stream=out) as advance:
        for done in range(1, 21):  # 20 steps of 10 s
            clock.now += 10.0
            advance(done, 20)
    text = buf.getvalue()
    assert text.count("to go") == 1
    assert "scrubbing: about 3 min to go (estimated from 1/20 steps)" in text


@pytest.mark.parametrize(
    "argv",
    [
        ["patch"],
        ["path-patch"],
        ["scrub"],
        ["das"],
        ["audit"],
        ["represent", "check"],
    ],
)
def test_commands_that_take_minutes_say_so_in_their_help(argv):
    from typer.testing import CliRunner

    from faithlens.cli import app

    r = CliRunner().invoke(app, [*argv, "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    assert "Time:" in r.output and ("minute" in r.output)


# -- --device-map ------------------------------------------------------------------------------

DEVICE_MAPS = [
    ("auto", "auto"),
    ("cpu", "cpu"),
    (" cuda:1 ", "cuda:1"),
    ("blocks.0=cpu", {"blocks.0": "cpu"}),
    (
        "embed=cpu, blocks.0 = cpu,unembed=cpu",
        {"embed": "cpu", "blocks.0": "cpu", "unembed": "cpu"},
    ),
    ("model.layers.0=0,lm_head=1", {"model.layers.0": "cuda:0", "lm_head": "cuda:1"}),
    ('{"blocks.0": "cpu", "unembed": "cpu"}', {"blocks.0": "cpu", "unembed": "cpu"}),
    ('{"model.layers.0": 0}', {"model.layers.0": "cuda:0"}),
]


@pytest.mark.parametrize(("text", "value"), DEVICE_MAPS, ids=[t for t, _ in DEVICE_MAPS])
def test_parse_device_map_reads_auto_a_device_pairs_and_json(text, value):
    assert parse_device_map(text) == value


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "is empty"),
        ("cpu,cuda:0", "without module names"),
        ("blocks.0=cpu,unembed", "not module=device"),
        ("blocks.0=", "not module=device"),
        ("blocks.0=cpu,blocks.0=cpu", "twice"),
        ('{"blocks.0": "cpu"', "not valid JSON"),
        ("{}", "non-empty JSON object"),
        ('{"blocks.0": ["cpu"]}', "not a device"),
        ('{"blocks.0": true}', "not a device"),
    ],
)
def test_parse_device_map_refuses_bad_syntax_naming_the_option(text, why):
    with pytest.raises(ArgumentError, match=why) as e:
        parse_device_map(text)
    assert str(e.value).startswith("--device-map=")


@pytest.mark.parametrize(
    ("text", "device", "why"),
    [
        ("auto", "cpu", "together with --device"),
        ("gpu7", None, "device"),
        ("blocks.0=disk", None, "disk"),
        ("blocks.0=cuda:0,unembed=cpu", None, "offloading|do not|not available|CUDA"),
        ("[1, 2]", None, "device"),
    ],
)
def test_device_map_option_refuses_bad_devices_before_loading(text, device, why):
    with pytest.raises(ArgumentError, match=why) as e:
        device_map_option(text, device)
    assert str(e.value).startswith("--device-map=")


def test_device_map_option_gives_the_checked_map():
    assert device_map_option(None) is None
    assert device_map_option("auto") == "auto"
    assert device_map_option("cpu") == {"": "cpu"}
    assert device_map_option("blocks.0=cpu,unembed=cpu") == {"blocks.0": "cpu", "unembed": "cpu"}
