#!/usr/bin/env python
"""Fine-tune a BERT-family classifier with dendrites, from a YAML recipe and/or flags.

    python scripts/train.py configs/movie_reviews.yaml
    python scripts/train.py configs/movie_reviews.yaml --num_train_epochs 2 --dendrites none
    python scripts/train.py --model_name_or_path minilm-l2 --task trec6 --output_dir runs/trec6
    python scripts/train.py configs/mlm_from_scratch.yaml   # masked-LM from scratch (scripts/masked_lm.py)

Every key of the YAML file is a flag; flags given after the file override it. Flags are those of
`ModelArguments`, `DataArguments`, `transformers.TrainingArguments`, `hf_dendrites.DendriteConfig` and
`hf_dendrites.DendriteTrainingArguments` (plus `--dendrites pb|gd|none`). Writes `results.json`, the trained model and
`dendrite_history.png` to `output_dir` and prints a short result table.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import logging
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import torch
import transformers
import yaml
from peft import LoraConfig, get_peft_model
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    HfArgumentParser,
    PreTrainedModel,
    Trainer,
    TrainingArguments,
)
from transformers.hf_argparser import string_to_bool

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the studies' helpers (experiments/), beside this script

import hf_dendrites  # noqa: E402
from experiments.data import TASK_DESCRIPTIONS, load_task, num_labels  # noqa: E402
from experiments.data_files import load_hub, load_local  # noqa: E402
from experiments.metrics import METRICS, build_compute_metrics  # noqa: E402
from experiments.pretrained import SHIPPED_MODELS, hub_id_of, resolve_model  # noqa: E402
from experiments.teacher import check_teacher, load_teacher, teacher_logits  # noqa: E402
from experiments.unlabeled import builtin_unlabeled_texts, distillation_pool, read_unlabeled_file  # noqa: E402
from hf_dendrites import (  # noqa: E402
    Action,
    DendriteConfig,
    DendriteTrainer,
    DendriteTrainingArguments,
    DistillationConfig,
    DistillationTrainer,
    DistilledDendriteTrainer,
    RestartFromBestCallback,
    RestartOnPlateauCallback,
    SummingNetworkConfig,
    disable_dendrites,
    narrow_model,
    num_dendrites,
    parameter_report,
    summing_network,
)

# Public names of the library's modules that the top level does not repeat: choices for flags' help,
# the teacher column's name, the holdout split a plain control mirrors, the history plot's file name.
from hf_dendrites.compression import NARROW_INITS  # noqa: E402
from hf_dendrites.distillation import TEACHER_LOGITS, TeacherAgreementCallback  # noqa: E402
from hf_dendrites.holdout import holdout_split  # noqa: E402
from hf_dendrites.modeling_summing import POOLINGS  # noqa: E402
from hf_dendrites.plotting import HISTORY_PLOT  # noqa: E402
from hf_dendrites.version import versions  # noqa: E402

logger = logging.getLogger("train")


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default="minilm-l2",
        metadata={"help": "'minilm-l2' / 'minilm-l6' (shipped, offline), a local folder, or a Hub model id."},
    )
    max_seq_length: int = field(default=64, metadata={"help": "Tokens per example after truncation."})
    architecture: str = field(
        default="pretrained",
        metadata={
            "help": "'pretrained' (the model as loaded), 'narrowed' (narrow_model of it: --width, --depth, "
            "--narrow_init) or 'summing_network' (embeddings pooled, then Linear layers: --embedding_size, "
            "--hidden_sizes, --pooling, --embedding_init). Compressed models keep the pretrained tokenizer."
        },
    )
    width: float = field(default=1.0, metadata={"help": "narrowed: hidden-size factor in (0, 1], whole heads."})
    depth: int | None = field(default=None, metadata={"help": "narrowed: layers to keep (default all)."})
    narrow_init: str = field(
        default="first", metadata={"help": "narrowed: 'first' units, 'importance' ranked units, or 'scratch'."}
    )
    embedding_size: int = field(default=64, metadata={"help": "summing_network: embedding width."})
    hidden_sizes: list[int] = field(
        default_factory=lambda: [64], metadata={"help": "summing_network: hidden Linear widths (0: none)."}
    )
    pooling: str = field(default="mean", metadata={"help": "summing_network: 'mean' or 'sum' over tokens."})
    embedding_init: str = field(
        default="pretrained",
        metadata={"help": "summing_network: 'pretrained' (projected pretrained embeddings) or 'random'."},
    )
    lora_r: int = field(
        default=0,
        metadata={"help": "Fine-tune with a LoRA adapter of this rank (peft; base frozen, head trained); 0: off."},
    )
    lora_alpha: int = field(default=16, metadata={"help": "LoRA scaling numerator (updates scale by alpha / r)."})
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["query", "value"], metadata={"help": "Layers that get LoRA (module-name suffixes)."}
    )

    def __post_init__(self) -> None:
        if self.max_seq_length < 2:  # 0 would turn truncation off; [CLS] and [SEP] take two tokens
            raise ValueError(f"--max_seq_length must be at least 2 tokens, got {self.max_seq_length}")


@dataclass
class DataArguments:
    task: str | None = field(
        default="movie_reviews",
        metadata={
            "help": "A built-in offline task (movie_reviews, trec6, sms_spam); ignored when files are given. "
            "'masked_lm': pretrain a BERT from scratch instead (scripts/masked_lm.py, its own flags)."
        },
    )
    data_file: str | None = field(default=None, metadata={"help": "One CSV/JSON(L) file, split 80/10/10 by hash."})
    train_file: str | None = field(
        default=None, metadata={"help": "A CSV/JSON(L) training file (with validation_file)."}
    )
    validation_file: str | None = field(default=None, metadata={"help": "A CSV/JSON(L) validation file."})
    test_file: str | None = field(default=None, metadata={"help": "A CSV/JSON(L) test file (optional)."})
    dataset_name: str | None = field(default=None, metadata={"help": "A Hub dataset name (needs the network)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "The Hub dataset's configuration."})
    text_column: str = field(default="text", metadata={"help": "Column holding the text, for your own data."})
    label_column: str = field(default="label", metadata={"help": "Column holding the label, for your own data."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training examples."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N validation examples."})
    max_test_samples: int | None = field(default=None, metadata={"help": "Keep the first N test examples."})

    def __post_init__(self) -> None:
        for name in ("max_train_samples", "max_eval_samples", "max_test_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"--{name} must be a positive number of examples (or left unset), got {value}")


@dataclass
class DistillationArguments:
    teacher: str | None = field(
        default=None,
        metadata={
            "help": "Distil from this fine-tuned classifier (a folder or Hub id) instead of training on labels alone."
        },
    )
    teacher_recipe: str | None = field(
        default=None,
        metadata={
            "help": "Distil from the model this recipe fine-tunes (run once, then reused from its output_dir), "
            "when --teacher is not given."
        },
    )
    distill_alpha: float = field(
        default=DistillationConfig.alpha,
        metadata={"help": DistillationConfig.__dataclass_fields__["alpha"].metadata["help"]},
    )
    distill_temperature: float = field(
        default=DistillationConfig.temperature,
        metadata={"help": DistillationConfig.__dataclass_fields__["temperature"].metadata["help"]},
    )
    unlabeled_file: str | None = field(
        default=None,
        metadata={
            "help": "Your own unlabelled texts (.txt one per line, .csv/.jsonl with a 'text' column) instead of the "
            "built-in pool (film dialogue, tweets, product-review and editorial snippets)."
        },
    )
    max_unlabeled_samples: int | None = field(
        default=None, metadata={"help": "Keep this many unlabelled texts of the pool (a fixed hash-ranked choice)."}
    )
    teacher_logits_cache: str = field(
        default="runs/teacher_logits",
        metadata={"help": "Folder where teacher logits are cached (keyed by teacher, tokenizer settings and texts)."},
    )

    @property
    def enabled(self) -> bool:
        return bool(self.teacher or self.teacher_recipe)


MODE_HELP = DendriteConfig.__dataclass_fields__["mode"].metadata["help"]


def _dendrite_arguments_class() -> type:
    """`DendriteConfig` and `DendriteTrainingArguments` as flags: the same fields and help, with target lists
    as plain lists.

    argparse cannot express "a list or a regex"; a single value that is not a plain module-name
    suffix (letters, digits, '_' and '.') is taken as the regex.
    """
    fields = [
        (
            "dendrites",
            str,
            field(
                default="pb",
                metadata={"help": "DendriteConfig.mode, or 'none' for the plain fine-tune: " + MODE_HELP},
            ),
        ),
        (
            "restart_at_epochs",
            list[int],
            field(
                default_factory=list,
                metadata={
                    "help": "--dendrites none only: after these epochs' evaluations, restore the best model and "
                    "start a fresh optimizer (the schedule continues), as a growth does: a control for what the "
                    "restarts alone do."
                },
            ),
        ),
        (
            "restart_on_plateau",
            bool,
            field(
                default=False,
                metadata={
                    "help": "--dendrites none only: restart (best model, fresh optimizer) wherever PB would grow, "
                    "following the growth settings (--patience, --max_dendrites restarts, --max_tries), and stop "
                    "when a restart no longer helps: PB's policy without the dendrite."
                },
            ),
        ),
        (
            "early_stopping_patience",
            int | None,
            field(
                default=None,
                metadata={
                    "help": "--dendrites none only: stop after this many evaluations without a better metric "
                    "(transformers' EarlyStoppingCallback; --restart_on_plateau stops by its own policy instead). "
                    "Default: --patience, the growth stall, so the plain run of a recipe waits as long as its "
                    "dendrite run before acting."
                },
            ),
        ),
        (
            "error_alignment_steps",
            int,
            field(
                default=0,
                metadata={
                    "help": "Research diagnostics: with an --error_signal other than backprop, compare its error with "
                    "the exact backprop error on this many steps at the start of each dendrite phase (results.json "
                    "error_alignment); with any signal, the candidates' correlation with the exact error at each "
                    "dendrite-phase evaluation (candidate_exact_correlation). 0: off."
                },
            ),
        ),
    ]
    for item in (*dataclasses.fields(DendriteConfig), *dataclasses.fields(DendriteTrainingArguments)):
        if item.name == "mode":  # --dendrites sets it (and also offers 'none')
            continue
        kind = item.type if item.name not in ("target_modules", "exclude_modules") else list[str] | None
        kind = {"str": str, "int": int, "float": float, "bool": bool}.get(kind, kind) if isinstance(kind, str) else kind
        fields.append((item.name, kind, field(default=item.default, metadata=dict(item.metadata))))
    return dataclasses.make_dataclass("DendriteArguments", fields)


DendriteArguments = _dendrite_arguments_class()


def early_stopping_patience(arguments: Any) -> int:
    """The plain run's early stopping: its own flag, else the growth stall of the same recipe."""
    if arguments.early_stopping_patience is None:
        return arguments.patience
    if arguments.early_stopping_patience < 1:
        raise ValueError(f"--early_stopping_patience must be >= 1, got {arguments.early_stopping_patience}")
    return arguments.early_stopping_patience


