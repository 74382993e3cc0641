"""Where a PB run's test gain comes from, seed by seed: the longer budget, the restarts, the dendrite.

A PB run differs from the early-stopped plain fine-tune in three ways: it trains over the whole
epoch budget, it restarts (best model reloaded, fresh AdamW) wherever it grows, and it ends with
dendrites. Each of these has a plain control in the growth study, and the dendrite runs record their
test accuracy with the dendrites switched off. Lining them up per seed separates the three; a mean
over seeds alone would hide that the seeds disagree. Read by `benchmarks.growth` (into growth.json)
and `benchmarks.update_readme` (the README table).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from benchmarks.common import RUNS, TASKS, interval_text, paired_difference, test_correctness

# (column, study, run folder name) in the table's order; study "tasks" is the task benchmark
# (runs/<task>/<method>/), "growth" the growth study (runs/growth/<task>/<variant>/).
COLUMNS: list[tuple[str, str, str]] = [
    ("plain, early-stopped", "tasks", "baseline"),
    ("plain, whole budget", "growth", "baseline_full"),
    ("plain, restarted on plateau", "tasks", "restarts"),
    # the former streaming candidate learner: its PB runs and their controls
    ("plain, restarted where streaming PB grew", "growth", "baseline_restarts_pb_streaming"),
    ("streaming PB", "tasks", "pb_streaming"),
    ("streaming PB, untrained candidates", "growth", "pb_untrained_candidates_streaming"),
    ("streaming PB, linear backprop", "growth", "pb_linear_backprop"),
    # the cached candidate learner (the default)
    ("plain, restarted where PB grew", "growth", "baseline_restarts_pb"),
    ("PB", "tasks", "pb"),
    ("PB, untrained candidates", "growth", "pb_untrained_candidates"),
]
# Differences between two columns, per seed (points): what the restarts add to the whole-budget plain
# run, and what PB adds to the plain run restarted at its own growth epochs or by its own policy, and
# to the same PB with candidates that never train; for each candidate learner.
DIFFERENCES: list[tuple[str, str, str]] = [
    ("restarts where streaming PB grew", "plain, restarted where streaming PB grew", "plain, whole budget"),
    ("streaming PB over its restarts", "streaming PB", "plain, restarted where streaming PB grew"),
    ("streaming PB over plateau restarts", "streaming PB", "plain, restarted on plateau"),
    ("streaming: trained over untrained candidates", "streaming PB", "streaming PB, untrained candidates"),
    ("restarts where PB grew", "plain, restarted where PB grew", "plain, whole budget"),
    ("PB over its restarts", "PB", "plain, restarted where PB grew"),
    ("PB over plateau restarts", "PB", "plain, restarted on plateau"),
    ("trained over untrained candidates", "PB", "PB, untrained candidates"),
]


def _accuracies(path: Path) -> tuple[float, float | None] | None:
    """Test accuracy, and with every dendrite switched off when the run recorded it."""
    if not path.exists():
        return None
    results = json.loads(path.read_text())
    knocked_out = (results.get("test_without_dendrites") or {}).get("accuracy")
    return results["test"]["accuracy"], knocked_out


def run_folder(runs: Path, task: str, study: str, name: str) -> Path:
    return runs / task / name if study == "tasks" else runs / "growth" / task / name


def seeds_of(task: str, runs: Path = RUNS) -> list[int]:
    """Every seed with at least one run in one of the columns."""
    folders = [run_folder(runs, task, study, name) for _, study, name in COLUMNS]
    return sorted({int(path.stem.removeprefix("seed")) for folder in folders for path in folder.glob("seed*.json")})


def per_seed(runs: Path = RUNS) -> dict[str, list[dict[str, Any]]]:
    """For each task and seed: every column's test accuracy (None when not run) and the differences."""
    tasks = {}
    for task in TASKS:
        rows = []
        for seed in seeds_of(task, runs):
            row: dict[str, Any] = {"seed": seed, "accuracy": {}, "without_dendrites": {}}
            for column, study, name in COLUMNS:
                found = _accuracies(run_folder(runs, task, study, name) / f"seed{seed}.json")
                row["accuracy"][column] = found and found[0]
                row["without_dendrites"][column] = found and found[1]
            row["difference"] = {
                name: None
                if None in (row["accuracy"][a], row["accuracy"][b])
                else row["accuracy"][a] - row["accuracy"][b]
                for name, a, b in DIFFERENCES
            }
            rows.append(row)
        if rows:
            tasks[task] = rows
    return tasks


