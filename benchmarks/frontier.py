"""The dendrites-vs-width frontier: at equal parameters, does a dendrite beat a wider plain model?

Published dendrite gains come from networks too small for their task, trained from scratch. This
study measures that regime with controls that make the answer clean. Per regime:

- the **width line**: plain models of several widths, trained for the same epoch budget, each
  ending with its best-validation weights;
- at a few small widths, with the same epoch budget, constant learning rate and growth decided on
  validation loss (the smoother signal; scores are test accuracy):
  - `restarts`: plain, restarted (best model, fresh optimizer) wherever PB would grow
    (`RestartOnPlateauCallback`, the same policy), stopping when a restart no longer helps; in a
    regime with a scheduled first growth, one restart at that epoch (`RestartFromBestCallback`);
  - `pb` and `gd`: `DendriteTrainer` with PB (cached candidate learner) or GD dendrites;
  - `shuffled_errors`: `pb` with candidates fitted to error rows permuted across examples;
  - `pb_lowrank`: `pb` with low-rank dendrite sets (`dendrite_rank`);
  - `wider`: the plain width whose parameter count is closest to the `pb` models' mean.

Regime `mnist1d`: MNIST-1D (50,000 generated training signals, so an MLP is short of capacity, not
of data), an MLP 40 -> w -> w -> 10 with dendrites on all three Linear layers; test accuracy, paired
over test signals.

Regime `masked_lm`: a 2-layer BERT of hidden size w (2 heads, feed-forward 4w) pretrained from
scratch with masked-LM on ~1M tokens of the offline corpus (`benchmarks.masked_lm`: 8K WordPiece
vocabulary, 64-token blocks, fixed validation and test masks), dendrites on the encoder's Linear
layers; test masked-LM loss, paired over test blocks. Its validation loss falls at every one of the
8 epochs, so a stall never comes: the first growth (and restart) is scheduled at the end of epoch 4. Total and non-embedding parameters are both
recorded; arms are matched on total parameters.

`python -m benchmarks.frontier` writes one file per regime/arm/width/seed under
`benchmarks/results/runs/frontier/` (skipped when present, committed with `--commit`), then
`benchmarks/results/frontier.json` and one plot per regime, `frontier_<regime>.png`. Every
dendrite arm is compared with `restarts` at its width and with the width line interpolated at its
parameter count (linear in log parameters), each with a paired bootstrap interval over test
examples (`benchmarks.common.paired_difference`).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

import hf_dendrites as hd
from experiments.metrics import build_compute_metrics
from hf_dendrites.model import restore_snapshot, take_snapshot
from hf_dendrites.version import versions

from . import masked_lm, mnist1d
from .common import RESULTS, RUNS, code_commit, git_commit, machine, paired_difference

FRONTIER_RUNS = RUNS / "frontier"
SUMMARY = RESULTS / "frontier.json"
SEEDS = (0, 1, 2)
DENDRITE_ARMS = ("pb", "gd", "shuffled_errors", "pb_lowrank")
ARMS = ("restarts", *DENDRITE_ARMS, "wider")
LINE = "plain"


@dataclass(frozen=True)
class Regime:
    """One task of the frontier: its widths, its budget and how a model of a width is built."""

    name: str
    kind: str  # which task builds its data and models: "mnist1d" or "masked_lm"
    metric: str  # reported on test
    greater_is_better: bool
    growth_metric: str  # validation metric that decides growth, restarts and the best model (lower is better)
    widths: tuple[int, ...]
    arm_widths: tuple[int, ...]
    epochs: int
    batch_size: int
    learning_rate: float
    target_modules: tuple[str, ...] | None  # None: the model family's defaults
    low_rank: int
    settings: dict[str, Any] = field(default_factory=dict)
    # Grow (and restart) at the end of this epoch without waiting for a stall: a model trained from
    # scratch on a fixed budget may still improve at every evaluation, and then never grows.
    first_growth_epoch: int | None = None


REGIMES = {
    "mnist1d": Regime(
        name="mnist1d",
        kind="mnist1d",
        metric="accuracy",
        greater_is_better=True,
        growth_metric="loss",
        widths=(8, 16, 24, 32, 48, 64, 96),
        arm_widths=(8, 16),
        epochs=80,
        batch_size=128,
        learning_rate=1e-3,
        target_modules=("layers.0", "layers.1", "classifier"),
        low_rank=2,
        settings={"train": 50_000, "validation": 5_000, "test": 5_000, "data_seed": 0, "depth": 2},
    ),
    "masked_lm": Regime(
        name="masked_lm",
        kind="masked_lm",
        metric="loss",
        greater_is_better=False,
        growth_metric="loss",
        widths=(32, 48, 64, 96, 128),
        arm_widths=(32, 64),
        epochs=8,
        batch_size=64,
        learning_rate=1e-3,
        target_modules=None,
        low_rank=4,
        first_growth_epoch=4,  # validation loss fell at every one of 8 epochs: stall-driven growth never came
        settings={
            "layers": 2,
            "heads": 2,
            "intermediate": "4 x hidden",
            "vocab_size": 8000,
            "max_seq_length": 64,
            "train_blocks": 16_000,
            "eval_blocks": 1_000,
            "mlm_probability": 0.15,
            "mask_seed": 0,
        },
    ),
}


class KeepBest(TrainerCallback):
    """Snapshot the model at every better validation score and put the best back when training ends
    (what `load_best_model_at_end` does, without writing checkpoints)."""

    def __init__(self, trainer: Trainer, metric: str, greater_is_better: bool) -> None:
        self.trainer, self.metric, self.greater_is_better = trainer, f"eval_{metric}", greater_is_better
        self.best_score: float | None = None
        self.snapshot = None

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        score = (metrics or {}).get(self.metric)
        if score is None:
            return control
        better = self.best_score is None or (
            score > self.best_score if self.greater_is_better else score < self.best_score
        )
        if better:
            self.best_score, self.snapshot = score, take_snapshot(self.trainer.model)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        if self.snapshot is not None:
            restore_snapshot(self.trainer.model, self.snapshot)
        return control


def dendrite_config(regime: Regime, arm: str) -> hd.DendriteConfig:
    """The dendrites of an arm: which layers, mode and rank."""
    return hd.DendriteConfig(
        target_modules=None if regime.target_modules is None else list(regime.target_modules),
        mode="gd" if arm == "gd" else "pb",
        dendrite_rank=regime.low_rank if arm == "pb_lowrank" else None,
    )


def growth_arguments(regime: Regime, arm: str) -> hd.DendriteTrainingArguments:
    """The growth settings of an arm (`restarts` follows the same policy without dendrites)."""
    return hd.DendriteTrainingArguments(
        candidate_shuffled_errors=arm == "shuffled_errors", first_growth_epoch=regime.first_growth_epoch
    )


def restart_callback(regime: Regime, trainer: Trainer) -> TrainerCallback:
    """The `restarts` arm: restart where PB would grow. With a scheduled first growth that is the end
    of that epoch (one restart; PB may grow again after a later stall, which this arm does not copy)."""
    if regime.first_growth_epoch is not None:
        return hd.RestartFromBestCallback(trainer, [regime.first_growth_epoch])
    return hd.RestartOnPlateauCallback(trainer, growth_arguments(regime, "restarts"))


def training_arguments(regime: Regime, seed: int, output_dir: str) -> TrainingArguments:
    return TrainingArguments(
        output_dir=output_dir,
        num_train_epochs=regime.epochs,
        per_device_train_batch_size=regime.batch_size,
        per_device_eval_batch_size=1024,
        learning_rate=regime.learning_rate,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        eval_strategy="epoch",
        save_strategy="no",
        logging_strategy="epoch",
        metric_for_best_model=regime.growth_metric,
        greater_is_better=False,
        report_to="none",
        seed=seed,
        data_seed=seed,
        disable_tqdm=True,
        dataloader_num_workers=0,
        use_cpu=True,
        prediction_loss_only=regime.kind == "masked_lm",  # no vocabulary-sized logits kept per evaluation
    )


class MNIST1DTask:
    """MNIST-1D signals and MLPs 40 -> w -> w -> 10; outcome per test example: right or wrong."""

    def __init__(self, regime: Regime) -> None:
        self.regime = regime

    def data(self) -> dict[str, Any]:
        settings = self.regime.settings
        splits = mnist1d.make_splits(settings["train"], settings["validation"], settings["test"], settings["data_seed"])
        return {**splits, "labels": [int(label) for label in splits["test"]["labels"]]}

    def collator(self, data: dict[str, Any], seed: int) -> None:
        return None  # the Trainer's default

    trainer_class = Trainer
    dendrite_trainer_class = hd.DendriteTrainer

    def model(self, width: int, seed: int) -> torch.nn.Module:
        return mnist1d.mlp([width] * self.regime.settings["depth"], seed)

    def parameters(self, width: int) -> tuple[int, int]:
        count = mnist1d.parameter_count([width] * self.regime.settings["depth"])
        return count, count

    def valid_widths(self, low: int, high: int) -> range:
        return range(low, high)

    def compute_metrics(self):
        return build_compute_metrics([self.regime.metric])

    def score(self, trainer: Trainer, data: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        prediction = trainer.predict(data["test"], metric_key_prefix="test")
        predictions = "".join(str(int(p)) for p in prediction.predictions.argmax(-1))
        return prediction.metrics[f"test_{self.regime.metric}"], {"test_predictions": predictions}

    def validation_score(self, metrics: dict[str, float]) -> float:
        return metrics[f"validation_{self.regime.metric}"]

    @staticmethod
    def outcomes(run: dict[str, Any], labels: list[int]) -> np.ndarray:
        predictions = np.array([int(c) for c in run["test_predictions"]])
        return (predictions == np.asarray(labels)).astype(float)


class MaskedLMTask:
    """Masked-LM from scratch on the offline corpus (`benchmarks.masked_lm`): BERTs of hidden size w;
    outcome per test block: its mean loss over the masked tokens (fixed masks)."""

    def __init__(self, regime: Regime) -> None:
        self.regime = regime

    def data(self) -> dict[str, Any]:
        settings = self.regime.settings
        texts = masked_lm.corpus()
        tokenizer = masked_lm.train_tokenizer(texts["train"]["text"], settings["vocab_size"])
        length = settings["max_seq_length"]
        cut = {name: masked_lm.blocks(split, tokenizer, length) for name, split in texts.items()}
        train = cut["train"].select(range(min(settings["train_blocks"], len(cut["train"]))))
        evaluation = {
            name: masked_lm.fix_masks(
                cut[name].select(range(min(settings["eval_blocks"], len(cut[name])))),
                tokenizer,
                settings["mlm_probability"],
                settings["mask_seed"] + offset,
            )
            for offset, name in enumerate(("validation", "test"))
        }
        return {"train": train, **evaluation, "tokenizer": tokenizer, "labels": None, "vocab": len(tokenizer)}

    def collator(self, data: dict[str, Any], seed: int) -> masked_lm.MaskedLMCollator:
        """Fresh masks for each run, drawn from its seed."""
        return masked_lm.MaskedLMCollator(data["tokenizer"], self.regime.settings["mlm_probability"], seed=seed)

    trainer_class = masked_lm.MaskedLMTrainer
    dendrite_trainer_class = masked_lm.MaskedLMDendriteTrainer

    def model(self, width: int, seed: int, vocab: int | None = None) -> torch.nn.Module:
        settings = self.regime.settings
        return masked_lm.masked_lm_model(
            vocab or settings["vocab_size"],
            width,
            settings["layers"],
            settings["heads"],
            4 * width,
            settings["max_seq_length"],
            seed=seed,
        )

    def parameters(self, width: int) -> tuple[int, int]:
        with torch.device("meta"):
            model = self.model(width, 0)
        return model.num_parameters(), masked_lm.non_embedding_parameters(model)

    def valid_widths(self, low: int, high: int) -> range:
        heads = self.regime.settings["heads"]
        return range(-(-low // heads) * heads, high, heads)

    def compute_metrics(self):
        return None  # the Trainer's loss is the metric

    def score(self, trainer: Trainer, data: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        """Token-weighted mean loss over the masked test tokens, and each block's mean loss."""
        model = trainer.model.eval()
        sums, counts = [], []
        with torch.no_grad():
            for start in range(0, len(data["test"]), 128):
                rows = data["test"][start : start + 128]
                scored = rows["labels"] != -100
                hidden = model.bert(input_ids=rows["input_ids"])[0]
                losses = torch.nn.functional.cross_entropy(
                    model.cls(hidden[scored]), rows["labels"][scored], reduction="none"
                )
                block = scored.nonzero()[:, 0]  # the block of each scored token
                sums.append(torch.zeros(len(scored)).index_add_(0, block, losses))
                counts.append(scored.sum(dim=1))
        total, count = torch.cat(sums), torch.cat(counts)
        per_block = (total / count.clamp(min=1)).tolist()
        return float(total.sum() / count.sum()), {"test_outcomes": [round(v, 5) for v in per_block]}

    def validation_score(self, metrics: dict[str, float]) -> float:
        return metrics["validation_loss"]

    @staticmethod
    def outcomes(run: dict[str, Any], labels: list[int] | None) -> np.ndarray:
        return np.asarray(run["test_outcomes"], dtype=float)


