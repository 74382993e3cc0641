"""Tests for the pure-Python dendrite growth policy (hf_dendrites.tracker)."""

from __future__ import annotations

import ast
import dataclasses
import json
import math
from dataclasses import FrozenInstanceError, dataclass
from pathlib import Path
from typing import Any

import pytest

import hf_dendrites
import hf_dendrites.tracker as tracker_module
from hf_dendrites.config import DendriteConfig
from hf_dendrites.tracker import Action, Decision, DendriteTracker, Phase, TrackerSettings, TrackerState
from hf_dendrites.training_args import DendriteTrainingArguments

# Event DSL: ("n", score) -> step(score); ("c", cand) -> candidate_step(cand);
# ("f", cand) -> candidate_step(cand, force_grow=True); ("N", score) -> step(score, force_growth=True).
# Expected decision codes: C=continue, S=start_dendrite_phase, G=grow, X=complete,
# followed by "*" for new_best and/or "R" for restore_best.
_CODES = {Action.CONTINUE: "C", Action.START_DENDRITE_PHASE: "S", Action.GROW: "G", Action.COMPLETE: "X"}

FAST = {"patience": 1, "min_evals_per_phase": 1, "candidate_patience": 2}


def make_tracker(greater_is_better: bool = True, mode: str = "pb", **growth_fields: Any) -> DendriteTracker:
    """A tracker whose settings are `DendriteTrainingArguments` with `growth_fields`, the rest its defaults."""
    return DendriteTracker(DendriteTrainingArguments(**growth_fields), mode=mode, greater_is_better=greater_is_better)


def code(decision: Decision) -> str:
    return _CODES[decision.action] + ("*" if decision.new_best else "") + ("R" if decision.restore_best else "")


def feed(tracker: DendriteTracker, event: tuple[str, float]) -> Decision:
    kind, value = event
    if kind == "n":
        return tracker.step(value)
    if kind == "c":
        return tracker.candidate_step(value)
    if kind == "f":
        return tracker.candidate_step(value, force_grow=True)
    if kind == "N":
        return tracker.step(value, force_growth=True)
    raise AssertionError(f"unknown event kind {kind!r}")


def run(tracker: DendriteTracker, events: list[tuple[str, float]]) -> list[Decision]:
    return [feed(tracker, e) for e in events]


def n(*scores: float) -> list[tuple[str, float]]:
    return [("n", s) for s in scores]


def c(*scores: float) -> list[tuple[str, float]]:
    return [("c", s) for s in scores]


# ---------------------------------------------------------------------------- improvement


@pytest.mark.parametrize(
    ("greater", "rel", "abs_", "ref", "score", "improves"),
    [
        # maximise
        (True, 1e-3, 1e-4, 0.5, 0.6, True),
        (True, 1e-3, 1e-4, 0.5, 0.5, False),
        (True, 1e-3, 1e-4, 0.5, 0.4, False),
        (True, 1e-3, 1e-4, 0.5, 0.5003, False),  # beats abs (1e-4) but not rel (5e-4)
        (True, 1e-3, 1e-4, 0.5, 0.5006, True),
        (True, 1e-3, 1e-4, 0.01, 0.01005, False),  # beats rel (1e-5) but not abs (1e-4)
        (True, 1e-3, 1e-4, 0.01, 0.0102, True),
        (True, 0.0, 0.0, 0.5, 0.5000001, True),  # zero thresholds: any strict gain
        (True, 0.0, 0.0, 0.5, 0.5, False),
        (True, 1e-3, 1e-4, -2.0, -1.999, False),  # rel uses abs(ref): 2e-3 needed
        (True, 1e-3, 1e-4, -2.0, -1.99, True),
        # minimise
        (False, 1e-3, 1e-4, 1.0, 0.9, True),
        (False, 1e-3, 1e-4, 1.0, 1.1, False),
        (False, 1e-3, 1e-4, 1.0, 0.9995, False),  # below rel threshold
        (False, 1e-3, 1e-4, 1.0, 0.998, True),
        (False, 0.0, 0.5, 1.0, 0.6, False),  # below abs threshold
        (False, 0.0, 0.5, 1.0, 0.4, True),
    ],
)
def test_improvement_thresholds(
    greater: bool, rel: float, abs_: float, ref: float, score: float, improves: bool
) -> None:
    t = make_tracker(greater, improvement_threshold=rel, improvement_threshold_abs=abs_, patience=5)
    first = t.step(ref)
    assert first.new_best and first.action == Action.CONTINUE  # first score ever always improves
    second = t.step(score)
    assert second.new_best is improves
    assert t.best_score == (score if improves else ref)
    assert t.state.evals_without_improvement == (0 if improves else 1)


