"""Restarts without dendrites: at chosen epochs, and wherever PB's policy would grow."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_trainer import TRAIN, VALIDATION, training_args
from tiny_models import tiny_model
from transformers import Trainer, TrainerCallback

import hf_dendrites as hd
from hf_dendrites.metrics import build_compute_metrics


def plain_trainer(output_dir: Path, **args) -> Trainer:
    return Trainer(
        tiny_model(num_labels=2),
        training_args(output_dir, **args),
        train_dataset=TRAIN,
        eval_dataset=VALIDATION,
        compute_metrics=build_compute_metrics(["accuracy"]),
    )


class Probe(TrainerCallback):
    """Added after a restart callback: sees the model and optimizer as each evaluation leaves them."""

    def __init__(self, trainer: Trainer, restarts) -> None:
        self.trainer, self.restarts = trainer, restarts
        self.optimizers: list = []
        self.after_restart: dict[int, dict] = {}

    def on_step_end(self, args, state, control, **kwargs):
        self.optimizers.append(self.trainer.optimizer)

    def on_evaluate(self, args, state, control, **kwargs):
        if self.restarts.restarts and self.restarts.restarts[-1]["step"] == state.global_step:
            weights = self.trainer.model.state_dict()
            best = self.restarts.best.state_dict
            self.after_restart[state.global_step] = {
                "weights": {k: v.detach().clone() for k, v in weights.items()},
                "is_best": all(torch.equal(weights[k], best[k]) for k in best),
                "moments": len(self.trainer.optimizer.state),
                "schedule_step": self.trainer.lr_scheduler.last_epoch,
            }


def test_restart_from_best_restores_the_best_model_with_a_fresh_optimizer(tmp_path):
    trainer = plain_trainer(tmp_path, max_steps=24, eval_steps=8, save_strategy="no", learning_rate=5e-3)
    restarts = hd.RestartFromBestCallback(trainer, epochs=[2])
    trainer.add_callback(restarts)
    probe = Probe(trainer, restarts)
    trainer.add_callback(probe)
    trainer.train()
    assert [(r["epoch"], r["step"]) for r in restarts.restarts] == [(2, 16)]
    seen = probe.after_restart[16]
    assert seen["is_best"] and seen["moments"] == 0  # fresh: no moments kept
    assert probe.optimizers[16] is not probe.optimizers[15]  # step 17 runs on the new optimizer
    assert seen["schedule_step"] == 16  # the learning-rate schedule continues where it was


# Validation accuracy by global step (evaluations every 2 steps): a best at step 4, then a plateau.
# patience 2: restart at step 8; the restart never beats 0.6, so after 2 more it is retried
# (max_tries 1) at step 12, and after 2 more training stops at step 16.
SCRIPTED = {2: 0.5, 4: 0.6, 6: 0.6, 8: 0.6, 10: 0.6, 12: 0.6, 14: 0.6, 16: 0.6, 18: 0.6, 20: 0.6}


def scripted_trainer(output_dir: Path, **args) -> Trainer:
    trainer = plain_trainer(output_dir, max_steps=20, eval_steps=2, save_steps=2, learning_rate=5e-3, **args)
    trainer.compute_metrics = lambda prediction: {"accuracy": SCRIPTED[trainer.state.global_step]}
    return trainer


PLATEAU = hd.DendriteConfig(patience=2, min_evals_per_phase=1, max_dendrites=2, max_tries=1)


@pytest.fixture(scope="module")
def plateau_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("plateau")
    trainer = scripted_trainer(output_dir)
    restarts = hd.RestartOnPlateauCallback(trainer, PLATEAU)
    trainer.add_callback(restarts)
    probe = Probe(trainer, restarts)
    trainer.add_callback(probe)
    trainer.train()
    return trainer, restarts, probe, output_dir


def test_restarts_on_plateau_follow_the_growth_policy_and_stop_when_they_stop_helping(plateau_run):
    trainer, restarts, probe, _ = plateau_run
    assert [r["step"] for r in restarts.restarts] == [8, 12]
    assert trainer.state.global_step == 16  # stopped: the retried restart did not help either
    assert "did not improve" in restarts.tracker.completed_reason
    for step in (8, 12):
        assert probe.after_restart[step]["is_best"] and probe.after_restart[step]["moments"] == 0
        assert probe.after_restart[step]["schedule_step"] == step
    assert hd.num_dendrites(trainer.model) == 0


def test_restarts_on_plateau_resume_from_a_checkpoint_with_the_same_best_model(plateau_run, tmp_path):
    _, first, first_probe, output_dir = plateau_run
    resumed_dir = tmp_path / "resumed"
    resumed_dir.mkdir()
    (resumed_dir / "checkpoint-10").symlink_to(output_dir / "checkpoint-10", target_is_directory=True)
    trainer = scripted_trainer(resumed_dir)
    restarts = hd.RestartOnPlateauCallback(trainer, PLATEAU)
    trainer.add_callback(restarts)
    probe = Probe(trainer, restarts)
    trainer.add_callback(probe)
    trainer.train(resume_from_checkpoint=str(resumed_dir / "checkpoint-10"))
    assert [r["step"] for r in restarts.restarts] == [8, 12] and trainer.state.global_step == 16
    resumed, original = probe.after_restart[12]["weights"], first_probe.after_restart[12]["weights"]
    assert all(torch.equal(resumed[k], original[k]) for k in original)  # the best of step 4, read back


def test_resuming_restarts_from_a_checkpoint_without_their_state_says_so(tmp_path):
    trainer = plain_trainer(tmp_path, max_steps=8, eval_steps=4, save_steps=4)
    trainer.train()
    resumed = plain_trainer(tmp_path, max_steps=12, eval_steps=4, save_steps=4)
    resumed.add_callback(hd.RestartOnPlateauCallback(resumed, PLATEAU))
    with pytest.raises(FileNotFoundError, match="restart_state.json not found"):
        resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-8"))


def test_restarts_at_epochs_must_be_epoch_numbers(tmp_path):
    with pytest.raises(ValueError, match="1-based epoch numbers"):
        hd.RestartFromBestCallback(plain_trainer(tmp_path), epochs=[0, 2])
