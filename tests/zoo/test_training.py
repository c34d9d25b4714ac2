"""Training recipes: a few steps, checkpoint + resume equals an uninterrupted run; the CLI."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from typer.testing import CliRunner

import faithlens as fl
from faithlens import zoo
from faithlens.cli import app
from faithlens.results import Result
from faithlens.zoo import Schedule, TrainingRun, read_weights


def small(name: str, steps: int = 4) -> zoo.Recipe:
    r = zoo.recipe(name)
    r.schedule = dataclasses.replace(
        r.schedule,
        steps=steps,
        batch_size=16,
        warmup=2,
        eval_every=2,
        checkpoint_every=2,
        log_every=1,
    )
    r.eval_n = 64
    r.quick_n = 64
    return r


@pytest.mark.parametrize("name", ["paren", "induction"])
def test_resume_equals_uninterrupted(tmp_path, name):
    straight = zoo.train(small(name), tmp_path / "a", seed=3, threads=1)
    assert straight.complete and straight.steps == 4 and straight.resumed_from == 0
    part = zoo.train(small(name), tmp_path / "b", seed=3, until=2, threads=1)
    assert not part.complete and part.steps == 2 and not part.metrics
    assert (tmp_path / "b" / "checkpoint.pt").exists()
    assert not (tmp_path / "b" / f"{name}.safetensors").exists()
    done = zoo.train(small(name), tmp_path / "b", seed=3, threads=1)
    assert done.complete and done.resumed_from == 2
    _, wa, _ = read_weights(tmp_path / "a" / f"{name}.safetensors")
    _, wb, _ = read_weights(tmp_path / "b" / f"{name}.safetensors")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert straight.history["loss"].tolist() == done.history["loss"].tolist()
    # the record, the card, and a model that loads
    again = Result.load(tmp_path / "a" / "run")
    assert isinstance(again, TrainingRun) and again.steps == 4
    assert again.history.equals(straight.history)
    card = (tmp_path / "a" / f"{name}.md").read_text()
    assert "## Training time" in card and "## Evaluation" in card
    path = tmp_path / "a" / f"{name}.safetensors"
    model = fl.load(f"zoo:{path}")
    # named by its path (not the shipped model's name), which loads it again
    assert model.name == f"zoo:{path}" and model.tokenizer is not None
    assert fl.load(model.name).name == fl.load(str(path)).name == model.name
    assert "val_" in " ".join(straight.history.columns)
    fig = straight.plot()
    assert fig.axes


def test_resume_refuses_a_different_run_and_seeds_matter(tmp_path):
    a = zoo.train(small("paren", 2), tmp_path, seed=0, until=1, threads=1)
    with pytest.raises(fl.CheckpointError, match="different recipe"):
        zoo.train(small("paren", 2), tmp_path, seed=1, threads=1)
    # --no-resume starts over; another seed gives another run (the same seed the same one:
    # test_resume_equals_uninterrupted)
    b = zoo.train(small("paren", 2), tmp_path, seed=1, resume=False, threads=1, evaluate=False)
    assert b.complete and b.resumed_from == 0
    assert a.history["loss"].iloc[0] != b.history["loss"].iloc[0]


def test_schedule():
    s = Schedule(steps=100, batch_size=8, lr=1.0, warmup=10, min_lr_ratio=0.1)
    assert s.lr_factor(0) == pytest.approx(0.1)
    assert s.lr_factor(9) == pytest.approx(1.0)
    assert s.lr_factor(10) == pytest.approx(1.0)
    assert s.lr_factor(100) == pytest.approx(0.1)
    assert 0.1 < s.lr_factor(55) < 1.0
    with pytest.raises(fl.InputError):
        Schedule(steps=0, batch_size=8)
    with pytest.raises(fl.InputError, match="no zoo recipe"):
        zoo.recipe("gpt5")


runner = CliRunner()


def test_cli_list_and_card():
    res = runner.invoke(app, ["zoo", "list"])
    assert res.exit_code == 0, res.output
    assert "zoo:paren" in res.output and "zoo:induction" in res.output
    res = runner.invoke(app, ["zoo", "card", "paren"])
    assert res.exit_code == 0, res.output
    assert "Training time" in res.output
    res = runner.invoke(app, ["zoo", "card", "nope"])
    assert res.exit_code == 2 and "no zoo model named" in res.output
    res = runner.invoke(app, ["zoo", "--help"])
    assert res.exit_code == 0 and "train" in res.output


def test_cli_train_and_resume(tmp_path):
    out = tmp_path / "run"
    res = runner.invoke(
        app, ["zoo", "train", "induction", "--steps", "3", "--until", "2", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert "stopped at step 2" in res.output
    res = runner.invoke(app, ["zoo", "train", "induction", "--steps", "3", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert (out / "induction.safetensors").exists() and (out / "induction.md").exists()
    res = runner.invoke(app, ["zoo", "train", "induction", "--steps", "0", "--out", str(out)])
    assert res.exit_code == 2 and "--steps" in res.output