def test_candidate_scores_use_thresholds_greater_is_better() -> None:
    # Task metric minimised; candidate score is still greater-is-better.
    t = make_tracker(False, candidate_patience=1, patience=1, min_evals_per_phase=1)
    run(t, n(1.0, 1.0))
    assert t.phase == Phase.DENDRITE
    assert t.candidate_step(0.3).action == Action.CONTINUE  # first candidate score improves
    assert t.candidate_step(0.5).action == Action.CONTINUE  # higher is better
    assert t.state.best_candidate_score == 0.5
    d = t.candidate_step(0.5003)  # below relative threshold (5e-4): a stall
    assert d.action == Action.GROW
    assert t.state.best_candidate_score is None  # reset for the next phase
    assert t.num_dendrites == 1


# ---------------------------------------------------------------------------- sequences


@dataclass
class Case:
    name: str
    kwargs: dict[str, Any]  # make_tracker's arguments
    events: list[tuple[str, float]]
    expected: list[str]
    state: dict[str, Any]  # expected TrackerState fields
    reason: str = ""  # substring of the last decision's reason


CASES = [
    Case(
        "patience_max",
        {"patience": 2, "min_evals_per_phase": 1},
        n(0.5, 0.6, 0.6, 0.55),
        ["C*", "C*", "C", "S"],
        {"phase": "dendrite", "best_score": 0.6, "num_dendrites": 0, "evals_in_phase": 0},
        "starting dendrite phase for dendrite 1",
    ),
    Case(
        "patience_min",
        {"greater_is_better": False, "patience": 3},
        n(1.0, 0.9, 0.95, 0.9, 0.8995),
        ["C*", "C*", "C", "C", "S"],
        {"phase": "dendrite", "best_score": 0.9},
    ),
    Case(
        "improvement_resets_patience",
        {"patience": 2, "min_evals_per_phase": 1},
        n(0.5, 0.5, 0.6, 0.6, 0.6),
        ["C*", "C", "C*", "C", "S"],
        {"best_score": 0.6},
    ),
    Case(
        "min_evals_per_phase_delays_stall",
        {"patience": 1, "min_evals_per_phase": 3},
        n(0.5, 0.4, 0.4),
        ["C*", "C", "S"],
        {"phase": "dendrite"},
    ),
    Case(
        "min_evals_per_phase_1",
        {"patience": 1, "min_evals_per_phase": 1},
        n(0.5, 0.4),
        ["C*", "S"],
        {"phase": "dendrite"},
    ),
    Case(
        "pb_stall_candidates_grow",
        FAST,
        n(0.5, 0.5) + c(0.1, 0.2, 0.2, 0.2),
        ["C*", "S", "C", "C", "C", "G"],
        {
            "phase": "neuron",
            "num_dendrites": 1,
            "score_before_growth": 0.5,
            "improved_since_growth": False,
            "evals_in_phase": 0,
            "evals_without_improvement": 0,
            "tries": 0,
        },
        "candidate score stalled for 2 evaluation(s)",
    ),
    Case(
        "candidate_patience_3",
        {**FAST, "candidate_patience": 3},
        n(0.5, 0.5) + c(0.2, 0.1, 0.1, 0.1),
        ["C*", "S", "C", "C", "C", "G"],
        {"num_dendrites": 1},
    ),
    Case(
        "force_grow",
        FAST,
        n(0.5, 0.5) + [("f", 0.1)],
        ["C*", "S", "G"],
        {"num_dendrites": 1, "phase": "neuron"},
        "forced",
    ),
    Case(
        "growth_helps_then_grows_again",
        FAST,
        n(0.5, 0.5) + [("f", 0.1)] + n(0.6, 0.6) + [("f", 0.1)],
        ["C*", "S", "G", "C*", "S", "G"],
        {
            "num_dendrites": 2,
            "best_num_dendrites": 1,
            "best_score": 0.6,
            "score_before_growth": 0.6,
            "improved_since_growth": False,
            "tries": 0,
        },
    ),
    Case(
        "growth_never_helps_retry_then_complete",
        {**FAST, "max_tries": 1},
        n(0.5, 0.5) + [("f", 0.1)] + n(0.5001) + [("f", 0.1)] + n(0.4),
        ["C*", "S", "G", "SR", "G", "XR"],
        {
            "phase": "complete",
            "num_dendrites": 0,
            "best_num_dendrites": 0,
            "best_score": 0.5,
            "tries": 1,
            "completed_reason": "dendrite 1 did not improve on 0.5 after 2 tries (max_tries=1)",
        },
        "dendrite 1 did not improve on 0.5 after 2 tries",
    ),
    Case(
        "retry_reason",
        {**FAST, "max_tries": 3},
        n(0.5, 0.5) + [("f", 0.1)] + n(0.4),
        ["C*", "S", "G", "SR"],
        {"phase": "dendrite", "num_dendrites": 0, "tries": 1},
        "retry 1 of 3",
    ),
    Case(
        "max_tries_0_completes_on_first_failure",
        {**FAST, "max_tries": 0},
        n(0.5, 0.5) + [("f", 0.1)] + n(0.5),
        ["C*", "S", "G", "XR"],
        {"phase": "complete", "num_dendrites": 0, "tries": 0},
        "dendrite 1 did not improve on 0.5 after 1 tries",
    ),
    Case(
        "second_dendrite_fails_restores_first",
        {**FAST, "max_tries": 1},
        # d1 helps (0.6); d2 never helps -> restore to 1 dendrite, retry, fail -> complete
        n(0.5, 0.5) + [("f", 0.1)] + n(0.6, 0.6) + [("f", 0.1)] + n(0.6) + [("f", 0.1)] + n(0.59),
        ["C*", "S", "G", "C*", "S", "G", "SR", "G", "XR"],
        {"phase": "complete", "num_dendrites": 1, "best_num_dendrites": 1, "best_score": 0.6},
        "dendrite 2 did not improve on 0.6 after 2 tries",
    ),
    Case(
        "successful_growth_resets_tries",
        {**FAST, "max_tries": 1},
        # d1 fails once (retry), the retry helps -> tries reset, d2 may retry again
        n(0.5, 0.5) + [("f", 0.1)] + n(0.5) + [("f", 0.1)] + n(0.7) + n(0.7) + [("f", 0.1)] + n(0.7),
        ["C*", "S", "G", "SR", "G", "C*", "S", "G", "SR"],
        {"num_dendrites": 1, "best_num_dendrites": 1, "tries": 1, "phase": "dendrite"},
        "retry 1 of 1",
    ),
    Case(
        "gain_below_threshold_after_growth_is_not_help",
        {**FAST, "max_tries": 0},
        n(0.5, 0.5) + [("f", 0.1)] + n(0.50001),
        ["C*", "S", "G", "XR"],
        {"best_score": 0.5, "num_dendrites": 0},
    ),
    Case(
        "max_dendrites_reached",
        {**FAST, "max_dendrites": 1},
        n(0.5, 0.5) + [("f", 0.1)] + n(0.6, 0.6),
        ["C*", "S", "G", "C*", "XR"],
        {"phase": "complete", "num_dendrites": 1, "completed_reason": "max_dendrites (1) reached"},
        "max_dendrites (1) reached",
    ),
    Case(
        "max_dendrites_restores_best_architecture",
        {"patience": 2, "min_evals_per_phase": 1, "max_dendrites": 1},
        # d1 helps, then the metric degrades; stall restores best (1 dendrite)
        n(0.5, 0.5, 0.5) + [("f", 0.1)] + n(0.6, 0.55, 0.55),
        ["C*", "C", "S", "G", "C*", "C", "XR"],
        {"num_dendrites": 1, "best_num_dendrites": 1, "best_score": 0.6},
    ),
    Case(
        "max_dendrites_0",
        {**FAST, "max_dendrites": 0},
        n(0.5, 0.5),
        ["C*", "XR"],
        {"phase": "complete", "num_dendrites": 0, "completed_reason": "max_dendrites (0) reached"},
    ),
    Case(
        "gd_stall_grows_directly",
        {**FAST, "mode": "gd", "max_tries": 1},
        n(0.5, 0.5, 0.6, 0.6, 0.6, 0.6),
        ["C*", "G", "C*", "G", "GR", "XR"],
        {"phase": "complete", "num_dendrites": 1, "best_num_dendrites": 1, "best_score": 0.6},
        "dendrite 2 did not improve on 0.6 after 2 tries",
    ),
    Case(
        "gd_minimise_max_dendrites",
        {"greater_is_better": False, "mode": "gd", "patience": 2, "min_evals_per_phase": 1, "max_dendrites": 2},
        n(1.0, 1.0, 1.0, 0.8, 0.8, 0.8, 0.7, 0.7, 0.7),
        ["C*", "C", "G", "C*", "C", "G", "C*", "C", "XR"],
        {"num_dendrites": 2, "best_num_dendrites": 2, "best_score": 0.7},
        "max_dendrites (2) reached",
    ),
    Case(
        "forced_growth_before_a_stall",
        {},  # patience 3, min_evals_per_phase 2: no stall for a while
        [("N", 0.5)] + c(0.2, 0.1, 0.1) + n(0.6),
        ["S*", "C", "C", "G", "C*"],
        {"num_dendrites": 1, "improved_since_growth": True},
    ),
    Case(
        "forced_growth_waits_for_the_last_dendrite_to_prove_itself",
        {"mode": "gd", "max_dendrites": 3},
        [("N", 0.5), ("N", 0.5), ("N", 0.6)],
        ["G*", "C", "G*"],
        {"num_dendrites": 2},
        "growth forced by the trainer",
    ),
    Case(
        "forced_growth_needs_room",
        {"max_dendrites": 0},
        [("N", 0.5), ("N", 0.6)],
        ["C*", "C*"],
        {"num_dendrites": 0, "phase": "neuron"},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_sequences(case: Case) -> None:
    t = make_tracker(**case.kwargs)
    decisions = run(t, case.events)
    assert [code(d) for d in decisions] == case.expected
    for key, value in case.state.items():
        assert getattr(t.state, key) == value, key
    assert case.reason in decisions[-1].reason
    assert t.is_complete == (t.phase == "complete")
    if t.is_complete:
        assert t.completed_reason == decisions[-1].reason


def test_gd_retry_applies_growth_to_restored_count() -> None:
    t = make_tracker(mode="gd", max_tries=2, **FAST)
    run(t, n(0.5, 0.5, 0.6, 0.6))  # d1 helps, d2 grown
    assert t.num_dendrites == 2 and t.state.best_num_dendrites == 1
    d = t.step(0.6)
    assert (d.action, d.restore_best) == (Action.GROW, True)
    assert t.num_dendrites == 2  # restored to 1, then grown to 2
    assert t.state.score_before_growth == 0.6 and t.state.tries == 1
    assert "retry 1 of 2" in d.reason


def test_candidate_step_records_task_score_only_in_history() -> None:
    t = make_tracker(**FAST)
    run(t, n(0.5, 0.5))
    t.candidate_step(0.2, task_score=0.99, step=40)
    assert t.best_score == 0.5
    last = t.history[-1]
    assert last["score"] == 0.99 and last["candidate_score"] == 0.2
    assert last["phase"] == "dendrite" and last["step"] == 40


def test_history_is_complete() -> None:
    t = make_tracker(**FAST, max_tries=0)
    t.step(0.5, step=10)
    t.step(0.5, step=20)
    t.candidate_step(0.1, step=25)
    t.candidate_step(0.2, step=30, force_grow=True)
    t.step(0.4, step=40)
    h = t.history
    assert [r["eval"] for r in h] == [0, 1, 2, 3, 4]
    assert [r["step"] for r in h] == [10, 20, 25, 30, 40]
    assert [r["phase"] for r in h] == ["neuron", "neuron", "dendrite", "dendrite", "neuron"]
    assert [r["action"] for r in h] == ["continue", "start_dendrite_phase", "continue", "grow", "complete"]
    assert all(type(r["phase"]) is str and type(r["action"]) is str for r in h)  # plain strings, as in JSON
    assert [r["num_dendrites"] for r in h] == [0, 0, 0, 1, 0]  # after each decision
    assert [r["new_best"] for r in h] == [True, False, False, False, False]
    assert [r["restore_best"] for r in h] == [False, False, False, False, True]
    assert [r["score"] for r in h] == [0.5, 0.5, None, None, 0.4]
    assert [r["candidate_score"] for r in h] == [None, None, 0.1, 0.2, None]
    assert all(r["reason"] for r in h)
    assert set(h[0]) == {
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
    }
    h[0]["action"] = "tampered"
    assert t.history[0]["action"] == "continue"  # callers get copies


# ---------------------------------------------------------------------------- finish


def test_finish_in_neuron_phase_restores_best() -> None:
    t2 = make_tracker(patience=5)
    run(t2, n(0.5, 0.6, 0.55))
    d = t2.finish("budget exhausted")
    assert (d.action, d.restore_best, d.reason) == (Action.COMPLETE, True, "budget exhausted")
    assert t2.is_complete and t2.completed_reason == "budget exhausted"
    assert t2.history[-1]["action"] == "complete" and t2.history[-1]["score"] is None


def test_finish_in_dendrite_phase_restores_best_architecture() -> None:
    t = make_tracker(**FAST)
    run(t, n(0.5, 0.5) + [("f", 0.1)] + n(0.6, 0.6) + c(0.3))
    assert t.phase == Phase.DENDRITE and t.num_dendrites == 1
    d = t.finish("max steps")
    assert d.restore_best and t.num_dendrites == t.state.best_num_dendrites == 1
    assert t.history[-1]["phase"] == "dendrite"


def test_finish_without_scores_has_nothing_to_restore() -> None:
    t = DendriteTracker()
    d = t.finish("nothing trained")
    assert (d.action, d.restore_best) == (Action.COMPLETE, False)


def test_finish_twice_is_noop() -> None:
    t = DendriteTracker()
    t.step(0.5)
    t.finish("first")
    d = t.finish("second")
    assert (d.action, d.restore_best, d.reason) == (Action.COMPLETE, False, "first")
    assert len(t.history) == 2


# ---------------------------------------------------------------------------- errors


def test_step_in_wrong_phase_raises() -> None:
    t = make_tracker(**FAST)
    with pytest.raises(RuntimeError, match="neuron"):
        t.candidate_step(0.1)
    run(t, n(0.5, 0.5))
    with pytest.raises(RuntimeError, match=r"in the 'dendrite' phase \(use candidate_step\(\)\)"):
        t.step(0.5)
    t.finish("done")
    with pytest.raises(RuntimeError, match="complete"):
        t.step(0.5)
    with pytest.raises(RuntimeError, match="complete"):
        t.candidate_step(0.5)


def test_candidate_step_in_gd_mode_raises() -> None:
    t = make_tracker(mode="gd", **FAST)
    run(t, n(0.5, 0.5))
    assert t.phase == Phase.NEURON
    with pytest.raises(RuntimeError, match="neuron"):
        t.candidate_step(0.1)


def test_nan_scores_raise() -> None:
    t = make_tracker(**FAST)
    with pytest.raises(ValueError, match="score"):
        t.step(math.nan)
    assert t.history == [] and t.best_score is None  # nothing recorded
    run(t, n(0.5, 0.5))
    with pytest.raises(ValueError, match="candidate_score"):
        t.candidate_step(float("nan"))
    with pytest.raises(ValueError, match="task_score"):
        t.candidate_step(0.1, task_score=float("nan"))
    assert t.state.evals_in_phase == 0


def test_accepts_numeric_like_scores() -> None:
    class FakeScalar:
        def __float__(self) -> float:
            return 0.25

    t = DendriteTracker()
    d = t.step(FakeScalar())  # type: ignore[arg-type]
    assert d.new_best and t.best_score == 0.25 and type(t.best_score) is float


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("patience", 0),
        ("patience", 1.5),
        ("min_evals_per_phase", 0),
        ("improvement_threshold", -0.1),
        ("improvement_threshold", math.nan),
        ("improvement_threshold_abs", -1e-9),
        ("max_dendrites", -1),
        ("max_tries", -1),
        ("candidate_patience", 0),
        ("mode", "other"),
        ("greater_is_better", "yes"),
    ],
)
def test_bad_settings_raise(name: str, value: Any) -> None:
    with pytest.raises(ValueError, match=name):
        make_tracker(**{name: value})


