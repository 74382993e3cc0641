"""`DendriteCallback`: the Trainer's events wired to dendrite growth.

At every evaluation the callback hands the score to a `DendriteGrowth` (`growth.py`), which asks
the tracker for a decision and carries it out on the trainer's model: snapshot or restore the best
model, run a dendrite phase, grow, rebuild the optimizer. The callback stops training when growth
is complete, logs the phase, dendrite count, candidate correlation and parameter count through
`trainer.log` (so every `report_to` integration sees them), draws `dendrite_history.png` in
`output_dir`, times the steps, and writes the dendrite state into every checkpoint.

It works with any `Trainer` (pass the trainer: the optimizer must be swapped on it, see
`optimization.py`); `DendriteTrainer` adds it for you and also makes resuming from a checkpoint
rebuild the saved structure.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from .checkpoints import (
    BEST_FOLDER,
    STATE_FILE,
    read_kept_optimizer_state,
    save_kept_optimizer_state,
    write_folder_atomically,
    write_text_atomically,
)
from .diagnostics import SignalDiagnostics
from .growth import DendriteGrowth
from .model import ModelSnapshot, configure_candidate_rows, num_dendrites, parameter_report
from .optimization import in_dendrite_phase
from .plotting import HISTORY_PLOT, plot_history
from .serialization import load_snapshot, save_snapshot
from .step_timer import StepTimer
from .tracker import Action, Decision
from .training_args import DendriteTrainingArguments

logger = logging.getLogger(__name__)


def metric_key(args: TrainingArguments) -> str:
    """The evaluation key of the score that drives growth (Trainer's own convention)."""
    name = args.metric_for_best_model or "loss"
    return name if name.startswith("eval_") else f"eval_{name}"


def greater_is_better(args: TrainingArguments) -> bool:
    if args.greater_is_better is not None:
        return bool(args.greater_is_better)
    return not metric_key(args).endswith("loss")


class DendriteCallback(TrainerCallback):
    """Drives dendrite growth from `metric_for_best_model` (and `greater_is_better`).

    The callback wires the Trainer's events to a `DendriteGrowth` (`growth.py`, which decides with
    the tracker and acts on the model) and adds what belongs to the run: the checks before training,
    step timing, logs, the history plot and the dendrite state of every checkpoint.

    Args:
        trainer: the trainer whose model has dendrites (`add_dendrites` was called on it).
        plot: draw `dendrite_history.png` in `output_dir` after every evaluation.
        dendrite_args: how to grow and train candidates; default: the training fields given to the
            model's `DendriteConfig` the deprecated way, over `DendriteTrainingArguments()`.
    """

    def __init__(
        self, trainer: Trainer, plot: bool = True, dendrite_args: DendriteTrainingArguments | None = None
    ) -> None:
        model = trainer.accelerator.unwrap_model(trainer.model)
        if getattr(model, "dendrite_config", None) is None:
            raise ValueError("DendriteCallback needs a model prepared with add_dendrites(model, config)")
        if dendrite_args is not None and not isinstance(dendrite_args, DendriteTrainingArguments):
            raise TypeError(f"dendrite_args must be a DendriteTrainingArguments, got {type(dendrite_args).__name__}")
        self.trainer = trainer
        self.plot = plot
        # A plain Trainer saves its checkpoint, then calls on_save; DendriteTrainer writes the
        # dendrite state inside its own save (so a checkpoint is complete before rotation) instead.
        self.save_in_on_save = True
        # DendriteTrainer's training step does two things a plain Trainer's cannot, and it says so here:
        # it averages across processes the gradients of parameters created after DDP wrapped the model
        # (dendrites, candidates), and it computes the errors of the error signals other than backprop.
        self.dendrite_training_step = False
        self.metric_key = metric_key(trainer.args)
        self.growth = DendriteGrowth(
            trainer,
            dendrite_args or model.dendrite_config.legacy_training_arguments(),
            greater_is_better=greater_is_better(trainer.args),
        )
        self.timer = StepTimer()

    # What the run records, kept by the growth (results.json and the tests read them here).
    tracker = property(lambda self: self.growth.tracker)
    dendrite_args = property(lambda self: self.growth.dendrite_args)
    candidate_scores_per_layer = property(lambda self: self.growth.candidate_scores_per_layer)

    @property
    def diagnostics(self) -> SignalDiagnostics:
        return self.growth.diagnostics

    @diagnostics.setter
    def diagnostics(self, diagnostics: SignalDiagnostics) -> None:
        self.growth.diagnostics = diagnostics

    @property
    def model(self) -> torch.nn.Module:
        return self.trainer.accelerator.unwrap_model(self.trainer.model)

    def _score(self, metrics: dict[str, float]) -> float:
        if self.metric_key not in metrics:
            raise ValueError(
                f"metric_for_best_model={self.trainer.args.metric_for_best_model!r} is not among the evaluation "
                f"metrics {sorted(metrics)}; set it to one of them"
            )
        return float(metrics[self.metric_key])

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> TrainerControl:
        if metrics is None or self.tracker.is_complete:
            return control
        decision = self.growth.evaluate(self._score(metrics), state)
        if decision.action == Action.COMPLETE:
            control.should_training_stop = True
        self._log(decision)
        self._plot(args)
        return control

    def _log(self, decision: Decision) -> None:
        report = parameter_report(self.model)
        logs: dict[str, float] = {
            "dendrites/count": float(num_dendrites(self.model)),
            "dendrites/dendrite_phase": float(in_dendrite_phase(self.model)),
            "dendrites/parameters": float(report["total"]),
            "dendrites/dendrite_parameters": float(report["dendrites"]),
            "dendrites/grew": float(decision.action == Action.GROW),
            "dendrites/reverted": float(decision.restore_best),
        }
        candidate_score = self.tracker.history[-1]["candidate_score"] if self.tracker.history else None
        if candidate_score is not None:
            logs["dendrites/candidate_correlation"] = float(candidate_score)
            logs["dendrites/skipped_candidate_batches"] = float(self.growth.skipped_candidate_batches)
            last = self.candidate_scores_per_layer[-1] if self.candidate_scores_per_layer else {}
            if "chance" in last:
                logs["dendrites/candidate_chance"] = float(last["chance"])
        if self.tracker.best_score is not None:
            logs["dendrites/best_score"] = float(self.tracker.best_score)
        self.trainer.log(logs)

    def _plot(self, args: TrainingArguments) -> None:
        if not self.plot or not self.trainer.is_world_process_zero():
            return
        os.makedirs(args.output_dir, exist_ok=True)
        plot_history(self.tracker.history, Path(args.output_dir) / HISTORY_PLOT, self.metric_key)

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        signal = self.dendrite_args.error_signal
        if signal != "backprop" and not self.dendrite_training_step:
            raise ValueError(
                f"error_signal={signal!r} needs DendriteTrainer; a plain Trainer trains candidates by backprop"
            )
        if self.trainer.accelerator.num_processes > 1 and not self.dendrite_training_step:
            raise ValueError(
                "several processes need DendriteTrainer (it averages the gradients of dendrites grown after the "
                "model was wrapped); a plain Trainer with DendriteCallback runs in one process"
            )
        if (
            self.model.dendrite_config.mode == "pb"
            and self.dendrite_args.candidate_learner == "streaming"
            and args.per_device_train_batch_size < 2
        ):
            raise ValueError(
                "candidate_learner='streaming' correlates candidates with the error within each batch, and layers "
                "that see one row per example (pooler, classifier, the last layer at [CLS]) get a single row from a "
                f"batch of per_device_train_batch_size={args.per_device_train_batch_size}: their candidates could "
                "never train. Use the default candidate_learner='cached' or a batch of 2 or more"
            )
        if not self.dendrite_training_step and state.global_step > 0:
            self._check_plain_trainer_resume(state.global_step)
        configure_candidate_rows(self.model, self.dendrite_args)  # a resume inside a dendrite phase included
        return control

    def _check_plain_trainer_resume(self, step: int) -> None:
        """A plain Trainer resumes weights and optimizer only, never the dendrite state.

        Without `load_state` the tracker would start over at step `step` on a model without the
        saved dendrites; with it, a finished run would train on to `max_steps`. Both are refused.
        """
        if not self.tracker.history:
            raise ValueError(
                f"a plain Trainer is resuming at step {step}, but DendriteCallback holds no dendrite state: growth "
                "would start over on a model without the checkpoint's dendrites. Resume with DendriteTrainer, or call "
                "callback.load_state(checkpoint_folder) on a model rebuilt with the checkpoint's dendrites first"
            )
        if self.tracker.is_complete:
            raise ValueError(
                f"the dendrite state loaded for step {step} is from a run that had finished "
                f"({self.tracker.completed_reason}): nothing is left to train. Load its model and start a new run "
                "to train further"
            )

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        self.timer.start(self.tracker.phase.value, self.tracker.num_dendrites)
        return control

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        self.timer.stop()
        return control

    # What a step costs per phase and size (`step_timer.py`).
    step_time = property(lambda self: self.timer.step_time)
    phase_seconds = property(lambda self: self.timer.phase_seconds)
    phase_steps = property(lambda self: self.timer.phase_steps)

    # ------------------------------------------------------------------ end of training, checkpoints

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        """Training ends with the best model, whichever way it ended."""
        self.growth.finish("training budget used up")
        self._plot(args)
        return control

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        if self.save_in_on_save and self.trainer.is_world_process_zero():
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                self.save_state(folder)
        return control

    def state_dict(self) -> dict[str, Any]:
        return {
            "dendrite_args": self.dendrite_args.to_dict(),  # the run's settings (the model keeps none of them)
            "tracker": self.tracker.state_dict(),
            **self.growth.state_dict(),
            "step_time": self.timer.state_dict(),
            **self.diagnostics.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        missing = {"tracker", "phase_start_epoch", "phases_started"} - set(state)
        if missing:
            raise ValueError(f"dendrite state is missing {sorted(missing)}")
        self.tracker.load_state_dict(state["tracker"])  # logs growth settings that changed
        self._log_changed_candidate_settings(state.get("dendrite_args") or {})
        self.growth.load_state_dict(state)
        self.timer.load_state_dict(state.get("step_time", {}))
        self.diagnostics.load_state_dict(state)
        self.growth.kept_optimizer_state = state.get("kept_optimizer_state")  # read_state adds it, from its own file

    def _log_changed_candidate_settings(self, stored: dict[str, Any]) -> None:
        """Resuming follows this run's settings; say which differ from the checkpoint's (the tracker says so for
        the growth policy's own)."""
        tracked = set(self.tracker.settings.__dataclass_fields__)
        for name, current in self.dendrite_args.to_dict().items():
            if name in stored and name not in tracked and stored[name] != current:
                logger.warning(
                    "dendrites: resuming with %s=%r (the checkpoint was trained with %r)", name, current, stored[name]
                )

    def save_state(self, folder: str | os.PathLike) -> None:
        """Write the best snapshot, then the tracker state, into a checkpoint folder.

        Both by rename, the state file last: a checkpoint with `dendrite_state.json` is complete.
        """
        folder = Path(folder)
        if self.growth.best is not None:
            best = self.growth.best
            write_folder_atomically(folder / BEST_FOLDER, lambda target: save_snapshot(self.model, best, target))
        save_kept_optimizer_state(folder, self.growth.kept_optimizer_state)
        write_text_atomically(folder / STATE_FILE, json.dumps(self.state_dict(), indent=2) + "\n")

    def read_state(self, folder: str | os.PathLike) -> tuple[dict[str, Any], ModelSnapshot | None]:
        """(state, best snapshot) of a checkpoint, read and checked without changing anything."""
        folder = Path(folder)
        state_file = folder / STATE_FILE
        if not state_file.is_file():
            raise FileNotFoundError(
                f"{state_file} not found: this checkpoint was not written by a dendrite trainer (or its save was "
                "interrupted), so growth cannot resume from it"
            )
        try:
            state = json.loads(state_file.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{state_file} is not valid JSON: {error}") from error
        if not isinstance(state, dict):
            raise ValueError(f"{state_file} holds a JSON {type(state).__name__}, not the dendrite state object")
        best_folder = folder / BEST_FOLDER
        best = load_snapshot(best_folder) if best_folder.is_dir() else None
        best_score = state.get("tracker", {}).get("best_score") if isinstance(state.get("tracker"), dict) else None
        if best is None and best_score is not None and not math.isnan(best_score):
            raise FileNotFoundError(f"{best_folder} is missing: the checkpoint's best model cannot be restored")
        missing = {"tracker", "phase_start_epoch", "phases_started"} - set(state)
        if missing:
            raise ValueError(f"{state_file}: the dendrite state is missing {sorted(missing)}")
        self.tracker.check_state_dict(state["tracker"])
        if not self.dendrite_args.reset_optimizer_on_growth:
            state["kept_optimizer_state"] = read_kept_optimizer_state(folder)
        return state, best

    def load_state(self, folder: str | os.PathLike) -> None:
        """Read what `save_state` wrote (a checkpoint without it is an error: it cannot resume growth)."""
        state, best = self.read_state(folder)
        self.apply_state(state, best)

    def apply_state(self, state: dict[str, Any], best: ModelSnapshot | None) -> None:
        self.load_state_dict(state)
        self.growth.best = best
