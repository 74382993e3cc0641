"""The known-positive control: where a dendrite must help, does the candidate learner make it help?

A student too small for its teacher, trained to its plateau on abundant generated data, has a
residual error that is systematic, not memorised: a dendrite that learns what the error holds
must lower the validation loss. Two tasks:

- `regression`: an 8 -> 4 -> 1 tanh student regresses a random 8 -> 64 -> 1 tanh teacher (MSE);
- `classification`: a 16 -> 6 -> 4 tanh student learns the argmax of a random 16 -> 64 -> 4
  tanh teacher (cross-entropy).

Per seed the student trains to its plateau, then every arm continues from that same model with a
fresh Adam for the same number of epochs:

- `no_dendrite`: no change (the restart alone);
- `pb`: one PB dendrite phase with the library's defaults (`run_dendrite_phase`), then growth;
- `untrained_candidates`: the same with `candidate_epochs=0` (the best of random candidates);
- `shuffled_errors`: candidates fitted to error rows permuted across the cache;
- `pb_streaming`: the streaming learner at its former defaults (lr 1e-3, one epoch, batches of 256);
- `pb_lowrank`: `pb` with low-rank dendrite sets of rank 1 (`dendrite_rank=1`: one shared input
  direction per set, about a third to a half of a full set's parameters on layers this narrow);
- `gd`: a GD dendrite (random, trained jointly);
- `wider_plain`: a plain student of about the dendrite model's parameter count, trained from scratch
  for all the epochs.

`python -m benchmarks.control` writes one file per task/arm/seed under
`benchmarks/results/runs/control/` (skipped when present), then `benchmarks/results/control.json`
and `control.png`.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import hf_dendrites as hd
from hf_dendrites.dendrite_phase import run_dendrite_phase
from hf_dendrites.optimization import candidate_optimizer

from .common import RESULTS, RUNS, code_commit, git_commit, machine

CONTROL_RUNS = RUNS / "control"
SUMMARY = RESULTS / "control.json"
PLOT = RESULTS / "control.png"
ARMS = (
    "no_dendrite",
    "pb",
    "untrained_candidates",
    "shuffled_errors",
    "pb_streaming",
    "pb_lowrank",
    "gd",
    "wider_plain",
)
CANDIDATE_ARMS = ("pb", "untrained_candidates", "shuffled_errors", "pb_streaming", "pb_lowrank")
LOW_RANK = 1
SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class ControlTask:
    """A teacher, a student too narrow for it, and the training schedule."""

    name: str
    inputs: int
    outputs: int
    student_width: int
    teacher_width: int = 64
    train_rows: int = 50_000
    validation_rows: int = 10_000
    plateau_epochs: int = 40
    epochs_after: int = 30
    batch_size: int = 256
    learning_rate: float = 5e-3

    @property
    def classification(self) -> bool:
        return self.outputs > 1


TASKS = {
    "regression": ControlTask("regression", inputs=8, outputs=1, student_width=4),
    "classification": ControlTask("classification", inputs=16, outputs=4, student_width=6),
}


def make_data(task: ControlTask, seed: int) -> dict[str, torch.Tensor]:
    """Gaussian inputs and the targets of a random tanh teacher (regression: standardised output)."""
    generator = torch.Generator().manual_seed(10_000 + seed)
    rows = task.train_rows + task.validation_rows
    x = torch.randn(rows, task.inputs, generator=generator)
    w1 = torch.randn(task.inputs, task.teacher_width, generator=generator) * (2.0 / math.sqrt(task.inputs))
    b1 = torch.randn(task.teacher_width, generator=generator) * 0.5
    w2 = torch.randn(task.teacher_width, task.outputs, generator=generator) / math.sqrt(task.teacher_width)
    out = torch.tanh(x @ w1 + b1) @ w2
    y = out.argmax(dim=1) if task.classification else (out - out.mean()) / out.std()
    n = task.train_rows
    return {"x_train": x[:n], "y_train": y[:n], "x_val": x[n:], "y_val": y[n:]}


def student(task: ControlTask, width: int, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(task.inputs, width), nn.Tanh(), nn.Linear(width, task.outputs))


def loss_of(task: ControlTask, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return F.cross_entropy(out, y) if task.classification else F.mse_loss(out, y)


@torch.no_grad()
def evaluate(task: ControlTask, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    model.eval()
    out = model(x)
    metrics = {"loss": float(loss_of(task, model, x, y))}
    if task.classification:
        metrics["accuracy"] = float((out.argmax(dim=1) == y).float().mean())
    model.train()
    return metrics


def batches(task: ControlTask, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None):
    order = torch.arange(len(x)) if generator is None else torch.randperm(len(x), generator=generator)
    for start in range(0, len(x), task.batch_size):
        index = order[start : start + task.batch_size]
        yield {"x": x[index], "y": y[index]}


def train(
    task: ControlTask,
    model: nn.Module,
    data: dict[str, torch.Tensor],
    epochs: int,
    seed: int,
    arguments: hd.DendriteTrainingArguments | None = None,
) -> None:
    """Adam over everything trainable; installed dendrites at their own rate (as the trainer does)."""
    dendrite = {id(p) for p in hd.model.dendrite_parameters(model)}
    base = [p for p in model.parameters() if p.requires_grad and id(p) not in dendrite]
    groups = [{"params": base, "lr": task.learning_rate}]
    config = getattr(model, "dendrite_config", None)
    extra = [p for p in model.parameters() if p.requires_grad and id(p) in dendrite]
    if extra:
        rate = (arguments or hd.DendriteTrainingArguments()).resolved_dendrite_learning_rate(config.mode)
        groups.append({"params": extra, "lr": rate})
    optimizer = torch.optim.Adam(groups)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for batch in batches(task, data["x_train"], data["y_train"], generator):
            loss = loss_of(task, model, batch["x"], batch["y"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


def streaming_phase(
    task: ControlTask,
    model: nn.Module,
    data: dict[str, torch.Tensor],
    seed: int,
    arguments: hd.DendriteTrainingArguments,
) -> float:
    """The streaming learner at its former defaults: one epoch of per-batch correlation steps."""
    hd.model.start_candidates(model, generator=torch.Generator().manual_seed(seed), arguments=arguments)
    optimizer = candidate_optimizer(model, arguments)
    generator = torch.Generator().manual_seed(seed)
    for batch in batches(task, data["x_train"], data["y_train"], generator):
        loss = loss_of(task, model, batch["x"], batch["y"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return hd.model.mean_candidate_score(model)


# What each arm changes in the candidate learner's defaults.
ARM_TRAINING = {
    "untrained_candidates": {"candidate_epochs": 0},
    "shuffled_errors": {"candidate_shuffled_errors": True},
    "pb_streaming": {"candidate_learner": "streaming", "candidate_learning_rate": 1e-3},
}


def dendrite_setup(arm: str) -> tuple[hd.DendriteConfig, hd.DendriteTrainingArguments]:
    """The arm's model config (which layers, mode, rank) and its candidate-training settings."""
    config = hd.DendriteConfig(
        target_modules=["0", "2"],
        mode="gd" if arm == "gd" else "pb",
        dendrite_rank=LOW_RANK if arm == "pb_lowrank" else None,
    )
    return config, hd.DendriteTrainingArguments(**ARM_TRAINING.get(arm, {}))


