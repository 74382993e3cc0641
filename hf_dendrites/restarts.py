"""Restarts without dendrites: go back to the best model with a fresh optimizer.

What a growth does to a run besides adding a dendrite: the reference library reloads its best
model and builds a new optimizer (fresh AdamW moments; the learning-rate schedule continues) at
every restructure, and so does `DendriteTrainer` with `grow_from="best"`. The growth study found
that this restart, not the dendrite, is what PB gains over an early-stopped fine-tune on full-width
models, so it is offered on its own, for a plain `Trainer` (a `DendriteTrainer` restarts by itself):

- `RestartFromBestCallback` restarts at chosen epochs (a study's control: "restart where that PB
  run grew");
- `RestartOnPlateauCallback` restarts where PB would grow: the same `DendriteTracker` policy
  (`patience`, `max_dendrites` as the number of restarts, `max_tries`, thresholds), with the
  dendrite taken out, and stops training when a restart no longer helps.

Checkpoints and resuming. Both write their state into every checkpoint: the best model in
`restart_best.safetensors`, then `restart_state.json`, by rename, whose presence marks the
checkpoint complete. Transformers deletes old checkpoints at the end of its own save, before any
callback runs, so state written in `on_save` could be lost to a kill right after a rotation that
already removed the last complete checkpoint. The callback therefore wraps its trainer's
`_save_checkpoint` (the checkpoint, then the restart files, then the rotation) and its `train`:
`resume_from_checkpoint=True` takes the newest complete checkpoint, and the checkpoint being resumed,
wherever it is, is read and checked before the trainer loads anything, so a damaged one fails naming
the file, with the model as it was. A run whose restarts were complete resumes to its final model and
trains nothing.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import logging
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, IntervalStrategy, TrainOutput, rotate_checkpoints

from .callbacks import greater_is_better, metric_key
from .checkpoints import checkpoint_folders, write_file_atomically, write_text_atomically
from .config import DendriteConfig
from .model import ModelSnapshot, dendrite_layers, restore_snapshot, take_snapshot
from .optimization import rebuild_optimizer
from .tracker import Action, DendriteTracker
from .trainer import DendriteTrainer
from .trainer_internals import checkpoint_folder, load_checkpoint_weights, wrap_save_checkpoint
from .training_args import DendriteTrainingArguments

logger = logging.getLogger(__name__)

RESTART_STATE_FILE = "restart_state.json"
RESTART_BEST_FILE = "restart_best.safetensors"


@dataclasses.dataclass
class _Resumed:
    """A checkpoint's restart state, read and checked before the trainer loads the checkpoint."""

    folder: Path
    state: dict[str, Any]  # what `_checked_state` returned
    best: ModelSnapshot | None


def newest_complete_checkpoint(output_dir: str | os.PathLike) -> Path:
    """The newest `checkpoint-<step>` of `output_dir` with its restart state; newer ones are named in a warning."""
    folders = checkpoint_folders(output_dir)
    complete = [index for index, folder in enumerate(folders) if (folder / RESTART_STATE_FILE).is_file()]
    if not complete:
        found = f" ({', '.join(f.name for f in folders)} have none)" if folders else ""
        raise ValueError(
            f"resume_from_checkpoint=True, but {output_dir} holds no complete restart checkpoint (a "
            f"{PREFIX_CHECKPOINT_DIR}-<step> folder with {RESTART_STATE_FILE}){found}: start a new run, or pass "
            "the checkpoint to resume from"
        )
    newest = folders[complete[-1]]
    if skipped := [folder.name for folder in folders[complete[-1] + 1 :]]:
        logger.warning(
            "restarts: skipping checkpoint(s) %s without %s (their save was cut off); resuming from %s",
            skipped,
            RESTART_STATE_FILE,
            newest.name,
        )
    return newest


