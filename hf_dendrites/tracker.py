"""Score tracker that decides when to add dendrites (Perforated Backpropagation).

The tracker is a pure-Python state machine: the trainer feeds it one evaluation
score at a time and acts on the returned :class:`Decision` (snapshot, restore,
start a dendrite phase, grow, stop).  It never touches a model, so the policy
can be tested without torch and checkpointed as plain JSON.  Its settings are
the growth fields of :class:`~hf_dendrites.config.DendriteConfig`.

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
import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .config import DendriteConfig

logger = logging.getLogger(__name__)

__all__ = ["Action", "Decision", "DendriteTracker", "Phase", "TrackerSettings", "TrackerState"]

_STATE_FORMAT_VERSION = 1
_FIXED_SETTINGS = ("greater_is_better", "mode")  # a resumed run cannot turn the score around, nor change the mode
_HISTORY_KEYS = set("eval step phase score candidate_score num_dendrites action new_best restore_best reason".split())


class Action(str, Enum):
    """What the trainer should do after an evaluation; equal to (and printed as) its plain string."""

    CONTINUE = "continue"
    START_DENDRITE_PHASE = "start_dendrite_phase"
    GROW = "grow"
    COMPLETE = "complete"

    def __str__(self) -> str:
        return self.value


class Phase(str, Enum):
    """Where the tracker is; equal to (and printed as) its plain string."""

    NEURON = "neuron"
    DENDRITE = "dendrite"
    COMPLETE = "complete"

    def __str__(self) -> str:
        return self.value


def _member(enum: type[Enum], name: str, value: Any) -> Any:
    try:
        return enum(value)
    except ValueError:
        raise ValueError(f"{name} must be one of {sorted(m.value for m in enum)}, got {value!r}") from None


@dataclass(frozen=True)
class Decision:
    """What the trainer should do after an evaluation: honour ``restore_best`` *before* ``action``
    (restore the best snapshot, then start a dendrite phase / grow from it)."""

    action: Action
    new_best: bool = False
    restore_best: bool = False
    reason: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "action", _member(Action, "action", self.action))


@dataclass(frozen=True)
class TrackerSettings:
    """The policy's settings: the score's direction, and `DendriteConfig`'s growth fields (it validates them)."""

    greater_is_better: bool
    mode: str
    patience: int
    min_evals_per_phase: int
    improvement_threshold: float
    improvement_threshold_abs: float
    max_dendrites: int
    max_tries: int
    candidate_patience: int

    def __post_init__(self) -> None:
        if not isinstance(self.greater_is_better, bool):
            raise ValueError(f"greater_is_better must be a bool, got {self.greater_is_better!r}")
        DendriteConfig(**{name: getattr(self, name) for name in _CONFIG_FIELDS})  # ValueError naming a bad one
        for name in ("improvement_threshold", "improvement_threshold_abs"):
            object.__setattr__(self, name, float(getattr(self, name)))

    @classmethod
    def from_config(cls, config: DendriteConfig, greater_is_better: bool) -> TrackerSettings:
        return cls(greater_is_better, **{name: getattr(config, name) for name in _CONFIG_FIELDS})


_CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(TrackerSettings) if f.name != "greater_is_better")


@dataclass
class TrackerState:
    """Everything the policy remembers between evaluations (see the module docstring)."""

    phase: Phase = Phase.NEURON
    num_dendrites: int = 0  # dendrites the model should have after the last decision
    best_score: float | None = None
    best_num_dendrites: int = 0  # dendrites of the best snapshot
    score_before_growth: float | None = None
    improved_since_growth: bool = False
    tries: int = 0
    evals_in_phase: int = 0
    evals_without_improvement: int = 0
    best_candidate_score: float | None = None
    completed_reason: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per decision


def _fmt(value: float | None) -> str:
    return "None" if value is None else f"{value:.6g}"


