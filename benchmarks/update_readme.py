#!/usr/bin/env python
"""Regenerate the studies' result tables (benchmarks/README.md) from the committed JSON in benchmarks/results.

    python -m benchmarks.update_readme          # rewrite benchmarks/README.md in place
    python -m benchmarks.update_readme --check  # exit 1 if benchmarks/README.md is out of date

Each table lives between `<!-- NAME:start -->` and `<!-- NAME:end -->` markers; nothing in a
table is typed by hand.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from benchmarks.common import interval_text
from benchmarks.growth_pairs import pairs_table
from benchmarks.growth_sources import sources_table

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def layers_table(results: dict) -> str:
    lines = [
        f"Measured with `{results['command']}` on {results['machine'].get('cpu', 'a CPU')} "
        f"({results['machine'].get('torch_threads', '?')} threads), torch {results['versions']['torch']}. "
        "Ratios are to the same step without dendrites; the ideal is the FLOP ratio.",
        "",
        "| step | time ratio | ideal | measured / ideal | memory ratio | ideal | measured / ideal |",
        "|---|---|---|---|---|---|---|",
    ]
    memory = results["memory"]
    for mode in ("pb", "gd"):
        memory_rows = {row["dendrites"]: row for row in memory.get(mode, [])}
        for row in results["training_step"][mode]:
            if row["dendrites"] == 0:
                continue
            m = memory_rows.get(row["dendrites"], {})
            lines.append(
                f"| {mode} neuron phase, {row['dendrites']} dendrite(s) | {row['ratio']:.2f} | {row['ideal_ratio']:.2f} "
                f"| {row['measured_over_ideal']:.2f} | {m.get('ratio', float('nan')):.2f} "
                f"| {m.get('ideal_ratio', float('nan')):.2f} | {m.get('measured_over_ideal', float('nan')):.2f} |"
            )
    low_rank_memory = {row["rank"]: row for row in memory.get("pb_low_rank", [])}
    for row in results["training_step"].get("pb_low_rank", []):
        m = low_rank_memory.get(row["rank"], {})
        lines.append(
            f"| pb neuron phase, 1 low-rank dendrite set (rank {row['rank']}) | {row['ratio']:.2f} "
            f"| {row['ideal_ratio']:.2f} | {row['measured_over_ideal']:.2f} | {m.get('ratio', float('nan')):.2f} "
            f"| {m.get('ideal_ratio', float('nan')):.2f} | {m.get('measured_over_ideal', float('nan')):.2f} |"
        )
    candidate_memory = {row.get("label", row["candidates"]): row for row in memory.get("candidate_step", [])}
    for row in results["candidate_step"]:
        m = candidate_memory.get(row.get("label", row["candidates"]), {})
        fraction = row.get("token_fraction", 1.0)
        tokens = f", {fraction:.0%} of tokens" if fraction < 1 else ""
        signal = row.get("error_signal", "backprop")
        tokens += f", error from {signal}" if signal != "backprop" else ""
        tokens += ", [CLS] only" if row.get("positions", "all") == "first" else ""
        lines.append(
            f"| dendrite phase, {row['candidates']} candidate(s){tokens} | {row['ratio']:.2f} | {row['ideal_ratio']:.2f} "
            f"| {row['measured_over_ideal']:.2f} | {m.get('ratio', float('nan')):.2f} "
            f"| {m.get('ideal_ratio', float('nan')):.2f} | {m.get('measured_over_ideal', float('nan')):.2f} |"
        )
    return "\n".join(lines)


def _fmt(value: float | None, pattern: str) -> str:
    if value is None:
        return "–"
    text = format(value, pattern)
    if text.startswith("-") and float(text) == 0:  # a rounding residue, not a loss: "+0.0", not "-0.0"
        text = ("+" if "+" in pattern else "") + text[1:]
    return text


def _points(fraction: float | None) -> str:
    return _fmt(None if fraction is None else 100 * fraction, "+.2f")


def _millions(count: float | None) -> str:
    """Parameters in millions, or – for runs that did not record them."""
    return "–" if count is None else f"{count / 1e6:.3f}M"


def benchmark_table(results: dict) -> str:
    machine = results["machine"]
    lines = [
        f"`{results['command']}` ({results['recipe']}, 3 seeds planned) on {machine.get('cpu', 'a CPU')}, "
        f"{machine.get('cores', '?')} cores; n = seeds finished. Error change: relative change of the test "
        "error vs the plain fine-tune (negative is better). Trained: parameters that train in the final "
        "model (runs from before this column: –); `restarts`: the plain fine-tune restarted (best model, "
        "fresh AdamW) wherever PB would grow, no dendrites (`--restart_on_plateau`); `lora*`: LoRA rank 8 on query and value at 5e-4 "
        "(`lora_full`: LoRA alone over the whole epoch budget, keeping its best evaluation); `pb`: the cached "
        "candidate learner at the library's defaults (50 epochs on up to 8,192 cached rows per layer); `pb_short_phase`: "
        "the same with the recipes' cheaper phase (10 epochs on 2,048 rows); `pb_streaming`: PB with the former streaming learner, whose runs these are "
        "from before the change (recorded as `--dendrites pb`). Paired: "
        "test accuracy minus that of the same seeds' plain fine-tune (`lora_*`: of LoRA alone), "
        "points, with a 95% bootstrap interval over test examples; – until every seed of both kept its "
        "test predictions. vs baseline: seconds per epoch over the plain fine-tune's, only where both ran on one "
        "kind of machine (–: runs on different CPUs, whose timings do not compare).",
        "",
        "| method | n | test accuracy | macro-F1 | error change | paired (points) | parameters | trained | dendrites "
        "| epochs | s / epoch | vs baseline | dendrite / neuron step |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in results["methods"].items():
        reduction = m.get("test_error_reduction_vs_baseline")
        lines.append(
            f"| {name} | {m['seeds']} | {100 * m['test_accuracy_mean']:.2f} ± {100 * m['test_accuracy_std']:.2f} "
            f"| {100 * m['test_macro_f1_mean']:.2f} | {_fmt(None if reduction is None else -100 * reduction, '+.1f')}% "
            f"| {_paired(m.get('paired_difference'))} | {m['parameters'] / 1e6:.2f}M | {_millions(m.get('trainable_parameters'))} "
            f"| {_fmt(m['dendrites'], '.1f')} | {_fmt(m['epochs'], '.1f')} "
            f"| {_fmt(m['seconds_per_epoch'], '.1f')} | {_fmt(m.get('seconds_per_epoch_vs_baseline'), '.2f')} "
            f"| {_fmt(m.get('dendrite_step_over_neuron_step'), '.2f')} |"
        )
    lines.extend(control_lines(results["methods"]))
    lines.extend(target_lines(results.get("targets", {})))
    return "\n".join(lines).replace("–%", "–")


def control_lines(methods: dict) -> list[str]:
    """A dendrite method against its controls (restarts alone, the former learner, LoRA over the whole
    budget): paired test differences in points over the seeds both finished."""
    lines = []
    for name, m in methods.items():
        found = m.get("minus_controls") or {}
        parts = [
            f"minus {control} {_paired(entry)} (seeds {', '.join(map(str, entry['seeds']))})"
            for control, entry in found.items()
            if entry
        ]
        if parts:
            lines.append(f"- {name}, paired test accuracy: " + "; ".join(parts) + ".")
    if lines:
        lines.insert(0, "")
    return lines


def target_lines(found: dict) -> list[str]:
    """One line per goal of the benchmark: PB's figure, the goal, met or not."""
    lines = []
    verdict = {True: "met", False: "not met", None: "not measured yet"}
    error = found.get("test_error_reduction")
    if error:
        reference = error["perforatedai"]
        versus = "" if reference is None else f", and better than perforatedai's {-100 * reference:+.1f}%"
        lines.append(
            f"- PB test error change {-100 * error['pb']:+.1f}% (goal: {-100 * error['target']:+.0f}% or better{versus}): "
            f"{verdict[error['met']]}."
        )
    speed = found.get("seconds_per_epoch_vs_perforatedai")
    if speed:
        equal = "; ".join(
            f"{ratio:.2f} for runs that ended with {count}" for count, ratio in speed["by_dendrites"].items()
        )
        lines.append(
            f"- PB seconds per epoch / perforatedai's: {speed['all_runs']:.2f} over all runs; at the same number of "
            f"dendrites: {equal or 'no runs ended with the same number'} (goal: {speed['target']:.1f} or less): "
            f"{verdict[speed['met']]}."
        )
    step = found.get("dendrite_step_over_neuron_step")
    if step:
        lines.append(
            f"- PB dendrite-phase step / neuron-phase step {step['pb']:.2f} (goal: {step['target']:.1f} or less): "
            f"{verdict[step['met']]}."
        )
    phase = found.get("dendrite_phase_over_neuron_epoch")
    if phase:
        costs = "; ".join(
            f"{name} {cost:.2f} ({verdict[phase['met'][name]]})" for name, cost in phase["by_method"].items()
        )
        lines.append(
            f"- Cached dendrite phase (cache pass + candidate fit, mean over phases) / neuron-phase epoch of the same "
            f"run (goal: {phase['target']:.1f} or less): {costs}."
        )
    return ["", *lines] if lines else []


