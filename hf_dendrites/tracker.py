"""Score tracker that decides when to add dendrites (Perforated Backpropagation).

The tracker is a pure-Python state machine: the trainer feeds it one evaluation
score at a time and acts on the returned :class:`Decision` (snapshot, restore,
start a dendrite phase, grow, stop).  It never touches a model, so the policy
can be tested without torch and checkpointed as plain JSON.

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

import copy
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "ACTION_COMPLETE",
    "ACTION_CONTINUE",
    "ACTION_GROW",
    "ACTION_START_DENDRITE_PHASE",
    "PHASE_COMPLETE",
    "PHASE_DENDRITE",
    "PHASE_NEURON",
    "Decision",
    "DendriteTracker",
]

ACTION_CONTINUE = "continue"
ACTION_START_DENDRITE_PHASE = "start_dendrite_phase"
ACTION_GROW = "grow"
ACTION_COMPLETE = "complete"
_ACTIONS = frozenset({ACTION_CONTINUE, ACTION_START_DENDRITE_PHASE, ACTION_GROW, ACTION_COMPLETE})

PHASE_NEURON = "neuron"
PHASE_DENDRITE = "dendrite"
PHASE_COMPLETE = "complete"
_PHASES = frozenset({PHASE_NEURON, PHASE_DENDRITE, PHASE_COMPLETE})

_MODES = frozenset({"pb", "gd"})
_STATE_FORMAT_VERSION = 1

# Constructor arguments, in order; also the keys of ``state_dict()["config"]``.
_CONFIG_KEYS: tuple[str, ...] = (
    "greater_is_better",
    "mode",
    "patience",
    "min_evals_per_phase",
    "improvement_threshold",
    "improvement_threshold_abs",
    "max_dendrites",
    "max_tries",
    "candidate_patience",
)
# Settings a resumed run cannot change: the direction of the score, and the structure's mode.
_FIXED_KEYS: tuple[str, ...] = ("greater_is_better", "mode")
_STATE_KEYS: frozenset[str] = frozenset(
    {
        "format_version",
        "config",
        "phase",
        "num_dendrites",
        "best_score",
        "best_num_dendrites",
        "score_before_growth",
        "improved_since_growth",
        "tries",
        "evals_in_phase",
        "evals_without_improvement",
        "best_candidate_score",
        "completed_reason",
        "history",
    }
)
_HISTORY_KEYS: tuple[str, ...] = (
    "eval",
    "step",
    "phase",
    "score",
    "candidate_score",
    "num_dendrites",
    "action",
    "new_best",
    "restore_best",
    "reason",
)


@dataclass(frozen=True)
class Decision:
    """What the trainer should do after an evaluation.

    ``restore_best`` must be honoured *before* ``action`` (e.g. restore the best
    snapshot, then start a dendrite phase / grow from it).
    """

    action: str
    new_best: bool = False
    restore_best: bool = False
    reason: str = ""

    def __post_init__(self) -> None:
        if self.action not in _ACTIONS:
            raise ValueError(f"action must be one of {sorted(_ACTIONS)}, got {self.action!r}")


def _fmt(value: float | None) -> str:
    """Compact score formatting for human-readable reasons."""
    return "None" if value is None else f"{value:.6g}"


def _check_int(name: str, value: Any, minimum: int) -> int:
    # bool is an int subclass but ``patience=True`` is always a mistake.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def _check_threshold(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


def _check_score(name: str, value: Any) -> float:
    """Coerce a metric to float; NaN means a broken metric and must not be hidden."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        result = float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a number, got {value!r}") from exc
    if math.isnan(result):
        source = (
            "the candidates' correlation statistics are broken (non-finite errors or activations in training)"
            if name == "candidate_score"
            else "the evaluation metric is broken"
        )
        raise ValueError(f"{name} is NaN; {source}")
    return result


