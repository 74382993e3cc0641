#!/usr/bin/env python
"""Fine-tune the model of a `scripts/train.py` recipe with the reference library's dendrites.

    .venv-perforatedai/bin/python -m benchmarks.perforatedai configs/trec6.yaml --seed 1
    .venv-perforatedai/bin/python -m benchmarks.perforatedai configs/trec6.yaml --output_dir runs/pai_tiny
        --max_train_samples 300 --num_train_epochs 4 --n_epochs_to_switch 1 --max_dendrites 1

`perforatedai==3.2.9` (open source, gradient-trained dendrites) is a benchmark peer, installed only
in its own environment (`.venv-perforatedai`), never as a dependency of the package. Arguments are
train.py's, parsed by train.py (a YAML recipe first, flags after it override), so both runs see the
same model, data split, tokenization, batch sizes, AdamW settings, learning-rate schedule, gradient
clipping, seed and epoch budget. Of the dendrite flags only `--max_dendrites` is used. Two flags of
its own:

    --n_epochs_to_switch N  perforatedai's epochs without improvement before it restructures
                            (default: the recipe's `patience`, PB's growth stall, so both runs of a
                            recipe wait equally long)

    --final_model as_left   evaluate what perforatedai leaves (default): its restored best model
                            when it reports training complete, else the last epoch's weights
    --final_model best      at the end of the epoch budget, restore perforatedai's best checkpoint

An `output_dir` that comes from the recipe gets the suffix `_perforatedai`, so this script never
overwrites train.py's run; one given as a flag is used as it is. perforatedai keeps its checkpoints,
graphs and CSV files in `<output_dir>/perforatedai_work/` (emptied at the start of a run; its
checkpoints, hundreds of MB, are deleted at the end). Writes `<output_dir>/results.json` in the
shape of train.py's, plus `epoch_log`, `num_dendrites` and `final_model`, and prints a short table.
`seconds` is the whole training loop, per-epoch evaluation and perforatedai's bookkeeping included
(as train.py's `trainer.train()`); each `epoch_log` entry splits it into the training pass
(`seconds`), `evaluation_seconds` and `perforatedai_seconds`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import importlib.util
import json
import logging
import os
import pdb
import shutil
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))  # train.py: the recipe parser and data loading this run shares
if importlib.util.find_spec("hf_dendrites") is None:
    # the perforatedai environment sees the main environment's site-packages through a .pth
    # path entry, which does not run the editable install's import hook: use the checkout
    sys.path.insert(1, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import train  # noqa: E402
import transformers  # noqa: E402
from perforatedai import globals_perforatedai as GPA  # noqa: E402
from perforatedai import modules_perforatedai as PA  # noqa: E402
from perforatedai import utils_perforatedai as UPA  # noqa: E402
from torch import nn  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

from experiments.data import num_labels  # noqa: E402
from experiments.metrics import METRICS, build_compute_metrics  # noqa: E402
from experiments.pretrained import resolve_model  # noqa: E402

logger = logging.getLogger("benchmark_perforatedai")

WORK_FOLDER = "perforatedai_work"  # perforatedai rejects a save_name with "/": it is relative to the cwd
FINAL_MODEL_CHOICES = ("as_left", "best")
SUPPORTED_OPTIMIZERS = ("adamw_torch", "adamw_torch_fused")


# ---------------------------------------------------------------------- arguments


def parse_arguments(argv: list[str]) -> tuple[Any, Any, TrainingArguments, Any, str]:
    """train.py's arguments, plus this script's `--final_model`, with train.py's metric defaults.

    `--final_model` is taken out before train.py's parser sees the rest, since that parser rejects
    flags it does not know.
    """
    own = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    own.add_argument("--final_model", "--final-model", choices=FINAL_MODEL_CHOICES, default="as_left")
    own.add_argument("--n_epochs_to_switch", type=int, default=None)
    own_args, rest = own.parse_known_args(argv)
    if "-h" in rest or "--help" in rest:
        print(__doc__)  # then train.py's parser prints the flags it shares with train.py, and exits
    model_args, data_args, training_args, dendrite_args, _ = train.parse_arguments(rest)
    has_recipe = bool(rest) and rest[0].endswith((".yaml", ".yml"))
    output_dir_flag = any(flag.split("=")[0] in ("--output_dir", "--output-dir") for flag in rest)
    if has_recipe and not output_dir_flag:
        training_args.output_dir = f"{training_args.output_dir.rstrip('/')}_perforatedai"
    training_args.metric_for_best_model = training_args.metric_for_best_model or "accuracy"
    if training_args.greater_is_better is None:
        training_args.greater_is_better = not training_args.metric_for_best_model.endswith("loss")
    check_supported(training_args)
    if own_args.n_epochs_to_switch is not None:
        if own_args.n_epochs_to_switch < 1:
            raise ValueError(f"--n_epochs_to_switch must be >= 1, got {own_args.n_epochs_to_switch}")
        dendrite_args.n_epochs_to_switch = own_args.n_epochs_to_switch
    else:
        dendrite_args.n_epochs_to_switch = dendrite_args.patience
    return model_args, data_args, training_args, dendrite_args, own_args.final_model


def optimizer_name(training_args: TrainingArguments) -> str:
    return str(getattr(training_args.optim, "value", training_args.optim))


def check_supported(training_args: TrainingArguments) -> None:
    """Refuse settings this loop does not reproduce, rather than silently train differently."""
    problems = []
    if training_args.gradient_accumulation_steps != 1:
        problems.append("gradient_accumulation_steps must be 1")
    if training_args.max_steps > 0:
        problems.append("max_steps is not supported: the budget is num_train_epochs")
    if not float(training_args.num_train_epochs).is_integer() or training_args.num_train_epochs < 1:
        problems.append("num_train_epochs must be a whole number of epochs")
    if optimizer_name(training_args) not in SUPPORTED_OPTIMIZERS:
        problems.append(f"optim must be one of {SUPPORTED_OPTIMIZERS}")
    if training_args.metric_for_best_model.removeprefix("eval_") not in METRICS:
        problems.append(f"metric_for_best_model must be one of {METRICS}")
    if problems:
        raise ValueError("benchmark_perforatedai.py: " + "; ".join(problems))


# ---------------------------------------------------------------------- data and evaluation


def tokenized_data(raw: Any, tokenizer: Any, max_seq_length: int) -> Any:
    """train.py's tokenization: truncate to max_seq_length, pad per batch in the collator."""

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        return tokenizer(batch["text"], truncation=True, max_length=max_seq_length)

    return raw.map(tokenize, batched=True, remove_columns=["id", "text"]).rename_column("label", "labels")


