"""What every study shares: where results live, how a run is launched and recorded, paired
differences with bootstrap intervals, and committing results as they land.

The studies (`python -m benchmarks.<study>` from the repository root) each run `scripts/train.py`
(or the reference library's runner) in a subprocess per run and keep one JSON file per run under
`benchmarks/results/runs/`; a run whose file exists is skipped, so an interrupted study resumes.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RUNS = RESULTS / "runs"
TASKS = {"movie_reviews": "configs/movie_reviews.yaml", "trec6": "configs/trec6.yaml"}
# The recipes' budgets (12 and 8 epochs) end before a grown dendrite gets its evaluations: the
# plain model peaks after 6-9 epochs. Every method gets this budget; the baseline stops early anyway.
BUDGET = ["--num_train_epochs", "20"]
# The former streaming candidate learner at the candidate rate its runs were made with: the flags of
# every PB run from before the cached learner, kept beside the cached learner's reruns.
STREAMING_LEARNER = ["--candidate_learner", "streaming", "--candidate_learning_rate", "1e-3"]
# The cheaper candidate phase of the learner benchmark's budget study: 10 epochs on 2,048 cached rows
# per layer, a phase (cache pass + fit) of about one fine-tuning epoch; the fine-tune recipes' own
# since the task benchmark's `pb_short_phase` runs.
SHORT_CANDIDATE_PHASE = ["--candidate_epochs", "10", "--candidate_cache_rows", "2048"]
# The candidate phase every benchmark run was made with before that (the library's defaults, 50 epochs
# on up to 8,192 rows): pinned under each recipe so that a committed run reruns as it ran; a method's
# own flags come after and override it. Equal to the defaults, it is no flag a plain run refuses.
BENCHMARK_CANDIDATE_PHASE = ["--candidate_epochs", "50", "--candidate_cache_rows", "8192"]
SEEDS = (0, 1, 2)


def recipe_arguments(recipe: str, seed: int, output_dir: Path) -> list[str]:
    """A recipe with the benchmark's budget and candidate phase, a seed and a scratch folder (one
    checkpoint kept)."""
    return [
        recipe,
        *BUDGET,
        *BENCHMARK_CANDIDATE_PHASE,
        "--seed",
        str(seed),
        "--output_dir",
        str(output_dir),
        "--save_total_limit",
        "1",
    ]


def train_command(recipe: str, seed: int, output_dir: Path, flags: list[str]) -> list[str]:
    """`scripts/train.py` on a recipe (see `recipe_arguments`) with extra flags."""
    return [sys.executable, "scripts/train.py", *recipe_arguments(recipe, seed, output_dir), *flags]


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform()}


def code_commit() -> str:
    """The git commit of the code a result comes from, with `+dirty` when the tree had edits."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False)
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "--", "hf_dendrites", "scripts", "benchmarks/*.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    commit = head.stdout.strip() or "unknown"
    return f"{commit}+dirty" if status.stdout.strip() else commit


def machine_of_runs(files: list[Path]) -> dict[str, Any]:
    """The machine a set of runs ran on: the last run's, with every CPU named when they differ
    (accuracy is comparable across machines; timings only within one)."""
    machines = [json.loads(path.read_text()).get("benchmark", {}).get("machine") for path in files]
    machines = [m for m in machines if m]
    if not machines:
        return machine()
    cpus = list(dict.fromkeys(m.get("cpu", "a CPU") for m in machines))
    return {**machines[-1], "cpu": " and ".join(cpus)}


def commits_of_runs(files: list[Path]) -> list[str]:
    """The code commits a set of runs came from (`unknown` for runs that predate the record), so a
    summary says which code its numbers span."""
    commits = {json.loads(path.read_text()).get("benchmark", {}).get("commit") or "unknown" for path in files}
    return sorted(commits)


