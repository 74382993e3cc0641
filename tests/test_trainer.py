"""DendriteTrainer on a tiny random BERT and a small synthetic task."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import datasets
import pytest
import torch
from test_run_lock import finished_pid, held_by_another_process, write_stale_lock
from tiny_models import tiny_model, token_batch
from transformers import PreTrainedModel, Trainer, TrainerState, TrainingArguments

import hf_dendrites as hd
from experiments.metrics import build_compute_metrics
from hf_dendrites import DendriteConfig, DendriteTrainer, DendriteTrainingArguments
from hf_dendrites.run_lock import LOCK_FILE, OutputDirLockedError, RunLock
from hf_dendrites.training_args import TRAINING_FIELDS


def synthetic(n: int, seed: int) -> datasets.Dataset:
    """Label 1 when at least 3 of 12 tokens are small ids: learnable, but not at once."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 100, (n, 12), generator=generator)
    labels = ((ids < 30).sum(1) >= 3).long()
    return datasets.Dataset.from_dict(
        {"input_ids": ids.tolist(), "attention_mask": torch.ones_like(ids).tolist(), "labels": labels.tolist()}
    )


TRAIN, VALIDATION = synthetic(128, 0), synthetic(64, 1)


def training_args(output_dir: Path, **overrides) -> TrainingArguments:
    values = dict(
        output_dir=str(output_dir),
        max_steps=40,
        per_device_train_batch_size=16,
        learning_rate=1e-3,
        eval_strategy="steps",
        eval_steps=4,
        save_strategy="steps",
        save_steps=4,
        metric_for_best_model="accuracy",
        report_to=[],
        logging_steps=4,
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    values.update(overrides)
    return TrainingArguments(**values)


FAST_GROWTH = dict(
    patience=1, min_evals_per_phase=1, max_dendrites=3, candidate_learning_rate=1e-2, max_candidate_epochs=1.0
)


def dendrite_setup(**overrides: Any) -> dict[str, Any]:
    """`DendriteTrainer` keywords for the tests' fast growth with `overrides`: each field where it belongs,
    the model's in `dendrite_config`, the run's in `dendrite_args`."""
    values = {**FAST_GROWTH, **overrides}
    training = {name: value for name, value in values.items() if name in TRAINING_FIELDS}
    model = {name: value for name, value in values.items() if name not in TRAINING_FIELDS}
    return {"dendrite_config": DendriteConfig(**model), "dendrite_args": DendriteTrainingArguments(**training)}


def make_trainer(output_dir: Path, setup: dict[str, Any] | None = None, args: dict | None = None, **kwargs):
    return DendriteTrainer(
        tiny_model(num_labels=2),
        training_args(output_dir, **(args or {})),
        compute_metrics=build_compute_metrics(["accuracy"]),
        **(setup or dendrite_setup()),
        **{"train_dataset": TRAIN, "eval_dataset": VALIDATION, **kwargs},
    )


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """One uninterrupted run with a checkpoint at every evaluation."""
    output_dir = tmp_path_factory.mktemp("full")
    trainer = make_trainer(output_dir)
    trainer.train()
    return trainer, output_dir


@pytest.fixture(scope="module")
def streaming_run(tmp_path_factory):
    """The same run with the streaming candidate learner: dendrite phases that span training steps."""
    output_dir = tmp_path_factory.mktemp("streaming")
    trainer = make_trainer(output_dir, dendrite_setup(candidate_learner="streaming"))
    trainer.train()
    return trainer, output_dir


def test_a_stall_leads_to_a_dendrite_phase_and_growth(full_run):
    trainer, output_dir = full_run
    actions = [record["action"] for record in trainer.tracker.history]
    phases = [record["phase"] for record in trainer.tracker.history]
    assert "start_dendrite_phase" in actions and "grow" in actions
    assert "dendrite" in phases
    grown = [r for r in trainer.tracker.history if r["action"] == "grow"]
    assert all(r["candidate_score"] is not None and r["candidate_score"] > 0 for r in grown)
    logged = [entry for entry in trainer.state.log_history if "dendrites/count" in entry]
    assert logged and any(entry["dendrites/grew"] == 1.0 for entry in logged)
    assert any("dendrites/candidate_correlation" in entry for entry in logged)
    assert (output_dir / "dendrite_history.png").stat().st_size > 1000


def steps_taken(trainer) -> dict[str, dict[str, int]]:
    return {
        phase: {size: entry["steps"] for size, entry in by_size.items()}
        for phase, by_size in trainer.dendrite_callback.step_time.items()
    }


def test_step_time_is_recorded_per_phase_and_number_of_dendrites(streaming_run):
    trainer, _ = streaming_run
    callback = trainer.dendrite_callback
    steps = steps_taken(trainer)
    assert set(steps["neuron"]) >= {"0", "1"} and "0" in steps["dendrite"]
    assert sum(callback.phase_steps.values()) == trainer.state.global_step
    assert callback.phase_steps["dendrite"] == sum(steps["dendrite"].values())
    assert all(entry["seconds"] > 0 for by_size in callback.step_time.values() for entry in by_size.values())


def test_a_cached_dendrite_phase_takes_no_training_step_and_records_its_cost(full_run):
    trainer, _ = full_run
    callback = trainer.dendrite_callback
    assert callback.phase_steps["dendrite"] == 0 and callback.phase_steps["neuron"] == trainer.state.global_step
    phases = callback.candidate_scores_per_layer
    assert phases and all(entry["seconds"]["cache"] > 0 and entry["seconds"]["fit"] > 0 for entry in phases)
    layers = set(hd.dendrite_layers(trainer.model))
    assert all(set(entry["scores"]) == layers == set(entry["chance_per_layer"]) for entry in phases)
    assert all(0 <= entry["chance"] <= 1 and 0 <= entry["score"] <= 1 for entry in phases)


def test_training_ends_with_the_best_model(full_run):
    trainer, _ = full_run
    tracker = trainer.tracker
    assert tracker.is_complete
    assert hd.num_dendrites(trainer.model) == tracker.state.best_num_dendrites
    assert trainer.evaluate()["eval_accuracy"] == pytest.approx(tracker.best_score, abs=1e-9)
    assert not any(".candidate_" in name for name, _ in trainer.model.named_parameters())


def test_a_growth_that_never_helps_is_reverted_and_training_completes(full_run):
    trainer, _ = full_run
    history = trainer.tracker.history
    reverted = [r for r in history if r["restore_best"]]
    assert reverted, "expected at least one revert on this task"
    sign = 1 if trainer.tracker.settings.greater_is_better else -1
    for record in reverted:
        grow = max(i for i in range(record["eval"]) if history[i]["action"] == "grow")
        best_before = max(sign * r["score"] for r in history[:grow] if r["phase"] == "neuron")
        # no neuron-phase evaluation with the grown dendrite beat the best score from before it ...
        after = [r for r in history[grow + 1 : record["eval"] + 1] if r["phase"] == "neuron"]
        assert after and all(sign * r["score"] <= best_before for r in after)
        # ... and the revert took the model back to the dendrite count it had before that growth
        assert record["num_dendrites"] == history[grow]["num_dendrites"] - 1
    assert hd.num_dendrites(trainer.model) == history[-1]["num_dendrites"]
    assert history[-1]["action"] == "complete"
    assert "did not improve" in trainer.tracker.completed_reason or "max_dendrites" in trainer.tracker.completed_reason


def test_the_metric_is_flat_through_a_streaming_dendrite_phase(tmp_path):
    trainer = make_trainer(
        tmp_path,
        # an absolute threshold no loss change can pass: the neuron phase stalls at once
        dendrite_setup(
            candidate_learner="streaming",
            grow_from="last",
            max_candidate_epochs=2.0,
            candidate_patience=5,
            max_dendrites=1,
            improvement_threshold_abs=10.0,
        ),
        args={"metric_for_best_model": "loss", "max_steps": 32, "save_strategy": "no"},
    )
    trainer.train()
    history = trainer.tracker.history
    start = next(i for i, r in enumerate(history) if r["action"] == "start_dendrite_phase")
    phase = []
    for record in history[start + 1 :]:
        if record["phase"] != "dendrite" or record["score"] is None:
            break
        phase.append(record)
    assert len(phase) >= 3
    assert all(r["score"] == history[start]["score"] for r in phase)  # eval loss, bit for bit


@pytest.mark.parametrize(
    ("learner", "checkpoint_phase"),
    [("cached", "before_growth"), ("cached", "neuron"), ("streaming", "neuron"), ("streaming", "dendrite")],
)
def test_resume_reaches_the_same_structure_and_weights(full_run, streaming_run, tmp_path, learner, checkpoint_phase):
    trainer, output_dir = full_run if learner == "cached" else streaming_run
    checkpoints = sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    chosen = None
    for checkpoint in checkpoints:
        state = json.loads((checkpoint / "dendrite_state.json").read_text())
        if checkpoint_phase == "before_growth":  # the last checkpoint before the first (cached) dendrite phase
            if state["phases_started"] == 0:
                chosen = checkpoint
            continue
        if (
            state["tracker"]["phase"] == checkpoint_phase
            and state["tracker"]["num_dendrites"] + state["phases_started"] > 0
        ):
            chosen = checkpoint
            break
    assert chosen is not None, f"no checkpoint in a {checkpoint_phase} phase after growth started"
    resumed = make_trainer(tmp_path, dendrite_setup(candidate_learner=learner))
    resumed.train(resume_from_checkpoint=str(chosen))
    expected, actual = trainer.model.state_dict(), resumed.model.state_dict()
    assert actual.keys() == expected.keys()
    assert all(torch.equal(actual[k], expected[k]) for k in expected)
    assert [r["action"] for r in resumed.tracker.history] == [r["action"] for r in trainer.tracker.history]
    assert steps_taken(resumed) == steps_taken(trainer)  # the step record survives the checkpoint


def test_gd_mode_grows_without_a_dendrite_phase(tmp_path):
    trainer = make_trainer(tmp_path, dendrite_setup(mode="gd", max_dendrites=2), args={"save_strategy": "no"})
    trainer.train()
    history = trainer.tracker.history
    assert "grow" in [r["action"] for r in history]
    assert all(r["phase"] != "dendrite" for r in history)
    assert trainer.evaluate()["eval_accuracy"] == pytest.approx(trainer.tracker.best_score, abs=1e-9)


def test_gradient_accumulation_keeps_the_loss_scale(tmp_path):
    """Two half batches accumulated take the step one full batch takes. Plain SGD, whose step is
    proportional to the gradient: AdamW's first step is about lr * sign(g) and hides a loss-scale error."""

    def one_step(batch_size: int, accumulation: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        trainer = make_trainer(
            tmp_path / f"ga{accumulation}",
            args={
                "max_steps": 1,
                "per_device_train_batch_size": batch_size,
                "gradient_accumulation_steps": accumulation,
                "save_strategy": "no",
                "learning_rate": 1.0,
                "optim": "sgd",
                "lr_scheduler_type": "constant",
                "eval_steps": 100,
            },
        )
        before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        trainer.train()
        return before, {k: v.clone() for k, v in trainer.model.state_dict().items()}

    start, plain = one_step(16, 1)
    _, accumulated = one_step(8, 2)
    moved = max(float((plain[k] - start[k]).abs().max()) for k in plain)
    assert moved > 1e-3  # the step is large enough that a factor of 2 would show
    assert all(torch.allclose(plain[k], accumulated[k], atol=1e-5) for k in plain)


def test_before_its_first_growth_a_dendrite_run_matches_the_plain_trainer(tmp_path):
    """Same seed, same dropout masks, same batches: the paired comparison the benchmark relies on."""

    def losses(trainer_class, **kwargs) -> list[float]:
        model = tiny_model(num_labels=2)
        model.config.hidden_dropout_prob = 0.2
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.2
        trainer = trainer_class(
            model,
            training_args(tmp_path / trainer_class.__name__, max_steps=8, eval_steps=100, save_strategy="no"),
            train_dataset=TRAIN,
            eval_dataset=VALIDATION,
            compute_metrics=build_compute_metrics(["accuracy"]),
            **kwargs,
        )
        trainer.train()
        return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]

    plain = losses(Trainer)
    with_dendrites = losses(DendriteTrainer, **dendrite_setup())
    assert len(plain) == 2
    assert with_dendrites == plain


def test_dendrites_train_at_their_own_learning_rate_on_the_trainers_schedule(tmp_path):
    setup = dendrite_setup(mode="gd", dendrite_learning_rate=0.05)
    model = hd.add_dendrites(tiny_model(num_labels=2), setup["dendrite_config"])
    hd.grow(model)
    trainer = DendriteTrainer(
        model,
        training_args(tmp_path, learning_rate=1e-3, lr_scheduler_type="linear", max_steps=10),
        dendrite_args=setup["dendrite_args"],
        train_dataset=TRAIN,
        eval_dataset=VALIDATION,
        compute_metrics=build_compute_metrics(["accuracy"]),
    )
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    dendrite_ids = {id(p) for p in hd.model.dendrite_parameters(model)}
    assert len(dendrite_ids) == 3 * len(hd.dendrite_layers(model))  # weight, bias, output weight
    groups = trainer.optimizer.param_groups
    dendrite_groups = [g for g in groups if g.get("dendrites")]
    assert {id(p) for g in dendrite_groups for p in g["params"]} == {
        id(p) for p in hd.model.dendrite_parameters(model) if p.requires_grad
    }
    assert all(id(p) not in dendrite_ids for g in groups if not g.get("dendrites") for p in g["params"])
    assert all(g["lr"] == pytest.approx(0.05) for g in dendrite_groups)
    for _ in range(5):
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    assert all(g["lr"] == pytest.approx(0.025) for g in dendrite_groups)  # linear decay, halfway
    assert all(g["lr"] == pytest.approx(5e-4) for g in groups if not g.get("dendrites"))


@pytest.mark.parametrize(("mode", "expected"), [("pb", 1e-2), ("gd", 1e-3)])
def test_installed_dendrites_train_at_their_modes_default_rate_not_the_fine_tuning_rate(tmp_path, mode, expected):
    setup = dendrite_setup(mode=mode)
    model = hd.add_dendrites(tiny_model(num_labels=2), setup["dendrite_config"])
    if mode == "pb":
        hd.model.start_candidates(model)
        model.train()
        model(**token_batch(), labels=torch.tensor([0, 1, 0, 1])).loss.backward()  # candidate statistics
    hd.grow(model)
    trainer = DendriteTrainer(
        model,
        training_args(tmp_path, learning_rate=5e-5, max_steps=10),
        train_dataset=TRAIN,
        eval_dataset=VALIDATION,
        compute_metrics=build_compute_metrics(["accuracy"]),
    )
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    trainable = {id(p) for p in hd.model.dendrite_parameters(model) if p.requires_grad}
    rates = {g["lr"] for g in trainer.optimizer.param_groups for p in g["params"] if id(p) in trainable}
    assert len(rates) == 1
    assert rates.pop() == pytest.approx(expected)


# ---------------------------------------------------------------- bad input


def test_unknown_metric_name_fails_before_training(tmp_path):
    trainer = make_trainer(tmp_path, args={"metric_for_best_model": "acuracy"})
    with pytest.raises(ValueError, match=r"acuracy.*\['accuracy', 'loss'"):
        trainer.train()
    assert trainer.state.global_step == 0
    assert not list(tmp_path.glob("checkpoint-*"))


def test_dendrite_config_given_twice(tmp_path):
    model = hd.add_dendrites(tiny_model(num_labels=2), DendriteConfig())
    with pytest.raises(ValueError, match="already has dendrites"):
        DendriteTrainer(
            model,
            training_args(tmp_path),
            train_dataset=TRAIN,
            eval_dataset=VALIDATION,
            dendrite_config=DendriteConfig(),
        )


def test_no_evaluation_is_refused(tmp_path):
    with pytest.raises(ValueError, match="eval_strategy"):
        make_trainer(tmp_path, args={"eval_strategy": "no", "save_strategy": "no"})


def test_resume_from_a_checkpoint_of_a_different_structure(full_run, tmp_path):
    _, output_dir = full_run
    checkpoint = sorted(output_dir.glob("checkpoint-*"))[0]
    other = make_trainer(tmp_path, dendrite_setup(cascade=True))
    before = {k: v.clone() for k, v in other.model.state_dict().items()}
    with pytest.raises(ValueError, match=r"dendrite structure differs \(cascade"):
        other.train(resume_from_checkpoint=str(checkpoint))
    assert other.state.global_step == 0
    after = other.model.state_dict()
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_callback_works_with_a_plain_trainer(tmp_path):
    setup = dendrite_setup(max_dendrites=1)
    model = hd.add_dendrites(tiny_model(num_labels=2), setup["dendrite_config"])
    trainer = Trainer(
        model,
        training_args(tmp_path, save_strategy="no"),
        train_dataset=TRAIN,
        eval_dataset=VALIDATION,
        compute_metrics=build_compute_metrics(["accuracy"]),
    )
    callback = hd.DendriteCallback(trainer, dendrite_args=setup["dendrite_args"])
    trainer.add_callback(callback)
    trainer.train()
    assert "grow" in [r["action"] for r in callback.tracker.history]
    assert hd.num_dendrites(trainer.model) == callback.tracker.state.best_num_dendrites


def plain_trainer_with_callback(output_dir: Path):
    setup = dendrite_setup()
    model = hd.add_dendrites(tiny_model(num_labels=2), setup["dendrite_config"])
    trainer = Trainer(
        model,
        training_args(output_dir),
        train_dataset=TRAIN,
        eval_dataset=VALIDATION,
        compute_metrics=build_compute_metrics(["accuracy"]),
    )
    callback = hd.DendriteCallback(trainer, dendrite_args=setup["dendrite_args"])
    trainer.add_callback(callback)
    return trainer, callback


def test_a_plain_trainer_cannot_resume_growth_silently(full_run, tmp_path):
    """A plain Trainer restores weights and optimizer only: without the dendrite state growth would start over."""
    reference, _ = full_run
    run = copy_of_finished_run(full_run, tmp_path / "run")
    first = run / "checkpoint-4"  # before any growth: the weights fit a freshly augmented model
    trainer, callback = plain_trainer_with_callback(run)
    with pytest.raises(ValueError, match=r"resuming at step 4, but DendriteCallback holds no dendrite state"):
        trainer.train(resume_from_checkpoint=str(first))
    trainer, callback = plain_trainer_with_callback(run)
    callback.load_state(run / f"checkpoint-{reference.state.global_step}")  # the state of a finished run
    with pytest.raises(ValueError, match=r"from a run that had finished \(.+\): nothing is left to train"):
        trainer.train(resume_from_checkpoint=str(first))
    assert trainer.state.global_step == 4  # not one step trained


def test_a_loss_metric_that_should_grow_is_warned_about(tmp_path, caplog):
    caplog.set_level("WARNING", logger="hf_dendrites.trainer")
    make_trainer(tmp_path, args={"metric_for_best_model": "loss", "greater_is_better": True})
    assert "highest loss" in caplog.text
    caplog.clear()
    make_trainer(tmp_path / "other", args={"metric_for_best_model": "loss", "greater_is_better": False})
    assert "highest loss" not in caplog.text


class Crash(BaseException):
    """A kill: nothing catches it and no cleanup of ours runs."""


# Points of a checkpoint save, in the order they happen (the last one after the checkpoint is complete).
SAVE_POINTS = {
    "model_weights": (PreTrainedModel, "save_pretrained"),
    "optimizer": (Trainer, "_save_optimizer_and_scheduler"),
    "rng_state": (Trainer, "_save_rng_state"),
    "trainer_state": (TrainerState, "save_to_json"),
    "best_snapshot": (hd.callbacks, "save_snapshot"),
    "dendrite_state": (hd.callbacks, "write_text_atomically"),
    "rotation": (hd.trainer, "rotate_checkpoints"),
}


@pytest.mark.parametrize("point", list(SAVE_POINTS))
def test_a_kill_at_any_point_of_a_save_leaves_a_resumable_run(full_run, tmp_path, monkeypatch, caplog, point):
    reference, _ = full_run
    trainer = make_trainer(tmp_path, args={"save_total_limit": 1})
    owner, name = SAVE_POINTS[point]
    original = getattr(owner, name)

    def killed(*args, **kwargs):
        if trainer.state.global_step == 12:
            raise Crash
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, killed)
    with pytest.raises(Crash):
        trainer.train()
    monkeypatch.undo()
    complete = {p.name for p in tmp_path.glob("checkpoint-*") if (p / "dendrite_state.json").is_file()}
    assert "checkpoint-8" in complete or point == "rotation"  # the last complete one survives
    assert ("checkpoint-12" in complete) == (point == "rotation")

    resumed = make_trainer(tmp_path, args={"save_total_limit": 1})
    with caplog.at_level("WARNING", logger="hf_dendrites.checkpoints"):
        resumed.train(resume_from_checkpoint=True)
    if point != "rotation":
        assert "skipping incomplete checkpoint(s) ['checkpoint-12']" in caplog.text
    expected, actual = reference.model.state_dict(), resumed.model.state_dict()
    assert actual.keys() == expected.keys() and all(torch.equal(actual[k], expected[k]) for k in expected)
    left = [(p / "dendrite_state.json").is_file() for p in tmp_path.glob("checkpoint-*")]
    assert left and all(left)  # the debris was cleared


