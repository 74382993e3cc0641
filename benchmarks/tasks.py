#!/usr/bin/env python
"""Task benchmark: plain fine-tune vs GD dendrites vs PB dendrites vs the reference library.

    python -m benchmarks.tasks                       # every task, method and seed not yet run
    python -m benchmarks.tasks --tasks trec6 --methods baseline pb --seeds 0
    python -m benchmarks.tasks --aggregate-only      # rebuild <task>.json and plots from runs/
    python -m benchmarks.tasks --commit              # git-commit each result as it lands

Each (task, method, seed) runs in its own process from the task's recipe in `configs/` (the
same model, data, split, optimizer, batch size and epoch budget for every method; only
`--dendrites` changes) and leaves one file, `benchmarks/results/runs/<task>/<method>/seed<k>.json`.
A run whose file exists is skipped, so an interrupted benchmark resumes where it stopped. After
every run the per-task summary `benchmarks/results/<task>.json` and `<task>.png` are rebuilt
from whatever files exist; `python -m benchmarks.update_readme` turns them into the README table.

`perforatedai` (the reference library) runs in its own virtual environment
(`--perforatedai-python`, default `.venv-perforatedai/bin/python`), made with
`benchmarks/setup_perforatedai.sh`, through `benchmarks/perforatedai.py`.
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
    ROOT,
    RUNS,
    SEEDS,
    SHORT_CANDIDATE_PHASE,
    STREAMING_LEARNER,
    TASKS,
    commits_of_runs,
    execute,
    git_commit,
    machine_of_runs,
    mean,
    paired_difference,
    recipe_arguments,
    refresh_readme,
    test_correctness,
    train_command,
)

METHODS = (
    "baseline",
    "restarts",
    "gd",
    "pb",
    "pb_short_phase",
    "pb_streaming",
    "perforatedai",
    "lora",
    "lora_pb",
    "lora_gd",
    "lora_full",
)
# LoRA (rank 8 on query and value, base frozen, head trained) at a rate suited to so few weights,
# alone and with dendrites: do dendrites add more than their parameters to an adapter?
LORA = ["--lora_r", "8", "--lora_alpha", "16", "--learning_rate", "5e-4"]
# What each method adds to the recipe. `restarts` is the plain fine-tune restarted (best model,
# fresh AdamW) wherever PB's policy would grow, without dendrites: what PB gains by its restarts
# alone (the growth study found that to be most of it). `lora_full` is LoRA alone over the whole
# epoch budget (no early stop, best evaluation kept, as a dendrite run is): the control for the
# epochs that LoRA with dendrites trains beyond LoRA alone's early stop.
METHOD_FLAGS = {
    "baseline": ["--dendrites", "none"],
    "restarts": ["--dendrites", "none", "--restart_on_plateau", "true"],
    "gd": ["--dendrites", "gd"],
    "pb": ["--dendrites", "pb"],
    # PB with the cheaper candidate phase the learner benchmark's budget study measured (a phase of
    # about one fine-tuning epoch): does accuracy hold when the phase is cut to ~1/7 of its cost?
    "pb_short_phase": ["--dendrites", "pb", *SHORT_CANDIDATE_PHASE],
    # PB as it ran before the cached candidate learner (its runs were recorded as `--dendrites pb` under
    # these then-defaults): the comparison point for what the learner changes on these tasks.
    "pb_streaming": ["--dendrites", "pb", *STREAMING_LEARNER],
    "lora": [*LORA, "--dendrites", "none"],
    "lora_pb": [*LORA, "--dendrites", "pb"],
    "lora_gd": [*LORA, "--dendrites", "gd"],
    "lora_full": [*LORA, "--dendrites", "none", "--early_stopping_patience", "1000"],
}
# The same-seed run each method's paired test difference is taken against: LoRA with dendrites
# (and over the whole budget) against LoRA alone, the rest against the plain fine-tune.
PAIRED_WITH = {"lora_pb": "lora", "lora_gd": "lora", "lora_full": "lora"}
# The controls a dendrite method is also paired with: the restarts that come with growth (without
# dendrites), the former candidate learner, and for LoRA the adapter over the same whole budget.
CONTROLS = {
    "pb": ("restarts", "pb_streaming"),
    "pb_short_phase": ("restarts", "pb"),
    "gd": ("restarts",),
    "pb_streaming": ("restarts",),
    "lora_pb": ("lora_full",),
    "lora_gd": ("lora_full",),
}


def run_file(task: str, method: str, seed: int) -> Path:
    return RUNS / task / method / f"seed{seed}.json"


def run_command(task: str, method: str, seed: int, output_dir: Path, perforatedai_python: str) -> list[str]:
    common = recipe_arguments(TASKS[task], seed, output_dir)
    if method == "perforatedai":
        # like our methods, it is scored on its best model, also when the budget ends mid-cycle
        return [perforatedai_python, "-m", "benchmarks.perforatedai", *common, "--final_model", "best"]
    return train_command(TASKS[task], seed, output_dir, METHOD_FLAGS[method])


def run_one(task: str, method: str, seed: int, perforatedai_python: str, scratch: Path) -> dict[str, Any]:
    """Run one (task, method, seed) in a subprocess and keep its results.json, plus how it ran."""
    output_dir = scratch / task / method / f"seed{seed}"
    command = run_command(task, method, seed, output_dir, perforatedai_python)
    return execute(command, output_dir, {"task": task, "method": method, "seed": seed})


# ---------------------------------------------------------------------- aggregation


def dendrite_count(results: dict[str, Any]) -> int:
    """Dendrites added per neuron (the deepest layer's count), whichever library produced it."""
    if "num_dendrites" in results:
        return int(results["num_dendrites"])
    return max(results.get("dendrites_per_layer", {}).values(), default=0)


def phase_over_neuron_epoch(results: dict[str, Any]) -> float | None:
    """A cached dendrite phase (cache pass + candidate fit, mean over the run's phases) in neuron-phase
    epochs of the same run (mean neuron step times the steps of an epoch): the learner's cost goal."""
    phases = [
        entry["seconds"]
        for entry in results.get("candidate_scores_per_layer") or []
        if isinstance(entry, dict) and isinstance(entry.get("seconds"), dict)
    ]
    steps, seconds = results.get("phase_steps") or {}, results.get("phase_seconds") or {}
    first = (results.get("evaluations") or [{}])[0]
    if not phases or not steps.get("neuron") or not first.get("epoch"):
        return None
    epoch_seconds = seconds["neuron"] / steps["neuron"] * first["step"] / first["epoch"]
    return statistics.mean(phase["cache"] + phase["fit"] for phase in phases) / epoch_seconds


def run_summary(results: dict[str, Any]) -> dict[str, Any]:
    epochs = float(results["epochs"])
    summary = {
        "seed": results["benchmark"]["seed"],
        "test_accuracy": results["test"]["accuracy"],
        "test_macro_f1": results["test"]["macro_f1"],
        "validation_accuracy": results["validation"]["accuracy"],
        "parameters": results["parameters"]["total"],
        "trainable_parameters": results["parameters"].get("trainable"),
        "dendrites": dendrite_count(results),
        "epochs": epochs,
        "seconds_total": results["seconds"],
        "seconds_per_epoch": results["seconds"] / epochs if epochs else None,
        "load_average": [results["benchmark"]["load_average_before"], results["benchmark"]["load_average_after"]],
        "dendrite_phase_over_neuron_epoch": phase_over_neuron_epoch(results),
    }
    steps, seconds = results.get("phase_steps"), results.get("phase_seconds")
    if steps and seconds and steps.get("neuron") and steps.get("dendrite"):
        per_step = {phase: seconds[phase] / steps[phase] for phase in ("neuron", "dendrite")}
        summary["dendrite_step_over_neuron_step"] = per_step["dendrite"] / per_step["neuron"]
    epoch_log = results.get("epoch_log")
    if epoch_log:
        by_phase: dict[str, list[float]] = {}
        for entry in epoch_log:
            by_phase.setdefault(entry["phase"], []).append(entry["seconds"])
        if by_phase.get("neuron") and by_phase.get("dendrite"):
            summary["dendrite_step_over_neuron_step"] = statistics.mean(by_phase["dendrite"]) / statistics.mean(
                by_phase["neuron"]
            )
    return summary


def method_summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    accuracies = [run["test_accuracy"] for run in runs]
    return {
        "seeds": len(runs),
        "test_accuracy_mean": statistics.mean(accuracies),
        "test_accuracy_std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
        "test_macro_f1_mean": mean([run["test_macro_f1"] for run in runs]),
        "parameters": round(mean([run["parameters"] for run in runs])),
        "trainable_parameters": mean([run.get("trainable_parameters") for run in runs]),
        "dendrites": mean([run["dendrites"] for run in runs]),
        "epochs": mean([run["epochs"] for run in runs]),
        "seconds_per_epoch": mean([run["seconds_per_epoch"] for run in runs]),
        "seconds_total": mean([run["seconds_total"] for run in runs]),
        "dendrite_step_over_neuron_step": mean([run.get("dendrite_step_over_neuron_step") for run in runs]),
        "dendrite_phase_over_neuron_epoch": mean([run.get("dendrite_phase_over_neuron_epoch") for run in runs]),
        "runs": runs,
    }


def one_machine(*summaries: dict[str, Any]) -> bool:
    """Whether every run of these methods ran on one kind of machine (CPU model and core count):
    only then is a ratio of their timings a measurement rather than a comparison of machines."""
    return len({machine for summary in summaries for machine in summary.get("machines", [])}) == 1


def add_ratios(methods: dict[str, dict[str, Any]]) -> None:
    """Ratios to the plain fine-tune, and PB's speed against the reference library (timing ratios
    only between runs of one machine; None otherwise)."""
    baseline = methods.get("baseline")
    for name, summary in methods.items():
        if baseline is None or name == "baseline":
            continue
        baseline_error = 1.0 - baseline["test_accuracy_mean"]
        summary["test_error_reduction_vs_baseline"] = (
            1.0 - (1.0 - summary["test_accuracy_mean"]) / baseline_error if baseline_error > 0 else None
        )
        summary["seconds_per_epoch_vs_baseline"] = (
            summary["seconds_per_epoch"] / baseline["seconds_per_epoch"] if one_machine(summary, baseline) else None
        )
        summary["parameters_vs_baseline"] = summary["parameters"] / baseline["parameters"]
    reference = methods.get("perforatedai")
    if reference is not None:
        for name in ("pb", "gd"):
            if name in methods and one_machine(methods[name], reference):
                ratio = methods[name]["seconds_per_epoch"] / reference["seconds_per_epoch"]
                methods[name]["seconds_per_epoch_vs_perforatedai"] = ratio


# The goals for PB (reported, never asserted): test error cut by this share of the plain
# fine-tune's and by more than the reference library's; seconds per epoch at most this share of
# the reference library's at the same number of dendrites; a dendrite-phase step at most this
# multiple of a neuron-phase step.
ERROR_REDUCTION_TARGET = 0.15
SECONDS_VS_REFERENCE_TARGET = 0.7
DENDRITE_STEP_TARGET = 1.3
# A cached dendrite phase (cache pass + candidate fit) takes at most this many neuron-phase epochs.
PHASE_EPOCHS_TARGET = 1.0


def seconds_per_epoch_by_dendrites(runs: list[dict[str, Any]]) -> dict[int, float]:
    """Mean seconds per epoch of the runs that ended with each number of dendrites."""
    grouped: dict[int, list[float]] = {}
    for run in runs:
        if run["seconds_per_epoch"] is not None:
            grouped.setdefault(run["dendrites"], []).append(run["seconds_per_epoch"])
    return {count: statistics.mean(values) for count, values in sorted(grouped.items())}


def targets(methods: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """PB against the three goals, from the finished runs; a goal without the runs it needs is left out."""
    pb, reference = methods.get("pb"), methods.get("perforatedai")
    if pb is None:
        return {}
    found: dict[str, Any] = {}
    reduction = pb.get("test_error_reduction_vs_baseline")
    if reduction is not None:
        reference_reduction = None if reference is None else reference.get("test_error_reduction_vs_baseline")
        found["test_error_reduction"] = {
            "target": ERROR_REDUCTION_TARGET,
            "pb": reduction,
            "perforatedai": reference_reduction,
            "met": reduction >= ERROR_REDUCTION_TARGET
            and (reference_reduction is None or reduction > reference_reduction),
        }
    if reference is not None and one_machine(pb, reference):
        ours = seconds_per_epoch_by_dendrites(pb["runs"])
        theirs = seconds_per_epoch_by_dendrites(reference["runs"])
        equal = {count: ours[count] / theirs[count] for count in ours if count in theirs}
        found["seconds_per_epoch_vs_perforatedai"] = {
            "target": SECONDS_VS_REFERENCE_TARGET,
            "all_runs": pb["seconds_per_epoch"] / reference["seconds_per_epoch"],
            "by_dendrites": {str(count): ratio for count, ratio in equal.items()},
            "met": all(ratio <= SECONDS_VS_REFERENCE_TARGET for ratio in equal.values()) if equal else None,
        }
    phase_cost = {
        name: m["dendrite_phase_over_neuron_epoch"]
        for name, m in methods.items()
        if m.get("dendrite_phase_over_neuron_epoch") is not None
    }
    if phase_cost:
        found["dendrite_phase_over_neuron_epoch"] = {
            "target": PHASE_EPOCHS_TARGET,
            "by_method": phase_cost,
            "met": {name: cost <= PHASE_EPOCHS_TARGET for name, cost in phase_cost.items()},
        }
    step = pb.get("dendrite_step_over_neuron_step")
    if step is not None:
        found["dendrite_step_over_neuron_step"] = {
            "target": DENDRITE_STEP_TARGET,
            "pb": step,
            "met": step <= DENDRITE_STEP_TARGET,
        }
    return found


def add_paired_differences(
    methods: dict[str, dict[str, Any]], correct: dict[str, dict[int, list[bool] | None]]
) -> None:
    """Each method's test accuracy minus its pair's (`PAIRED_WITH`, else the plain fine-tune) and minus
    each of its `CONTROLS`, example by example with a 95% bootstrap interval over the seeds both ran,
    once every such seed of both kept its test predictions (else None)."""

    def difference(mine: dict[int, list[bool] | None], theirs: dict[int, list[bool] | None]) -> dict | None:
        seeds = sorted(set(mine) & set(theirs))
        if not seeds or any(mine[seed] is None or theirs[seed] is None for seed in seeds):
            return None
        return {**paired_difference([(mine[seed], theirs[seed]) for seed in seeds]), "seeds": seeds}

    for name, summary in methods.items():
        other = PAIRED_WITH.get(name, "baseline")
        if name != other and other in correct:
            mine, theirs = correct[name], correct[other]
            complete = all(mine[seed] is not None and theirs.get(seed) is not None for seed in mine)
            summary["paired_with"] = other
            summary["paired_difference"] = (
                paired_difference([(mine[seed], theirs[seed]) for seed in sorted(mine)]) if complete else None
            )
        controls = {
            control: difference(correct[name], correct[control])
            for control in CONTROLS.get(name, ())
            if control in correct
        }
        if controls:
            summary["minus_controls"] = controls


def aggregate(task: str, command: str) -> dict[str, Any] | None:
    methods: dict[str, dict[str, Any]] = {}
    versions: dict[str, dict[str, str]] = {}
    machines: list[dict[str, Any]] = []
    run_files: list[Path] = []
    correct: dict[str, dict[int, list[bool] | None]] = {}
    for method in METHODS:
        files = sorted((RUNS / task / method).glob("seed*.json"))
        if not files:
            continue
        loaded = [json.loads(path.read_text()) for path in files]
        methods[method] = method_summary([run_summary(results) for results in loaded])
        methods[method]["machines"] = sorted(
            {f"{r['benchmark']['machine'].get('cpu')}, {r['benchmark']['machine'].get('cores')} cores" for r in loaded}
        )
        correct[method] = {results["benchmark"]["seed"]: test_correctness(results) for results in loaded}
        versions[method] = loaded[-1]["versions"]
        machines.extend(results["benchmark"]["machine"] for results in loaded)
        run_files.extend(files)
    if not methods:
        return None
    add_ratios(methods)
    add_paired_differences(methods, correct)
    summary = {
        "command": command,
        "task": task,
        "recipe": " ".join([TASKS[task], *BUDGET]),
        "machine": machine_of_runs(run_files),  # every CPU named when the runs used several
        "commits": commits_of_runs(run_files),
        "same_machine": all(m == machines[0] for m in machines),
        "versions": versions,
        "methods": methods,
        "targets": targets(methods),
    }
    (RESULTS / f"{task}.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(task, summary)
    return summary


def plot(task: str, summary: dict[str, Any]) -> None:
    """Test accuracy (mean and std over seeds) and seconds per epoch, one bar per method."""
    names = list(summary["methods"])
    methods = [summary["methods"][name] for name in names]
    figure = Figure(figsize=(9, 4))
    accuracy_axis, speed_axis = figure.subplots(1, 2)
    colors = {"baseline": "tab:gray", "gd": "tab:blue", "pb": "tab:green", "perforatedai": "tab:purple"}
    palette = [colors.get(name, "tab:olive") for name in names]
    means = [100 * m["test_accuracy_mean"] for m in methods]
    accuracy_axis.bar(names, means, yerr=[100 * m["test_accuracy_std"] for m in methods], color=palette, capsize=4)
    low = min(means) - 5
    accuracy_axis.set_ylim(max(0, low), min(100, max(means) + 3))
    accuracy_axis.set_ylabel("test accuracy (%)")
    accuracy_axis.set_title(f"{task}: test accuracy (mean ± std over seeds)")
    for x, m in enumerate(methods):
        accuracy_axis.annotate(f"n={m['seeds']}", (x, low + 0.5), ha="center", fontsize=8)
    speed_axis.bar(names, [m["seconds_per_epoch"] for m in methods], color=palette)
    speed_axis.set_ylabel("seconds per epoch")
    speed_axis.set_title("training time per epoch")
    figure.tight_layout()
    figure.savefig(RESULTS / f"{task}.png", dpi=100)


# ---------------------------------------------------------------------- main


def add_predictions(path: Path, earlier: dict[str, Any], rerun: dict[str, Any]) -> Path:
    """Complete a finished run that kept no test predictions with those of a rerun (same seed).

    When the rerun reproduced the test accuracy exactly, its predictions are added to the committed
    run, which keeps everything else (its timings and machine, which ratios compare); otherwise the
    rerun is kept next to it as `rerun_seed<k>.json`, the committed run is left alone, and the
    difference is printed. Returns the file written.
    """
    reproduced = rerun["test"]["accuracy"] == earlier["test"]["accuracy"]
    if reproduced:
        earlier["test_predictions"], earlier["test_labels"] = rerun["test_predictions"], rerun["test_labels"]
        how = {key: rerun["benchmark"][key] for key in ("command", "machine", "finished")}
        earlier.setdefault("benchmark", {})["predictions_from_rerun"] = how
        target, results = path, earlier
    else:
        target, results = path.with_name(f"rerun_{path.name}"), rerun
        print(
            f"[benchmark] {path}: the rerun reached {rerun['test']['accuracy']:.4f}, the committed run "
            f"{earlier['test']['accuracy']:.4f}; the rerun is kept as {target.name}",
            flush=True,
        )
    target.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", choices=sorted(TASKS), default=list(TASKS))
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--perforatedai-python", default=str(ROOT / ".venv-perforatedai" / "bin" / "python"))
    parser.add_argument("--scratch", default=str(ROOT / "runs" / "benchmark"), help="where runs write checkpoints")
    parser.add_argument("--aggregate-only", action="store_true", help="only rebuild the summaries and plots")
    parser.add_argument("--commit", action="store_true", help="git-commit each run's result as it lands")
    parser.add_argument(
        "--add-predictions",
        action="store_true",
        help="rerun finished runs that kept no test predictions (needed for paired intervals); see add_predictions",
    )
    args = parser.parse_args(argv)
    command = "python -m benchmarks.tasks"
    if "perforatedai" in args.methods and not args.aggregate_only and not Path(args.perforatedai_python).exists():
        parser.error(f"{args.perforatedai_python} not found: run `bash benchmarks/setup_perforatedai.sh` first")

    # seed-major order, so every method has a first seed before any has a third
    plan = [(task, method, seed) for seed in args.seeds for task in args.tasks for method in args.methods]
    for task, method, seed in plan if not args.aggregate_only else []:
        path = run_file(task, method, seed)
        earlier = json.loads(path.read_text()) if path.exists() else None
        if earlier is not None and not (args.add_predictions and "test_predictions" not in earlier):
            continue
        print(f"[benchmark] {task} / {method} / seed {seed} ...", flush=True)
        results = run_one(task, method, seed, args.perforatedai_python, Path(args.scratch))
        path.parent.mkdir(parents=True, exist_ok=True)
        if earlier is not None:
            path = add_predictions(path, earlier, results)
        else:
            path.write_text(json.dumps(results, indent=2, default=str) + "\n")
        aggregate(task, command)
        print(
            f"[benchmark] {task} / {method} / seed {seed}: test accuracy {results['test']['accuracy']:.4f} "
            f"in {results['seconds']:.0f} s",
            flush=True,
        )
        if args.commit:
            summary = [RESULTS / f"{task}.json", RESULTS / f"{task}.png", refresh_readme()]
            git_commit([path, *summary], f"Benchmark result: {task} / {method} / seed {seed}")
    for task in args.tasks:
        aggregate(task, command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
