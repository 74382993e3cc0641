"""Growth options of the trainer: when the first growth happens (`first_growth_epoch`), and what the
optimizer keeps across a change of structure (`reset_optimizer_on_growth`)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from test_trainer import dendrite_setup, make_trainer
from tiny_models import tiny_model, token_batch
from transformers import TrainerCallback

import hf_dendrites as hd
from hf_dendrites.checkpoints import KEPT_OPTIMIZER_FILE
from hf_dendrites.optimization import in_dendrite_phase

WEIGHT = "bert.encoder.layer.0.intermediate.dense.base_layer.weight"


class AdamSteps(TrainerCallback):
    """After every optimizer step: (in a dendrite phase, Adam's step count of one base weight)."""

    def __init__(self) -> None:
        self.trainer = None
        self.seen: list[tuple[bool, int | None]] = []

    def on_step_end(self, args, state, control, **kwargs):
        model = self.trainer.accelerator.unwrap_model(self.trainer.model)
        weight = dict(model.named_parameters())[WEIGHT]
        optimizer_state = self.trainer.optimizer.optimizer.state.get(weight)
        count = None if optimizer_state is None else int(optimizer_state["step"])
        self.seen.append((in_dendrite_phase(model), count))


def adam_steps(tmp_path, reset: bool, learner: str = "cached") -> tuple[list[tuple[bool, int | None]], object]:
    probe = AdamSteps()
    config = dendrite_setup(reset_optimizer_on_growth=reset, candidate_learner=learner)
    trainer = make_trainer(tmp_path, config, args={"save_strategy": "no"}, callbacks=[probe])
    probe.trainer = trainer
    trainer.train()
    return probe.seen, trainer


def test_a_reset_restarts_adams_step_count_after_every_change_of_structure(tmp_path):
    seen, trainer = adam_steps(tmp_path, reset=True)
    assert any(record["action"] == "grow" for record in trainer.tracker.history)
    neuron_counts = [count for in_phase, count in seen if not in_phase]
    assert all(count is None for in_phase, count in seen if in_phase)  # candidates' optimizer: base weights frozen
    restarts = [i for i in range(1, len(neuron_counts)) if neuron_counts[i] <= neuron_counts[i - 1]]
    assert restarts and all(neuron_counts[i] == 1 for i in restarts)  # fresh state: no stale moments


@pytest.mark.parametrize("learner", ["cached", "streaming"])
def test_without_reset_the_neuron_phase_state_carries_through_growth(tmp_path, learner):
    seen, trainer = adam_steps(tmp_path, reset=False, learner=learner)
    assert any(record["action"] == "grow" for record in trainer.tracker.history)
    assert any(in_phase for in_phase, _ in seen) == (learner == "streaming")  # a streaming phase takes steps
    neuron_counts = [count for in_phase, count in seen if not in_phase]
    assert neuron_counts == list(range(1, len(neuron_counts) + 1))  # one count over every neuron-phase step


def test_without_reset_a_resume_inside_a_dendrite_phase_restores_the_kept_state(tmp_path):
    config = dendrite_setup(reset_optimizer_on_growth=False, candidate_learner="streaming")
    full = make_trainer(tmp_path / "full", config)
    full.train()
    inside = [
        folder
        for folder in sorted((tmp_path / "full").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        if json.loads((folder / "dendrite_state.json").read_text())["tracker"]["phase"] == "dendrite"
    ]
    assert inside and all((folder / KEPT_OPTIMIZER_FILE).is_file() for folder in inside)
    assert not any(
        (folder / KEPT_OPTIMIZER_FILE).exists()
        for folder in (tmp_path / "full").glob("checkpoint-*")
        if folder not in inside
    )
    expected = full.model.state_dict()

    def eval_losses(trainer) -> list[float]:
        return [entry["eval_loss"] for entry in trainer.state.log_history if "eval_loss" in entry]

    resumed = make_trainer(tmp_path / "resumed", config)
    resumed.train(resume_from_checkpoint=str(inside[0]))
    actual = resumed.model.state_dict()
    assert actual.keys() == expected.keys() and all(torch.equal(actual[k], expected[k]) for k in expected)
    assert eval_losses(resumed) == eval_losses(full)

    # without the kept state the next neuron phase starts afresh, and its evaluations differ
    damaged = tmp_path / "without_kept_state"
    shutil.copytree(inside[0], damaged)
    (damaged / KEPT_OPTIMIZER_FILE).unlink()
    other = make_trainer(tmp_path / "other", config)
    other.train(resume_from_checkpoint=str(damaged))
    assert eval_losses(other) != eval_losses(full)


def test_reset_optimizer_on_growth_must_be_a_bool():
    with pytest.raises(ValueError, match="reset_optimizer_on_growth must be a bool"):
        dendrite_setup(reset_optimizer_on_growth="no")


@pytest.mark.parametrize("mode", ["pb", "gd"])
def test_the_first_growth_happens_at_first_growth_epoch_without_a_stall(tmp_path, mode):
    """8 steps an epoch, an evaluation every 4; patience 10 means no stall in 24 steps."""
    starts = {}
    for first in (None, 1.0):
        config = dendrite_setup(mode=mode, patience=10, first_growth_epoch=first)
        trainer = make_trainer(tmp_path / str(first), config, args={"save_strategy": "no", "max_steps": 24})
        trainer.train()
        growth = [r for r in trainer.tracker.history if r["action"] in ("start_dendrite_phase", "grow")]
        starts[first] = growth[0]["step"] if growth else None
        if first is not None:
            assert "growth forced by the trainer" in growth[0]["reason"]
    assert starts == {None: None, 1.0: 8}


def test_first_growth_epoch_must_be_a_number_at_least_zero():
    with pytest.raises(ValueError, match="first_growth_epoch must be a finite number >= 0"):
        dendrite_setup(first_growth_epoch=-1.0)


def test_a_batch_of_one_example_grows_with_the_cached_learner(tmp_path):
    trainer = make_trainer(tmp_path, args=dict(per_device_train_batch_size=1, max_steps=24, eval_steps=4, save_steps=8))
    trainer.train()  # used to end at the first growth: "needs trained candidates"
    phase = trainer.dendrite_callback.candidate_scores_per_layer[0]
    assert phase["skipped"] == {}, "every layer's candidates trained, [CLS]-only layers included"
    assert min(phase["rows"].values()) >= 2 and min(phase["scores"].values()) > 0
    assert any(entry["action"] == "grow" for entry in trainer.tracker.history)


def test_a_batch_of_one_example_with_the_streaming_learner_is_refused_before_training(tmp_path):
    trainer = make_trainer(
        tmp_path,
        dendrite_setup(candidate_learner="streaming"),
        args=dict(per_device_train_batch_size=1, max_steps=24, eval_steps=4, save_steps=8),
    )
    with pytest.raises(ValueError, match=r"per_device_train_batch_size=1.*candidate_learner='cached'"):
        trainer.train()
    assert trainer.state.global_step == 0


def test_growth_after_a_phase_that_trained_nothing_says_why(tmp_path):
    model = hd.add_dendrites(tiny_model(num_labels=2), hd.DendriteConfig())
    hd.model.start_candidates(model)
    batch = token_batch(1, seed=0)
    model(**batch, labels=torch.tensor([1])).loss.backward()  # one example: one row where only [CLS] matters
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with pytest.raises(RuntimeError, match="saw no batch with two or more rows") as refusal:
        hd.grow(model)
    assert "start_candidates()" not in str(refusal.value)
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
