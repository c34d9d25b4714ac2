"""What the commands share (``faithlens.cli._common``): the ``--max-memory`` size parser and the
deprecated memory knobs it replaces."""

from __future__ import annotations

import pytest

from faithlens.cli._common import max_memory_option, parse_size
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