TASKS = {"mnist1d": MNIST1DTask, "masked_lm": MaskedLMTask}


def task_of(regime: Regime):
    return TASKS[regime.kind](regime)


def train_run(regime: Regime, arm: str, width: int, seed: int, data: dict[str, Any]) -> dict[str, Any]:
    """Train one model of `arm` at `width`; its scores, parameter counts, history and test outcomes."""
    task = task_of(regime)
    model = task.model(width, seed, data["vocab"]) if "vocab" in data else task.model(width, seed)
    non_embedding_base = task.parameters(width)[1] if regime.kind == "masked_lm" else None
    started = time.time()
    with tempfile.TemporaryDirectory() as output_dir:
        args = training_arguments(regime, seed, output_dir)
        common = {
            "args": args,
            "train_dataset": data["train"],
            "eval_dataset": data["validation"],
            "compute_metrics": task.compute_metrics(),
            "data_collator": task.collator(data, seed),
        }
        if arm in (LINE, "wider", "restarts"):
            trainer = task.trainer_class(model=model, **common)
            if arm == "restarts":
                trainer.add_callback(restart_callback(regime, trainer))
            trainer.add_callback(KeepBest(trainer, regime.growth_metric, greater_is_better=False))
        else:
            trainer = task.dendrite_trainer_class(
                model,
                dendrite_config=dendrite_config(regime, arm),
                dendrite_args=growth_arguments(regime, arm),
                plot_history=False,
                **common,
            )
        trainer.remove_callback(PrinterCallback)  # one line per run is printed instead
        trainer.train()
        model = trainer.model
        validation = trainer.evaluate(data["validation"], metric_key_prefix="validation")
        test, outcomes = task.score(trainer, data)
    history = [
        {"epoch": entry["epoch"], **{k[5:]: v for k, v in entry.items() if k in (f"eval_{regime.metric}", "eval_loss")}}
        for entry in trainer.state.log_history
        if "eval_loss" in entry
    ]
    report = hd.parameter_report(model) if hd.dendrite_layers(model) else None
    parameters = report["total"] if report else sum(p.numel() for p in model.parameters())
    dendrite_parameters = report["dendrites"] if report else 0
    result: dict[str, Any] = {
        "regime": regime.name,
        "arm": arm,
        "width": width,
        "seed": seed,
        "parameters": parameters,
        "non_embedding_parameters": parameters
        if non_embedding_base is None
        else non_embedding_base + dendrite_parameters,
        "validation": task.validation_score(validation),
        "test": test,
        "epochs_trained": trainer.state.epoch,
        "history": history,
        **outcomes,
        "wall_seconds": time.time() - started,
    }
    if report:
        result["dendrites_per_layer"] = report["dendrites_per_layer"]
        result["dendrite_parameters"] = report["dendrites"]
    trackers = [getattr(trainer, "dendrite_callback", None)] + [
        c for c in trainer.callback_handler.callbacks if isinstance(c, hd.RestartOnPlateauCallback)
    ]
    for holder in filter(None, trackers):  # growths, restarts, reverts and the end, with their epochs
        steps_per_epoch = math.ceil(len(data["train"]) / regime.batch_size)
        result["decisions"] = [
            {
                "epoch": None if record["step"] is None else record["step"] / steps_per_epoch,
                "action": record["action"],
                "score": record["score"],
                "candidate_score": record["candidate_score"],
                "reason": record["reason"],
            }
            for record in holder.tracker.state.history
            if record["action"] != "continue"
        ]
        result["completed_reason"] = holder.tracker.state.completed_reason
    if isinstance(trainer, hd.DendriteTrainer):  # per phase: held-out score, its chance level, per layer
        result["candidate_phases"] = trainer.dendrite_callback.candidate_scores_per_layer
        # training seconds and steps per phase and dendrite count: the same run's cost of a dendrite set
        result["step_time"] = trainer.dendrite_callback.timer.state_dict()
    return result


