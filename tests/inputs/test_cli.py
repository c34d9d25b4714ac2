"""Every bad option of `faithlens sites`, `patch`, `path-patch` and `audit`, and a bad
`--max-memory` on every command that takes it, refused up front: exit code 2, one line naming the
option and the value, no traceback, and nothing expensive run (option errors: no model loaded;
model-dependent errors: no forward pass)."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

import faithlens.loading
import faithlens.runs
from faithlens.cli import app

runner = CliRunner()


def text(r):
    """The output with rich's line wrapping undone."""
    return " ".join(r.output.split())


@pytest.fixture
def no_load(monkeypatch):
    """Loading a model is a test failure (the option must be refused before)."""

    def forbidden(*a, **k):
        raise AssertionError("a model was loaded before the error")

    monkeypatch.setattr(faithlens.loading, "load", forbidden)


@pytest.fixture
def no_run(monkeypatch):
    """A forward pass is a test failure (the model may load; zoo models load in milliseconds)."""

    def forbidden(*a, **k):
        raise AssertionError("a forward pass ran before the error")

    monkeypatch.setattr(faithlens.runs, "run", forbidden)


def _refused(args, *words):
    r = runner.invoke(app, args)
    out = text(r)
    assert r.exit_code == 2, out
    assert "Traceback" not in r.output, out
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "error:" in out, out
    for w in words:
        assert w in out, f"{w!r} not in {out!r}"


PATCH = ["patch", "--model", "zoo:induction", "--task", "induction", "--n", "4"]
PATH = ["path-patch", "--model", "zoo:induction", "--task", "induction", "--n", "4", "-r", "logits"]
AUDIT = ["audit", "--model", "zoo:induction", "--task", "induction", "--n", "4"]

OPTION_CASES = [
    # patch
    ([*PATCH, "--n", "0"], ["--n=0"]),
    ([*PATCH, "--n", "-1"], ["--n=-1"]),
    ([*PATCH, "--n-boot", "0"], ["--n-boot=0"]),
    ([*PATCH, "--n-boot", "1"], ["--n-boot=1"]),
    ([*PATCH, "--top", "-3"], ["--top=-3"]),
    ([*PATCH, "--top", "0"], ["--top=0"]),
    ([*PATCH, "--seed", "-1"], ["--seed=-1"]),
    ([*PATCH, "--positions", "middle"], ["--positions='middle'", "'all', 'last', 'each'"]),
    ([*PATCH, "--direction", "sideways"], ["--direction='sideways'", "'denoising'"]),
    ([*PATCH, "--task", "nope"], ["--task='nope'", "'induction'"]),
    ([*PATCH, "--sites", "logits"], ["--sites='logits'", "metric reads"]),
    ([*PATCH, "--sites", "head.0.0,logits"], ["--sites='head.0.0,logits'"]),
    ([*PATCH, "--sites", ","], ["--sites=','", "names no site"]),
    ([*PATCH, "--device", "nonsense"], ["--device='nonsense'", "not a torch device"]),
    ([*PATCH, "--attribution", "--n-boot", "0"], ["--n-boot=0"]),
    # path-patch
    ([*PATH, "--n", "0"], ["--n=0"]),
    ([*PATH, "--n-boot", "1"], ["--n-boot=1"]),
    ([*PATH, "--top", "-1"], ["--top=-1"]),
    ([*PATH, "--seed", "-2"], ["--seed=-2"]),
    ([*PATH, "--positions", "each"], ["--positions='each'", "'all', 'last'"]),
    ([*PATH, "--receiver-positions", "x"], ["--receiver-positions='x'"]),
    ([*PATH, "--ports", "xyz"], ["--ports='xyz'", "q, k, v"]),
    ([*PATH, "--ports", ""], ["--ports=''"]),
    ([*PATH, "--direction", "up"], ["--direction='up'"]),
    ([*PATH, "--device", "nonsense"], ["--device='nonsense'"]),
    (
        ["path-patch", "--model", "zoo:induction", "--task", "induction", "-r", ","],
        ["--receivers=','"],
    ),
    # audit
    ([*AUDIT, "--site", "resid_post.1", "--zero", "head.0.0", "--n", "0"], ["--n=0"]),
    ([*AUDIT, "--site", "resid_post.1", "--top-heads", "-1"], ["--top-heads=-1"]),
    (
        [*AUDIT, "--site", "resid_post.1", "--zero", "head.0.0", "--threshold", "nan"],
        ["--threshold=nan"],
    ),
    (
        [*AUDIT, "--site", "resid_post.1", "--zero", "head.0.0", "--threshold", "inf"],
        ["--threshold=inf"],
    ),
    ([*AUDIT, "--site", "resid_post.1", "--zero", "head.0.0", "--splits", "1"], ["--splits=1"]),
    ([*AUDIT, "--site", "resid_post.1", "--zero", "head.0.0", "--splits", "0"], ["--splits=0"]),
    ([*AUDIT, "--site", "resid_post.1", "--zero", "head.0.0", "--seed", "-1"], ["--seed=-1"]),
    (
        [*AUDIT, "--site", "resid_post.1", "--zero", "head.0.0", "--positions", "middle"],
        ["--positions='middle'", "'metric', 'last', 'all'"],
    ),
    ([*AUDIT, "--site", "resid_post.1", "--zero", "head.0.0", "--metrics", "bogus"], ["bogus"]),
    ([*AUDIT, "--site", "resid_post.1", "--zero", "head.0.0", "--task", "nope"], ["--task='nope'"]),
    ([*AUDIT, "--site", "resid_post.1"], ["nothing to audit"]),
    (
        [*AUDIT, "--site", "resid_post.1", "--zero", "head.0.0", "--device", "nonsense"],
        ["--device='nonsense'"],
    ),
    (
        [*AUDIT, "--site", "resid_post.1", "--top-heads", "2", "--sweep-layers", "a"],
        ["--sweep-layers", "'a'"],
    ),
    # sites
    (["sites", "--model", "zoo:induction", "--layer", "-1"], ["--layer=-1"]),
]


