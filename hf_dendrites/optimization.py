"""Optimizers for the two phases, and swapping them inside a running `Trainer`.

Neuron phase: the trainer's own optimizer and schedule over the trainable weights (installed
dendrites at their own `dendrite_learning_rate` (by default 1e-2 in PB mode, 1e-3 in GD mode), on the
same schedule).
Dendrite phase: Adam over the candidates only, at a constant `candidate_learning_rate`.

Growth replaces parameters, so the optimizer must be rebuilt. A callback cannot do that through
the optimizer it is handed (the training loop reads the trainer's attribute), so this works on
the trainer: drop the old optimizer from accelerate, create and prepare the new one, recreate the
schedule and advance it to the current step, and update the callback handler's references.
(`optimizer.add_param_group` is not an option: it breaks torch's schedulers.)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from transformers import Trainer

from .model import candidate_parameters, dendrite_parameters, paused_parameters
from .trainer_internals import replace_optimizer
from .training_args import DendriteTrainingArguments


def in_dendrite_phase(model: nn.Module) -> bool:
    return paused_parameters(model) is not None


def _arguments(model: nn.Module, arguments: DendriteTrainingArguments | None) -> DendriteTrainingArguments:
    """The run's settings; without them, those given to the model's config the deprecated way (or the defaults)."""
    return arguments if arguments is not None else model.dendrite_config.legacy_training_arguments()


def candidate_optimizer(model: nn.Module, arguments: DendriteTrainingArguments | None = None) -> torch.optim.Optimizer:
    """Adam over the candidates at `candidate_learning_rate`: their objective is a correlation, with no weight decay."""
    parameters = candidate_parameters(model)
    if not parameters:
        raise RuntimeError("no candidates to optimise: start a dendrite phase first")
    return torch.optim.Adam(parameters, lr=_arguments(model, arguments).candidate_learning_rate)


def apply_dendrite_learning_rate(
    optimizer: torch.optim.Optimizer, model: nn.Module, arguments: DendriteTrainingArguments | None = None
) -> None:
    """Move the installed dendrites' parameters into groups of their own at `dendrite_learning_rate`.

    Called on a freshly created optimizer, before its schedule exists (a schedule reads every
    group's learning rate when it is built, so it then scales the dendrite groups too).
    """
    config = getattr(model, "dendrite_config", None)
    if config is None:
        return
    rate = _arguments(model, arguments).resolved_dendrite_learning_rate(config.mode)
    dendrite_ids = {id(parameter) for parameter in dendrite_parameters(model)}
    moved = []
    for group in optimizer.param_groups:
        if group.get("dendrites"):
            return  # already split
        mine = [parameter for parameter in group["params"] if id(parameter) in dendrite_ids]
        if mine:
            group["params"] = [parameter for parameter in group["params"] if id(parameter) not in dendrite_ids]
            moved.append({**{k: v for k, v in group.items() if k != "params"}, "params": mine})
    optimizer.param_groups[:] = [group for group in optimizer.param_groups if group["params"]]
    for group in moved:
        optimizer.add_param_group({**group, "lr": rate, "dendrites": True})


def phase_optimizer(
    model: nn.Module,
    create_trainer_optimizer: Callable[[], torch.optim.Optimizer],
    arguments: DendriteTrainingArguments | None = None,
) -> torch.optim.Optimizer:
    """The optimizer for the model's current phase; the one place both the trainer and a rebuild get it.

    Dendrite phase: Adam over the candidates. Neuron phase: what `create_trainer_optimizer` (the
    Trainer's own `create_optimizer`, following `TrainingArguments`) builds, with the installed
    dendrites moved to their own learning rate.
    """
    if in_dendrite_phase(model):
        return candidate_optimizer(model, arguments)
    optimizer = create_trainer_optimizer()
    apply_dendrite_learning_rate(optimizer, model, arguments)
    return optimizer


def constant_schedule(optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def rebuild_optimizer(trainer: Trainer, arguments: DendriteTrainingArguments | None = None) -> None:
    """Give `trainer` a fresh optimizer and schedule for the model's current trainable parameters
    (`arguments`: the run's dendrite settings, for the candidates' and dendrites' learning rates)."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    model.zero_grad(set_to_none=True)
    old = trainer.optimizer
    # Trainer's own create_optimizer (which builds only when none is set), not an override that
    # would apply the phase logic a second time
    trainer.optimizer, trainer.lr_scheduler = None, None
    optimizer = phase_optimizer(model, lambda: Trainer.create_optimizer(trainer), arguments)

    def schedule(prepared: torch.optim.Optimizer) -> Any:
        if in_dendrite_phase(model):
            return constant_schedule(prepared)
        scheduler = trainer.create_scheduler(num_training_steps=trainer.state.max_steps, optimizer=prepared)
        advance_schedule(scheduler, trainer.state.global_step)
        return scheduler

    replace_optimizer(trainer, old, optimizer, schedule)


def optimizer_state_by_name(optimizer: torch.optim.Optimizer, names: dict[int, str]) -> dict[str, dict]:
    """The per-parameter state (Adam's moments and step) of `optimizer`, keyed by parameter name.

    `names` maps `id(parameter)` to its name, taken before any parameter was replaced (a revert or
    growth may swap parameter objects; names outlive them).
    """
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the torch optimizer
    return {names[id(parameter)]: state for parameter, state in inner.state.items() if id(parameter) in names}


def load_optimizer_state_by_name(optimizer: torch.optim.Optimizer, model: nn.Module, states: dict[str, dict]) -> int:
    """Give every parameter of a fresh `optimizer` the state saved under its name, when the shapes
    still match (a grown dendrite tensor does not, and starts fresh). Returns how many got one."""
    inner = getattr(optimizer, "optimizer", optimizer)
    optimised = {id(parameter) for group in inner.param_groups for parameter in group["params"]}
    restored = 0
    for name, parameter in model.named_parameters():
        state = states.get(name)
        if id(parameter) not in optimised or not state:
            continue
        if any(torch.is_tensor(v) and v.dim() > 0 and v.shape != parameter.shape for v in state.values()):
            continue
        inner.state[parameter] = {
            key: value.to(parameter.device) if torch.is_tensor(value) and value.dim() > 0 else value
            for key, value in state.items()
        }
        restored += 1
    return restored


def advance_schedule(scheduler: torch.optim.lr_scheduler.LRScheduler, steps: int) -> None:
    """Step a fresh schedule to where training is, so the learning rate continues its curve."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "scheduler.step() before optimizer.step()"
        for _ in range(steps):
            scheduler.step()
