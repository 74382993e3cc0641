"""Installed dendrites, self-contained: this file imports only torch (and, inside the load-time
checks of the remote code, safetensors and transformers, which loading through transformers has).

It is the part of the library a trained model needs to compute, so it is also copied next to
the weights when a model is saved: with `trust_remote_code=True`, transformers loads a model with
dendrites from that copy in an environment where hf_dendrites is not installed. Keep it free of
imports from the rest of the package. The checks that `hf_dendrites.from_pretrained` makes on the
dendrite settings are here too, so both ways of loading refuse the same folders.

For a wrapped `Linear(in, out)` with `K` dendrites:

    d_k = act(D_k x + c_k [+ sum_{j<k} u_kj * d_j])        D_k: [out, in], c_k, u_kj: [out]
    y   = W x + b + sum_k a_k * d_k                           a_k: [out]

With a rank r (`rank=r`), each dendrite set reads its inputs through its own basis:
`D_k = U_k V_k` with `V_k: [r, in]` (`dendrite_basis`) and `U_k: [out, r]` (`dendrite_weight`),
so a set costs r * (in + out) + 2 * out parameters instead of in * out + 2 * out.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": F.relu,
    "gelu": F.gelu,
}
# The same in place, for pre-activations nothing backpropagates through (a PB neuron phase, where
# the dendrite's input is detached and its input weights frozen): one large buffer less per step.
INPLACE_ACTIVATIONS = {"sigmoid": torch.sigmoid_, "tanh": torch.tanh_, "relu": torch.relu_}

# Parameters of the installed dendrites, in state-dict order.
DENDRITE_PARAMETERS = ("dendrite_basis", "dendrite_weight", "dendrite_bias", "dendrite_cascade", "dendrite_scale")
# Settings that change what a dendrite computes (`rank` None: full per-neuron input weights; a
# record saved before ranks existed has no `rank` and means None).
COMPUTATION_SETTINGS = ("mode", "activation", "cascade", "rank")
# A saved model stores, under each wrapped Linear's original `<layer>.weight` key, the settings its
# dendrites were trained with (UTF-8 JSON as a uint8 vector). A transformers class that loads the
# folder without dendrites then finds a size mismatch on every wrapped layer and refuses, instead
# of initialising those layers at random; and a loader can check the settings in config.json
# against the ones the weights belong to.
SETTINGS_KEY = "weight"
# One more tensor whose name is the advice: transformers' load report of a concrete class lists it
# as unexpected beside the size mismatches, so the refusal itself says how to load the folder.
# Its value is that advice as UTF-8. Loaders that know dendrites skip it.
FOLDER_NOTE_KEY = "THIS_IS_A_DENDRITE_MODEL.load_it_with_hf_dendrites_from_pretrained_or_trust_remote_code_True"
FOLDER_NOTE = (
    "A model with dendrites (hf_dendrites). Load it with hf_dendrites.from_pretrained(folder) or "
    "AutoModelFor<Task>.from_pretrained(folder, trust_remote_code=True); a plain transformers class "
    "cannot hold its dendrite layers."
)


class StaticDendriteLinear(nn.Module):
    """An `nn.Linear` (kept as `base_layer`) plus its installed dendrites; computes, never grows.

    All dendrites of the layer are one `[K, out, in]` parameter evaluated in a single matmul
    (with a rank: one `[K, r, in]` basis and one `[K, out, r]` weight, two matmuls).
    In "pb" mode dendrites read `x.detach()`: no error flows through them into earlier layers.
    """

    def __init__(
        self,
        base_layer: nn.Linear,
        *,
        mode: str = "pb",
        activation: str = "sigmoid",
        cascade: bool = False,
        rank: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(f"dendrite layers wrap nn.Linear, got {type(base_layer).__name__}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        if mode not in ("pb", "gd"):
            raise ValueError(f"mode must be 'pb' or 'gd', got {mode!r}")
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank):
            raise ValueError(f"dendrite rank must be an integer >= 1 or None, got {rank!r}")
        if rank is not None and rank > base_layer.in_features:
            raise ValueError(
                f"dendrite rank {rank} is larger than the layer's {base_layer.in_features} inputs: "
                "a basis that wide is a full-rank dendrite (leave the rank None)"
            )
        self.base_layer = base_layer
        self.rank = rank
        self.mode = mode
        self.activation = activation
        self.cascade = cascade
        for name in DENDRITE_PARAMETERS:
            self.register_parameter(name, None)

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    @property
    def dendrite_inputs(self) -> int:
        """What each neuron's dendrite weights read: the rank (the basis' outputs) or the layer's inputs."""
        return self.in_features if self.rank is None else self.rank

    @property
    def num_dendrites(self) -> int:
        return 0 if self.dendrite_weight is None else self.dendrite_weight.shape[0]

    @property
    def weight(self) -> torch.Tensor:
        """The base weight, for code that reads `layer.weight` of what used to be a Linear."""
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    def _new_parameter(self, data: torch.Tensor, requires_grad: bool) -> nn.Parameter:
        reference = self.base_layer.weight
        return nn.Parameter(data.to(device=reference.device, dtype=reference.dtype), requires_grad=requires_grad)

    def allocate_dendrites(self, num_dendrites: int) -> None:
        """Zero-filled parameters for `num_dendrites` dendrites, ready for `load_state_dict`."""
        if num_dendrites < 0:
            raise ValueError(f"dendrite count must be >= 0, got {num_dendrites}")
        if not num_dendrites:
            for name in DENDRITE_PARAMETERS:
                setattr(self, name, None)
            return
        out, inp = self.out_features, self.dendrite_inputs
        trainable = self.mode == "gd"  # PB input weights stay frozen; output weights always train
        if self.rank is not None:
            basis = torch.zeros(num_dendrites, self.rank, self.in_features)
            self.dendrite_basis = self._new_parameter(basis, trainable)
        self.dendrite_weight = self._new_parameter(torch.zeros(num_dendrites, out, inp), trainable)
        self.dendrite_bias = self._new_parameter(torch.zeros(num_dendrites, out), trainable)
        self.dendrite_scale = self._new_parameter(torch.zeros(num_dendrites, out), True)
        self.dendrite_cascade = (
            self._new_parameter(torch.zeros(num_dendrites, num_dendrites, out), trainable) if self.cascade else None
        )

    def dendrite_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Activations `[..., K, out]` of the installed dendrites."""
        act = ACTIVATIONS[self.activation]
        k, out = self.num_dendrites, self.out_features
        if self.rank is None:
            pre = F.linear(x, self.dendrite_weight.view(k * out, -1), self.dendrite_bias.view(-1))
        else:
            projected = F.linear(x, self.dendrite_basis.view(k * self.rank, -1))
            # the K sets' per-neuron weights as one block-diagonal matrix: a single product writes
            # [..., K * out] directly (no per-set outputs to stack; the extra zeros cost K * r per row)
            weight = self.dendrite_weight[0] if k == 1 else torch.block_diag(*self.dendrite_weight.unbind(0))
            pre = F.linear(projected, weight, self.dendrite_bias.view(-1))
        pre = pre.unflatten(-1, (k, out))
        if not self.cascade or k == 1:
            inplace = INPLACE_ACTIVATIONS.get(self.activation)
            if inplace is not None and not pre.requires_grad:
                return inplace(pre)
            return act(pre)
        outputs: list[torch.Tensor] = []
        for index in range(k):  # each dendrite sees the ones before it: inherently sequential
            z = pre[..., index, :]
            if outputs:
                earlier = torch.stack(outputs, dim=-2)
                z = z + (earlier * self.dendrite_cascade[index, :index]).sum(dim=-2)
            outputs.append(act(z))
        return torch.stack(outputs, dim=-2)

    def add_dendrites_to(self, output: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(output plus the dendrites' contribution, the dendrite activations or None)."""
        if self.dendrite_weight is None:
            return output, None
        dendrites = self.dendrite_outputs(x.detach() if self.mode == "pb" else x)
        # One fused multiply-add per dendrite: an einsum over K becomes a bmm batched over the
        # neurons, which on CPU copies one slice per neuron (several times slower for K >= 2).
        for index in range(dendrites.shape[-2]):
            output = torch.addcmul(output, dendrites[..., index, :], self.dendrite_scale[index])
        return output, dendrites

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output = self.base_layer(x)
        if self.dendrite_weight is None:
            return output
        return self.add_dendrites_to(output, x)[0]


