"""`RestartFromBestCallback`: go back to the best model with a fresh optimizer at chosen epochs.

What a growth does to a run besides adding a dendrite: the reference library reloads its best
model and builds a new optimizer (fresh AdamW moments; the learning-rate schedule continues) at
every restructure, and so does `DendriteTrainer` with `grow_from="best"`. This callback does only
that, without dendrites, so a study can tell how much of a gain the restarts alone explain.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from .callbacks import greater_is_better, metric_key
from .model import ModelSnapshot, restore_snapshot, take_snapshot
from .optimization import rebuild_optimizer

logger = logging.getLogger(__name__)


class RestartFromBestCallback(TrainerCallback):
    """After the evaluation that ends each epoch in `epochs`, restore the best model so far and
    give the trainer a fresh optimizer (the schedule continues where it was).

    Args:
        trainer: the trainer to act on (the optimizer is swapped on it).
        epochs: 1-based epoch numbers, as in the reference library's epoch log.
    """

    def __init__(self, trainer: Trainer, epochs: Iterable[int]) -> None:
        self.trainer = trainer
        self.epochs = sorted({int(epoch) for epoch in epochs})
        if any(epoch < 1 for epoch in self.epochs):
            raise ValueError(f"restart epochs are 1-based epoch numbers, got {self.epochs}")
        self.metric_key = metric_key(trainer.args)
        self.greater_is_better = greater_is_better(trainer.args)
        self.best_score: float | None = None
        self.best: ModelSnapshot | None = None
        self.restarts: list[dict[str, Any]] = []

    @property
    def model(self) -> torch.nn.Module:
        return self.trainer.accelerator.unwrap_model(self.trainer.model)

    def _improves(self, score: float) -> bool:
        if self.best_score is None:
            return True
        return score > self.best_score if self.greater_is_better else score < self.best_score

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> TrainerControl:
        if not metrics or self.metric_key not in metrics:
            return control
        score = float(metrics[self.metric_key])
        if self._improves(score):
            self.best_score, self.best = score, take_snapshot(self.model)
        epoch = state.epoch or 0.0
        due = [e for e in self.epochs if abs(epoch - e) < 1e-6 and all(r["epoch"] != e for r in self.restarts)]
        if due and self.best is not None:
            restore_snapshot(self.model, self.best)
            rebuild_optimizer(self.trainer)
            self.restarts.append({"epoch": due[0], "step": state.global_step, "best_score": self.best_score})
            logger.info("restart at epoch %d: best model restored (%s), fresh optimizer", due[0], self.best_score)
        return control