def data_loader(dataset: Any, collator: Any, training_args: TrainingArguments, for_training: bool) -> DataLoader:
    """A loader as the Trainer builds it: shuffled with a seeded generator for training only."""
    generator = None
    if for_training:
        generator = torch.Generator()
        seed = training_args.data_seed if training_args.data_seed is not None else training_args.seed
        generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=training_args.per_device_train_batch_size
        if for_training
        else training_args.per_device_eval_batch_size,
        shuffle=for_training,
        generator=generator,
        collate_fn=collator,
        drop_last=training_args.dataloader_drop_last if for_training else False,
        num_workers=training_args.dataloader_num_workers,
        pin_memory=training_args.dataloader_pin_memory,
    )


@torch.no_grad()
def predict(model: nn.Module, loader: DataLoader) -> tuple[np.ndarray, np.ndarray]:
    """The model's logits and the labels over one split, in the loader's order."""
    model.eval()
    logits, labels = [], []
    for batch in loader:
        labels.append(batch.pop("labels"))
        logits.append(model(**batch).logits.float())
    return torch.cat(logits).numpy(), torch.cat(labels).numpy()


def evaluate(model: nn.Module, loader: DataLoader, compute_metrics: Any) -> dict[str, float]:
    """The METRICS of the model's argmax predictions on one split."""
    return compute_metrics(predict(model, loader))


# ---------------------------------------------------------------------- perforatedai setup


def refuse_debugger(*_args: Any, **_kwargs: Any) -> NoReturn:
    raise RuntimeError("perforatedai wanted to stop in the debugger (pdb.set_trace); its message is printed above")


