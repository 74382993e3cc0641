"""Research diagnostics of a dendrite phase: how close its error signal, and the candidates it trains,
come to exact backprop. Off by default: each measurement costs an extra forward and backward pass.

- `error_alignment`: on the first `steps` training steps of each dendrite phase, the cosine per layer
  between the phase's error signal and the exact backprop error (1.0 for backprop itself, so only
  other signals are measured).
- `candidate_exact_correlation`: at each evaluation of a dendrite phase, on the last training batch,
  the candidates' correlation with the exact error (the score their dendrites would start from);
  for backprop too, as the reference the other signals are read against.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .error_signals import candidate_exact_correlation, error_alignment


def _entry(phase: int, step: int, layers: dict[str, float]) -> dict[str, Any]:
    finite = [value for value in layers.values() if value == value]
    return {
        "dendrite_phase": phase,
        "step": step,
        "mean": sum(finite) / len(finite) if finite else None,
        "layers": layers,
    }


class SignalDiagnostics:
    """Records the two diagnostics per dendrite phase; `steps` = 0 records nothing."""

    def __init__(self, steps: int = 0) -> None:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"error_alignment_steps must be an int >= 0, got {steps!r}")
        self.steps = steps
        self.error_alignment: list[dict[str, Any]] = []
        self.candidate_exact_correlation: list[dict[str, Any]] = []
        self._last_loss: Callable[[], torch.Tensor] | None = None

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
        self._last_loss = run_loss
        measured = sum(entry["dendrite_phase"] == phase for entry in self.error_alignment)
        if signal != "backprop" and measured < self.steps:
            self.error_alignment.append(_entry(phase, step, error_alignment(model, signal, run_loss, labels)))

    def measure_candidates(self, model: nn.Module, phase: int, step: int) -> None:
        """Called at each dendrite-phase evaluation, before the candidates may become dendrites."""
        if self.steps and self._last_loss is not None:
            layers = candidate_exact_correlation(model, self._last_loss)
            self.candidate_exact_correlation.append(_entry(phase, step, layers))

    def state_dict(self) -> dict[str, list[dict[str, Any]]]:
        return {
            "error_alignment": self.error_alignment,
            "candidate_exact_correlation": self.candidate_exact_correlation,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.error_alignment = list(state.get("error_alignment", []))
        self.candidate_exact_correlation = list(state.get("candidate_exact_correlation", []))
