"""Restarts without dendrites: at chosen epochs, and wherever PB's policy would grow."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from test_trainer import TRAIN, VALIDATION, make_trainer, training_args
from tiny_models import tiny_model
from transformers import Trainer, TrainerCallback, TrainerState

import hf_dendrites as hd
from experiments.metrics import build_compute_metrics


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


PLATEAU = hd.DendriteTrainingArguments(patience=2, min_evals_per_phase=1, max_dendrites=2, max_tries=1)


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
    trainer = scripted_trainer(tmp_path / "elsewhere")  # the state comes from the checkpoint given, not output_dir
    restarts = hd.RestartOnPlateauCallback(trainer, PLATEAU)
    trainer.add_callback(restarts)
    probe = Probe(trainer, restarts)
    trainer.add_callback(probe)
    trainer.train(resume_from_checkpoint=str(output_dir / "checkpoint-10"))
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


def with_restarts(trainer: Trainer, config: hd.DendriteConfig = PLATEAU) -> hd.RestartOnPlateauCallback:
    restarts = hd.RestartOnPlateauCallback(trainer, config)
    trainer.add_callback(restarts)
    return restarts


def same_weights(model: torch.nn.Module, expected: dict[str, torch.Tensor]) -> bool:
    actual = model.state_dict()
    return actual.keys() == expected.keys() and all(torch.equal(actual[k], expected[k]) for k in expected)


def test_resuming_a_run_whose_restarts_were_complete_trains_nothing(plateau_run, tmp_path, caplog):
    first_trainer, first, _, output_dir = plateau_run
    assert first.tracker.is_complete and (output_dir / "checkpoint-16").is_dir()  # its last checkpoint
    (tmp_path / "checkpoint-16").symlink_to(output_dir / "checkpoint-16", target_is_directory=True)
    trainer = scripted_trainer(tmp_path)
    restarts = with_restarts(trainer)
    with caplog.at_level("WARNING", logger="hf_dendrites.restarts"):
        output = trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-16"))
    assert output.global_step == trainer.state.global_step == 16  # not on to max_steps=20
    assert "end of a finished run" in caplog.text and "did not improve" in caplog.text
    assert restarts.tracker.is_complete and [r["step"] for r in restarts.restarts] == [8, 12]
    assert same_weights(trainer.model, first_trainer.model.state_dict())
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-16"]  # nothing trained, nothing saved


# A checkpoint of the scripted run, damaged: (what is done to it, the error, what the error must say).
DAMAGE = {
    "state_cut_off": (lambda f: (f / "restart_state.json").unlink(), FileNotFoundError, "save was cut off"),
    "state_not_json": (
        lambda f: (f / "restart_state.json").write_text('{"restarts": ['),
        ValueError,
        "restart_state.json cannot be read",
    ),
    "tracker_field_of_a_wrong_type": (
        lambda f: edit_state(f, lambda s: s["tracker"].update(num_dendrites="1")),
        ValueError,
        "restart_state.json is not a valid RestartOnPlateauCallback state .*num_dendrites",
    ),
    "restart_record_of_a_wrong_type": (
        lambda f: edit_state(f, lambda s: s["restarts"][0].update(step="8")),
        ValueError,
        "restart_state.json is not a valid RestartOnPlateauCallback state .*'step' must be an int",
    ),
    "best_deleted": (
        lambda f: (f / "restart_best.safetensors").unlink(),
        FileNotFoundError,
        "restart_best.safetensors not found, but .*restart_state.json records a best model",
    ),
    "best_truncated": (
        lambda f: (f / "restart_best.safetensors").write_bytes((f / "restart_best.safetensors").read_bytes()[:1000]),
        ValueError,
        "restart_best.safetensors cannot be read",
    ),
    "best_of_another_model": (
        lambda f: save_file({"weight": torch.zeros(2)}, f / "restart_best.safetensors"),
        ValueError,
        "restart_best.safetensors does not fit this model",
    ),
}


def edit_state(folder: Path, edit) -> None:
    path = folder / "restart_state.json"
    state = json.loads(path.read_text())
    edit(state)
    path.write_text(json.dumps(state))


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_restart_checkpoint_is_refused_naming_the_file_with_the_model_as_it_was(
    plateau_run, tmp_path, damage
):
    *_, output_dir = plateau_run
    damaged = tmp_path / "checkpoint-10"
    shutil.copytree(output_dir / "checkpoint-10", damaged)
    do, error, message = DAMAGE[damage]
    do(damaged)
    trainer = scripted_trainer(tmp_path)
    restarts = with_restarts(trainer)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(error, match=message):
        trainer.train(resume_from_checkpoint=str(damaged))
    assert same_weights(trainer.model, before)
    assert restarts.restarts == [] and restarts.best is None and not restarts.tracker.history


def test_resume_true_without_a_complete_restart_checkpoint_says_so(tmp_path):
    (tmp_path / "checkpoint-4").mkdir()
    trainer = scripted_trainer(tmp_path)
    with_restarts(trainer)
    with pytest.raises(ValueError, match="holds no complete restart checkpoint .*checkpoint-4 have none"):
        trainer.train(resume_from_checkpoint=True)


# Scored by evaluation loss, which falls at every evaluation here: the newest checkpoint is always the best,
# so with save_total_limit=1 transformers' rotation keeps nothing else. The threshold makes restarts happen.
LOSS_PLATEAU = hd.DendriteTrainingArguments(
    patience=1, min_evals_per_phase=1, max_dendrites=2, max_tries=1, improvement_threshold_abs=0.05
)


def loss_trainer(output_dir: Path) -> Trainer:
    return plain_trainer(
        output_dir,
        max_steps=12,
        eval_steps=2,
        save_steps=2,
        learning_rate=5e-2,
        metric_for_best_model=None,
        save_total_limit=1,
    )


@pytest.fixture(scope="module")
def loss_run(tmp_path_factory):
    trainer = loss_trainer(tmp_path_factory.mktemp("loss"))
    restarts = with_restarts(trainer, LOSS_PLATEAU)
    trainer.train()
    return trainer, restarts


class Crash(Exception):
    """Stands in for a kill -9."""


SAVE_POINTS = {
    "trainer_state": (TrainerState, "save_to_json"),
    "restart_best": (hd.restarts, "save_file"),
    "restart_state": (hd.restarts, "write_text_atomically"),
    "rotation": (hd.restarts, "rotate_checkpoints"),
}


@pytest.mark.parametrize("point", list(SAVE_POINTS))
def test_a_kill_at_any_point_of_a_save_leaves_a_resumable_restart_run(loss_run, tmp_path, monkeypatch, caplog, point):
    reference, reference_restarts = loss_run
    assert reference_restarts.restarts  # the run restarts, before and after the kill
    trainer = loss_trainer(tmp_path)
    with_restarts(trainer, LOSS_PLATEAU)
    owner, name = SAVE_POINTS[point]
    original = getattr(owner, name)

    def killed(*args, **kwargs):
        if trainer.state.global_step == 8:
            raise Crash
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, killed)
    with pytest.raises(Crash):
        trainer.train()
    monkeypatch.undo()
    complete = {p.name for p in tmp_path.glob("checkpoint-*") if (p / "restart_state.json").is_file()}
    assert complete == ({"checkpoint-6", "checkpoint-8"} if point == "rotation" else {"checkpoint-6"})

    resumed = loss_trainer(tmp_path)
    restarts = with_restarts(resumed, LOSS_PLATEAU)
    with caplog.at_level("WARNING", logger="hf_dendrites.restarts"):
        resumed.train(resume_from_checkpoint=True)
    assert ("skipping checkpoint(s) ['checkpoint-8']" in caplog.text) == (point != "rotation")
    assert restarts.restarts == reference_restarts.restarts
    assert same_weights(resumed.model, reference.model.state_dict())
    final = f"checkpoint-{reference.state.global_step}"
    assert [p.name for p in tmp_path.glob("checkpoint-*")] == [final]  # the debris rotated away
    assert (tmp_path / final / "restart_state.json").is_file()


@pytest.mark.parametrize("make", [hd.RestartOnPlateauCallback, lambda t: hd.RestartFromBestCallback(t, epochs=[1])])
def test_restarts_without_evaluations_are_refused(tmp_path, make):
    with pytest.raises(ValueError, match="restarts from evaluation scores: set eval_strategy"):
        make(plain_trainer(tmp_path, eval_strategy="no", save_strategy="no"))


def test_restarts_on_a_dendrite_trainer_are_refused(tmp_path):
    with pytest.raises(ValueError, match="is for a plain Trainer: a DendriteTrainer already restarts"):
        hd.RestartOnPlateauCallback(make_trainer(tmp_path), PLATEAU)
