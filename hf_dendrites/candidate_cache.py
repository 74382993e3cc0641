"""The frozen pass of a dendrite phase: each target layer's input rows and neuron-error rows, cached.

Cascade-correlation trains candidates on a frozen network, so the network's part of the work
can be done once: one pass over the training batches records, for every `DendriteLinear`, the
input `x` of each row (token position or example) and the error `E` its output gets. Candidates
then train on these rows for many cheap epochs (`candidate_fit.py`) with statistics of the whole
cache instead of one minibatch, which is what makes a correlation of 0.05 learnable at all.

The pass runs the model in eval mode (no dropout: the error of the model as it predicts) with
gradients for the layer outputs only (`torch.autograd.grad`; no parameter's `.grad` changes).
Rows that cannot carry signal are left out: padding, and positions whose error is exactly zero
(every token but [CLS] after the encoder's last attention, for a classifier). When a layer has
more rows than its share of the memory budget, a uniform sample is kept (priority sampling: each
row draws a random key, the smallest keys stay), reproducible from the generator.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .correlation import active_rows
from .error_signals import FORWARD_ONLY_SIGNALS, forward_only_capture, linear_activation_gradients, per_example_signal
from .layer import DendriteLinear

FLOAT_BYTES = 4
INDEX_BYTES = 8


@dataclass
class LayerRows:
    """What the candidates of one layer train on: rows of inputs and of the neuron error."""

    inputs: torch.Tensor  # [rows, in]
    errors: torch.Tensor  # [rows, out]
    dendrites: torch.Tensor | None  # [rows, K, out] installed dendrite activations (cascade only)
    examples: torch.Tensor  # [rows] the example each row belongs to (its index in the pass)
    seen: int = 0  # rows that carried signal in the pass, before sampling

    def __len__(self) -> int:
        return self.inputs.shape[0]

    def nbytes(self) -> int:
        tensors = [self.inputs, self.errors, self.examples] + ([self.dendrites] if self.dendrites is not None else [])
        return sum(t.numel() * t.element_size() for t in tensors)

    def subset(self, index: torch.Tensor) -> LayerRows:
        dendrites = None if self.dendrites is None else self.dendrites[index]
        return LayerRows(self.inputs[index], self.errors[index], dendrites, self.examples[index], len(index))


def row_bytes(layer: DendriteLinear) -> int:
    """Bytes one cached row of `layer` takes (input, error, cascade inputs, example index)."""
    cascade = layer.num_dendrites * layer.out_features if layer.cascade else 0
    return FLOAT_BYTES * (layer.in_features + layer.out_features + cascade) + INDEX_BYTES + FLOAT_BYTES


def rows_per_layer(layers: Mapping[str, DendriteLinear], budget_bytes: float, max_rows: int) -> int:
    """Rows each layer may keep so that the whole cache, with its sampling buffer (twice the rows at
    most), fits `budget_bytes`; at most `max_rows`."""
    per_row = sum(row_bytes(layer) for layer in layers.values())
    fitting = int(budget_bytes // (2 * per_row)) if per_row else max_rows
    if fitting < 2:
        raise ValueError(
            f"a candidate cache of {budget_bytes / 2**30:.3g} GiB holds fewer than 2 rows per layer "
            f"({2 * per_row} bytes a row over {len(layers)} layers with the sampling buffer); raise candidate_cache_gib"
        )
    return min(max_rows, fitting)


class _RowSample:
    """A uniform sample of at most `capacity` rows out of a stream (smallest random keys kept)."""

    def __init__(self, capacity: int, generator: torch.Generator) -> None:
        self.capacity = capacity
        self.generator = generator
        self.parts: list[tuple[torch.Tensor, ...]] = []
        self.buffered = 0
        self.seen = 0

    def add(self, inputs: torch.Tensor, errors: torch.Tensor, dendrites: torch.Tensor | None, examples: torch.Tensor):
        count = inputs.shape[0]
        if count == 0:
            return
        self.seen += count
        keys = torch.rand(count, generator=self.generator).to(inputs.device)
        cascade = dendrites if dendrites is not None else torch.empty(count, 0, 0, device=inputs.device)
        self.parts.append((keys, inputs, errors, cascade, examples))
        self.buffered += count
        if self.buffered >= 2 * self.capacity:
            self._compact()

    def _compact(self) -> None:
        keys, inputs, errors, cascade, examples = (torch.cat(column) for column in zip(*self.parts, strict=True))
        if keys.shape[0] > self.capacity:
            keep = keys.topk(self.capacity, largest=False).indices.sort().values
            keys, inputs, errors, cascade, examples = (t[keep] for t in (keys, inputs, errors, cascade, examples))
        self.parts, self.buffered = [(keys, inputs, errors, cascade, examples)], keys.shape[0]

    def rows(self) -> LayerRows | None:
        if not self.parts:
            return None
        self._compact()
        _, inputs, errors, cascade, examples = self.parts[0]
        return LayerRows(inputs, errors, cascade if cascade.numel() else None, examples, self.seen)


def _signal_rows(
    leading: tuple[int, ...], attention_mask: torch.Tensor | None, positions: str, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask of the flattened rows that may carry signal, the example of each row) for an output with
    these leading dimensions: real tokens of token-level outputs (the first of each with
    `positions="first"`), every row of per-example outputs."""
    count = math.prod(leading)
    if len(leading) < 2:
        return torch.ones(count, dtype=torch.bool, device=device), torch.arange(count, device=device)
    per_example = count // leading[0]
    index = torch.arange(count, device=device)
    examples = torch.div(index, per_example, rounding_mode="floor")
    keep = torch.ones(count, dtype=torch.bool, device=device)
    if attention_mask is not None and attention_mask.numel() == count:
        keep &= attention_mask.reshape(-1).to(device=device).bool()
    if positions == "first":
        keep &= index % leading[-1] == 0
    return keep, examples


