"""A small version of benchmarks/cl_synthetic.py: the paper's two synthetic findings.

The full replication (5 seeds x 2 directions, 601 epochs, 800-point tasks) is the benchmark; this
runs one seed of og_holdouts and two of inner_square on smaller tasks and fewer epochs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from faithlens import stats
from faithlens.das import synthetic as syn

#: 40 points per class (the paper: 100), 200 epochs (601), EMD every 25 epochs (10).
SMALL = dict(epochs=200, eval_every=25, n_per_class=40, extra_dims=16, classifier_epochs=300)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.slow
def test_og_holdouts_cl_reduces_ood_feature_emd_keeping_iia():
    df = syn.run_cl_synthetic(["og_holdouts"], [11111], ["DAS", "CL"], **SMALL)
    s = syn.summarize(df)
    assert len(df) == 4
    # The paper: OOD row EMD DAS 0.032 vs CL 0.007 (ratio 4.7), both OOD IIA >= 0.99 at full size.
    # This run (seed 11111, 40 points per class) gives a ratio of about 6.5 and OOD IIA about
    # 0.977 (DAS) and 0.983 (CL) over 640 cross-task pairs each; the exact figure moves by a few
    # pairs with torch's CPU instruction set (AVX512 / AVX2 / default), so every assertion keeps
    # a margin of several standard errors from what is observed.
    assert syn.og_ratio(s) >= 3
    by = s.set_index("loss")
    assert by.loc["CL", "cross_row_emd"] + 3 * by.loc["CL", "cross_row_emd_se"] < 0.02
    counts = df.groupby("loss")[["cross_correct", "cross_n"]].sum()
    for loss in ("DAS", "CL"):
        k, n = counts.loc[loss]
        ci = stats.proportion_interval(k, n, level=0.999)
        # high OOD IIA: the 99.9% Wilson lower bound (about 0.95 here) clears 0.9
        assert float(ci.low) > 0.9, (loss, k, n)
    # "keeping IIA": CL's OOD IIA is not significantly below DAS's (two-proportion z < 3)
    p = counts["cross_correct"] / counts["cross_n"]
    se = np.sqrt((p * (1 - p) / counts["cross_n"]).sum())
    assert (p["DAS"] - p["CL"]) < 3 * max(float(se), 1e-3)
    assert "OOD row EMD" in syn.table(s)


@pytest.mark.slow
def test_inner_square_ood_iia_falls_with_training_emd():
    df = syn.run_cl_synthetic(["inner_square"], [11111, 22222], ["DAS", "CL", "DAS+CL"], **SMALL)
    reg = syn.regression(df)
    assert reg.n == 12
    # the paper: slope -0.34, R^2 0.73 over 30 runs. Here: slope -0.163, R^2 0.59 over 12 runs
    # (t = -3.8, p = 0.0035). R^2 over 12 runs has a wide spread (Fisher z SE 0.33, so the old
    # R^2 > 0.4 sat 0.8 SE below the observed 0.59); the claim is a falling slope, asserted as
    # the slope's own test: negative and significant at 5% (t beyond -2.23, 1.6 SE of margin;
    # the figures move by far less than that across CPU instruction sets).
    assert reg.slope < 0 and reg.p < 0.05, reg
    by = syn.summarize(df).set_index("loss")
    assert by.loc["DAS", "row_emd"] > 5 * by.loc["CL", "row_emd"]