def _with_spread(value: float | None, spread: float | None, pattern: str) -> str:
    """`value ± spread` in points (spread over seeds), or the value alone for a single seed."""
    if value is None:
        return "–"
    text = _fmt(100 * value, pattern)
    return text if spread is None else f"{text} ± {100 * spread:.2f}"


def _paired(paired: dict | None) -> str:
    """`+0.55 [-0.31, +1.40]` in points, or –."""
    return "–" if not paired else f"{100 * paired['difference']:+.2f} {interval_text(paired)}"


def _with_chance(value: float | None, chance: float | None) -> str:
    """`0.3458 (0.2810)`: a statistic and its chance level, or –."""
    return "–" if value is None else f"{value:.4f}" + ("" if chance is None else f" ({chance:.4f})")


def growth_table(results: dict) -> str:
    lines = [
        f"`{results['command']}` ({results['recipe']}) on {results['machine'].get('cpu', 'a CPU')}. Each run "
        "is paired with the plain fine-tune of the same seed (`baseline`: the task benchmark's early-stopped one, "
        "which a dendrite run matches step for step until its first growth) or the control named; n = seeds finished; "
        "± is the standard deviation over seeds. Rows `benchmark pb` / `benchmark pb_streaming` / `benchmark gd` are the task "
        "benchmark's runs. Learner: the candidate learner of the PB runs (`streaming`: the former one, for every "
        "variant that ran before the cached learner). Validation "
        "after growth: the first evaluation after a growth minus the best score before it (points, mean over "
        "growths and seeds); plain after its best: the same for the plain fine-tune's evaluation after its best. "
        "95% interval: of the paired difference, bootstrapping test examples (the same draw for every seed); "
        "shown once every seed and its plain fine-tune kept their test predictions. Error vs backprop: for an "
        "error signal other than backprop, the cosine of its neuron error with the exact one (mean over layers "
        "and the first 4 steps of each dendrite phase); candidates vs exact error: the correlation of the "
        "candidates that signal trained with the exact backprop error (last dendrite-phase evaluation, over the "
        "last 4 training batches), and in brackets its chance level (the same with the error rows shuffled); to "
        "read against candidate correlation, which is with the signal itself. Dendrites off: the final model's "
        "test accuracy with every dendrite's output weight held at zero (`hd.disable_dendrites`) minus with "
        "them, points (mean over the seeds that recorded it): how much of the prediction runs through them.",
        "",
        "| task | variant | flags | learner | n | test accuracy | paired with | difference (points) "
        "| 95% interval (test examples) | dendrites kept | candidate correlation | error vs backprop "
        "| candidates vs exact error | mean abs(output weight) | dendrites off | validation after growth "
        "| plain after its best |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task, variants in results["tasks"].items():
        for name, v in variants.items():
            delta = v.get("test_accuracy_minus_baseline_mean")
            lines.append(
                f"| {task} | {name} | `{v['flags']}` | {v.get('candidate_learner') or '–'} | {v['seeds']} "
                f"| {_with_spread(v['test_accuracy_mean'], v.get('test_accuracy_std'), '.2f')} "
                f"| {v.get('paired_with', 'baseline')} "
                f"| {_with_spread(delta, v.get('test_accuracy_minus_baseline_std'), '+.2f')} "
                f"| {interval_text(v.get('paired_interval'))} "
                f"| {_fmt(v['dendrites_kept_mean'], '.1f')} "
                f"| {_fmt(v['candidate_correlation_mean'], '.4f')} | {_fmt(v.get('error_alignment_mean'), '.3f')} "
                f"| {_with_chance(v.get('candidate_exact_correlation_mean'), v.get('candidate_exact_chance_mean'))} "
                f"| {_fmt(v['output_weight_abs_mean'], '.2e')} | {_points(v.get('knock_out_mean'))} "
                f"| {_points(v.get('validation_after_growth_mean'))} | {_points(v.get('validation_plain_after_best_mean'))} |"
            )
    return "\n".join(lines)


def compression_table(results: dict) -> str:
    machine = results["machine"]
    lines = [
        f"`{results['command']}` (recipes `configs/<task>_summing.yaml` and `configs/<task>_narrowed.yaml`, "
        f"{results['budget']}; distilled: `{results.get('distillation_flags', '')}`; 3 seeds planned) on "
        f"{machine.get('cpu', 'a CPU')}; n = seeds finished. Width: embedding size (summing network) or hidden size "
        "(narrowed MiniLM-L2, 2 layers, heads of 32). Training: labels only, or distilled from the teacher.",
        "",
        "| task | model | training | dendrites | kept per neuron | width | parameters | share of reference | n "
        "| test accuracy | vs reference (points) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for task, reference in results["reference"].items():
        lines.append(
            f"| {task} | {reference['name']} (reference) | labels | – | – | 384 | {reference['parameters'] / 1e6:.2f}M "
            f"| 100% | {reference['seeds']} | {100 * reference['test_accuracy_mean']:.2f} ± "
            f"{100 * reference['test_accuracy_std']:.2f} | – |"
        )
        teacher = results.get("teacher", {}).get(task)
        if teacher:
            share = teacher["parameters"] / reference["parameters"]
            delta = teacher["test_accuracy"] - reference["test_accuracy_mean"]
            lines.append(
                f"| {task} | {teacher['name']} | labels | – | – | 384 | {teacher['parameters'] / 1e6:.2f}M "
                f"| {100 * share:.0f}% | 1 | {100 * teacher['test_accuracy']:.2f} | {100 * delta:+.2f} |"
            )
        for m in sorted(
            (m for m in results["models"] if m["task"] == task),
            key=lambda m: (m["training"] != "labels", m["parameters"], m["name"], m["dendrites"]),
        ):
            delta = m.get("test_accuracy_minus_reference")
            share = m.get("parameters_vs_reference")
            grown = m["dendrites"] != "none"
            lines.append(
                f"| {task} | {m['name']} | {m['training']} "
                f"| {m['dendrites']}{' (full budget)' if m.get('budget') == 'full' else ''} "
                f"| {_fmt(m.get('dendrites_kept_mean') if grown else None, '.1f')} | {m['width']} "
                f"| {m['parameters'] / 1e6:.2f}M | {_fmt(None if share is None else 100 * share, '.1f')}% | {m['seeds']} "
                f"| {100 * m['test_accuracy_mean']:.2f} ± {100 * m['test_accuracy_std']:.2f} "
                f"| {_fmt(None if delta is None else 100 * delta, '+.2f')} |"
            )
    lines.append("")
    for task, teacher in (results.get("teacher") or {}).items():
        reference = results["reference"].get(task)
        if reference and "validation_accuracy_mean" in reference:
            lines.append(
                f"- {task}: the teacher is MiniLM-L6 fine-tuned (`{teacher['recipe']}`), chosen over MiniLM-L2 on "
                f"validation: {100 * teacher['validation_accuracy']:.2f} against the MiniLM-L2 fine-tune's "
                f"{100 * reference['validation_accuracy_mean']:.2f} (mean of {reference['seeds']} seeds)."
            )
    for task, found in results["targets"].items():
        if not found:
            continue
        within = {points: found[f"smallest_within_{points}_points"] for points in ("0.5", "1.0")}
        parts = [
            f"within {points} points: "
            + (
                f"{m['name']} ({m['training']}, {m['dendrites'] if m['dendrites'] != 'none' else 'no'} dendrites, "
                f"{100 * m['parameters_vs_reference']:.1f}% of the parameters)"
                if m
                else "none"
            )
            for points, m in within.items()
        ]
        met = "met" if found["target_met"] else "not met"
        lines.append(f"- {task}: smallest model {'; '.join(parts)}. Target ({found['target']}): {met}.")
        best = found.get("frontier_best")
        if best:
            verdict = "met" if found["frontier_met"] else "not met"
            distilled = found.get("frontier_best_distilled")
            lines.append(
                f"- {task}, width frontier (complete comparisons only): the best lead of a student with dendrites over "
                f"the best plain student within ±10% of its parameters is {best['points_vs_best_plain_peer']:+.2f} "
                f"points ({best['model']} {best['training']} + {best['dendrites']} vs {best['best_plain_peer']}; goal "
                f"+1.0): {verdict}. "
                + (
                    f"Among distilled students: {distilled['points_vs_best_plain_peer']:+.2f} ({distilled['model']} + "
                    f"{distilled['dendrites']} vs {distilled['best_plain_peer']}). "
                    if distilled
                    else ""
                )
                + "Distilled students with dendrites ahead of the plain one of the same width in every seed: "
                + (", ".join(found["distilled_ahead_every_seed"]) or "none")
                + "."
            )
    return "\n".join(lines).replace("–%", "–")


def distillation_pool_table(results: dict) -> str:
    teachers = results.get("teacher") or {}
    if not teachers:
        return "No distilled run has finished yet: the pools are described here once one has."
    lines = [
        "Read from the distilled runs' `results.json` (`distillation.pool`): texts read per source, and why those not "
        "kept were dropped.",
        "",
        "| task | source | read | kept | duplicate | validation/test text | under 8 characters | beyond the 50,000 cap |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task, teacher in teachers.items():
        pool = teacher.get("pool")
        if pool is None:
            continue
        for source, count in pool["sources"].items():
            lines.append(
                f"| {task} | {source} | {count['read']:,} | {count['kept']:,} | {count['duplicate']:,} "
                f"| {count['held_out']:,} | {count['short']:,} | {count.get('dropped_by_cap', 0):,} |"
            )
        lines.append(f"| {task} | **pool** | | **{pool['size']:,}** ({pool['labeled']:,} labelled) | | | | |")
    return "\n".join(lines)


def distillation_diagnostics_table(results: dict) -> str:
    rows = [m for m in results["models"] if m["training"] == "distilled" and m["dendrites"] != "none"]
    if not rows:
        return "No distilled run with dendrites has finished yet."
    lines = [
        "Per distilled student with dendrites (means over seeds): dendrites kept, the best candidates' correlation with "
        "the neuron error in the last dendrite phase (mean over layers, and the layer with the most), and the "
        "student's agreement with the teacher on a fixed sample of the training pool and on validation at the "
        "evaluation that started its first dendrite phase (close values: short of capacity, not memorising).",
        "",
        "| task | model | dendrites | n | kept per neuron | candidate correlation (mean) | strongest layer "
        "| agreement at growth: train pool | validation |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for m in rows:
        layers = m.get("candidate_correlation_per_layer") or {}
        strongest = max(layers, key=layers.get, default=None)
        agreement = m.get("teacher_agreement_at_growth") or {}
        mean = sum(layers.values()) / len(layers) if layers else None
        lines.append(
            f"| {m['task']} | {m['name']} | {m['dendrites']} | {m['seeds']} | {m['dendrites_kept_mean']:.1f} "
            f"| {_fmt(mean, '.4f')} | {f'`{strongest}` {layers[strongest]:.4f}' if strongest else '–'} "
            f"| {_fmt(agreement.get('train'), '.3f')} | {_fmt(agreement.get('validation'), '.3f')} |"
        )
    return "\n".join(lines)


def control_table(results: dict) -> str:
    """The known-positive control (`benchmarks.control`): every arm against `no_dendrite`."""
    machine = results.get("benchmark", {}).get("machine", {})
    lines = [
        f"`{results.get('command', 'python -m benchmarks.control')}` on {machine.get('cpu', 'a CPU')}. Mean over "
        "seeds (n); change: relative to `no_dendrite` (negative is better), and in brackets the smallest and "
        "largest per-seed change (paired by seed: every arm starts from that seed's plateau model). Candidate "
        "correlation: the kept candidates' |r| with the neuron error on held-out cached examples, mean over "
        "layers (streaming: its own per-phase statistic), with the shuffled-error chance level; exact-error "
        "correlation: the installed dendrite's |r| with the exact error over all training rows, per layer "
        "(input layer / output layer).",
        "",
        "| task | arm | n | validation loss | change | validation accuracy | parameters | candidate correlation (chance) "
        "| exact-error correlation |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for task, entry in results.get("tasks", {}).items():
        for arm, row in entry["arms"].items():
            change = row.get("val_loss_change")
            spread = row.get("val_loss_change_range")
            change_text = "–" if change is None or arm == "no_dendrite" else f"{100 * change:+.1f}%"
            if spread and arm != "no_dendrite":
                change_text += f" [{100 * spread[0]:+.1f}, {100 * spread[1]:+.1f}]"
            accuracy = row.get("val_accuracy_mean")
            correlation = row.get("candidate_correlation_mean")
            chance = row.get("chance_correlation_mean")
            correlation_text = "–" if correlation is None else f"{correlation:.3f}"
            if chance is not None:
                correlation_text += f" ({chance:.3f})"
            exact = row.get("exact_error_correlation_per_layer")
            exact_text = "–" if not exact else " / ".join(f"{value:.3f}" for value in exact.values())
            lines.append(
                f"| {task} | {arm} | {len(row['seeds'])} | {row['val_loss_mean']:.4f} ± {row['val_loss_std']:.4f} "
                f"| {change_text} | {'–' if accuracy is None else f'{100 * accuracy:.2f}'} | {row['parameters']} "
                f"| {correlation_text} | {exact_text} |"
            )
    return "\n".join(lines)


def learner_table(results: dict) -> str:
    variants = results["variants"]
    seeds = variants["none"]["seeds"]
    lines = [
        f"`{results['command']}` on {results['benchmark']['machine'].get('cpu', 'a CPU')}, seed(s) "
        f"{', '.join(map(str, seeds))}. Held-out |r|: the kept candidates on scoring examples that neither trained "
        "nor chose them (chance: the same with shuffled errors); train |r|: the same candidates on their training "
        "rows; mean over the 14 layers, then per layer (encoder depth first).",
        "",
        "| early stopping | held-out abs(r) (chance) | train abs(r) | fit seconds |",
        "|---|---|---|---|",
    ]
    for variant, row in variants.items():
        lines.append(
            f"| {variant} | {row['score_mean']:.4f} ({row['chance_mean']:.4f}) | {row['train_score_mean']:.4f} "
            f"| {row['fit_seconds_mean']:.0f} |"
        )
    kinds = list(variants["none"]["per_layer"])
    lines += ["", "| layer | " + " | ".join(f"{v}: held-out / train abs(r)" for v in variants) + " | chance |"]
    lines.append("|---" * (len(variants) + 2) + "|")
    for kind in kinds:
        cells = [
            f"{variants[v]['per_layer'][kind]['score']:.3f} / {variants[v]['per_layer'][kind]['train_score']:.3f}"
            for v in variants
        ]
        chance = variants["none"]["per_layer"][kind]["chance"]
        lines.append(f"| `{kind}` | " + " | ".join(cells) + f" | {chance:.3f} |")
    return "\n".join(lines)


def learner_budget_table(results: dict) -> str:
    """What a cheaper dendrite phase gives up: held-out |r| against the phase's time in fine-tuning epochs."""
    budgets = results.get("budgets")
    if not budgets:
        return "No budget runs yet: `python -m benchmarks.learner --studies budget`."
    seeds = next(iter(budgets.values()))["seeds"]
    settings = results["budgets_settings"]
    lines = [
        f"`python -m benchmarks.learner --studies budget` on {results['benchmark']['machine'].get('cpu', 'a CPU')}, "
        f"seed(s) {', '.join(map(str, seeds))}. One cache pass with the defaults "
        f"({results['budgets_cache_seconds_mean']:.0f} s), then every layer's candidates fitted with each budget "
        "(– keeps the default: 50 epochs, 8,192 rows per layer); held-out |r| and chance as above, mean over the "
        "14 layers. Phase: the cache pass plus the fit, over the same run's fine-tuning epoch "
        f"({results['budgets_neuron_epoch_seconds_mean']:.0f} s, 3,000 sentences).",
        "",
        "| budget | candidate epochs | cached rows per layer | held-out abs(r) (chance) | train abs(r) | fit seconds "
        "| phase / fine-tuning epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in budgets.items():
        epochs, rows = settings[name]["candidate_epochs"], settings[name]["candidate_cache_rows"]
        lines.append(
            f"| {name} | {'–' if epochs is None else epochs} | {'–' if rows is None else f'{rows:,}'} "
            f"| {row['score_mean']:.4f} ({row['chance_mean']:.4f}) | {row['train_score_mean']:.4f} "
            f"| {row['fit_seconds_mean']:.0f} | {row['phase_over_epoch_mean']:.2f} |"
        )
    return "\n".join(lines)


def frontier_table(results: dict) -> str:
    """The dendrites-vs-width frontier (`benchmarks.frontier`): every point, each dendrite arm
    paired with restarts and with the width line at its parameter count, then compression and cost."""
    lines = [
        f"`{results.get('command', 'python -m benchmarks.frontier')}` on {results.get('machine', {}).get('cpu', 'a CPU')}. "
        "Mean ± std over seeds (n); every arm trains for the same epoch budget at a constant learning rate and ends "
        "with its best-validation model; growth, restarts and the best model are decided on validation loss, the "
        "score is on test. Intervals: 95% paired bootstrap over test examples (seeds averaged), in the metric's "
        "units (accuracy in points); the width line is interpolated linearly in log parameters between the two "
        "plain widths around the arm's parameter count (– where the arm is outside the line). The last table "
        "of a regime: the parameters the width line needs for each arm's score (the same interpolation; – where "
        "even the smallest plain width scores as well, or none does) and the arm's share of them (below 1: the arm "
        "compresses), and the seconds of a neuron-phase step with one dendrite set over one without, in the same "
        "runs.",
    ]
    for name, regime in results.get("regimes", {}).items():
        metric, scale = regime["metric"], 100 if regime["metric"] == "accuracy" else 1
        settings = regime["settings"]
        unit = " (%)" if scale == 100 else ""
        digits = 2 if scale == 100 else 3
        scheduled = settings.get("first_growth_epoch")
        commits = ", ".join(commit[:7] for commit in regime.get("commits", []))
        lines += [
            "",
            f"**{name}** ({settings['epochs']} epochs, batch {settings['batch_size']}, lr {settings['learning_rate']:g}; "
            f"low-rank arm at rank {settings['low_rank']}"
            + (f"; first growth and restart at the end of epoch {scheduled}" if scheduled is not None else "")
            + (f"; code {commits}" if commits else "")
            + "):",
            "",
            f"| arm | width | parameters | non-embedding | test {metric}{unit} | n | dendrites per neuron | epochs trained |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for point in sorted(regime["points"], key=lambda p: (p["arm"] != "plain", p["arm"], p["width"])):
            width = str(point["width"])
            if point.get("trained_width") not in (None, point["width"]):
                width += f" (plain width {point['trained_width']})"
            lines.append(
                f"| {point['arm']} | {width} | {point['parameters']:,.0f} | {point['non_embedding_parameters']:,.0f} "
                f"| {scale * point['metric_mean']:.{digits}f} ± {scale * point['metric_std']:.{digits}f} | {len(point['seeds'])} "
                f"| {point['dendrites_per_neuron_mean']:.2f} | {point['epochs_trained_mean']:.1f} |"
            )
        if not regime["comparisons"]:
            lines += ["", "No dendrite arm has results yet: only the width line is measured."]
            continue
        lines += [
            "",
            "| arm | width | minus restarts [95%] | minus the width line [95%] (between widths) |",
            "|---|---|---|---|",
        ]

        def paired(entry: dict | None) -> str:
            if not entry:
                return "–"
            text = f"{scale * entry['difference']:+.{digits}f} [{scale * entry['low']:+.{digits}f}, {scale * entry['high']:+.{digits}f}]"
            return text + (
                f" ({entry['between_widths'][0]}–{entry['between_widths'][1]})" if "between_widths" in entry else ""
            )

        for comparison in regime["comparisons"]:
            lines.append(
                f"| {comparison['arm']} | {comparison['width']} | {paired(comparison.get('vs_restarts'))} "
                f"| {paired(comparison.get('vs_width_line'))} |"
            )
        lines += ["", *frontier_cost_rows(regime, scale, digits)]
    return "\n".join(lines)


def frontier_cost_rows(regime: dict, scale: int, digits: int) -> list[str]:
    """Compression and cost per arm: the plain width line's parameters at the arm's score (a share
    ≤ 0.56 is the compression goal) and, same run, a neuron step with one dendrite set over one without."""
    lines = [
        f"| arm | width | parameters | test {regime['metric']} | the width line's parameters at that score "
        "| share | neuron step, one set / none (runs; range) |",
        "|---|---|---|---|---|---|---|",
    ]
    for point in sorted(regime["points"], key=lambda p: (p["arm"], p["width"])):
        if point["arm"] == "plain":
            continue
        needed = point.get("width_line_parameters_at_equal_metric")
        share = "–" if needed is None else f"{needed:,.0f} | {point['parameters_over_width_line']:.2f}"
        cost = point.get("neuron_step_cost_of_one_set")
        runs = point.get("neuron_step_cost_runs")
        low, high = point.get("neuron_step_cost_range") or (None, None)
        if low is not None and runs > 1:
            runs = f"{runs}; {low:.2f}–{high:.2f}"
        lines.append(
            f"| {point['arm']} | {point['width']} | {point['parameters']:,.0f} "
            f"| {scale * point['metric_mean']:.{digits}f} | {share if needed is not None else '– | –'} "
            f"| {'–' if cost is None else f'{cost:.2f}x ({runs})'} |"
        )
    return lines


TABLES = {
    "frontier": ("frontier.json", frontier_table),
    "control": ("control.json", control_table),
    "learner": ("learner.json", learner_table),
    "learner-budget": ("learner.json", learner_budget_table),
    "layers": ("layers.json", layers_table),
    "benchmark_movie_reviews": ("movie_reviews.json", benchmark_table),
    "benchmark_trec6": ("trec6.json", benchmark_table),
    "growth": ("growth.json", growth_table),
    "growth-sources": ("growth.json", sources_table),
    "growth-pairs": ("growth.json", pairs_table),
    "compression": ("compression.json", compression_table),
    "distillation-pool": ("compression.json", distillation_pool_table),
    "distillation-diagnostics": ("compression.json", distillation_diagnostics_table),
}


STUDIES_README = ROOT / "benchmarks" / "README.md"


def render(readme: str) -> str:
    for name, (file, build) in TABLES.items():
        path = RESULTS / file
        if path.exists():
            table = build(json.loads(path.read_text(encoding="utf-8")))
        else:  # never leave figures in the README that no committed result backs
            table = f"No results yet: `benchmarks/results/{file}` is written by the benchmark as runs finish."
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
        if not pattern.search(readme):
            raise ValueError(f"benchmarks/README.md has no <!-- {name}:start --> ... <!-- {name}:end --> markers")
        readme = pattern.sub(lambda match: match.group(1) + table + "\n" + match.group(2), readme)
    return readme


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if benchmarks/README.md is out of date")
    args = parser.parse_args()
    readme_path = STUDIES_README
    current = readme_path.read_text(encoding="utf-8")
    updated = render(current)
    if args.check:
        return int(updated != current)
    readme_path.write_text(updated, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
