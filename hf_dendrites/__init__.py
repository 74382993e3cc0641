"""Perforated Backpropagation (artificial dendrites) for Hugging Face transformers."""

from .augment import add_dendrites, from_pretrained, remove_dendrites
from .callbacks import DendriteCallback
from .compression import narrow_config, narrow_model, summing_network
from .config import DendriteConfig
from .dendrite_phase import DendritePhaseReport, run_dendrite_phase
from .distillation import (
    DistillationConfig,
    DistillationMixin,
    DistillationTrainer,
    TeacherAgreementCallback,
    distillation_loss,
)
from .layer import DendriteLinear
from .model import (
    candidate_parameters,
    candidate_scores,
    dendrite_layers,
    disable_dendrites,
    grow,
    mean_candidate_score,
    num_dendrites,
    parameter_report,
    reset_candidate_statistics,
    start_candidates,
    stop_candidates,
)
from .modeling_summing import SummingNetworkConfig, SummingNetworkForSequenceClassification
from .restarts import RestartFromBestCallback, RestartOnPlateauCallback
from .targets import DEFAULT_TARGET_MODULES
from .teacher import add_teacher_logits, load_teacher, teacher_logits
from .tracker import Action, Decision, DendriteTracker, Phase
from .trainer import DendriteTrainer
from .version import __version__

__all__ = [
    "DEFAULT_TARGET_MODULES",
    "Action",
    "Decision",
    "DendriteCallback",
    "DendriteConfig",
    "DendriteLinear",
    "DendritePhaseReport",
    "DendriteTracker",
    "DendriteTrainer",
    "DistillationConfig",
    "DistillationMixin",
    "DistillationTrainer",
    "Phase",
    "RestartFromBestCallback",
    "RestartOnPlateauCallback",
    "TeacherAgreementCallback",
    "SummingNetworkConfig",
    "SummingNetworkForSequenceClassification",
    "__version__",
    "add_dendrites",
    "add_teacher_logits",
    "candidate_parameters",
    "candidate_scores",
    "dendrite_layers",
    "disable_dendrites",
    "distillation_loss",
    "from_pretrained",
    "grow",
    "load_teacher",
    "mean_candidate_score",
    "narrow_config",
    "narrow_model",
    "num_dendrites",
    "parameter_report",
    "remove_dendrites",
    "reset_candidate_statistics",
    "run_dendrite_phase",
    "start_candidates",
    "stop_candidates",
    "summing_network",
    "teacher_logits",
]