class DendriteTracker:
    """Decides, one evaluation at a time, when to add dendrites and when to stop.

    See the module docstring for the policy.  The object is plain Python and
    fully described by :meth:`state_dict`, so it can be checkpointed with the
    model and resumed with identical decisions.
    """

    def __init__(
        self,
        *,
        greater_is_better: bool = True,
        mode: str = "pb",
        patience: int = 3,
        min_evals_per_phase: int = 2,
        improvement_threshold: float = 1e-3,
        improvement_threshold_abs: float = 1e-4,
        max_dendrites: int = 3,
        max_tries: int = 1,
        candidate_patience: int = 2,
    ) -> None:
        if not isinstance(greater_is_better, bool):
            raise ValueError(f"greater_is_better must be a bool, got {greater_is_better!r}")
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {sorted(_MODES)}, got {mode!r}")
        self._greater_is_better: bool = greater_is_better
        self._mode: str = mode
        self._patience: int = _check_int("patience", patience, 1)
        self._min_evals_per_phase: int = _check_int("min_evals_per_phase", min_evals_per_phase, 1)
        self._improvement_threshold: float = _check_threshold("improvement_threshold", improvement_threshold)
        self._improvement_threshold_abs: float = _check_threshold(
            "improvement_threshold_abs", improvement_threshold_abs
        )
        self._max_dendrites: int = _check_int("max_dendrites", max_dendrites, 0)
        self._max_tries: int = _check_int("max_tries", max_tries, 0)
        self._candidate_patience: int = _check_int("candidate_patience", candidate_patience, 1)

        self._phase: str = PHASE_NEURON
        self._num_dendrites: int = 0
        self._best_score: float | None = None
        self._best_num_dendrites: int = 0
        self._score_before_growth: float | None = None
        self._improved_since_growth: bool = False
        self._tries: int = 0
        self._evals_in_phase: int = 0
        self._evals_without_improvement: int = 0
        self._best_candidate_score: float | None = None
        self._completed_reason: str | None = None
        self._history: list[dict[str, Any]] = []

    @classmethod
    def from_config(cls, config: Any, greater_is_better: bool) -> DendriteTracker:
        """Build from any object (or mapping) carrying the constructor's argument names.

        Duck-typed so the tracker does not depend on the config module; names the
        config lacks fall back to the constructor defaults.
        """
        kwargs: dict[str, Any] = {"greater_is_better": greater_is_better}
        for name in _CONFIG_KEYS:
            if name == "greater_is_better":
                continue
            if isinstance(config, Mapping):
                if name in config:
                    kwargs[name] = config[name]
            elif hasattr(config, name):
                kwargs[name] = getattr(config, name)
        return cls(**kwargs)

    # ------------------------------------------------------------------ read-only state
    # Exposed as properties so the trainer cannot put the tracker in an
    # inconsistent state; use load_state_dict to set state wholesale.

    @property
    def greater_is_better(self) -> bool:
        return self._greater_is_better

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def patience(self) -> int:
        return self._patience

    @property
    def min_evals_per_phase(self) -> int:
        return self._min_evals_per_phase

    @property
    def improvement_threshold(self) -> float:
        return self._improvement_threshold

    @property
    def improvement_threshold_abs(self) -> float:
        return self._improvement_threshold_abs

    @property
    def max_dendrites(self) -> int:
        return self._max_dendrites

    @property
    def max_tries(self) -> int:
        return self._max_tries

    @property
    def candidate_patience(self) -> int:
        return self._candidate_patience

    @property
    def phase(self) -> str:
        """``"neuron"``, ``"dendrite"`` or ``"complete"``."""
        return self._phase

    @property
    def is_complete(self) -> bool:
        return self._phase == PHASE_COMPLETE

    @property
    def num_dendrites(self) -> int:
        """Dendrites the model should currently have (after the last decision)."""
        return self._num_dendrites

    @property
    def best_score(self) -> float | None:
        return self._best_score

    @property
    def best_num_dendrites(self) -> int:
        """Dendrites the model had when ``best_score`` was reached (size of the best snapshot)."""
        return self._best_num_dendrites

    @property
    def score_before_growth(self) -> float | None:
        return self._score_before_growth

    @property
    def improved_since_growth(self) -> bool:
        return self._improved_since_growth

    @property
    def tries(self) -> int:
        return self._tries

    @property
    def evals_in_phase(self) -> int:
        return self._evals_in_phase

    @property
    def evals_without_improvement(self) -> int:
        return self._evals_without_improvement

    @property
    def best_candidate_score(self) -> float | None:
        return self._best_candidate_score

    @property
    def completed_reason(self) -> str | None:
        return self._completed_reason

    @property
    def history(self) -> list[dict[str, Any]]:
        """One record per call (copies, so callers cannot corrupt the tracker)."""
        return [dict(record) for record in self._history]

    # ------------------------------------------------------------------ policy helpers

    def _improves(self, score: float, ref: float | None, greater_is_better: bool) -> bool:
        """Thresholded improvement test; both thresholds must be beaten."""
        if ref is None:
            return True
        delta = score - ref if greater_is_better else ref - score
        return delta > self._improvement_threshold_abs and delta > self._improvement_threshold * abs(ref)

    def _reset_phase_counters(self) -> None:
        self._evals_in_phase = 0
        self._evals_without_improvement = 0

    def _apply_grow(self) -> None:
        """Bookkeeping for one added dendrite; starts a fresh neuron phase."""
        self._score_before_growth = self._best_score
        self._num_dendrites += 1
        self._improved_since_growth = False
        self._phase = PHASE_NEURON
        self._best_candidate_score = None
        self._reset_phase_counters()
        logger.info("Growing dendrite %d (best score before growth %s)", self._num_dendrites, _fmt(self._best_score))

    def _start_dendrite_phase(self) -> None:
        self._phase = PHASE_DENDRITE
        self._best_candidate_score = None
        self._reset_phase_counters()
        logger.info("Starting dendrite phase for dendrite %d", self._num_dendrites + 1)

    def _restore_best(self) -> None:
        # The trainer restores the best snapshot, which has best_num_dendrites dendrites.
        self._num_dendrites = self._best_num_dendrites

    def _complete(self, reason: str) -> None:
        self._phase = PHASE_COMPLETE
        self._completed_reason = reason
        logger.info("Dendrite training complete: %s", reason)

    def _grow_or_start(self) -> str:
        """Next structural action after a neuron-phase stall, applying its bookkeeping."""
        if self._mode == "gd":
            self._apply_grow()
            return ACTION_GROW
        self._start_dendrite_phase()
        return ACTION_START_DENDRITE_PHASE

    def _record(
        self,
        *,
        step: int | None,
        phase: str,
        score: float | None,
        candidate_score: float | None,
        decision: Decision,
    ) -> Decision:
        self._history.append(
            {
                "eval": len(self._history),
                "step": step,
                "phase": phase,
                "score": score,
                "candidate_score": candidate_score,
                "num_dendrites": self._num_dendrites,
                "action": decision.action,
                "new_best": decision.new_best,
                "restore_best": decision.restore_best,
                "reason": decision.reason,
            }
        )
        logger.debug("tracker eval %d: %s", len(self._history) - 1, self._history[-1])
        return decision

    @staticmethod
    def _check_step(step: int | None) -> int | None:
        if step is None:
            return None
        if isinstance(step, bool):
            raise ValueError(f"step must be an int or None, got {step!r}")
        try:
            return int(step)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"step must be an int or None, got {step!r}") from exc

    # ------------------------------------------------------------------ public API

    def step(self, score: float, step: int | None = None) -> Decision:
        """Feed one neuron-phase evaluation of the task metric and get the next action."""
        if self._phase != PHASE_NEURON:
            raise RuntimeError(
                f"step() is only valid in the neuron phase; tracker is in the {self._phase!r} phase"
                + (" (use candidate_step())" if self._phase == PHASE_DENDRITE else "")
            )
        score = _check_score("score", score)
        step = self._check_step(step)
        phase = self._phase

        self._evals_in_phase += 1
        new_best = self._improves(score, self._best_score, self._greater_is_better)
        if new_best:
            self._best_score = score
            self._best_num_dendrites = self._num_dendrites
            self._evals_without_improvement = 0
            if (
                self._num_dendrites > 0
                and self._score_before_growth is not None
                and not self._improved_since_growth
                and self._improves(score, self._score_before_growth, self._greater_is_better)
            ):
                # The last growth beat the architecture before it: it was useful.
                self._improved_since_growth = True
                self._tries = 0
                logger.info(
                    "Dendrite %d improved on %s (now %s)",
                    self._num_dendrites,
                    _fmt(self._score_before_growth),
                    _fmt(score),
                )
        else:
            self._evals_without_improvement += 1

        stalled = (
            self._evals_without_improvement >= self._patience and self._evals_in_phase >= self._min_evals_per_phase
        )
        if not stalled:
            if new_best:
                reason = f"new best {_fmt(score)} with {self._num_dendrites} dendrite(s)"
            else:
                reason = (
                    f"no improvement on {_fmt(self._best_score)} for "
                    f"{self._evals_without_improvement}/{self._patience} evaluation(s)"
                )
            decision = Decision(ACTION_CONTINUE, new_best=new_best, reason=reason)
            return self._record(step=step, phase=phase, score=score, candidate_score=None, decision=decision)

        stall_msg = f"neuron phase stalled ({self._evals_without_improvement} evaluation(s) without improvement)"
        if self._score_before_growth is not None and not self._improved_since_growth:
            # (a) The last dendrite never beat the architecture it was added to.
            failed = self._num_dendrites
            self._restore_best()
            if self._tries < self._max_tries:
                self._tries += 1
                action = self._grow_or_start()
                reason = (
                    f"dendrite {failed} did not improve on {_fmt(self._score_before_growth)}; "
                    f"restored best ({self._best_num_dendrites} dendrite(s)), "
                    f"retry {self._tries} of {self._max_tries}"
                )
            else:
                action = ACTION_COMPLETE
                reason = (
                    f"dendrite {failed} did not improve on {_fmt(self._score_before_growth)} "
                    f"after {self._tries + 1} tries (max_tries={self._max_tries})"
                )
                self._complete(reason)
            decision = Decision(action, restore_best=True, reason=reason)
        elif self._num_dendrites >= self._max_dendrites:
            # (b) No room to grow.
            self._restore_best()
            reason = f"max_dendrites ({self._max_dendrites}) reached"
            self._complete(reason)
            decision = Decision(ACTION_COMPLETE, restore_best=True, reason=reason)
        else:
            # (c) Grow; growing from the best snapshot is the trainer's policy.
            action = self._grow_or_start()
            target = self._num_dendrites if action == ACTION_GROW else self._num_dendrites + 1
            verb = "growing" if action == ACTION_GROW else "starting dendrite phase for"
            reason = f"{stall_msg}; {verb} dendrite {target}"
            decision = Decision(action, reason=reason)
        return self._record(step=step, phase=phase, score=score, candidate_score=None, decision=decision)

    def candidate_step(
        self,
        candidate_score: float,
        task_score: float | None = None,
        step: int | None = None,
        force_grow: bool = False,
    ) -> Decision:
        """Feed one dendrite-phase evaluation of the candidate score (greater is better).

        ``force_grow`` lets the trainer end the phase (e.g. epoch cap reached).
        ``task_score`` is only recorded for plotting; it never becomes a best.
        """
        if self._phase != PHASE_DENDRITE:
            raise RuntimeError(
                f"candidate_step() is only valid in the dendrite phase; tracker is in the {self._phase!r} phase"
            )
        candidate_score = _check_score("candidate_score", candidate_score)
        if task_score is not None:
            task_score = _check_score("task_score", task_score)
        step = self._check_step(step)
        phase = self._phase

        self._evals_in_phase += 1
        if self._improves(candidate_score, self._best_candidate_score, True):
            self._best_candidate_score = candidate_score
            self._evals_without_improvement = 0
        else:
            self._evals_without_improvement += 1

        best_candidate = self._best_candidate_score
        if force_grow or self._evals_without_improvement >= self._candidate_patience:
            if force_grow:
                why = "forced by trainer"
            else:
                why = f"candidate score stalled for {self._evals_without_improvement} evaluation(s)"
            self._apply_grow()
            reason = f"{why} (best candidate {_fmt(best_candidate)}); growing dendrite {self._num_dendrites}"
            decision = Decision(ACTION_GROW, reason=reason)
        else:
            reason = (
                f"candidate best {_fmt(best_candidate)}, "
                f"{self._evals_without_improvement}/{self._candidate_patience} without improvement"
            )
            decision = Decision(ACTION_CONTINUE, reason=reason)
        return self._record(
            step=step, phase=phase, score=task_score, candidate_score=candidate_score, decision=decision
        )

    def finish(self, reason: str) -> Decision:
        """End training early (budget exhausted): restore the best snapshot if there is one.

        Calling it on an already complete tracker is a no-op that returns a
        ``complete`` decision without ``restore_best`` (the restore already happened)
        and adds no history record.
        """
        if self._phase == PHASE_COMPLETE:
            return Decision(ACTION_COMPLETE, reason=self._completed_reason or reason)
        phase = self._phase
        restore = self._best_score is not None
        if restore:
            self._restore_best()
        self._best_candidate_score = None
        self._reset_phase_counters()
        self._complete(reason)
        decision = Decision(ACTION_COMPLETE, restore_best=restore, reason=reason)
        return self._record(step=None, phase=phase, score=None, candidate_score=None, decision=decision)

    # ------------------------------------------------------------------ checkpointing

    def _config_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _CONFIG_KEYS}

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable snapshot of config and state; restoring it resumes identically."""
        return {
            "format_version": _STATE_FORMAT_VERSION,
            "config": self._config_dict(),
            "phase": self._phase,
            "num_dendrites": self._num_dendrites,
            "best_score": self._best_score,
            "best_num_dendrites": self._best_num_dendrites,
            "score_before_growth": self._score_before_growth,
            "improved_since_growth": self._improved_since_growth,
            "tries": self._tries,
            "evals_in_phase": self._evals_in_phase,
            "evals_without_improvement": self._evals_without_improvement,
            "best_candidate_score": self._best_candidate_score,
            "completed_reason": self._completed_reason,
            "history": copy.deepcopy(self._history),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state`` (from :meth:`state_dict`) under this tracker's own settings.

        The policy settings are the constructor's, so a resumed run follows the configuration it
        was started with (and records); settings that differ from the checkpoint's are logged.
        ``greater_is_better`` and ``mode`` cannot change mid-run (the best score would be read
        backwards; the structure differs): a difference is an error. Validation happens before
        anything is assigned, so a bad state leaves the tracker untouched.
        """
        values = self._validated_state(state)
        for name, (stored, current) in values.pop("changed").items():
            logger.warning("resuming with %s=%r (the checkpoint was trained with %r)", name, current, stored)
        self._phase = values["phase"]
        self._num_dendrites = values["num_dendrites"]
        self._best_num_dendrites = values["best_num_dendrites"]
        self._tries = values["tries"]
        self._evals_in_phase = values["evals_in_phase"]
        self._evals_without_improvement = values["evals_without_improvement"]
        self._best_score = values["best_score"]
        self._score_before_growth = values["score_before_growth"]
        self._best_candidate_score = values["best_candidate_score"]
        self._improved_since_growth = values["improved_since_growth"]
        self._completed_reason = values["completed_reason"]
        self._history = values["history"]

    def check_state_dict(self, state: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` if :meth:`load_state_dict` would refuse ``state``; changes nothing."""
        self._validated_state(state)

    def _validated_state(self, state: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(state, Mapping):
            raise ValueError(f"state must be a mapping, got {type(state).__name__}")
        missing = sorted(_STATE_KEYS - set(state))
        unexpected = sorted(set(state) - _STATE_KEYS)
        if missing or unexpected:
            raise ValueError(f"invalid tracker state: missing keys {missing}, unexpected keys {unexpected}")
        if state["format_version"] != _STATE_FORMAT_VERSION:
            raise ValueError(
                f"unsupported tracker state format_version {state['format_version']!r} "
                f"(expected {_STATE_FORMAT_VERSION})"
            )

        config = state["config"]
        if not isinstance(config, Mapping):
            raise ValueError("invalid tracker state: 'config' must be a mapping")
        missing = sorted(set(_CONFIG_KEYS) - set(config))
        unexpected = sorted(set(config) - set(_CONFIG_KEYS))
        if missing or unexpected:
            raise ValueError(f"invalid tracker config: missing keys {missing}, unexpected keys {unexpected}")
        stored = DendriteTracker(**{name: config[name] for name in _CONFIG_KEYS})._config_dict()
        current = self._config_dict()
        changed = {name: (stored[name], current[name]) for name in _CONFIG_KEYS if stored[name] != current[name]}
        fixed = [
            f"{name}: checkpoint {changed[name][0]!r}, now {changed[name][1]!r}"
            for name in _FIXED_KEYS
            if name in changed
        ]
        if fixed:
            raise ValueError(f"cannot resume: settings that cannot change mid-run differ ({'; '.join(fixed)})")

        def opt_score(key: str) -> float | None:
            value = state[key]
            return None if value is None else _check_score(key, value)

        def count(key: str) -> int:
            return _check_int(key, state[key], 0)

        phase = state["phase"]
        if phase not in _PHASES:
            raise ValueError(f"phase must be one of {sorted(_PHASES)}, got {phase!r}")
        improved = state["improved_since_growth"]
        if not isinstance(improved, bool):
            raise ValueError(f"improved_since_growth must be a bool, got {improved!r}")
        completed_reason = state["completed_reason"]
        if completed_reason is not None and not isinstance(completed_reason, str):
            raise ValueError(f"completed_reason must be a str or None, got {completed_reason!r}")
        history = state["history"]
        if not isinstance(history, list) or not all(isinstance(r, Mapping) for r in history):
            raise ValueError("history must be a list of dicts")
        for i, record in enumerate(history):
            missing = sorted(set(_HISTORY_KEYS) - set(record))
            if missing:
                raise ValueError(f"history record {i} is missing keys {missing}")

        return {
            "changed": changed,
            "phase": phase,
            "num_dendrites": count("num_dendrites"),
            "best_num_dendrites": count("best_num_dendrites"),
            "tries": count("tries"),
            "evals_in_phase": count("evals_in_phase"),
            "evals_without_improvement": count("evals_without_improvement"),
            "best_score": opt_score("best_score"),
            "score_before_growth": opt_score("score_before_growth"),
            "best_candidate_score": opt_score("best_candidate_score"),
            "improved_since_growth": improved,
            "completed_reason": completed_reason,
            "history": [dict(record) for record in copy.deepcopy(history)],
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(mode={self._mode!r}, phase={self._phase!r}, "
            f"num_dendrites={self._num_dendrites}, best_score={_fmt(self._best_score)}, "
            f"best_num_dendrites={self._best_num_dendrites}, tries={self._tries})"
        )