@pytest.mark.parametrize(
    "args, words", OPTION_CASES, ids=[" ".join(c[0][:1] + c[0][-2:]) for c in OPTION_CASES]
)
def test_bad_option_refused_before_loading(no_load, args, words):
    _refused(args, *words)


@pytest.mark.parametrize("value", ["cuda", "cuda:3"])
def test_cuda_without_cuda(no_load, monkeypatch, value):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _refused([*PATCH, "--device", value], f"--device='{value}'", "CUDA is not available")
    _refused(
        [*AUDIT, "--site", "resid_post.1", "--zero", "head.0.0", "--device", value],
        f"--device='{value}'",
    )


MODEL_CASES = [
    (["sites", "--model", "zoo:induction", "--layer", "99"], ["--layer=99", "0..1"]),
    (["sites", "--model", "zoo:induction", "--layer", "2"], ["--layer=2"]),
    (["sites", "--model", "zoo:induction", "--kind", "nope"], ["unknown site kind 'nope'"]),
    # a site the interventions cannot reach: upstream of every one of them
    (
        [*AUDIT, "--site", "resid_pre.0", "--zero", "head.1.0"],
        ["resid_pre.0", "upstream of every intervention", "head.1.0", "resid_post.1"],
    ),
    (
        [*AUDIT, "--site", "resid_pre.1", "--patch", "head.1.0,head.1.2"],
        ["resid_pre.1", "head.1.0, head.1.2", "resid_post.1"],
    ),
    (
        [*AUDIT, "--site", "resid_pre.1", "--steer", "resid_post.1"],
        ["resid_pre.1", "resid_post.1"],
    ),
    # --top-heads: every swept head is downstream of the site: refused before the sweep
    (
        [*AUDIT, "--site", "resid_pre.1", "--top-heads", "2", "--sweep-layers", "1"],
        ["resid_pre.1", "upstream of every intervention", "head.1.0"],
    ),
    (
        [*AUDIT, "--site", "resid_post.1", "--top-heads", "9", "--sweep-layers", "1"],
        ["--top-heads=9", "only 4 heads"],
    ),
    (
        [*AUDIT, "--site", "resid_post.1", "--top-heads", "2", "--sweep-layers", "5"],
        ["--sweep-layers=5", "0..1"],
    ),
    ([*AUDIT, "--site", "resid_post.9", "--zero", "head.0.0"], ["resid_post.9"]),
    # a task from another vocabulary
    (
        ["patch", "--model", "zoo:paren", "--task", "induction", "--n", "4"],
        ["induction", "vocabulary of 5"],
    ),
    ([*PATCH, "--sites", "head.7.0"], ["head.7.0"]),
    # the geomloss traceback: a site upstream of the zeroed head
    (
        [
            "audit",
            "--model",
            "zoo:paren",
            "--task",
            "paren",
            "--n",
            "16",
            "--site",
            "resid_pre.0",
            "--zero",
            "head.2.0",
        ],
        ["resid_pre.0", "upstream of every intervention", "head.2.0", "resid_post.2"],
    ),
    # the index error: MiniLM (a BERT encoder) has no language-model head
    (
        ["patch", "--model", "minilm", "--task", "ioi", "--n", "2"],
        ["minilm", "no language-model head"],
    ),
]