def settings_key(layer_name: str) -> str:
    """The state-dict key that holds a wrapped layer's settings in a saved model."""
    return f"{layer_name}.{SETTINGS_KEY}"


def layer_settings(layer: StaticDendriteLinear) -> dict[str, Any]:
    """What the layer computes with (`COMPUTATION_SETTINGS`)."""
    return {name: getattr(layer, name) for name in COMPUTATION_SETTINGS}


def recorded_settings(record: dict[str, Any]) -> dict[str, Any]:
    """The computation settings a saved `dendrites` record gives every layer it names."""
    config = record["config"]
    return {
        "mode": config["mode"],
        "activation": config["activation"],
        "cascade": config["cascade"],
        "rank": config.get("dendrite_rank"),
    }


def settings_tensor(layer: StaticDendriteLinear) -> torch.Tensor:
    """The layer's computation settings, encoded for the weights file."""
    text = json.dumps(layer_settings(layer), sort_keys=True)
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.uint8)


def settings_from_tensor(tensor: torch.Tensor) -> dict[str, Any]:
    """Decode what `settings_tensor` wrote; ValueError when it is not such a record."""
    if tensor.dtype != torch.uint8 or tensor.dim() != 1:
        raise ValueError(f"not a dendrite settings record (dtype {tensor.dtype}, shape {tuple(tensor.shape)})")
    try:
        settings = json.loads(bytes(tensor.tolist()).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"not a dendrite settings record: {error}") from error
    if not isinstance(settings, dict):
        raise ValueError("not a dendrite settings record: not a JSON object")
    return settings


