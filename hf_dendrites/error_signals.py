"""Where a dendrite phase gets each neuron's error from: exact backprop, or a cheaper learning rule.

A candidate learns to correlate with its neuron's error E (`correlation.py`). Four sources of E,
each a way of representing the error as a difference of activities (the NGRAD frame, Lillicrap,
Santoro, Hinton et al. 2020):

- `backprop`: E = dLoss/dy from an exact backward pass through the frozen network.
- `linear_backprop` (Yazdani 2018): the same backward pass with every activation *function*
  treated as linear (derivative 1): GELU in the feed-forward layers, tanh in the pooler. Values
  are unchanged up to rounding (`x + (act(x) - x).detach()`); attention's softmax and LayerNorm keep their true
  derivatives (they are not activation modules).
- `feedback_alignment` (direct feedback alignment, Lillicrap et al. 2016; Nøkland 2016): the
  output error e = dLoss/dlogits of each example reaches layer l through a fixed random matrix,
  E_l = e B_l with B_l `[num_labels, out]`, drawn from a generator seeded by the layer's name (so
  it is the same in every step, phase and resumed run). No backward pass through the network.
- `forward_forward` (after Hinton 2022): no error at all. Positive examples are those the model
  currently gets wrong, negative ones those it gets right; each candidate maximises the
  correlation of its activation with that indicator, which is its goodness contrast
  (mean activation on positive minus negative examples) normalised by its spread:
  corr(v, w) = (mean_pos v - mean_neg v) sqrt(p (1 - p)) / std(v). Local: the same target for every
  neuron of every layer, no per-neuron error.

The two forward-only signals give a per-example signal; a token-level layer passes it to every
real token of the example (the candidate learns which tokens' features predict it). They run the
frozen model forward once, build E from the logits, and update the candidates from the closed-form
gradient of their correlation: no backward pass through the network.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .correlation import correlation_gradient
from .layer import DendriteLinear, PendingCandidates

FORWARD_ONLY_SIGNALS = ("feedback_alignment", "forward_forward")
IGNORE_INDEX = -100  # the label of a row without one, as in transformers' losses
# Activation functions of the BERT family, as modules (transformers.activations or torch.nn).
_TORCH_ACTIVATIONS = (nn.GELU, nn.Tanh, nn.ReLU, nn.SiLU, nn.Sigmoid, nn.Mish, nn.LeakyReLU, nn.ELU)


def is_activation_function(module: nn.Module) -> bool:
    return isinstance(module, _TORCH_ACTIVATIONS) or type(module).__module__ == "transformers.activations"


@contextmanager
def linear_activation_gradients(model: nn.Module) -> Iterator[int]:
    """Inside the block every activation module's backward is the identity (its forward is unchanged).

    Yields how many activation modules it found; nothing is changed after the block.
    """

    def straight_through(module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        (x,) = inputs
        return x + (output - x).detach()

    handles = [
        module.register_forward_hook(straight_through) for module in model.modules() if is_activation_function(module)
    ]
    try:
        yield len(handles)
    finally:
        for handle in handles:
            handle.remove()


def feedback_matrix(layer_name: str, num_labels: int, out_features: int, device: torch.device) -> torch.Tensor:
    """B_l `[num_labels, out]`: fixed random, from a generator seeded by the layer's name."""
    seed = int.from_bytes(hashlib.sha256(layer_name.encode()).digest()[:8], "little")
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(num_labels, out_features, generator=generator) / num_labels**0.5).to(device)


def classification_head(model: nn.Module) -> nn.Module:
    """The module whose output is the logits: the outermost one named `classifier`."""
    for name, module in model.named_modules():
        if name == "classifier" or name.endswith(".classifier"):
            return module
    raise ValueError(
        "the forward-only error signals read the logits from the classification head, a module named "
        "'classifier' (as in every *ForSequenceClassification of the BERT family); this model has none"
    )


