"""Every use of transformers', accelerate's and PEFT's private API, in one place.

Growth changes a model while a `Trainer` runs it, and some of what that needs has no public API:
an optimizer swapped mid-run must replace the old one inside accelerate (which keeps its own list
for gradient clipping and state saving) and inside the callback handler; an evaluation before
`train()` must not register the model with accelerate; a dendrite phase collates batches the
way the training loop does; a checkpoint must be complete before rotation. Everything of that kind
goes through this module, and `tests/test_trainer_internals.py` pins each private name and
signature against the versions below, so an upgrade that moves one fails there, by name.

Private methods that `DendriteTrainer`, `DistillationTrainer` and the restart callbacks override
or wrap are listed in `OVERRIDDEN_HOOKS` for the same test.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

# The versions these touches were written against (the pinning test reads them).
CHECKED_AGAINST = {"transformers": "5.23.0", "accelerate": "1.15.0", "peft": "0.21.2"}

# Private Trainer methods overridden (subclasses) or wrapped (callbacks), with the parameters relied on.
OVERRIDDEN_HOOKS = {
    "_save_checkpoint": ("model", "trial"),  # DendriteTrainer, restart callbacks: state in before rotation
    "_run_epoch": ("model", "epoch"),  # DendriteTrainer: no epoch once a resumed run is finished
    "_get_train_sampler": ("train_dataset",),  # DendriteTrainer: holdout sampler
    "_set_signature_columns_if_needed": (),  # DistillationTrainer: keeps the teacher_logits column
}


def replace_optimizer(
    trainer: Trainer,
    old: torch.optim.Optimizer | None,
    optimizer: torch.optim.Optimizer,
    make_scheduler: Callable[[Any], Any],
) -> None:
    """Give a running `trainer` a new optimizer and the schedule `make_scheduler(prepared_optimizer)` builds.

    The `old` optimizer leaves accelerate's list (it would otherwise still be clipped and saved) and
    the callback handler (whose `on_*` events hand callbacks the optimizer in use).
    """
    accelerator = trainer.accelerator
    accelerator._optimizers = [kept for kept in accelerator._optimizers if kept is not old]
    trainer.optimizer = accelerator.prepare_optimizer(optimizer)
    trainer.lr_scheduler = make_scheduler(trainer.optimizer)
    handler = trainer.callback_handler
    handler.optimizer = trainer.optimizer
    handler.lr_scheduler = trainer.lr_scheduler


@contextlib.contextmanager
def unregistered_evaluation(trainer: Trainer) -> Iterator[None]:
    """Evaluate before `train()` without registering the model with accelerate.

    After a registration `train()` no longer wraps the model for distributed training, and the
    ranks of a multi-process run would silently diverge.
    """
    prepared_models, wrapped = list(trainer.accelerator._models), trainer.model_wrapped
    was_prepared = "_is_accelerate_prepared" in trainer.model.__dict__
    try:
        yield
    finally:
        trainer.accelerator._models[:] = prepared_models
        trainer.model_wrapped = wrapped
        if not was_prepared:
            trainer.model.__dict__.pop("_is_accelerate_prepared", None)


def training_columns(trainer: Trainer, dataset: Any, collator: Any, description: str) -> tuple[Any, Any]:
    """(dataset, collator) with the columns the model's forward does not take removed, as the
    training loop's `get_train_dataloader` removes them."""
    try:
        import datasets

        is_hf_dataset = isinstance(dataset, datasets.Dataset)
    except ImportError:  # pragma: no cover - datasets is a dependency
        is_hf_dataset = False
    if is_hf_dataset:
        return trainer._remove_unused_columns(dataset, description=description), collator
    return dataset, trainer._get_collator_with_removed_columns(collator, description=description)


def prepare_inputs(trainer: Trainer, batch: dict[str, Any]) -> dict[str, Any]:
    """A collated batch on the model's device, as a training step receives it."""
    return trainer._prepare_inputs(batch)


def checkpoint_folder(trainer: Trainer, trial: Any = None) -> Path:
    """The folder the trainer's checkpoint of its current step is written to."""
    return Path(trainer._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{trainer.state.global_step}"


def load_checkpoint_weights(trainer: Trainer, folder: str | Path) -> None:
    """Load a checkpoint's model weights into the trainer's model, as `train(resume_from_checkpoint=...)` does."""
    trainer._load_from_checkpoint(str(folder))


def wrap_save_checkpoint(trainer: Trainer, wrapper: Callable[[Callable[..., None], Any, Any], None]) -> None:
    """Route `trainer`'s checkpoint saves through `wrapper(original_save, model, trial)`."""
    original = trainer._save_checkpoint

    def save_checkpoint(model: torch.nn.Module, trial: Any) -> None:
        wrapper(original, model, trial)

    trainer._save_checkpoint = save_checkpoint