def test_resume_true_without_a_complete_checkpoint_says_so(tmp_path):
    (tmp_path / "checkpoint-4").mkdir(parents=True)
    trainer = make_trainer(tmp_path)
    with pytest.raises(ValueError, match="holds no complete dendrite checkpoint"):
        trainer.train(resume_from_checkpoint=True)


def test_a_failed_resume_leaves_the_model_as_it_was(streaming_run, tmp_path):
    _, output_dir = streaming_run
    inside_phase = next(
        p
        for p in sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        if json.loads((p / "dendrite_state.json").read_text())["tracker"]["phase"] == "dendrite"
    )
    broken = tmp_path / "broken" / inside_phase.name
    shutil.copytree(inside_phase, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    trainer = make_trainer(tmp_path / "run", dendrite_setup(candidate_learner="streaming"))
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    with pytest.raises(ValueError, match="model.safetensors"):
        trainer.train(resume_from_checkpoint=str(broken))
    after = trainer.model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert hd.model.paused_parameters(trainer.model) is None
    assert all(p.requires_grad for p in trainer.model.parameters())
    assert trainer.tracker.phase == "neuron" and not trainer.tracker.history
    trainer.train()  # and it trains from the start
    assert trainer.tracker.is_complete


def test_resuming_with_a_changed_patience_follows_the_new_value_and_says_so(full_run, tmp_path, caplog):
    _, output_dir = full_run
    first = sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[0]
    assert json.loads((first / "dendrite_state.json").read_text())["dendrite_args"]["candidate_epochs"] == 50
    trainer = make_trainer(tmp_path, dendrite_setup(patience=3, candidate_epochs=7))
    with caplog.at_level("WARNING"):
        trainer.train(resume_from_checkpoint=str(first))
    assert "resuming with patience=3 (the checkpoint was trained with 1)" in caplog.text
    assert "resuming with candidate_epochs=7 (the checkpoint was trained with 50)" in caplog.text
    assert caplog.text.count("resuming with patience=3") == 1  # the tracker says it, the callback does not repeat it
    assert trainer.tracker.settings.patience == 3
    newest = max(tmp_path.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    assert json.loads((newest / "dendrite_state.json").read_text())["tracker"]["config"]["patience"] == 3
    trainer.save_model(str(tmp_path / "final"))  # a run's setting, not the model's: the saved model has none
    saved = json.loads((tmp_path / "final" / "config.json").read_text())
    assert "patience" not in saved["dendrites"]["config"]


# ---------------------------------------------------------------- one writer per output_dir; a finished run stays finished


def copy_of_finished_run(full_run, folder: Path) -> Path:
    """The full run's output_dir, copied: resuming in it must not disturb the module's fixture."""
    reference, output_dir = full_run
    assert reference.tracker.is_complete and reference.state.global_step < reference.args.max_steps
    shutil.copytree(output_dir, folder)
    return folder


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    expected, actual = a.state_dict(), b.state_dict()
    return actual.keys() == expected.keys() and all(torch.equal(actual[k], expected[k]) for k in expected)


@pytest.mark.parametrize("resume", ["final_checkpoint", "true"])
def test_resuming_a_finished_run_trains_no_further(full_run, tmp_path, caplog, resume):
    """Growth ended the run at step 16 of 40; resuming from its final checkpoint must not train on to 40."""
    reference, _ = full_run
    run = copy_of_finished_run(full_run, tmp_path / "run")
    checkpoints = sorted(p.name for p in run.glob("checkpoint-*"))
    final = run / f"checkpoint-{reference.state.global_step}"
    assert (final / "dendrite_state.json").is_file()
    trainer = make_trainer(run)
    with caplog.at_level("WARNING", logger="hf_dendrites.trainer"):
        result = trainer.train(resume_from_checkpoint=str(final) if resume == "final_checkpoint" else True)
    assert result.global_step == trainer.state.global_step == reference.state.global_step
    assert sorted(p.name for p in run.glob("checkpoint-*")) == checkpoints  # nothing trained, nothing saved
    assert same_weights(reference.model, trainer.model)  # the run's final (best) model
    assert f"{final} is a checkpoint of a run that had finished" in caplog.text
    assert trainer.tracker.is_complete and trainer.tracker.history == reference.tracker.history
    again = make_trainer(run)  # a later run on the same output_dir: the lock was given back
    again.train(resume_from_checkpoint=True)
    assert again.state.global_step == reference.state.global_step and same_weights(reference.model, again.model)


def test_a_second_run_on_an_output_dir_in_use_is_refused_before_touching_it(tmp_path):
    trainer = make_trainer(tmp_path, args={"max_steps": 4})
    before = sorted(p.name for p in tmp_path.iterdir())
    with held_by_another_process(tmp_path) as pid:
        with pytest.raises(OutputDirLockedError) as refused:
            trainer.train()
        message = str(refused.value)
        assert str(tmp_path) in message and f"pid {pid}" in message and str(tmp_path / LOCK_FILE) in message
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, LOCK_FILE])  # the owner's file only
        assert RunLock(tmp_path).owner().pid == pid
    assert trainer.state.global_step == 0


