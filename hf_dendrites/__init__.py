"""Perforated Backpropagation (artificial dendrites) for Hugging Face transformers.

The names of `__all__` are the user's API; everything else is importable from its module
(`hf_dendrites.model`, `hf_dendrites.tracker`, `hf_dendrites.hub`, ...). The tracker's `Action` and
`Phase` (what callbacks compare decisions with, what results.json records), the summing
network's `SummingNetworkConfig` and the restart controls of the studies
(`RestartFromBestCallback`, `RestartOnPlateauCallback`) are reachable here too.
"""

from .augment import add_dendrites, from_pretrained, remove_dendrites
from .callbacks import DendriteCallback
from .compression import narrow_model, summing_network
from .config import DendriteConfig
from .dendrite_phase import run_dendrite_phase
from .distillation import DistillationConfig, DistillationTrainer
from .model import dendrite_layers, disable_dendrites, grow, num_dendrites, parameter_report
from .modeling_summing import SummingNetworkConfig as SummingNetworkConfig
from .restarts import RestartFromBestCallback as RestartFromBestCallback
from .restarts import RestartOnPlateauCallback as RestartOnPlateauCallback
from .tracker import Action as Action
from .tracker import Phase as Phase
from .trainer import DendriteTrainer, DistilledDendriteTrainer
from .training_args import DendriteTrainingArguments
from .version import __version__

__all__ = [
    "DendriteCallback",
    "DendriteConfig",
    "DendriteTrainer",
    "DendriteTrainingArguments",
    "DistillationConfig",
    "DistillationTrainer",
    "DistilledDendriteTrainer",
    "__version__",
    "add_dendrites",
    "dendrite_layers",
    "disable_dendrites",
    "from_pretrained",
    "grow",
    "narrow_model",
    "num_dendrites",
    "parameter_report",
    "remove_dendrites",
    "run_dendrite_phase",
    "summing_network",
]