def difference_intervals(runs: Path = RUNS) -> dict[str, dict[str, dict[str, Any] | None]]:
    """For each task and difference: the 95% bootstrap interval over test examples of the difference,
    paired seed by seed over the seeds where both columns ran (None until all of them kept their test
    predictions). The per-seed differences say how the seeds disagree; this says what the test set resolves."""
    tasks = {}
    for task in TASKS:
        seeds_run = seeds_of(task, runs)
        # each run read once: (column, seed) -> its per-example correctness (None without predictions)
        correct = {
            (column, seed): test_correctness(json.loads(path.read_text()))
            for column, study, name in COLUMNS
            for seed in seeds_run
            if (path := run_folder(runs, task, study, name) / f"seed{seed}.json").exists()
        }
        found: dict[str, dict[str, Any] | None] = {}
        for difference, a, b in DIFFERENCES:
            seeds = sorted(seed for column, seed in correct if column == a and (b, seed) in correct)
            pairs = [(correct[a, seed], correct[b, seed]) for seed in seeds]
            complete = pairs and all(None not in pair for pair in pairs)
            found[difference] = paired_difference(pairs) if complete else None
        tasks[task] = found
    return tasks


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def _cell(row: dict[str, Any], column: str) -> str:
    accuracy, off = row["accuracy"][column], row["without_dendrites"][column]
    return _percent(accuracy) + ("" if off is None else f" (off: {_percent(off)})")


def _mean_cell(values: list[float | None], points: bool) -> str:
    present = [value for value in values if value is not None]
    if not present:
        return "–"
    spread = f" ± {100 * statistics.stdev(present):.2f}" if len(present) > 1 else ""
    sign = "+" if points else ""
    return f"{100 * statistics.mean(present):{sign}.2f}{spread} (n={len(present)})"


def sources_table(summary: dict[str, Any]) -> str:
    """The README table: one row per task and seed, then the mean ± std over the seeds that ran."""
    names = [column for column, _, _ in COLUMNS]
    differences = [name for name, _, _ in DIFFERENCES]
    lines = [
        "`python -m benchmarks.growth` (per-seed view of the runs above and the task benchmark's `baseline` and `pb`). "
        "Test accuracy per run; for dendrite runs that recorded it, in brackets the same model with every dendrite "
        "switched off (`hd.disable_dendrites`). Last columns: differences between two columns of the same seed, points; "
        "row `95% interval`: of the mean difference, bootstrapping test examples (the same draw for every seed), "
        "shown once every seed of both columns kept its test predictions.",
        "",
        "| task | seed | " + " | ".join(names + [f"{name} (points)" for name in differences]) + " |",
        "|---|---|" + "---|" * (len(names) + len(differences)),
    ]
    for task, rows in summary.get("per_seed", {}).items():
        for row in rows:
            diffs = [row["difference"][name] for name in differences]
            cells = [_cell(row, column) for column in names] + [
                "–" if value is None else f"{100 * value:+.2f}" for value in diffs
            ]
            lines.append(f"| {task} | {row['seed']} | " + " | ".join(cells) + " |")
        means = [_mean_cell([row["accuracy"][column] for row in rows], points=False) for column in names]
        means += [_mean_cell([row["difference"][name] for row in rows], points=True) for name in differences]
        lines.append(f"| {task} | mean ± std | " + " | ".join(means) + " |")
        found = summary.get("difference_intervals", {}).get(task)
        if found and any(found.values()):
            intervals = [interval_text(found.get(name)) for name in differences]
            lines.append(f"| {task} | 95% interval | " + " | ".join(["–"] * len(names) + intervals) + " |")
    return "\n".join(lines)
