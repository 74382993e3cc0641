"""Dendrites in a PEFT model (LoRA): saving, loading, merging.

`add_dendrites(peft_model, config)` puts a dendrite on the Linear each matched LoRA layer wraps
(see `targets.py`) and on matched plain Linear layers; with the base frozen, only LoRA, the
heads PEFT trains and the dendrites train. Saving writes PEFT's adapter folder plus two files:

- `dendrites.safetensors`: every parameter of the dendrite layers except the base weights;
- `dendrite_config.json`: the `dendrites` record (config, dendrites per layer), as in a full save.

The adapter file also gets each dendrite layer's settings record under the layer's `weight` key
(see `dendrite_modeling.SETTINGS_KEY`): plain `PeftModel.from_pretrained` then fails on a size
mismatch instead of loading the adapter without its dendrites. `hf_dendrites.from_pretrained`
restores both onto the base model.

`merge_and_unload()` / `unload()` of a PEFT model with dendrites keep the dendrites: LoRA is
merged into the Linear inside each dendrite layer, and the returned transformers model carries
the dendrites (and saves in the full format).
"""

from __future__ import annotations

import json
import os
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .config import DendriteConfig
from .dendrite_modeling import settings_key, settings_tensor
from .layer import DendriteLinear
from .model import dendrite_layers, wrap_target_layers
from .serialization import apply_structure, check_settings_of_file, dendrite_structure

# peft is imported where it is used: importing it costs about a second, and plain models never need it.

ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
DENDRITE_WEIGHTS = "dendrites.safetensors"
DENDRITE_RECORD = "dendrite_config.json"

Adopt = Callable[[nn.Module, DendriteConfig], None]


def is_adapter_folder(folder: Path) -> bool:
    return (folder / DENDRITE_RECORD).is_file() and (folder / ADAPTER_CONFIG).is_file()


def dendrite_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The dendrite layers' own parameters (dendrites and candidates, not the base weights)."""
    return {
        f"{name}.{parameter_name}": parameter.detach().contiguous()
        for name, layer in dendrite_layers(model).items()
        for parameter_name, parameter in layer.named_parameters(recurse=False)
    }


def save_adapter_with_dendrites(model: nn.Module, save_directory: str | os.PathLike, **kwargs: Any) -> None:
    """PEFT's adapter folder, plus the dendrites and their record (see the module docstring)."""
    kwargs.pop("state_dict", None)  # PEFT saves the adapter's own state
    if kwargs.pop("push_to_hub", False):
        raise ValueError("push a PEFT model with dendrites with model.push_to_hub(repo_id) (hf_dendrites.push_to_hub)")
    folder = Path(save_directory)
    type(model).save_pretrained(model, str(folder), **kwargs)
    if not kwargs.get("is_main_process", True):
        return
    layers = dendrite_layers(model)
    adapter_file = folder / ADAPTER_WEIGHTS
    adapter = load_file(adapter_file)
    adapter.update({settings_key(name): settings_tensor(layer) for name, layer in layers.items()})
    save_file(adapter, adapter_file, metadata={"format": "pt"})
    save_file(dendrite_tensors(model), folder / DENDRITE_WEIGHTS, metadata={"format": "pt"})
    record = {"dendrites": dendrite_structure(model), "adapter": ADAPTER_WEIGHTS}
    (folder / DENDRITE_RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def adapter_summary(model: nn.Module) -> dict[str, Any]:
    """What a model card says about the adapter: its type, rank, targets and trainable parameters."""
    config = model.peft_config[model.active_adapter]
    targets = config.target_modules
    return {
        "type": str(getattr(config.peft_type, "value", config.peft_type)),
        "rank": getattr(config, "r", None),
        "alpha": getattr(config, "lora_alpha", None),
        "target_modules": sorted(targets) if isinstance(targets, (set, list, tuple)) else targets,
        "base_model": config.base_model_name_or_path,
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }


def read_adapter_record(folder: Path) -> dict[str, Any]:
    path = folder / DENDRITE_RECORD
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(values, dict) or not isinstance(values.get("dendrites"), dict):
        raise ValueError(f"{path} has no 'dendrites' record")
    return values["dendrites"]


def adapter_weights(folder: Path, layer_names: list[str]) -> dict[str, torch.Tensor]:
    """The adapter's own tensors, without the dendrite settings records added to its file."""
    path = folder / ADAPTER_WEIGHTS
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError) as error:
        raise ValueError(f"cannot read adapter weights {path}: {error}") from error
    for name in layer_names:
        tensors.pop(settings_key(name), None)
    return tensors


def load_adapter_with_dendrites(
    folder: str | os.PathLike, base_model: nn.Module | None = None, *, is_trainable: bool = False
) -> nn.Module:
    """A PEFT model with its adapter and dendrites, from a folder `save_adapter_with_dendrites` wrote.

    `base_model` defaults to the adapter's `base_model_name_or_path`, loaded with the Auto class of
    its task type.
    """
    from peft import PeftConfig, get_peft_model

    folder = Path(folder)
    record = read_adapter_record(folder)
    peft_config = PeftConfig.from_pretrained(str(folder))
    if base_model is None:
        base_model = _load_base_model(peft_config)
    peft_config.inference_mode = not is_trainable
    model = get_peft_model(base_model, peft_config)
    wrap_target_layers(model, DendriteConfig.from_dict(record["config"]), layer_names=list(record["layers"]))
    apply_structure(model, record)
    load_adapter_state(model, folder, record)
    if not is_trainable:
        model.eval()
    return model


