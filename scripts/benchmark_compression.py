#!/usr/bin/env python
"""Compression benchmark: how small a model with dendrites can be and still match MiniLM-L2.

    python scripts/benchmark_compression.py                    # every model, variant and seed not yet run
    python scripts/benchmark_compression.py --tasks trec6 --models summing-e32 --seeds 0
    python scripts/benchmark_compression.py --aggregate-only   # rebuild compression.json and the plot

Every compressed model runs the task's compression recipe (`configs/<task>_summing.yaml` or
`configs/<task>_narrowed.yaml`) with the task benchmark's epoch budget, changing only the flags in
`MODELS`, once without dendrites (`--dendrites none`: early stopping, best model) and once with PB
dendrites. The reference is the plain MiniLM-L2 fine-tune of the task benchmark
(`benchmarks/results/runs/<task>/baseline/seed<k>.json`, run here when missing, same seeds).

One file per run, `benchmarks/results/runs/compression/<task>/<model>/<dendrites>/seed<k>.json`,
skipped when present; `benchmarks/results/compression.json` and `compression.png` (test accuracy
against parameters, one line per architecture and dendrite setting) summarise what has finished.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from benchmark import (
    BUDGET,
    RESULTS,
    RUNS,
    SEEDS,
    TASKS,
    execute,
    git_commit,
    machine,
    refresh_readme,
    run_one,
    train_command,
)
from benchmark import run_file as baseline_file
from matplotlib.figure import Figure

COMPRESSION_RUNS = RUNS / "compression"
SUMMARY = RESULTS / "compression.json"
PLOT = RESULTS / "compression.png"
# Parameter share of the reference the targets are stated at.
TARGET_SHARE = 0.11
TARGET_POINTS = (0.5, 1.0)
# These runs were made when installed PB dendrites trained at the trainer's learning rate; it is
# passed explicitly so they stay reproducible under today's default (1e-2).
RECIPE_LEARNING_RATE = {"summing": "2e-3", "narrowed": "5e-4"}
DENDRITE_SETTINGS = {"none": ["--dendrites", "none"], "pb": ["--dendrites", "pb", "--dendrite_learning_rate", "{lr}"]}
# name -> (recipe kind, flags on top of the recipe, dendrite settings to run). The narrowed models
# keep MiniLM-L2's 2 layers and its head size of 32: width 1/12 is one head (hidden 32). Each
# narrowed entry names its initialisation, so a change of the recipe's default leaves it as it ran.
MODELS: dict[str, tuple[str, list[str], tuple[str, ...]]] = {
    "summing-e16": ("summing", ["--embedding_size", "16"], ("none", "pb")),
    "summing-e32": ("summing", ["--embedding_size", "32"], ("none", "pb")),
    "summing-e64": ("summing", ["--embedding_size", "64"], ("none", "pb")),
    "narrowed-h32": ("narrowed", ["--width", "0.0834", "--narrow_init", "importance"], ("none", "pb")),
    "narrowed-h64": ("narrowed", ["--width", "0.167", "--narrow_init", "importance"], ("none", "pb")),
    "narrowed-h96": ("narrowed", ["--width", "0.25", "--narrow_init", "importance"], ("none", "pb")),
    # how to initialise a narrowed model: "importance" (above) against the first units and scratch
    "narrowed-h64-first": ("narrowed", ["--width", "0.167", "--narrow_init", "first"], ("none", "pb")),
    "narrowed-h64-scratch": ("narrowed", ["--width", "0.167", "--narrow_init", "scratch"], ("none",)),
    "narrowed-h32-first": ("narrowed", ["--width", "0.0834", "--narrow_init", "first"], ("none", "pb")),
}


def recipe(task: str, kind: str) -> str:
    return f"configs/{task}_{kind}.yaml"


def run_file(task: str, model: str, dendrites: str, seed: int) -> Path:
    return COMPRESSION_RUNS / task / model / dendrites / f"seed{seed}.json"


def run_model(task: str, model: str, dendrites: str, seed: int, scratch: Path) -> dict[str, Any]:
    kind, flags, _ = MODELS[model]
    output_dir = scratch / task / model / dendrites / f"seed{seed}"
    settings = [flag.format(lr=RECIPE_LEARNING_RATE[kind]) for flag in DENDRITE_SETTINGS[dendrites]]
    command = train_command(recipe(task, kind), seed, output_dir, [*flags, *settings])
    labels = {"task": task, "model": model, "dendrites": dendrites, "seed": seed, "flags": " ".join(flags)}
    return execute(command, output_dir, labels)


# ---------------------------------------------------------------------- aggregation


def _shape(results: dict[str, Any]) -> tuple[str, int, int]:
    """(architecture, width, depth): hidden or embedding size, and transformer layers (0 for summing)."""
    compression = results["compression"]
    reference_hidden = 384  # MiniLM's hidden size; narrowed widths are whole heads of 32
    if compression["architecture"] == "summing_network":
        return "summing_network", int(compression["embedding_size"]), 0
    hidden = 32 * round(reference_hidden * float(compression["width"]) / 32)
    return "narrowed", hidden, int(compression["depth"] or 2)


def _stats(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def reference_summary(task: str) -> dict[str, Any] | None:
    files = sorted((RUNS / task / "baseline").glob("seed*.json"))
    if not files:
        return None
    runs = [json.loads(path.read_text()) for path in files]
    accuracy, spread = _stats([run["test"]["accuracy"] for run in runs])
    return {
        "name": "MiniLM-L2 plain fine-tune",
        "test_accuracy_mean": accuracy,
        "test_accuracy_std": spread,
        "parameters": runs[0]["parameters"]["total"],
        "seeds": len(runs),
    }


def model_summaries(task: str, reference: dict[str, Any] | None) -> list[dict[str, Any]]:
    summaries = []
    for model, (_, flags, settings) in MODELS.items():
        for dendrites in settings:
            files = sorted((COMPRESSION_RUNS / task / model / dendrites).glob("seed*.json"))
            if not files:
                continue
            runs = [json.loads(path.read_text()) for path in files]
            architecture, width, depth = _shape(runs[0])
            accuracy, spread = _stats([run["test"]["accuracy"] for run in runs])
            kept = [max(run["dendrites_per_layer"].values(), default=0) for run in runs]
            parameters = round(statistics.mean(run["parameters"]["total"] for run in runs))
            summary = {
                "task": task,
                "name": model,
                "architecture": architecture,
                "width": width,
                "depth": depth,
                "narrow_init": runs[0]["compression"].get("narrow_init"),
                "flags": " ".join(flags),
                "dendrites": dendrites != "none",
                "parameters": parameters,
                "test_accuracy_mean": accuracy,
                "test_accuracy_std": spread,
                "seeds": len(runs),
                # dendrites per neuron in the final model: a PB run whose growth never beat the
                # best score ends as the model without dendrites
                "dendrites_kept_mean": statistics.mean(kept),
                "dendrites_kept_min": min(kept),
                "epochs_mean": statistics.mean(float(run["epochs"]) for run in runs),
                "seconds_mean": statistics.mean(float(run["seconds"]) for run in runs),
            }
            if reference is not None:
                summary["parameters_vs_reference"] = parameters / reference["parameters"]
                summary["test_accuracy_minus_reference"] = accuracy - reference["test_accuracy_mean"]
            summaries.append(summary)
    return summaries


def targets(models: list[dict[str, Any]], reference: dict[str, Any] | None) -> dict[str, Any] | None:
    """The issue's targets, read off the finished models (none met is an answer too)."""
    if reference is None:
        return None
    found: dict[str, Any] = {}
    for points in TARGET_POINTS:
        close = [m for m in models if m["test_accuracy_minus_reference"] >= -points / 100]
        smallest = min(close, key=lambda m: m["parameters"], default=None)
        smallest_with = min(
            (m for m in close if m["dendrites_kept_min"] >= 1), key=lambda m: m["parameters"], default=None
        )
        found[f"smallest_within_{points}_points"] = None if smallest is None else _brief(smallest)
        found[f"smallest_with_dendrites_within_{points}_points"] = (
            None if smallest_with is None else _brief(smallest_with)
        )
    met = [
        m
        for m in models
        if m["dendrites_kept_min"] >= 1
        and m["parameters_vs_reference"] <= TARGET_SHARE
        and m["test_accuracy_minus_reference"] >= -TARGET_POINTS[0] / 100
    ]
    found["target_met"] = bool(met)
    found["target"] = (
        f"dendrites kept in every seed, within {TARGET_POINTS[0]} points of the reference, "
        f"<= {TARGET_SHARE:.0%} of its parameters"
    )
    return found


