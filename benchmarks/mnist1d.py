"""MNIST-1D as a capacity-limited classifier on abundant data, driven like any transformers model.

MNIST-1D (Greydanus & Steinbach; PyPI `mnist1d`) draws 40-sample 1-D signals of the ten digits
from templates, shifted, scaled, sheared and noised; its `make_dataset` builds any number of them
offline from a seed. With 4,000 training signals an MLP reaches 68% and a CNN 94%; with tens of
thousands an MLP no longer overfits, so a narrow one is short of capacity, not of data: the regime
where a dendrite has something to add.

`MLPForClassification` is a small `PreTrainedModel` (inputs -> hidden Linear+ReLU layers -> a
classifier), so `Trainer` and `DendriteTrainer` train it as they train a BERT: `inputs` and
`labels` columns, a `SequenceClassifierOutput` with the loss.
"""

from __future__ import annotations

import datasets
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

SIGNAL_LENGTH = 40
CLASSES = 10


def make_splits(train: int = 50_000, validation: int = 5_000, test: int = 5_000, seed: int = 0) -> datasets.DatasetDict:
    """Train, validation and test signals of one generated MNIST-1D set (`inputs`, `labels`).

    The generator seeds numpy's global random state; it is saved and restored around the call, so
    generating data never changes what else the process draws.
    """
    for name, value in (("train", train), ("validation", validation), ("test", test)):
        if value < 1:
            raise ValueError(f"make_splits needs at least one {name} signal, got {value}")
    from mnist1d.data import get_dataset_args, make_dataset  # optional: only the studies need it

    arguments = get_dataset_args()
    total = train + validation + test
    # make_dataset draws total // 10 signals per digit: round up to whole digits, then cut
    arguments.num_samples = -(-total // CLASSES) * CLASSES
    arguments.train_split = 1.0
    arguments.seed = seed
    saved = np.random.get_state()
    try:
        generated = make_dataset(arguments)
    finally:
        np.random.set_state(saved)
    inputs = np.asarray(generated["x"], dtype=np.float32)[:total]
    labels = np.asarray(generated["y"], dtype=np.int64)[:total]
    bounds = {"train": (0, train), "validation": (train, train + validation), "test": (train + validation, total)}
    return datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(
                {"inputs": inputs[start:end].tolist(), "labels": labels[start:end].tolist()}
            ).with_format("torch")
            for split, (start, end) in bounds.items()
        }
    )


class MLPConfig(PretrainedConfig):
    """A plain MLP classifier: `input_size` -> `hidden_sizes` (ReLU) -> `num_labels`."""

    model_type = "mnist1d_mlp"

    def __init__(
        self,
        input_size: int = SIGNAL_LENGTH,
        hidden_sizes: list[int] | None = None,
        num_labels: int = CLASSES,
        **kwargs,
    ) -> None:
        self.input_size = input_size
        self.hidden_sizes = list(hidden_sizes) if hidden_sizes is not None else [32, 32]
        if input_size < 1 or any(size < 1 for size in self.hidden_sizes):
            raise ValueError(f"MLPConfig needs positive sizes, got input {input_size}, hidden {self.hidden_sizes}")
        super().__init__(num_labels=num_labels, **kwargs)


class MLPForClassification(PreTrainedModel):
    config_class = MLPConfig
    base_model_prefix = "mlp"
    main_input_name = "inputs"

    def __init__(self, config: MLPConfig) -> None:
        super().__init__(config)
        sizes = [config.input_size, *config.hidden_sizes]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.classifier = nn.Linear(sizes[-1], config.num_labels)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):  # PyTorch's own default, drawn again under the seed
            module.reset_parameters()

    def forward(self, inputs: torch.Tensor, labels: torch.Tensor | None = None, **kwargs) -> SequenceClassifierOutput:
        hidden = inputs
        for layer in self.layers:
            hidden = F.relu(layer(hidden))
        logits = self.classifier(hidden)
        loss = None if labels is None else F.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


def mlp(hidden_sizes: list[int], seed: int) -> MLPForClassification:
    """A freshly initialised MLP for MNIST-1D, its weights drawn from `seed`."""
    torch.manual_seed(seed)
    return MLPForClassification(MLPConfig(hidden_sizes=hidden_sizes))


def parameter_count(hidden_sizes: list[int]) -> int:
    sizes = [SIGNAL_LENGTH, *hidden_sizes, CLASSES]
    return sum(a * b + b for a, b in zip(sizes, sizes[1:]))
