"""Dendrites in a PEFT model (LoRA): saving, loading, merging.

`add_dendrites(peft_model, config)` puts a dendrite on the Linear each matched LoRA layer wraps
(see `targets.py`) and on matched plain Linear layers; with the base frozen, only LoRA, the
heads PEFT trains and the dendrites train. Saving writes PEFT's adapter folder plus two files:

- `dendrites.safetensors`: every parameter of the dendrite layers except the base weights;
- `dendrite_config.json`: the `dendrites` record (config, dendrites per layer), as in a full save,
  and a fingerprint of the base model the adapter was trained on (see `base_fingerprint`).

The adapter file also gets each dendrite layer's settings record under the layer's `weight` key
(see `dendrite_modeling.SETTINGS_KEY`): plain `PeftModel.from_pretrained` then fails on a size
mismatch instead of loading the adapter without its dendrites. `hf_dendrites.from_pretrained`
restores both onto the base model, after checking that it is the base the adapter was saved with;
it changes that base only once everything has loaded (on a failure the base is put back as it was).

`merge_and_unload()` / `unload()` of a PEFT model with dendrites keep the dendrites: LoRA is
merged into the Linear inside each dendrite layer, and the returned transformers model carries
the dendrites (and saves in the full format).
"""

from __future__ import annotations

import hashlib
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
from .dendrite_modeling import StaticDendriteLinear, settings_key, settings_tensor
from .layer import DendriteLinear
from .model import dendrite_layers, has_dendrites, is_peft_model, wrap_target_layers
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
    record = {"dendrites": dendrite_structure(model), "adapter": ADAPTER_WEIGHTS, "base_model": base_fingerprint(model)}
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


def read_adapter_file(folder: Path) -> dict[str, Any]:
    """Everything `dendrite_config.json` holds: the `dendrites` record and (from this version on) `base_model`."""
    path = folder / DENDRITE_RECORD
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(values, dict) or not isinstance(values.get("dendrites"), dict):
        raise ValueError(f"{path} has no 'dendrites' record")
    fingerprint = values.get("base_model")
    if fingerprint is not None and not (
        isinstance(fingerprint, dict) and isinstance(fingerprint.get("parameters"), dict)
    ):
        raise ValueError(f"{path}: the 'base_model' fingerprint is not a JSON object with 'parameters'")
    return values


def read_adapter_record(folder: Path) -> dict[str, Any]:
    return read_adapter_file(folder)["dendrites"]


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
    folder: str | os.PathLike,
    base_model: nn.Module | None = None,
    *,
    is_trainable: bool = False,
    verify_base_weights: bool = True,
) -> nn.Module:
    """A PEFT model with its adapter and dendrites, from a folder `save_adapter_with_dendrites` wrote.

    `base_model` defaults to the adapter's `base_model_name_or_path`, loaded with the Auto class of
    its task type. It is checked against the fingerprint recorded at save (`check_base_model`)
    before anything changes; PEFT and the dendrites then wrap its layers in place, and when any
    later step fails, the base is put back as it was (no LoRA, no dendrite layer, same flags), so
    the caller can retry. `verify_base_weights=False` accepts a base whose adapted layers hold
    other values (a further fine-tuned copy, on purpose); names and shapes are always checked.
    """
    from peft import PeftConfig, get_peft_model

    folder = Path(folder)
    values = read_adapter_file(folder)
    record = values["dendrites"]
    peft_config = PeftConfig.from_pretrained(str(folder))
    if base_model is None:
        base_model = _load_base_model(peft_config)
    if is_peft_model(base_model) or has_dendrites(base_model):
        raise ValueError(
            f"base_model already has {'a PEFT adapter' if is_peft_model(base_model) else 'dendrites'}: pass the plain "
            f"transformers model the adapter in {folder} was trained on"
        )
    if values.get("base_model") is not None:
        check_base_model(base_model, values["base_model"], folder, verify_weights=verify_base_weights)
    peft_config.inference_mode = not is_trainable
    original = BaseModelState(base_model)
    try:
        try:
            model = get_peft_model(base_model, peft_config)
        except Exception as error:
            raise ValueError(
                f"PEFT cannot apply the adapter in {folder} to this base model ({_describe(base_model)}): {error}"
            ) from error
        wrap_target_layers(model, DendriteConfig.from_saved(record["config"]), layer_names=list(record["layers"]))
        apply_structure(model, record)
        load_adapter_state(model, folder, record)
    except BaseException as error:
        original.restore()
        if isinstance(error, ValueError) or not isinstance(error, Exception):
            raise
        raise ValueError(
            f"cannot load the adapter in {folder} onto this base model ({_describe(base_model)}); it was left "
            f"as it was: {type(error).__name__}: {error}"
        ) from error
    if not is_trainable:
        model.eval()
    return model