@contextlib.contextmanager
def perforatedai_guard() -> Iterator[None]:
    """Turn perforatedai's ways of stopping into errors.

    On a module whose output shape does not match `output_dimensions` it calls `sys.exit(0)`,
    which would end the run with status 0, as if it had succeeded; elsewhere it opens the debugger,
    which waits forever for a terminal. Both become a non-zero exit with a message.
    """
    original = pdb.set_trace
    pdb.set_trace = refuse_debugger
    try:
        yield
    except SystemExit as stop:
        raise SystemExit(
            f"error: perforatedai ended the run with sys.exit({stop.code!r}) (its message is printed above); "
            "no results were written"
        ) from stop
    finally:
        pdb.set_trace = original


@contextlib.contextmanager
def working_folder(output_dir: Path) -> Iterator[str]:
    """Run inside output_dir with an empty perforatedai folder, and drop its checkpoints after.

    perforatedai resolves its save_name against the current directory and reloads checkpoints
    and settings it finds there, so every run starts from an empty folder.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(output_dir / WORK_FOLDER, ignore_errors=True)
    previous = Path.cwd()
    os.chdir(output_dir)
    try:
        yield WORK_FOLDER
    finally:
        os.chdir(previous)
        for checkpoint in (output_dir / WORK_FOLDER).glob("*.pt"):
            checkpoint.unlink()


@torch.no_grad()
def output_ranks(model: nn.Module, batch: dict[str, torch.Tensor]) -> dict[str, int]:
    """Number of dimensions of every module's tensor output, from one forward pass.

    perforatedai needs each wrapped layer's output layout ([batch, seq, hidden] -> [-1, -1, 0],
    [batch, hidden] -> [-1, 0]); measuring it avoids guessing from module names.
    """
    ranks: dict[str, int] = {}

    def record(name: str) -> Any:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:  # returning a value would replace the output
            if torch.is_tensor(output):
                ranks.setdefault(name, output.dim())

        return hook

    hooks = [module.register_forward_hook(record(name)) for name, module in model.named_modules()]
    was_training = model.training
    model.eval()
    try:
        model(**{k: v for k, v in batch.items() if k != "labels"})
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return ranks


def configure_perforatedai(n_epochs_to_switch: int, max_dendrites: int, maximizing: bool) -> dict[str, Any]:
    """Set perforatedai's globals so it runs without prompts; returns what was set, for results.json."""
    settings = {
        "configuration_confirmed": True,  # else an interactive screen, or an error without a terminal
        "testing_dendrite_capacity": False,  # else a quick capacity test that stops after 3 dendrites
        "output_dimensions": [-1, -1, 0],  # [batch, seq, hidden]; 2-D outputs are fixed per module
        "module_names_to_track": ["Embedding", "LayerNorm"],
        "unwrapped_modules_confirmed": True,  # else it stops in the debugger over the tracked modules
        "n_epochs_to_switch": n_epochs_to_switch,
        "max_dendrites": max_dendrites,
        "maximizing_score": maximizing,
        "dashboard_events_enabled": False,  # its default; it would post events to localhost:3002
    }
    for name, value in settings.items():
        getattr(GPA.pc, f"set_{name}")(value)
    return settings


def perforate(
    model: nn.Module, save_name: str, ranks: dict[str, int], maximizing: bool
) -> tuple[nn.Module, dict[str, list[int]]]:
    """Wrap the model's layers, then give every wrapped layer its real output layout.

    Returns the model and the layers whose layout differs from the global `output_dimensions`
    (for MiniLM: the pooler and the classifier, [-1, 0]).
    """
    model = UPA.perforate_model(model, save_name=save_name, maximizing_score=maximizing)
    overrides = {}
    for name, module in wrapped_layers(model).items():
        if name not in ranks:
            raise RuntimeError(f"perforatedai wrapped {name}, which returned no tensor in the probe forward pass")
        dimensions = [-1] * (ranks[name] - 1) + [0]
        if module.this_output_dimensions.tolist() != dimensions:
            module.set_this_output_dimensions(dimensions)
            overrides[name] = dimensions
    return model, overrides


def wrapped_layers(model: nn.Module) -> dict[str, PA.PAINeuronModule]:
    return {name: module for name, module in model.named_modules() if isinstance(module, PA.PAINeuronModule)}


# ---------------------------------------------------------------------- optimizer and schedule


