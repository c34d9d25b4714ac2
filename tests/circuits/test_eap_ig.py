"""EAP-IG against EAP (one step), an independent brute-force reference of the same formula, and
the completeness of integrated gradients."""

from __future__ import annotations

import numpy as np
import pytest

import faithlens as fl
from faithlens.errors import InputError
from tests.helpers.builders import BUILDERS
from tests.helpers.circuits_reference import reference_eap_ig
from tests.helpers.tasks import padded_task

ARCHS = [
    "llama",
    "gpt_neox",
    pytest.param("gpt2", marks=pytest.mark.slow),
    pytest.param("faithlens_zoo", marks=pytest.mark.slow),
    "faithlens_zoo-attn_only",
]


def _setup(arch, n=3, seq=6):
    hf = BUILDERS[arch]().double()
    model = fl.wrap(hf)
    return hf, model, padded_task(model, n=n, seq=seq)


def test_one_step_is_eap():
    _, model, task = _setup("llama")
    ig = fl.circuits.eap_ig(model, task, steps=1, n_boot=20)
    eap = fl.circuits.eap(model, task, n_boot=20)
    np.testing.assert_allclose(ig.values, eap.values, atol=1e-12, rtol=0)
    assert ig.method == "eap-ig" and ig.meta["steps"] == 1


@pytest.mark.parametrize("arch", ARCHS)
def test_eap_ig_equals_brute_force_reference(arch):
    hf, model, task = _setup(arch)
    before = [p.requires_grad for p in hf.parameters()]
    res = fl.circuits.eap_ig(model, task, steps=3, n_boot=20)
    ref = reference_eap_ig(hf, task, res.edge, steps=3).numpy()
    np.testing.assert_allclose(res.values, ref, atol=1e-8, rtol=0)
    assert np.abs(ref).max() > 1e-3
    # the path matters: three steps differ from the gradient at the clean run alone
    eap = fl.circuits.eap(model, task, n_boot=20)
    assert np.abs(res.values - eap.values).max() > 1e-4
    assert [p.requires_grad for p in hf.parameters()] == before
    assert all(p.grad is None for p in hf.parameters())


def test_input_edges_are_complete_with_many_steps():
    """Integrated gradients' completeness: the embedding reaches the metric only through the
    ports it feeds, so its edges' values sum to ``m(corrupt) - m(clean)`` as the steps grow."""
    _, model, task = _setup("faithlens_zoo-attn_only", n=4)
    gap = None
    errors = {}
    for steps in (1, 64):
        res = fl.circuits.eap_ig(model, task, steps=steps, n_boot=20)
        rows = [i for i, w in enumerate(res.writer) if w == "input"]
        total = res.values[rows].sum(0)
        gap = res.corrupt - res.clean
        errors[steps] = np.abs(total - gap).max()
    assert gap is not None and np.abs(gap).min() > 1e-2
    assert errors[64] < 0.02 * np.abs(gap).max()
    assert errors[64] < errors[1] / 10


def test_chunks_and_progress_do_not_change_the_scores():
    _, model, task = _setup("faithlens_zoo-attn_only", n=4)
    whole = fl.circuits.eap_ig(model, task, steps=2, n_boot=20)
    calls = []
    small = fl.circuits.eap_ig(
        model, task, steps=2, n_boot=20, max_memory=1, progress=lambda d, t: calls.append((d, t))
    )
    np.testing.assert_allclose(small.values, whole.values, atol=1e-10, rtol=0)
    assert calls and calls[-1][0] == calls[-1][1] and len(calls) == calls[-1][1]


def test_bad_steps():
    _, model, task = _setup("llama")
    with pytest.raises(InputError, match="steps"):
        fl.circuits.eap_ig(model, task, steps=0)


def test_streamed_edge_values_equal_the_mean_gradient_path():
    """Each port's gradient is contracted into the edge values as soon as it is computed (no
    port gradient kept across steps): the values equal, to 1e-10, the writers' changes times the
    mean over steps of each step's port gradients (summed in float64), as EAP-IG computed them
    before."""
    import torch

    from faithlens.circuits.common import chunks, contribution, deltas, writer_sites
    from faithlens.circuits.eap import edge_values, frozen_parameters, port_gradients

    hf = BUILDERS["llama"]()  # float32: the float64 accumulation of float32 gradients
    model = fl.wrap(hf)
    task = padded_task(model, n=4, seq=6)
    steps = 3
    res = fl.circuits.eap_ig(model, task, steps=steps, n_boot=20)
    eg = fl.circuits.EdgeGraph(model)
    ref = np.zeros_like(res.values)
    parts, row_cap = chunks(model, task, None)
    with frozen_parameters(model):
        for rows, sub in parts:
            with torch.no_grad():
                corrupt = model.run(sub.corrupt, cache=writer_sites(eg), logits_at=sub.positions)
                clean = model.run(sub.clean, cache=writer_sites(eg), logits_at=sub.positions)
                change = deltas(eg, clean, corrupt)
                inp = next(w for w in eg.writers if w.kind == "input")
                e_corrupt, e_clean = contribution(eg, inp, corrupt), contribution(eg, inp, clean)
            total: dict = {}
            for k in range(1, steps + 1):
                point = e_clean - (1 - k / steps) * (e_clean - e_corrupt)
                grads, _, _ = port_gradients(eg, sub, row_cap, lambda: None, embed=point.detach())
                for name, g in grads.items():
                    total[name] = g.double() if name not in total else total[name] + g.double()
            mean = {name: g / steps for name, g in total.items()}
            ref[:, rows.cpu().numpy()] = edge_values(eg, change, mean)
    assert np.abs(ref).max() > 1e-3
    np.testing.assert_allclose(res.values, ref, atol=1e-10, rtol=0)