def run_file(regime: str, arm: str, width: int, seed: int, root: Path = FRONTIER_RUNS) -> Path:
    return root / regime / arm / f"w{width}" / f"seed{seed}.json"


def load_runs(regime: str, arm: str, root: Path = FRONTIER_RUNS) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted((root / regime / arm).glob("w*/seed*.json"))]


def wider_width(regime: Regime, width: int, root: Path = FRONTIER_RUNS) -> int | None:
    """The plain width whose parameter count is closest to the mean of the `pb` runs at `width`
    (None until all their seeds have landed)."""
    runs = [r for r in load_runs(regime.name, "pb", root) if r["width"] == width]
    if len(runs) < len(SEEDS):
        return None
    target = statistics.mean(r["parameters"] for r in runs)
    task = task_of(regime)
    return min(task.valid_widths(width, 16 * width), key=lambda w: abs(task.parameters(w)[0] - target))


def planned_runs(regime: Regime, root: Path = FRONTIER_RUNS):
    """(arm, width, seed) in the order they run: the width line, then each arm width's arms."""
    for width in regime.widths:
        for seed in SEEDS:
            yield LINE, width, seed
    for width in regime.arm_widths:
        for arm in ARMS:
            for seed in SEEDS:
                yield arm, width, seed


def run_study(regime_names: list[str], commit: bool, root: Path = FRONTIER_RUNS, limit: int | None = None) -> None:
    done = 0
    commit_id = code_commit()  # the code this process runs, whatever is committed while it runs
    for name in regime_names:
        regime = REGIMES[name]
        data = None
        for arm, width, seed in planned_runs(regime, root):
            path = run_file(name, arm, width, seed, root)
            if arm == "wider":
                wide = wider_width(regime, width, root)
                if wide is None:
                    print(f"[frontier] {name}/{arm}/w{width}/seed{seed}: waits for the pb runs at width {width}")
                    continue
            if path.exists():
                continue
            if limit is not None and done >= limit:
                return
            if data is None:
                print(f"[frontier] {name}: preparing data", flush=True)
                data = task_of(regime).data()
            train_width = wide if arm == "wider" else width
            print(f"[frontier] {name}/{arm}/w{width}/seed{seed} (trained width {train_width})", flush=True)
            result = train_run(regime, "wider" if arm == "wider" else arm, train_width, seed, data)
            result["arm_width"] = width
            result["benchmark"] = {
                "command": "python -m benchmarks.frontier",
                "commit": commit_id,
                "machine": machine(),
                "versions": versions(),
                "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                "regime": {k: v for k, v in regime.__dict__.items()},
            }
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=1) + "\n")
            print(
                f"[frontier] {name}/{arm}/w{width}/seed{seed}: test {regime.metric} {result['test']:.4f} "
                f"(validation {result['validation']:.4f}), {result['parameters']} parameters, "
                f"{result['wall_seconds']:.0f} s",
                flush=True,
            )
            done += 1
            if commit:
                git_commit([path], f"Frontier: {name} / {arm} / w{width} / seed{seed}")


