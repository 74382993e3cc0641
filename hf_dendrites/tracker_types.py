"""The tracker's vocabulary: actions, phases, decisions, its settings and its state.

Plain data, no policy (that is `tracker.py`): the settings are `DendriteTrainingArguments`' growth fields
plus the score's direction, and a checkpointed state is validated here before a tracker takes it.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .checks import check_choice
from .config import MODES
from .training_args import DendriteTrainingArguments

STATE_FORMAT_VERSION = 1
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
    """The policy's settings: the score's direction, the dendrite mode, and the growth fields of
    `DendriteTrainingArguments` (which validate them)."""

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
        check_choice("DendriteConfig", "mode", self.mode, MODES)
        DendriteTrainingArguments(
            **{name: getattr(self, name) for name in _GROWTH_FIELDS}
        )  # ValueError naming a bad one
        for name in ("improvement_threshold", "improvement_threshold_abs"):
            object.__setattr__(self, name, float(getattr(self, name)))

    @classmethod
    def from_arguments(
        cls, arguments: DendriteTrainingArguments, mode: str, greater_is_better: bool
    ) -> TrackerSettings:
        return cls(greater_is_better, mode, **{name: getattr(arguments, name) for name in _GROWTH_FIELDS})


_CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(TrackerSettings) if f.name != "greater_is_better")
_GROWTH_FIELDS = tuple(name for name in _CONFIG_FIELDS if name != "mode")


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


def fmt(value: float | None) -> str:
    return "None" if value is None else f"{value:.6g}"


def check_score(name: str, value: Any) -> float:
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


def check_step(step: Any) -> int | None:
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


def validated_state(
    state: Mapping[str, Any], settings: TrackerSettings
) -> tuple[dict[str, tuple[Any, Any]], TrackerState]:
    """(settings that differ from the stored ones, the stored state) of a `state_dict`; ValueError naming
    what is wrong, settings that cannot change mid-run included."""
    if not isinstance(state, Mapping):
        raise ValueError(f"state must be a mapping, got {type(state).__name__}")
    fields = [f.name for f in dataclasses.fields(TrackerState)]
    _check_keys("state", state, {"format_version", "config", *fields})
    if (version := state["format_version"]) != STATE_FORMAT_VERSION:
        raise ValueError(f"unsupported tracker state format_version {version!r} (expected {STATE_FORMAT_VERSION})")
    if not isinstance(state["config"], Mapping):
        raise ValueError("invalid tracker state: 'config' must be a mapping")
    _check_keys("config", state["config"], {"greater_is_better", *_CONFIG_FIELDS})
    stored = dataclasses.asdict(TrackerSettings(**state["config"]))  # validated on construction
    changed = {k: (stored[k], v) for k, v in dataclasses.asdict(settings).items() if stored[k] != v}
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
        values[name] = None if values[name] is None else check_score(name, values[name])
    return changed, TrackerState(**values)