def exact_error_correlation(
    task: ControlTask, model: nn.Module, data: dict[str, torch.Tensor]
) -> dict[str, float] | None:
    """The kept dendrites' |correlation| with the exact error over all training rows (before the
    neuron phase trains on): the same yardstick for every learner."""
    layers = hd.dendrite_layers(model)
    if not layers or hd.num_dendrites(model) == 0:
        return None
    train = list(batches(task, data["x_train"], data["y_train"]))
    rows = hd.candidate_cache.collect_candidate_rows(
        model,
        train,
        lambda b: loss_of(task, model, b["x"], b["y"]),
        max_rows=len(data["x_train"]),
        generator=torch.Generator().manual_seed(0),
    )
    result = {}
    for name, layer in layers.items():
        with torch.no_grad():
            d = layer.dendrite_outputs(rows[name].inputs)[:, -1, :].unsqueeze(1)  # [rows, 1, out]
        stats = hd.correlation.CorrelationStats(1, layer.out_features)
        stats.add_moments(hd.correlation.BatchMoments.of(d, rows[name].errors))
        result[name] = float(stats.correlation().abs().mean())
    return result


def run_arm(task: ControlTask, arm: str, seed: int, data: dict[str, torch.Tensor], plateau: nn.Module) -> dict:
    """One arm from the plateau model (or, for `wider_plain`, from scratch)."""
    started = time.perf_counter()
    record: dict[str, Any] = {"task": task.name, "arm": arm, "seed": seed}
    if arm == "wider_plain":
        target = plateau_parameters(task, plateau)
        width = min(range(1, 64), key=lambda w: abs(parameters(student(task, w, 0)) - target))
        model = student(task, width, seed)
        train(task, model, data, task.plateau_epochs + task.epochs_after, seed)
        record["width"] = width
    else:
        model = copy.deepcopy(plateau)
        arguments = None
        if arm != "no_dendrite":
            config, arguments = dendrite_setup(arm)
            hd.add_dendrites(model, config)
            if arm == "gd":
                hd.grow(model, generator=torch.Generator().manual_seed(seed))
            elif arm == "pb_streaming":
                record["candidate_correlation"] = streaming_phase(task, model, data, seed, arguments)
                record["chance_correlation"] = None
                hd.grow(model)
            else:
                phase_batches = list(batches(task, data["x_train"], data["y_train"]))
                report = run_dendrite_phase(
                    model,
                    phase_batches,
                    lambda b: loss_of(task, model, b["x"], b["y"]),
                    generator=torch.Generator().manual_seed(seed),
                    arguments=arguments,
                )
                record["candidate_correlation"] = report.score
                record["chance_correlation"] = report.chance_score
                record["phase"] = report.to_dict()
                hd.grow(model)
            record["exact_error_correlation"] = exact_error_correlation(task, model, data)
        train(task, model, data, task.epochs_after, seed + 1, arguments)
    validation = evaluate(task, model, data["x_val"], data["y_val"])
    record.update(
        val_loss=validation["loss"],
        val_accuracy=validation.get("accuracy"),
        train_loss=evaluate(task, model, data["x_train"], data["y_train"])["loss"],
        parameters=parameters(model),
        seconds=time.perf_counter() - started,
    )
    return record