# ---------------------------------------------------------------------------- summary


def line_points(runs: list[dict[str, Any]]) -> list[tuple[float, int]]:
    """(mean parameters, width) of the width line, by parameters."""
    widths = sorted({r["width"] for r in runs})
    return sorted((statistics.mean(r["parameters"] for r in runs if r["width"] == w), w) for w in widths)


def interpolation(points: list[tuple[float, int]], parameters: float) -> tuple[int, int, float] | None:
    """The two line widths around `parameters` and the weight of the upper one (linear in log
    parameters); None outside the line."""
    for (low_p, low_w), (high_p, high_w) in zip(points, points[1:]):
        if low_p <= parameters <= high_p:
            weight = (math.log(parameters) - math.log(low_p)) / (math.log(high_p) - math.log(low_p))
            return low_w, high_w, weight
    return None


def width_line_parameters_at(line: list[tuple[float, float]], metric: float, greater_is_better: bool) -> float | None:
    """The parameter count at which the plain width line, `(parameters, metric mean)` by parameters,
    first reaches `metric` (linear in the metric, in log parameters): what a plain model needs to
    match an arm. None when even the smallest plain width does as well, or no plain width does."""

    def reaches(value: float) -> bool:
        return value >= metric if greater_is_better else value <= metric

    if not line or reaches(line[0][1]):
        return None
    for (low_p, low_m), (high_p, high_m) in zip(line, line[1:]):
        if reaches(high_m):
            weight = (metric - low_m) / (high_m - low_m)
            return math.exp(math.log(low_p) + weight * (math.log(high_p) - math.log(low_p)))
    return None