def optimizer_arguments(model: nn.Module, training_args: TrainingArguments) -> dict[str, Any]:
    """The Trainer's AdamW: its weight-decay groups (no decay on biases and norms), betas, eps."""
    # Trainer's own rule, so the groups match it exactly; the method does not use `self`
    decay_names = set(Trainer.get_decay_parameter_names(None, model))
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    arguments: dict[str, Any] = {
        "params": [
            {"params": [p for n, p in named if n in decay_names], "weight_decay": training_args.weight_decay},
            {"params": [p for n, p in named if n not in decay_names], "weight_decay": 0.0},
        ],
        "lr": training_args.learning_rate,
        "betas": (training_args.adam_beta1, training_args.adam_beta2),
        "eps": training_args.adam_epsilon,
    }
    if optimizer_name(training_args) == "adamw_torch_fused":
        arguments["fused"] = True
    return arguments


def build_optimizer(model: nn.Module, training_args: TrainingArguments) -> torch.optim.Optimizer:
    """A fresh AdamW through perforatedai's tracker, as it asks after every restructure.

    No scheduler is registered with the tracker (`set_scheduler`): it treats its scheduler as
    per-epoch, stepping it once more per validation score and fast-forwarding a rebuilt one by
    epochs, and after each dendrite set it runs a learning-rate search on it that can reload
    checkpoints. With the Trainer's per-step decay that restarts the decay after every restructure
    and reloads models mid-cycle; the schedule is kept here instead (see build_scheduler).
    """
    GPA.pai_tracker.set_optimizer(torch.optim.AdamW)  # the class: setup_optimizer instantiates it
    optimizer, _ = GPA.pai_tracker.setup_optimizer(model, optimizer_arguments(model, training_args))
    return optimizer


