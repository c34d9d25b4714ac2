"""Contrast pairs, the shipped facts, splits and prompt builders."""

from __future__ import annotations

import json

import pytest

import faithlens as fl
from faithlens.representations import ContrastPairs, facts, truth_pairs
from faithlens.representations.data import honesty_pairs, split_groups


def test_shipped_facts_are_a_real_dataset():
    fs = facts()
    assert len(fs) >= 200
    assert len({f.id for f in fs}) == len(fs)
    assert len({f.stem for f in fs}) >= 200
    for f in fs:
        assert f.true != f.false
        assert f.true.startswith(" ") and f.false.startswith(" ")
        assert not f.stem.endswith(" ")
    topics = {f.topic for f in fs}
    assert {"capitals", "arithmetic", "science"} <= topics
    assert facts(["capitals"]) and all(f.topic == "capitals" for f in facts(["capitals"]))
    with pytest.raises(fl.InputError, match="unknown fact topics"):
        facts(["astrology"])


def test_truth_pairs_one_per_fact_grouped_by_id():
    p = truth_pairs()
    assert len(p) == len(facts()) and p.concept == "true"
    assert p.positive[0].endswith(".") and p.positive[0] != p.negative[0]
    sub = truth_pairs(n=10, seed=3)
    assert len(sub) == 10 and sub.positive == truth_pairs(n=10, seed=3).positive


def test_honesty_pairs_without_chat_and_word_prefixes():
    items = facts()[:3]
    p = honesty_pairs(items=items, chat=False, prefixes="words")
    assert len(p) > 3 and set(p.group_ids) == {f.id for f in items}
    assert all("honest person" in x for x in p.positive)
    assert all("untruthful person" in x for x in p.negative)
    with pytest.raises(fl.InputError, match="needs the model"):
        honesty_pairs(items=items)
    with pytest.raises(fl.InputError, match="prefixes"):
        honesty_pairs(items=items, chat=False, prefixes="tokens")


def test_split_is_by_group_and_seeded():
    groups = [f"g{i // 3}" for i in range(30)]  # 10 groups of 3 pairs
    tr, te = split_groups(groups, 0.3, seed=1)
    assert sorted(tr + te) == list(range(30))
    assert not {groups[i] for i in tr} & {groups[i] for i in te}
    assert len({groups[i] for i in te}) == 3
    assert (tr, te) == split_groups(groups, 0.3, seed=1)
    assert (tr, te) != split_groups(groups, 0.3, seed=2)
    with pytest.raises(fl.InputError, match="too few"):
        split_groups(["a", "a", "b"], 0.5)
    with pytest.raises(fl.InputError, match="fraction"):
        split_groups(groups, 1.5)


def test_contrast_pairs_validation():
    with pytest.raises(fl.InputError, match="one negative per positive"):
        ContrastPairs(("a", "b"), ("c",))
    with pytest.raises(fl.InputError, match="at least 2"):
        ContrastPairs(("a",), ("b",))
    with pytest.raises(fl.InputError, match="empty prompt"):
        ContrastPairs(("a", ""), ("b", "c"))
    with pytest.raises(fl.InputError, match="group ids"):
        ContrastPairs(("a", "b"), ("c", "d"), groups=("x",))
    p = ContrastPairs(([1, 2], [3]), ([4], [5, 6]))
    assert p.positive == ((1, 2), (3,))
    with pytest.raises(fl.InputError, match="out of range"):
        p.subset([5])


def test_pairs_from_jsonl(tmp_path):
    f = tmp_path / "pairs.jsonl"
    rows = [{"pos": f"yes {i}", "neg": f"no {i}", "topic": str(i % 2)} for i in range(6)]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    p = ContrastPairs.from_jsonl(f, positive="pos", negative="neg", group="topic")
    assert len(p) == 6 and p.name == "pairs" and set(p.group_ids) == {"0", "1"}
    with pytest.raises(fl.InputError, match="has no"):
        ContrastPairs.from_jsonl(f, positive="good", negative="neg")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"pos": 1}\nnot json\n')
    with pytest.raises(fl.InputError, match="line 2"):
        ContrastPairs.from_jsonl(bad, positive="pos", negative="neg")
    with pytest.raises(fl.InputError, match="no contrast-pair file"):
        ContrastPairs.from_jsonl(tmp_path / "missing.jsonl")
