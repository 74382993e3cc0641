"""Restarts without dendrites: go back to the best model with a fresh optimizer.

What a growth does to a run besides adding a dendrite: the reference library reloads its best
model and builds a new optimizer (fresh AdamW moments; the learning-rate schedule continues) at
every restructure, and so does `DendriteTrainer` with `grow_from="best"`. The growth study found
that this restart, not the dendrite, is what PB gains over an early-stopped fine-tune on full-width
models, so it is offered on its own:

- `RestartFromBestCallback` restarts at chosen epochs (a study's control: "restart where that PB
  run grew");
- `RestartOnPlateauCallback` restarts where PB would grow: the same `DendriteTracker` policy
  (`patience`, `max_dendrites` as the number of restarts, `max_tries`, thresholds), with the
  dendrite taken out, and stops training when a restart no longer helps.

Both write their state into every checkpoint (`restart_state.json` and the best model in
`restart_best.safetensors`), so a resumed run restarts from the same best model.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from .callbacks import greater_is_better, metric_key
from .checkpoints import write_text_atomically
from .config import DendriteConfig
from .model import ModelSnapshot, restore_snapshot, take_snapshot
from .optimization import rebuild_optimizer
from .tracker import Action, DendriteTracker

logger = logging.getLogger(__name__)

RESTART_STATE_FILE = "restart_state.json"
RESTART_BEST_FILE = "restart_best.safetensors"


class _RestartCallback(TrainerCallback):
    """What both restart callbacks share: the best model so far, the restart itself, checkpoints."""

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        self.metric_key = metric_key(trainer.args)
        self.best: ModelSnapshot | None = None
        self.restarts: list[dict[str, Any]] = []

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

    def state_dict(self) -> dict[str, Any]:
        return {"restarts": self.restarts}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.restarts = list(state["restarts"])

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if folder.is_dir() and self.trainer.is_world_process_zero():
            if self.best is not None:  # the weights first: a checkpoint with the state file is complete
                save_file(self.best.state_dict, folder / RESTART_BEST_FILE, metadata={"format": "pt"})
            write_text_atomically(folder / RESTART_STATE_FILE, json.dumps(self.state_dict(), indent=2) + "\n")
        return control

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        if state.global_step == 0:
            return control
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        state_file = folder / RESTART_STATE_FILE
        if not state_file.is_file():
            raise FileNotFoundError(
                f"{state_file} not found: this checkpoint was not written with {type(self).__name__}, so its "
                "restarts cannot resume (start a new run, or resume without the callback)"
            )
        saved = json.loads(state_file.read_text(encoding="utf-8"))
        best_file = folder / RESTART_BEST_FILE
        best = ModelSnapshot({}, load_file(best_file)) if best_file.is_file() else None
        self.load_state_dict(saved)
        self.best = best
        return control


class RestartFromBestCallback(_RestartCallback):
    """After the evaluation that ends each epoch in `epochs`, restore the best model so far and
    give the trainer a fresh optimizer (the schedule continues where it was).

    Args:
        trainer: the trainer to act on (the optimizer is swapped on it).
        epochs: 1-based epoch numbers, as in the reference library's epoch log.
    """

    def __init__(self, trainer: Trainer, epochs: Iterable[int]) -> None:
        super().__init__(trainer)
        self.epochs = sorted({int(epoch) for epoch in epochs})
        if any(epoch < 1 for epoch in self.epochs):
            raise ValueError(f"restart epochs are 1-based epoch numbers, got {self.epochs}")
        self.greater_is_better = greater_is_better(trainer.args)
        self.best_score: float | None = None

    def _improves(self, score: float) -> bool:
        if self.best_score is None:
            return True
        return score > self.best_score if self.greater_is_better else score < self.best_score

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "best_score": self.best_score}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.best_score = state["best_score"]

    def _evaluated(self, score: float, state: TrainerState, control: TrainerControl) -> None:
        if self._improves(score):
            self.best_score, self.best = score, take_snapshot(self.model)
        epoch = state.epoch or 0.0
        due = [e for e in self.epochs if abs(epoch - e) < 1e-6 and all(r["epoch"] != e for r in self.restarts)]
        if due and self.best is not None:
            self._restart(state, epoch=due[0], best_score=self.best_score)


class RestartOnPlateauCallback(_RestartCallback):
    """Restart wherever PB would grow, and stop when restarting no longer helps.

    A `DendriteTracker` in `gd` mode decides, with `config`'s growth settings: after `patience`
    evaluations without improvement, restart (best model, fresh optimizer); a restart that never
    beats the score it started from is retried `max_tries` times, then training stops, as it does
    after `max_dendrites` restarts that helped. The final model is the best one (pair it with
    `load_best_model_at_end`, as a plain fine-tune does); use it instead of `EarlyStoppingCallback`.

    Args:
        trainer: the trainer to act on (the optimizer is swapped on it).
        config: the growth settings to follow (default: `DendriteConfig()`'s); its other fields
            are ignored.
    """

    def __init__(self, trainer: Trainer, config: DendriteConfig | None = None) -> None:
        super().__init__(trainer)
        self.config = dataclasses.replace(config or DendriteConfig(), mode="gd", first_growth_epoch=None)
        self.tracker = DendriteTracker(self.config, greater_is_better=greater_is_better(trainer.args))

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "tracker": self.tracker.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tracker.load_state_dict(state["tracker"])
        super().load_state_dict(state)

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
