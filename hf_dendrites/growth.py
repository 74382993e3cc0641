"""`DendriteGrowth`: a score in, the tracker's decision carried out on a trainer's model.

The tracker (`tracker.py`) decides; this class acts: it keeps the best model's snapshot and
restores it, runs a dendrite phase (cached: all at once, on the trainer's data; streaming:
starts the candidates, then scores them at each evaluation), grows, and gives the trainer a new
optimizer after every change of structure (`optimization.py`). `evaluate` is the one entry point,
as PEFT's AdaLoRA `update_and_allocate`: `DendriteCallback` calls it at every evaluation, and so
can a training loop of your own that owns a `Trainer`.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from transformers import Trainer, TrainerState

from .diagnostics import SignalDiagnostics
from .model import (
    ModelSnapshot,
    candidate_scores,
    dendrite_layers,
    grow,
    mean_candidate_score,
    reset_candidate_statistics,
    restore_snapshot,
    start_candidates,
    sum_candidate_statistics,
    take_snapshot,
)
from .optimization import (
    in_dendrite_phase,
    load_optimizer_state_by_name,
    optimizer_state_by_name,
    rebuild_optimizer,
)
from .phase_data import trainer_dendrite_phase
from .tracker import Action, Decision, DendriteTracker, Phase
from .training_args import DendriteTrainingArguments

logger = logging.getLogger(__name__)

# The growth's own state in a checkpoint (the tracker's, the diagnostics' and the step timer's beside it).
STATE_KEYS = ("phase_start_epoch", "phases_started", "candidate_scores_per_layer", "skipped_candidate_batches")


class DendriteGrowth:
    """Grows dendrites on `trainer`'s model as `dendrite_args` says, one evaluation score at a time."""

    def __init__(self, trainer: Trainer, dendrite_args: DendriteTrainingArguments, greater_is_better: bool) -> None:
        self.trainer = trainer
        self.dendrite_args = dendrite_args
        self.tracker = DendriteTracker(
            dendrite_args, mode=self.model.dendrite_config.mode, greater_is_better=greater_is_better
        )
        self.best: ModelSnapshot | None = None
        self.phase_start_epoch = 0.0
        self.phases_started = 0
        # Per dendrite-phase evaluation, each layer's candidate score: which layers find signal.
        self.candidate_scores_per_layer: list[dict[str, Any]] = []
        # How close the error signal and the candidates come to exact backprop (DendriteTrainer turns it on).
        self.diagnostics = SignalDiagnostics()
        # Training batches the candidates left out because their errors were not finite.
        self.skipped_candidate_batches = 0
        # With reset_optimizer_on_growth=False: the neuron phase's optimizer state by parameter name,
        # kept through a dendrite phase (whose optimizer trains the candidates only).
        self.kept_optimizer_state: dict[str, dict] | None = None

    @property
    def model(self) -> torch.nn.Module:
        return self.trainer.accelerator.unwrap_model(self.trainer.model)

    def evaluate(self, score: float, state: TrainerState) -> Decision:
        """Feed one evaluation score to the tracker and carry out its decision (a new optimizer included)."""
        names = None  # of the parameters the neuron-phase optimizer knows, before growth may replace them
        if self.tracker.phase == Phase.DENDRITE:
            decision = self._dendrite_phase_evaluation(score, state)
        else:
            if not self.dendrite_args.reset_optimizer_on_growth:
                names = {id(parameter): name for name, parameter in self.model.named_parameters()}
            decision = self._neuron_phase_evaluation(score, state)
        if decision.action != Action.CONTINUE or decision.restore_best:
            self._rebuild_optimizer(names)
            logger.info("dendrites: %s (%s)", decision.action, decision.reason)
        return decision

    def finish(self, reason: str) -> None:
        """End growth (if the tracker has not) and leave the model at its best."""
        if not self.tracker.is_complete:
            logger.info("dendrites: %s", self.tracker.finish(reason).reason)
        self.restore_best()

    def restore_best(self) -> None:
        if self.best is not None:
            restore_snapshot(self.model, self.best)

    def state_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in STATE_KEYS}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.phase_start_epoch = float(state["phase_start_epoch"])
        self.phases_started = int(state["phases_started"])
        self.candidate_scores_per_layer = list(state.get("candidate_scores_per_layer", []))
        self.skipped_candidate_batches = int(state.get("skipped_candidate_batches", 0))

    # ------------------------------------------------------------------ the two phases

    def _candidate_generator(self) -> torch.Generator:
        """Candidates of the k-th dendrite phase of a run start from the same weights on every rank."""
        return torch.Generator().manual_seed(self.trainer.args.seed * 1000 + self.phases_started)

    def _neuron_phase_evaluation(self, score: float, state: TrainerState) -> Decision:
        first = self.dendrite_args.first_growth_epoch
        scheduled = first is not None and self.phases_started == 0 and float(state.epoch or 0.0) >= first - 1e-9
        decision = self.tracker.step(score, step=state.global_step, force_growth=scheduled)
        if decision.new_best:
            self.best = take_snapshot(self.model)
        if decision.restore_best:
            self.restore_best()
        if decision.action == Action.START_DENDRITE_PHASE:
            if self.dendrite_args.grow_from == "best" and not decision.restore_best:
                self.restore_best()
            if self.dendrite_args.candidate_learner == "cached":
                return self._cached_dendrite_phase(decision, score, state)
            start_candidates(self.model, generator=self._candidate_generator(), arguments=self.dendrite_args)
            self.phases_started += 1
            self.phase_start_epoch = float(state.epoch or 0.0)
        elif decision.action == Action.GROW:  # gd: no dendrite phase
            if self.dendrite_args.grow_from == "best" and not decision.restore_best:
                self.restore_best()
            grow(self.model, generator=self._candidate_generator(), init_scale=self.dendrite_args.candidate_init_scale)
            self.phases_started += 1
        return decision

    def _cached_dendrite_phase(self, start: Decision, score: float, state: TrainerState) -> Decision:
        """The whole dendrite phase at this evaluation (`dendrite_phase.py`), then growth: one decision
        that carries the stall's bookkeeping (new best, restore) and the growth."""
        report = trainer_dendrite_phase(self.trainer, self.model, self.dendrite_args, self._candidate_generator())
        self.phases_started += 1
        self.phase_start_epoch = float(state.epoch or 0.0)
        self.candidate_scores_per_layer.append(
            {"dendrite_phase": self.phases_started, "step": state.global_step, **report.to_dict()}
        )
        grown = self.tracker.candidate_step(report.score, task_score=score, step=state.global_step, force_grow=True)
        grow(self.model)
        return Decision(grown.action, new_best=start.new_best, restore_best=start.restore_best, reason=grown.reason)

    def _dendrite_phase_evaluation(self, score: float, state: TrainerState) -> Decision:
        """A streaming dendrite phase: score the candidates trained since the last evaluation; grow or go on."""
        accelerator = self.trainer.accelerator
        if accelerator.num_processes > 1:  # every rank picks the same candidates
            sum_candidate_statistics(self.model, lambda t: accelerator.reduce(t.clone(), reduction="sum"))
        skipped = max((layer.skipped_candidate_batches for layer in dendrite_layers(self.model).values()), default=0)
        if skipped:
            self.skipped_candidate_batches += skipped
            logger.warning(
                "dendrites: candidates skipped %d training batch(es) with non-finite errors or outputs since the "
                "last evaluation (step %d)",
                skipped,
                state.global_step,
            )
        self.diagnostics.measure_candidates(self.model, self.phases_started, state.global_step)
        self.candidate_scores_per_layer.append(
            {"dendrite_phase": self.phases_started, "step": state.global_step, "scores": candidate_scores(self.model)}
        )
        epochs = float(state.epoch or 0.0) - self.phase_start_epoch
        capped = epochs >= self.dendrite_args.max_candidate_epochs - 1e-9
        decision = self.tracker.candidate_step(
            mean_candidate_score(self.model), task_score=score, step=state.global_step, force_grow=capped
        )
        if decision.action == Action.GROW:
            grow(self.model)
        else:
            reset_candidate_statistics(self.model)
        return decision

    def _rebuild_optimizer(self, names: dict[int, str] | None) -> None:
        """A new optimizer for the new phase or structure. With `names` (reset_optimizer_on_growth=False, leaving
        a neuron phase) the old one's state is kept aside for the next neuron phase's optimizer, by name."""
        if names is not None:
            self.kept_optimizer_state = optimizer_state_by_name(self.trainer.optimizer, names)
        rebuild_optimizer(self.trainer, self.dendrite_args)
        if self.kept_optimizer_state is not None and not in_dendrite_phase(self.model):
            restored = load_optimizer_state_by_name(self.trainer.optimizer, self.model, self.kept_optimizer_state)
            logger.info("dendrites: the optimizer state of %d parameter(s) carries over", restored)
            self.kept_optimizer_state = None