def parameters(model: nn.Module) -> int:
    return (
        hd.parameter_report(model)["total"] if hd.dendrite_layers(model) else sum(p.numel() for p in model.parameters())
    )


def plateau_parameters(task: ControlTask, plateau: nn.Module) -> int:
    """Parameters of the plateau student with one full PB dendrite set on both layers."""
    model = copy.deepcopy(plateau)
    hd.add_dendrites(model, dendrite_setup("gd")[0])
    hd.grow(model)
    return parameters(model)


def plateau_model(task: ControlTask, seed: int, data: dict[str, torch.Tensor]) -> tuple[nn.Module, dict[str, float]]:
    model = student(task, task.student_width, seed)
    train(task, model, data, task.plateau_epochs, seed)
    return model, {
        "val_loss": evaluate(task, model, data["x_val"], data["y_val"])["loss"],
        "train_loss": evaluate(task, model, data["x_train"], data["y_train"])["loss"],
    }


def run_file(task: str, arm: str, seed: int, root: Path = CONTROL_RUNS) -> Path:
    return root / task / arm / f"seed{seed}.json"


def run_study(
    tasks: dict[str, ControlTask],
    arms: tuple[str, ...] = ARMS,
    seeds: tuple[int, ...] = SEEDS,
    root: Path = CONTROL_RUNS,
    on_result: Callable[[Path], None] | None = None,
) -> None:
    """Every missing task/arm/seed run, one file each."""
    for task in tasks.values():
        for seed in seeds:
            missing = [arm for arm in arms if not run_file(task.name, arm, seed, root).exists()]
            if not missing:
                continue
            torch.set_num_threads(min(2, torch.get_num_threads()))
            data = make_data(task, seed)
            plateau, plateau_metrics = plateau_model(task, seed, data)
            for arm in missing:
                record = run_arm(task, arm, seed, data, plateau)
                record["plateau"] = plateau_metrics
                record["benchmark"] = {"machine": machine(), "commit": code_commit(), "torch": torch.__version__}
                path = run_file(task.name, arm, seed, root)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(record, indent=2) + "\n")
                print(f"[control] {task.name} / {arm} / seed {seed}: val loss {record['val_loss']:.4f}", flush=True)
                if on_result is not None:
                    on_result(path)