@pytest.mark.parametrize(
    "args, words", MODEL_CASES, ids=[" ".join(c[0][:1] + c[0][-2:]) for c in MODEL_CASES]
)
def test_bad_option_refused_before_any_forward_pass(no_run, args, words):
    _refused(args, *words)


def test_sites_layer_in_range_still_lists(monkeypatch):
    r = runner.invoke(app, ["sites", "--model", "zoo:induction", "--kind", "head", "--layer", "1"])
    assert r.exit_code == 0, r.output
    assert "4 sites" in r.output and "head.1.3" in r.output and "head.0.0" not in r.output


# Every command with a memory knob, and what each bad --max-memory says.
MEMORY_COMMANDS = {
    "patch": PATCH,
    "path-patch": PATH,
    "scrub": ["scrub", "hypothesis.py"],
    "represent read": ["represent", "read", "--model", "planted", "--concept", "planted"],
    "represent check": ["represent", "check", "--model", "planted", "--concept", "planted"],
    "neurons explain": ["neurons", "explain", "-a", "acts.npy", "-c", "concepts.csv"],
    "neurons dissect": ["neurons", "dissect", "--maps", "maps.npy"],
    "neurons digits": ["neurons", "digits"],
    "neurons validate": ["neurons", "validate"],
    "neurons sanity": ["neurons", "sanity"],
    "logit-lens": ["logit-lens"],
    "dla": ["dla"],
}
BAD_SIZES = [
    ("0", "at least one byte"),
    ("-1G", "is not a size"),
    ("2X", "is not a size"),
    ("many", "is not a size"),
    ("1.5", "whole number of bytes"),
]
MEMORY_CASES = [
    ([*args, "--max-memory", value], [f"--max-memory={value!r}", why, "512M"])
    for args in MEMORY_COMMANDS.values()
    for value, why in BAD_SIZES
] + [
    (
        ["scrub", "hypothesis.py", "--batch-size", "8", "--max-memory", "1G"],
        ["--batch-size=8: cannot be given together with --max-memory='1G'", "give only"],
    ),
]


@pytest.mark.parametrize(
    "args, words", MEMORY_CASES, ids=[" ".join(c[0][:2] + c[0][-2:]) for c in MEMORY_CASES]
)
def test_bad_max_memory_refused_before_anything_runs(no_load, no_run, args, words):
    _refused(args, *words)


# ------------------------------------------------------------------ --task FILE.jsonl

IDS_LINE = '{"clean_ids": [1, 2, 3, 1], "corrupt_ids": [1, 5, 3, 1], "answer_id": 2, "wrong_id": 5}'


def _task_file(tmp_path, *lines):
    p = tmp_path / "mine.jsonl"
    p.write_text("".join(x + "\n" for x in lines))
    return str(p)


