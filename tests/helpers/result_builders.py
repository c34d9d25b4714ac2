"""Small hand-built instances of every faithlens result class (no model runs), for the checks
that hold for every result (``tests/test_results.py``: uniform intervals and frame columns).

Each builder uses only the dataclass fields, so it also runs on older faithlens code (the
folders under ``tests/helpers/old_results/`` were saved with it from the code before the
uniform interval columns).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

import faithlens as fl


def patching() -> Any:
    from faithlens.patching.result import PatchingResult

    rng = np.random.default_rng(0)
    return PatchingResult(
        site=["head.0.0", "head.0.1", "mlp_out.0"],
        kind=["head", "head", "mlp_out"],
        layer=[0, 0, 0],
        head=[0, 1, None],
        position=[None, None, None],
        effect=np.array([0.5, -0.1, 0.02]),
        se=np.array([0.05, 0.04, 0.01]),
        ci_low=np.array([0.41, -0.18, 0.0]),
        ci_high=np.array([0.6, -0.03, 0.04]),
        patched=rng.normal(size=(3, 8)),
        base=rng.normal(size=8),
        source=rng.normal(size=8) + 2,
        model="toy",
        task="toy",
        level=0.9,
        n_boot=100,
    )


def scrub() -> Any:
    from faithlens.scrubbing.results import ScrubResult

    rng = np.random.default_rng(1)
    table = pd.DataFrame(
        {
            "quantity": ["scrubbed", "original", "scrubbed - original", "% recovered vs random"],
            "estimate": [0.4, 0.3, 0.1, 80.0],
            "se": [0.02, 0.01, 0.015, 4.0],
            "low": [0.36, 0.28, 0.07, 71.0],
            "high": [0.44, 0.32, 0.13, 88.0],
        }
    )
    return ScrubResult(
        hypothesis="toy",
        description="a toy hypothesis",
        behaviour="loss",
        higher_is_better=False,
        n=6,
        seed=0,
        level=0.95,
        scrubbed=rng.normal(size=6),
        original=rng.normal(size=6),
        baseline_names=["random"],
        baseline_values=rng.normal(size=(1, 6)),
        kl=np.zeros(0),
        references=np.arange(6),
        table=table,
        nodes=pd.DataFrame({"node": ["out"], "distinct": [3]}),
    )


def adversary() -> Any:
    from faithlens.scrubbing.results import AdversaryResult

    cands = pd.DataFrame(
        {
            "step": [0, 0],
            "refinement": ["split a", "split b"],
            "kind": ["split", "split"],
            "expectation": [0.5, 0.45],
            "delta": [0.1, 0.05],
            "se_delta": [0.02, 0.03],
            "z": [5.0, 1.7],
            "valid": [True, True],
            "why": ["", ""],
        }
    )
    return AdversaryResult(
        hypothesis="toy",
        behaviour="loss",
        higher_is_better=False,
        original=0.3,
        base_expectation=0.4,
        base_se=0.02,
        final_expectation=0.5,
        candidates=cands,
        chosen=["split a"],
        evaluations=2,
        budget=4,
    )


def paren() -> Any:
    from faithlens.scrubbing.paren import ParenReplication

    table = pd.DataFrame(
        {
            "hypothesis": ["1a", "1b"],
            "loss": [0.2, 0.3],
            "loss_se": [0.01, 0.02],
            "recovered": [90.0, 70.0],
            "recovered_se": [2.0, 3.0],
            "recovered_low": [86.0, 64.0],
            "recovered_high": [94.0, 76.0],
            "published": [93.0, np.nan],
            "distinct_data": [10, 12],
        }
    )
    comps = pd.DataFrame(
        {
            "better": ["1a"],
            "worse": ["1b"],
            "difference": [0.1],
            "se": [0.02],
            "low": [0.06],
            "high": [0.14],
        }
    )
    return ParenReplication(
        model="zoo:paren",
        n=10,
        seed=0,
        level=0.95,
        same_length=True,
        original_loss=0.1,
        baseline_loss=0.9,
        table=table,
        comparisons=comps,
    )


def das() -> Any:
    from faithlens.das.result import DASResult

    history = pd.DataFrame({"epoch": [0.0, 1.0], "loss": [0.7, 0.5], "iia": [0.6, 0.8]})
    return DASResult(
        method="rotation",
        site="resid_post.0",
        dims=(0,),
        loss="iia",
        cl_form="",
        cl_weight=0.0,
        epochs=2,
        select="iia",
        selected_epoch=1,
        seed=0,
        n=20,
        iia=0.8,
        iia_se=0.09,
        iia_low=0.6,
        iia_high=0.95,
        emd=0.3,
        emd_features=float("nan"),
        emd_dims=(),
        boundary=float("nan"),
        history=history,
        alignment_spec={"kind": "rotation", "n": 2},
        alignment_params=np.eye(2).reshape(-1),
        controls=("random_subspace",),
        draws=5,
        control_iia=np.array([0.3]),
        control_iia_se=np.array([0.05]),
        control_iia_low=np.array([0.2]),
        control_iia_high=np.array([0.4]),
        selectivity=np.array([0.5]),
        selectivity_se=np.array([0.08]),
        selectivity_low=np.array([0.35]),
        selectivity_high=np.array([0.65]),
    )


def das_controls() -> Any:
    from faithlens.das.selectivity import ControlledDAS

    rng = np.random.default_rng(3)
    own = (rng.random(20) < 0.9).astype(float)
    ctl = (rng.random((3, 20)) < 0.2).astype(float)
    return ControlledDAS(
        method="rotation",
        site="h",
        dims=(0, 1),
        controls=["task", "random_init", "random_subspace"],
        n=20,
        n_train=20,
        eval_fraction=0.5,
        pairs="changed",
        draws=5,
        level=0.95,
        n_boot=100,
        seed=0,
        iia=0.9,
        iia_se=0.07,
        iia_low=0.75,
        iia_high=1.0,
        control_iia=np.array([0.2, 0.15, 0.3]),
        control_iia_se=np.array([0.09, 0.08, 0.05]),
        control_iia_low=np.array([0.05, 0.0, 0.2]),
        control_iia_high=np.array([0.4, 0.3, 0.4]),
        selectivity=np.array([0.7, 0.75, 0.6]),
        selectivity_se=np.array([0.1, 0.1, 0.06]),
        selectivity_low=np.array([0.5, 0.55, 0.45]),
        selectivity_high=np.array([0.9, 0.9, 0.7]),
        chance=np.array([0.3, 0.3, 0.3]),
        correct=own,
        control_correct=ctl,
        alignment_spec={"kind": "rotation", "config": {"width": 2}, "params": []},
        alignment_params=np.zeros(0),
    )


def das_sweep() -> Any:
    from faithlens.das.sweep import DASSweep

    iia = np.array([[0.1, 0.9], [0.05, 0.2]])
    sel = np.stack([iia - 0.1, iia - 0.05])
    return DASSweep(
        method="rotation",
        sites=["l0", "l1"],
        positions=[0, "last"],
        controls=["task", "random_subspace"],
        n=30,
        n_train=30,
        pairs="changed",
        n_dims=np.ones((2, 2), dtype=np.int64),
        chance=np.array([0.3, 0.3]),
        level=0.95,
        n_boot=100,
        seed=0,
        iia=iia,
        iia_se=np.full((2, 2), 0.05),
        iia_low=iia - 0.08,
        iia_high=iia + 0.08,
        control_iia=np.stack([iia - sel[0], iia - sel[1]]),
        control_iia_se=np.full((2, 2, 2), 0.04),
        control_iia_low=np.stack([iia - sel[0], iia - sel[1]]) - 0.07,
        control_iia_high=np.stack([iia - sel[0], iia - sel[1]]) + 0.07,
        selectivity=sel,
        selectivity_se=np.full((2, 2, 2), 0.06),
        selectivity_low=sel - 0.1,
        selectivity_high=sel + 0.1,
    )


def reading() -> Any:
    from faithlens.representations.reading import ReadingResult

    rng = np.random.default_rng(2)
    return ReadingResult(
        method="pca",
        site="resid_post",
        position="last",
        layers=[0, 1],
        directions=np.eye(2, 3, dtype=np.float32),
        means=np.zeros((2, 3), dtype=np.float32),
        separation=np.array([1.0, 2.0]),
        spread=np.array([0.5, 0.6]),
        accuracy=np.array([0.75, 1.0]),
        accuracy_low=np.array([0.45, 0.7]),
        accuracy_high=np.array([0.9, 1.0]),
        auroc=np.array([0.8, 0.99]),
        auroc_low=np.array([0.6, 0.95]),
        auroc_high=np.array([0.95, 1.0]),
        stability=np.array([0.9, 0.95]),
        stability_low=np.array([0.8, 0.9]),
        stability_high=np.array([0.97, 0.99]),
        test_pos=rng.normal(size=(2, 8)) + 1,
        test_neg=rng.normal(size=(2, 8)),
        n_train=24,
        n_test=8,
        n_stability=10,
    )


def steering() -> Any:
    from faithlens.representations.results import SteeringResult

    rng = np.random.default_rng(3)
    return SteeringResult(
        conditions=["steer +1", "ablate"],
        kind=["steer", "ablate"],
        coef=[1.0, float("nan")],
        values=rng.normal(size=(2, 6)),
        baseline=rng.normal(size=6),
        effect=np.array([0.4, -0.2]),
        effect_se=np.array([0.1, 0.05]),
        effect_low=np.array([0.2, -0.3]),
        effect_high=np.array([0.6, -0.1]),
        behaviour="toy",
    )


def persistence() -> Any:
    from faithlens.representations.results import PersistenceResult

    rng = np.random.default_rng(4)
    mean = np.array([[0.0, 0.0, 0.0], [0.3, 0.2, 0.1]])
    return PersistenceResult(
        schedules=["none", "one-shot"],
        values=rng.normal(size=(2, 4, 3)),
        mean=mean,
        low=mean - 0.1,
        high=mean + 0.1,
    )


def logit_lens() -> Any:
    from faithlens.representations.results import LogitLensResult

    return LogitLensResult(
        entropy=2.0,
        max_entropy=4.0,
        null=np.array([3.5, 3.8, 3.9]),
        p_value=0.25,
        readable=False,
        top_tokens=["a", "b"],
        top_probs=[0.3, 0.2],
        bottom_tokens=["c"],
        bottom_probs=[0.4],
    )


def writers() -> Any:
    from faithlens.representations.results import WritersResult

    return WritersResult(
        components=["embed", "head.0.0", "mlp_out.0"],
        layer=[None, 0, 0],
        head=[None, 0, None],
        contribution=np.array([0.1, 0.2, 0.7]),
        low=np.array([0.0, 0.1, 0.5]),
        high=np.array([0.2, 0.3, 0.9]),
        per_pair=np.ones((3, 4)),
        total=1.0,
        total_low=0.8,
        total_high=1.2,
        k80=2,
        gini=0.4,
        residual=1e-7,
        site="resid_post.0",
    )


def layer_lens() -> Any:
    from faithlens.representations.lens_results import LayerLensResult

    est = {
        "logit_diff": np.array([0.1, 1.5]),
        "prob": np.array([0.02, 0.4]),
        "rank": np.array([9.0, 0.5]),
    }
    fields: dict[str, Any] = {}
    for q, e in est.items():
        fields.update({q: e, f"{q}_se": e * 0 + 0.05, f"{q}_low": e - 0.1, f"{q}_high": e + 0.1})
    return LayerLensResult(
        layers=[0, 1],
        site="resid_post",
        per_example=np.zeros((3, 2, 4)),
        model_logit_diff=1.6,
        model_logit_diff_se=0.1,
        model_logit_diff_low=1.4,
        model_logit_diff_high=1.8,
        **fields,
    )


def dla() -> Any:
    from faithlens.representations.lens_results import DirectLogitAttribution

    c = np.array([0.1, 0.9, -0.2, 0.0])
    return DirectLogitAttribution(
        components=["embed", "head.0.0", "mlp_out.0", "bias"],
        layer=[None, 0, 0, None],
        head=[None, 0, None, None],
        contribution=c,
        contribution_se=np.full(4, 0.05),
        contribution_low=c - 0.1,
        contribution_high=c + 0.1,
        per_example=np.zeros((4, 3)),
        total=0.8,
        total_se=0.1,
        total_low=0.6,
        total_high=1.0,
    )


def faithfulness() -> Any:
    from faithlens.representations.results import FaithfulnessReport

    checks = pd.DataFrame(
        {
            "check": ["causal", "readable"],
            "criterion": ["effect > 0", "p <= 0.05"],
            "estimate": [0.4, 0.25],
            "ci_low": [0.2, float("nan")],
            "ci_high": [0.6, float("nan")],
            "reference": [0.0, 0.05],
            "passed": [True, False],
            "note": ["", ""],
        }
    )
    return FaithfulnessReport(
        checks=checks,
        reading=reading().to_frame(),
        steering=steering().to_frame(),
        persistence=persistence().to_frame(),
        logit_lens=logit_lens().to_frame(),
        writers=writers().to_frame(),
        divergence=pd.DataFrame(),
        meta={"level": 0.95},
    )


def _split_table(**lead: list[Any]) -> pd.DataFrame:
    n = len(next(iter(lead.values())))
    return pd.DataFrame(
        {
            **lead,
            "intervened": np.linspace(1.0, 2.0, n),
            "intervened_se": np.full(n, 0.1),
            "baseline": np.linspace(0.5, 0.6, n),
            "baseline_se": np.full(n, 0.05),
            "excess": np.linspace(0.5, 1.4, n),
            "excess_se": np.full(n, 0.08),
            "ratio": np.linspace(2.0, 3.3, n),
        }
    )


def divergence() -> Any:
    from faithlens.divergence.compare import DivergenceResult

    return DivergenceResult(
        table=_split_table(metric=["emd", "mmd"]),
        values=np.ones((2, 3, 2)),
        metrics=("emd", "mmd"),
        n_natural=20,
        n_intervened=20,
        n_per_split=10,
        n_splits=3,
        paired=True,
        seed=0,
        mse=0.2,
        mse_se=0.02,
    )


def audit() -> Any:
    from faithlens.divergence.audit import AuditResult

    table = _split_table(
        condition=["zero"] * 3, space=["full", "row", "null"], metric=["emd"] * 3, dim=[4, 1, 3]
    )
    displacement = pd.DataFrame(
        {
            "condition": ["zero"],
            "n_moved": [10],
            "row_dim": [1],
            "width": [4],
            "row_fraction": [0.3],
            "row_fraction_se": [0.05],
            "visibility": [0.5],
            "visibility_se": [0.04],
        }
    )
    dormant = pd.DataFrame(
        {
            "condition": ["zero"],
            "n_units": [8],
            "n_dormant": [2],
            "n_recruited": [1],
            "recruited": [[3]],
            "max_activation": [[0.7]],
            "fire_rate": [[0.2]],
            "examples_recruiting": [0.2],
            "examples_recruiting_se": [0.09],
        }
    )
    return AuditResult(
        site="resid_post.0",
        conditions=("zero",),
        table=table,
        displacement=displacement,
        dormant=dormant,
        n_natural=20,
        reader_shape=(1, 4),
        units_site="mlp_post.1",
        threshold=0.0,
        seed=0,
        n_splits=3,
    )


def dormant() -> Any:
    from faithlens.divergence.dormant import DormantReport

    return DormantReport(
        n_units=8,
        threshold=0.0,
        dormant=np.array([2, 3]),
        recruited=np.array([3]),
        fire_rate=np.array([0.2]),
        max_activation=np.array([0.7]),
        examples_recruiting=0.2,
        examples_recruiting_se=0.09,
        flagged_examples=np.array([1, 4]),
    )


def _neuron_fields() -> dict[str, Any]:
    scores = np.array([[[0.6, 0.1, 0.05], [0.2, 0.25, 0.1]]])
    return dict(
        metrics=("iou",),
        units=("0", "1"),
        concepts=("a", "b", "c"),
        scores=scores,
        lower=scores - 0.1,
        upper=scores + 0.1,
        freq=np.array([[[1.0, 0.0, 0.0], [0.4, 0.6, 0.0]]]),
        thresholds=np.array([0.5, 0.4]),
        bounds=("kl (Chernoff)",),
        n_samples=100,
        n_groups=0,
        n_boot=10,
        delta=0.05,
        level=0.9,
        alpha=0.1,
        direction="unit_predicts_concept",
        interval="kl",
        simultaneous=True,
        seed=0,
    )


def neurons() -> Any:
    from faithlens.neurons.result import NeuronExplanation

    return NeuronExplanation(**_neuron_fields())


def dissection() -> Any:
    from faithlens.neurons.dissect import Dissection

    return Dissection(**_neuron_fields(), image_size=(8, 8), map_size=(2, 2), n_images=4)


def sanity() -> Any:
    from faithlens.neurons.sanity import SanityCheck

    table = pd.DataFrame(
        {
            "metric": ["iou", "auroc"],
            "frequency": [0.1, 0.1],
            "score": [0.5, 0.8],
            "drop_missing": [0.2, 0.0],
            "drop_extra": [0.1, 0.05],
            "missing_rate": [1.0, 0.2],
            "extra_rate": [0.8, 0.6],
            "passes_missing": [True, False],
            "passes_extra": [True, False],
        }
    )
    return SanityCheck(
        table=table,
        metrics=("iou", "auroc"),
        frequencies=(0.1,),
        n=100,
        seeds=5,
        eps=1e-3,
        tol=1e-3,
        pass_rate=0.8,
        direction="unit_predicts_concept",
        seed=0,
    )


def validation() -> Any:
    from faithlens.neurons.simulate import BoundValidation

    table = pd.DataFrame(
        {
            "metric": ["iou"],
            "n": [100],
            "coverage": [0.95],
            "q95_sup_dev": [0.1],
            "median_bound": [0.2],
            "identified": [0.9],
            "certified": [0.5],
            "certified_wrong": [0.0],
            "provable_size": [1.5],
        }
    )
    return BoundValidation(
        table=table,
        metrics=("iou",),
        sizes=(100,),
        reps=20,
        p=0.1,
        alpha=0.1,
        n_concepts=3,
        weights=(1.0, 0.5),
        delta=0.05,
        n_boot=0,
        level=0.9,
        interval="kl",
        seed=0,
    )


def training() -> Any:
    from faithlens.zoo.training import TrainingRun

    metrics = {
        "accuracy": {"estimate": 0.9, "low": 0.85, "high": 0.94, "se": 0.02, "n": 200},
        "loss": 0.3,
    }
    return TrainingRun(
        name="toy",
        seed=0,
        steps=10,
        complete=True,
        seconds=1.0,
        n_params=100,
        config={},
        schedule={},
        metrics=metrics,
        history=pd.DataFrame({"step": [0, 10], "loss": [1.0, 0.3]}),
    )


def generations() -> Any:
    from faithlens.representations.generation import Generations

    return Generations(
        prompts=["a", "b"],
        texts=[" x", " y"],
        tokens=np.array([[1, 2], [3, -1]]),
        logprobs=np.array([[-0.5, -1.0], [-0.2, np.nan]]),
        tracked=np.zeros((2, 2, 0)),
        track=[],
    )


#: result class name -> a builder of a small instance.
def edge_scores() -> Any:
    from faithlens.circuits.scores import EdgeScores

    rng = np.random.default_rng(7)
    score = np.array([-0.4, 0.05, -0.01])
    return EdgeScores(
        edge=["a0.h0->a1.h0<k>", "input->m0", "m0->logits"],
        writer=["a0.h0", "input", "m0"],
        reader=["a1.h0<k>", "m0", "logits"],
        score=score,
        score_se=np.array([0.05, 0.02, 0.01]),
        score_ci_low=score - 0.1,
        score_ci_high=score + 0.1,
        values=rng.normal(size=(3, 6)),
        clean=rng.normal(size=6) + 2,
        corrupt=rng.normal(size=6),
        model="toy",
        task="toy",
        n_boot=100,
    )


def node_scores() -> Any:
    from faithlens.circuits.nodes import NodeScores

    rng = np.random.default_rng(9)
    score = np.array([-0.3, 0.02])
    return NodeScores(
        node=["a0.h0", "m0"],
        kind=["head", "mlp"],
        score=score,
        score_se=np.array([0.04, 0.01]),
        score_ci_low=score - 0.1,
        score_ci_high=score + 0.1,
        values=rng.normal(size=(2, 6)),
        clean=rng.normal(size=6) + 2,
        corrupt=rng.normal(size=6),
        model="toy",
        task="toy",
        n_boot=100,
    )


def circuit_faithfulness() -> Any:
    from faithlens.circuits.faithfulness import CircuitFaithfulness

    rng = np.random.default_rng(8)
    return CircuitFaithfulness(
        edges=["a0.h0->a1.h0<k>"],
        n_graph_edges=3,
        how="top 1 by |score|",
        faithfulness=0.8,
        faithfulness_se=0.05,
        faithfulness_ci_low=0.7,
        faithfulness_ci_high=0.9,
        patched=rng.normal(size=6) + 1.6,
        clean=rng.normal(size=6) + 2,
        corrupt=rng.normal(size=6),
        model="toy",
        task="toy",
        n_boot=100,
    )


def faithfulness_curve() -> Any:
    from faithlens.circuits.curve import FaithfulnessCurve

    rng = np.random.default_rng(9)
    f = np.array([0.1, 0.6, 1.0])
    return FaithfulnessCurve(
        size=np.array([0.1, 0.5, 1.0]),
        edges=np.array([1, 5, 10]),
        faithfulness=f,
        faithfulness_se=np.array([0.05, 0.04, 0.0]),
        faithfulness_ci_low=f - 0.1,
        faithfulness_ci_high=f + 0.1,
        cpr=0.6,
        cpr_se=0.03,
        cpr_ci_low=0.55,
        cpr_ci_high=0.66,
        cmd=0.4,
        cmd_se=0.03,
        cmd_ci_low=0.34,
        cmd_ci_high=0.45,
        patched=rng.normal(size=(3, 6)),
        clean=rng.normal(size=6) + 2,
        corrupt=rng.normal(size=6),
        n_graph_edges=10,
        method="exact",
        model="toy",
        task="toy",
        n_boot=100,
    )


BUILDERS: dict[str, Callable[[], Any]] = {
    "FaithfulnessCurve": faithfulness_curve,
    "EdgeScores": edge_scores,
    "NodeScores": node_scores,
    "CircuitFaithfulness": circuit_faithfulness,
    "PatchingResult": patching,
    "ScrubResult": scrub,
    "AdversaryResult": adversary,
    "ParenReplication": paren,
    "DASResult": das,
    "ControlledDAS": das_controls,
    "DASSweep": das_sweep,
    "ReadingResult": reading,
    "SteeringResult": steering,
    "PersistenceResult": persistence,
    "LogitLensResult": logit_lens,
    "WritersResult": writers,
    "LayerLensResult": layer_lens,
    "DirectLogitAttribution": dla,
    "FaithfulnessReport": faithfulness,
    "DivergenceResult": divergence,
    "AuditResult": audit,
    "DormantReport": dormant,
    "NeuronExplanation": neurons,
    "Dissection": dissection,
    "SanityCheck": sanity,
    "BoundValidation": validation,
    "TrainingRun": training,
    "Generations": generations,
}

__all__ = ["BUILDERS", "fl"]
