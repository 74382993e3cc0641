"""The dendrite structure of a model: wrap its target layers, grow them, run a dendrite phase.

`wrap_target_layers` wraps the matching `nn.Linear` layers in place (validating everything first,
so a bad request leaves the model untouched) and records the `DendriteConfig` on the model as
`model.dendrite_config`, the way PEFT records `peft_config`. This module knows nothing of files:
`augment.add_dendrites`, the user's entry point, also binds the saving and publishing methods.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .config import DendriteConfig
from .dendrite_modeling import DENDRITE_PARAMETERS, StaticDendriteLinear
from .layer import CandidateRows, DendriteLinear
from .targets import resolve_target_modules
from .training_args import DendriteTrainingArguments

_PAUSED_ATTRIBUTE = "_dendrite_paused_parameters"


def dendrite_layers(model: nn.Module) -> dict[str, DendriteLinear]:
    """Every `DendriteLinear` of the model by module name, in model order."""
    return {name: module for name, module in model.named_modules() if isinstance(module, DendriteLinear)}


def has_dendrites(model: nn.Module) -> bool:
    return getattr(model, "dendrite_config", None) is not None or bool(dendrite_layers(model))


def is_peft_model(model: nn.Module) -> bool:
    """A `peft.PeftModel` (checked by its attributes, so peft is imported only where it is used)."""
    return hasattr(model, "peft_config") and hasattr(model, "base_model")


def wrap_target_layers(
    model: nn.Module, config: DendriteConfig, *, layer_names: Iterable[str] | None = None
) -> nn.Module:
    """Wrap the target Linear layers of `model` in place (0 dendrites: outputs unchanged) and return it.

    `layer_names` overrides target matching with exact module names (used when loading a saved
    structure). Raises `ValueError` before changing anything when the model already has
    dendrites, when targets match nothing, or when a target is not an `nn.Linear`.
    """
    if not isinstance(config, DendriteConfig):
        raise TypeError(f"config must be a DendriteConfig, got {type(config).__name__}")
    config.validate()
    if has_dendrites(model):
        raise ValueError("add_dendrites() was already called on this model; it has dendrite layers")
    if layer_names is None:
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        names = resolve_target_modules(model, config.target_modules, config.exclude_modules, model_type)
    else:
        names = list(layer_names)
        modules = dict(model.named_modules(remove_duplicate=False))
        wrong = [name for name in names if not isinstance(modules.get(name), nn.Linear)]
        if wrong:
            raise ValueError(f"recorded dendrite layers {wrong} are not nn.Linear modules of this model")
    # Only the deprecated spelling `DendriteConfig(candidate_...=)` sets these; a trainer passes its own per phase.
    legacy = config.legacy_training_arguments()
    wrappers: dict[int, DendriteLinear] = {}
    for name in names:
        base = model.get_submodule(name)
        if id(base) not in wrappers:
            wrappers[id(base)] = DendriteLinear(
                base,
                mode=config.mode,
                activation=config.activation,
                cascade=config.cascade,
                init_scale=legacy.candidate_init_scale,
                candidate_token_fraction=legacy.candidate_token_fraction,
                candidate_positions=legacy.candidate_positions,
                rank=_rank_for(config, base, name),
            )
    # A Linear registered under several names is wrapped once, and every name sees the wrapper.
    aliases = [(name, module) for name, module in model.named_modules(remove_duplicate=False) if id(module) in wrappers]
    for name, module in aliases:
        parent, attribute = _parent_and_attribute(model, name)
        setattr(parent, attribute, wrappers[id(module)])
    own_dendrite_layers(model, config)
    return model


def _rank_for(config: DendriteConfig, base: nn.Linear, name: str) -> int | None:
    if config.dendrite_rank is not None and config.dendrite_rank > base.in_features:
        raise ValueError(
            f"DendriteConfig.dendrite_rank={config.dendrite_rank} is larger than the {base.in_features} inputs of "
            f"target layer {name!r}: use a rank below every target's input size, or exclude that layer"
        )
    return config.dendrite_rank


def own_dendrite_layers(model: nn.Module, config: DendriteConfig) -> None:
    """Make `model` the owner of the dendrite layers inside it: it records `config` and tells its
    layers where the real tokens are."""
    model.dendrite_config = config
    model.register_forward_pre_hook(_record_token_positions, with_kwargs=True)


def unwrap_layers(model: nn.Module) -> nn.Module:
    """Put the original Linear layers back, dropping every dendrite and candidate.

    Inside a dendrite phase the phase is ended first, so the weights it froze train again.
    """
    layers = dendrite_layers(model)
    if not layers:
        raise ValueError("this model has no dendrite layers to remove")
    if paused_parameters(model) is not None:
        stop_candidates(model)
    for name, layer in model.named_modules(remove_duplicate=False):
        if isinstance(layer, DendriteLinear):
            parent, attribute = _parent_and_attribute(model, name)
            setattr(parent, attribute, layer.base_layer)
    for key, hook in list(model._forward_pre_hooks.items()):
        if hook is _record_token_positions:
            del model._forward_pre_hooks[key]
            model._forward_pre_hooks_with_kwargs.pop(key, None)
    for attribute in ("dendrite_config", _PAUSED_ATTRIBUTE):
        model.__dict__.pop(attribute, None)
    return model


def _record_token_positions(model: nn.Module, args: tuple, kwargs: dict) -> None:
    """Forward pre-hook: in a dendrite phase, tell every layer where the real tokens are.

    Reads the `attention_mask` keyword of the model's forward (`[batch, positions]`), so the
    candidates skip padding, whose error is zero (see `CandidateRows`). Outside a dendrite
    phase it does nothing.
    """
    if getattr(model, _PAUSED_ATTRIBUTE, None) is None or not model.training:
        return
    mask = kwargs.get("attention_mask")
    positions, count = None, 0
    if isinstance(mask, torch.Tensor) and mask.dim() == 2 and not bool(mask.all()):
        flat = mask.reshape(-1)
        positions, count = flat.nonzero().squeeze(1), flat.numel()
    for layer in dendrite_layers(model).values():
        layer.candidate_rows.set_token_positions(positions, count)


def num_dendrites(model: nn.Module) -> int:
    """Dendrites per neuron (the same on every layer unless a structure was edited by hand)."""
    counts = {layer.num_dendrites for layer in dendrite_layers(model).values()}
    return max(counts, default=0)


def parameter_report(model: nn.Module) -> dict[str, Any]:
    """Base, dendrite and total parameter counts, and dendrites per layer.

    Candidates of a running dendrite phase are temporary and counted apart, so `total` is what
    a saved model holds. Shared (tied) parameters count once, as in `model.num_parameters()`.
    """
    dendrite_ids = set()
    candidate_ids = set()
    for layer in dendrite_layers(model).values():
        for name, parameter in layer.named_parameters(recurse=False):
            (dendrite_ids if name in DENDRITE_PARAMETERS else candidate_ids).add(id(parameter))
    unique = {id(p): p for p in model.parameters()}
    dendrites = sum(p.numel() for i, p in unique.items() if i in dendrite_ids)
    candidates = sum(p.numel() for i, p in unique.items() if i in candidate_ids)
    total = sum(p.numel() for p in unique.values()) - candidates
    return {
        "base": total - dendrites,
        "dendrites": dendrites,
        "total": total,
        "candidates": candidates,
        "dendrites_per_layer": {name: layer.num_dendrites for name, layer in dendrite_layers(model).items()},
    }


def _require_layers(model: nn.Module) -> dict[str, DendriteLinear]:
    layers = dendrite_layers(model)
    if not layers:
        raise ValueError("this model has no dendrite layers: call add_dendrites(model, config) first")
    return layers


def start_candidates(
    model: nn.Module,
    num_candidates: int | None = None,
    generator: torch.Generator | None = None,
    *,
    arguments: DendriteTrainingArguments | None = None,
) -> None:
    """Begin a dendrite phase: freeze every existing weight and create fresh candidates.

    `arguments` gives the candidates' count, initial spread and training rows (a trainer passes
    its own); without them the count is `num_candidates` (default 4) and each layer keeps its
    own settings. Which parameters were trainable is remembered, so `grow`/`stop_candidates` give
    them back.
    """
    layers = _require_layers(model)
    if getattr(model, _PAUSED_ATTRIBUTE, None) is not None:
        raise RuntimeError("candidates are already being trained; call grow() or stop_candidates() first")
    if num_candidates is not None:
        count = num_candidates
    elif arguments is not None:
        count = arguments.num_candidates
    else:
        count = model.dendrite_config.legacy_training_arguments().num_candidates
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"num_candidates must be an int >= 1, got {count!r}")
    paused = [name for name, parameter in model.named_parameters() if parameter.requires_grad]
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    for layer in layers.values():
        if arguments is None:
            layer.start_candidates(count, generator=generator)
        else:
            rows = CandidateRows(arguments.candidate_token_fraction, arguments.candidate_positions)
            layer.start_candidates(count, generator=generator, init_scale=arguments.candidate_init_scale, rows=rows)
    setattr(model, _PAUSED_ATTRIBUTE, paused)


def configure_candidate_rows(model: nn.Module, arguments: DendriteTrainingArguments) -> None:
    """Give every dendrite layer the run's choice of the output rows streaming candidates train on
    (`candidate_token_fraction`, `candidate_positions`), e.g. after a resume rebuilt the candidates."""
    for layer in dendrite_layers(model).values():
        layer.candidate_rows = CandidateRows(arguments.candidate_token_fraction, arguments.candidate_positions)


def stop_candidates(model: nn.Module) -> None:
    """End a dendrite phase without growing: drop candidates, unfreeze what was trainable."""
    for layer in _require_layers(model).values():
        layer.stop_candidates()
    _resume_parameters(model)


def candidate_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [
        parameter
        for layer in dendrite_layers(model).values()
        for parameter in (layer.candidate_basis, layer.candidate_weight, layer.candidate_bias, layer.candidate_cascade)
        if parameter is not None
    ]


def dendrite_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The installed dendrites' parameters (input weights, biases, cascade and output weights)."""
    return [
        parameter
        for layer in dendrite_layers(model).values()
        for name, parameter in layer.named_parameters(recurse=False)
        if name in DENDRITE_PARAMETERS
    ]


