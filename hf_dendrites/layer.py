"""`DendriteLinear`: an `nn.Linear` whose every output neuron can carry dendrites, and grow more.

`StaticDendriteLinear` (in `dendrite_modeling.py`, self-contained so saved models can ship it)
computes the installed dendrites. This subclass adds what training needs: the candidates of a
dendrite phase (one `[C, out, in]` parameter, trained through the correlation objective without
changing the layer's output) and growth. Growing replaces parameters with larger ones, so an
optimizer holding the old ones must be rebuilt.

This module knows nothing of trainers: it computes, grows, and reports candidate scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .correlation import CorrelationStats, capture_error
from .dendrite_modeling import ACTIVATIONS, StaticDendriteLinear
from .training_args import CANDIDATE_POSITIONS

CANDIDATE_PARAMETERS = ("candidate_basis", "candidate_weight", "candidate_bias", "candidate_cascade")


@dataclass
class PendingCandidates:
    """Candidate outputs of one forward pass, kept for a forward-only error signal (`error_signals.py`)."""

    values: torch.Tensor  # [rows, C, out]
    rows: torch.Tensor | None  # indices into the flattened leading dimensions of the output; None: all
    leading: tuple[int, ...]  # the output's leading dimensions, e.g. (batch, positions)
    skip: bool

    def examples(self, batch: int, device: torch.device) -> torch.Tensor:
        """The example each row belongs to."""
        count = math.prod(self.leading)
        rows = torch.arange(count, device=device) if self.rows is None else self.rows
        return torch.div(rows, count // batch, rounding_mode="floor")


class CandidateRows:
    """Which rows (token positions) of a layer's output the candidates train on in a step.

    Three savings for a dendrite phase, none of which changes what the candidates learn from.
    Padding positions never reach the loss, so their error is exactly zero and they add nothing
    to the correlation: when the model's forward saw an attention mask (`set_token_positions`),
    candidates are computed for the real tokens only (about half the positions of a padded
    batch of short sentences). A classifier head reads the first position only ([CLS]), so after
    the last attention of the encoder every other position gets a zero error too: a layer that
    saw this in its last backward pass computes candidates for the first position alone, and
    goes back to every position as soon as another one gets an error. And with `fraction` < 1
    the candidates see a fresh random subset of the remaining positions each step (drawn from
    torch's global generator, which checkpoints save and restore). With `positions="first"` every
    token-level layer uses the first position alone, whatever its error: the choice for a
    per-example error signal, which reaches every token. Outputs with one row per example (pooler,
    classifier) always use every row.
    """

    def __init__(self, fraction: float = 1.0, positions: str = "all") -> None:
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"candidate_token_fraction must be in (0, 1], got {fraction!r}")
        if positions not in CANDIDATE_POSITIONS:
            raise ValueError(f"candidate_positions must be one of {list(CANDIDATE_POSITIONS)}, got {positions!r}")
        self.fraction = fraction
        self.positions = positions
        self.first_position_only = False
        self.token_positions: torch.Tensor | None = None
        self.num_positions = 0

    def set_token_positions(self, positions: torch.Tensor | None, num_positions: int = 0) -> None:
        """Flattened indices of the real tokens among `num_positions` (None: every position is one)."""
        self.token_positions = positions
        self.num_positions = num_positions

    def select(self, shape: torch.Size, device: torch.device) -> torch.Tensor | None:
        """Indices into the flattened leading dimensions of an output of `shape`, or None for all."""
        leading = shape[:-1]
        if len(leading) < 2:  # one row per example (pooler, classifier): no positions to sample
            return None
        count = math.prod(leading)
        if self.first_position_only or self.positions == "first":
            return torch.arange(0, count, leading[-1], device=device)
        tokens = self.token_positions if self.num_positions == count else None
        available = count if tokens is None else tokens.numel()
        keep = max(2, math.ceil(self.fraction * available))
        if keep >= available:
            return tokens
        chosen = torch.randperm(available, device=device)[:keep].sort().values
        return chosen if tokens is None else tokens[chosen]

    def observe(self, error: torch.Tensor) -> None:
        """Learn from a full error `[..., positions, out]` whether positions after the first get any."""
        if error.dim() >= 3:
            self.first_position_only = not bool(error[..., 1:, :].ne(0).any())


def candidate_activations(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    cascade: torch.Tensor | None,
    dendrites: torch.Tensor | None,
    *,
    activation: str,
    basis: torch.Tensor | None = None,
) -> torch.Tensor:
    """`act(W_c x + b_c [+ cascade_c . d])`: `[..., C, out]` from inputs `[..., in]`, weights `[C, out, in]`,
    biases `[C, out]`, cascade weights `[C, K, out]` and installed dendrite activations `[..., K, out]`.

    With a `basis` `[r, in]` the weights are `[C, out, r]` and read `basis @ x`: `act(U_c V x + b_c ...)`.
    """
    c, out = bias.shape
    if basis is not None:
        x = F.linear(x, basis)
    pre = F.linear(x, weight.reshape(c * out, -1), bias.reshape(-1)).unflatten(-1, (c, out))
    if cascade is not None and dendrites is not None:
        pre = pre + torch.einsum("...ko,cko->...co", dendrites.detach(), cascade)
    return ACTIVATIONS[activation](pre)


class RandomWeights(NamedTuple):
    """Fresh input weights: `[C, out, in or r]`, `[C, out]`, cascade `[C, K, out]`, basis `[r, in]` or None."""

    weight: torch.Tensor
    bias: torch.Tensor
    cascade: torch.Tensor
    basis: torch.Tensor | None


@dataclass
class CandidateChoice:
    """Each neuron's chosen candidate and its score, decided outside the layer (`dendrite_phase.py`)."""

    index: torch.Tensor  # [out] which candidate each neuron keeps
    score: torch.Tensor  # [out] its absolute correlation with the neuron error on rows it did not train on


class DendriteLinear(StaticDendriteLinear):
    """Wraps an `nn.Linear` (kept as `base_layer`) and adds per-neuron dendrites to its output.

    With no dendrites and no candidates the forward pass is exactly `base_layer(x)`.
    In "pb" mode dendrites read `x.detach()` (no error flows through them into earlier layers)
    and their input weights are frozen; only the output weights `dendrite_scale` train.
    In "gd" mode dendrites read `x` and every dendrite weight trains by ordinary backprop.
    """

    def __init__(
        self,
        base_layer: nn.Linear,
        *,
        mode: str = "pb",
        activation: str = "sigmoid",
        cascade: bool = False,
        init_scale: float = 1.0,
        candidate_token_fraction: float = 1.0,
        candidate_positions: str = "all",
        rank: int | None = None,
    ) -> None:
        super().__init__(base_layer, mode=mode, activation=activation, cascade=cascade, rank=rank)
        self.init_scale = init_scale
        self.candidate_rows = CandidateRows(candidate_token_fraction, candidate_positions)
        for name in CANDIDATE_PARAMETERS:
            self.register_parameter(name, None)
        self.candidate_stats: CorrelationStats | None = None
        # Set by `install_candidates` (the cached learner): the choice is made, `grow` installs it.
        self.candidate_choice: CandidateChoice | None = None
        # Set by `error_signals.forward_only_capture`: candidate outputs wait here instead of
        # attaching to the backward pass.
        self.pending_candidates: list[PendingCandidates] | None = None

    @property
    def num_candidates(self) -> int:
        return 0 if self.candidate_weight is None else self.candidate_weight.shape[0]

    def extra_repr(self) -> str:
        rank = "" if self.rank is None else f", rank={self.rank}"
        return (
            f"mode={self.mode}, activation={self.activation}, cascade={self.cascade}{rank}, "
            f"num_dendrites={self.num_dendrites}, num_candidates={self.num_candidates}"
        )

    def random_input_weights(
        self, count: int, generator: torch.Generator | None, init_scale: float | None = None
    ) -> RandomWeights:
        """Input weights for `count` new dendrites or candidates per neuron (and, with a rank, the one
        basis they share), scaled so that every pre-activation has the same spread as a full-rank one's.
        `init_scale` (default: the layer's) is the spread in units of 1/sqrt(in_features)."""
        scale = self.init_scale if init_scale is None else init_scale
        std = scale / math.sqrt(self.in_features)
        shape = (count, self.out_features)
        basis = None
        weight_std = std
        if self.rank is not None:
            # V ~ N(0, 1/in) keeps the spread of x in each of V x's r components, and U ~ N(0, s^2/r)
            # then gives U V x the spread of a full W ~ N(0, s^2/in) applied to x.
            basis = torch.randn(self.rank, self.in_features, generator=generator) / math.sqrt(self.in_features)
            weight_std = scale / math.sqrt(self.rank)
        weight = torch.randn(*shape, self.dendrite_inputs, generator=generator) * weight_std
        bias = torch.randn(*shape, generator=generator) * std
        cascade = torch.randn(count, self.num_dendrites, self.out_features, generator=generator) * std
        return RandomWeights(weight, bias, cascade, basis)

    def allocate(self, num_dendrites: int, num_candidates: int = 0) -> None:
        """Create zero-filled parameters for a recorded structure, ready for `load_state_dict`."""
        if num_candidates < 0:
            raise ValueError(f"candidate count must be >= 0, got {num_candidates}")
        self.allocate_dendrites(num_dendrites)
        if num_candidates:
            self.start_candidates(num_candidates)
        else:
            self.stop_candidates()

    # ------------------------------------------------------------------ forward

    def candidate_outputs(self, x: torch.Tensor, dendrites: torch.Tensor | None) -> torch.Tensor:
        """Activations `[..., C, out]` of the candidates, from detached inputs `[..., in]`."""
        cascade = self.candidate_cascade if self.cascade else None
        return candidate_activations(
            x,
            self.candidate_weight,
            self.candidate_bias,
            cascade,
            dendrites,
            activation=self.activation,
            basis=self.candidate_basis,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output = self.base_layer(x)
        streaming = self.candidate_weight is not None and self.candidate_choice is None
        has_candidates = streaming and self.training and torch.is_grad_enabled()
        if self.dendrite_weight is None and not has_candidates:
            return output
        output, dendrites = self.add_dendrites_to(output, x)
        if has_candidates:
            output = self._train_candidates(output, x.detach(), dendrites)
        return output

    def _train_candidates(self, output: torch.Tensor, x: torch.Tensor, dendrites: torch.Tensor | None) -> torch.Tensor:
        """Attach the candidates of the chosen rows to `output` (which stays unchanged).

        A batch whose input is not finite is skipped (zero candidate gradient, no statistics):
        through the candidates' weights, one NaN would make every candidate NaN.
        """
        rows = self.candidate_rows.select(output.shape, output.device)
        x = x.reshape(-1, self.in_features)
        if dendrites is not None:
            dendrites = dendrites.reshape(x.shape[0], *dendrites.shape[-2:])
        if rows is not None:
            x = x.index_select(0, rows)
            dendrites = None if dendrites is None else dendrites.index_select(0, rows)
        skip = not bool(torch.isfinite(x).all())
        if skip:
            x, dendrites = torch.zeros_like(x), None
        values = self.candidate_outputs(x, dendrites)
        if self.pending_candidates is not None:
            self.pending_candidates.append(PendingCandidates(values, rows, tuple(output.shape[:-1]), skip))
            return output
        return capture_error(output, values, self.candidate_stats, rows=rows, observer=self.candidate_rows, skip=skip)

    # ------------------------------------------------------------------ candidates and growth

    def start_candidates(
        self,
        num_candidates: int,
        generator: torch.Generator | None = None,
        *,
        init_scale: float | None = None,
        rows: CandidateRows | None = None,
    ) -> None:
        """Create `num_candidates` fresh candidates per neuron and empty correlation statistics.

        `init_scale` and `rows` (which output rows they train on) are the run's settings
        (`DendriteTrainingArguments`); left out, the layer's own are kept."""
        if num_candidates < 1:
            raise ValueError(f"num_candidates must be >= 1, got {num_candidates}")
        if rows is not None:
            self.candidate_rows = rows
        self.candidate_rows.first_position_only = False
        weight, bias, cascade, basis = self.random_input_weights(num_candidates, generator, init_scale)
        self.candidate_basis = None if basis is None else self._new_parameter(basis, True)
        self.candidate_weight = self._new_parameter(weight, True)
        self.candidate_bias = self._new_parameter(bias, True)
        self.candidate_cascade = self._new_parameter(cascade, True) if self.cascade else None
        device = self.base_layer.weight.device
        self.candidate_stats = CorrelationStats(num_candidates, self.out_features, device=device)

    def install_candidates(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor,
        cascade: torch.Tensor | None,
        choice: CandidateChoice,
        basis: torch.Tensor | None = None,
    ) -> None:
        """Hold candidates trained elsewhere (`dendrite_phase.py`) and each neuron's choice among them, for `grow`."""
        wrong_basis = (basis is None) != (self.rank is None) or (
            basis is not None and tuple(basis.shape) != (self.rank, self.in_features)
        )
        if (
            weight.shape[1:] != (self.out_features, self.dendrite_inputs)
            or bias.shape != weight.shape[:2]
            or wrong_basis
        ):
            raise ValueError(
                f"candidates of shape {tuple(weight.shape)} / {tuple(bias.shape)} "
                f"(basis {None if basis is None else tuple(basis.shape)}) do not fit a layer "
                f"{self.in_features} -> {self.out_features} of rank {self.rank}"
            )
        self.stop_candidates()
        self.candidate_basis = None if basis is None else self._new_parameter(basis.detach(), False)
        self.candidate_weight = self._new_parameter(weight.detach(), False)
        self.candidate_bias = self._new_parameter(bias.detach(), False)
        self.candidate_cascade = self._new_parameter(cascade.detach(), False) if self.cascade else None
        self.candidate_choice = choice

    def stop_candidates(self) -> None:
        for name in CANDIDATE_PARAMETERS:
            setattr(self, name, None)
        self.candidate_stats = None
        self.candidate_choice = None
        self.candidate_rows.set_token_positions(None)

    def candidate_score(self) -> float:
        """Mean over neurons of the best candidate's absolute correlation (0.0 without data)."""
        if self.candidate_choice is not None:
            return float(self.candidate_choice.score.mean())
        if self.candidate_stats is None or float(self.candidate_stats.count) == 0:
            return 0.0
        return self.candidate_stats.score()

    def has_trained_candidates(self) -> bool:
        if self.candidate_choice is not None:
            return True
        return self.candidate_stats is not None and float(self.candidate_stats.count) > 0

    def has_finite_candidate_scores(self) -> bool:
        if self.candidate_choice is not None:
            return bool(torch.isfinite(self.candidate_choice.score).all())
        return self.candidate_stats is None or bool(torch.isfinite(self.candidate_stats.correlation()).all())

    @property
    def skipped_candidate_batches(self) -> int:
        """Batches of the current scoring window the candidates skipped (non-finite error or outputs)."""
        return 0 if self.candidate_stats is None else self.candidate_stats.skipped_batches

    @torch.no_grad()
    def grow(self, generator: torch.Generator | None = None, init_scale: float | None = None) -> None:
        """Add one dendrite per neuron with output weight zero, so the layer's output is unchanged.

        PB mode installs each neuron's best candidate (highest absolute correlation; with a rank, the
        candidates' shared basis comes along); GD mode draws small random input weights (spread
        `init_scale`, default the layer's).
        """
        out = self.out_features
        if self.mode == "pb":
            if not self.has_trained_candidates():
                raise RuntimeError("grow() in 'pb' mode needs trained candidates: run a dendrite phase first")
            if self.candidate_choice is not None:
                best, scores = self.candidate_choice.index, self.candidate_choice.score
            else:
                best, scores = self.candidate_stats.best_per_neuron()
            if not bool(torch.isfinite(scores).all()):
                raise RuntimeError("grow() refused: the candidates' correlation scores are not finite")
            neurons = torch.arange(out, device=best.device)
            new_weight = self.candidate_weight[best, neurons]
            new_bias = self.candidate_bias[best, neurons]
            new_cascade = self.candidate_cascade[best, :, neurons].T if self.cascade else None
            new_basis = self.candidate_basis
        else:
            weight, bias, cascade, new_basis = self.random_input_weights(1, generator, init_scale)
            new_weight, new_bias, new_cascade = weight[0], bias[0], cascade[0] if self.cascade else None

        k = self.num_dendrites
        trainable = self.mode == "gd"
        reference = self.base_layer.weight

        def appended(old: nn.Parameter | None, new: torch.Tensor) -> torch.Tensor:
            new = new.to(device=reference.device, dtype=reference.dtype).unsqueeze(0)
            return new if old is None else torch.cat([old.detach(), new], dim=0)

        if self.rank is not None:
            self.dendrite_basis = self._new_parameter(appended(self.dendrite_basis, new_basis), trainable)
        self.dendrite_weight = self._new_parameter(appended(self.dendrite_weight, new_weight), trainable)
        self.dendrite_bias = self._new_parameter(appended(self.dendrite_bias, new_bias), trainable)
        self.dendrite_scale = self._new_parameter(appended(self.dendrite_scale, torch.zeros(out)), True)
        if self.cascade:
            cascade = torch.zeros(k + 1, k + 1, out, dtype=reference.dtype, device=reference.device)
            if k:
                cascade[:k, :k] = self.dendrite_cascade.detach()
                cascade[k, :k] = new_cascade.to(cascade)
            self.dendrite_cascade = self._new_parameter(cascade, trainable)
        self.stop_candidates()