def _describe(model: nn.Module) -> str:
    name = getattr(getattr(model, "config", None), "name_or_path", None)
    return f"{type(model).__name__}{f' from {name!r}' if name else ''}"


class BaseModelState:
    """What loading an adapter changes in the base model it is given, to put back when loading fails.

    `get_peft_model` and the dendrites change a base in place: they replace its Linear layers by
    wrappers (which keep the original layers and their tensors), freeze its parameters, and set
    attributes (`peft_config`). Every module's attributes (children, hooks, flags) and every
    parameter's `requires_grad` are recorded; the tensors themselves are never written to.
    """

    def __init__(self, model: nn.Module) -> None:
        self.modules = [
            (
                module,
                {key: (value, dict(value) if isinstance(value, dict) else None) for key, value in vars(module).items()},
            )
            for module in model.modules()
        ]
        self.requires_grad = [(parameter, parameter.requires_grad) for parameter in model.parameters()]

    def restore(self) -> None:
        for module, attributes in self.modules:
            for key in [key for key in vars(module) if key not in attributes]:
                del vars(module)[key]
            for key, (value, contents) in attributes.items():
                if contents is not None:  # the same dict object (hook handles refer to it), old contents
                    value.clear()
                    value.update(contents)
                vars(module)[key] = value
        for parameter, flag in self.requires_grad:
            parameter.requires_grad_(flag)


# ---------------------------------------------------------------------- the base model's fingerprint

# Adapted layers saved in full precision are also hashed rounded to these: a base loaded in half
# precision from the same checkpoint is the same base. (Saved in half precision, a base loaded in
# full precision is rounded to the saved dtype to compare.)
HALF_PRECISIONS = (torch.bfloat16, torch.float16)


def _bare_module(module: nn.Module) -> nn.Module:
    """The module of the base model that a PEFT or dendrite wrapper stands in for (itself when none)."""
    while True:
        if isinstance(module, StaticDendriteLinear) or (
            hasattr(module, "get_base_layer") and hasattr(module, "base_layer")
        ):
            module = module.base_layer  # a dendrite layer or a PEFT tuner layer
        elif hasattr(module, "original_module") and hasattr(module, "modules_to_save"):
            module = module.original_module  # PEFT's trainable copy of a head; the original is the base's
        else:
            return module


def bare_modules(model: nn.Module) -> dict[str, tuple[nn.Module, bool]]:
    """{name: (module, wrapped)} of the base model inside `model`, named as in the base itself.

    `model` may be the base, or a PEFT model with dendrites built on it: wrappers are looked
    through, so both give the same names. `wrapped` marks the modules a LoRA or dendrite layer adapts.
    """
    if is_peft_model(model):
        model = model.get_base_model()
    found: dict[str, tuple[nn.Module, bool]] = {}
    seen: set[int] = set()

    def visit(module: nn.Module, prefix: str) -> None:
        bare = _bare_module(module)
        if id(bare) in seen:
            return
        seen.add(id(bare))
        adapted = bare is not module and not hasattr(module, "original_module")
        found[prefix] = (bare, adapted)
        for name, child in bare.named_children():
            visit(child, f"{prefix}.{name}" if prefix else name)

    visit(model, "")
    return found


def _weight_hashes(layers: dict[str, nn.Module], dtype: torch.dtype) -> dict[str, str]:
    hashes = {}
    for name, layer in layers.items():
        digest = hashlib.sha256()
        for parameter_name, parameter in sorted(layer.named_parameters(recurse=False)):
            values = parameter.detach().to(device="cpu", dtype=dtype).contiguous().flatten()
            digest.update(f"{parameter_name}{tuple(parameter.shape)}".encode())
            digest.update(values.view(torch.uint8).numpy().tobytes())
        hashes[name] = digest.hexdigest()[:16]
    return hashes


def _adapted_layers(modules: dict[str, tuple[nn.Module, bool]], names: list[str] | None = None) -> dict[str, nn.Module]:
    return {
        name: module for name, (module, adapted) in modules.items() if (adapted if names is None else name in names)
    }


def _parameter_shapes(modules: dict[str, tuple[nn.Module, bool]]) -> dict[str, list[int]]:
    seen: set[int] = set()
    shapes = {}
    for name, (module, _) in modules.items():
        for parameter_name, parameter in module.named_parameters(recurse=False):
            if id(parameter) not in seen:  # a tied weight counts once, under its first name
                seen.add(id(parameter))
                shapes[f"{name}.{parameter_name}" if name else parameter_name] = list(parameter.shape)
    return shapes


