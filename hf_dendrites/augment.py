"""The entry points that hand a user a model with dendrites: add, remove, load.

A model that comes out of `add_dendrites` or `from_pretrained` owns its dendrite layers and
saves and publishes with them: its `save_pretrained` writes the dendrite format
(`serialization.py`; a PEFT model writes its adapter plus the dendrites, `adapters.py`), its
`push_to_hub` is `hub.push_to_hub`, and a PEFT model keeps its dendrites through
`merge_and_unload`. This module sits above all of those, so none of them imports back up.
"""

from __future__ import annotations

import os
import types
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers.utils import cached_file

from .adapters import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    DENDRITE_RECORD,
    DENDRITE_WEIGHTS,
    forget_unloading,
    is_adapter_folder,
    keep_dendrites_when_unloading,
    load_adapter_with_dendrites,
    save_adapter_with_dendrites,
)
from .config import DendriteConfig
from .hub import push_to_hub
from .model import is_peft_model, own_dendrite_layers, unwrap_layers, wrap_target_layers
from .serialization import load_pretrained, save_pretrained

# The instance methods `adopt_dendrites` binds; `remove_dendrites` takes them away again.
BOUND_METHODS = ("save_pretrained", "push_to_hub")
HUB_ARGUMENTS = ("repo_id", "commit_message", "private", "revision")


def add_dendrites(model: nn.Module, config: DendriteConfig) -> nn.Module:
    """Wrap the target Linear layers of `model` in place (0 dendrites: outputs unchanged) and return it.

    Raises `ValueError` before changing anything when the model already has dendrites, when the
    targets match nothing, or when a target is not an `nn.Linear`. Afterwards the model records
    `config` as `model.dendrite_config`, and its `save_pretrained` / `push_to_hub` keep the dendrites.
    """
    wrap_target_layers(model, config)
    adopt_dendrites(model, config)
    return model


def adopt_dendrites(model: nn.Module, config: DendriteConfig) -> None:
    """Make `model` the owner of the dendrite layers inside it (wrapped already): it records `config`,
    saves and publishes with its dendrites, and a PEFT model keeps them through `merge_and_unload`."""
    if getattr(model, "dendrite_config", None) is not config:
        own_dendrite_layers(model, config)
    if is_peft_model(model):
        model.save_pretrained = types.MethodType(save_adapter_with_dendrites, model)
        model.push_to_hub = types.MethodType(push_to_hub, model)
        keep_dendrites_when_unloading(model, config, adopt_dendrites)
    elif hasattr(type(model), "save_pretrained"):
        model.save_pretrained = types.MethodType(_save_and_maybe_push, model)
        model.push_to_hub = types.MethodType(push_to_hub, model)


def remove_dendrites(model: nn.Module) -> nn.Module:
    """Put the original Linear layers back, dropping every dendrite and candidate.

    Inside a dendrite phase the phase is ended first, so the weights it froze train again.
    """
    unwrap_layers(model)
    for name in BOUND_METHODS:
        model.__dict__.pop(name, None)
    if is_peft_model(model):
        forget_unloading(model)
    return model


def from_pretrained(
    path_or_repo_id: str | os.PathLike,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    dtype: torch.dtype | None = None,
    base_model: nn.Module | None = None,
) -> nn.Module:
    """Load a model saved with dendrites from a local folder or a Hub repo id.

    Returns the model in eval mode, like transformers does. Raises `ValueError` when the folder
    is not a dendrite model, or when its weights do not match its recorded structure. A local
    PEFT adapter folder with dendrites is restored onto `base_model` (default: the adapter's
    `base_model_name_or_path`).
    """
    hub_kwargs = {"revision": revision, "token": token, "cache_dir": cache_dir, "local_files_only": local_files_only}
    adapter_folder = _adapter_folder(path_or_repo_id, hub_kwargs)
    if adapter_folder is not None:
        model = load_adapter_with_dendrites(adapter_folder, base_model)
        model = model if dtype is None else model.to(dtype)
    elif base_model is not None:
        raise ValueError(f"{path_or_repo_id} is not a PEFT adapter folder with dendrites: base_model does not apply")
    else:
        model = load_pretrained(path_or_repo_id, dtype=dtype, **hub_kwargs)
    adopt_dendrites(model, model.dendrite_config)
    return model


def _adapter_folder(path_or_repo_id: str | os.PathLike, hub_kwargs: dict[str, Any]) -> Path | None:
    """The local folder of a PEFT adapter with dendrites (downloaded when it is a Hub repo), or None."""
    if Path(path_or_repo_id).is_dir():
        return Path(path_or_repo_id) if is_adapter_folder(Path(path_or_repo_id)) else None
    try:
        record = cached_file(
            str(path_or_repo_id), DENDRITE_RECORD, _raise_exceptions_for_missing_entries=False, **hub_kwargs
        )
    except (OSError, ValueError):
        return None  # not a reachable repo or not a repo id: load_pretrained names the problem
    if record is None:
        return None
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS, DENDRITE_WEIGHTS):
        cached_file(str(path_or_repo_id), name, **hub_kwargs)
    return Path(record).parent


def _save_and_maybe_push(model: nn.Module, save_directory: str | os.PathLike, **kwargs: Any) -> None:
    """The bound `save_pretrained`: the dendrite format, then a push when `push_to_hub=True` asks."""
    push = kwargs.pop("push_to_hub", False)
    hub_kwargs = {key: kwargs.pop(key) for key in HUB_ARGUMENTS if key in kwargs}
    save_pretrained(model, save_directory, **kwargs)
    if push and kwargs.get("is_main_process", True):
        repo_id = hub_kwargs.pop("repo_id", None) or Path(save_directory).name
        push_to_hub(model, repo_id, token=kwargs.get("token"), **hub_kwargs)