TASK_COMMANDS = [
    ["patch", "--model", "zoo:induction"],
    ["path-patch", "--model", "zoo:induction", "-r", "logits"],
    ["audit", "--model", "zoo:induction", "--site", "resid_post.1", "--top-heads", "1"],
    ["circuit", "--model", "zoo:induction"],
    ["das", "--model", "zoo:induction", "--site", "resid_post.0"],
    ["logit-lens", "--model", "zoo:induction"],
    ["dla", "--model", "zoo:induction"],
]
BAD_TASK_FILES = [
    ((), ["mine.jsonl", "has no examples"]),
    ((IDS_LINE, '{"clean_ids": [1, 2'), ["mine.jsonl:2", "not valid JSON"]),
    ((IDS_LINE, '{"clean_ids": [1], "corrupt_ids": [2], "answer_id": 3}'), ["mine.jsonl:2", "'wrong_id'", "missing"]),
    (('{"clean_ids": [1, 2], "corrupt_ids": [1], "answer_id": 3, "wrong_id": 4}',), ["mine.jsonl:1", "'corrupt_ids'", "same length"]),
    (('{"clean": "t1 t2", "corrupt": "t1 t3", "answer": ["t2", "t2"], "wrong": "t3"}',), ["mine.jsonl:1", "'answer'", "twice"]),
    (('{"clean": "t1 t2", "corrupt": "t1 t3", "answer": ["t2", 4], "wrong": "t3"}',), ["mine.jsonl:1", "'answer'", "answer set"]),
]  # fmt: skip


@pytest.mark.parametrize("cmd", TASK_COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize("lines, words", BAD_TASK_FILES)
def test_bad_task_file_refused_before_loading(no_load, tmp_path, cmd, lines, words):
    _refused([*cmd, "--task", _task_file(tmp_path, *lines)], "error:", *words)


def test_missing_task_file_refused(no_load, tmp_path):
    _refused([*PATCH[:3], "--task", str(tmp_path / "nope.jsonl")], "nope.jsonl", "does not exist")


def test_multi_token_answer_refused_before_any_forward_pass(no_run, tmp_path):
    # patch, path-patch and logit-lens score multi-token answers (teacher forcing); direct
    # logit attribution does not, and says so
    multi = '{"clean": "t1 t2", "corrupt": "t1 t3", "answer": "t2 t4", "wrong": "t3"}'
    path = _task_file(tmp_path, multi, multi)
    _refused(["dla", "--model", "zoo:induction", "--task", path], "multi-token answers", "fl.patch")


def test_patch_runs_on_a_task_file_end_to_end(tmp_path):
    text_line = '{"clean": "t4 t6 t8 t4", "corrupt": "t4 t7 t8 t4", "answer": "t6", "wrong": "t7"}'
    for lines in ((IDS_LINE, IDS_LINE.replace("5", "9")), (text_line, text_line)):
        path = _task_file(tmp_path, *lines)
        r = runner.invoke(app, [*PATCH[:3], "--task", path, "--n-boot", "20", "--top", "3"])
        out = text(r)
        assert r.exit_code == 0, out
        assert "2 examples from the file" in out and "on mine: 8 conditions, n=2 examples" in out


def test_patch_runs_on_a_task_file_with_answer_sets(tmp_path):
    # the CLI's result is fl.patch on the same file's task (an AnswerSet metric)
    import faithlens as fl

    rows = (
        '{"clean": "t4 t6 t8 t4", "corrupt": "t4 t7 t8 t4", "answer": ["t6", "t9"], "wrong": "t7"}',
        '{"clean": "t1 t2 t3 t1", "corrupt": "t1 t5 t3 t1", "answer": "t2", "wrong": ["t5", "t8"]}',
    )
    path = _task_file(tmp_path, *rows)
    out_dir = tmp_path / "run"
    args = [*PATCH[:3], "--task", path, "--n-boot", "20", "--top", "3", "--out", str(out_dir)]
    r = runner.invoke(app, args)
    out = text(r)
    assert r.exit_code == 0, out
    assert "2 examples from the file" in out
    saved = fl.patching.PatchingResult.load(out_dir)
    model = fl.load("zoo:induction")
    task = fl.tasks.read_task_file(path).build(model)
    assert task.metric == fl.tasks.AnswerSet(n_correct=2)
    ref = fl.patch(model, task, "head", n_boot=20, seed=0)
    assert saved.site == ref.site and saved.metric == "answer_set"
    assert torch.allclose(torch.as_tensor(saved.patched), torch.as_tensor(ref.patched), atol=1e-6)