def test_a_stale_lock_left_by_a_killed_run_is_taken_over_with_a_warning(full_run, tmp_path, caplog):
    run = copy_of_finished_run(full_run, tmp_path / "run")
    dead = finished_pid()
    write_stale_lock(run, dead)
    trainer = make_trainer(run)
    with caplog.at_level("WARNING", logger="hf_dendrites.run_lock"):
        trainer.train(resume_from_checkpoint=True)
    assert f"taking over the run lock {run / LOCK_FILE} left by pid {dead}" in caplog.text
    assert not (run / LOCK_FILE).exists()


def test_the_lock_is_given_back_when_train_returns_or_raises(full_run, tmp_path):
    _, output_dir = full_run
    assert not (output_dir / LOCK_FILE).exists()  # the full run returned
    trainer = make_trainer(tmp_path, args={"metric_for_best_model": "acuracy"})
    with pytest.raises(ValueError, match="acuracy"):
        trainer.train()
    assert not (tmp_path / LOCK_FILE).exists()
    with RunLock(tmp_path), RunLock(output_dir):  # both free
        pass


def test_only_the_process_that_saves_takes_the_lock(full_run, tmp_path, monkeypatch):
    """Ranks other than the main one write nothing in output_dir: they neither take the lock nor fail on it."""
    run = copy_of_finished_run(full_run, tmp_path / "run")
    monkeypatch.setattr(TrainingArguments, "should_save", property(lambda self: False))
    with held_by_another_process(run) as pid:
        trainer = make_trainer(run)
        trainer.train(resume_from_checkpoint=True)  # as rank 1 would: not refused
        assert RunLock(run).owner().pid == pid  # and the owner's lock untouched


@pytest.mark.parametrize(
    ("datasets_given", "message"),
    [
        (dict(train_dataset=TRAIN.select([])), "train_dataset holds no examples"),
        (dict(eval_dataset=VALIDATION.select([])), "eval_dataset holds no examples"),
        (
            dict(train_dataset=TRAIN.map(lambda row, i: {"labels": 5 if i == 3 else row["labels"]}, with_indices=True)),
            r"train_dataset has labels \[5\] outside the model's 2 classes",
        ),
    ],
)
def test_empty_datasets_and_labels_without_a_class_are_refused_before_training(tmp_path, datasets_given, message):
    trainer = make_trainer(tmp_path, **datasets_given)
    with pytest.raises(ValueError, match=message):
        trainer.train()
    assert trainer.state.global_step == 0
