"""The candidate learner on a real model's rows: does choosing each candidate's epoch on held-out
examples help the wide token layers, where candidates with hundreds of inputs overfit the cache?
And what does a cheaper phase (fewer epochs, fewer cached rows) give up?

    python -m benchmarks.learner [--studies early_stopping budget] [--seeds 0 1 2] [--commit]

Per seed: MiniLM-L2 fine-tuned for `FINE_TUNE_EPOCHS` on the default recipe's movie-review
training sentences (the state a first dendrite phase sees), one cache pass over them with the
library defaults, then every layer's candidates fitted on that same cache once per early-stopping
variant (`none`: the last epoch's weights; `layer`: one check for the whole layer; `candidate`:
per candidate). Each variant's score is the kept candidates' |r| on scoring examples that neither
trained nor chose them, beside the shuffled-error chance level. The `budget` study fits the
same way with fewer candidate epochs or a smaller cache (`BUDGETS`) and times each fit against
the seed's own fine-tuning epoch: the cost of a dendrite phase in neuron epochs. Training
sentences only: no validation or test text is read. One file per study and seed in
`benchmarks/results/runs/learner/`, summary in `benchmarks/results/learner.json` and `learner.png`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import hf_dendrites as hd
from benchmarks.common import RESULTS, code_commit, git_commit, machine
from experiments.data import load_task
from experiments.pretrained import resolve_model
from hf_dendrites.candidate_cache import collect_candidate_rows, rows_per_layer
from hf_dendrites.candidate_fit import fit_layer
from hf_dendrites.dendrite_phase import fit_settings

RUNS = RESULTS / "runs" / "learner"
SUMMARY = RESULTS / "learner.json"
PLOT = RESULTS / "learner.png"
VARIANTS = ("none", "layer", "candidate")
# Cheaper dendrite phases, each a change to the learner's defaults: (candidate epochs, cached rows
# per layer; None keeps the default). "untrained" is the floor every budget must clear.
BUDGETS: dict[str, tuple[int | None, int | None]] = {
    "untrained": (0, None),
    "5 epochs": (5, None),
    "10 epochs": (10, None),
    "20 epochs": (20, None),
    "default": (None, None),
    "2048 rows": (None, 2048),
    "2048 rows, 10 epochs": (10, 2048),
}
STUDIES = ("early_stopping", "budget")
SEEDS = (0, 1, 2)
TRAIN_SENTENCES = 3000  # the default recipe's max_train_samples
FINE_TUNE_EPOCHS = 2
BATCH = 32
MAX_LENGTH = 64


def tokenized_batches(tokenizer, texts: list[str], labels: list[int]) -> list[dict[str, torch.Tensor]]:
    batches = []
    for start in range(0, len(texts), BATCH):
        batch = tokenizer(
            texts[start : start + BATCH], truncation=True, max_length=MAX_LENGTH, padding=True, return_tensors="pt"
        )
        batch["labels"] = torch.tensor(labels[start : start + BATCH])
        batches.append(dict(batch))
    return batches


def fine_tuned_model(seed: int) -> tuple[torch.nn.Module, list[dict[str, torch.Tensor]]]:
    """MiniLM-L2 with default dendrites (none grown), fine-tuned on the training sentences."""
    torch.manual_seed(seed)
    train = load_task("movie_reviews")["train"].shuffle(seed=seed).select(range(TRAIN_SENTENCES))
    path, overrides = resolve_model("minilm-l2")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, **overrides)
    model = hd.add_dendrites(model, hd.DendriteConfig())
    batches = tokenized_batches(tokenizer, train["text"], train["label"])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-5)
    model.train()
    for _ in range(FINE_TUNE_EPOCHS):
        for batch in batches:
            optimizer.zero_grad(set_to_none=True)
            model(**batch).loss.backward()
            optimizer.step()
    return model, batches


def cached_rows(seed: int) -> tuple[dict[str, Any], dict[str, torch.nn.Module], dict[str, Any]]:
    """The fine-tuned model's layers and one cache pass with the defaults, timed."""
    started = time.perf_counter()
    model, batches = fine_tuned_model(seed)
    tuned = time.perf_counter() - started
    config = hd.DendriteTrainingArguments()  # the candidate learner's defaults
    layers = hd.dendrite_layers(model)
    started = time.perf_counter()
    cached = collect_candidate_rows(
        model,
        batches,
        lambda batch: model(**batch).loss,
        max_rows=rows_per_layer(layers, config.candidate_cache_gib * 2**30, config.candidate_cache_rows),
        generator=torch.Generator().manual_seed(seed),
        error_signal=config.error_signal,
        positions=config.candidate_positions,
    )
    record: dict[str, Any] = {
        "seed": seed,
        "commit": code_commit(),
        "fine_tune_seconds": tuned,
        "fine_tune_epoch_seconds": tuned / FINE_TUNE_EPOCHS,
        "cache_seconds": time.perf_counter() - started,
        "rows": {name: len(rows) for name, rows in cached.items()},
    }
    return cached, layers, record


