"""Two growth policies head to head, seed by seed: on validation, where a user chooses, and on test.

The growth table pairs every variant with a plain fine-tune. Choosing between two dendrite policies
(keep Adam's state over growth or reset it, grow early or at the stall) needs them paired with each
other: the same seed's runs, the validation score a default is chosen on, and the paired test
difference with its 95% bootstrap interval over test examples. Read by `benchmarks.growth` (into
growth.json) and `benchmarks.update_readme` (the README table).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from benchmarks.common import RUNS, TASKS, interval_text, paired_difference, test_correctness
from benchmarks.growth_sources import run_folder

# (comparison, (study, run folder) of A, (study, run folder) of B): A minus B. Study "tasks" is the
# task benchmark (runs/<task>/<method>/), "growth" the growth study (runs/growth/<task>/<variant>/).
# "streaming PB": runs under the former streaming candidate learner (every growth-study PB variant so
# far), compared with the task benchmark's PB runs of that learner (`pb_streaming`); "PB": the cached one.
PAIRS: list[tuple[str, tuple[str, str], tuple[str, str]]] = [
    (
        "streaming PB: Adam's state kept over growth vs reset",
        ("growth", "pb_keep_optimizer"),
        ("tasks", "pb_streaming"),
    ),
    ("GD: Adam's state kept over growth vs reset", ("growth", "gd_keep_optimizer"), ("tasks", "gd")),
    ("streaming PB vs the plain run over the whole budget", ("tasks", "pb_streaming"), ("growth", "baseline_full")),
    ("PB vs the plain run over the whole budget", ("tasks", "pb"), ("growth", "baseline_full")),
    ("GD vs the plain run over the whole budget", ("tasks", "gd"), ("growth", "baseline_full")),
    (
        "streaming PB, Adam's state kept, vs the plain run over the whole budget",
        ("growth", "pb_keep_optimizer"),
        ("growth", "baseline_full"),
    ),
    (
        "GD, Adam's state kept, vs the plain run over the whole budget",
        ("growth", "gd_keep_optimizer"),
        ("growth", "baseline_full"),
    ),
    (
        "reference library vs the plain run over the whole budget",
        ("tasks", "perforatedai"),
        ("growth", "baseline_full"),
    ),
    (
        "reference library vs the plain run restarted at its restructures",
        ("tasks", "perforatedai"),
        ("growth", "baseline_restarts_pai"),
    ),
    ("streaming PB vs the reference library", ("tasks", "pb_streaming"), ("tasks", "perforatedai")),
    ("PB vs the reference library", ("tasks", "pb"), ("tasks", "perforatedai")),
    ("PB vs PB with the streaming learner", ("tasks", "pb"), ("tasks", "pb_streaming")),
    (
        "streaming PB grown at epoch 2 vs at the validation stall",
        ("growth", "pb_first_growth_epoch2"),
        ("tasks", "pb_streaming"),
    ),
    (
        "streaming PB, candidates on a held-out fifth, vs the plain run on the other four fifths",
        ("growth", "pb_holdout0.2"),
        ("growth", "baseline_holdout0.2"),
    ),
    (
        "streaming PB, candidates on a held-out fifth, vs on the whole training set",
        ("growth", "pb_holdout0.2"),
        ("tasks", "pb_streaming"),
    ),
    ("plain run on four fifths vs on the whole training set", ("growth", "baseline_holdout0.2"), ("tasks", "baseline")),
    (
        "streaming PB vs the plain run, both on every training sentence",
        ("growth", "pb_all_train"),
        ("growth", "baseline_all_train"),
    ),
    (
        "streaming PB vs the plain run restarted where it grew, both on every training sentence",
        ("growth", "pb_all_train"),
        ("growth", "baseline_all_train_restarts_pb"),
    ),
    (
        "streaming PB on every training sentence vs on the recipe's first 3,000",
        ("growth", "pb_all_train"),
        ("tasks", "pb_streaming"),
    ),
    (
        "plain run on every training sentence vs on the recipe's first 3,000",
        ("growth", "baseline_all_train"),
        ("tasks", "baseline"),
    ),
]


def _runs(folder: Path) -> dict[int, dict[str, Any]]:
    return {int(path.stem.removeprefix("seed")): json.loads(path.read_text()) for path in folder.glob("seed*.json")}


def compare(runs: Path, task: str, a: tuple[str, str], b: tuple[str, str]) -> dict[str, Any] | None:
    """A minus B over the seeds both ran (None when none did): means, per-seed differences on
    validation and test, and the paired test interval once every such seed kept its predictions."""
    runs_a, runs_b = _runs(run_folder(runs, task, *a)), _runs(run_folder(runs, task, *b))
    seeds = sorted(set(runs_a) & set(runs_b))
    if not seeds:
        return None

    def scores(found: dict[int, dict[str, Any]], split: str) -> list[float]:
        return [found[seed][split]["accuracy"] for seed in seeds]

    found: dict[str, Any] = {"seeds": seeds}
    for split in ("validation", "test"):
        score_a, score_b = scores(runs_a, split), scores(runs_b, split)
        found[split] = {
            "a_mean": statistics.mean(score_a),
            "b_mean": statistics.mean(score_b),
            "differences": [x - y for x, y in zip(score_a, score_b, strict=True)],
        }
    pairs = [(test_correctness(runs_a[seed]), test_correctness(runs_b[seed])) for seed in seeds]
    complete = [(x, y) for x, y in pairs if x is not None and y is not None]
    found["test"]["interval"] = paired_difference(complete) if len(complete) == len(seeds) else None
    return found


def head_to_head(runs: Path = RUNS) -> dict[str, list[dict[str, Any]]]:
    """For each task, every comparison in `PAIRS` that has at least one seed run on both sides."""
    tasks = {}
    for task in TASKS:
        rows = []
        for name, a, b in PAIRS:
            found = compare(runs, task, a, b)
            if found is not None:
                rows.append({"comparison": name, "a": "/".join(a), "b": "/".join(b), **found})
        if rows:
            tasks[task] = rows
    return tasks


def _split_cells(split: dict[str, Any]) -> list[str]:
    """`A vs B` means, and the per-seed differences A - B in points."""
    differences = ", ".join(f"{100 * d:+.2f}" for d in split["differences"])
    return [f"{100 * split['a_mean']:.2f} vs {100 * split['b_mean']:.2f}", differences]


def pairs_table(summary: dict[str, Any]) -> str:
    """The README table: one row per task and comparison."""
    lines = [
        "`python -m benchmarks.growth` (runs of the growth study and the task benchmark, paired seed by seed; "
        "A and B name `study/run folder`). Validation and test: mean accuracy of A vs B over the seeds both ran, "
        "and A - B per seed (points, in seed order). 95% interval: of the mean test difference, bootstrapping "
        "test examples (the same draw for every seed), shown once every seed of both kept its test predictions.",
        "",
        "| task | comparison (A vs B) | A | B | seeds | validation | A - B per seed | test | A - B per seed "
        "| 95% interval (test examples) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task, rows in summary.get("head_to_head", {}).items():
        for row in rows:
            cells = [
                task,
                row["comparison"],
                f"`{row['a']}`",
                f"`{row['b']}`",
                ", ".join(str(seed) for seed in row["seeds"]),
                *_split_cells(row["validation"]),
                *_split_cells(row["test"]),
                interval_text(row["test"]["interval"]),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
