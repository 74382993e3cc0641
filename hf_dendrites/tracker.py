"""Score tracker that decides when to add dendrites (Perforated Backpropagation).

The tracker is a pure-Python state machine: the trainer feeds it one evaluation
score at a time and acts on the returned :class:`Decision` (snapshot, restore,
start a dendrite phase, grow, stop).  It never touches a model, so the policy
can be tested without torch and checkpointed as plain JSON.  Its settings are
the growth fields of :class:`~hf_dendrites.training_args.DendriteTrainingArguments`
and the dendrite mode.

Policy
------
* **Improvement**: ``score`` improves on ``ref`` only if ``delta`` exceeds both
  ``improvement_threshold_abs`` and ``improvement_threshold * abs(ref)``, where
  ``delta`` is ``score - ref`` (greater is better) or ``ref - score``.  The
  first score ever always improves.
* **Neuron phase** (:meth:`DendriteTracker.step`): the task metric is watched.
  A *stall* is ``evals_without_improvement >= patience`` and
  ``evals_in_phase >= min_evals_per_phase``.  On a stall:

  a. if the last growth never produced a new best, the best snapshot is
     restored (``restore_best``) and the dendrite is retried up to
     ``max_tries`` times, then training completes;
  b. elif ``num_dendrites >= max_dendrites``: restore best and complete;
  c. else start a dendrite phase (mode ``"pb"``) or grow directly (``"gd"``).

  Without a stall the phase continues, unless the trainer forces growth
  (``force_growth``, e.g. ``first_growth_epoch``): then c. applies when the
  last dendrite, if any, has proven itself and there is room.

* **Dendrite phase** (:meth:`DendriteTracker.candidate_step`, mode ``"pb"``
  only): the candidate score (a correlation, greater is better) is watched
  with the same thresholds; after ``candidate_patience`` evaluations without
  improvement (or when the trainer forces it) one dendrite is grown and a new
  neuron phase starts.
* Every growth records the global best as ``score_before_growth``; a growth is
  "useful" once a later neuron phase beats it, which also resets ``tries``.
* Whenever a decision has ``restore_best=True`` the tracker sets
  ``num_dendrites`` to ``best_num_dendrites``, mirroring the trainer restoring
  the best snapshot.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

from .config import DendriteConfig
from .tracker_types import (
    STATE_FORMAT_VERSION,
    Action,
    Decision,
    Phase,
    TrackerSettings,
    TrackerState,
    check_score,
    check_step,
    fmt,
    validated_state,
)
from .training_args import DendriteTrainingArguments

logger = logging.getLogger(__name__)

__all__ = ["Action", "Decision", "DendriteTracker", "Phase", "TrackerSettings", "TrackerState"]


class DendriteTracker:
    """Decides, one evaluation at a time, when to add dendrites and when to stop (policy: module docstring).

    ``settings`` and ``state`` describe it fully; :meth:`state_dict` checkpoints both as JSON and a
    tracker that loads it decides identically.  ``state`` is read-only by convention: change it only
    through :meth:`load_state_dict`, which validates it.
    """

    def __init__(
        self,
        arguments: DendriteTrainingArguments | DendriteConfig | None = None,
        *,
        mode: str | None = None,
        greater_is_better: bool = True,
    ) -> None:
        """`arguments`: the growth settings (default: `DendriteTrainingArguments()`); `mode` is the model's
        `DendriteConfig.mode` (default 'pb'). A `DendriteConfig` in place of `arguments` (the spelling
        before the settings split) gives both: its mode and the training fields it was given."""
        if isinstance(arguments, DendriteConfig):
            mode = arguments.mode if mode is None else mode
            arguments = arguments.legacy_training_arguments()
        arguments = DendriteTrainingArguments() if arguments is None else arguments
        self.settings = TrackerSettings.from_arguments(arguments, mode or "pb", greater_is_better)
        self.state = TrackerState()

    phase = property(lambda self: self.state.phase, doc="The current :class:`Phase`.")
    is_complete = property(lambda self: self.state.phase == Phase.COMPLETE)
    num_dendrites = property(lambda self: self.state.num_dendrites, doc="Dendrites after the last decision.")
    best_score = property(lambda self: self.state.best_score)
    completed_reason = property(lambda self: self.state.completed_reason)
    history = property(lambda self: [dict(r) for r in self.state.history], doc="One record per decision (copies).")

    def _improves(self, score: float, ref: float | None, greater_is_better: bool) -> bool:
        """Thresholded improvement test; both thresholds must be beaten."""
        if ref is None:
            return True
        delta = score - ref if greater_is_better else ref - score
        cfg = self.settings
        return delta > cfg.improvement_threshold_abs and delta > cfg.improvement_threshold * abs(ref)

    def _new_phase(self, phase: Phase) -> None:
        self.state.phase, self.state.best_candidate_score = phase, None
        self.state.evals_in_phase = self.state.evals_without_improvement = 0

    def _grow(self) -> None:
        """Bookkeeping for one added dendrite; starts a fresh neuron phase."""
        s = self.state
        s.score_before_growth, s.num_dendrites, s.improved_since_growth = s.best_score, s.num_dendrites + 1, False
        self._new_phase(Phase.NEURON)
        logger.info("Growing dendrite %d (best score before growth %s)", s.num_dendrites, fmt(s.best_score))

    def _grow_or_start(self) -> Action:
        """Next structural action after a neuron-phase stall, applying its bookkeeping."""
        if self.settings.mode == "gd":
            self._grow()
            return Action.GROW
        self._new_phase(Phase.DENDRITE)
        logger.info("Starting dendrite phase for dendrite %d", self.state.num_dendrites + 1)
        return Action.START_DENDRITE_PHASE

    def _complete(self, reason: str) -> None:
        self.state.phase, self.state.completed_reason = Phase.COMPLETE, reason
        logger.info("Dendrite training complete: %s", reason)

    def _record(self, step: Any, phase: Phase, score: Any, candidate: Any, decision: Decision) -> Decision:
        history = self.state.history
        record = dict(eval=len(history), step=step, phase=phase.value, score=score, candidate_score=candidate)
        record.update(num_dendrites=self.state.num_dendrites, **dataclasses.asdict(decision))
        record["action"] = decision.action.value  # the plain string, as in JSON
        history.append(record)
        logger.debug("tracker eval %d: %s", len(history) - 1, record)
        return decision

    def step(self, score: float, step: int | None = None, force_growth: bool = False) -> Decision:
        """Feed one neuron-phase evaluation of the task metric and get the next action.

        ``force_growth`` lets the trainer grow before a stall (e.g. ``first_growth_epoch``): where the
        policy would continue, it grows (or starts a dendrite phase) when there is room and the last
        dendrite, if any, has proven itself.
        """
        s, cfg, phase = self.state, self.settings, self.state.phase
        if phase != Phase.NEURON:
            hint = " (use candidate_step())" if phase == Phase.DENDRITE else ""
            raise RuntimeError(f"step() is only valid in the neuron phase; tracker is in the '{phase}' phase{hint}")
        score, step = check_score("score", score), check_step(step)
        s.evals_in_phase += 1
        new_best = self._improves(score, s.best_score, cfg.greater_is_better)
        if new_best:
            s.best_score, s.best_num_dendrites, s.evals_without_improvement = score, s.num_dendrites, 0
            before = s.score_before_growth  # the best score of the architecture before the last growth
            unproven = s.num_dendrites > 0 and before is not None and not s.improved_since_growth
            if unproven and self._improves(score, before, cfg.greater_is_better):
                s.improved_since_growth, s.tries = True, 0  # the last growth was useful
                logger.info("Dendrite %d improved on %s (now %s)", s.num_dendrites, fmt(before), fmt(score))
        else:
            s.evals_without_improvement += 1

        restore, stalls = False, s.evals_without_improvement
        proven = s.score_before_growth is None or s.improved_since_growth
        forced = force_growth and proven and s.num_dendrites < cfg.max_dendrites
        if forced and (stalls < cfg.patience or s.evals_in_phase < cfg.min_evals_per_phase):
            action = self._grow_or_start()
            what = "growing dendrite" if action == Action.GROW else "starting dendrite phase for dendrite"
            reason = f"growth forced by the trainer before a stall; {what} {s.num_dendrites + (action != Action.GROW)}"
        elif stalls < cfg.patience or s.evals_in_phase < cfg.min_evals_per_phase:
            action = Action.CONTINUE
            reason = f"no improvement on {fmt(s.best_score)} for {stalls}/{cfg.patience} evaluation(s)"
            if new_best:
                reason = f"new best {fmt(score)} with {s.num_dendrites} dendrite(s)"
        elif s.score_before_growth is not None and not s.improved_since_growth:
            # (a) The last dendrite never beat the architecture it was added to: restore the best, maybe retry.
            restore, failed, s.num_dendrites = True, s.num_dendrites, s.best_num_dendrites
            if s.tries < cfg.max_tries:
                s.tries += 1
                action = self._grow_or_start()  # in gd mode this records a new score_before_growth
                retry = f"; restored best ({s.best_num_dendrites} dendrite(s)), retry {s.tries} of {cfg.max_tries}"
            else:
                action, retry = Action.COMPLETE, f" after {s.tries + 1} tries (max_tries={cfg.max_tries})"
            reason = f"dendrite {failed} did not improve on {fmt(s.score_before_growth)}{retry}"
        elif s.num_dendrites >= cfg.max_dendrites:
            # (b) No room to grow: restore the best.
            restore, s.num_dendrites = True, s.best_num_dendrites
            action, reason = Action.COMPLETE, f"max_dendrites ({cfg.max_dendrites}) reached"
        else:
            # (c) Grow; growing from the best snapshot is the trainer's policy.
            action = self._grow_or_start()
            what = f"growing dendrite {s.num_dendrites}"
            if action == Action.START_DENDRITE_PHASE:
                what = f"starting dendrite phase for dendrite {s.num_dendrites + 1}"
            reason = f"neuron phase stalled ({stalls} evaluation(s) without improvement); {what}"
        if action == Action.COMPLETE:
            self._complete(reason)
        return self._record(step, phase, score, None, Decision(action, new_best, restore, reason))

    def candidate_step(
        self, candidate_score: float, task_score: float | None = None, step: int | None = None, force_grow: bool = False
    ) -> Decision:
        """Feed one dendrite-phase evaluation of the candidate score (greater is better).

        ``force_grow`` lets the trainer end the phase (e.g. epoch cap reached).
        ``task_score`` is only recorded for plotting; it never becomes a best.
        """
        s, patience, phase = self.state, self.settings.candidate_patience, self.state.phase
        if phase != Phase.DENDRITE:
            raise RuntimeError(
                f"candidate_step() is only valid in the dendrite phase; tracker is in the '{phase}' phase"
            )
        candidate_score = check_score("candidate_score", candidate_score)
        task_score = None if task_score is None else check_score("task_score", task_score)
        step = check_step(step)
        s.evals_in_phase += 1
        if self._improves(candidate_score, s.best_candidate_score, True):
            s.best_candidate_score, s.evals_without_improvement = candidate_score, 0
        else:
            s.evals_without_improvement += 1

        best, stalls = fmt(s.best_candidate_score), s.evals_without_improvement
        if force_grow or stalls >= patience:
            why = "forced by trainer" if force_grow else f"candidate score stalled for {stalls} evaluation(s)"
            self._grow()
            action, reason = Action.GROW, f"{why} (best candidate {best}); growing dendrite {s.num_dendrites}"
        else:
            action, reason = Action.CONTINUE, f"candidate best {best}, {stalls}/{patience} without improvement"
        return self._record(step, phase, task_score, candidate_score, Decision(action, reason=reason))

    def finish(self, reason: str) -> Decision:
        """End training early (budget exhausted): restore the best snapshot if there is one.

        On a complete tracker: a no-op that returns a ``complete`` decision without ``restore_best``
        (the restore already happened) and adds no history record.
        """
        s, phase = self.state, self.state.phase
        if phase == Phase.COMPLETE:
            return Decision(Action.COMPLETE, reason=s.completed_reason or reason)
        restore = s.best_score is not None
        if restore:
            s.num_dendrites = s.best_num_dendrites
        self._new_phase(Phase.COMPLETE)
        self._complete(reason)
        return self._record(None, phase, None, None, Decision(Action.COMPLETE, restore_best=restore, reason=reason))

    # ------------------------------------------------------------------ checkpointing

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable snapshot of settings and state; restoring it resumes identically."""
        state = {**dataclasses.asdict(self.state), "phase": self.state.phase.value}
        return {"format_version": STATE_FORMAT_VERSION, "config": dataclasses.asdict(self.settings), **state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state`` (from :meth:`state_dict`) under this tracker's own settings.

        Settings that differ from the checkpoint's are logged; ``greater_is_better`` and ``mode``
        cannot change mid-run (the best score would be read backwards; the structure differs).
        A state that does not validate leaves the tracker untouched.
        """
        changed, self.state = validated_state(state, self.settings)
        for name, (stored, current) in changed.items():
            logger.warning("resuming with %s=%r (the checkpoint was trained with %r)", name, current, stored)

    def check_state_dict(self, state: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` if :meth:`load_state_dict` would refuse ``state``; changes nothing."""
        validated_state(state, self.settings)

    def __repr__(self) -> str:
        s = self.state
        return (
            f"{type(self).__name__}(mode={self.settings.mode!r}, phase='{s.phase}', num_dendrites={s.num_dendrites}, "
            f"best_score={fmt(s.best_score)}, best_num_dendrites={s.best_num_dendrites}, tries={s.tries})"
        )
