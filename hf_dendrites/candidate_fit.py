"""Candidates trained on cached rows with whole-cache statistics, chosen on rows they never saw.

The objective of candidate c of neuron o is |r_co|, the correlation of its activation with the
neuron error over all training rows of the cache. Its gradient for one row p is

    d|r|/dv_p = (1/N) [ sign(r) (e_p - mean e) / (std v std e) - |r| (v_p - mean v) / var v ]

Every term but the row's own values is a statistic of the whole cache. Each epoch starts with one
pass (no gradient) that computes them exactly; the epoch's minibatch steps then follow this
gradient row by row, so a minibatch only samples the sum, never re-centres or re-normalises it.
(Centring, normalising and taking the sign per minibatch, as a streaming learner must, turns a
correlation well below 1/sqrt(rows per batch) into noise.) With a batch as large as the cache,
an epoch is one exact full-batch step.

Choice and score use the rows of a share of the cached *examples* kept out of training: each
neuron keeps its candidate with the highest |r| there, and that |r| is the score. Beside it, the
chance level: the same choice and score with those rows' errors shuffled.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch

from .candidate_cache import LayerRows
from .correlation import BatchMoments, CorrelationStats, is_flat
from .layer import CandidateChoice, DendriteLinear, candidate_activations

logger = logging.getLogger(__name__)

# Rows per chunk of a no-gradient pass (statistics, scores): bounds the [rows, C, out] activations.
CHUNK_ELEMENTS = 2**24


@dataclass(frozen=True)
class FitSettings:
    """How candidates train on the cache (the `candidate_*` fields of `DendriteConfig`)."""

    num_candidates: int
    epochs: int
    batch_size: int
    learning_rate: float
    score_fraction: float
    shuffled_errors: bool = False


@dataclass
class LayerFit:
    """Trained candidates of one layer and what they are worth."""

    weight: torch.Tensor  # [C, out, in]
    bias: torch.Tensor  # [C, out]
    cascade: torch.Tensor | None  # [C, K, out]
    choice: CandidateChoice  # per neuron: kept candidate, its |r| on held-out rows
    chance: float  # mean over neurons of the same score with the held-out errors shuffled
    train_score: float  # mean over neurons of the kept candidates' |r| on the training rows
    train_rows: int
    score_rows: int
    score_examples: torch.Tensor | None = None  # the held-out examples (None: too few to split, every row scored)
    skipped: str | None = None  # why the layer's candidates did not train

    @property
    def score(self) -> float:
        return float(self.choice.score.mean())


def split_by_example(rows: LayerRows, score_fraction: float, generator: torch.Generator) -> tuple[LayerRows, LayerRows]:
    """(training rows, scoring rows): whole examples on either side, so that tokens of one sentence
    never train and score a candidate at once. Too few examples to split: both sides get every row."""
    examples = torch.unique(rows.examples)
    held = math.ceil(score_fraction * len(examples))
    if held < 1 or held >= len(examples):
        return rows, rows
    order = torch.randperm(len(examples), generator=generator).to(examples.device)
    scoring = torch.isin(rows.examples, examples[order[:held]])
    train, score = rows.subset(scoring.logical_not().nonzero().squeeze(1)), rows.subset(scoring.nonzero().squeeze(1))
    if len(train) < 2 or len(score) < 2:
        return rows, rows
    return train, score


def _chunks(count: int, width: int) -> list[slice]:
    step = max(1, CHUNK_ELEMENTS // max(1, width))
    return [slice(start, min(start + step, count)) for start in range(0, count, step)]


@torch.no_grad()
def statistics(
    activations, inputs: torch.Tensor, errors: torch.Tensor, dendrites: torch.Tensor | None, width: int
) -> CorrelationStats:
    """Float64 sums of the candidates' activations and `errors` over all rows (in chunks)."""
    stats = None
    for part in _chunks(inputs.shape[0], width):
        values = activations(inputs[part], None if dendrites is None else dendrites[part])
        if stats is None:
            stats = CorrelationStats(values.shape[1], values.shape[2], device=values.device)
        stats.add_moments(BatchMoments.of(values, errors[part]))
    return stats


def correlations(
    activations, inputs: torch.Tensor, errors: torch.Tensor, dendrites: torch.Tensor | None, width: int
) -> torch.Tensor:
    """Signed correlation `[C, out]` of the candidates with `errors` over all rows."""
    return statistics(activations, inputs, errors, dendrites, width).correlation()


def _standardised(errors: torch.Tensor) -> torch.Tensor:
    """Errors with zero mean and unit variance per neuron over the rows; neurons whose error does
    not vary become zero (they give no gradient and score 0)."""
    mean, var = errors.mean(dim=0), errors.var(dim=0, unbiased=False)
    flat = is_flat(var, mean)
    scale = torch.where(flat, torch.zeros_like(var), var.clamp_min(torch.finfo(var.dtype).tiny).rsqrt())
    return (errors - mean) * scale


