#!/usr/bin/env python
"""Growth study: which dendrite policy turns a stalled fine-tune into a better model, and why.

    python -m benchmarks.growth                          # every variant and seed not yet run
    python -m benchmarks.growth --variants pb pb_dlr1e-3 --seeds 0
    python -m benchmarks.growth --aggregate-only

Every variant runs the task recipe with the task benchmark's budget and seeds, changing only the
flags listed in `VARIANTS`. A dendrite run is step for step the plain fine-tune of the same seed
until its first growth, so each variant is compared with the baseline run of the same seed from
`benchmarks/results/runs/<task>/baseline/` (paired differences). Besides accuracy it records
what explains the outcome: the candidates' correlation with the neuron error per layer, how far
the grown dendrites' output weights moved from zero, and whether a dendrite was kept.

One file per run, `benchmarks/results/runs/growth/<task>/<variant>/seed<k>.json`, skipped when
present; `benchmarks/results/growth.json` and `growth.png` summarise what has finished.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from benchmarks.common import (
    BUDGET,
    RESULTS,
    RUNS,
    TASKS,
    commits_of_runs,
    execute,
    git_commit,
    machine_of_runs,
    paired_difference,
    refresh_readme,
    test_correctness,
    train_command,
)
from benchmarks.growth_pairs import head_to_head
from benchmarks.growth_sources import difference_intervals, per_seed
from benchmarks.tasks import METHOD_FLAGS

GROWTH_RUNS = RUNS / "growth"
# Flags on top of the task recipe (which is PB on the family's default layers).
VARIANTS: dict[str, list[str]] = {
    # ran as plain `--dendrites pb` when PB's installed dendrites trained at the trainer's rate (5e-5)
    "pb_dlr5e-5": ["--dendrites", "pb", "--dendrite_learning_rate", "5e-5"],
    "pb_dlr1e-3": ["--dendrites", "pb", "--dendrite_learning_rate", "1e-3"],
    "pb_dlr1e-2": ["--dendrites", "pb", "--dendrite_learning_rate", "1e-2"],
    "pb_head_dlr1e-2": [
        "--dendrites",
        "pb",
        "--dendrite_learning_rate",
        "1e-2",
        "--target_modules",
        "pooler.dense",
        "classifier",
    ],
    "pb_last_dlr1e-2": ["--dendrites", "pb", "--dendrite_learning_rate", "1e-2", "--grow_from", "last"],
    "pb_early_dlr1e-2": [
        "--dendrites",
        "pb",
        "--dendrite_learning_rate",
        "1e-2",
        "--patience",
        "1",
        "--min_evals_per_phase",
        "1",
    ],
    # the default PB (dendrite rate 1e-2) with candidates on half the real tokens: a cheaper phase
    "pb_tokens0.5": ["--dendrites", "pb", "--candidate_token_fraction", "0.5"],
    "gd": ["--dendrites", "gd"],
    # ran as the task benchmark's plain `--dendrites gd` when GD dendrites trained at the trainer's rate
    "gd_dlr5e-5": ["--dendrites", "gd", "--dendrite_learning_rate", "5e-5"],
    "gd_dlr1e-3": ["--dendrites", "gd", "--dendrite_learning_rate", "1e-3"],
}


# Candidates trained only on a fifth of the training set that the neuron phases never see; the plain
# fine-tune on the remaining four fifths is its control (the cost of holding the data aside).
VARIANTS["pb_holdout0.2"] = ["--dendrites", "pb", "--candidate_holdout_fraction", "0.2"]
VARIANTS["baseline_holdout0.2"] = ["--dendrites", "none", "--candidate_holdout_fraction", "0.2"]
# The default PB with the dendrite phase's error from another learning rule (see error_signals.py).
for _signal in ("linear_backprop", "feedback_alignment", "forward_forward"):
    VARIANTS[f"pb_{_signal}"] = ["--dendrites", "pb", "--error_signal", _signal, "--error_alignment_steps", "4"]
# The default PB with the diagnostics on: the backprop reference for "candidates vs exact error"
# (the diagnostics take no random numbers, so training is the default PB's).
VARIANTS["pb_diagnostics"] = ["--dendrites", "pb", "--error_alignment_steps", "4"]
# The forward-only signals with candidates on [CLS] alone, the position the classifier reads (their
# per-example signal otherwise reaches every token): about a sentence length less candidate work.
for _signal in ("feedback_alignment", "forward_forward"):
    VARIANTS[f"pb_{_signal}_cls"] = [*VARIANTS[f"pb_{_signal}"], "--candidate_positions", "first"]
# The default PB with candidates that learn nothing (no candidate epoch leaves them at their random
# start; the best of them on the held-out selection rows is grown, and its output weights train as
# usual): what a dendrite is worth without the error it was meant to learn.
VARIANTS["pb_untrained_candidates"] = ["--dendrites", "pb", "--candidate_epochs", "0"]
# The same under the former streaming learner, the control of the task benchmark's `pb_streaming` runs
# (it has no epoch count: a learning rate of 1e-9 leaves its candidates where they started).
VARIANTS["pb_untrained_candidates_streaming"] = [
    "--dendrites",
    "pb",
    "--candidate_learner",
    "streaming",
    "--candidate_learning_rate",
    "1e-9",
]
# Early growth: the first dendrite phase right after epoch 2, before the validation peak, while the
# training errors are still systematic rather than memorised.
VARIANTS["pb_first_growth_epoch2"] = ["--dendrites", "pb", "--first_growth_epoch", "2"]
# The default PB and GD with the neuron phase's Adam state carried over growth instead of reset (the
# reference library resets it at every restructure, as the defaults here do). Spelled with the value,
# which the parser accepts whichever the default is (`--no_...` exists only while it is True).
VARIANTS["pb_keep_optimizer"] = ["--dendrites", "pb", "--reset_optimizer_on_growth", "false"]
VARIANTS["gd_keep_optimizer"] = ["--dendrites", "gd", "--reset_optimizer_on_growth", "false"]
# Every movie-review training sentence (8,454) instead of the recipe's first 3,000: more data, less
# memorisation; the plain fine-tune on the same set is the PB run's control. (TREC-6 has no cap.)
VARIANTS["baseline_all_train"] = ["--dendrites", "none", "--max_train_samples", "1000000"]
VARIANTS["pb_all_train"] = ["--dendrites", "pb", "--max_train_samples", "1000000"]
# Plain fine-tunes over the whole budget (no early stop): the control for the restarts below.
VARIANTS["baseline_full"] = ["--dendrites", "none", "--early_stopping_patience", "1000"]
# The plain fine-tune restarted (best model reloaded, fresh AdamW, schedule continued) where another
# run of the same seed changed structure: where the reference library restructured, and where our PB
# grew a dendrite (the task benchmark's run, and pb_all_train on every movie-review training sentence).
# What the restarts alone do, without dendrites. RESTART_FLAGS: the whole budget, restarting at the
# epochs that follow on the command line.
RESTART_FLAGS = ["--early_stopping_patience", "1000", "--restart_at_epochs"]
RESTARTS = ["--dendrites", "none", *RESTART_FLAGS]


def reference_restart_epochs(task: str, seed: int) -> list[int]:
    """Epochs after which the reference library restructured (from the task benchmark's run)."""
    results = json.loads((RUNS / task / "perforatedai" / f"seed{seed}.json").read_text())
    return [int(entry["epoch"]) for entry in results["epoch_log"] if entry.get("restructured")]


def pb_growth_epochs(task: str, seed: int, folder: Path | None = None) -> list[int]:
    """Epochs whose evaluation grew a dendrite in a PB run (by default the task benchmark's): there PB
    reloads its best model and starts its next neuron phase with a fresh optimizer."""
    results = json.loads(((folder or RUNS / task / "pb") / f"seed{seed}.json").read_text())
    epoch_at = {entry["step"]: entry["epoch"] for entry in results["evaluations"]}
    return [int(epoch_at[entry["step"]]) for entry in results["dendrite_history"] if entry["action"] == "grow"]


def pb_streaming_growth_epochs(task: str, seed: int) -> list[int]:
    """Epochs whose evaluation grew a dendrite in the task benchmark's PB run with the streaming learner."""
    return pb_growth_epochs(task, seed, RUNS / task / "pb_streaming")


def pb_all_train_growth_epochs(task: str, seed: int) -> list[int]:
    """Epochs whose evaluation grew a dendrite in the growth study's PB run on every training sentence."""
    return pb_growth_epochs(task, seed, GROWTH_RUNS / task / "pb_all_train")


# Each restart variant: where its epochs come from, how the table names them, and the flags before
# `--restart_at_epochs` (which takes the rest of the command line).
SEED_VARIANTS = {
    "baseline_restarts_pai": (reference_restart_epochs, "<the reference run's restructure epochs>", RESTARTS),
    "baseline_restarts_pb": (pb_growth_epochs, "<the epochs the benchmark's PB run grew at>", RESTARTS),
    "baseline_restarts_pb_streaming": (
        pb_streaming_growth_epochs,
        "<the epochs the benchmark's streaming PB run grew at>",
        RESTARTS,
    ),
    "baseline_all_train_restarts_pb": (
        pb_all_train_growth_epochs,
        "<the epochs pb_all_train grew at>",
        [*VARIANTS["baseline_all_train"], *RESTART_FLAGS],
    ),
}


def variant_flags(task: str, variant: str, seed: int) -> list[str]:
    if variant in SEED_VARIANTS:
        epochs_of, _, flags = SEED_VARIANTS[variant]
        return [*flags, *(str(epoch) for epoch in epochs_of(task, seed))]
    return VARIANTS[variant]


def run_file(task: str, variant: str, seed: int) -> Path:
    return GROWTH_RUNS / task / variant / f"seed{seed}.json"


# What a variant is paired with, when not the task benchmark's plain fine-tune: the restarts change
# nothing but the restarts against the plain run over the same whole budget; PB on every training
# sentence against the plain fine-tune on them.
CONTROLS = {
    "baseline_restarts_pai": "baseline_full",
    "baseline_restarts_pb": "baseline_full",
    "baseline_restarts_pb_streaming": "baseline_full",
    "pb_all_train": "baseline_all_train",
    "baseline_all_train_restarts_pb": "baseline_all_train",
}


def baseline_file(task: str, seed: int, variant: str | None = None) -> Path:
    """The same-seed run `variant` is paired with."""
    control = CONTROLS.get(variant or "")
    return run_file(task, control, seed) if control else RUNS / task / "baseline" / f"seed{seed}.json"


def run_variant(task: str, variant: str, seed: int, scratch: Path) -> dict[str, Any]:
    output_dir = scratch / task / variant / f"seed{seed}"
    command = train_command(TASKS[task], seed, output_dir, variant_flags(task, variant, seed))
    return execute(command, output_dir, {"task": task, "variant": variant, "seed": seed})


# ---------------------------------------------------------------------- aggregation


def plain_scores(history: list[dict[str, Any]]) -> list[float]:
    """The evaluations of the plain fine-tune: every one before the first dendrite phase or growth."""
    scores = []
    for entry in history:
        if entry["phase"] == "dendrite" or entry["action"] == "grow":
            break
        scores.append(entry["score"])
    return scores


def best_before_growth(results: dict[str, Any]) -> float | None:
    """The best validation score reached before the first dendrite phase or growth."""
    return max(plain_scores(results.get("dendrite_history", [])), default=None)


def first_evaluations_after(history: list[dict[str, Any]]) -> dict[str, float | None]:
    """How the validation score moves right after a growth, and right after the plain fine-tune's best.

    `after_growth`: mean over growths of (first neuron-phase evaluation after it - the best score
    before it). `plain_after_best`: the evaluation after the best of the plain fine-tune (before any
    dendrite phase) minus that best. Both near zero or negative say a grown dendrite does no more
    than further plain training: a kept dendrite then mostly marks a lucky evaluation.
    """
    prefix = plain_scores(history)
    peak = max(range(len(prefix)), key=prefix.__getitem__, default=None)
    plain = prefix[peak + 1] - prefix[peak] if peak is not None and peak + 1 < len(prefix) else None
    best, deltas, waiting = None, [], False
    for entry in history:
        if waiting and entry["phase"] == "neuron" and entry["score"] is not None:
            deltas.append(entry["score"] - best)
            waiting = False
        if entry["new_best"]:
            best = entry["score"]
        if entry["action"] == "grow" and best is not None:
            waiting = True
    return {"after_growth": statistics.mean(deltas) if deltas else None, "plain_after_best": plain}


def run_summary(results: dict[str, Any], baseline: dict[str, Any] | None) -> dict[str, Any]:
    phases = results.get("candidate_scores_per_layer") or []
    last_scores = phases[-1]["scores"] if phases else {}
    weights = results.get("dendrite_output_weights") or {}
    exact = (results.get("candidate_exact_correlation") or [{}])[-1]
    knocked_out = (results.get("test_without_dendrites") or {}).get("accuracy")
    summary = {
        "seed": results["benchmark"]["seed"],
        "test_accuracy": results["test"]["accuracy"],
        "validation_accuracy": results["validation"]["accuracy"],
        "validation_before_growth": best_before_growth(results),
        "dendrites_kept": max(results.get("dendrites_per_layer", {}).values(), default=0),
        "dendrite_phases": len({entry["dendrite_phase"] for entry in phases}),
        "candidate_correlation_mean": statistics.mean(last_scores.values()) if last_scores else None,
        "candidate_correlation_per_layer": last_scores,
        # cosine of a non-backprop error signal with the exact error (the first steps of each phase)
        "error_alignment_mean": mean_of(results.get("error_alignment", []), "mean"),
        # the candidates' correlation with the exact error at the last dendrite-phase evaluation, and its chance
        # level (runs whose diagnostic recorded no chance level measured one batch only: not shown)
        "candidate_exact_correlation": exact.get("mean") if "chance_mean" in exact else None,
        "candidate_exact_chance": exact.get("chance_mean"),
        # the final model's test accuracy with every dendrite's output weight at zero, minus with them
        "knock_out": None if knocked_out is None else knocked_out - results["test"]["accuracy"],
        "output_weight_abs_mean": statistics.mean(v for values in weights.values() for v in values)
        if weights
        else None,
        "epochs": results["epochs"],
        "completed_reason": results.get("completed_reason"),
        **{
            f"validation_{key}": value
            for key, value in first_evaluations_after(results.get("dendrite_history", [])).items()
        },
    }
    if baseline is not None:
        summary["baseline_test_accuracy"] = baseline["test"]["accuracy"]
        summary["test_accuracy_minus_baseline"] = summary["test_accuracy"] - baseline["test"]["accuracy"]
    return summary


def mean_of(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [run[key] for run in runs if run.get(key) is not None]
    return statistics.mean(values) if values else None


def spread_of(runs: list[dict[str, Any]], key: str) -> float | None:
    """Standard deviation over seeds (None below two): the noise a difference is read against."""
    values = [run[key] for run in runs if run.get(key) is not None]
    return statistics.stdev(values) if len(values) > 1 else None


# The task benchmark's dendrite runs read the same way: its 3 seeds on both tasks at the defaults, and
# PB with the former streaming learner (under which every `pb_*` variant here that predates the
# cached learner ran).
BENCHMARK_METHODS = {f"benchmark {method}": METHOD_FLAGS[method] for method in ("pb", "pb_streaming", "gd")}


def candidate_learner(results: dict[str, Any]) -> str | None:
    """The candidate learner a run's PB dendrites trained with: recorded since the cached learner came
    (in `config.dendrite_training`, earlier in `config.dendrites`); runs from before it streamed. None
    for runs without a candidate phase (plain fine-tunes, GD)."""
    config = results.get("config", {})
    dendrites = config.get("dendrites") or {}
    if dendrites.get("mode") != "pb":
        return None
    training = config.get("dendrite_training") or dendrites
    return training.get("candidate_learner", "streaming")


def run_folders(task: str) -> dict[str, tuple[list[str], Path]]:
    """Every variant's flags and run folder: the study's own, then the task benchmark's PB and GD."""
    folders = {variant: (flags, GROWTH_RUNS / task / variant) for variant, flags in VARIANTS.items()}
    for variant, (_, epochs, flags) in SEED_VARIANTS.items():
        folders[variant] = ([*flags, epochs], GROWTH_RUNS / task / variant)
    for name, flags in BENCHMARK_METHODS.items():
        folders[name] = (flags, RUNS / task / name.split()[-1])
    return folders


def aggregate() -> dict[str, Any]:
    tasks: dict[str, Any] = {}
    for task in TASKS:
        variants = {}
        for variant, (flags, folder) in run_folders(task).items():
            files = sorted(folder.glob("seed*.json"))
            runs, pairs, learners = [], [], set()
            for path in files:
                results = json.loads(path.read_text())
                learners.add(candidate_learner(results))
                base = baseline_file(task, results["benchmark"]["seed"], variant)
                baseline = json.loads(base.read_text()) if base.exists() else None
                runs.append(run_summary(results, baseline))
                pairs.append((test_correctness(results), None if baseline is None else test_correctness(baseline)))
            if runs:
                variants[variant] = {
                    "flags": " ".join(flags),
                    "candidate_learner": ", ".join(sorted(learners - {None})) or None,
                    "paired_with": CONTROLS.get(variant, "baseline"),
                    "seeds": len(runs),
                    "test_accuracy_mean": mean_of(runs, "test_accuracy"),
                    "test_accuracy_std": spread_of(runs, "test_accuracy"),
                    "test_accuracy_minus_baseline_mean": mean_of(runs, "test_accuracy_minus_baseline"),
                    "test_accuracy_minus_baseline_std": spread_of(runs, "test_accuracy_minus_baseline"),
                    "dendrites_kept_mean": mean_of(runs, "dendrites_kept"),
                    "candidate_correlation_mean": mean_of(runs, "candidate_correlation_mean"),
                    "error_alignment_mean": mean_of(runs, "error_alignment_mean"),
                    "candidate_exact_correlation_mean": mean_of(runs, "candidate_exact_correlation"),
                    "candidate_exact_chance_mean": mean_of(runs, "candidate_exact_chance"),
                    "validation_after_growth_mean": mean_of(runs, "validation_after_growth"),
                    "validation_plain_after_best_mean": mean_of(runs, "validation_plain_after_best"),
                    "output_weight_abs_mean": mean_of(runs, "output_weight_abs_mean"),
                    "knock_out_mean": mean_of(runs, "knock_out"),
                    # every seed paired example by example with the plain fine-tune (None until all kept predictions)
                    "paired_interval": paired_difference(pairs)
                    if all(a is not None and b is not None for a, b in pairs)
                    else None,
                    "runs": runs,
                }
        if variants:
            tasks[task] = variants
    summary = {
        "command": "python -m benchmarks.growth",
        "recipe": "configs/<task>.yaml " + " ".join(BUDGET),
        "machine": machine_of_runs(sorted(GROWTH_RUNS.glob("*/*/seed*.json"))),
        "commits": commits_of_runs(sorted(GROWTH_RUNS.glob("*/*/seed*.json"))),
        "tasks": tasks,
        "per_seed": per_seed(),
        "difference_intervals": difference_intervals(),
        "head_to_head": head_to_head(),
    }
    (RESULTS / "growth.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(summary)
    return summary


def plot(summary: dict[str, Any]) -> None:
    """Paired test-accuracy change vs the plain fine-tune, one point per seed, per variant."""
    tasks = summary["tasks"]
    if not tasks:
        return
    figure = Figure(figsize=(5 * len(tasks), 4))
    axes = figure.subplots(1, len(tasks), squeeze=False)[0]
    for axis, (task, variants) in zip(axes, tasks.items()):
        names = list(variants)
        for x, name in enumerate(names):
            deltas = [
                100 * run["test_accuracy_minus_baseline"]
                for run in variants[name]["runs"]
                if run.get("test_accuracy_minus_baseline") is not None
            ]
            axis.scatter(
                [x] * len(deltas), deltas, color="tab:green" if name.split()[-1].startswith("pb") else "tab:blue"
            )
            if deltas:
                axis.hlines(statistics.mean(deltas), x - 0.3, x + 0.3, color="black")
        axis.axhline(0, color="gray", linewidth=0.8)
        axis.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        axis.set_ylabel("test accuracy - plain fine-tune (points)")
        axis.set_title(f"{task}: paired change per seed")
    figure.tight_layout()
    figure.savefig(RESULTS / "growth.png", dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=["movie_reviews"])
    parser.add_argument(
        "--variants", nargs="+", choices=[*VARIANTS, *SEED_VARIANTS], default=[*VARIANTS, *SEED_VARIANTS]
    )
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--scratch", default="runs/benchmark_growth", help="where runs write checkpoints")
    parser.add_argument("--aggregate-only", action="store_true")
    parser.add_argument("--commit", action="store_true", help="git-commit each run's result as it lands")
    args = parser.parse_args(argv)
    plan = [(task, variant, seed) for seed in args.seeds for task in args.tasks for variant in args.variants]
    for task, variant, seed in plan if not args.aggregate_only else []:
        path = run_file(task, variant, seed)
        if path.exists():
            continue
        print(f"[growth] {task} / {variant} / seed {seed} ...", flush=True)
        results = run_variant(task, variant, seed, Path(args.scratch))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=2, default=str) + "\n")
        aggregate()
        print(f"[growth] {task} / {variant} / seed {seed}: test accuracy {results['test']['accuracy']:.4f}", flush=True)
        if args.commit:
            summary = [RESULTS / "growth.json", RESULTS / "growth.png", refresh_readme()]
            git_commit([path, *summary], f"Growth study: {task} / {variant} / seed {seed}")
    aggregate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
