"""Training seconds and optimizer steps per phase and number of dendrites: what a step costs at each size."""

from __future__ import annotations

import copy
import time
from typing import Any

TIMED_PHASES = ("neuron", "dendrite")


class StepTimer:
    """`{phase: {str(dendrites): {"seconds": s, "steps": n}}}`, evaluation excluded (steps only)."""

    def __init__(self) -> None:
        self.step_time: dict[str, dict[str, dict[str, float]]] = {phase: {} for phase in TIMED_PHASES}
        self._started: tuple[str, int, float] | None = None

    def start(self, phase: str, dendrites: int) -> None:
        self._started = (phase, dendrites, time.perf_counter())

    def stop(self) -> None:
        if self._started is not None and self._started[0] in self.step_time:
            phase, dendrites, started = self._started
            entry = self.step_time[phase].setdefault(str(dendrites), {"seconds": 0.0, "steps": 0})
            entry["seconds"] += time.perf_counter() - started
            entry["steps"] += 1
        self._started = None

    @property
    def phase_seconds(self) -> dict[str, float]:
        """Training seconds spent in each phase, whatever the number of dendrites."""
        return {phase: sum(e["seconds"] for e in by_size.values()) for phase, by_size in self.step_time.items()}

    @property
    def phase_steps(self) -> dict[str, int]:
        """Optimizer steps taken in each phase."""
        return {phase: sum(int(e["steps"]) for e in by_size.values()) for phase, by_size in self.step_time.items()}

    def state_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.step_time)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_time = {phase: {} for phase in TIMED_PHASES} | copy.deepcopy(state)