def test_a_config_made_invalid_after_construction_is_refused() -> None:
    arguments = DendriteTrainingArguments()
    arguments.max_tries = -2  # DendriteTrainingArguments validates in __post_init__ only
    with pytest.raises(ValueError, match="DendriteTrainingArguments.max_tries"):
        DendriteTracker(arguments)
    with pytest.raises(ValueError, match="DendriteConfig.mode"):
        DendriteTracker(DendriteTrainingArguments(), mode="pbb")
    with pytest.raises(ValueError, match="greater_is_better"):
        DendriteTracker(DendriteTrainingArguments(), greater_is_better=1)  # type: ignore[arg-type]


def test_decision_is_frozen_and_validated() -> None:
    d = Decision("continue")  # type: ignore[arg-type]
    assert d.action is Action.CONTINUE  # a valid string becomes the member
    with pytest.raises(FrozenInstanceError):
        d.action = Action.GROW  # type: ignore[misc]
    with pytest.raises(ValueError, match="action"):
        Decision("explode")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- Action, Phase


@pytest.mark.parametrize(
    ("member", "value"),
    [
        (Action.CONTINUE, "continue"),
        (Action.START_DENDRITE_PHASE, "start_dendrite_phase"),
        (Action.GROW, "grow"),
        (Action.COMPLETE, "complete"),
        (Phase.NEURON, "neuron"),
        (Phase.DENDRITE, "dendrite"),
        (Phase.COMPLETE, "complete"),
    ],
)
def test_members_are_their_plain_strings(member: Action | Phase, value: str) -> None:
    assert member == value and value == member and isinstance(member, str)
    assert hash(member) == hash(value) and {value: 1}[member] == 1
    assert type(member)(value) is member
    assert str(member) == f"{member}" == "%s" % member == format(member) == value  # logs print "grow"
    assert json.dumps({"action": member}) == json.dumps({"action": value})
    assert json.loads(json.dumps(member)) == value