@contextmanager
def forward_only_capture(model: nn.Module) -> Iterator[dict[str, Any]]:
    """Inside the block the candidates keep their outputs for `update_candidates` instead of attaching
    to the network's backward pass, and the logits are a leaf of the graph (so the loss's gradient
    with respect to them is all a backward pass computes)."""
    captured: dict[str, Any] = {"logits": None, "pending": {}}
    layers = {name: layer for name, layer in model.named_modules() if isinstance(layer, DendriteLinear)}
    for name, layer in layers.items():
        captured["pending"][name] = layer.pending_candidates = []

    def logits_as_leaf(module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        leaf = output.detach().requires_grad_(True)
        captured["logits"] = leaf
        return leaf

    handle = classification_head(model).register_forward_hook(logits_as_leaf)
    try:
        yield captured
    finally:
        handle.remove()
        for layer in layers.values():
            layer.pending_candidates = None


def per_example_signal(
    signal: str, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor | None
) -> Callable[[str, int], torch.Tensor]:
    """A function (layer name, out_features) -> the per-example signal `[batch, out]` for that layer."""
    if signal == "feedback_alignment":
        loss.backward(inputs=[logits])  # e = dLoss/dlogits [batch, num_labels]: logits are a leaf, nothing else runs
        output_error = logits.grad.reshape(logits.shape[0], -1)

        def aligned(name: str, out_features: int) -> torch.Tensor:
            matrix = feedback_matrix(name, output_error.shape[1], out_features, output_error.device)
            return output_error @ matrix.to(output_error.dtype)

        return aligned
    if signal == "forward_forward":
        if labels is None or labels.dtype.is_floating_point or logits.dim() != 2:
            raise ValueError("error_signal='forward_forward' needs class labels and logits [batch, classes]")
        # +1 wrong, -1 right: the correlation is the same as with 1 / 0, and no labelled example reads as
        # "no error". An unlabelled row (label -100, as in a distillation pool) is neither: 0, which the
        # candidates' objective leaves out as it does any row without error.
        wrong = (logits.detach().argmax(dim=-1) != labels).to(logits.dtype).mul(2).sub(1)
        wrong = wrong.masked_fill(labels == IGNORE_INDEX, 0).unsqueeze(1)
        return lambda name, out_features: wrong.expand(-1, out_features)
    raise ValueError(f"{signal!r} is not a forward-only error signal (those are {list(FORWARD_ONLY_SIGNALS)})")


def update_candidates(
    pending: Mapping[str, list[PendingCandidates]],
    layers: Mapping[str, DendriteLinear],
    signal_of_layer: Callable[[str, int], torch.Tensor],
) -> None:
    """Give every candidate the gradient of its correlation with the signal (one backward pass over
    the candidates' own small graphs, none through the network), and add to its statistics."""
    values, gradients = [], []
    for name, entries in pending.items():
        layer = layers[name]
        signal = signal_of_layer(name, layer.out_features)
        for entry in entries:
            error = signal.index_select(0, entry.examples(signal.shape[0], signal.device))
            flat = entry.values.reshape(error.shape[0], -1, layer.out_features)
            gradient = correlation_gradient(flat, error, layer.candidate_stats, skip=entry.skip)
            values.append(entry.values)
            gradients.append(gradient.view_as(entry.values))
    if values:
        torch.autograd.backward(values, gradients)


# ---------------------------------------------------------------------- how close a signal is to backprop


def exact_layer_errors(
    model: nn.Module, run_loss: Callable[[], torch.Tensor], *, linear: bool = False
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """(dLoss/dy `[rows, out]` of every dendrite layer's output, the logits) on one batch, by backprop
    (with `linear`: linear backprop). A zero tensor added to each output is what the gradient is taken of,
    so the network's own graph is not cut; run it in eval mode (no candidates, no dropout)."""
    layers = {name: layer for name, layer in model.named_modules() if isinstance(layer, DendriteLinear)}
    head = classification_head(model)
    probes: dict[str, torch.Tensor] = {}
    kept: dict[str, torch.Tensor] = {}

    def add_probe(name: str) -> Callable[..., torch.Tensor]:
        def hook(module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
            probes[name] = torch.zeros_like(output, requires_grad=True)
            kept[name] = output.detach()
            return output + probes[name]

        return hook

    handles = [layer.register_forward_hook(add_probe(name)) for name, layer in layers.items()]
    if head not in layers.values():
        handles.append(head.register_forward_hook(add_probe("<head>")))
    head_name = next((name for name, layer in layers.items() if layer is head), "<head>")
    try:
        with linear_activation_gradients(model) if linear else _nothing():
            loss = run_loss()
        errors = torch.autograd.grad(loss, list(probes.values()), allow_unused=True)
    finally:
        for handle in handles:
            handle.remove()
    by_name = {
        name: (torch.zeros_like(probe) if error is None else error).reshape(-1, probe.shape[-1])
        for (name, probe), error in zip(probes.items(), errors, strict=True)
    }
    return by_name, kept[head_name]


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def error_alignment(
    model: nn.Module, signal: str, run_loss: Callable[[], torch.Tensor], labels: torch.Tensor | None
) -> dict[str, float]:
    """Per dendrite layer, the cosine between `signal`'s neuron error and the exact backprop error on one
    batch, over the rows the exact error reaches (a diagnostic: what a candidate learns from, against
    what backprop would have given it)."""
    was_training = model.training
    model.eval()
    try:
        exact, logits = exact_layer_errors(model, run_loss)
        if signal == "linear_backprop":
            other, _ = exact_layer_errors(model, run_loss, linear=True)
        elif signal in FORWARD_ONLY_SIGNALS:
            head_error = exact["<head>"] if "<head>" in exact else exact[_head_layer_name(model)]
            output_error = head_error.reshape(logits.shape[0], -1)
            per_example = _per_example(signal, output_error, logits, labels)
            other = {
                name: _rows_of(per_example(name, error.shape[-1]), error.shape[0]) for name, error in exact.items()
            }
        else:
            other = exact
    finally:
        model.train(was_training)
    cosines = {}
    for name, error in exact.items():
        if name == "<head>":
            continue
        rows = error.ne(0).any(dim=-1)
        a, b = error[rows].flatten(), other[name][rows].flatten().to(error.dtype)
        cosines[name] = float(torch.nn.functional.cosine_similarity(a, b, dim=0)) if a.numel() else float("nan")
    return cosines


def candidate_exact_correlation(
    model: nn.Module, run_losses: list[Callable[[], torch.Tensor]]
) -> tuple[dict[str, float], dict[str, float]]:
    """Per dendrite layer with candidates, the mean over neurons of the best candidate's |correlation| with
    the exact backprop error, over every row that error reaches in the given batches: what the candidates
    trained by any signal would bring as dendrites. (The phase's own score is the correlation with its
    signal.) Also the same statistic with the error rows shuffled: the chance level that the best of
    several candidates reaches on this many rows."""
    layers = {name: layer for name, layer in model.named_modules() if isinstance(layer, DendriteLinear)}
    layers = {name: layer for name, layer in layers.items() if layer.candidate_weight is not None}
    rows_seen: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {name: [] for name in layers}
    inputs: dict[str, torch.Tensor] = {}

    def keep_input(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            inputs[name] = args[0].detach()

        return hook

    handles = [layer.register_forward_pre_hook(keep_input(name)) for name, layer in layers.items()]
    was_training = model.training
    model.eval()
    try:
        for run_loss in run_losses:
            exact, _ = exact_layer_errors(model, run_loss)
            for name, layer in layers.items():
                error = exact[name].float()
                reached = error.ne(0).any(dim=-1)
                rows_seen[name].append((inputs[name].reshape(-1, layer.in_features)[reached], error[reached]))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    scores, chance = {}, {}
    shuffle = torch.Generator().manual_seed(0)
    for name, layer in layers.items():
        x = torch.cat([x for x, _ in rows_seen[name]])
        error = torch.cat([error for _, error in rows_seen[name]])
        if x.shape[0] < 2:
            scores[name] = chance[name] = float("nan")
            continue
        with torch.no_grad():
            dendrites = layer.dendrite_outputs(x) if layer.cascade and layer.dendrite_weight is not None else None
            values = layer.candidate_outputs(x, dendrites).float()  # [rows, C, out]
        scores[name] = _best_candidate_correlation(values, error)
        chance[name] = _best_candidate_correlation(values, error[torch.randperm(len(error), generator=shuffle)])
    return scores, chance


def _best_candidate_correlation(values: torch.Tensor, error: torch.Tensor) -> float:
    """Mean over neurons of max over candidates of |Pearson correlation| over rows; values [rows, C, out]."""
    values = values - values.mean(dim=0)
    error = error - error.mean(dim=0)
    covariance = (values * error.unsqueeze(1)).sum(dim=0)
    scale = values.norm(dim=0) * error.norm(dim=0).unsqueeze(0)
    return float((covariance / scale.clamp_min(1e-12)).abs().amax(dim=0).mean())


def _head_layer_name(model: nn.Module) -> str:
    head = classification_head(model)
    return next(name for name, module in model.named_modules() if module is head)


def _per_example(
    signal: str, output_error: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor | None
) -> Callable[[str, int], torch.Tensor]:
    if signal == "feedback_alignment":
        return lambda name, out: output_error @ feedback_matrix(name, output_error.shape[1], out, output_error.device)
    leaf = logits.detach().requires_grad_(True)
    return per_example_signal(signal, leaf.sum(), leaf, labels)


def _rows_of(per_example: torch.Tensor, rows: int) -> torch.Tensor:
    """A per-example signal `[batch, out]` repeated over each example's positions (`rows` in all)."""
    return per_example.repeat_interleave(rows // per_example.shape[0], dim=0)