def _field(state: dict[str, Any], name: str, kinds: tuple[type, ...], what: str) -> Any:
    """`state[name]`, which must be one of `kinds` (never a bool standing in for a number)."""
    if name not in state:
        raise ValueError(f"the field {name!r} is missing")
    value = state[name]
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise ValueError(f"{name!r} must be {what}, got {value!r}")
    return value


class _RestartCallback(TrainerCallback):
    """What both restart callbacks share: the best model so far, the restart itself, checkpoints."""

    def __init__(self, trainer: Trainer) -> None:
        name = type(self).__name__
        if isinstance(trainer, DendriteTrainer):
            raise ValueError(
                f"{name} is for a plain Trainer: a DendriteTrainer already restarts from the best model at every "
                "growth. Use one or the other: DendriteTrainer for dendrites, a Trainer with this callback for "
                "restarts alone"
            )
        if trainer.args.eval_strategy == IntervalStrategy.NO:
            raise ValueError(f"{name} restarts from evaluation scores: set eval_strategy to 'epoch' or 'steps'")
        self.trainer = trainer
        self.metric_key = metric_key(trainer.args)
        self.greater_is_better = greater_is_better(trainer.args)
        self.best: ModelSnapshot | None = None
        self.restarts: list[dict[str, Any]] = []
        self._resumed: _Resumed | None = None
        self._wrap_trainer()

    @property
    def model(self) -> torch.nn.Module:
        return self.trainer.accelerator.unwrap_model(self.trainer.model)

    def _restart(self, state: TrainerState, **record: Any) -> None:
        """Restore the best model and start a fresh optimizer (the schedule continues)."""
        if self.best is not None:
            restore_snapshot(self.model, self.best)
        rebuild_optimizer(self.trainer)
        self.restarts.append({"epoch": state.epoch, "step": state.global_step, **record})
        logger.info("restart at step %d: best model restored, fresh optimizer", state.global_step)

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> TrainerControl:
        if metrics and self.metric_key in metrics:
            self._evaluated(float(metrics[self.metric_key]), state, control)
        return control

    def _evaluated(self, score: float, state: TrainerState, control: TrainerControl) -> None:
        """Act on one evaluation's score (the subclass's policy)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {"restarts": self.restarts}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from `state` (from `state_dict`); a state that does not check out changes nothing."""
        self._apply(self._checked_state(state))

    def _checked_state(self, state: Any) -> dict[str, Any]:
        """The values of a `state_dict()`, checked and copied (ValueError naming the field); changes nothing."""
        if not isinstance(state, dict):
            raise ValueError(f"expected a JSON object, got {type(state).__name__}")
        restarts = _field(state, "restarts", (list,), "a list")
        for index, record in enumerate(restarts):
            if not isinstance(record, dict):
                raise ValueError(f"restarts[{index}] must be an object, got {record!r}")
            _field(record, "step", (int,), "an int")
            _field(record, "epoch", (int, float, type(None)), "a number")
        return {"restarts": copy.deepcopy(restarts)}

    def _apply(self, checked: dict[str, Any]) -> None:
        self.restarts = checked["restarts"]

    def _had_best(self, checked: dict[str, Any]) -> bool:
        """Whether the run that wrote this state had a best model (and so a best-model file)."""
        raise NotImplementedError

    def _completed_reason(self, checked: dict[str, Any]) -> str | None:
        """Why the run that wrote this state had finished, or None if it had not."""
        return None

    # ------------------------------------------------------------------ checkpoints

    def save_state(self, folder: Path) -> None:
        """Write the restart files into a checkpoint: the best model first, the state file last (its presence
        marks the checkpoint complete)."""
        best_file = folder / RESTART_BEST_FILE
        if self.best is None:
            best_file.unlink(missing_ok=True)
        else:
            best = self.best.state_dict
            write_file_atomically(best_file, lambda path: save_file(best, path, metadata={"format": "pt"}))
        write_text_atomically(folder / RESTART_STATE_FILE, json.dumps(self.state_dict(), indent=2) + "\n")

    def read_state(self, folder: Path) -> _Resumed:
        """Read and check a checkpoint's restart files, against this callback and model; changes nothing.

        Raises FileNotFoundError or ValueError naming the file and what is wrong with it.
        """
        name = type(self).__name__
        state_file = folder / RESTART_STATE_FILE
        if not state_file.is_file():
            raise FileNotFoundError(self._missing_state_message(folder))
        try:
            saved = json.loads(state_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(
                f"{state_file} cannot be read ({error}): the checkpoint is damaged; resume from another checkpoint"
            ) from error
        try:
            checked = self._checked_state(saved)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(
                f"{state_file} is not a valid {name} state ({error}): the checkpoint is damaged or was written by "
                "another callback; resume from another checkpoint, or with the callback that wrote it"
            ) from error
        best_file = folder / RESTART_BEST_FILE
        best = None
        if self._had_best(checked):
            if not best_file.is_file():
                raise FileNotFoundError(
                    f"{best_file} not found, but {state_file} records a best model: the checkpoint is incomplete "
                    "(files were removed); resume from another checkpoint"
                )
            best = self._read_best(best_file)
        return _Resumed(folder, checked, best)

    def _read_best(self, path: Path) -> ModelSnapshot:
        try:
            weights = load_file(path)
        except Exception as error:  # safetensors raises its own SafetensorError, and OSError
            raise ValueError(
                f"{path} cannot be read ({error}): the checkpoint is damaged; resume from another checkpoint"
            ) from error
        expected = self.model.state_dict()
        wrong = sorted(set(weights) ^ set(expected)) or [
            key for key in sorted(weights) if weights[key].shape != expected[key].shape
        ]
        if wrong:
            raise ValueError(
                f"{path} does not fit this model (other or missing weights: {', '.join(wrong[:3])}"
                f"{', ...' if len(wrong) > 3 else ''}): it was saved from another model; resume with that model"
            )
        return ModelSnapshot(
            {name: layer.num_dendrites for name, layer in dendrite_layers(self.model).items()}, weights
        )

    def _missing_state_message(self, folder: Path) -> str:
        cut_off = not (folder / TRAINER_STATE_NAME).is_file() or any(
            (folder / name).exists() for name in (RESTART_BEST_FILE, RESTART_STATE_FILE + ".tmp")
        )
        if cut_off:
            why = "its save was cut off before the restart state was written"
        else:
            why = (
                f"it was written without a restart callback (or its save was cut off just before {RESTART_STATE_FILE})"
            )
        return (
            f"{folder / RESTART_STATE_FILE} not found: {why}, so {type(self).__name__} cannot resume from it. Resume "
            f"from a complete checkpoint (resume_from_checkpoint=True takes the newest one with {RESTART_STATE_FILE}), "
            "start a new run, or resume without the callback"
        )

    # ------------------------------------------------------------------ the trainer, wrapped

    def _wrap_trainer(self) -> None:
        """Route the trainer's `train` and `_save_checkpoint` through this callback (see the module docstring)."""
        trainer = self.trainer
        train = trainer.train

        @functools.wraps(train)
        def train_with_restarts(resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
            return self._train(train, resume_from_checkpoint, *args, **kwargs)

        trainer.train = train_with_restarts
        wrap_save_checkpoint(trainer, self._save_checkpoint)

    def _is_attached(self) -> bool:
        """Added to its trainer (a callback built but never added leaves the trainer as it was)."""
        return any(callback is self for callback in self.trainer.callback_handler.callbacks)

    def _train(
        self,
        train: Callable[..., Any],
        resume_from_checkpoint: str | os.PathLike | bool | None,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """`Trainer.train`, with the restart state read from the checkpoint being resumed, before anything loads."""
        if not self._is_attached():
            return train(resume_from_checkpoint, *args, **kwargs)
        others = [
            c for c in self.trainer.callback_handler.callbacks if isinstance(c, _RestartCallback) and c is not self
        ]
        if others:
            raise ValueError(
                f"a trainer takes one restart callback; this one has {type(self).__name__} and "
                f"{', '.join(type(c).__name__ for c in others)} (they would write one {RESTART_STATE_FILE})"
            )
        self._resumed = None
        if resume_from_checkpoint is True:
            resume_from_checkpoint = str(newest_complete_checkpoint(self.trainer.args.output_dir))
        elif resume_from_checkpoint is False:
            resume_from_checkpoint = None
        if resume_from_checkpoint is not None:
            self._resumed = self.read_state(Path(resume_from_checkpoint))
            reason = self._completed_reason(self._resumed.state)
            if reason is not None:
                return self._finished(self._resumed, reason)
        try:
            return train(resume_from_checkpoint, *args, **kwargs)
        finally:
            self._resumed = None

    def _finished(self, resumed: _Resumed, reason: str) -> TrainOutput:
        """Resuming a run whose restarts were complete: its checkpoint holds the final model; train nothing."""
        trainer = self.trainer
        load_checkpoint_weights(trainer, resumed.folder)
        trainer.state = TrainerState.load_from_json(str(resumed.folder / TRAINER_STATE_NAME))
        self._apply(resumed.state)
        self.best = resumed.best
        self._resumed = None
        logger.warning(
            "restarts: %s is the end of a finished run (%s): its model is loaded and nothing is trained",
            resumed.folder,
            reason,
        )
        return TrainOutput(trainer.state.global_step, math.nan, {})

    def _save_checkpoint(self, save_checkpoint: Callable[..., None], model: torch.nn.Module, trial: Any) -> None:
        """The trainer's checkpoint, then the restart files, and only then the rotation of old checkpoints."""
        trainer, args = self.trainer, self.trainer.args
        if not self._is_attached():
            return save_checkpoint(model, trial)
        folder = checkpoint_folder(trainer, trial)
        if args.should_save:
            (folder / RESTART_STATE_FILE).unlink(missing_ok=True)  # a folder being rewritten is incomplete until done
        limit, args.save_total_limit = args.save_total_limit, None  # rotation waits until the checkpoint is complete
        try:
            save_checkpoint(model, trial)
        finally:
            args.save_total_limit = limit
        if args.should_save:
            self.save_state(folder)
            rotate_checkpoints(
                output_dir=str(folder.parent),
                save_total_limit=limit,
                best_model_checkpoint=trainer.state.best_model_checkpoint,
                use_mtime=True,
            )

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        if self._resumed is not None:  # the trainer has loaded the same checkpoint by now
            self._apply(copy.deepcopy(self._resumed.state))  # a copy: a batch-size retry begins again
            self.best = self._resumed.best
        elif state.global_step > 0:
            raise RuntimeError(
                f"training resumed at step {state.global_step}, but {type(self).__name__} did not see the checkpoint: "
                "it reads its state in train(resume_from_checkpoint=...) of the trainer it was built with"
            )
        return control


class RestartFromBestCallback(_RestartCallback):
    """After the evaluation that ends each epoch in `epochs`, restore the best model so far and
    give the trainer a fresh optimizer (the schedule continues where it was).

    Args:
        trainer: the plain `Trainer` to act on (the optimizer is swapped on it); evaluation must be on.
        epochs: 1-based epoch numbers, as in the reference library's epoch log.
    """

    def __init__(self, trainer: Trainer, epochs: Iterable[int]) -> None:
        epochs = sorted({int(epoch) for epoch in epochs})
        if any(epoch < 1 for epoch in epochs):
            raise ValueError(f"restart epochs are 1-based epoch numbers, got {epochs}")
        super().__init__(trainer)
        self.epochs = epochs
        self.best_score: float | None = None

    def _improves(self, score: float) -> bool:
        if self.best_score is None:
            return True
        return score > self.best_score if self.greater_is_better else score < self.best_score

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "best_score": self.best_score}

    def _checked_state(self, state: Any) -> dict[str, Any]:
        checked = super()._checked_state(state)
        return {**checked, "best_score": _field(state, "best_score", (int, float, type(None)), "a number or null")}

    def _apply(self, checked: dict[str, Any]) -> None:
        super()._apply(checked)
        self.best_score = checked["best_score"]

    def _had_best(self, checked: dict[str, Any]) -> bool:
        return checked["best_score"] is not None

    def _evaluated(self, score: float, state: TrainerState, control: TrainerControl) -> None:
        if self._improves(score):
            self.best_score, self.best = score, take_snapshot(self.model)
        epoch = state.epoch or 0.0
        due = [e for e in self.epochs if abs(epoch - e) < 1e-6 and all(r["epoch"] != e for r in self.restarts)]
        if due and self.best is not None:
            self._restart(state, epoch=due[0], best_score=self.best_score)


class RestartOnPlateauCallback(_RestartCallback):
    """Restart wherever PB would grow, and stop when restarting no longer helps.

    A `DendriteTracker` in `gd` mode decides, with the growth settings of `dendrite_args`: after `patience`
    evaluations without improvement, restart (best model, fresh optimizer); a restart that never
    beats the score it started from is retried `max_tries` times, then training stops, as it does
    after `max_dendrites` restarts that helped. The final model is the best one (pair it with
    `load_best_model_at_end`, as a plain fine-tune does); use it instead of `EarlyStoppingCallback`.

    Args:
        trainer: the plain `Trainer` to act on (the optimizer is swapped on it); evaluation must be on.
        dendrite_args: the growth settings to follow (default: `DendriteTrainingArguments()`'s); its
            candidate fields are ignored. A `DendriteConfig` (the spelling before the settings split)
            gives the training fields it was given.
    """

    def __init__(
        self, trainer: Trainer, dendrite_args: DendriteTrainingArguments | DendriteConfig | None = None
    ) -> None:
        super().__init__(trainer)
        if isinstance(dendrite_args, DendriteConfig):
            dendrite_args = dendrite_args.legacy_training_arguments()
        self.dendrite_args = dataclasses.replace(dendrite_args or DendriteTrainingArguments(), first_growth_epoch=None)
        self.tracker = DendriteTracker(self.dendrite_args, mode="gd", greater_is_better=self.greater_is_better)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "tracker": self.tracker.state_dict()}

    def _checked_state(self, state: Any) -> dict[str, Any]:
        checked = super()._checked_state(state)
        tracker = DendriteTracker(self.dendrite_args, mode="gd", greater_is_better=self.greater_is_better)
        tracker.load_state_dict(_field(state, "tracker", (dict,), "an object"))
        return {**checked, "tracker": tracker}

    def _apply(self, checked: dict[str, Any]) -> None:
        super()._apply(checked)
        self.tracker = checked["tracker"]

    def _had_best(self, checked: dict[str, Any]) -> bool:
        return checked["tracker"].best_score is not None  # a snapshot is taken at every new best score

    def _completed_reason(self, checked: dict[str, Any]) -> str | None:
        tracker = checked["tracker"]
        return (tracker.completed_reason or "restarts complete") if tracker.is_complete else None

    def _evaluated(self, score: float, state: TrainerState, control: TrainerControl) -> None:
        if self.tracker.is_complete:
            return
        decision = self.tracker.step(score, step=state.global_step)
        if decision.new_best:
            self.best = take_snapshot(self.model)
        if decision.action == Action.GROW:
            self._restart(state, best_score=self.tracker.best_score, reason=decision.reason)
        elif decision.restore_best and self.best is not None:
            restore_snapshot(self.model, self.best)
        if decision.action == Action.COMPLETE:
            logger.info("restarts complete: %s", decision.reason)
            control.should_training_stop = True