def test_enums_have_exactly_the_documented_members() -> None:
    assert [a.value for a in Action] == ["continue", "start_dendrite_phase", "grow", "complete"]
    assert [p.value for p in Phase] == ["neuron", "dendrite", "complete"]
    assert hf_dendrites.Action is Action and hf_dendrites.Phase is Phase
    assert not [name for name in dir(tracker_module) if name.startswith(("ACTION_", "PHASE_"))]


def test_phase_is_a_phase_and_history_holds_plain_strings() -> None:
    t = make_tracker(**FAST)
    assert t.phase is Phase.NEURON and not t.is_complete
    run(t, n(0.5, 0.5))
    assert t.phase is Phase.DENDRITE
    state = t.state_dict()
    assert type(state["phase"]) is str and state["phase"] == "dendrite"
    assert [type(r["action"]) for r in state["history"]] == [str, str]
    assert json.loads(json.dumps(state)) == state


# ---------------------------------------------------------------------------- settings


def test_settings_come_from_the_training_arguments() -> None:
    arguments = DendriteTrainingArguments(
        patience=4,
        min_evals_per_phase=3,
        improvement_threshold=0.01,
        improvement_threshold_abs=0,
        max_dendrites=5,
        max_tries=2,
        candidate_patience=6,
        num_candidates=9,  # not a tracker setting
    )
    t = DendriteTracker(arguments, mode="gd", greater_is_better=False)
    assert t.settings == TrackerSettings(False, "gd", 4, 3, 0.01, 0.0, 5, 2, 6)
    assert t.settings == TrackerSettings.from_arguments(arguments, "gd", greater_is_better=False)
    assert type(t.settings.improvement_threshold_abs) is float  # state_dict writes 0.0, as it always did
    with pytest.raises(FrozenInstanceError):
        t.settings.patience = 1  # type: ignore[misc]
    assert make_tracker(patience=7).settings.max_dendrites == DendriteTrainingArguments().max_dendrites