def step_cost_of_one_set(run: dict[str, Any]) -> float | None:
    """Seconds per neuron-phase step with one dendrite set over seconds per step without, in the same
    run (so on the same machine and load); None for runs that never trained with exactly one set."""
    neuron = run.get("step_time", {}).get("neuron", {})
    plain, one_set = neuron.get("0"), neuron.get("1")
    if not (plain and one_set and plain["steps"] and one_set["steps"]):
        return None
    return (one_set["seconds"] / one_set["steps"]) / (plain["seconds"] / plain["steps"])


def summarise_regime(regime: Regime, labels: list[int] | None, root: Path = FRONTIER_RUNS) -> dict[str, Any]:
    outcomes = task_of(regime).outcomes
    points = []
    by_arm = {arm: load_runs(regime.name, arm, root) for arm in (LINE, *ARMS)}
    for arm, runs in by_arm.items():
        for width in sorted({r["arm_width"] if "arm_width" in r else r["width"] for r in runs}):
            group = [r for r in runs if r.get("arm_width", r["width"]) == width]
            scores = [r["test"] for r in group]
            points.append(
                {
                    "arm": arm,
                    "width": width,
                    "trained_width": group[0]["width"],
                    "parameters": statistics.mean(r["parameters"] for r in group),
                    "non_embedding_parameters": statistics.mean(r["non_embedding_parameters"] for r in group),
                    "metric_mean": statistics.mean(scores),
                    "metric_std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
                    "validation_mean": statistics.mean(r["validation"] for r in group),
                    "epochs_trained_mean": statistics.mean(r["epochs_trained"] for r in group),
                    "dendrites_per_neuron_mean": statistics.mean(
                        statistics.mean(r["dendrites_per_layer"].values()) for r in group
                    )
                    if group[0].get("dendrites_per_layer")
                    else 0.0,
                    "seeds": sorted(r["seed"] for r in group),
                }
            )
    line = by_arm[LINE]
    line_at = line_points(line)
    line_metric = sorted((p["parameters"], p["metric_mean"]) for p in points if p["arm"] == LINE)
    for point in points:
        if point["arm"] == LINE:
            continue
        group = [r for r in by_arm[point["arm"]] if r.get("arm_width", r["width"]) == point["width"]]
        # compression: what the width line needs for this arm's score, and this arm's share of it
        needed = width_line_parameters_at(line_metric, point["metric_mean"], regime.greater_is_better)
        point["width_line_parameters_at_equal_metric"] = needed
        point["parameters_over_width_line"] = None if needed is None else point["parameters"] / needed
        costs = [c for c in map(step_cost_of_one_set, group) if c is not None]
        if costs:
            point["neuron_step_cost_of_one_set"] = statistics.mean(costs)
            point["neuron_step_cost_range"] = [min(costs), max(costs)]
            point["neuron_step_cost_runs"] = len(costs)
    comparisons = []
    for arm in (*DENDRITE_ARMS, "wider"):
        for width in regime.arm_widths:
            group = {r["seed"]: r for r in by_arm[arm] if r.get("arm_width", r["width"]) == width}
            restarts = {r["seed"]: r for r in by_arm["restarts"] if r["width"] == width}
            entry: dict[str, Any] = {"arm": arm, "width": width}
            seeds = sorted(set(group) & set(restarts))
            if seeds:
                entry["vs_restarts"] = paired_difference(
                    [(outcomes(group[s], labels), outcomes(restarts[s], labels)) for s in seeds]
                )
            if group:
                parameters = statistics.mean(r["parameters"] for r in group.values())
                place = interpolation(line_at, parameters)
                if place is not None:
                    low_w, high_w, weight = place
                    low = {r["seed"]: r for r in line if r["width"] == low_w}
                    high = {r["seed"]: r for r in line if r["width"] == high_w}
                    seeds = sorted(set(group) & set(low) & set(high))
                    pairs = [
                        (
                            outcomes(group[s], labels),
                            (1 - weight) * outcomes(low[s], labels) + weight * outcomes(high[s], labels),
                        )
                        for s in seeds
                    ]
                    if pairs:
                        entry["vs_width_line"] = {
                            **paired_difference(pairs),
                            "between_widths": [low_w, high_w],
                            "weight_of_upper": weight,
                        }
                else:
                    entry["vs_width_line"] = None
            if len(entry) > 2:
                comparisons.append(entry)
    return {
        "metric": regime.metric,
        "greater_is_better": regime.greater_is_better,
        "settings": {
            "epochs": regime.epochs,
            "growth_metric": f"validation {regime.growth_metric}",
            "batch_size": regime.batch_size,
            "learning_rate": regime.learning_rate,
            "target_modules": None if regime.target_modules is None else list(regime.target_modules),
            "first_growth_epoch": regime.first_growth_epoch,
            "low_rank": regime.low_rank,
            **regime.settings,
        },
        "points": points,
        "comparisons": comparisons,
        "commits": sorted({r.get("benchmark", {}).get("commit", "unknown") for runs in by_arm.values() for r in runs}),
    }


