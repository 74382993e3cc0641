"""`DendriteTrainingArguments`: how the trainer grows dendrites and trains their candidates.

These settings live as long as a training run, like `transformers.TrainingArguments`: the
trainer and its callback receive them, and a saved model never stores them (what a saved model
computes with is `DendriteConfig`'s). They cover the growth policy (when a neuron phase has
stalled, how many dendrites, what happens after a growth) and the candidate learner (how the
candidates of a dendrite phase are cached, trained and chosen).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .checks import check_bool, check_choice, check_float, check_fraction, check_int

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

_OWNER = "DendriteTrainingArguments"


@dataclass
class DendriteTrainingArguments:
    """Growth policy and candidate training, given to `DendriteTrainer(dendrite_args=...)`.

    Defaults are meant for fine-tuning a pretrained BERT-family classifier; see docs/guide.md,
    "Defaults, and how they were chosen".
    """

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
            "when there are more; the candidate work grows with it, and the cache pass reads examples (in random order) "
            "only until every layer's cache is full."
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
            "phase starts (or training completes)."
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

    def __post_init__(self) -> None:
        self.validate()

    def resolved_dendrite_learning_rate(self, mode: str) -> float:
        """The rate installed dendrites train at: the one set, else the default of `mode` ('pb' or 'gd')."""
        if self.dendrite_learning_rate is not None:
            return self.dendrite_learning_rate
        return PB_DENDRITE_LEARNING_RATE if mode == "pb" else GD_DENDRITE_LEARNING_RATE

    def validate(self) -> None:
        """Raise `ValueError` naming the first field that holds an impossible value."""
        check_choice(_OWNER, "grow_from", self.grow_from, GROWTH_SOURCES)
        check_choice(_OWNER, "error_signal", self.error_signal, ERROR_SIGNALS)
        check_choice(_OWNER, "candidate_positions", self.candidate_positions, CANDIDATE_POSITIONS)
        check_choice(_OWNER, "candidate_learner", self.candidate_learner, CANDIDATE_LEARNERS)
        check_bool(_OWNER, "reset_optimizer_on_growth", self.reset_optimizer_on_growth)
        check_bool(_OWNER, "candidate_shuffled_errors", self.candidate_shuffled_errors)
        for name, minimum in (
            ("num_candidates", 1),
            ("candidate_epochs", 0),
            ("candidate_batch_size", 2),
            ("candidate_cache_rows", 2),
            ("candidate_patience", 1),
            ("patience", 1),
            ("min_evals_per_phase", 1),
            ("max_dendrites", 0),
            ("max_tries", 0),
        ):
            check_int(_OWNER, name, getattr(self, name), minimum=minimum)
        for name in ("candidate_cache_gib", "candidate_init_scale", "candidate_learning_rate", "max_candidate_epochs"):
            check_float(_OWNER, name, getattr(self, name), positive=True)
        for name in ("improvement_threshold", "improvement_threshold_abs"):
            check_float(_OWNER, name, getattr(self, name), positive=False)
        if self.dendrite_learning_rate is not None:
            check_float(_OWNER, "dendrite_learning_rate", self.dendrite_learning_rate, positive=True)
        if self.first_growth_epoch is not None:
            check_float(_OWNER, "first_growth_epoch", self.first_growth_epoch, positive=False)
        check_fraction(
            _OWNER, "candidate_score_fraction", self.candidate_score_fraction, closed_low=False, closed_high=False
        )
        check_fraction(
            _OWNER, "candidate_token_fraction", self.candidate_token_fraction, closed_low=False, closed_high=True
        )
        check_fraction(
            _OWNER, "candidate_holdout_fraction", self.candidate_holdout_fraction, closed_low=True, closed_high=False
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DendriteTrainingArguments:
        """Build from a dict; unknown keys are an error, so a typo never passes silently."""
        unknown = sorted(set(values) - set(TRAINING_FIELDS))
        if unknown:
            raise ValueError(f"Unknown {_OWNER} field(s) {unknown}; known fields are {sorted(TRAINING_FIELDS)}")
        return cls(**values)


TRAINING_FIELDS = tuple(f.name for f in dataclasses.fields(DendriteTrainingArguments))