def test_the_deprecated_config_spelling_gives_the_same_settings() -> None:
    with pytest.warns(FutureWarning, match=r"DendriteTrainingArguments\(patience=4, max_dendrites=5\)"):
        config = DendriteConfig(mode="gd", patience=4, max_dendrites=5)
    expected = DendriteTracker(DendriteTrainingArguments(patience=4, max_dendrites=5), mode="gd").settings
    assert DendriteTracker(config).settings == expected


def test_settings_defaults_are_the_training_arguments() -> None:
    # The tracker holds no defaults of its own: every one comes from DendriteTrainingArguments (mode: DendriteConfig).
    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(TrackerSettings))
    defaults = {**DendriteTrainingArguments().to_dict(), "mode": DendriteConfig().mode}
    settings = DendriteTracker().settings
    assert settings == TrackerSettings.from_arguments(DendriteTrainingArguments(), "pb", greater_is_better=True)
    assert settings.greater_is_better is True
    for f in dataclasses.fields(TrackerSettings):
        if f.name != "greater_is_better":
            assert getattr(settings, f.name) == defaults[f.name], f.name


def test_state_starts_empty_and_is_what_state_dict_writes() -> None:
    t = DendriteTracker()
    assert t.state == TrackerState() and t.state.phase is Phase.NEURON and t.history == []
    run(t, n(0.5))
    state = t.state_dict()
    assert list(state)[:2] == ["format_version", "config"]
    assert list(state)[2:] == [f.name for f in dataclasses.fields(TrackerState)]
    assert state["config"] == dataclasses.asdict(t.settings)
    assert {k: v for k, v in state.items() if k not in ("format_version", "config")} == dataclasses.asdict(t.state)


