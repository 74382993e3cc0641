"""A whole dendrite phase in one call: cache the frozen network's rows, fit candidates, choose.

`run_dendrite_phase(model, batches, compute_loss)` works on any model prepared with
`add_dendrites`, inside or outside a `Trainer`: it leaves every layer holding its candidates and
each neuron's choice, and `grow(model)` then installs them. The model's weights and predictions do
not change. `DendriteTrainer` calls it when the evaluation metric stalls; the cost is one
forward and backward pass over the training batches (or, in random order, over as many as fill the
cache) plus the candidate epochs on the cache.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .candidate_cache import collect_candidate_rows, rows_per_layer
from .candidate_fit import FitSettings, LayerFit, fit_layer
from .model import dendrite_layers, paused_parameters
from .training_args import DendriteTrainingArguments

logger = logging.getLogger(__name__)


@dataclass
class DendritePhaseReport:
    """What a dendrite phase found, per layer and overall (scores are absolute correlations)."""

    scores: dict[str, float]  # held-out score of the kept candidates, mean over neurons
    chance: dict[str, float]  # the same with the held-out errors shuffled
    train_scores: dict[str, float]  # the kept candidates on the rows they trained on
    rows: dict[str, int]  # cached rows per layer (training + scoring)
    skipped: dict[str, str] = field(default_factory=dict)  # layer -> why its candidates did not train
    cache_seconds: float = 0.0
    fit_seconds: float = 0.0

    @property
    def score(self) -> float:
        """Mean over layers of the held-out score: the phase's candidate correlation."""
        return sum(self.scores.values()) / len(self.scores) if self.scores else 0.0

    @property
    def chance_score(self) -> float:
        return sum(self.chance.values()) / len(self.chance) if self.chance else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "chance": self.chance_score,
            "scores": dict(self.scores),
            "chance_per_layer": dict(self.chance),
            "train_scores": dict(self.train_scores),
            "rows": dict(self.rows),
            "skipped": dict(self.skipped),
            "seconds": {"cache": self.cache_seconds, "fit": self.fit_seconds},
        }


def fit_settings(arguments: DendriteTrainingArguments) -> FitSettings:
    return FitSettings(
        num_candidates=arguments.num_candidates,
        epochs=arguments.candidate_epochs,
        batch_size=arguments.candidate_batch_size,
        learning_rate=arguments.candidate_learning_rate,
        score_fraction=arguments.candidate_score_fraction,
        shuffled_errors=arguments.candidate_shuffled_errors,
        init_scale=arguments.candidate_init_scale,
    )


def run_dendrite_phase(
    model: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    compute_loss: Callable[[Mapping[str, Any]], torch.Tensor],
    *,
    generator: torch.Generator | None = None,
    arguments: DendriteTrainingArguments | None = None,
    stop_when_full: bool = False,
) -> DendritePhaseReport:
    """Train candidates for every dendrite layer of `model` on the errors of `batches`; `grow(model)` installs them.

    Args:
        model: prepared with `add_dendrites` (PB mode), outside a streaming dendrite phase.
        batches: the training batches, on the model's device, in a fixed order (one pass at most).
        compute_loss: runs the model on a batch and returns the scalar training loss.
        generator: seeds candidate weights, row sampling and the scoring split (reproducible phases).
        arguments: the candidate settings (`DendriteTrainingArguments`); default: those given to the model's
            `DendriteConfig` the deprecated way, over the defaults.
        stop_when_full: `batches` come in random order: stop reading them once every layer has cached its
            `candidate_cache_rows` (a random prefix is a uniform sample), so a small cache costs a short pass.
    """
    config = getattr(model, "dendrite_config", None)
    if config is None:
        raise ValueError("run_dendrite_phase needs a model prepared with add_dendrites(model, config)")
    if config.mode != "pb":
        raise ValueError(f"a dendrite phase trains PB candidates; mode={config.mode!r} grows without one")
    arguments = arguments if arguments is not None else config.legacy_training_arguments()
    if paused_parameters(model) is not None:
        raise RuntimeError("a streaming dendrite phase is running (start_candidates); call grow() or stop_candidates()")
    layers = dendrite_layers(model)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    budget = arguments.candidate_cache_gib * 2**30
    started = time.perf_counter()
    cached = collect_candidate_rows(
        model,
        batches,
        compute_loss,
        max_rows=rows_per_layer(layers, budget, arguments.candidate_cache_rows),
        generator=generator,
        error_signal=arguments.error_signal,
        positions=arguments.candidate_positions,
        stop_when_full=stop_when_full,
    )
    cache_seconds = time.perf_counter() - started
    missing = sorted(set(layers) - set(cached))
    if missing:
        raise RuntimeError(
            f"the dendrite phase's pass found no row with a finite, non-zero error for {missing[:3]}"
            f"{'...' if len(missing) > 3 else ''}: check that the loss reaches these layers and is finite"
        )
    settings = fit_settings(arguments)
    fits: dict[str, LayerFit] = {}
    started = time.perf_counter()
    for name, layer in layers.items():
        fits[name] = fit_layer(layer, cached[name], settings, generator)
        if fits[name].skipped:
            logger.warning(
                "dendrites: candidates of %s not trained: %s (its dendrite will be inert)", name, fits[name].skipped
            )
    fit_seconds = time.perf_counter() - started
    for name, layer in layers.items():
        fit = fits[name]
        layer.install_candidates(fit.weight, fit.bias, fit.cascade, fit.choice, fit.basis)
    report = DendritePhaseReport(
        scores={name: fit.score for name, fit in fits.items()},
        chance={name: fit.chance for name, fit in fits.items()},
        train_scores={name: fit.train_score for name, fit in fits.items()},
        rows={name: len(cached[name]) for name in fits},
        skipped={name: fit.skipped for name, fit in fits.items() if fit.skipped},
        cache_seconds=cache_seconds,
        fit_seconds=fit_seconds,
    )
    logger.info(
        "dendrites: candidate correlation %.4f (chance %.4f) after %.1f s caching and %.1f s fitting",
        report.score,
        report.chance_score,
        cache_seconds,
        fit_seconds,
    )
    return report