def _brief(model: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "name",
        "dendrites",
        "dendrites_kept_mean",
        "parameters",
        "parameters_vs_reference",
        "test_accuracy_mean",
        "seeds",
    )
    return {key: model[key] for key in keys}


def aggregate(command: str) -> dict[str, Any] | None:
    references = {task: reference_summary(task) for task in TASKS}
    models = [m for task in TASKS for m in model_summaries(task, references[task])]
    if not models:
        return None
    files = sorted(COMPRESSION_RUNS.glob("*/*/*/seed*.json"))
    last = json.loads(files[-1].read_text()) if files else {}
    summary = {
        "command": command,
        "recipes": {kind: [recipe(task, kind) for task in TASKS] for kind in ("summing", "narrowed")},
        "budget": " ".join(BUDGET),
        "machine": last.get("benchmark", {}).get("machine", machine()),
        "versions": last.get("versions", {}),
        "reference": {task: ref for task, ref in references.items() if ref is not None},
        "models": models,
        "targets": {task: targets([m for m in models if m["task"] == task], references[task]) for task in TASKS},
    }
    SUMMARY.write_text(json.dumps(summary, indent=2) + "\n")
    plot(summary)
    return summary


def plot(summary: dict[str, Any]) -> None:
    """Test accuracy against parameters per task: one line per architecture x dendrite setting."""
    tasks = [task for task in TASKS if any(m["task"] == task for m in summary["models"])]
    figure = Figure(figsize=(6 * len(tasks), 4.5))
    axes = figure.subplots(1, len(tasks), squeeze=False)[0]
    families = {
        ("summing_network", None): ("o", "summing network"),
        ("narrowed", "importance"): ("s", "narrowed MiniLM-L2, importance init"),
        ("narrowed", "first"): ("^", "narrowed MiniLM-L2, first units"),
        ("narrowed", "scratch"): ("v", "narrowed MiniLM-L2, from scratch"),
    }
    palette = ["tab:gray", "tab:green", "tab:blue", "tab:red", "tab:cyan", "tab:orange", "tab:purple", "tab:brown"]
    for axis, task in zip(axes, tasks):
        for index, ((architecture, init), (marker, family)) in enumerate(families.items()):
            for dendrites in (False, True):
                points = sorted(
                    (m["parameters"], 100 * m["test_accuracy_mean"], 100 * m["test_accuracy_std"])
                    for m in summary["models"]
                    if m["task"] == task
                    and m["architecture"] == architecture
                    and m["narrow_init"] == init
                    and m["dendrites"] == dendrites
                )
                if points:
                    x, y, error = zip(*points)
                    label = f"{family}{' + PB dendrites' if dendrites else ''}"
                    linestyle = "-" if dendrites else "--"
                    color = palette[2 * index + dendrites]
                    axis.errorbar(
                        x, y, yerr=error, marker=marker, label=label, capsize=3, color=color, linestyle=linestyle
                    )
        reference = summary["reference"].get(task)
        if reference:
            accuracy = 100 * reference["test_accuracy_mean"]
            axis.errorbar(
                [reference["parameters"]],
                [accuracy],
                yerr=[100 * reference["test_accuracy_std"]],
                color="black",
                marker="*",
                markersize=12,
                label=f"{reference['name']} (n={reference['seeds']})",
            )
            axis.axhline(
                accuracy - TARGET_POINTS[0], color="black", linestyle=":", linewidth=1, label="reference - 0.5 points"
            )
            axis.axvline(
                TARGET_SHARE * reference["parameters"],
                color="black",
                linestyle="--",
                linewidth=1,
                label=f"{TARGET_SHARE:.0%} of the reference's parameters",
            )
        axis.set_xscale("log")
        axis.set_xlabel("parameters (log scale)")
        axis.set_ylabel("test accuracy (%)")
        axis.set_title(f"{task}: test accuracy (mean ± std over seeds) vs parameters", fontsize=10)
        axis.legend(fontsize=7, loc="best")
    figure.tight_layout()
    figure.savefig(PLOT, dpi=100)


