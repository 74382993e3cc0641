"""What a `Trainer` gives a cached dendrite phase: its training batches in a seeded order, and its loss.

The pass sees the training set as the training steps do (same collator, same column removal, the
`candidate_holdout_fraction` part alone when one is held aside) in an order drawn from the phase's
seed and unsharded, so every process of a distributed run caches the same rows and picks the same
candidates. The order is random so that the pass can stop as soon as every layer's cache is full:
a random prefix of the examples is a uniform sample, and a cache smaller than the data costs a
pass over only the examples it needs. The loss is the trainer's own `compute_loss` (a distillation
trainer's included), so candidates learn the error of the objective the model trains on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from transformers import Trainer

from .dendrite_phase import DendritePhaseReport, run_dendrite_phase
from .holdout import examples_at, holdout_split
from .trainer_internals import prepare_inputs, training_columns
from .training_args import DendriteTrainingArguments

DESCRIPTION = "Dendrite phase"


def phase_dataset(trainer: Trainer, holdout_fraction: float) -> Dataset:
    """The training set, or its held-aside part with `holdout_fraction` > 0 (`holdout.py`)."""
    dataset = trainer.train_dataset
    if dataset is None:
        raise ValueError("a dendrite phase needs the trainer's train_dataset")
    if not holdout_fraction:
        return dataset
    _, held = holdout_split(len(dataset), holdout_fraction, trainer.args.seed)
    return examples_at(dataset, held)


def phase_batches(trainer: Trainer, holdout_fraction: float = 0.0, seed: int = 0) -> Iterator[dict[str, Any]]:
    """Training batches in an order drawn from `seed`, on the model's device, collated as the training
    steps collate them."""
    dataset = phase_dataset(trainer, holdout_fraction)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    dataset = examples_at(dataset, order)
    # the model's forward decides which columns a batch keeps, exactly as in get_train_dataloader
    dataset, collator = training_columns(trainer, dataset, trainer.data_collator, DESCRIPTION)
    loader = DataLoader(dataset, batch_size=trainer.args.per_device_train_batch_size, collate_fn=collator)
    for batch in loader:
        yield prepare_inputs(trainer, batch)


def phase_loss(trainer: Trainer, model: torch.nn.Module) -> Callable[[Mapping[str, Any]], torch.Tensor]:
    """The trainer's training loss of `model` on a prepared batch."""

    def compute(batch: Mapping[str, Any]) -> torch.Tensor:
        with trainer.compute_loss_context_manager():
            return trainer.compute_loss(model, dict(batch))

    return compute


def trainer_dendrite_phase(
    trainer: Trainer, model: torch.nn.Module, arguments: DendriteTrainingArguments, generator: torch.Generator
) -> DendritePhaseReport:
    """`run_dendrite_phase` on the trainer's training batches and loss (`model`: the unwrapped one)."""
    # the order's seed is the phase's own, read without drawing from it: the candidates start as before
    batches = phase_batches(trainer, arguments.candidate_holdout_fraction, seed=generator.initial_seed())
    return run_dendrite_phase(
        model, batches, phase_loss(trainer, model), generator=generator, arguments=arguments, stop_when_full=True
    )
