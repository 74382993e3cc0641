"""Smaller models for dendrites to make up for: narrowed BERTs and summing networks.

Narrowing a layer saves parameters quadratically while a dendrite costs them linearly, so a
narrowed model with dendrites can reach a full model's accuracy with a fraction of its size.

Narrowing rule (`narrow_config`): the attention head size of the original is kept, so the new
hidden size is a whole number of heads: `heads = round(hidden_size * width / head_size)` (at
least 1, or an error), `hidden_size = heads * head_size`. The feed-forward size (and ELECTRA's
embedding size) shrinks by the same factor `new hidden / old hidden`; the vocabulary, position
table and label count stay. `depth` keeps that many layers.

A narrowed model can start from the pretrained one (`narrow_model`): its first `depth` layers, and
in every tensor either the first hidden units, whole heads and feed-forward units (`"first"`) or
the most important ones (`"importance"`, defined in `_importance_indices`); or from scratch.
"""

from __future__ import annotations

import copy
import re

import torch
from transformers import PretrainedConfig, PreTrainedModel

from .model import has_dendrites
from .modeling_summing import SummingNetworkConfig, SummingNetworkForSequenceClassification

NARROW_INITS = ("first", "importance", "scratch")
# Config field holding the feed-forward width, per family (the rest use attribute_map names).
_INTERMEDIATE_FIELDS = ("intermediate_size", "hidden_dim")
# Parameter-name patterns of the head-space dimension: q/k/v outputs (dim 0), attention output input (dim 1).
_HEAD_OUTPUTS = re.compile(r"\.(query|key|value|q_lin|k_lin|v_lin)\.(weight|bias)$")
_HEAD_INPUTS = re.compile(r"\.(attention\.output\.dense|out_lin)\.weight$")
# Feed-forward: first Linear's outputs (dim 0), second Linear's inputs (dim 1).
_FFN_OUTPUTS = re.compile(r"\.(intermediate\.dense|lin1)\.(weight|bias)$")
_FFN_INPUTS = re.compile(r"\.((?<!attention\.)output\.dense|lin2)\.weight$")
_LAYER_PREFIX = re.compile(r"^(.*\.layer\.\d+)\.")


# ---------------------------------------------------------------------- narrowed BERTs


def _field(config: PretrainedConfig, name: str) -> str:
    """The real config attribute behind a standard name (DistilBERT calls hidden_size `dim`)."""
    return getattr(config, "attribute_map", {}).get(name, name)


def _intermediate_field(config: PretrainedConfig) -> str:
    for name in _INTERMEDIATE_FIELDS:
        if isinstance(getattr(config, name, None), int):
            return name
    raise ValueError(f"{type(config).__name__} has no feed-forward size ({' or '.join(_INTERMEDIATE_FIELDS)})")


def narrow_config(config: PretrainedConfig, width: float = 1.0, depth: int | None = None) -> PretrainedConfig:
    """A copy of a BERT-family config with `width` times the hidden size and `depth` layers.

    See the module docstring for the rounding rule. Raises `ValueError` for a width outside
    (0, 1], a width too small for one attention head, or a depth below 1.
    """
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not 0 < width <= 1:
        raise ValueError(f"width must be a number in (0, 1], got {width!r}")
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int) or depth < 1):
        raise ValueError(f"depth must be an integer >= 1 (or None to keep every layer), got {depth!r}")
    hidden_field, heads_field = _field(config, "hidden_size"), _field(config, "num_attention_heads")
    layers_field = _field(config, "num_hidden_layers")
    hidden, heads = getattr(config, hidden_field), getattr(config, heads_field)
    head_size = hidden // heads
    new_heads = round(hidden * width / head_size)
    if new_heads < 1:
        raise ValueError(
            f"width={width} is too small for one attention head: hidden size {hidden} x {width} = "
            f"{hidden * width:.1f}, but a head has {head_size} units (smallest width: {head_size / hidden:.4f})"
        )
    new_hidden = new_heads * head_size
    factor = new_hidden / hidden
    narrowed = copy.deepcopy(config)
    setattr(narrowed, hidden_field, new_hidden)
    setattr(narrowed, heads_field, new_heads)
    intermediate_field = _intermediate_field(config)
    setattr(narrowed, intermediate_field, max(1, round(getattr(config, intermediate_field) * factor)))
    if isinstance(getattr(config, "embedding_size", None), int):  # ELECTRA
        narrowed.embedding_size = max(1, round(config.embedding_size * factor))
    if depth is not None:
        setattr(narrowed, layers_field, depth)
    return narrowed