def collect_candidate_rows(
    model: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    compute_loss: Callable[[Mapping[str, Any]], torch.Tensor],
    *,
    max_rows: int,
    generator: torch.Generator,
    error_signal: str = "backprop",
    positions: str = "all",
    stop_when_full: bool = False,
) -> dict[str, LayerRows]:
    """One frozen pass over `batches`: per dendrite layer, at most `max_rows` rows of input and error.

    `compute_loss(batch)` runs the model on a batch (already on the model's device) and returns the
    scalar loss; with a forward-only `error_signal` the batch's `labels` are read too. A layer that
    saw no row with signal is missing from the result. With `stop_when_full`, for batches in random
    order, the pass ends after the batch that fills every layer's sample: a random prefix of the
    examples is a uniform sample of them, so a small cache costs a short pass.
    """
    layers = {name: module for name, module in model.named_modules() if isinstance(module, DendriteLinear)}
    if not layers:
        raise ValueError("this model has no dendrite layers: call add_dendrites(model, config) first")
    samples = {name: _RowSample(max_rows, generator) for name in layers}
    was_training = model.training
    model.eval()
    offset = 0
    try:
        for batch in batches:
            offset += _collect_batch(model, layers, samples, batch, compute_loss, error_signal, positions, offset)
            if stop_when_full and all(sample.seen >= sample.capacity for sample in samples.values()):
                break
    finally:
        model.train(was_training)
    collected = {name: sample.rows() for name, sample in samples.items()}
    return {name: rows for name, rows in collected.items() if rows is not None}


def _collect_batch(
    model: nn.Module,
    layers: dict[str, DendriteLinear],
    samples: dict[str, _RowSample],
    batch: Mapping[str, Any],
    compute_loss: Callable[[Mapping[str, Any]], torch.Tensor],
    error_signal: str,
    positions: str,
    offset: int,
) -> int:
    """Add one batch's rows to every layer's sample; returns the number of examples in the batch."""
    seen: dict[str, dict[str, Any]] = {}

    def keep(name: str) -> Callable[..., torch.Tensor | None]:
        def hook(module: DendriteLinear, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor | None:
            x = args[0].detach()
            record = {"x": x.reshape(-1, module.in_features), "leading": tuple(output.shape[:-1])}
            if module.cascade and module.num_dendrites:
                dendrites = module.dendrite_outputs(x).detach()
                record["dendrites"] = dendrites.reshape(-1, module.num_dendrites, module.out_features)
            replaced = None
            if not output.requires_grad:  # nothing before it trains (a frozen base): its error still exists
                replaced = output.detach().requires_grad_(True)
            record["output"] = output if replaced is None else replaced
            seen[name] = record
            return replaced

        return hook

    forward_only = error_signal in FORWARD_ONLY_SIGNALS
    with ExitStack() as stack:
        for name, layer in layers.items():
            handle = layer.register_forward_hook(keep(name))
            stack.callback(handle.remove)
        if error_signal == "linear_backprop":
            stack.enter_context(linear_activation_gradients(model))
        captured = stack.enter_context(forward_only_capture(model)) if forward_only else None
        with torch.enable_grad():
            loss = compute_loss(batch)
            if forward_only:
                signal = per_example_signal(error_signal, loss, captured["logits"], batch.get("labels"))
                errors = {name: None for name in seen}
            else:
                names = [name for name in seen if seen[name]["output"].requires_grad]
                grads = torch.autograd.grad(loss, [seen[name]["output"] for name in names], allow_unused=True)
                errors = dict(zip(names, grads, strict=True))
    mask = batch.get("attention_mask")
    examples_in_batch = 0
    for name, record in seen.items():
        layer, x, leading = layers[name], record["x"], record["leading"]
        keep_rows, examples = _signal_rows(leading, mask, positions, x.device)
        examples_in_batch = max(examples_in_batch, leading[0])
        if forward_only:
            error = signal(name, layer.out_features).detach().to(x.dtype).index_select(0, examples)
        else:
            error = errors.get(name)
            if error is None:
                continue
            error = error.reshape(-1, layer.out_features).to(x.dtype)
        keep_rows &= active_rows(error)
        finite = torch.isfinite(error).all(dim=-1) & torch.isfinite(x).all(dim=-1)
        index = (keep_rows & finite).nonzero().squeeze(1)
        dendrites = record.get("dendrites")
        samples[name].add(
            x.index_select(0, index).float(),
            error.index_select(0, index).float(),
            None if dendrites is None else dendrites.index_select(0, index).float(),
            examples.index_select(0, index) + offset,
        )
    return examples_in_batch