# ---------------------------------------------------------------------------- state_dict

ROUND_TRIP_SCRIPTS = {
    "pb": (
        {**FAST, "max_tries": 1, "max_dendrites": 3},
        n(0.5, 0.5)
        + c(0.1, 0.2, 0.2, 0.2)
        + n(0.6, 0.6)
        + c(0.3, 0.3, 0.3)
        + n(0.6)
        + [("f", 0.1)]
        + n(0.7, 0.7)
        + c(0.1, 0.1, 0.1)
        + n(0.71, 0.71),
    ),
    "gd_min": (
        {"greater_is_better": False, "mode": "gd", "patience": 2, "min_evals_per_phase": 1, "max_tries": 1},
        n(1.0, 1.0, 1.0, 0.9, 0.95, 0.95, 0.95, 0.95, 0.95, 0.95),
    ),
}


@pytest.mark.parametrize("script", sorted(ROUND_TRIP_SCRIPTS))
def test_state_dict_round_trip_continues_identically(script: str) -> None:
    kwargs, events = ROUND_TRIP_SCRIPTS[script]
    reference = make_tracker(**kwargs)
    expected = [code(d) for d in run(reference, events)]
    expected_full = run(make_tracker(**kwargs), events)
    assert reference.is_complete  # the scripts exercise the whole lifecycle
    phases_split = set()
    for split in range(len(events) + 1):
        first = make_tracker(**kwargs)
        decisions = run(first, events[:split])
        phases_split.add(first.phase)
        blob = json.dumps(first.state_dict())  # must be JSON-serialisable
        resumed = make_tracker(**kwargs)
        resumed.load_state_dict(json.loads(blob))
        decisions += run(resumed, events[split:])
        assert decisions == expected_full, f"split at {split}"
        assert [code(d) for d in decisions] == expected
        assert resumed.state_dict() == reference.state_dict()
    assert {"neuron", "complete"} <= phases_split
    if kwargs.get("mode", "pb") == "pb":
        assert "dendrite" in phases_split