def _permuted(tensor: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return tensor[torch.randperm(tensor.shape[0], generator=generator).to(tensor.device)]


def fit_layer(layer: DendriteLinear, rows: LayerRows, settings: FitSettings, generator: torch.Generator) -> LayerFit:
    """Train `settings.num_candidates` candidates per neuron of `layer` on `rows` and choose among them."""
    weight, bias, cascade = layer.random_input_weights(settings.num_candidates, generator)
    device = rows.inputs.device
    weight, bias = weight.to(device), bias.to(device)
    cascade = cascade.to(device) if layer.cascade and rows.dendrites is not None else None
    width = settings.num_candidates * layer.out_features

    def activations(x: torch.Tensor, d: torch.Tensor | None) -> torch.Tensor:
        return candidate_activations(x, weight, bias, cascade, d, activation=layer.activation)

    train, score = split_by_example(rows, settings.score_fraction, generator)
    skipped = _reason_to_skip(rows)
    if skipped is None and settings.epochs > 0:
        errors = _standardised(train.errors)
        if settings.shuffled_errors:
            errors = _permuted(errors, generator)
        _train(
            activations,
            [weight, bias] + ([cascade] if cascade is not None else []),
            train,
            errors,
            settings,
            generator,
            width,
        )
    if skipped is None:
        held_out = correlations(activations, score.inputs, score.errors, score.dendrites, width).abs()
        shuffled = correlations(activations, score.inputs, _permuted(score.errors, generator), score.dendrites, width)
        scores, index = held_out.max(dim=0)
        chance = float(shuffled.abs().max(dim=0).values.mean())
        trained = correlations(activations, train.inputs, train.errors, train.dendrites, width).abs()
        train_score = float(trained.gather(0, index.unsqueeze(0)).mean())
    else:
        index = torch.zeros(layer.out_features, dtype=torch.long, device=device)
        scores, chance, train_score = torch.zeros(layer.out_features, device=device), 0.0, 0.0
    return LayerFit(
        weight.detach(),
        bias.detach(),
        None if cascade is None else cascade.detach(),
        CandidateChoice(index, scores.float()),
        chance,
        train_score,
        len(train),
        0 if score is train else len(score),
        None if score is train else torch.unique(score.examples),
        skipped,
    )


def _reason_to_skip(rows: LayerRows) -> str | None:
    if len(rows) < 2:
        return "fewer than 2 rows with an error"
    inputs = rows.inputs
    if bool(is_flat(inputs.var(dim=0, unbiased=False), inputs.mean(dim=0)).all()):
        return "its input is the same in every row"
    return None


def ascent_loss(
    values: torch.Tensor,
    errors: torch.Tensor,
    along_error: torch.Tensor,
    along_value: torch.Tensor,
    mean_v: torch.Tensor,
) -> torch.Tensor:
    """A loss whose gradient through `values` `[B, C, out]` is minus the whole-cache gradient of the
    summed |r| (per row, scaled by cache rows / B).

    `errors` `[B, out]` are standardised over the cache; `along_error` = sign(r) / std v,
    `along_value` = |r| / var v and `mean_v` are whole-cache statistics `[C, out]`.
    """
    with torch.no_grad():
        direction = errors.unsqueeze(1) * along_error - (values - mean_v) * along_value
    return -(values * direction).sum() / values.shape[0]


def _train(
    activations,
    parameters: list[torch.Tensor],
    rows: LayerRows,
    errors: torch.Tensor,
    settings: FitSettings,
    generator: torch.Generator,
    width: int,
) -> None:
    """Adam on the whole-cache |r| of every candidate (module docstring)."""
    for parameter in parameters:
        parameter.requires_grad_(True)
    optimizer = torch.optim.Adam(parameters, lr=settings.learning_rate)
    count = rows.inputs.shape[0]
    batch = min(settings.batch_size, count)
    # Cosine decay to zero: late steps average out the minibatch noise of a small correlation.
    total = settings.epochs * math.ceil(count / batch)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    for _ in range(settings.epochs):
        with torch.no_grad():
            stats = statistics(activations, rows.inputs, errors, rows.dendrites, width)
            r = stats.correlation().float()
            mean_v = (stats.sum_v / stats.count).float()
            var_v = (stats.sum_vv / stats.count - (stats.sum_v / stats.count).pow(2)).clamp_min(0).float()
            flat = is_flat(var_v, mean_v)
            along_error = torch.where(flat, 0.0, r.sign() * var_v.clamp_min(1e-30).rsqrt())
            along_value = torch.where(flat, 0.0, r.abs() / var_v.clamp_min(1e-30))
        order = torch.randperm(count, generator=generator).to(rows.inputs.device)
        for start in range(0, count, batch):
            index = order[start : start + batch]
            dendrites = None if rows.dendrites is None else rows.dendrites[index]
            values = activations(rows.inputs[index], dendrites)
            loss = ascent_loss(values, errors[index], along_error, along_value, mean_v)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    for parameter in parameters:
        parameter.requires_grad_(False)
