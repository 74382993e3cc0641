"""The private API of transformers, accelerate and PEFT the library relies on, pinned by name and signature.

`hf_dendrites/trainer_internals.py` holds every such touch; an upgrade that renames or reshapes
one of them fails here, naming it, instead of somewhere in a growth.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import accelerate
import peft
import pytest
import torch
import transformers
from accelerate import Accelerator
from peft.tuners.tuners_utils import BaseTuner
from tiny_models import tiny_model
from transformers import Trainer, TrainingArguments

from hf_dendrites import trainer_internals
from hf_dendrites.trainer_internals import CHECKED_AGAINST, OVERRIDDEN_HOOKS, replace_optimizer

PACKAGE = Path(trainer_internals.__file__).parent


def parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_the_installed_versions_are_the_ones_checked():
    """A new version may well work: re-run this file, check the names below, then update CHECKED_AGAINST."""
    installed = {
        "transformers": transformers.__version__,
        "accelerate": accelerate.__version__,
        "peft": peft.__version__,
    }
    assert installed == CHECKED_AGAINST


@pytest.mark.parametrize("name", sorted(OVERRIDDEN_HOOKS))
def test_every_overridden_trainer_hook_exists_with_the_parameters_relied_on(name):
    hook = getattr(Trainer, name)
    assert parameters(hook)[1 : 1 + len(OVERRIDDEN_HOOKS[name])] == list(OVERRIDDEN_HOOKS[name])


def test_the_private_trainer_and_accelerate_members_used_exist():
    for name, expected in {
        "_remove_unused_columns": ["self", "dataset", "description"],
        "_get_collator_with_removed_columns": ["self", "data_collator", "description"],
        "_prepare_inputs": ["self", "inputs"],
        "_get_output_dir": ["self", "trial"],
        "_load_from_checkpoint": ["self", "resume_from_checkpoint", "model"],
    }.items():
        assert parameters(getattr(Trainer, name))[: len(expected)] == expected, name
    accelerator = Accelerator(cpu=True)
    assert isinstance(accelerator._optimizers, list) and isinstance(accelerator._models, list)
    for name in ("_unload_and_optionally_merge", "_check_merge_allowed", "_replace_module"):
        assert callable(getattr(BaseTuner, name)), name  # adapters.py: merge_and_unload keeps the dendrites


def test_replacing_the_optimizer_reaches_accelerate_and_the_callbacks(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to=[])
    trainer = Trainer(tiny_model(num_labels=2), args)
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    old = trainer.optimizer = trainer.accelerator.prepare_optimizer(trainer.optimizer)
    new = torch.optim.SGD(trainer.model.parameters(), lr=0.1)
    replace_optimizer(trainer, old, new, lambda prepared: torch.optim.lr_scheduler.LambdaLR(prepared, lambda _: 1.0))
    assert old not in trainer.accelerator._optimizers and trainer.optimizer in trainer.accelerator._optimizers
    assert trainer.optimizer.optimizer is new  # accelerate's wrapper around the new optimizer
    assert trainer.callback_handler.optimizer is trainer.optimizer
    assert trainer.callback_handler.lr_scheduler is trainer.lr_scheduler


def private_touches(source: str) -> set[str]:
    """Attributes starting with one underscore read or written on anything but `self`/`cls`/`super()`."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in {"self", "cls"}:
                continue
            if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "super":
                continue
            found.add(node.attr)
    return found


def test_the_finder_sees_a_private_touch():
    assert private_touches("trainer.accelerator._optimizers = []\nself._mine = 1\nsuper()._x()") == {"_optimizers"}


def test_no_other_module_touches_transformers_or_accelerate_internals():
    trainer_like = {"_optimizers", "_models", "_is_accelerate_prepared", "_save_checkpoint", "_load_from_checkpoint",
                    "_get_output_dir", "_prepare_inputs", "_remove_unused_columns",
                    "_get_collator_with_removed_columns"}  # fmt: skip
    offenders = {
        path.name: sorted(private_touches(path.read_text(encoding="utf-8")) & trainer_like)
        for path in PACKAGE.glob("*.py")
        if path.name != "trainer_internals.py"
    }
    assert {name: touched for name, touched in offenders.items() if touched} == {}
