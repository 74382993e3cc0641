"""`DendriteConfig`: what a dendrite model is, validated and saved with it.

Like PEFT's `LoraConfig`, it says which layers get dendrites and what the dendrites compute
(mode, activation, cascade, rank): `add_dendrites` builds from it and a saved model's `config.json`
carries it. How the trainer grows dendrites and trains their candidates lives as long as a run and
is `DendriteTrainingArguments` (training_args.py), never stored with the model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

from .checks import check_bool, check_choice, check_int
from .training_args import TRAINING_FIELDS, DendriteTrainingArguments

MODES = ("pb", "gd")
ACTIVATIONS = ("sigmoid", "tanh", "relu", "gelu")
_OWNER = "DendriteConfig"


@dataclass(init=False)
class DendriteConfig:
    """Which layers get dendrites, and what a dendrite computes.

    Growth and candidate training are `DendriteTrainingArguments`; see docs/guide.md for the defaults.
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

    def __init__(
        self,
        target_modules: list[str] | str | None = None,
        exclude_modules: list[str] | str | None = None,
        mode: str = "pb",
        activation: str = "sigmoid",
        cascade: bool = False,
        dendrite_rank: int | None = None,
        **training_fields: Any,
    ) -> None:
        """The fields above; `training_fields` are the deprecated spelling of `DendriteTrainingArguments`.

        They were fields of this class before the settings were split by lifetime. They are checked,
        kept in `deprecated_training_arguments` (not saved with the model) and handed to a
        `DendriteTrainer` or `DendriteCallback` of the model that is given no `dendrite_args`.
        """
        self.target_modules = list(target_modules) if isinstance(target_modules, tuple) else target_modules
        self.exclude_modules = list(exclude_modules) if isinstance(exclude_modules, tuple) else exclude_modules
        self.mode = mode
        self.activation = activation
        self.cascade = cascade
        self.dendrite_rank = dendrite_rank
        self.validate()
        self.deprecated_training_arguments = _deprecated_training_arguments(training_fields)

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
        check_choice(_OWNER, "mode", self.mode, MODES)
        check_choice(_OWNER, "activation", self.activation, ACTIVATIONS)
        check_bool(_OWNER, "cascade", self.cascade)
        if self.dendrite_rank is not None:
            check_int(_OWNER, "dendrite_rank", self.dendrite_rank, minimum=1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def legacy_training_arguments(self) -> DendriteTrainingArguments:
        """The training settings given to this config the deprecated way, over the defaults."""
        return DendriteTrainingArguments(**self.deprecated_training_arguments)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> DendriteConfig:
        """Build from a dict; unknown keys are an error, so a typo never passes silently.

        Training fields are accepted with the deprecation warning of the constructor."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known - set(TRAINING_FIELDS))
        if unknown:
            raise ValueError(f"Unknown DendriteConfig field(s) {unknown}; known fields are {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_saved(cls, values: dict[str, Any]) -> DendriteConfig:
        """The config of a saved model's record (or of a `results.json` recipe). Those written before the split
        by lifetime also hold the training settings they were grown with; those say nothing about what the
        model computes and are dropped without a warning."""
        return cls.from_dict({name: value for name, value in values.items() if name not in TRAINING_FIELDS})

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


def _deprecated_training_arguments(values: dict[str, Any]) -> dict[str, Any]:
    """Check the training fields given to `DendriteConfig` the old way, and warn with the new spelling."""
    if not values:
        return {}
    unknown = sorted(set(values) - set(TRAINING_FIELDS))
    if unknown:
        raise TypeError(f"DendriteConfig got unexpected keyword argument(s) {unknown}")
    DendriteTrainingArguments(**values)  # ValueError naming a bad value
    spelled = ", ".join(f"{name}={value!r}" for name, value in values.items())
    warnings.warn(
        f"DendriteConfig({spelled}): these are training settings, which moved to DendriteTrainingArguments; "
        f"pass DendriteTrainer(..., dendrite_args=DendriteTrainingArguments({spelled})). Given to DendriteConfig they "
        "still apply to a DendriteTrainer or DendriteCallback of this model, until version 1.0.",
        FutureWarning,
        stacklevel=3,
    )
    return dict(values)
