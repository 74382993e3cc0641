"""Candidates trained on cached rows with whole-cache statistics, chosen on rows they never saw.

The objective of candidate c of neuron o is |r_co|, the correlation of its activation with the
neuron error over all training rows of the cache. Its gradient for one row p is

    d|r|/dv_p = (1/N) [ sign(r) (e_p - mean e) / (std v std e) - |r| (v_p - mean v) / var v ]

Every term but the row's own values is a statistic of the whole cache. Each epoch starts with one
pass (no gradient) that computes them exactly; the epoch's minibatch steps then follow this
gradient row by row, so a minibatch only samples the sum, never re-centres or re-normalises it.
(Centring, normalising and taking the sign per minibatch, as a streaming learner must, turns a
correlation well below 1/sqrt(rows per batch) into noise.) With a batch as large as the cache,
an epoch is one exact full-batch step, and that step's own forward gives the statistics: one
forward and one backward per epoch.

A share of the cached *examples* is kept out of training and split in two halves. On the
selection half each neuron keeps its best candidate; the score is the kept candidates' |r| on the
other half, rows that neither trained nor chose them. Beside it, the chance level: the same choice
and score with the held-out errors shuffled. Early stopping on the selection half (per layer or
per candidate, `FitSettings.early_stopping`) is available but off: on MiniLM it did not raise the
held-out score (`python -m benchmarks.learner`). With a rank, every candidate of the layer reads
the input through one shared basis `[r, in]`, trained jointly with them.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .candidate_cache import LayerRows
from .correlation import BatchMoments, CorrelationStats, is_flat
from .layer import CandidateChoice, DendriteLinear, candidate_activations

logger = logging.getLogger(__name__)

# Rows per chunk of a no-gradient pass (statistics, scores): bounds the [rows, C, out] activations.
CHUNK_ELEMENTS = 2**24
# Early-stopping checks per fit: each costs one no-gradient pass over the selection rows.
CHECKS = 10


@dataclass(frozen=True)
class FitSettings:
    """How candidates train on the cache (the `candidate_*` fields of `DendriteTrainingArguments`)."""

    num_candidates: int
    epochs: int
    batch_size: int
    learning_rate: float
    score_fraction: float
    shuffled_errors: bool = False
    init_scale: float | None = None  # spread of the initial candidates (None: the layer's)
    early_stopping: str = "none"  # or "layer": one check for the layer; "candidate": per candidate (benchmarks.learner)


@dataclass
class LayerFit:
    """Trained candidates of one layer and what they are worth."""

    weight: torch.Tensor  # [C, out, in]
    bias: torch.Tensor  # [C, out]
    cascade: torch.Tensor | None  # [C, K, out]
    basis: torch.Tensor | None  # [r, in] shared by every candidate of a low-rank layer
    choice: CandidateChoice  # per neuron: kept candidate, its |r| on the scoring rows
    chance: float  # mean over neurons of the same score with the held-out errors shuffled
    train_score: float  # mean over neurons of the kept candidates' |r| on the training rows
    train_rows: int
    score_rows: int
    score_examples: torch.Tensor | None = None  # the scoring examples (None: too few to split, every row scored)
    selection_examples: torch.Tensor | None = None  # the examples that chose epochs and candidates
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


def split_held_out(
    rows: LayerRows, score_fraction: float, generator: torch.Generator
) -> tuple[LayerRows, LayerRows, LayerRows]:
    """(training, selection, scoring) rows, whole examples apart. With too few examples the selection
    rows are the scoring rows, and with fewer still every side gets every row."""
    train, held = split_by_example(rows, score_fraction, generator)
    if held is train:
        return rows, rows, rows
    selection, score = split_by_example(held, 0.5, generator)
    return train, selection, score


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
        stats = _added(stats, values, errors[part])
    return stats


@torch.no_grad()
def moments(values: torch.Tensor, errors: torch.Tensor, width: int) -> CorrelationStats:
    """`statistics` of activations already computed `[rows, C, out]` (in chunks, as there)."""
    stats = None
    for part in _chunks(values.shape[0], width):
        stats = _added(stats, values[part], errors[part])
    return stats


def _added(stats: CorrelationStats | None, values: torch.Tensor, errors: torch.Tensor) -> CorrelationStats:
    if stats is None:
        stats = CorrelationStats(values.shape[1], values.shape[2], device=values.device)
    stats.add_moments(BatchMoments.of(values, errors))
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
    weight, bias, cascade, basis = layer.random_input_weights(settings.num_candidates, generator, settings.init_scale)
    device = rows.inputs.device
    weight, bias = weight.to(device), bias.to(device)
    cascade = cascade.to(device) if layer.cascade else None  # [C, 0, out] before the first dendrite
    basis = None if basis is None else basis.to(device)
    width = settings.num_candidates * layer.out_features

    def activations(x: torch.Tensor, d: torch.Tensor | None) -> torch.Tensor:
        return candidate_activations(x, weight, bias, cascade, d, activation=layer.activation, basis=basis)

    def held_out_correlations(part: LayerRows, errors: torch.Tensor) -> torch.Tensor:
        return correlations(activations, part.inputs, errors, part.dendrites, width).abs()

    train, selection, score = split_held_out(rows, settings.score_fraction, generator)
    skipped = _reason_to_skip(rows)
    if skipped is None and settings.epochs > 0:
        errors = _standardised(train.errors)
        if settings.shuffled_errors:
            errors = _permuted(errors, generator)
        parameters = {"weight": weight, "bias": bias, "cascade": cascade, "basis": basis}
        parameters = {name: parameter for name, parameter in parameters.items() if parameter is not None}
        keeper = _BestWeights(
            parameters, lambda: held_out_correlations(selection, selection.errors), settings.early_stopping
        )
        _train(activations, list(parameters.values()), train, errors, settings, generator, width, keeper)
        keeper.restore()
    if skipped is None:
        index = held_out_correlations(selection, selection.errors).argmax(dim=0)
        scores = held_out_correlations(score, score.errors).gather(0, index.unsqueeze(0)).squeeze(0)
        shuffled_index = held_out_correlations(selection, _permuted(selection.errors, generator)).argmax(dim=0)
        shuffled = held_out_correlations(score, _permuted(score.errors, generator))
        chance = float(shuffled.gather(0, shuffled_index.unsqueeze(0)).mean())
        train_score = float(held_out_correlations(train, train.errors).gather(0, index.unsqueeze(0)).mean())
    else:
        index = torch.zeros(layer.out_features, dtype=torch.long, device=device)
        scores, chance, train_score = torch.zeros(layer.out_features, device=device), 0.0, 0.0
    split = score is not train
    return LayerFit(
        weight.detach(),
        bias.detach(),
        None if cascade is None else cascade.detach(),
        None if basis is None else basis.detach(),
        CandidateChoice(index, scores.float()),
        chance,
        train_score,
        len(train),
        len(score) if split else 0,
        torch.unique(score.examples) if split else None,
        torch.unique(selection.examples) if split else None,
        skipped,
    )


class _BestWeights:
    """Per candidate (or for the whole layer), the weights of the check where |r| on the selection
    rows was highest. A low-rank layer's candidates share one basis, so they keep one check together."""

    # How each parameter's entries line up with the per-candidate scores [C, out].
    MASKS = {
        "weight": lambda better: better.unsqueeze(2),  # [C, out, in or r]
        "bias": lambda better: better,  # [C, out]
        "cascade": lambda better: better.unsqueeze(1),  # [C, K, out]
        "basis": lambda better: better.any(),  # [r, in], shared: only with unit "layer"
    }

    def __init__(self, parameters: dict[str, torch.Tensor], scores: Callable[[], torch.Tensor], unit: str) -> None:
        if unit == "candidate" and "basis" in parameters:
            unit = "layer"
        self.parameters, self.scores, self.unit = parameters, scores, unit
        if unit != "none":
            self.best_score = self._scored(scores())  # the untrained candidates are the first check
            self.best = {name: parameter.detach().clone() for name, parameter in parameters.items()}

    def _scored(self, correlations: torch.Tensor) -> torch.Tensor:
        if self.unit == "layer":  # the layer's score, broadcast: every candidate keeps the same check
            return correlations.max(dim=0).values.mean().expand_as(correlations)
        return correlations

    @torch.no_grad()
    def check(self) -> None:
        if self.unit == "none":
            return
        current = self._scored(self.scores())
        better = current > self.best_score
        self.best_score = torch.where(better, current, self.best_score)
        for name, parameter in self.parameters.items():
            self.best[name].copy_(torch.where(self.MASKS[name](better), parameter, self.best[name]))

    @torch.no_grad()
    def restore(self) -> None:
        if self.unit == "none":
            return
        for name, parameter in self.parameters.items():
            parameter.copy_(self.best[name])


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