def test_state_dict_is_a_copy() -> None:
    t = DendriteTracker()
    t.step(0.5)
    state = t.state_dict()
    state["history"][0]["score"] = 123.0
    assert t.history[0]["score"] == 0.5
    other = DendriteTracker()
    other.load_state_dict(state)
    state["history"][0]["score"] = 7.0
    assert other.history[0]["score"] == 123.0


def test_load_state_dict_missing_key_raises_and_leaves_tracker_untouched() -> None:
    t = make_tracker(**FAST)
    run(t, n(0.5, 0.5))
    state = t.state_dict()
    del state["tries"]
    fresh = DendriteTracker()
    before = fresh.state_dict()
    with pytest.raises(ValueError, match="tries"):
        fresh.check_state_dict(state)
    with pytest.raises(ValueError, match="tries"):
        fresh.load_state_dict(state)
    assert fresh.state_dict() == before


def test_check_state_dict_changes_nothing() -> None:
    t = make_tracker(**FAST)
    run(t, n(0.5, 0.5))
    fresh = make_tracker(**FAST)
    fresh.check_state_dict(t.state_dict())
    assert fresh.state == TrackerState()


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda s: s.update(surprise=1), "surprise"),
        (lambda s: s["config"].pop("patience"), "patience"),
        (lambda s: s["config"].update(patience=0), "DendriteTrainingArguments.patience"),
        (lambda s: s["config"].update(mode=[]), "DendriteConfig.mode"),
        (lambda s: s["config"].update(greater_is_better="yes"), "greater_is_better"),
        (lambda s: s.update(config=[]), "config"),
        (lambda s: s.update(phase="sleeping"), "phase"),
        (lambda s: s.update(phase=[]), "phase"),
        (lambda s: s.update(tries=1.5), "tries"),
        (lambda s: s.update(improved_since_growth=1), "improved_since_growth"),
        (lambda s: s.update(completed_reason=3), "completed_reason"),
        (lambda s: s.update(history={}), "history"),
        (lambda s: s.update(num_dendrites=-1), "num_dendrites"),
        (lambda s: s.update(best_score=float("nan")), "best_score"),
        (lambda s: s.update(format_version=99), "format_version"),
        (lambda s: s["history"][0].pop("action"), "action"),
    ],
)
def test_load_state_dict_rejects_bad_state(mutate: Any, match: str) -> None:
    t = DendriteTracker()
    t.step(0.5)
    state = json.loads(json.dumps(t.state_dict()))
    mutate(state)
    t = DendriteTracker()
    with pytest.raises(ValueError, match=match):
        t.load_state_dict(state)
    assert t.state == TrackerState()