def _check_score(name: str, value: Any) -> float:
    """Coerce a metric to float; NaN means a broken metric and must not be hidden."""
    try:
        result = None if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        result = None
    if result is None:
        raise ValueError(f"{name} must be a number, got {value!r}")
    if math.isnan(result):
        broken = "the evaluation metric is broken"
        if name == "candidate_score":
            broken = "the candidates' correlation statistics are broken (non-finite errors or activations in training)"
        raise ValueError(f"{name} is NaN; {broken}")
    return result


def _check_step(step: Any) -> int | None:
    if step is None:
        return None
    try:
        if not isinstance(step, bool):
            return int(step)
    except (TypeError, ValueError):
        pass
    raise ValueError(f"step must be an int or None, got {step!r}")


def _check_keys(what: str, given: Mapping[str, Any], expected: set[str]) -> None:
    missing, unexpected = sorted(expected - set(given)), sorted(set(given) - expected)
    if missing or unexpected:
        raise ValueError(f"invalid tracker {what}: missing keys {missing}, unexpected keys {unexpected}")


class DendriteTracker:
    """Decides, one evaluation at a time, when to add dendrites and when to stop (policy: module docstring).

    ``settings`` and ``state`` describe it fully; :meth:`state_dict` checkpoints both as JSON and a
    tracker that loads it decides identically.  ``state`` is read-only by convention: change it only
    through :meth:`load_state_dict`, which validates it.
    """

    def __init__(self, config: DendriteConfig | None = None, *, greater_is_better: bool = True) -> None:
        config = DendriteConfig() if config is None else config
        self.settings = TrackerSettings.from_config(config, greater_is_better)
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
        logger.info("Growing dendrite %d (best score before growth %s)", s.num_dendrites, _fmt(s.best_score))

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

    def step(self, score: float, step: int | None = None) -> Decision:
        """Feed one neuron-phase evaluation of the task metric and get the next action."""
        s, cfg, phase = self.state, self.settings, self.state.phase
        if phase != Phase.NEURON:
            hint = " (use candidate_step())" if phase == Phase.DENDRITE else ""
            raise RuntimeError(f"step() is only valid in the neuron phase; tracker is in the '{phase}' phase{hint}")
        score, step = _check_score("score", score), _check_step(step)
        s.evals_in_phase += 1
        new_best = self._improves(score, s.best_score, cfg.greater_is_better)
        if new_best:
            s.best_score, s.best_num_dendrites, s.evals_without_improvement = score, s.num_dendrites, 0
            before = s.score_before_growth  # the best score of the architecture before the last growth
            unproven = s.num_dendrites > 0 and before is not None and not s.improved_since_growth
            if unproven and self._improves(score, before, cfg.greater_is_better):
                s.improved_since_growth, s.tries = True, 0  # the last growth was useful
                logger.info("Dendrite %d improved on %s (now %s)", s.num_dendrites, _fmt(before), _fmt(score))
        else:
            s.evals_without_improvement += 1

        restore, stalls = False, s.evals_without_improvement
        if stalls < cfg.patience or s.evals_in_phase < cfg.min_evals_per_phase:
            action = Action.CONTINUE
            reason = f"no improvement on {_fmt(s.best_score)} for {stalls}/{cfg.patience} evaluation(s)"
            if new_best:
                reason = f"new best {_fmt(score)} with {s.num_dendrites} dendrite(s)"
        elif s.score_before_growth is not None and not s.improved_since_growth:
            # (a) The last dendrite never beat the architecture it was added to: restore the best, maybe retry.
            restore, failed, s.num_dendrites = True, s.num_dendrites, s.best_num_dendrites
            if s.tries < cfg.max_tries:
                s.tries += 1
                action = self._grow_or_start()  # in gd mode this records a new score_before_growth
                retry = f"; restored best ({s.best_num_dendrites} dendrite(s)), retry {s.tries} of {cfg.max_tries}"
            else:
                action, retry = Action.COMPLETE, f" after {s.tries + 1} tries (max_tries={cfg.max_tries})"
            reason = f"dendrite {failed} did not improve on {_fmt(s.score_before_growth)}{retry}"
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
        candidate_score = _check_score("candidate_score", candidate_score)
        task_score = None if task_score is None else _check_score("task_score", task_score)
        step = _check_step(step)
        s.evals_in_phase += 1
        if self._improves(candidate_score, s.best_candidate_score, True):
            s.best_candidate_score, s.evals_without_improvement = candidate_score, 0
        else:
            s.evals_without_improvement += 1

        best, stalls = _fmt(s.best_candidate_score), s.evals_without_improvement
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
        return {"format_version": _STATE_FORMAT_VERSION, "config": dataclasses.asdict(self.settings), **state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state`` (from :meth:`state_dict`) under this tracker's own settings.

        Settings that differ from the checkpoint's are logged; ``greater_is_better`` and ``mode``
        cannot change mid-run (the best score would be read backwards; the structure differs).
        A state that does not validate leaves the tracker untouched.
        """
        changed, self.state = self._validated_state(state)
        for name, (stored, current) in changed.items():
            logger.warning("resuming with %s=%r (the checkpoint was trained with %r)", name, current, stored)

    def check_state_dict(self, state: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` if :meth:`load_state_dict` would refuse ``state``; changes nothing."""
        self._validated_state(state)

    def _validated_state(self, state: Mapping[str, Any]) -> tuple[dict[str, tuple[Any, Any]], TrackerState]:
        if not isinstance(state, Mapping):
            raise ValueError(f"state must be a mapping, got {type(state).__name__}")
        fields = [f.name for f in dataclasses.fields(TrackerState)]
        _check_keys("state", state, {"format_version", "config", *fields})
        if (version := state["format_version"]) != _STATE_FORMAT_VERSION:
            raise ValueError(f"unsupported tracker state format_version {version!r} (expected {_STATE_FORMAT_VERSION})")
        if not isinstance(state["config"], Mapping):
            raise ValueError("invalid tracker state: 'config' must be a mapping")
        _check_keys("config", state["config"], {"greater_is_better", *_CONFIG_FIELDS})
        stored = dataclasses.asdict(TrackerSettings(**state["config"]))  # validated by DendriteConfig
        changed = {k: (stored[k], v) for k, v in dataclasses.asdict(self.settings).items() if stored[k] != v}
        fixed = [f"{k}: checkpoint {changed[k][0]!r}, now {changed[k][1]!r}" for k in _FIXED_SETTINGS if k in changed]
        if fixed:
            raise ValueError(f"cannot resume: settings that cannot change mid-run differ ({'; '.join(fixed)})")

        values = {name: state[name] for name in fields}
        values["phase"] = _member(Phase, "phase", values["phase"])
        if not isinstance(values["improved_since_growth"], bool):
            raise ValueError(f"improved_since_growth must be a bool, got {values['improved_since_growth']!r}")
        if not isinstance(values["completed_reason"], (str, type(None))):
            raise ValueError(f"completed_reason must be a str or None, got {values['completed_reason']!r}")
        if not isinstance(values["history"], list) or not all(isinstance(r, Mapping) for r in values["history"]):
            raise ValueError("history must be a list of dicts")
        for i, record in enumerate(values["history"]):
            if missing := sorted(_HISTORY_KEYS - set(record)):
                raise ValueError(f"history record {i} is missing keys {missing}")
        values["history"] = [dict(record) for record in copy.deepcopy(values["history"])]
        for name in ("num_dendrites", "best_num_dendrites", "tries", "evals_in_phase", "evals_without_improvement"):
            if isinstance(values[name], bool) or not isinstance(values[name], int) or values[name] < 0:
                raise ValueError(f"{name} must be an int >= 0, got {values[name]!r}")
        for name in ("best_score", "score_before_growth", "best_candidate_score"):
            values[name] = None if values[name] is None else _check_score(name, values[name])
        return changed, TrackerState(**values)

    def __repr__(self) -> str:
        s = self.state
        return (
            f"{type(self).__name__}(mode={self.settings.mode!r}, phase='{s.phase}', num_dendrites={s.num_dendrites}, "
            f"best_score={_fmt(s.best_score)}, best_num_dendrites={s.best_num_dendrites}, tries={s.tries})"
        )