def load_adapter_state(model: nn.Module, folder: Path, record: dict[str, Any]) -> None:
    """Copy an adapter folder's LoRA and dendrite weights into a PEFT model of the recorded structure,
    after checking every name and shape (nothing is copied when one is off)."""
    from peft import set_peft_model_state_dict

    check_settings_of_file(model, folder / ADAPTER_WEIGHTS)
    expected = dendrite_tensors(model)
    try:
        dendrites = load_file(folder / DENDRITE_WEIGHTS)
    except (SafetensorError, OSError) as error:
        raise ValueError(f"cannot read {folder / DENDRITE_WEIGHTS}: {error}") from error
    if set(dendrites) != set(expected):
        raise ValueError(
            f"{folder / DENDRITE_WEIGHTS} does not match the recorded dendrites: missing "
            f"{sorted(set(expected) - set(dendrites))[:5]}, unexpected {sorted(set(dendrites) - set(expected))[:5]}"
        )
    mismatched = [key for key in expected if tuple(dendrites[key].shape) != tuple(expected[key].shape)]
    if mismatched:
        raise ValueError(f"{folder / DENDRITE_WEIGHTS}: shapes differ from the recorded dendrites for {mismatched[:5]}")
    adapter = adapter_weights(folder, list(record["layers"]))
    result = set_peft_model_state_dict(model, adapter)
    unplaced = [key for key in result.unexpected_keys if "lora_" in key]
    if unplaced:
        raise ValueError(f"{folder / ADAPTER_WEIGHTS}: adapter weights that fit no LoRA layer: {unplaced[:5]}")
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for key, tensor in dendrites.items():
            parameters[key].copy_(tensor)


def _load_base_model(peft_config: Any) -> nn.Module:
    auto_classes = {
        "SEQ_CLS": "AutoModelForSequenceClassification",
        "TOKEN_CLS": "AutoModelForTokenClassification",
        "QUESTION_ANS": "AutoModelForQuestionAnswering",
        "FEATURE_EXTRACTION": "AutoModel",
    }
    task = str(getattr(peft_config.task_type, "value", peft_config.task_type) or "FEATURE_EXTRACTION")
    name = auto_classes.get(task)
    if name is None or not peft_config.base_model_name_or_path:
        raise ValueError(f"cannot load the base model of task type {task!r} by itself: pass base_model=")
    return getattr(transformers, name).from_pretrained(peft_config.base_model_name_or_path)


# ---------------------------------------------------------------------- merging


def keep_dendrites_when_unloading(model: nn.Module, config: DendriteConfig, adopt: Adopt) -> None:
    """Make this PEFT model's `merge_and_unload` / `unload` keep the dendrites (this model only);
    `adopt(unloaded_model, config)` makes the returned model their owner."""
    tuner = model.base_model

    def unload(
        self: nn.Module,
        merge: bool = True,
        progressbar: bool = False,
        safe_merge: bool = False,
        adapter_names: list[str] | None = None,
    ) -> nn.Module:
        unloaded = _unload_keeping_dendrites(self, merge, safe_merge, adapter_names)
        if dendrite_layers(unloaded):
            adopt(unloaded, config)
        return unloaded

    tuner._unload_and_optionally_merge = types.MethodType(unload, tuner)


def forget_unloading(model: nn.Module) -> None:
    model.base_model.__dict__.pop("_unload_and_optionally_merge", None)


def _unload_keeping_dendrites(
    tuner: nn.Module, merge: bool, safe_merge: bool, adapter_names: list[str] | None
) -> nn.Module:
    """PEFT's unloading (`BaseTuner._unload_and_optionally_merge`), except that a LoRA layer around a
    dendrite layer gives way to the dendrite layer (LoRA merged into the Linear inside it), and
    dendrite layers are not taken for PEFT layers (they also keep their Linear as `base_layer`)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    if merge:
        tuner._check_merge_allowed()
    tuners = [name for name, module in tuner.model.named_modules() if isinstance(module, BaseTunerLayer)]
    for name in [name for name, _ in tuner.model.named_modules()]:
        if not name or any(name.startswith(prefix + ".") for prefix in tuners):
            continue
        parent_name, _, attribute = name.rpartition(".")
        try:  # an earlier replacement may have removed this module's parent
            parent = tuner.model.get_submodule(parent_name) if parent_name else tuner.model
            target = getattr(parent, attribute)
        except AttributeError:
            continue
        if isinstance(target, DendriteLinear):
            continue
        if hasattr(target, "unload_and_optionally_merge_module"):
            unloaded = target.unload_and_optionally_merge_module(
                merge=merge, safe_merge=safe_merge, adapter_names=adapter_names
            )
            tuner._replace_module(parent, attribute, unloaded, target)
        elif hasattr(target, "base_layer"):
            if merge:
                target.merge(safe_merge=safe_merge, adapter_names=adapter_names)
            inner = target.base_layer if isinstance(target.base_layer, DendriteLinear) else target.get_base_layer()
            tuner._replace_module(parent, attribute, inner, target)
    if hasattr(tuner.model, "peft_config"):
        del tuner.model.peft_config
    return tuner.model
