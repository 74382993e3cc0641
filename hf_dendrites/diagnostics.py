"""Research diagnostics of a dendrite phase: how close its error signal, and the candidates it trains,
come to exact backprop. Off by default: each measurement costs an extra forward and backward pass.

- `error_alignment`: on the first `steps` training steps of each dendrite phase, the cosine per layer
  between the phase's error signal and the exact backprop error (1.0 for backprop itself, so only
  other signals are measured).
- `candidate_exact_correlation`: at each evaluation of a dendrite phase, on the last `steps` training
  batches, the candidates' correlation with the exact error (the score their dendrites would start
  from), next to its chance level (the same with the error rows shuffled: the best of several
  candidates always finds some correlation on a finite sample); for backprop too, as the reference
  the other signals are read against.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .error_signals import candidate_exact_correlation, error_alignment


def _mean(layers: dict[str, float]) -> float | None:
    finite = [value for value in layers.values() if value == value]
    return sum(finite) / len(finite) if finite else None


def _entry(phase: int, step: int, layers: dict[str, float]) -> dict[str, Any]:
    return {"dendrite_phase": phase, "step": step, "mean": _mean(layers), "layers": layers}


class SignalDiagnostics:
    """Records the two diagnostics per dendrite phase; `steps` = 0 records nothing."""

    def __init__(self, steps: int = 0) -> None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"error_alignment_steps must be an int >= 0, got {steps!r}")
        self.steps = steps
        self.error_alignment: list[dict[str, Any]] = []
        self.candidate_exact_correlation: list[dict[str, Any]] = []
        self._recent_losses: deque[Callable[[], torch.Tensor]] = deque(maxlen=max(steps, 1))

    def observe_step(
        self,
        model: nn.Module,
        signal: str,
        phase: int,
        step: int,
        run_loss: Callable[[], torch.Tensor],
        labels: torch.Tensor | None,
    ) -> None:
        """Called before each dendrite-phase training step with a way to recompute its loss."""
        if not self.steps:
            return
        self._recent_losses.append(run_loss)
        measured = sum(entry["dendrite_phase"] == phase for entry in self.error_alignment)
        if signal != "backprop" and measured < self.steps:
            self.error_alignment.append(_entry(phase, step, error_alignment(model, signal, run_loss, labels)))

    def measure_candidates(self, model: nn.Module, phase: int, step: int) -> None:
        """Called at each dendrite-phase evaluation, before the candidates may become dendrites."""
        if self.steps and self._recent_losses:
            layers, chance = candidate_exact_correlation(model, list(self._recent_losses))
            entry = _entry(phase, step, layers)
            entry.update(chance_mean=_mean(chance), chance_layers=chance, batches=len(self._recent_losses))
            self.candidate_exact_correlation.append(entry)

    def state_dict(self) -> dict[str, list[dict[str, Any]]]:
        return {
            "error_alignment": self.error_alignment,
            "candidate_exact_correlation": self.candidate_exact_correlation,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.error_alignment = list(state.get("error_alignment", []))
        self.candidate_exact_correlation = list(state.get("candidate_exact_correlation", []))