@dataclass(frozen=True)
class _Steering:
    """The whole-cache statistics `ascent_loss` needs, `[C, out]` each (0 where a candidate is flat)."""

    along_error: torch.Tensor  # sign(r) / std v
    along_value: torch.Tensor  # |r| / var v
    mean_v: torch.Tensor

    @classmethod
    @torch.no_grad()
    def of(cls, stats: CorrelationStats) -> _Steering:
        r = stats.correlation().float()
        mean_v = (stats.sum_v / stats.count).float()
        var_v = (stats.sum_vv / stats.count - (stats.sum_v / stats.count).pow(2)).clamp_min(0).float()
        flat = is_flat(var_v, mean_v)
        along_error = torch.where(flat, 0.0, r.sign() * var_v.clamp_min(1e-30).rsqrt())
        along_value = torch.where(flat, 0.0, r.abs() / var_v.clamp_min(1e-30))
        return cls(along_error, along_value, mean_v)


def _train(
    activations,
    parameters: list[torch.Tensor],
    rows: LayerRows,
    errors: torch.Tensor,
    settings: FitSettings,
    generator: torch.Generator,
    width: int,
    keeper: _BestWeights,
) -> None:
    """Adam on the whole-cache |r| of every candidate (module docstring), checked about ten times."""
    for parameter in parameters:
        parameter.requires_grad_(True)
    optimizer = torch.optim.Adam(parameters, lr=settings.learning_rate)
    count = rows.inputs.shape[0]
    batch = min(settings.batch_size, count)
    # Cosine decay to zero: late steps average out the minibatch noise of a small correlation.
    total = settings.epochs * math.ceil(count / batch)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
    check_every = max(1, settings.epochs // CHECKS)
    full_batch = batch >= count
    for epoch in range(settings.epochs):
        if not full_batch:  # a pass of its own for the statistics the epoch's minibatches follow
            steer = _Steering.of(statistics(activations, rows.inputs, errors, rows.dendrites, width))
        order = torch.randperm(count, generator=generator).to(rows.inputs.device)
        for start in range(0, count, batch):
            index = order[start : start + batch]
            dendrites = None if rows.dendrites is None else rows.dendrites[index]
            values = activations(rows.inputs[index], dendrites)
            if full_batch:  # the step's own forward holds every row: the statistics come from it
                steer = _Steering.of(moments(values.detach(), errors[index], width))
            loss = ascent_loss(values, errors[index], steer.along_error, steer.along_value, steer.mean_v)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        if (epoch + 1) % check_every == 0 or epoch + 1 == settings.epochs:
            keeper.check()
    for parameter in parameters:
        parameter.requires_grad_(False)