def build_scheduler(
    optimizer: torch.optim.Optimizer, training_args: TrainingArguments, total_steps: int, global_step: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """The Trainer's schedule (linear decay to 0 by default) over the whole budget, at global_step.

    A rebuilt optimizer continues the schedule where the run is, as the Trainer's would.
    """
    scheduler = transformers.get_scheduler(
        training_args.lr_scheduler_type,
        optimizer,
        num_warmup_steps=training_args.get_warmup_steps(total_steps),
        num_training_steps=total_steps,
        scheduler_specific_kwargs=training_args.lr_scheduler_kwargs or {},
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*optimizer.step")
        for _ in range(global_step):
            scheduler.step()
    return scheduler


def train_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    max_grad_norm: float,
) -> int:
    """One pass over the training data, a Trainer step per batch; returns the number of steps."""
    model.train()
    steps = 0
    for batch in loader:
        loss = model(**batch).loss
        loss.backward()
        if max_grad_norm > 0:
            nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        scheduler.step()
        model.zero_grad(set_to_none=True)
        steps += 1
    return steps


# ---------------------------------------------------------------------- accounting


def tracker_state() -> tuple[str, int]:
    """perforatedai's mode ('n' neuron training, 'p' dendrite training) and dendrite sets added."""
    member_vars = GPA.pai_tracker.member_vars
    return member_vars["mode"], int(member_vars["num_dendrites_added"])


def phase_of(mode: str, dendrites: int) -> str:
    """'dendrite' for an epoch that trained dendrites, 'neuron' for one without any.

    The open-source library switches 'n' -> 'p' -> 'n' within one call (its dendrites are trained
    by gradient descent together with the neurons), so its mode reads 'n' in every epoch; an epoch
    with dendrites in the model is what costs dendrite time.
    """
    return "dendrite" if mode == "p" or dendrites > 0 else "neuron"


def numel(parameters: Iterator[nn.Parameter] | list[nn.Parameter], seen: set[int]) -> int:
    """Elements of the parameters not counted before (tied parameters count once)."""
    total = 0
    for parameter in parameters:
        if id(parameter) not in seen:
            seen.add(id(parameter))
            total += parameter.numel()
    return total


def parameter_counts(model: nn.Module, base: int) -> dict[str, int]:
    """What the converted model holds, split into what inference uses and what it does not.

    Per wrapped layer, perforatedai keeps an untrained deep copy of the layer as the template
    for new dendrites (`dendrite_module.parent_module`) and, after k dendrite sets, the k-1 earlier
    dendrite-to-neuron weight matrices (`dendrites_to_top[:-1]`; only the last is used).
    `total` = base + dendrites: the parameters a forward pass uses.
    """
    template, stale, candidates, dendrites = set(), set(), set(), set()
    counts = {"unused_template": 0, "unused_stale": 0, "candidates": 0, "dendrites": 0}
    for layer in wrapped_layers(model).values():
        dendrite_module = layer.dendrite_module
        counts["unused_template"] += numel(dendrite_module.parent_module.parameters(), template)
        counts["unused_stale"] += numel(list(layer.dendrites_to_top)[:-1], stale)
        for name in ("candidate_module", "best_candidate_module", "dendrites_to_candidates"):
            if hasattr(dendrite_module, name):
                counts["candidates"] += numel(getattr(dendrite_module, name).parameters(), candidates)
        used = [*dendrite_module.layers.parameters(), *dendrite_module.dendrites_to_dendrites.parameters()]
        counts["dendrites"] += numel(used + list(layer.dendrites_to_top)[-1:], dendrites)
    stored = numel(model.parameters(), set())
    total = stored - counts["unused_template"] - counts["unused_stale"] - counts["candidates"]
    if total - counts["dendrites"] != base:
        logger.warning("parameter accounting: %d used - %d dendrites != %d base", total, counts["dendrites"], base)
    return {
        "base": base,
        "dendrites": counts["dendrites"],
        "total": total,
        "unused_template": counts["unused_template"],
        "unused_stale": counts["unused_stale"],
        "candidates": counts["candidates"],
        "stored": stored,
        "perforatedai_count_params": int(UPA.count_params(model)),
    }


def dendrites_per_layer(model: nn.Module) -> dict[str, int]:
    return {name: int(layer.dendrite_module.num_dendrites) for name, layer in wrapped_layers(model).items()}


def versions() -> dict[str, str]:
    return train.versions("perforatedai")


# ---------------------------------------------------------------------- the run


@dataclasses.dataclass
class Run:
    """What the training loop leaves: the model and how it got there."""

    model: nn.Module
    epoch_log: list[dict[str, Any]]
    seconds: float
    training_complete: bool
    final_model: str


def run_training(
    model: nn.Module,
    loaders: dict[str, DataLoader],
    training_args: TrainingArguments,
    compute_metrics: Any,
    final_model: str,
    save_name: str,
) -> Run:
    """perforatedai's documented loop, with the Trainer's optimizer, schedule and epoch budget.

    After each epoch: evaluate on validation, hand the score to `add_validation_score`, which may
    restructure the model (load its best checkpoint and add a dendrite set: the optimizer and
    schedule are rebuilt) or report training complete (it has then restored its best model).
    """
    metric = training_args.metric_for_best_model.removeprefix("eval_")
    epochs = int(training_args.num_train_epochs)
    total_steps = epochs * len(loaders["train"])
    optimizer = build_optimizer(model, training_args)
    scheduler = build_scheduler(optimizer, training_args, total_steps, 0)
    global_step, complete, epoch_log = 0, False, []
    start = time.time()
    for epoch in range(1, epochs + 1):
        mode, dendrites = tracker_state()
        began = time.time()
        global_step += train_epoch(model, loaders["train"], optimizer, scheduler, training_args.max_grad_norm)
        trained = time.time()
        validation = evaluate(model, loaders["validation"], compute_metrics)
        evaluated = time.time()
        model, restructured, complete = GPA.pai_tracker.add_validation_score(validation[metric], model)
        epoch_log.append(
            {
                "epoch": epoch,
                "seconds": trained - began,
                "phase": phase_of(mode, dendrites),
                "validation": validation,
                "dendrites": dendrites,
                "perforatedai_mode": mode,
                "evaluation_seconds": evaluated - trained,
                "perforatedai_seconds": time.time() - evaluated,
                "restructured": bool(restructured),
                "dendrites_after": tracker_state()[1],
                "learning_rate": scheduler.get_last_lr()[0],
            }
        )
        logger.info("epoch %d: %s", epoch, json.dumps(epoch_log[-1]))
        if complete:
            break
        if restructured:
            optimizer = build_optimizer(model, training_args)
            scheduler = build_scheduler(optimizer, training_args, total_steps, global_step)
    seconds = time.time() - start
    model, source = choose_final_model(model, complete, final_model, save_name)
    return Run(model, epoch_log, seconds, complete, source)


def choose_final_model(model: nn.Module, complete: bool, final_model: str, save_name: str) -> tuple[nn.Module, str]:
    """The model to evaluate, and where it comes from.

    perforatedai restores its best checkpoint itself only when it reports training complete;
    when the epoch budget runs out first, `--final_model best` loads that checkpoint the same way.
    """
    if complete:
        return model, "perforatedai best_model, restored by perforatedai when it reported training complete"
    if final_model == "best":
        model = UPA.load_system(model, save_name, "best_model", switch_call=True)
        return model, "perforatedai best_model, restored by this script at the end of the epoch budget"
    return model, "last epoch's weights (epoch budget used up before perforatedai reported training complete)"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    model_args, data_args, training_args, dendrite_args, final_model = parse_arguments(
        sys.argv[1:] if argv is None else argv
    )
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity_warning()
    output_dir = Path(training_args.output_dir).resolve()

    raw = train.load_data(data_args)
    model_path, overrides = resolve_model(model_args.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    # before loading, so the new classifier head depends on --seed (torch seeds itself at random per process)
    transformers.set_seed(training_args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=num_labels(raw), **overrides)
    encoded = tokenized_data(raw, tokenizer, model_args.max_seq_length)
    collator = DataCollatorWithPadding(tokenizer)
    loaders = {
        split: data_loader(encoded[split], collator, training_args, for_training=split == "train")
        for split in ("train", "validation", "test")
        if split in encoded
    }
    compute_metrics = build_compute_metrics(METRICS)
    base = numel(model.parameters(), set())
    probe = collator([encoded["validation"][i] for i in range(min(2, len(encoded["validation"])))])
    ranks = output_ranks(model, probe)

    with perforatedai_guard(), working_folder(output_dir) as save_name:
        maximizing = bool(training_args.greater_is_better)
        settings = configure_perforatedai(dendrite_args.n_epochs_to_switch, dendrite_args.max_dendrites, maximizing)
        model, settings["output_dimensions_per_layer"] = perforate(model, save_name, ranks, maximizing)
        run = run_training(model, loaders, training_args, compute_metrics, final_model, save_name)
        best_score = float(GPA.pai_tracker.member_vars["global_best_validation_score"])
    model = run.model
    validation = evaluate(model, loaders["validation"], compute_metrics)
    test, test_outcome = {}, {}
    if "test" in loaders:  # the predictions pair this run example by example with the others (paired intervals)
        logits, labels = predict(model, loaders["test"])
        test = compute_metrics((logits, labels))
        test_outcome = {"test_predictions": logits.argmax(-1).tolist(), "test_labels": labels.tolist()}
    results = {
        "validation": validation,
        "test": test,
        **test_outcome,
        "parameters": parameter_counts(model, base),
        "dendrites_per_layer": dendrites_per_layer(model),
        "num_dendrites": tracker_state()[1],
        "epochs": float(len(run.epoch_log)),
        "seconds": run.seconds,
        "epoch_log": run.epoch_log,
        "training_complete": run.training_complete,
        "final_model": {"source": run.final_model, "perforatedai_best_validation_score": best_score},
        "config": {
            "model": dataclasses.asdict(model_args),
            "data": dataclasses.asdict(data_args),
            "perforatedai": {**settings, "save_name": f"{output_dir / save_name}", "final_model": final_model},
            "training": training_args.to_dict(),
        },
        "versions": versions(),
    }
    (output_dir / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    print_table(results)
    return results


def print_table(results: dict[str, Any]) -> None:
    """train.py's table, plus what is particular to perforatedai."""
    train.print_table(results)
    by_phase: dict[str, list[float]] = {}
    for entry in results["epoch_log"]:
        by_phase.setdefault(entry["phase"], []).append(entry["seconds"])
    per_phase = ", ".join(f"{phase} {sum(s) / len(s):.1f} s ({len(s)})" for phase, s in by_phase.items())
    print(f"training seconds per epoch: {per_phase}")
    print(
        f"dendrite sets: {results['num_dendrites']}   unused template parameters: {results['parameters']['unused_template']:,}"
    )
    print(f"final model: {results['final_model']['source']}")


if __name__ == "__main__":
    main()
