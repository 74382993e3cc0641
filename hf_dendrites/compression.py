"""Parameter accounting for models with dendrites (and, later, compressed architectures)."""

from __future__ import annotations

from typing import Any

from torch import nn

from .dendrite_modeling import DENDRITE_PARAMETERS
from .model import dendrite_layers


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
