"""Saving and loading augmented models.

Format: the ordinary transformers folder (`config.json`, `model.safetensors`, tokenizer files)
with two changes to `config.json`:

- `model_type` is `"hf_dendrites"` and the family moves to `dendrites.base_model_type`. Plain
  `AutoModel*.from_pretrained` therefore refuses the folder ("unrecognized model type") instead
  of silently dropping the dendrite weights it does not know. With remote code (`auto_map`)
  and `trust_remote_code=True` it can load it in full.
- `dendrites` records everything needed to rebuild the structure: the `DendriteConfig`, and the
  dendrite and candidate counts of every wrapped layer.

and one in the weights: each wrapped Linear's original `<layer>.weight` key holds the settings
its dendrites compute with (see `dendrite_modeling.SETTINGS_KEY`). A concrete transformers class
(`BertForSequenceClassification.from_pretrained(folder)`) therefore fails with a size mismatch
instead of loading those layers with random weights, and a `config.json` whose settings were
edited after saving is refused rather than computing something else.

Loading rebuilds the architecture, then checks every tensor name and shape in the safetensors
files against it before copying a single value: a truncated file, a missing tensor or a shape
that disagrees with the recorded structure is an error that names it.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
import transformers
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, cached_file

from .architectures import register_architectures
from .config import DendriteConfig
from .dendrite_modeling import (
    FOLDER_NOTE_KEY,
    check_settings_match,
    layer_settings,
    read_settings_records,
    settings_from_tensor,
    settings_key,
    with_settings_records,
)
from .model import (
    ModelSnapshot,
    candidate_parameters,
    dendrite_layers,
    is_peft_model,
    paused_parameters,
    set_paused_parameters,
    stop_candidates,
    wrap_target_layers,
)
from .remote_code import REMOTE_CLASS_PREFIX, auto_class_for, write_remote_code
from .version import __version__

logger = logging.getLogger(__name__)

DENDRITE_MODEL_TYPE = "hf_dendrites"
FORMAT_VERSION = 2  # 2: settings records in the weights file
READABLE_FORMAT_VERSIONS = (1, 2)
CONFIG_NAME = "config.json"


def dendrite_structure(model: nn.Module) -> dict[str, Any]:
    """The `dendrites` record written into `config.json`."""
    config = getattr(model, "config", None)
    record: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "base_model_type": getattr(config, "model_type", None),
        "config": model.dendrite_config.to_dict(),
        "layers": {
            name: {"dendrites": layer.num_dendrites, "candidates": layer.num_candidates}
            for name, layer in dendrite_layers(model).items()
        },
    }
    paused = paused_parameters(model)
    if paused is not None:
        record["paused_parameters"] = paused
    return record


def save_pretrained(model: nn.Module, save_directory: str | os.PathLike, **kwargs: Any) -> None:
    """`save_pretrained` of an augmented model: the transformers folder, with the structure recorded.

    `add_dendrites` binds it (through `augment`) as the model's own method, so `model.save_pretrained`,
    `Trainer.save_model`, checkpoints and `push_to_hub` all write this format.
    """
    state_dict = kwargs.pop("state_dict", None)
    state_dict = with_settings_records(model, model.state_dict() if state_dict is None else state_dict)
    type(model).save_pretrained(model, save_directory, state_dict=state_dict, **kwargs)
    if kwargs.get("is_main_process", True):
        mark_config_file(Path(save_directory) / CONFIG_NAME, dendrite_structure(model))
        write_remote_code(model.config, save_directory)


def mark_config_file(path: Path, record: dict[str, Any]) -> None:
    """Rewrite a saved base `config.json` into the dendrite format (atomically)."""
    values = json.loads(path.read_text(encoding="utf-8"))
    values["model_type"] = DENDRITE_MODEL_TYPE
    values["dendrites"] = record
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def read_dendrite_config_file(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Any]]:
    """(base config values, dendrites record) of a saved augmented model's `config.json`."""
    try:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    if not isinstance(values, dict):
        raise ValueError(f"{path} holds a JSON {type(values).__name__}, not a model configuration object")
    if values.get("model_type") != DENDRITE_MODEL_TYPE or "dendrites" not in values:
        raise ValueError(
            f"{path} does not describe a model with dendrites (model_type={values.get('model_type')!r}); "
            "load it with transformers, or save it from a model prepared with add_dendrites()"
        )
    record = values.pop("dendrites")
    if not isinstance(record, dict):
        raise ValueError(f"{path}: 'dendrites' must be a JSON object, got a {type(record).__name__}")
    if record.get("format_version") not in READABLE_FORMAT_VERSIONS:
        raise ValueError(
            f"{path} uses dendrite format version {record.get('format_version')!r}; "
            f"this hf_dendrites reads versions {list(READABLE_FORMAT_VERSIONS)}"
        )
    for key in ("base_model_type", "config", "layers"):
        if key not in record:
            raise ValueError(f"{path}: the 'dendrites' record has no {key!r} entry")
    values["model_type"] = record["base_model_type"]
    return values, record


