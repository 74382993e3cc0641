"""`DendriteConfig`: every knob of dendrite growth in one validated, serialisable dataclass.

The same object drives three parts: which layers get dendrites (`add_dendrites`), how a dendrite
is built and trained (`DendriteLinear`, candidate training) and when the trainer grows
(`DendriteTracker`). It is saved inside an augmented model's `config.json`, so a model always
carries the settings it was grown with.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any

MODES = ("pb", "gd")
ACTIVATIONS = ("sigmoid", "tanh", "relu", "gelu")
GROWTH_SOURCES = ("best", "last")
# Where a dendrite phase gets the neuron error from (see error_signals.py).
ERROR_SIGNALS = ("backprop", "linear_backprop", "feedback_alignment", "forward_forward")
# Which positions of a token-level layer's output candidates train on (see layer.CandidateRows).
CANDIDATE_POSITIONS = ("all", "first")
# How a dendrite phase trains its candidates (see dendrite_phase.py and layer.py).
CANDIDATE_LEARNERS = ("cached", "streaming")
# Installed dendrites are new weights whose output weight starts at zero: at a fine-tuning rate
# (~5e-5) it stays near zero and the dendrite does nothing. The growth study (benchmarks/README.md) measured mean
# |output weight| 1.7e-4 at 5e-5 in both modes, 2.8e-2 for PB at 1e-2 (only output weights train)
# and 3.2e-3 for GD at 1e-3 (its random input weights train too, so it gets the gentler rate).
PB_DENDRITE_LEARNING_RATE = 1e-2
GD_DENDRITE_LEARNING_RATE = 1e-3


@dataclass
class DendriteConfig:
    """Settings for adding, training and growing dendrites.

    Defaults are meant for fine-tuning a pretrained BERT-family classifier; see docs/guide.md,
    "Defaults, and how they were chosen".
    """

    target_modules: list[str] | str | None = field(
        default=None,
        metadata={
            "help": "Linear layers that get dendrites: a list of module-name suffixes (a name matches "
            "when it equals the suffix or ends with '.' + suffix), or one regular expression that must "
            "match the whole module name. None picks the default set of the model family "
            "(attention projections, feed-forward, pooler / pre-classifier and classifier)."
        },
    )
    exclude_modules: list[str] | str | None = field(
        default=None,
        metadata={"help": "Module names to leave alone, matched like `target_modules`."},
    )
    mode: str = field(
        default="pb",
        metadata={
            "help": "'pb': perforated backpropagation (candidates trained on the neuron error in a "
            "dendrite phase, dendrite inputs detached and frozen afterwards). 'gd': dendrites start "
            "from small random weights and train jointly with everything by ordinary backprop."
        },
    )
    activation: str = field(
        default="sigmoid",
        metadata={"help": f"Non-linearity of a dendrite, one of {', '.join(ACTIVATIONS)}."},
    )
    cascade: bool = field(
        default=False,
        metadata={"help": "Let each new dendrite of a neuron also see the outputs of its earlier dendrites."},
    )
    dendrite_rank: int | None = field(
        default=None,
        metadata={
            "help": "Low-rank dendrites: each dendrite set reads the layer's input through one shared basis of "
            "this many directions, so it costs rank * (in + out) + 2 * out parameters instead of in * out + 2 * out. "
            "None: full per-neuron input weights."
        },
    )
    num_candidates: int = field(
        default=4,
        metadata={"help": "Candidate dendrites trained per neuron in a dendrite phase; the best one is kept."},
    )
    candidate_init_scale: float = field(
        default=1.0,
        metadata={
            "help": "Standard deviation of new candidate (and GD dendrite) input weights, in units of "
            "1/sqrt(in_features), so pre-activations start near unit scale."
        },
    )
    candidate_learner: str = field(
        default="cached",
        metadata={
            "help": "'cached': one frozen pass over the training set caches each target layer's input and error "
            "rows, candidates train for `candidate_epochs` on the cache with whole-cache statistics, and each "
            "neuron keeps the candidate that correlates best on cached examples held out of that training "
            "(cascade-correlation; the phase happens at one evaluation and takes no training steps). 'streaming': "
            "candidates train inside ordinary training steps on per-batch statistics until their score stalls "
            "(`candidate_patience`, `max_candidate_epochs`); kept as a comparison point, it learns little when "
            "correlations are below 1/sqrt(rows per batch)."
        },
    )
    candidate_learning_rate: float = field(
        default=0.1,
        metadata={"help": "Adam learning rate of candidate dendrites in a dendrite phase."},
    )
    candidate_epochs: int = field(
        default=50,
        metadata={"help": "'cached' learner: epochs over the cache (0: keep the best of the untrained candidates)."},
    )
    candidate_batch_size: int = field(
        default=8192,
        metadata={
            "help": "'cached' learner: cached rows per candidate step (the default, as large as the cache, makes each "
            "epoch one exact full-batch step). The statistics are those of the whole cache, refreshed each epoch; a "
            "smaller batch samples the gradient's sum between refreshes (measured worse on the control)."
        },
    )
    candidate_cache_rows: int = field(
        default=8192,
        metadata={
            "help": "'cached' learner: most rows (token positions or examples) cached per layer, a uniform sample "
            "when there are more; the candidate work grows with it."
        },
    )
    candidate_cache_gib: float = field(
        default=2.0,
        metadata={"help": "'cached' learner: memory budget of the cache over all layers (lowers the rows per layer)."},
    )
    candidate_score_fraction: float = field(
        default=0.2,
        metadata={
            "help": "'cached' learner: share of the cached examples kept out of candidate training; each neuron's "
            "candidate is chosen, and the phase scored, on them."
        },
    )
    candidate_shuffled_errors: bool = field(
        default=False,
        metadata={
            "help": "A control, not for use: the 'cached' learner fits candidates to error rows permuted across the "
            "cache (still chosen and scored on the true errors), so whatever they gain does not come from the error."
        },
    )
    dendrite_learning_rate: float | None = field(
        default=None,
        metadata={
            "help": "Learning rate of the installed dendrites in neuron phases (their output weights, and "
            "in 'gd' mode all their weights), following the trainer's schedule. None: "
            f"{PB_DENDRITE_LEARNING_RATE:g} in 'pb' mode, {GD_DENDRITE_LEARNING_RATE:g} in 'gd' mode; output "
            "weights start at zero, and at a fine-tuning rate of ~5e-5 they stay near zero and the "
            "dendrite does nothing."
        },
    )
    candidate_token_fraction: float = field(
        default=1.0,
        metadata={
            "help": "Fraction of a batch's positions (tokens) each candidate trains on per step, drawn "
            "afresh every step: the dendrite phase costs about that fraction of the candidate work. "
            "Positions that get no error (all but [CLS] after the encoder's last attention) are skipped "
            "in any case."
        },
    )
    candidate_positions: str = field(
        default="all",
        metadata={
            "help": "Positions of a token-level layer's output the candidates train on: 'all' (every real token "
            "that gets an error) or 'first' (the first position, [CLS], the one a BERT classifier head reads). "
            "With a forward-only error_signal the per-example signal otherwise reaches every token, so 'first' "
            "cuts the candidate work by about the sentence length."
        },
    )
    candidate_patience: int = field(
        default=2,
        metadata={
            "help": "'streaming' learner: evaluations without a better mean candidate correlation before a dendrite "
            "phase ends."
        },
    )
    max_candidate_epochs: float = field(
        default=1.0,
        metadata={"help": "'streaming' learner: longest dendrite phase, in epochs of the training set."},
    )
    patience: int = field(
        default=3,
        metadata={
            "help": "Evaluations without a better metric before the neuron phase counts as stalled and a dendrite "
            "phase starts (or training completes). The plain fine-tune of scripts/train.py (--dendrites none) stops "
            "early after as many, and the reference-library runner switches after as many epochs."
        },
    )
    first_growth_epoch: float | None = field(
        default=None,
        metadata={
            "help": "Start the first dendrite phase ('gd': grow the first dendrite) at the first evaluation at or "
            "after this epoch, without waiting for the validation metric to stall: growth while the training "
            "errors are still systematic rather than memorised. Later growths follow the stall rule. None: the "
            "first growth too waits for a stall."
        },
    )
    min_evals_per_phase: int = field(
        default=2,
        metadata={"help": "Evaluations a neuron phase lasts at least before it may end."},
    )
    improvement_threshold: float = field(
        default=1e-3,
        metadata={"help": "Relative gain a metric must exceed to count as an improvement."},
    )
    improvement_threshold_abs: float = field(
        default=1e-4,
        metadata={"help": "Absolute gain a metric must exceed to count as an improvement."},
    )
    max_dendrites: int = field(
        default=3,
        metadata={"help": "Most dendrites per neuron; training completes when this many were grown."},
    )
    max_tries: int = field(
        default=1,
        metadata={
            "help": "Fresh candidate sets tried again when the last dendrite never beat the best score "
            "of the architecture before it (after restoring that best model)."
        },
    )
    grow_from: str = field(
        default="best",
        metadata={
            "help": "Weights a dendrite phase starts from: 'best' restores the best snapshot first, "
            "'last' keeps the current weights."
        },
    )
    reset_optimizer_on_growth: bool = field(
        default=True,
        metadata={
            "help": "Start the neuron phase's optimizer afresh (new Adam moments and step counts) after every "
            "change of structure: a growth, a revert, the end of a dendrite phase (the reference library does "
            "the same at each restructure). False carries the Adam state of every weight that keeps its name and "
            "shape over to the next neuron phase (kept aside through a dendrite phase and saved in its "
            "checkpoints); new dendrite weights start fresh."
        },
    )
    error_signal: str = field(
        default="backprop",
        metadata={
            "help": "Where candidates get their neuron's error E from in a dendrite phase: 'backprop' (exact, a "
            "backward pass through the frozen network); 'linear_backprop' (the same with every activation function "
            "treated as linear); 'feedback_alignment' (the output error through a fixed random matrix per layer, no "
            "backward pass); 'forward_forward' (no error: candidates learn to tell the examples the model gets wrong "
            "from those it gets right). The last two need DendriteTrainer and one process."
        },
    )
    candidate_holdout_fraction: float = field(
        default=0.0,
        metadata={
            "help": "Share of the training set held aside for the candidates (DendriteTrainer): neuron phases "
            "never train on it and dendrite phases train only on it, so candidates learn from errors the model "
            "did not memorise. A fixed split drawn from the training seed; 0 trains both phases on everything."
        },
    )

    def resolved_dendrite_learning_rate(self) -> float:
        """The rate installed dendrites train at: the one set, else the mode's default."""
        if self.dendrite_learning_rate is not None:
            return self.dendrite_learning_rate
        return PB_DENDRITE_LEARNING_RATE if self.mode == "pb" else GD_DENDRITE_LEARNING_RATE

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, tuple):
            self.target_modules = list(self.target_modules)
        if isinstance(self.exclude_modules, tuple):
            self.exclude_modules = list(self.exclude_modules)
        self.validate()

    def validate(self) -> None:
        """Raise `ValueError` naming the first field that holds an impossible value."""
        for name in ("target_modules", "exclude_modules"):
            value = getattr(self, name)
            if value is None or isinstance(value, str):
                if isinstance(value, str) and not value:
                    raise ValueError(f"DendriteConfig.{name} is an empty string; give a regex or a list of names")
                continue
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise ValueError(
                    f"DendriteConfig.{name} must be None, a regex string or a list of non-empty module-name "
                    f"strings, got {value!r}"
                )
            if name == "target_modules" and not value:
                raise ValueError("DendriteConfig.target_modules is an empty list: nothing would get dendrites")
        _check_choice("mode", self.mode, MODES)
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("grow_from", self.grow_from, GROWTH_SOURCES)
        _check_choice("error_signal", self.error_signal, ERROR_SIGNALS)
        _check_choice("candidate_positions", self.candidate_positions, CANDIDATE_POSITIONS)
        if not isinstance(self.reset_optimizer_on_growth, bool):
            raise ValueError(
                f"DendriteConfig.reset_optimizer_on_growth must be a bool, got {self.reset_optimizer_on_growth!r}"
            )
        _check_choice("candidate_learner", self.candidate_learner, CANDIDATE_LEARNERS)
        if not isinstance(self.candidate_shuffled_errors, bool):
            raise ValueError(
                f"DendriteConfig.candidate_shuffled_errors must be a bool, got {self.candidate_shuffled_errors!r}"
            )
        _check_int("candidate_epochs", self.candidate_epochs, minimum=0)
        _check_int("candidate_batch_size", self.candidate_batch_size, minimum=2)
        _check_int("candidate_cache_rows", self.candidate_cache_rows, minimum=2)
        _check_float("candidate_cache_gib", self.candidate_cache_gib, positive=True)
        _check_float("candidate_score_fraction", self.candidate_score_fraction, positive=True)
        if not self.candidate_score_fraction < 1:
            raise ValueError(
                f"DendriteConfig.candidate_score_fraction must be in (0, 1), got {self.candidate_score_fraction!r}"
            )
        if not isinstance(self.cascade, bool):
            raise ValueError(f"DendriteConfig.cascade must be a bool, got {self.cascade!r}")
        _check_int("num_candidates", self.num_candidates, minimum=1)
        if self.dendrite_rank is not None:
            _check_int("dendrite_rank", self.dendrite_rank, minimum=1)
        _check_int("candidate_patience", self.candidate_patience, minimum=1)
        _check_int("patience", self.patience, minimum=1)
        _check_int("min_evals_per_phase", self.min_evals_per_phase, minimum=1)
        _check_int("max_dendrites", self.max_dendrites, minimum=0)
        _check_int("max_tries", self.max_tries, minimum=0)
        _check_float("candidate_init_scale", self.candidate_init_scale, positive=True)
        _check_float("candidate_learning_rate", self.candidate_learning_rate, positive=True)
        if self.dendrite_learning_rate is not None:
            _check_float("dendrite_learning_rate", self.dendrite_learning_rate, positive=True)
        _check_float("max_candidate_epochs", self.max_candidate_epochs, positive=True)
        if self.first_growth_epoch is not None:
            _check_float("first_growth_epoch", self.first_growth_epoch, positive=False)
        _check_float("candidate_token_fraction", self.candidate_token_fraction, positive=True)
        if self.candidate_token_fraction > 1:
            raise ValueError(
                f"DendriteConfig.candidate_token_fraction must be in (0, 1], got {self.candidate_token_fraction!r}"
            )
        _check_float("candidate_holdout_fraction", self.candidate_holdout_fraction, positive=False)
        if not self.candidate_holdout_fraction < 1:
            raise ValueError(
                f"DendriteConfig.candidate_holdout_fraction must be in [0, 1), got {self.candidate_holdout_fraction!r}"
            )
        _check_float("improvement_threshold", self.improvement_threshold, positive=False)
        _check_float("improvement_threshold_abs", self.improvement_threshold_abs, positive=False)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DendriteConfig:
        """Build from a dict; unknown keys are an error, so a typo never passes silently."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"Unknown DendriteConfig field(s) {unknown}; known fields are {sorted(known)}")
        return cls(**values)

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def to_json_file(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(self.to_json_string())

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> DendriteConfig:
        with open(path, encoding="utf-8") as handle:
            try:
                values = json.load(handle)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path} is not valid JSON: {error}") from error
        if not isinstance(values, dict):
            raise ValueError(f"{path} must hold a JSON object of DendriteConfig fields")
        return cls.from_dict(values)


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"DendriteConfig.{name} must be one of {list(choices)}, got {value!r}")


def _check_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"DendriteConfig.{name} must be an integer >= {minimum}, got {value!r}")


def _check_float(name: str, value: Any, *, positive: bool) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > 0 if positive else value >= 0)
    if not ok:
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"DendriteConfig.{name} must be a finite number {bound}, got {value!r}")