def base_fingerprint(model: nn.Module) -> dict[str, Any]:
    """What identifies the base model under a PEFT model with dendrites, recorded at save.

    Its name, every parameter's name and shape (as in the base itself), and a hash of the base
    weights of the layers LoRA or the dendrites adapt, in the dtype they have and in the half
    precisions (a base loaded in bfloat16 from the same checkpoint hashes the same).
    """
    modules = bare_modules(model)
    layers = _adapted_layers(modules)
    dtypes = [next(iter(layers.values())).weight.dtype] if layers else []
    if dtypes and dtypes[0] in (torch.float32, torch.float64):
        dtypes += HALF_PRECISIONS
    base = model.get_base_model() if is_peft_model(model) else model
    peft_config = getattr(model, "peft_config", {}).get(getattr(model, "active_adapter", None))
    name = getattr(peft_config, "base_model_name_or_path", None) or getattr(
        getattr(base, "config", None), "name_or_path", None
    )
    return {
        "name_or_path": name or None,
        "parameters": _parameter_shapes(modules),
        "adapted_layers": sorted(layers),
        "dtype": str(dtypes[0]).removeprefix("torch.") if dtypes else None,
        "weight_hashes": {str(dtype).removeprefix("torch."): _weight_hashes(layers, dtype) for dtype in dtypes},
    }


def check_base_model(
    base_model: nn.Module, fingerprint: dict[str, Any], folder: Path, *, verify_weights: bool = True
) -> None:
    """Refuse a base model other than the one the adapter was saved with, before anything changes.

    Other parameter names or shapes (another architecture, an extra layer, another label count)
    are always an error. Other values in the adapted layers are an error too, not a warning: they
    are compared in the dtype the base has (a full-precision save also holds bfloat16 and float16
    hashes) or rounded to the saved one, so a re-saved or half-precision copy of the same
    checkpoint matches, and what is left is another checkpoint, on which the LoRA and dendrite
    weights compute something else (logits move by a few hundredths, silently). A base changed on
    purpose loads with `verify_weights=False`. The name alone decides nothing: a local copy of a
    Hub model is the same base.
    """
    recorded_name = fingerprint.get("name_or_path")
    trained_on = f"the base model the adapter in {folder} was trained on" + (
        f" ({recorded_name!r})" if recorded_name else ""
    )
    modules = bare_modules(base_model)
    shapes = _parameter_shapes(modules)
    recorded = {name: list(shape) for name, shape in fingerprint["parameters"].items()}
    missing = sorted(set(recorded) - set(shapes))
    extra = sorted(set(shapes) - set(recorded))
    other = [
        f"{name} {shapes[name]} (saved {recorded[name]})"
        for name in recorded
        if name in shapes and shapes[name] != recorded[name]
    ]
    problems = [
        f"{label} {names[:5]}{' ...' if len(names) > 5 else ''} ({len(names)})"
        for label, names in (("missing parameters", missing), ("extra parameters", extra), ("other shapes", other))
        if names
    ]
    if problems:
        raise ValueError(f"base_model ({_describe(base_model)}) is not {trained_on}: " + "; ".join(problems))
    hashes = fingerprint.get("weight_hashes") or {}
    names = list(fingerprint.get("adapted_layers") or [])
    if not verify_weights or not hashes or not names:
        return
    layers = _adapted_layers(modules, names)
    if set(layers) != set(names):
        raise ValueError(f"{folder / DENDRITE_RECORD}: the base model fingerprint names layers the base does not have")
    dtype_name = str(layers[names[0]].weight.dtype).removeprefix("torch.")
    if dtype_name not in hashes:  # e.g. saved in bfloat16, loaded in float32: compare as saved
        dtype_name = fingerprint.get("dtype") or next(iter(hashes))
    if not isinstance(getattr(torch, dtype_name, None), torch.dtype) or not isinstance(hashes.get(dtype_name), dict):
        raise ValueError(f"{folder / DENDRITE_RECORD}: the base model fingerprint has no usable weight hashes")
    actual = _weight_hashes(layers, getattr(torch, dtype_name))
    different = [name for name in names if actual[name] != hashes[dtype_name].get(name)]
    if different:
        raise ValueError(
            f"base_model ({_describe(base_model)}) has the architecture but not the weights of {trained_on}: "
            f"the weights of {len(different)} of {len(names)} adapted layers differ (compared in "
            f"{dtype_name}), e.g. {different[:3]}. Pass that checkpoint; to use this one on purpose, call "
            "hf_dendrites.adapters.load_adapter_with_dendrites(folder, base_model, verify_base_weights=False)"
        )


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
    try:
        result = set_peft_model_state_dict(model, adapter)
    except RuntimeError as error:  # torch's size-mismatch report: the adapter was made for another base
        raise ValueError(
            f"{folder / ADAPTER_WEIGHTS} does not fit this base model (was the adapter trained on another one?): "
            f"{str(error).strip()}"
        ) from error
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