def _untrained_model(config: Any, architectures: list[str]) -> nn.Module:
    """A model of the recorded architecture: a transformers class, else one registered with its Auto class."""
    name = architectures[0] if architectures else None
    model_class = getattr(transformers, name, None) if name else None
    if model_class is not None:
        return model_class(config)
    try:
        model = getattr(transformers, auto_class_for(name)).from_config(config) if name else None
    except ValueError:  # no Auto class loads it, or none is registered for this config
        model = None
    if model is None or type(model).__name__ != name:
        raise ValueError(f"cannot rebuild the model: unknown architectures {architectures!r} in config.json")
    return model


def build_from_record(values: dict[str, Any], record: dict[str, Any], dtype: torch.dtype | None = None) -> nn.Module:
    """An untrained model with exactly the recorded architecture and dendrite structure."""
    base_values = dict(values)
    model_type = base_values.pop("model_type")
    base_values.pop("transformers_version", None)
    # a folder re-saved by the remote code names its own class, HfDendrites<base architecture>
    architectures = [name.removeprefix(REMOTE_CLASS_PREFIX) for name in base_values.get("architectures") or []]
    if architectures:
        base_values["architectures"] = architectures
    register_architectures()  # the model types this package defines are Auto-loadable
    config = AutoConfig.for_model(model_type, **base_values)
    model = _untrained_model(config, architectures)
    if dtype is not None:
        model = model.to(dtype)
    wrap_target_layers(model, DendriteConfig.from_saved(record["config"]), layer_names=record["layers"])
    apply_structure(model, record)
    return model


def apply_structure(model: nn.Module, record: dict[str, Any]) -> None:
    """Give the dendrite layers of `model` the recorded dendrite and candidate counts (weights zeroed).

    A record taken inside a dendrite phase also freezes everything but the candidates, as
    `start_candidates` did when it was taken.
    """
    layers = dendrite_layers(model)
    if set(layers) != set(record["layers"]):
        only_saved = sorted(set(record["layers"]) - set(layers))
        only_model = sorted(set(layers) - set(record["layers"]))
        raise ValueError(
            f"recorded dendrite layers differ from the model's: only recorded {only_saved[:5]}, "
            f"only in the model {only_model[:5]}"
        )
    if paused_parameters(model) is not None:
        stop_candidates(model)
    for name, counts in record["layers"].items():
        layers[name].allocate(int(counts["dendrites"]), int(counts.get("candidates", 0)))
    paused = record.get("paused_parameters")
    if paused is not None:  # saved inside a dendrite phase: only the candidates train
        for parameter in model.parameters():
            parameter.requires_grad_(False)
        for parameter in candidate_parameters(model):
            parameter.requires_grad_(True)
        set_paused_parameters(model, paused)