def _ranked(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the `count` highest scores, in increasing index order (keeps the layout)."""
    return torch.sort(torch.topk(scores, count).indices).values


def _importance_indices(
    source: dict[str, torch.Tensor],
    hidden: int,
    new_hidden: int,
    head_size: int,
    intermediate: int,
    new_intermediate: int,
) -> dict[tuple[str, str], torch.Tensor]:
    """Which units `"importance"` keeps, per index space.

    - the residual stream (every hidden-size dimension that is not head space), one choice for the
      whole model: units with the largest weight mass, summed over every tensor touching the stream
      after normalising each tensor's per-unit norms to mean 1 (so no single tensor dominates);
    - per layer, whole attention heads: largest norm of the head's query, key, value and output weights;
    - per layer, feed-forward units: largest product of the unit's input-row and output-column norms.
    """
    residual = torch.zeros(hidden)
    heads: dict[str, torch.Tensor] = {}
    ffn_in: dict[str, torch.Tensor] = {}
    ffn_out: dict[str, torch.Tensor] = {}
    for name, tensor in source.items():
        if not tensor.is_floating_point():
            continue
        layer = _LAYER_PREFIX.match(name)
        for dim, size in enumerate(tensor.shape):
            space = _space(name, dim, size, hidden, intermediate)
            if space is None:
                continue
            norms = tensor.float().transpose(0, dim).reshape(size, -1).norm(dim=1)
            if space == "residual":
                residual += norms / norms.mean().clamp(min=1e-12)
            elif space == "heads" and layer:
                per_head = norms.reshape(-1, head_size).pow(2).sum(dim=1)
                heads[layer.group(1)] = heads.get(layer.group(1), 0) + per_head
            elif space == "ffn" and layer:
                target = ffn_in if _FFN_OUTPUTS.search(name) else ffn_out
                if tensor.dim() == 2:
                    target[layer.group(1)] = norms
    chosen: dict[tuple[str, str], torch.Tensor] = {("", "residual"): _ranked(residual, new_hidden)}
    for prefix, scores in heads.items():
        keep = _ranked(scores, new_hidden // head_size)
        chosen[(prefix, "heads")] = (keep[:, None] * head_size + torch.arange(head_size)).reshape(-1)
    for prefix in ffn_in.keys() & ffn_out.keys():
        chosen[(prefix, "ffn")] = _ranked(ffn_in[prefix] * ffn_out[prefix], new_intermediate)
    return chosen


def _space(name: str, dim: int, size: int, hidden: int, intermediate: int) -> str | None:
    """Which index space dimension `dim` of parameter `name` lives in (None: kept whole)."""
    if dim == 0 and _HEAD_OUTPUTS.search(name) or dim == 1 and _HEAD_INPUTS.search(name):
        return "heads"
    if dim == 0 and _FFN_OUTPUTS.search(name) or dim == 1 and _FFN_INPUTS.search(name):
        return "ffn"
    if size == hidden:
        return "residual"
    return None


def narrow_model(
    model: PreTrainedModel, width: float = 1.0, depth: int | None = None, init: str = "first"
) -> PreTrainedModel:
    """A narrowed copy of a BERT-family model (same class), initialised from it or from scratch.

    `init`: `"first"` keeps the first layers and, in every tensor, the first hidden units, heads
    and feed-forward units; `"importance"` keeps the most important ones (`_importance_indices`);
    `"scratch"` keeps nothing (a random model of the narrowed shape, drawn from the global seed).
    The input model is not changed.
    """
    if init not in NARROW_INITS:
        raise ValueError(f"init must be one of {NARROW_INITS}, got {init!r}")
    if has_dendrites(model):
        raise ValueError("narrow the model before add_dendrites(): this model already has dendrite layers")
    config = model.config
    layers = getattr(config, _field(config, "num_hidden_layers"))
    if init != "scratch" and depth is not None and depth > layers:
        raise ValueError(f"depth={depth} exceeds the {layers} layers of the model it is initialised from")
    narrowed_config = narrow_config(config, width, depth)
    narrowed = type(model)(narrowed_config)
    if init == "scratch":
        return narrowed
    hidden = getattr(config, _field(config, "hidden_size"))
    new_hidden = getattr(narrowed_config, _field(config, "hidden_size"))
    head_size = hidden // getattr(config, _field(config, "num_attention_heads"))
    intermediate_field = _intermediate_field(config)
    intermediate, new_intermediate = getattr(config, intermediate_field), getattr(narrowed_config, intermediate_field)
    source = model.state_dict()
    chosen = (
        _importance_indices(source, hidden, new_hidden, head_size, intermediate, new_intermediate)
        if init == "importance"
        else {}
    )
    state = {}
    for name, target in narrowed.state_dict().items():
        if name not in source:
            raise ValueError(f"cannot initialise {name}: the source model has no such tensor")
        tensor = source[name]
        if tensor.dim() != target.dim():
            raise ValueError(f"cannot initialise {name}: shapes {tuple(tensor.shape)} and {tuple(target.shape)}")
        layer = _LAYER_PREFIX.match(name)
        for dim, (size, new_size) in enumerate(zip(tensor.shape, target.shape)):
            if size == new_size:
                continue
            if new_size > size:
                raise ValueError(f"cannot initialise {name}: dimension {dim} grows from {size} to {new_size}")
            space = _space(name, dim, size, hidden, intermediate)
            key = ("", "residual") if space == "residual" else (layer.group(1) if layer else "", space)
            index = chosen.get(key, torch.arange(new_size))
            tensor = tensor.index_select(dim, index.to(tensor.device))
        state[name] = tensor.clone()
    narrowed.load_state_dict(state, strict=True)
    return narrowed


# ---------------------------------------------------------------------- summing networks


def summing_network(
    config: SummingNetworkConfig, *, pretrained: PreTrainedModel | None = None
) -> SummingNetworkForSequenceClassification:
    """A summing network; with `pretrained`, its embedding table is the pretrained one projected.

    The projection keeps the `embedding_size` principal directions of the pretrained word
    embeddings (centred), so similar tokens stay similar at a fraction of the width. The
    vocabularies must agree (use the pretrained model's tokenizer).
    """
    model = SummingNetworkForSequenceClassification(config)
    if pretrained is None:
        return model
    table = pretrained.get_input_embeddings().weight.detach().float()
    if table.shape[0] != config.vocab_size:
        raise ValueError(
            f"the pretrained embeddings have {table.shape[0]} rows but the summing network's vocab_size is "
            f"{config.vocab_size}: use the pretrained model's tokenizer and vocab_size"
        )
    if config.embedding_size > table.shape[1]:
        raise ValueError(
            f"embedding_size={config.embedding_size} exceeds the pretrained embedding width {table.shape[1]}: "
            "a projection can only narrow"
        )
    centred = table - table.mean(dim=0)
    _, vectors = torch.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
    projection = vectors[:, -config.embedding_size :].flip(-1)
    with torch.no_grad():
        model.embeddings.weight.copy_(centred @ projection)
        if model.embeddings.padding_idx is not None:
            model.embeddings.weight[model.embeddings.padding_idx].zero_()
    return model