def training_arguments_from(arguments: Any) -> DendriteTrainingArguments:
    """The run's growth and candidate settings among the flags."""
    return DendriteTrainingArguments(
        **{f.name: getattr(arguments, f.name) for f in dataclasses.fields(DendriteTrainingArguments)}
    )


def dendrite_config_from(arguments: Any) -> DendriteConfig | None:
    values = {f.name: getattr(arguments, f.name) for f in dataclasses.fields(DendriteConfig) if f.name != "mode"}
    for name in ("target_modules", "exclude_modules"):
        value = values[name]
        if value is not None and len(value) == 1 and not re.fullmatch(r"[\w.]+", value[0]):
            values[name] = value[0]
    if arguments.dendrites == "none":
        return None
    if arguments.dendrites not in ("pb", "gd"):
        raise ValueError(f"--dendrites must be 'pb', 'gd' or 'none', got {arguments.dendrites!r}")
    values["mode"] = arguments.dendrites
    return DendriteConfig(**values)


RECIPE_SUFFIXES = (".yaml", ".yml", ".json")


class UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key given twice is an error (plain YAML keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"the key {key!r} is given twice (line {key_node.start_mark.line + 1})",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def yaml_to_flags(path: str, parser: argparse.ArgumentParser | None = None) -> list[str]:
    """Turn a recipe into flags, so argparse checks its keys and values like command-line ones.

    With `parser`, every key is checked first, so a recipe mistake is named as such: an unknown
    key, a list for a one-value argument, or YAML's reading of `no`/`yes` as a boolean.
    """
    recipe_path = Path(path)
    if recipe_path.suffix not in RECIPE_SUFFIXES:
        raise ValueError(f"recipe {path!r}: expected a {'/'.join(RECIPE_SUFFIXES)} file")
    if not recipe_path.is_file():
        raise FileNotFoundError(f"recipe {path!r} not found")
    try:
        recipe = yaml.load(recipe_path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader) or {}  # JSON is YAML too
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {error}") from error
    if not isinstance(recipe, dict):
        raise ValueError(f"{path} must be a mapping of argument names to values")
    actions = {} if parser is None else {flag[2:]: action for flag, action in parser._option_string_actions.items()}
    flags: list[str] = []
    for key, value in recipe.items():
        if value is None:
            continue
        if isinstance(value, dict):
            raise ValueError(f"{path}: {key} must be a plain value or a list, not a mapping")
        if parser is not None:
            check_recipe_value(path, key, value, actions)
        values = value if isinstance(value, list) else [value]
        flags.append(f"--{key}")
        flags.extend(str(v) for v in values)
    return flags


def check_recipe_value(path: str, key: str, value: Any, actions: dict[str, argparse.Action]) -> None:
    action = actions.get(key)
    if action is None:
        close = difflib.get_close_matches(key, list(actions), n=3)
        raise ValueError(f"{path}: unknown key {key!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
    takes_list = action.nargs in ("+", "*")
    if isinstance(value, list) and not takes_list:
        raise ValueError(f"{path}: {key} takes one value, got the list {value}")
    if isinstance(value, bool) and action.type is not string_to_bool:
        word = "true/yes/on" if value else "false/no/off"
        raise ValueError(
            f"{path}: {key}: YAML reads an unquoted {word} as the boolean {value}; quote the value "
            f'(e.g. {key}: "{"yes" if value else "no"}")'
        )


def argument_parser() -> HfArgumentParser:
    # allow_abbrev=False: a misspelt key must fail, not silently match a longer flag
    return HfArgumentParser(
        (ModelArguments, DataArguments, TrainingArguments, DendriteArguments, DistillationArguments), allow_abbrev=False
    )


def expand_arguments(argv: list[str], parser: HfArgumentParser | None = None) -> list[str]:
    """The flags a command line stands for: a leading recipe file's keys, then the flags after it."""
    if argv and not argv[0].startswith("-"):
        return yaml_to_flags(argv[0], parser or argument_parser()) + argv[1:]
    return list(argv)


def parse_arguments(argv: list[str]) -> tuple[Any, ...]:
    parser = argument_parser()
    flags = expand_arguments(argv, parser)
    parsed = parser.parse_args_into_dataclasses(args=flags)
    progress_bars_for_terminals(flags, parsed[2])
    return parsed


def progress_bars_for_terminals(flags: list[str], training_args: TrainingArguments) -> None:
    """Progress bars for a person at a terminal; per-evaluation log lines in files and CI logs."""
    if not any(flag in flags for flag in ("--disable_tqdm", "--no_disable_tqdm")):
        training_args.disable_tqdm = not sys.stderr.isatty()


def load_data(data_args: DataArguments) -> datasets.DatasetDict:
    """The task's splits, each cut to its `max_*_samples`."""
    return apply_limits(load_full_data(data_args), data_args)


def dataset_record(data_args: DataArguments) -> dict[str, str | None]:
    """The `dataset` entry of results.json ({name, type, hub_id}): what a model card says the model was trained on."""
    if data_args.train_file or data_args.data_file:
        return {"name": "custom data", "type": "custom", "hub_id": None}
    if data_args.dataset_name:
        return {"name": data_args.dataset_name, "type": data_args.dataset_name, "hub_id": data_args.dataset_name}
    return dict(TASK_DESCRIPTIONS[data_args.task])


def load_full_data(data_args: DataArguments) -> datasets.DatasetDict:
    if data_args.train_file or data_args.data_file:
        files = data_args.data_file or {
            split: path
            for split, path in (
                ("train", data_args.train_file),
                ("validation", data_args.validation_file),
                ("test", data_args.test_file),
            )
            if path
        }
        data = load_local(files, text_column=data_args.text_column, label_column=data_args.label_column)
    elif data_args.dataset_name:
        data = load_hub(
            data_args.dataset_name,
            data_args.dataset_config_name,
            text_column=data_args.text_column,
            label_column=data_args.label_column,
        )
    else:
        data = load_task(data_args.task)
    return data


def apply_limits(data: datasets.DatasetDict, data_args: DataArguments) -> datasets.DatasetDict:
    data = datasets.DatasetDict(data)
    limits = {
        "train": data_args.max_train_samples,
        "validation": data_args.max_eval_samples,
        "test": data_args.max_test_samples,
    }
    for split, limit in limits.items():
        if limit is not None and split in data:
            data[split] = data[split].select(range(min(limit, len(data[split]))))
    return data


ARCHITECTURES = ("pretrained", "narrowed", "summing_network")


def check_model_arguments(model_args: ModelArguments) -> None:
    """Name a bad choice before anything is loaded (sizes are checked where the model is built)."""
    choices = {
        "architecture": ARCHITECTURES,
        "narrow_init": NARROW_INITS,
        "pooling": POOLINGS,
        "embedding_init": ("pretrained", "random"),
    }
    for name, allowed in choices.items():
        if getattr(model_args, name) not in allowed:
            raise ValueError(f"--{name} must be one of {allowed}, got {getattr(model_args, name)!r}")


def compress(model: PreTrainedModel, model_args: ModelArguments) -> tuple[PreTrainedModel, dict[str, Any] | None]:
    """The model to train and, for a compressed one, what it was made from (for results.json and the card).

    `model_args` are checked by `check_model_arguments` first (main does it before loading anything).
    """
    if model_args.architecture == "pretrained":
        return model, None
    reference = {"name": model_args.model_name_or_path, "parameters": parameter_report(model)["total"]}
    if model_args.architecture == "narrowed":
        compressed = narrow_model(model, width=model_args.width, depth=model_args.depth, init=model_args.narrow_init)
        shape = {"width": model_args.width, "depth": model_args.depth, "narrow_init": model_args.narrow_init}
    else:
        config = SummingNetworkConfig(
            vocab_size=model.config.vocab_size,
            embedding_size=model_args.embedding_size,
            hidden_sizes=[size for size in model_args.hidden_sizes if size],
            pooling=model_args.pooling,
            pad_token_id=model.config.pad_token_id,
            num_labels=model.config.num_labels,
            id2label=model.config.id2label,
            label2id=model.config.label2id,
        )
        pretrained = model if model_args.embedding_init == "pretrained" else None
        compressed = summing_network(config, pretrained=pretrained)
        shape = {
            key: getattr(model_args, key) for key in ("embedding_size", "hidden_sizes", "pooling", "embedding_init")
        }
    return compressed, {"architecture": model_args.architecture, **shape, "reference": reference}


def evaluation_history(log_history: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Every evaluation during training (epoch, step, metrics, and for a distilled student its agreement
    with the teacher): lets runs be compared step by step."""
    evaluations = [
        {
            "epoch": entry["epoch"],
            "step": entry["step"],
            **{m: entry[f"eval_{m}"] for m in METRICS if f"eval_{m}" in entry},
        }
        for entry in log_history
        if "eval_loss" in entry or any(f"eval_{m}" in entry for m in METRICS)
    ]
    by_step = {evaluation["step"]: evaluation for evaluation in evaluations}
    for entry in log_history:
        for key, value in entry.items():
            if key.startswith("teacher_agreement/") and entry.get("step") in by_step:
                by_step[entry["step"]][key] = value
    return evaluations


def prepare_teacher(distill_args: DistillationArguments) -> str:
    """The teacher to distil from: `--teacher`, or the model `--teacher_recipe` fine-tunes (once; reused after)."""
    if distill_args.teacher:
        return distill_args.teacher
    recipe = Path(distill_args.teacher_recipe)
    if not recipe.is_file():
        raise FileNotFoundError(f"--teacher_recipe {recipe} not found")
    _, _, teacher_training, teacher_dendrites, teacher_distillation = parse_arguments([str(recipe)])
    if teacher_distillation.enabled:
        raise ValueError(f"--teacher_recipe {recipe} distils itself; a teacher recipe must train on labels")
    output = Path(teacher_training.output_dir)
    if (output / "results.json").is_file():
        logger.info("teacher: reusing %s (fine-tuned by %s)", output, recipe)
    else:
        logger.info("teacher: fine-tuning with %s into %s", recipe, output)
        main([str(recipe)])
    return str(output)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model")


def load_teacher_tokenizer(source: str, teacher: PreTrainedModel) -> Any:
    """The teacher's own tokenizer. A folder saved without one would otherwise get a default tokenizer
    of a handful of tokens, and the teacher would see only [UNK]."""
    folder = Path(source)
    if folder.is_dir() and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ValueError(
            f"the teacher folder {source} has no tokenizer files ({', '.join(TOKENIZER_FILES)}): save the teacher's "
            "tokenizer beside it (tokenizer.save_pretrained(folder))"
        )
    tokenizer = AutoTokenizer.from_pretrained(source)
    vocabulary = getattr(teacher.config, "vocab_size", None)
    if vocabulary and len(tokenizer) < vocabulary // 2:
        raise ValueError(
            f"the tokenizer in {source} has {len(tokenizer)} tokens but the teacher's vocabulary has {vocabulary}: "
            "it is not the tokenizer the teacher was trained with"
        )
    return tokenizer


def distillation_train_set(
    full: datasets.DatasetDict,
    limited: datasets.DatasetDict,
    distill_args: DistillationArguments,
    max_length: int,
) -> tuple[datasets.Dataset, dict[str, Any]]:
    """The pool a student is distilled on (text, label, teacher_logits) and what results.json records of it.

    `limited` holds the splits as trained and evaluated (after `max_*_samples`); `full` the uncut
    ones, so that no validation or test text enters the pool even when evaluation uses a subset.
    """
    source = prepare_teacher(distill_args)
    teacher = load_teacher(source)
    check_teacher(teacher, num_labels(limited), source)
    teacher_tokenizer = load_teacher_tokenizer(source, teacher)
    if distill_args.unlabeled_file:
        unlabeled = {"unlabeled_file": read_unlabeled_file(distill_args.unlabeled_file)}
    else:
        unlabeled = builtin_unlabeled_texts()
    pool, record = distillation_pool(
        full, unlabeled, labeled_train=limited["train"], max_unlabeled=distill_args.max_unlabeled_samples
    )

    def logits_of(texts: list[str]) -> Any:
        return teacher_logits(
            teacher,
            teacher_tokenizer,
            texts,
            max_length=max_length,
            cache_dir=distill_args.teacher_logits_cache,
            description={"teacher": source},
        )

    pool = pool.add_column(TEACHER_LOGITS, logits_of(pool["text"]).tolist())
    held_out = {split: logits_of(limited[split]["text"]) for split in ("validation", "test") if split in limited}
    accuracy = {
        split: float((logits.argmax(-1) == limited[split]["label"]).mean()) for split, logits in held_out.items()
    }
    info = {
        "teacher": source,
        "teacher_recipe": distill_args.teacher_recipe if not distill_args.teacher else None,
        "teacher_parameters": parameter_report(teacher)["total"],
        "teacher_accuracy": accuracy,
        "alpha": distill_args.distill_alpha,
        "temperature": distill_args.distill_temperature,
        "unlabeled_file": distill_args.unlabeled_file,
        "pool": record,
    }
    logger.info(
        "teacher %s: accuracy %s; pool of %d texts (%d labelled)", source, accuracy, len(pool), record["labeled"]
    )
    return pool.remove_columns("source"), info, held_out


AGREEMENT_SAMPLE = 1000


def agreement_samples(encoded: datasets.DatasetDict, validation_logits: Any) -> dict[str, datasets.Dataset]:
    """Fixed rows to measure the student's agreement with the teacher on: evenly spaced rows of the
    training pool, and the validation set."""
    train = encoded["train"]
    step = max(1, len(train) // AGREEMENT_SAMPLE)
    return {
        "train": train.select(range(0, len(train), step)[:AGREEMENT_SAMPLE]),
        "validation": encoded["validation"].add_column(TEACHER_LOGITS, validation_logits.tolist()),
    }


def load_classifier(name: str, path: str, overrides: dict[str, Any], labels: int) -> PreTrainedModel:
    """A classifier from a pretrained encoder; for the shipped MiniLM, one line on what was kept.

    Loading the shipped MiniLM-L6 into 2 layers leaves its other 4 layers unused and the classifier
    new, which transformers reports as a table of UNEXPECTED and MISSING keys. That table is replaced
    by one line when those are exactly the differences; any other difference (or any other model)
    is reported as transformers reports it.
    """
    if name.lower() not in SHIPPED_MODELS:
        return AutoModelForSequenceClassification.from_pretrained(path, num_labels=labels, **overrides)
    verbosity = transformers.utils.logging.get_verbosity()
    transformers.utils.logging.set_verbosity_error()
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=labels, output_loading_info=True, **overrides
        )
    finally:
        transformers.utils.logging.set_verbosity(verbosity)
    kept = model.config.num_hidden_layers
    unused_layer = re.compile(r"(?:bert\.)?encoder\.layer\.(\d+)\.")
    dropped = [
        key
        for key in info["unexpected_keys"]
        if not ((match := unused_layer.match(key)) and int(match.group(1)) >= kept)
    ]
    new = [key for key in info["missing_keys"] if not key.startswith("classifier.")]
    if dropped or new or info["mismatched_keys"]:
        logger.warning(
            "loading %s: unexpected keys %s, missing keys %s, mismatched keys %s",
            name,
            dropped[:10],
            new[:10],
            sorted(info["mismatched_keys"])[:10],
        )
    layers = f"first {kept} layers" if info["unexpected_keys"] else f"all {kept} layers"
    logger.info(
        "%s: MiniLM-L6 -> %s, %.1fM parameters; new classifier head (%d labels)",
        name,
        layers,
        model.num_parameters() / 1e6,
        labels,
    )
    return model


def metrics_without_dendrites(trainer: Trainer, dataset: datasets.Dataset) -> dict[str, float]:
    """Test metrics of the trained model with every dendrite's output weight held at zero: set
    against the model's own, how much of its predictions runs through the dendrites."""
    with disable_dendrites(trainer.model):
        metrics = trainer.predict(dataset, metric_key_prefix="test").metrics
    return split_metrics(metrics, "test_")


def split_metrics(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    """The task metrics of one split, without the Trainer's key prefix (runtime and loss dropped)."""
    return {k.removeprefix(prefix): v for k, v in metrics.items() if k.removeprefix(prefix) in METRICS}


def check_ignored_flags(
    dendrite_args: Any, distill_args: DistillationArguments, recipe: Mapping[str, Any] | None = None
) -> None:
    """Refuse a setting the run would silently ignore. A candidate setting that the `recipe` itself
    makes is for the recipe's dendrite runs: `--dendrites none` on that recipe ignores it, as asked."""
    defaults = {
        item.name: item.default
        for item in (*dataclasses.fields(DendriteConfig), *dataclasses.fields(DendriteTrainingArguments))
    }
    if dendrite_args.dendrites == "none":
        defaults |= {name: value for name, value in (recipe or {}).items() if name in defaults}
        early_stopping_patience(dendrite_args)  # a ValueError naming a bad value
    elif dendrite_args.early_stopping_patience is not None:
        raise ValueError(
            "--early_stopping_patience is the plain run's early stopping (--dendrites none); growth stops by "
            "--patience, --max_dendrites and --max_tries"
        )
    if dendrite_args.dendrites == "none":
        candidate_settings = (
            "error_signal",
            "num_candidates",
            "candidate_learner",
            "dendrite_rank",
            "candidate_epochs",
        )
        changed = [name for name in candidate_settings if getattr(dendrite_args, name) != defaults[name]]
        if changed:
            raise ValueError(f"--{changed[0]} has no effect with --dendrites none (a plain run grows no dendrites)")
    if dendrite_args.dendrites == "gd" and dendrite_args.error_signal != defaults["error_signal"]:
        raise ValueError(
            f"--error_signal {dendrite_args.error_signal} has no effect with --dendrites gd: GD dendrites train by "
            "backprop with everything else; error signals are for PB candidates"
        )
    if not distill_args.enabled:
        for name in ("distill_alpha", "distill_temperature", "unlabeled_file", "max_unlabeled_samples"):
            default = DistillationArguments.__dataclass_fields__[name].default
            if getattr(distill_args, name) != default:
                raise ValueError(f"--{name} has no effect without --teacher or --teacher_recipe")


def recipe_keys(argv: list[str]) -> dict[str, Any]:
    """The keys of the recipe file a command line starts with ({} without one, or when it does not
    parse: `parse_arguments` names the error)."""
    if argv and not argv[0].startswith("-") and Path(argv[0]).suffix in RECIPE_SUFFIXES and Path(argv[0]).is_file():
        try:
            recipe = yaml.safe_load(Path(argv[0]).read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            return {}
        return recipe if isinstance(recipe, dict) else {}
    return {}


def requested_task(argv: list[str]) -> str | None:
    """The `task` a command line asks for (a flag after the recipe overrides the recipe's key),
    read before parsing: masked-LM pretraining has flags of its own (`scripts/masked_lm.py`)."""
    task = recipe_keys(argv).get("task")
    for index, flag in enumerate(argv):
        if flag == "--task" and index + 1 < len(argv):
            task = argv[index + 1]
        elif flag.startswith("--task="):
            task = flag.split("=", 1)[1]
    return task


def set_metric_defaults(training_args: TrainingArguments) -> None:
    """Growth and best-model selection follow validation accuracy unless told otherwise; a loss is minimised."""
    training_args.metric_for_best_model = training_args.metric_for_best_model or "accuracy"
    if training_args.greater_is_better is None:
        training_args.greater_is_better = not training_args.metric_for_best_model.endswith("loss")


def check_run_arguments(
    model_args, dendrite_args, distill_args, dendrite_config, recipe: Mapping[str, Any] | None = None
) -> None:
    """Refuse combinations of flags that would be ignored or contradict each other, before anything loads
    (`recipe`: the keys of the recipe file the command line started with)."""
    if dendrite_config is not None and (dendrite_args.restart_at_epochs or dendrite_args.restart_on_plateau):
        raise ValueError("--restart_at_epochs and --restart_on_plateau are for plain runs (--dendrites none)")
    if dendrite_args.restart_at_epochs and dendrite_args.restart_on_plateau:
        raise ValueError("give --restart_at_epochs or --restart_on_plateau, not both")
    check_ignored_flags(dendrite_args, distill_args, recipe)


def build_model(model_args, model_path: str, overrides: dict, raw: datasets.DatasetDict) -> tuple[Any, Any, Any]:
    """(model, tokenizer, compression record): the classifier, compressed and wrapped in LoRA as asked."""
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = load_classifier(model_args.model_name_or_path, model_path, overrides, num_labels(raw))
    model, compression = compress(model, model_args)
    if model_args.lora_r:
        if model_args.lora_r < 0:
            raise ValueError(f"--lora_r must be a positive rank (0: no LoRA), got {model_args.lora_r}")
        lora = LoraConfig(
            r=model_args.lora_r,
            lora_alpha=model_args.lora_alpha,
            target_modules=model_args.lora_target_modules,
            task_type="SEQ_CLS",
        )
        model = get_peft_model(model, lora)
    return model, tokenizer, compression


def encode(raw: datasets.DatasetDict, tokenizer: Any, max_length: int, train_set: datasets.Dataset | None):
    """Tokenized splits with a `labels` column; `train_set` (the distillation pool) replaces the training split."""

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        return tokenizer(batch["text"], truncation=True, max_length=max_length)

    encoded = raw.map(tokenize, batched=True, remove_columns=["id", "text"]).rename_column("label", "labels")
    if train_set is not None:
        encoded["train"] = train_set.map(tokenize, batched=True, remove_columns=["text"]).rename_column(
            "label", "labels"
        )
    return encoded


def apply_holdout(encoded, dendrite_args, dendrite_config, seed: int) -> dict[str, Any] | None:
    """The holdout record; a plain control trains only on what a holdout run's neuron phases see."""
    if not dendrite_args.candidate_holdout_fraction:
        return None
    neuron_part, held_out = holdout_split(len(encoded["train"]), dendrite_args.candidate_holdout_fraction, seed)
    if dendrite_config is None:
        encoded["train"] = encoded["train"].select(neuron_part)
    return {"fraction": dendrite_args.candidate_holdout_fraction, "train": len(neuron_part), "held_out": len(held_out)}


def build_trainer(common: dict[str, Any], training_args, dendrite_args, dendrite_config, distillation):
    """(trainer, restart callback or None): a (distilled) DendriteTrainer with dendrites, else a plain (distillation)
    Trainer with early stopping or one of the restart controls."""
    if distillation is not None:
        common["distillation"] = distillation
    if dendrite_config is not None:
        trainer = (DendriteTrainer if distillation is None else DistilledDendriteTrainer)(
            **common,
            dendrite_config=dendrite_config,
            dendrite_args=training_arguments_from(dendrite_args),
            error_alignment_steps=dendrite_args.error_alignment_steps,
        )
        return trainer, None
    training_args.load_best_model_at_end = True
    trainer = (Trainer if distillation is None else DistillationTrainer)(**common)
    restarts = None
    if dendrite_args.restart_on_plateau:  # it stops the run itself, when a restart no longer helps
        restarts = RestartOnPlateauCallback(trainer, training_arguments_from(dendrite_args))
    else:
        trainer.add_callback(EarlyStoppingCallback(early_stopping_patience=early_stopping_patience(dendrite_args)))
    if dendrite_args.restart_at_epochs:
        restarts = RestartFromBestCallback(trainer, dendrite_args.restart_at_epochs)
    if restarts is not None:
        trainer.add_callback(restarts)
    return trainer, restarts


def evaluate_final_model(trainer, encoded, dendrite_config) -> tuple[dict, dict, dict]:
    """(validation metrics, test metrics, per-example test outcomes) of the model training ended with."""
    validation = trainer.evaluate(metric_key_prefix="eval")
    test, test_outcome = {}, {}
    if "test" in encoded:  # predictions kept, so runs can be compared example by example (paired intervals)
        prediction = trainer.predict(encoded["test"], metric_key_prefix="test")
        test = prediction.metrics
        test_outcome = {
            "test_predictions": prediction.predictions.argmax(-1).tolist(),
            "test_labels": prediction.label_ids.tolist(),
        }
        if dendrite_config is not None and num_dendrites(trainer.model):
            test_outcome["test_without_dendrites"] = metrics_without_dendrites(trainer, encoded["test"])
    return validation, test, test_outcome


def parameters_record(model: Any, base_parameters: int, report: dict[str, Any]) -> dict[str, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"base": base_parameters, "dendrites": report["dendrites"], "total": report["total"], "trainable": trainable}


def growth_results(trainer, restarts) -> dict[str, Any]:
    """What the growth (or the restart control) did: history, timings per phase, diagnostics."""
    results: dict[str, Any] = {}
    if isinstance(trainer, DendriteTrainer):
        callback = trainer.dendrite_callback
        results["dendrite_history"] = trainer.tracker.history
        results["completed_reason"] = trainer.tracker.completed_reason
        # optimizer-step seconds per phase (data loading and evaluation excluded): the fair way to
        # compare what a dendrite-phase step costs against a neuron-phase step; step_time splits them by
        # the number of dendrites installed
        results["phase_seconds"] = dict(callback.phase_seconds)
        results["phase_steps"] = dict(callback.phase_steps)
        results["step_time"] = callback.step_time
        results["candidate_scores_per_layer"] = callback.candidate_scores_per_layer
        for name, entries in callback.diagnostics.state_dict().items():
            if entries:
                results[name] = entries
        results["dendrite_output_weights"] = output_weight_sizes(trainer.model)
    if restarts is not None:
        results["restarts"] = restarts.restarts
    if isinstance(restarts, RestartOnPlateauCallback):
        results["completed_reason"] = restarts.tracker.completed_reason or "training budget used up"
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = sys.argv[1:] if argv is None else argv
    if requested_task(argv) == "masked_lm":
        import masked_lm  # scripts/masked_lm.py, beside this file

        return masked_lm.main(argv)
    model_args, data_args, training_args, dendrite_args, distill_args = parse_arguments(argv)
    dendrite_config = dendrite_config_from(dendrite_args)
    check_run_arguments(model_args, dendrite_args, distill_args, dendrite_config, recipe_keys(argv))
    resume = resume_target(training_args.resume_from_checkpoint)  # before anything is loaded
    distillation = None
    if distill_args.enabled:
        distillation = DistillationConfig(
            alpha=distill_args.distill_alpha, temperature=distill_args.distill_temperature
        )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity_warning()
    set_metric_defaults(training_args)
    full = load_full_data(data_args)
    raw = apply_limits(full, data_args)
    train_set = distillation_info = None
    if distillation is not None:
        train_set, distillation_info, held_out_logits = distillation_train_set(
            full, raw, distill_args, model_args.max_seq_length
        )
    model_path, overrides = resolve_model(model_args.model_name_or_path)
    transformers.set_seed(training_args.seed)  # the new classifier head is drawn now, before the Trainer seeds
    model, tokenizer, compression = build_model(model_args, model_path, overrides, raw)
    encoded = encode(raw, tokenizer, model_args.max_seq_length, train_set)
    holdout = apply_holdout(encoded, dendrite_args, dendrite_config, training_args.seed)
    base_parameters = parameter_report(model)["total"]
    collator = DataCollatorWithPadding(tokenizer)
    common = dict(
        model=model,
        args=training_args,
        train_dataset=encoded["train"],
        eval_dataset=encoded["validation"],
        processing_class=tokenizer,
        data_collator=collator,
        compute_metrics=build_compute_metrics(METRICS),
    )
    trainer, restarts = build_trainer(common, training_args, dendrite_args, dendrite_config, distillation)
    if distillation is not None:
        samples = agreement_samples(encoded, held_out_logits["validation"])
        trainer.add_callback(TeacherAgreementCallback(trainer, samples, collator))

    start = time.time()
    trainer.train(resume_from_checkpoint=resume)
    seconds = time.time() - start
    evaluations = evaluation_history(trainer.state.log_history)  # before the final evaluations below
    if not training_args.push_to_hub:  # with it, save_model would push before results.json exists
        trainer.save_model()
    validation, test, test_outcome = evaluate_final_model(trainer, encoded, dendrite_config)
    report = parameter_report(trainer.model)
    results = {
        "validation": split_metrics(validation, "eval_"),
        "test": split_metrics(test, "test_"),
        "parameters": parameters_record(trainer.model, base_parameters, report),
        "dendrites_per_layer": report["dendrites_per_layer"],
        **({"compression": compression} if compression else {}),
        **({"distillation": distillation_info} if distillation_info else {}),
        "epochs": trainer.state.epoch,
        "seconds": seconds,
        "evaluations": evaluations,
        "dataset": dataset_record(data_args),
        "base_model": hub_id_of(model_args.model_name_or_path),  # for the model card: a Hub id, or null
        "config": {
            "model": dataclasses.asdict(model_args),
            "data": dataclasses.asdict(data_args),
            "dendrites": None if dendrite_config is None else dendrite_config.to_dict(),
            "dendrite_training": training_arguments_from(dendrite_args).to_dict(),
            "distillation": dataclasses.asdict(distill_args) if distillation is not None else None,
            "training": training_args.to_dict(),
        },
        "versions": versions(),
        **test_outcome,
        **growth_results(trainer, restarts),
        **({"holdout": holdout} if holdout is not None else {}),
    }
    print_table(results, save_results(trainer, training_args, results))
    return results


def resume_target(value: str | None) -> str | bool | None:
    """What `--resume_from_checkpoint` asks for: a checkpoint folder, or `true` for the newest complete
    one in `output_dir` (the flag reaches the script as text, and "true" is not a folder)."""
    if value is None or value.strip().lower() in ("", "false", "none"):
        return None
    if value.strip().lower() in ("true", "latest"):
        return True
    if not Path(value).is_dir():
        raise FileNotFoundError(
            f"--resume_from_checkpoint {value!r} is not a folder: give a checkpoint folder "
            "(output_dir/checkpoint-<step>) or 'true' for the newest complete one"
        )
    return value


def save_results(trainer: Trainer, training_args: TrainingArguments, results: dict[str, Any]) -> Path:
    """`results.json` in the output folder, then the Hub push when asked (after it: the card reads it)."""
    output = Path(training_args.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    (output / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    if training_args.push_to_hub:
        commit = trainer.push_to_hub()
        logger.info("pushed to %s", getattr(commit, "commit_url", commit))
    return output


def output_weight_sizes(model: torch.nn.Module) -> dict[str, list[float]]:
    """Per layer, the mean |a_k| of each dendrite: how much the grown dendrites are actually used."""
    return {
        name: layer.dendrite_scale.detach().abs().mean(dim=-1).tolist()
        for name, layer in hf_dendrites.dendrite_layers(model).items()
        if layer.dendrite_scale is not None
    }


def print_table(results: dict[str, Any], output_dir: Path | None = None) -> None:
    rows = [("split", *METRICS)]
    for split in ("validation", "test"):
        if results[split]:
            rows.append((split, *(f"{results[split][m]:.4f}" for m in METRICS)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows]
    parameters = results["parameters"]
    dendrites = max(results["dendrites_per_layer"].values(), default=0)
    lines.append(
        f"parameters: {parameters['total']:,} ({parameters['base']:,} base + {parameters['dendrites']:,} in dendrites; "
        f"{dendrites} dendrite(s) per neuron on {len(results['dendrites_per_layer'])} layers)"
    )
    history = results.get("dendrite_history")
    if history is not None:
        grown = [entry for entry in history if entry["action"] == Action.GROW]
        reverted = sum(1 for entry in history if entry["restore_best"])
        lines.append(
            f"dendrites: grown {len(grown)} time(s), {dendrites} kept in the best model ({reverted} restore(s) of "
            f"the best model); {results.get('completed_reason') or 'training ended'}"
        )
    lines.append(f"epochs: {results['epochs']:.2f}   training time: {results['seconds']:.0f} s")
    if output_dir is not None:
        plot = output_dir / HISTORY_PLOT
        lines.append(f"model and results.json: {output_dir}" + (f"   growth plot: {plot}" if plot.exists() else ""))
    print("\n".join(lines))


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError, ImportError) as error:  # a mistake in the recipe or flags: one line
        sys.exit(f"train.py: error: {error}")
