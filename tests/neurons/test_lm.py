"""Language-model neurons against token-level concepts from the shipped word list."""

from __future__ import annotations

import numpy as np
import pytest

import faithlens.neurons as N
from faithlens.neurons.probing import word_lists


def test_shipped_word_list_and_corpus():
    lists = word_lists()
    assert len(lists) >= 20 and "animal" in lists and "cat" in lists["animal"]
    words = [w for ws in lists.values() for w in ws]
    assert len(words) == len(set(words))  # no word in two concepts
    a = N.word_corpus(50, seed=0)
    assert a == N.word_corpus(50, seed=0) and a != N.word_corpus(50, seed=1)
    assert all(s[0].isupper() and "{" not in s for s in a)


@pytest.mark.smollm2
def test_token_concepts_label_the_right_tokens(smollm2):
    text = "The red cat sat on my mother's hat, 3 times."
    con = N.token_concepts(smollm2, [text], drop_empty=False)
    pieces = smollm2.to_str_tokens(smollm2.to_tokens(text)[0])
    assert con.n_samples == len(pieces)
    on = {
        name: [p.strip() for p, v in zip(pieces, con.values[:, i]) if v > 0]
        for i, name in enumerate(con.names)
    }
    assert on["colour"] == ["red"] and on["animal"] == ["cat"] and on["clothing"] == ["hat"]
    assert on["family"] and "".join(on["family"]).startswith("mother")
    assert "my" in on["pronoun"] and "The" in on["determiner"] and "on" in on["preposition"]
    assert "," in on["punctuation"] and "." in on["punctuation"] and on["digits"] == ["3"]
    assert on["capitalised"] == ["The"]


@pytest.mark.smollm2
def test_smollm2_mlp_neurons_with_bounds_and_prediction_sets(smollm2):
    texts = N.word_corpus(80, seed=0)
    acts, con = N.probe_tokens(smollm2, texts, "mlp_post.3")
    assert acts.values.shape[1] == smollm2.d_mlp and acts.n_samples == con.n_samples
    assert int(acts.groups.max()) == 79 and acts.site == "mlp_post.3"
    sub = acts.units(range(96))
    res = N.explain(sub, con, ["iou", "f1"], alpha=0.02, n_boot=60, seed=0, skip_constant=True)
    assert res.n_groups == 80 and "grouped" in res.bounds[0]
    df = res.to_frame()
    assert len(df) == 2 * 96
    lo, hi, s = res.lower[0], res.upper[0], res.scores[0]
    ok = np.isfinite(s)
    assert (lo[ok] <= s[ok] + 1e-6).all() and (s[ok] <= hi[ok] + 1e-6).all()
    # with 80 sentences no neuron can be certified: the table says so instead of naming one
    assert not res.certified("iou").any()
    assert df["concept"].isna().all() and df["status"].str.startswith("not certified").any()
    # but the bootstrap finds stable selective neurons: the most selective neuron's BE set is
    # small and led by its top-scoring concept, and noise-like neurons have large sets
    be_size = res.be_set("iou").sum(1)
    best = int(np.nanargmax(np.nanmax(s, axis=1)))
    stab = res.stability("iou")
    assert be_size[best] <= 2 and stab["mode"].iloc[best] == df["top_scoring"].iloc[best]
    assert (be_size == 1).sum() >= 2 and be_size.max() >= 4


@pytest.mark.minilm
def test_minilm_tokens_drop_special_tokens(minilm):
    texts = N.word_corpus(30, seed=2)
    acts, con = N.probe_tokens(minilm, texts, "mlp_post.2")
    n_real = int(minilm.tokenize(texts).mask.sum())
    assert acts.n_samples == n_real - 2 * len(texts)  # [CLS] and [SEP] dropped
    res = N.explain(acts.units(range(32)), con, "iou", alpha=0.05, n_boot=50, skip_constant=True)
    assert res.scores.shape == (1, 32, con.n_concepts)
