"""The candidate learner on a real model's rows: does choosing each candidate's epoch on held-out
examples help the wide token layers, where candidates with hundreds of inputs overfit the cache?

    python -m benchmarks.learner [--seeds 0 1 2] [--commit]

Per seed: MiniLM-L2 fine-tuned for `FINE_TUNE_EPOCHS` on the default recipe's movie-review
training sentences (the state a first dendrite phase sees), one cache pass over them with the
library defaults, then every layer's candidates fitted on that same cache once per early-stopping
variant (`none`: the last epoch's weights; `layer`: one check for the whole layer; `candidate`:
per candidate). Each variant's score is the kept candidates' |r| on scoring examples that neither
trained nor chose them, beside the shuffled-error chance level. Training sentences only: no
validation or test text is read. One file per seed in `benchmarks/results/runs/learner/`,
summary in `benchmarks/results/learner.json` and `learner.png`.
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


def run_seed(seed: int) -> dict[str, Any]:
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
        "cache_seconds": time.perf_counter() - started,
        "rows": {name: len(rows) for name, rows in cached.items()},
        "variants": {},
    }
    for variant in VARIANTS:
        settings = replace(fit_settings(config), early_stopping=variant)
        layers_record = {}
        for name, layer in layers.items():
            started = time.perf_counter()
            # The same generator seed per variant: the same initial candidates and the same split.
            fit = fit_layer(layer, cached[name], settings, torch.Generator().manual_seed(seed))
            layers_record[name] = {
                "score": fit.score,
                "chance": fit.chance,
                "train_score": fit.train_score,
                "seconds": time.perf_counter() - started,
            }
        record["variants"][variant] = layers_record
        print(f"[learner] seed {seed} / {variant}: mean score {mean_of(layers_record, 'score'):.4f}", flush=True)
    return record


def mean_of(layers_record: dict[str, dict[str, float]], key: str) -> float:
    return statistics.mean(layer[key] for layer in layers_record.values())


def layer_type(name: str) -> str:
    """`bert.encoder.layer.0.attention.self.query` -> `0.attention.self.query` (depth and kind)."""
    parts = name.split(".")
    return ".".join(parts[3:]) if parts[:3] == ["bert", "encoder", "layer"] else name.removeprefix("bert.")


def summarise(root: Path = RUNS) -> dict[str, Any]:
    runs = [json.loads(path.read_text()) for path in sorted(root.glob("seed*.json"))]
    summary: dict[str, Any] = {
        "command": "python -m benchmarks.learner",
        "benchmark": {"machine": machine(), "torch": torch.__version__, "python": sys.version.split()[0]},
        "commits": sorted({run["commit"] for run in runs}),
        "variants": {},
    }
    for variant in VARIANTS:
        per_type: dict[str, dict[str, list[float]]] = {}
        for run in runs:
            for name, layer in run["variants"][variant].items():
                entry = per_type.setdefault(layer_type(name), {"score": [], "chance": [], "train_score": []})
                for key in entry:
                    entry[key].append(layer[key])
        summary["variants"][variant] = {
            "seeds": [run["seed"] for run in runs],
            "score_mean": statistics.mean(mean_of(run["variants"][variant], "score") for run in runs),
            "chance_mean": statistics.mean(mean_of(run["variants"][variant], "chance") for run in runs),
            "train_score_mean": statistics.mean(mean_of(run["variants"][variant], "train_score") for run in runs),
            "fit_seconds_mean": statistics.mean(
                sum(layer["seconds"] for layer in run["variants"][variant].values()) for run in runs
            ),
            "per_layer": {
                kind: {key: statistics.mean(values) for key, values in entry.items()}
                for kind, entry in per_type.items()
            },
        }
    return summary


def plot(summary: dict[str, Any], path: Path = PLOT) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = list(summary["variants"]["none"]["per_layer"])
    figure, axis = plt.subplots(figsize=(10, 4))
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
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", nargs="*", type=int, default=list(SEEDS))
    parser.add_argument("--commit", action="store_true", help="commit each result file as it lands")
    args = parser.parse_args(argv)
    RUNS.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        path = RUNS / f"seed{seed}.json"
        if path.exists():
            continue
        path.write_text(json.dumps(run_seed(seed), indent=1) + "\n")
        if args.commit:
            git_commit([path], f"Benchmark result: learner / seed {seed}")
    summary = summarise()
    SUMMARY.write_text(json.dumps(summary, indent=1) + "\n")
    plot(summary)
    if args.commit:
        git_commit([SUMMARY, PLOT], "Benchmark summary: learner")


if __name__ == "__main__":
    main()