def summarise(tasks: tuple[str, ...] = tuple(TASKS), root: Path = CONTROL_RUNS) -> dict[str, Any]:
    """`{"tasks": {task: {"arms": {arm: {...}}}}}` over whatever runs exist."""
    summary: dict[str, Any] = {"tasks": {}}
    for task in tasks:
        arms: dict[str, Any] = {}
        for arm in ARMS:
            files = sorted((root / task / arm).glob("seed*.json"))
            if not files:
                continue
            runs = [json.loads(path.read_text()) for path in files]
            entry: dict[str, Any] = {
                "seeds": [run["seed"] for run in runs],
                "val_loss_mean": statistics.mean(run["val_loss"] for run in runs),
                "val_loss_std": statistics.stdev([run["val_loss"] for run in runs]) if len(runs) > 1 else 0.0,
                "parameters": runs[0]["parameters"],
                "plateau_val_loss_mean": statistics.mean(run["plateau"]["val_loss"] for run in runs),
            }
            if runs[0].get("val_accuracy") is not None:
                entry["val_accuracy_mean"] = statistics.mean(run["val_accuracy"] for run in runs)
            if arm in CANDIDATE_ARMS:
                entry["candidate_correlation_mean"] = statistics.mean(run["candidate_correlation"] for run in runs)
                chance = [run["chance_correlation"] for run in runs if run.get("chance_correlation") is not None]
                entry["chance_correlation_mean"] = statistics.mean(chance) if chance else None
            exact = [run["exact_error_correlation"] for run in runs if run.get("exact_error_correlation")]
            if exact:
                entry["exact_error_correlation_per_layer"] = {
                    layer: statistics.mean(e[layer] for e in exact) for layer in exact[0]
                }
            arms[arm] = entry
        base = arms.get("no_dendrite", {}).get("val_loss_mean")
        plain = {run["seed"]: run["val_loss"] for run in _runs(root, task, "no_dendrite")}
        for arm, entry in arms.items():
            entry["val_loss_change"] = None if not base else entry["val_loss_mean"] / base - 1
            paired = [
                run["val_loss"] / plain[run["seed"]] - 1 for run in _runs(root, task, arm) if run["seed"] in plain
            ]
            entry["val_loss_change_range"] = [min(paired), max(paired)] if paired else None
        if arms:
            summary["tasks"][task] = {"arms": arms}
    return summary


def _runs(root: Path, task: str, arm: str) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted((root / task / arm).glob("seed*.json"))]


def plot(summary: dict[str, Any], path: Path = PLOT) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(summary["tasks"])
    figure, axes = plt.subplots(1, max(1, len(tasks)), figsize=(6 * max(1, len(tasks)), 4), squeeze=False)
    for axis, task in zip(axes[0], tasks, strict=False):
        arms = summary["tasks"][task]["arms"]
        names = list(arms)
        axis.bar(names, [arms[name]["val_loss_mean"] for name in names], color="tab:blue")
        axis.set_title(f"{task}: validation loss (mean of seeds)")
        axis.tick_params(axis="x", rotation=45)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def write_summary() -> dict[str, Any]:
    summary = summarise()
    summary["command"] = "python -m benchmarks.control"
    summary["benchmark"] = {"machine": machine(), "torch": torch.__version__, "python": sys.version.split()[0]}
    SUMMARY.write_text(json.dumps(summary, indent=2) + "\n")
    plot(summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="*", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--arms", nargs="*", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--seeds", nargs="*", type=int, default=list(SEEDS))
    parser.add_argument("--commit", action="store_true", help="commit each result file as it lands")
    args = parser.parse_args(argv)

    def landed(path: Path) -> None:
        if args.commit:
            parts = path.relative_to(CONTROL_RUNS).parts
            git_commit([path], f"Control: {parts[0]} / {parts[1]} / {parts[2].removesuffix('.json')}")

    run_study({name: TASKS[name] for name in args.tasks}, tuple(args.arms), tuple(args.seeds), on_result=landed)
    write_summary()


if __name__ == "__main__":
    main()