def test_a_resumed_tracker_follows_its_own_settings_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    first = make_tracker(patience=9, min_evals_per_phase=1)
    run(first, n(0.5, 0.5))
    t = make_tracker(patience=1, min_evals_per_phase=1)
    with caplog.at_level("WARNING", logger="hf_dendrites.tracker"):
        t.load_state_dict(first.state_dict())
    assert t.settings.patience == 1 and t.state_dict()["config"]["patience"] == 1
    assert "resuming with patience=1 (the checkpoint was trained with 9)" in caplog.text
    # the new patience is what decides: one more flat evaluation is a stall now (it was not under 9)
    assert t.step(0.5).action == Action.START_DENDRITE_PHASE


@pytest.mark.parametrize(("setting", "stored", "current"), [("mode", "gd", "pb"), ("greater_is_better", False, True)])
def test_settings_that_cannot_change_mid_run_are_refused(setting: str, stored: Any, current: Any) -> None:
    state = make_tracker(**{setting: stored}).state_dict()
    t = make_tracker(**{setting: current})
    before = t.state_dict()
    with pytest.raises(ValueError, match=f"{setting}: checkpoint {stored!r}, now {current!r}"):
        t.load_state_dict(state)
    assert t.state_dict() == before


# ---------------------------------------------------------------------------- hygiene


def test_module_does_not_import_torch_or_print() -> None:
    source = Path(tracker_module.__file__).read_text()
    tree = ast.parse(source)
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in {"print", "input", "exit"}
    assert "torch" not in imported and "sys" not in imported


# ---------------------------------------------------------------------------- checkpoints written by 0.1.0
# tests/data/tracker_state_v1_*.json: made with hf_dendrites/tracker.py at commit ceb07af (version 0.1.0,
# state format_version 1), the parent of commit 4fbe95b that added them; each file's "about" says how.

V1_FIXTURES = sorted((Path(__file__).parent / "data").glob("tracker_state_v1_*.json"))


def replay(tracker: DendriteTracker, event: list[Any]) -> Decision:
    kind, value, step = event
    if kind == "n":
        return tracker.step(value, step=step)
    return tracker.candidate_step(value, step=step, force_grow=kind == "f")


def test_v1_fixtures_exist() -> None:
    assert [path.name for path in V1_FIXTURES] == ["tracker_state_v1_gd.json", "tracker_state_v1_pb.json"]


@pytest.mark.parametrize("path", V1_FIXTURES, ids=[path.stem for path in V1_FIXTURES])
def test_v1_checkpoints_resume_with_the_same_decisions(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    document = json.loads(path.read_text(encoding="utf-8"))
    for checkpoint in document["checkpoints"]:
        state = checkpoint["state"]
        split = checkpoint["evaluations_before"]
        # the same run today writes the same state, key for key
        fresh = make_tracker(**state["config"])
        for event in document["events"][:split]:
            replay(fresh, event)
        assert json.loads(json.dumps(fresh.state_dict())) == state
        assert list(fresh.state_dict()) == list(state)
        # and a tracker that loads the stored state continues as that release did
        resumed = make_tracker(**state["config"])
        resumed.load_state_dict(state)
        assert resumed.state_dict() == state
        caplog.clear()
        with caplog.at_level("DEBUG", logger="hf_dendrites.tracker"):
            decisions = [replay(resumed, event) for event in checkpoint["events"]]
        assert [
            {"action": d.action, "new_best": d.new_best, "restore_best": d.restore_best, "reason": d.reason}
            for d in decisions
        ] == checkpoint["decisions"]
        log = [[r.levelname, r.getMessage()] for r in caplog.records if r.name == "hf_dendrites.tracker"]
        assert log == checkpoint["log"]
        assert json.loads(json.dumps(resumed.state_dict())) == checkpoint["final_state"]
        assert resumed.state_dict() == checkpoint["final_state"]