def fitted(layers, cached, settings, seed: int, rows: int | None = None) -> dict[str, dict[str, float]]:
    """Every layer's fit: held-out score, chance, training score and seconds."""
    record = {}
    for name, layer in layers.items():
        layer_rows = cached[name]
        if rows is not None and len(layer_rows) > rows:  # a smaller uniform sample of the same cache
            index = torch.randperm(len(layer_rows), generator=torch.Generator().manual_seed(seed))[:rows]
            layer_rows = layer_rows.subset(index.sort().values)
        started = time.perf_counter()
        # The same generator seed per variant: the same initial candidates and the same split.
        fit = fit_layer(layer, layer_rows, settings, torch.Generator().manual_seed(seed))
        record[name] = {
            "score": fit.score,
            "chance": fit.chance,
            "train_score": fit.train_score,
            "seconds": time.perf_counter() - started,
        }
    return record


def run_seed(seed: int, study: str = "early_stopping") -> dict[str, Any]:
    cached, layers, record = cached_rows(seed)
    defaults = fit_settings(hd.DendriteTrainingArguments())
    record["study"], record["variants"] = study, {}
    if study == "early_stopping":
        plan = {variant: (replace(defaults, early_stopping=variant), None) for variant in VARIANTS}
    else:
        plan = {
            name: (defaults if epochs is None else replace(defaults, epochs=epochs), rows)
            for name, (epochs, rows) in BUDGETS.items()
        }
    for variant, (settings, rows) in plan.items():
        record["variants"][variant] = fitted(layers, cached, settings, seed, rows)
        print(
            f"[learner] seed {seed} / {variant}: mean score {mean_of(record['variants'][variant], 'score'):.4f}",
            flush=True,
        )
    return record


def mean_of(layers_record: dict[str, dict[str, float]], key: str) -> float:
    return statistics.mean(layer[key] for layer in layers_record.values())


def layer_type(name: str) -> str:
    """`bert.encoder.layer.0.attention.self.query` -> `0.attention.self.query` (depth and kind)."""
    parts = name.split(".")
    return ".".join(parts[3:]) if parts[:3] == ["bert", "encoder", "layer"] else name.removeprefix("bert.")


def run_path(study: str, seed: int, root: Path = RUNS) -> Path:
    return root / (f"seed{seed}.json" if study == "early_stopping" else f"{study}_seed{seed}.json")


def summarise_study(runs: list[dict[str, Any]], variants) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for variant in variants:
        per_type: dict[str, dict[str, list[float]]] = {}
        for run in runs:
            for name, layer in run["variants"][variant].items():
                entry = per_type.setdefault(layer_type(name), {"score": [], "chance": [], "train_score": []})
                for key in entry:
                    entry[key].append(layer[key])
        fit_seconds = [sum(layer["seconds"] for layer in run["variants"][variant].values()) for run in runs]
        summary[variant] = {
            "seeds": [run["seed"] for run in runs],
            "score_mean": statistics.mean(mean_of(run["variants"][variant], "score") for run in runs),
            "chance_mean": statistics.mean(mean_of(run["variants"][variant], "chance") for run in runs),
            "train_score_mean": statistics.mean(mean_of(run["variants"][variant], "train_score") for run in runs),
            "fit_seconds_mean": statistics.mean(fit_seconds),
            "per_layer": {
                kind: {key: statistics.mean(values) for key, values in entry.items()}
                for kind, entry in per_type.items()
            },
        }
        if all("fine_tune_epoch_seconds" in run for run in runs):
            # cache pass + fit over the same run's fine-tuning epoch: the phase in neuron epochs
            summary[variant]["phase_over_epoch_mean"] = statistics.mean(
                (run["cache_seconds"] + seconds) / run["fine_tune_epoch_seconds"]
                for run, seconds in zip(runs, fit_seconds)
            )
    return summary