def candidate_scores(model: nn.Module) -> dict[str, float]:
    """Per layer, the mean over neurons of the best candidate's absolute correlation."""
    return {name: layer.candidate_score() for name, layer in dendrite_layers(model).items()}


def mean_candidate_score(model: nn.Module) -> float:
    scores = list(candidate_scores(model).values())
    return sum(scores) / len(scores) if scores else 0.0


def reset_candidate_statistics(model: nn.Module) -> None:
    """Start a new scoring window (the candidates keep their weights)."""
    for layer in dendrite_layers(model).values():
        if layer.candidate_stats is not None:
            layer.candidate_stats.reset()


def sum_candidate_statistics(model: nn.Module, reduce: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Replace every layer's correlation sums by `reduce` of them (a sum over processes, so every rank
    picks the same candidates)."""
    for layer in dendrite_layers(model).values():
        if layer.candidate_stats is not None:
            layer.candidate_stats.load_tensors([reduce(t) for t in layer.candidate_stats.tensors()])


def _first_names(names: list[str]) -> str:
    return f"{names[:3]}{'...' if len(names) > 3 else ''}"


def grow(model: nn.Module, generator: torch.Generator | None = None, *, init_scale: float | None = None) -> int:
    """Add one dendrite to every dendrite layer; returns the new number of dendrites per neuron.

    The model's outputs do not change (new output weights are zero). In PB mode each neuron gets
    its best trained candidate, and a model without trained candidates raises before any layer
    is touched. In GD mode the new input weights are random with spread `init_scale`
    (`DendriteTrainingArguments.candidate_init_scale`; default each layer's own).
    """
    layers = _require_layers(model)
    if model.dendrite_config.mode == "pb":
        untrained = [name for name, layer in layers.items() if not layer.has_trained_candidates()]
        never_started = [name for name in untrained if layers[name].candidate_stats is None]
        if never_started:
            raise RuntimeError(
                "grow() in 'pb' mode needs trained candidates; none were trained for "
                f"{_first_names(never_started)}: call start_candidates() and train them (a dendrite phase) first"
            )
        if untrained:
            raise RuntimeError(
                f"grow() refused: the candidates of {_first_names(untrained)} saw no batch with two or more rows "
                "that carry a finite, non-zero error, so they never trained (a batch of one example gives layers "
                "that see one row per example a single row; non-finite batches are skipped); no layer was changed"
            )
        broken = [name for name, layer in layers.items() if not layer.has_finite_candidate_scores()]
        if broken:
            raise RuntimeError(
                f"grow() refused: the candidate scores of {_first_names(broken)} are not "
                "finite (NaN or inf reached their statistics); no layer was changed"
            )
    for layer in layers.values():
        layer.grow(generator=generator, init_scale=init_scale)
    _resume_parameters(model)
    return num_dendrites(model)


def _resume_parameters(model: nn.Module) -> None:
    paused = model.__dict__.pop(_PAUSED_ATTRIBUTE, None)
    if paused is None:
        return
    parameters = dict(model.named_parameters())
    for name in paused:
        if name in parameters:
            parameters[name].requires_grad_(True)


def paused_parameters(model: nn.Module) -> list[str] | None:
    """Names of the parameters frozen for the current dendrite phase, or None outside one."""
    paused = getattr(model, _PAUSED_ATTRIBUTE, None)
    return None if paused is None else list(paused)


def set_paused_parameters(model: nn.Module, names: list[str]) -> None:
    """Restore the record of a dendrite phase (used when loading a checkpoint taken inside one)."""
    setattr(model, _PAUSED_ATTRIBUTE, list(names))


def _parent_and_attribute(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent_name, _, attribute = name.rpartition(".")
    return (model.get_submodule(parent_name) if parent_name else model), attribute


# ---------------------------------------------------------------------- snapshots


@dataclass
class ModelSnapshot:
    """A copy of a model's dendrite structure and weights, taken in a neuron phase.

    Restoring it puts the exact architecture back (layers may have had more dendrites since),
    which `load_state_dict(strict=False)` on a grown model would not do.
    """

    dendrites: dict[str, int]
    state_dict: dict[str, torch.Tensor]


def take_snapshot(model: nn.Module) -> ModelSnapshot:
    """Copy the model's structure and weights to CPU memory."""
    if paused_parameters(model) is not None:
        raise RuntimeError("snapshots are taken in a neuron phase; candidates are being trained")
    state = {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()}
    return ModelSnapshot({name: layer.num_dendrites for name, layer in dendrite_layers(model).items()}, state)


def restore_snapshot(model: nn.Module, snapshot: ModelSnapshot) -> None:
    """Put a snapshot back in place: same module objects, snapshot structure, snapshot weights.

    Ends a dendrite phase if one is running. Parameters of dendrite layers are new objects
    afterwards, so an optimizer must be rebuilt.
    """
    layers = dendrite_layers(model)
    if set(layers) != set(snapshot.dendrites):
        raise ValueError("the snapshot was taken from a model with different dendrite layers")
    if paused_parameters(model) is not None:
        stop_candidates(model)
    for name, count in snapshot.dendrites.items():
        if layers[name].num_dendrites != count:
            layers[name].allocate(count)
    model.load_state_dict(snapshot.state_dict, strict=True)


@contextmanager
def disable_dendrites(model: nn.Module) -> Iterator[nn.Module]:
    """Run the model as if it had no dendrites, then put them back (PEFT's `disable_adapter()` for
    dendrites): every dendrite's output weight `a_k` is held at zero inside the block, so the layers
    compute `W x + b` alone. Comparing the two says how much of a prediction runs through the
    dendrites. Works on models from `add_dendrites` and `hf_dendrites.from_pretrained`; the weights
    are restored exactly, also when the block raises.
    """
    layers = [module for module in model.modules() if isinstance(module, StaticDendriteLinear)]
    if not layers:
        raise ValueError("disable_dendrites: the model has no dendrite layers (add_dendrites was not applied)")
    kept = [(layer.dendrite_scale, layer.dendrite_scale.detach().clone()) for layer in layers if layer.num_dendrites]
    try:
        with torch.no_grad():
            for scale, _ in kept:
                scale.zero_()
        yield model
    finally:
        with torch.no_grad():
            for scale, value in kept:
                scale.copy_(value)


@contextmanager
def unchanged_on_error(model: nn.Module) -> Iterator[None]:
    """Put the model's dendrite structure, weights, phase and trainable flags back if the block raises.

    For operations that change the structure before they can know they will succeed (loading a
    checkpoint rebuilds the structure, then reads the weights). Costs one copy of the weights.
    Candidates, if the model had any, come back with their weights but empty statistics.
    """
    counts = {name: (layer.num_dendrites, layer.num_candidates) for name, layer in dendrite_layers(model).items()}
    state = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}
    trainable = {name: parameter.requires_grad for name, parameter in model.named_parameters()}
    paused = paused_parameters(model)
    try:
        yield
    except BaseException:
        layers = dendrite_layers(model)
        for name, (dendrites, candidates) in counts.items():
            layers[name].allocate(dendrites, candidates)
        model.load_state_dict(state, strict=True)
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(trainable.get(name, parameter.requires_grad))
        model.__dict__.pop(_PAUSED_ATTRIBUTE, None)
        if paused is not None:
            set_paused_parameters(model, paused)
        raise