def install_recorded_dendrites(model: nn.Module, record: dict[str, Any]) -> nn.Module:
    """Wrap the Linear layers named in a saved `dendrites` record, with their recorded counts.

    Used by the remote code of a saved model: the weights are loaded afterwards by transformers.
    """
    settings = recorded_settings(record)
    modules = dict(model.named_modules())
    for name, counts in record["layers"].items():
        base = modules.get(name)
        if not isinstance(base, nn.Linear):
            raise ValueError(f"recorded dendrite layer {name!r} is not an nn.Linear of this model")
        layer = StaticDendriteLinear(base, **settings)
        layer.allocate_dendrites(int(counts["dendrites"]))
        parent_name, _, attribute = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, attribute, layer)
    return model


def settings_key_patterns(record: dict[str, Any]) -> set[str]:
    """Regular expressions of the settings keys and the folder note, for `_keys_to_ignore_on_load_unexpected`."""
    return {re.escape(settings_key(name)) + "$" for name in record["layers"]} | {re.escape(FOLDER_NOTE_KEY) + "$"}


def with_settings_records(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy of `state_dict` with every dendrite layer's settings record and the folder note added (what a save writes)."""
    records = {
        settings_key(name): settings_tensor(layer)
        for name, layer in model.named_modules()
        if isinstance(layer, StaticDendriteLinear)
    }
    if records:
        records[FOLDER_NOTE_KEY] = torch.tensor(list(FOLDER_NOTE.encode("utf-8")), dtype=torch.uint8)
    clashing = sorted(set(records) & set(state_dict))
    if clashing:
        raise ValueError(
            f"cannot save: the state dict already has keys {clashing[:5]} (reserved for dendrite settings)"
        )
    return {**state_dict, **records}


def check_settings_match(
    current: dict[str, dict[str, Any]], saved: dict[str, dict[str, Any]], *, required: bool
) -> None:
    """Refuse weights whose dendrites were saved with other settings than the ones loading would use.

    `current` maps each dendrite layer to the settings config.json gives it now, `saved` to the
    settings record found in the weights. A `config.json` edited after saving (say, another
    activation) would otherwise load without complaint and compute different outputs.
    """
    missing = sorted(set(current) - set(saved))
    if missing and required:
        raise ValueError(f"the weights have no settings record for dendrite layers {missing[:5]}")
    different: dict[tuple[str, str, str], list[str]] = {}
    for name, values in saved.items():
        for setting in COMPUTATION_SETTINGS:
            if name in current and values.get(setting) != current[name][setting]:
                key = (setting, repr(current[name][setting]), repr(values.get(setting)))
                different.setdefault(key, []).append(name)
    if different:
        problems = [
            f"{setting}: config.json says {now}, the weights were saved with {recorded} "
            f"({'all ' if len(names) == len(current) else ''}{len(names)} of {len(current)} layers, e.g. {names[0]})"
            for (setting, now, recorded), names in different.items()
        ]
        raise ValueError(
            "the recorded dendrite settings do not match the weights (was config.json edited?): " + "; ".join(problems)
        )


def read_settings_records(files: list[str], layer_names: list[str]) -> dict[str, dict[str, Any]]:
    """The settings records of the named layers found in safetensors files (no other tensor is read)."""
    from safetensors import SafetensorError, safe_open

    keys = {settings_key(name): name for name in layer_names}
    saved: dict[str, dict[str, Any]] = {}
    for file in files:
        try:
            with safe_open(file, framework="pt") as handle:
                for key in handle.keys():
                    if key in keys:
                        saved[keys[key]] = settings_from_tensor(handle.get_tensor(key))
        except (SafetensorError, OSError) as error:
            raise ValueError(f"cannot read weights file {file}: {error} (incomplete or corrupted download?)") from error
        except ValueError as error:
            raise ValueError(f"{file}: a dendrite layer's settings record is unreadable: {error}") from error
    return saved


# `from_pretrained` arguments that say where the files come from (passed on to `cached_file`).
DOWNLOAD_ARGUMENTS = ("cache_dir", "force_download", "local_files_only", "proxies", "revision", "subfolder", "token")


def saved_weight_files(path: str | os.PathLike, download: dict[str, Any]) -> list[str]:
    """The safetensors file(s) of a local folder or Hub repo (single file or sharded index); [] if none."""
    from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME, cached_file

    single = cached_file(path, SAFE_WEIGHTS_NAME, _raise_exceptions_for_missing_entries=False, **download)
    if single is not None:
        return [single]
    index = cached_file(path, SAFE_WEIGHTS_INDEX_NAME, _raise_exceptions_for_missing_entries=False, **download)
    if index is None:
        return []
    with open(index, encoding="utf-8") as handle:
        shards = sorted(set(json.load(handle).get("weight_map", {}).values()))
    return [cached_file(path, shard, **download) for shard in shards]


def check_before_loading(model_class: type, path: str | os.PathLike | None, kwargs: dict[str, Any]) -> None:
    """What the remote code's `from_pretrained` checks before transformers builds or loads anything.

    Transformers alone would load a folder whose config.json was edited after saving (another
    activation, mode, cascade or rank: the weights fit, the outputs change), and with
    `ignore_mismatched_sizes=True` it gives every tensor that does not fit random values. Both are
    refused here, as `hf_dendrites.from_pretrained` refuses them.
    """
    if kwargs.get("ignore_mismatched_sizes"):
        raise ValueError(
            f"{path} holds a model with dendrites: ignore_mismatched_sizes=True would give its dendrite layers "
            "(and any other tensor that does not fit) random values. Load it as it was saved, with "
            f"hf_dendrites.from_pretrained({str(path)!r}) or with trust_remote_code=True and without "
            "ignore_mismatched_sizes; a size mismatch then means that config.json no longer matches the weights "
            "(was it edited?)"
        )
    download = {name: kwargs[name] for name in DOWNLOAD_ARGUMENTS if name in kwargs}
    config = kwargs.get("config")
    if not isinstance(getattr(config, "dendrites", None), dict):
        source = config if isinstance(config, (str, os.PathLike)) else path
        if source is None:
            return  # nothing to read a record from: transformers names what is missing
        config = model_class.config_class.from_pretrained(source, **download)
    record = config.dendrites
    names = list(record["layers"])
    required = record.get("format_version", 1) >= 2
    state_dict = kwargs.get("state_dict")
    if state_dict is not None:
        saved = {
            name: settings_from_tensor(state_dict[settings_key(name)])
            for name in names
            if settings_key(name) in state_dict
        }
    elif path is not None:
        files = saved_weight_files(path, download)
        if not files and required:
            raise ValueError(f"{path} has no safetensors weights: a model with dendrites is saved in safetensors only")
        saved = read_settings_records(files, names)
    else:
        return
    expected = recorded_settings(record)
    check_settings_match({name: expected for name in names}, saved, required=required)