def load_weights(model: nn.Module, weight_files: list[str], *, format_version: int = FORMAT_VERSION) -> None:
    """Copy safetensors weights into `model` after checking every name and shape.

    Nothing is copied unless all files open, every tensor of the model (but tied copies) is
    present, nothing extra is present, every shape agrees, and (format 2 on) every dendrite
    layer's recorded settings match the ones the model was built with.
    """
    expected = model.state_dict()
    layers = dendrite_layers(model)
    records = {settings_key(name): name for name in layers}
    found: dict[str, tuple[str, tuple[int, ...]]] = {}
    settings: dict[str, dict[str, Any]] = {}
    for file in weight_files:
        try:
            with safe_open(file, framework="pt") as handle:
                for key in handle.keys():
                    if key in records:
                        settings[records[key]] = settings_from_tensor(handle.get_tensor(key))
                    elif key != FOLDER_NOTE_KEY:
                        found[key] = (file, tuple(handle.get_slice(key).get_shape()))
        except (SafetensorError, OSError) as error:
            raise ValueError(f"cannot read weights file {file}: {error} (incomplete or corrupted download?)") from error
        except ValueError as error:
            raise ValueError(f"{file}: a dendrite layer's settings record is unreadable: {error}") from error
    check_settings(layers, settings, required=format_version >= 2)  # first: it explains the structure too
    tied = set(getattr(model, "all_tied_weights_keys", {}) or {})
    missing = sorted(set(expected) - set(found) - tied)
    unexpected = sorted(set(found) - set(expected))
    mismatched = [
        f"{key}: file {found[key][1]} vs structure {tuple(expected[key].shape)}"
        for key in sorted(set(found) & set(expected))
        if found[key][1] != tuple(expected[key].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing tensors {missing[:10]}{' ...' if len(missing) > 10 else ''}")
    if unexpected:
        problems.append(f"unexpected tensors {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}")
    if mismatched:
        problems.append(f"shape mismatches {mismatched[:10]}")
    if problems:
        raise ValueError("saved weights do not match the recorded dendrite structure: " + "; ".join(problems))
    by_file: dict[str, list[str]] = {}
    for key, (file, _) in found.items():
        by_file.setdefault(file, []).append(key)
    with torch.no_grad():
        for file, keys in by_file.items():
            try:
                with safe_open(file, framework="pt") as handle:
                    for key in keys:
                        expected[key].copy_(handle.get_tensor(key))
            except SafetensorError as error:
                raise ValueError(f"cannot read weights file {file}: {error}") from error
    if hasattr(model, "tie_weights"):
        model.tie_weights()


def check_settings_of_file(model: nn.Module, path: str | os.PathLike) -> None:
    """`check_settings` against the settings records in one safetensors file."""
    layers = dendrite_layers(model)
    check_settings(layers, read_settings_records([str(path)], list(layers)), required=True)


def check_settings(layers: dict[str, nn.Module], saved: dict[str, dict[str, Any]], *, required: bool) -> None:
    """Refuse weights whose dendrites were trained with other settings than the model has now.

    A `config.json` edited after saving (say, another activation) would otherwise load without
    complaint and compute different outputs. The remote code (`dendrite_modeling.check_before_loading`)
    makes the same check with the same message.
    """
    check_settings_match({name: layer_settings(layer) for name, layer in layers.items()}, saved, required=required)


def resolve_weight_files(path_or_repo_id: str | os.PathLike, **hub_kwargs: Any) -> list[str]:
    """The safetensors file(s) of a local folder or Hub repo (single file or sharded index)."""
    single = cached_file(path_or_repo_id, SAFE_WEIGHTS_NAME, _raise_exceptions_for_missing_entries=False, **hub_kwargs)
    if single is not None:
        return [single]
    index_file = cached_file(
        path_or_repo_id, SAFE_WEIGHTS_INDEX_NAME, _raise_exceptions_for_missing_entries=False, **hub_kwargs
    )
    if index_file is None:
        raise FileNotFoundError(
            f"{path_or_repo_id} has neither {SAFE_WEIGHTS_NAME} nor {SAFE_WEIGHTS_INDEX_NAME} "
            "(only safetensors weights are loaded)"
        )
    index = json.loads(Path(index_file).read_text(encoding="utf-8"))
    shards = sorted(set(index.get("weight_map", {}).values()))
    return [cached_file(path_or_repo_id, shard, **hub_kwargs) for shard in shards]


def load_pretrained(
    path_or_repo_id: str | os.PathLike,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    dtype: torch.dtype | None = None,
) -> nn.Module:
    """Load a model saved with dendrites from a local folder or a Hub repo id (see `augment.from_pretrained`).

    Returns the model in eval mode, like transformers does. Raises `ValueError` when the folder
    is not a dendrite model, or when its weights do not match its recorded structure.
    """
    hub_kwargs = {"revision": revision, "token": token, "cache_dir": cache_dir, "local_files_only": local_files_only}
    try:
        config_file = cached_file(path_or_repo_id, CONFIG_NAME, **hub_kwargs)
    except OSError as error:
        if Path(path_or_repo_id).is_dir():
            raise  # a local folder without config.json: transformers' message names the file
        raise FileNotFoundError(
            f"{str(path_or_repo_id)!r} is not a local folder (it does not exist), and loading it as a Hub repo id "
            f"failed: {str(error).splitlines()[0]}"
        ) from error
    values, record = read_dendrite_config_file(config_file)
    weight_files = resolve_weight_files(path_or_repo_id, **hub_kwargs)
    model = build_from_record(values, record, dtype=dtype)
    load_weights(model, weight_files, format_version=record["format_version"])
    model.eval()
    return model


def save_snapshot(model: nn.Module, snapshot: ModelSnapshot, folder: str | os.PathLike) -> None:
    """Write a snapshot as a loadable model folder (the format `from_pretrained` reads)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = dendrite_structure(model)
    record.pop("paused_parameters", None)
    record["layers"] = {name: {"dendrites": count, "candidates": 0} for name, count in snapshot.dendrites.items()}
    config_path = folder / CONFIG_NAME
    tensors = with_settings_records(model, {name: tensor.contiguous() for name, tensor in snapshot.state_dict.items()})
    if is_peft_model(model):  # a checkpoint's own copy of the best PEFT model: structure and weights only
        values = {"model_type": DENDRITE_MODEL_TYPE, "dendrites": record}
        config_path.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        save_file(tensors, folder / SAFE_WEIGHTS_NAME, metadata={"format": "pt"})
        return
    config = model.config
    config.to_json_file(config_path)
    values = json.loads(config_path.read_text(encoding="utf-8"))
    values["architectures"] = [type(model).__name__]
    config_path.write_text(json.dumps(values, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    mark_config_file(config_path, record)
    write_remote_code(config, folder)
    save_file(tensors, folder / SAFE_WEIGHTS_NAME, metadata={"format": "pt"})


def load_snapshot(folder: str | os.PathLike) -> ModelSnapshot:
    """Read a folder written by `save_snapshot` (or `save_pretrained` outside a dendrite phase)."""
    folder = Path(folder)
    _, record = read_dendrite_config_file(folder / CONFIG_NAME)
    weights = folder / SAFE_WEIGHTS_NAME
    try:
        state = load_file(weights)
    except (SafetensorError, OSError) as error:
        raise ValueError(f"cannot read snapshot weights {weights}: {error}") from error
    dendrites = {name: int(counts["dendrites"]) for name, counts in record["layers"].items()}
    for name in dendrites:
        state.pop(settings_key(name), None)
    state.pop(FOLDER_NOTE_KEY, None)
    return ModelSnapshot(dendrites, state)