def test_labels(regime: Regime) -> list[int] | None:
    """What the test outcomes are scored against (MNIST-1D labels; masked-LM runs keep their losses)."""
    return task_of(regime).data()["labels"] if regime.kind == "mnist1d" else None


def plot(regime_name: str, summary: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    scale = 100 if summary["metric"] == "accuracy" else 1
    styles = {LINE: ("k", "o", "-"), "restarts": ("tab:gray", "s", ""), "wider": ("tab:brown", "D", "")}
    colours = {"pb": "tab:blue", "gd": "tab:orange", "shuffled_errors": "tab:purple", "pb_lowrank": "tab:green"}
    for arm in (LINE, *ARMS):
        arm_points = sorted((p for p in summary["points"] if p["arm"] == arm), key=lambda p: p["parameters"])
        if not arm_points:
            continue
        colour, marker, line = styles.get(arm, (colours.get(arm, "tab:red"), "^", ""))
        axis.errorbar(
            [p["parameters"] for p in arm_points],
            [scale * p["metric_mean"] for p in arm_points],
            yerr=[scale * p["metric_std"] for p in arm_points],
            color=colour,
            marker=marker,
            linestyle=line or "none",
            capsize=3,
            label="plain, width line" if arm == LINE else arm,
        )
    axis.set_xscale("log")
    axis.set_xlabel("parameters (log scale)")
    axis.set_ylabel(f"test {summary['metric']}" + (" (%)" if scale == 100 else ""))
    axis.set_title(f"{regime_name}: dendrites against width (mean and std of 3 seeds)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_summary(regime_names: list[str], root: Path = FRONTIER_RUNS) -> dict[str, Any]:
    regimes = {}
    for name in regime_names:
        if not (root / name).is_dir():
            continue
        regime = REGIMES[name]
        regimes[name] = summarise_regime(regime, test_labels(regime), root)
        plot(name, regimes[name], RESULTS / f"frontier_{name}.png")
    summary = {
        "command": "python -m benchmarks.frontier",
        "machine": machine(),
        "versions": versions(),
        "regimes": regimes,
    }
    SUMMARY.write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=list(REGIMES))
    parser.add_argument("--commit", action="store_true", help="git-commit each result file as it lands")
    parser.add_argument("--limit", type=int, default=None, help="stop after this many new runs")
    parser.add_argument("--summary_only", action="store_true")
    args = parser.parse_args(argv)
    if not args.summary_only:
        run_study(args.regimes, args.commit, limit=args.limit)
    write_summary(list(REGIMES))  # every regime with runs, not only those run now
    print(f"wrote {SUMMARY}")


if __name__ == "__main__":
    main()