# ---------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=list(TASKS))
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--no-reference", action="store_true", help="do not run missing reference fine-tunes")
    parser.add_argument("--scratch", default="runs/benchmark_compression", help="where runs write checkpoints")
    parser.add_argument("--aggregate-only", action="store_true")
    parser.add_argument("--commit", action="store_true", help="git-commit each run's result as it lands")
    args = parser.parse_args(argv)
    command = "python scripts/benchmark_compression.py"
    outputs = [SUMMARY, PLOT]
    # seed by seed, each task's small models (minutes) and then its reference fine-tune (longer),
    # so every finished seed is a complete comparison
    plan = []
    for seed in args.seeds:
        for task in args.tasks:
            plan += [(task, model, dendrites, seed) for model in args.models for dendrites in MODELS[model][2]]
            if not args.no_reference:
                plan.append((task, "reference", "none", seed))
    for task, model, dendrites, seed in plan if not args.aggregate_only else []:
        is_reference = model == "reference"
        path = baseline_file(task, "baseline", seed) if is_reference else run_file(task, model, dendrites, seed)
        if path.exists():
            continue
        print(f"[compression] {task} / {model} / {dendrites} / seed {seed} ...", flush=True)
        if is_reference:
            results = run_one(task, "baseline", seed, "", Path(args.scratch))
        else:
            results = run_model(task, model, dendrites, seed, Path(args.scratch))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2, default=str) + "\n")
        aggregate(command)
        accuracy = results["test"]["accuracy"]
        print(f"[compression] {task} / {model} / {dendrites} / seed {seed}: test accuracy {accuracy:.4f}", flush=True)
        if args.commit:
            extra = [RESULTS / f"{task}.json", RESULTS / f"{task}.png"] if is_reference else []
            if is_reference:
                from benchmark import aggregate as aggregate_task

                aggregate_task(task, "python scripts/benchmark.py")
            git_commit(
                [path, *outputs, *extra, refresh_readme()],
                f"Compression benchmark: {task} / {model} / {dendrites} / seed {seed}",
            )
    aggregate(command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