def summarise(root: Path = RUNS) -> dict[str, Any]:
    runs = [json.loads(path.read_text()) for path in sorted(root.glob("seed*.json"))]
    budget_runs = [json.loads(path.read_text()) for path in sorted(root.glob("budget_seed*.json"))]
    summary: dict[str, Any] = {
        "command": "python -m benchmarks.learner",
        "benchmark": {"machine": machine(), "torch": torch.__version__, "python": sys.version.split()[0]},
        "commits": sorted({run["commit"] for run in runs + budget_runs}),
        "variants": summarise_study(runs, VARIANTS) if runs else {},
    }
    if budget_runs:
        summary["budgets"] = summarise_study(budget_runs, BUDGETS)
        summary["budgets_settings"] = {
            name: {"candidate_epochs": epochs, "candidate_cache_rows": rows} for name, (epochs, rows) in BUDGETS.items()
        }
        summary["budgets_neuron_epoch_seconds_mean"] = statistics.mean(
            run["fine_tune_epoch_seconds"] for run in budget_runs
        )
        summary["budgets_cache_seconds_mean"] = statistics.mean(run["cache_seconds"] for run in budget_runs)
    return summary


def plot(summary: dict[str, Any], path: Path = PLOT) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = summary.get("budgets")
    figure, axes = plt.subplots(1, 2 if budgets else 1, figsize=(15 if budgets else 10, 4), squeeze=False)
    axis = axes[0][0]
    kinds = list(summary["variants"]["none"]["per_layer"])
    width = 0.8 / (len(VARIANTS) + 1)
    for offset, variant in enumerate(VARIANTS):
        values = [summary["variants"][variant]["per_layer"][kind]["score"] for kind in kinds]
        axis.bar([i + offset * width for i in range(len(kinds))], values, width, label=f"held-out |r|, {variant}")
    chance = [summary["variants"]["none"]["per_layer"][kind]["chance"] for kind in kinds]
    axis.bar([i + len(VARIANTS) * width for i in range(len(kinds))], chance, width, label="chance", color="grey")
    axis.set_xticks([i + 0.4 for i in range(len(kinds))], kinds, rotation=30, ha="right", fontsize=8)
    axis.set_ylabel("candidate correlation")
    axis.set_title("MiniLM-L2, movie reviews: candidates by early-stopping variant")
    axis.legend(fontsize=8)
    if budgets:
        axis = axes[0][1]
        for name, row in budgets.items():
            axis.scatter(row["phase_over_epoch_mean"], row["score_mean"])
            axis.annotate(name, (row["phase_over_epoch_mean"], row["score_mean"]), fontsize=8)
        chance = statistics.mean(row["chance_mean"] for row in budgets.values())
        axis.axhline(chance, color="grey", linestyle=":", label="chance (mean over budgets)")
        axis.axvline(1.0, color="black", linewidth=0.8, label="one fine-tuning epoch")
        axis.set_xlabel("dendrite phase (cache pass + fit) / fine-tuning epoch")
        axis.set_ylabel("held-out |r|, mean over layers")
        axis.set_title("What a cheaper phase gives up")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", nargs="*", choices=STUDIES, default=list(STUDIES))
    parser.add_argument("--seeds", nargs="*", type=int, default=list(SEEDS))
    parser.add_argument("--commit", action="store_true", help="commit each result file as it lands")
    args = parser.parse_args(argv)
    RUNS.mkdir(parents=True, exist_ok=True)
    for study in args.studies:
        for seed in args.seeds:
            path = run_path(study, seed)
            if path.exists():
                continue
            path.write_text(json.dumps(run_seed(seed, study), indent=1) + "\n")
            if args.commit:
                git_commit([path], f"Benchmark result: learner / {study} / seed {seed}")
    summary = summarise()
    SUMMARY.write_text(json.dumps(summary, indent=1) + "\n")
    plot(summary)
    if args.commit:
        git_commit([SUMMARY, PLOT], "Benchmark summary: learner")


if __name__ == "__main__":
    main()