def execute(command: list[str], output_dir: Path, labels: dict[str, Any]) -> dict[str, Any]:
    """Run a training command that writes `output_dir/results.json`; return it with how it ran."""
    shutil.rmtree(output_dir, ignore_errors=True)
    log_path = output_dir.parent / f"{output_dir.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    commit = code_commit()  # before the run: the code it started with
    started = time.time()
    with log_path.open("w") as log:
        completed = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=False)
    if completed.returncode != 0:
        tail = "".join(log_path.read_text(errors="replace").splitlines(keepends=True)[-30:])
        raise RuntimeError(f"{' '.join(command)} failed with exit code {completed.returncode}:\n{tail}")
    results = json.loads((output_dir / "results.json").read_text())
    results["benchmark"] = {
        **labels,
        "command": " ".join(command),
        "commit": commit,
        "wall_seconds": time.time() - started,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg()[0],
        "machine": machine(),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    shutil.rmtree(output_dir, ignore_errors=True)  # checkpoints: hundreds of MB per run
    return results


def test_correctness(results: dict[str, Any]) -> list[bool] | None:
    """Per test example, whether the run got it right (None for runs that kept no predictions)."""
    predictions, labels = results.get("test_predictions"), results.get("test_labels")
    if predictions is None or labels is None:
        return None
    return [prediction == label for prediction, label in zip(predictions, labels, strict=True)]


def paired_difference(
    pairs: list[tuple[list[bool], list[bool]]], resamples: int = 10_000, seed: int = 0
) -> dict[str, float]:
    """Accuracy of A minus accuracy of B on the same test examples, with a 95% bootstrap interval.

    `pairs` holds one (A correct, B correct) pair per seed, both over the same test set in the same
    order. Each resample draws test examples with replacement, the same draw for every seed, and
    averages the seeds' paired differences: the interval shows what the choice of test examples
    alone can move (seed-to-seed spread is reported separately). An interval that excludes 0 is a
    difference the test set resolves.
    """
    differences = np.array([np.asarray(a, dtype=float) - np.asarray(b, dtype=float) for a, b in pairs])
    if differences.ndim != 2 or differences.shape[1] == 0:
        raise ValueError("paired_difference needs per-example outcomes of equal, non-zero length for every seed")
    per_example = differences.mean(axis=0)  # averaged over seeds; the draw below is shared by the seeds
    rng = np.random.default_rng(seed)
    draws = np.empty(resamples)
    for start in range(0, resamples, 1000):  # in blocks: 1000 x examples indices at a time
        count = min(1000, resamples - start)
        indices = rng.integers(0, per_example.size, size=(count, per_example.size))
        draws[start : start + count] = per_example[indices].mean(axis=1)
    low, high = np.percentile(draws, [2.5, 97.5])
    return {
        "difference": float(per_example.mean()),
        "low": float(low),
        "high": float(high),
        "seed_differences": [float(row.mean()) for row in differences],
        "examples": int(per_example.size),
    }


def interval_text(paired: dict[str, Any] | None) -> str:
    """A paired difference's 95% interval as `[low, high]` in points, or – when there is none."""
    if not paired:
        return "–"
    return f"[{100 * paired['low']:+.2f}, {100 * paired['high']:+.2f}]"


def mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def refresh_readme() -> Path:
    """Regenerate the studies' tables, so a committed result never leaves benchmarks/README.md stale."""
    subprocess.run([sys.executable, "-m", "benchmarks.update_readme"], cwd=ROOT, check=True)
    return ROOT / "benchmarks" / "README.md"


def git_commit(paths: list[Path], message: str, attempts: int = 5) -> None:
    """Commit just these files; retried because someone else may hold the index lock for a moment."""
    names = [str(path) for path in paths]
    for attempt in range(attempts):
        added = subprocess.run(["git", "add", *names], cwd=ROOT, check=False)
        committed = added.returncode == 0 and (
            subprocess.run(["git", "commit", "-q", "-m", message, "--", *names], cwd=ROOT, check=False).returncode == 0
        )
        if committed:
            return
        time.sleep(2 + 3 * attempt)
    print(f"[benchmark] could not commit {names}; the files are written, commit them by hand", flush=True)
