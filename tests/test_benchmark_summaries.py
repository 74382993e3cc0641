"""The benchmark's summaries: ratios to the baseline and the goals PB is held to."""

from __future__ import annotations

import json

import pytest

import benchmarks.common as common
import benchmarks.compression as compression
import benchmarks.growth as growth
import benchmarks.growth_pairs as growth_pairs
import benchmarks.growth_sources as growth_sources
import benchmarks.tasks as benchmark
import benchmarks.update_readme as update_readme


def run(seed: int, accuracy: float, dendrites: int, seconds_per_epoch: float, step_ratio: float | None = None) -> dict:
    summary = {
        "seed": seed,
        "test_accuracy": accuracy,
        "test_macro_f1": accuracy,
        "validation_accuracy": accuracy,
        "parameters": 1000 + 100 * dendrites,
        "dendrites": dendrites,
        "epochs": 10.0,
        "seconds_total": 10 * seconds_per_epoch,
        "seconds_per_epoch": seconds_per_epoch,
    }
    if step_ratio is not None:
        summary["dendrite_step_over_neuron_step"] = step_ratio
    return summary


def write_run(path, correct: list[bool] | None, validation: float = 0.5) -> None:
    """A run file with these per-example test outcomes (None: a run that kept no predictions)."""
    results = {
        "validation": {"accuracy": validation},
        "test": {"accuracy": sum(correct) / len(correct) if correct else 0.5},
    }
    if correct is not None:
        results["test_predictions"], results["test_labels"] = [int(c) for c in correct], [1] * len(correct)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results))


def methods(pb_accuracies: list[float], pb_dendrites: list[int], reference_machine: str = "CPU A, 2 cores") -> dict:
    found = {
        "baseline": benchmark.method_summary([run(seed, 0.80, 0, 10.0) for seed in range(3)]),
        "pb": benchmark.method_summary(
            [run(seed, acc, k, 12.0 + 2 * k, 1.2) for seed, (acc, k) in enumerate(zip(pb_accuracies, pb_dendrites))]
        ),
        "perforatedai": benchmark.method_summary([run(0, 0.81, 1, 20.0, 2.0), run(1, 0.81, 2, 40.0, 2.0)]),
    }
    for name, summary in found.items():
        summary["machines"] = [reference_machine if name == "perforatedai" else "CPU A, 2 cores"]
    benchmark.add_ratios(found)
    return found


def test_pb_meets_the_error_goal_only_when_it_also_beats_the_reference_library():
    # baseline error 20%: 16.6% is a 17% cut, the reference's 19% a 5% cut
    met = benchmark.targets(methods([0.834, 0.834, 0.834], [1, 1, 0]))["test_error_reduction"]
    assert met["pb"] == pytest.approx(0.17) and met["perforatedai"] == pytest.approx(0.05) and met["met"]
    short = benchmark.targets(methods([0.82, 0.82, 0.82], [1, 1, 0]))["test_error_reduction"]
    assert short["pb"] == pytest.approx(0.10) and not short["met"]


def test_speed_is_compared_between_runs_that_ended_with_the_same_number_of_dendrites():
    speed = benchmark.targets(methods([0.82] * 3, [1, 1, 0]))["seconds_per_epoch_vs_perforatedai"]
    # PB runs with 1 dendrite: 14 s per epoch; the reference's run with 1: 20 s. No PB run has 2.
    assert speed["by_dendrites"] == {"1": pytest.approx(0.7)}
    assert speed["met"] is True
    assert speed["all_runs"] == pytest.approx((40 / 3) / 30)
    unmatched = benchmark.targets(methods([0.82] * 3, [0, 0, 0]))["seconds_per_epoch_vs_perforatedai"]
    assert unmatched["by_dendrites"] == {} and unmatched["met"] is None


def test_timings_are_compared_only_between_runs_of_one_machine():
    same = methods([0.82] * 3, [1, 1, 0])
    assert same["pb"]["seconds_per_epoch_vs_baseline"] == pytest.approx((40 / 3) / 10)
    elsewhere = methods([0.82] * 3, [1, 1, 0], reference_machine="CPU B, 2 cores")
    assert elsewhere["pb"]["seconds_per_epoch_vs_baseline"] == pytest.approx((40 / 3) / 10)
    assert "seconds_per_epoch_vs_perforatedai" not in elsewhere["pb"]
    assert "seconds_per_epoch_vs_perforatedai" not in benchmark.targets(elsewhere)
    elsewhere["pb"]["machines"] = ["CPU A, 2 cores", "CPU B, 2 cores"]  # pb's own runs span two machines
    benchmark.add_ratios(elsewhere)
    assert elsewhere["pb"]["seconds_per_epoch_vs_baseline"] is None
    summary = {
        "command": "python -m benchmarks.tasks",
        "recipe": "r",
        "machine": {"cpu": "A and B"},
        "methods": elsewhere,
    }
    row = next(line for line in update_readme.benchmark_table(summary).splitlines() if line.startswith("| pb |"))
    assert row.split(" | ")[-2] == "–"  # the "vs baseline" column


def test_the_readme_states_each_goal_with_its_verdict():
    found = benchmark.targets(methods([0.82] * 3, [0, 0, 0]))
    lines = update_readme.target_lines(found)
    assert lines[0] == ""
    assert "PB test error change -10.0%" in lines[1] and lines[1].endswith("not met.")
    assert "no runs ended with the same number" in lines[2] and lines[2].endswith("not measured yet.")
    assert "step 1.20" in lines[3] and lines[3].endswith(": met.")


def test_a_cached_phase_is_measured_in_neuron_epochs_of_its_own_run():
    results = {
        "evaluations": [{"epoch": 1.0, "step": 100}],
        "phase_steps": {"neuron": 400, "dendrite": 0},
        "phase_seconds": {"neuron": 100.0, "dendrite": 0},  # 0.25 s a step: a 25 s epoch
        "candidate_scores_per_layer": [{"seconds": {"cache": 10.0, "fit": 5.0}}, {"seconds": {"cache": 20, "fit": 15}}],
    }
    assert benchmark.phase_over_neuron_epoch(results) == pytest.approx(25 / 25)
    assert benchmark.phase_over_neuron_epoch({**results, "candidate_scores_per_layer": []}) is None  # no cached phase
    found = methods([0.82] * 3, [1, 1, 0])
    found["pb"]["dendrite_phase_over_neuron_epoch"] = 7.5
    found["pb_short_phase"] = {**found["pb"], "dendrite_phase_over_neuron_epoch": 0.8}
    cost = benchmark.targets(found)["dendrite_phase_over_neuron_epoch"]
    assert cost["met"] == {"pb": False, "pb_short_phase": True}
    line = update_readme.target_lines({"dendrite_phase_over_neuron_epoch": cost})[1]
    assert "pb 7.50 (not met); pb_short_phase 0.80 (met)" in line


def test_no_goal_is_reported_without_pb_runs():
    assert benchmark.targets({"baseline": methods([0.82] * 3, [0] * 3)["baseline"]}) == {}


def evaluation(phase: str, score: float | None, action: str = "continue", new_best: bool = False) -> dict:
    return {"phase": phase, "score": score, "action": action, "new_best": new_best}


def test_growth_diagnostics_compare_the_evaluation_after_growth_with_the_plain_one_after_its_best():
    history = [
        evaluation("neuron", 0.70, new_best=True),
        evaluation("neuron", 0.80, new_best=True),
        evaluation("neuron", 0.78),
        evaluation("neuron", 0.77, "start_dendrite_phase"),
        evaluation("dendrite", 0.80, "grow"),
        evaluation("neuron", 0.79),  # first after growth 1: -0.01
        evaluation("neuron", 0.82, "start_dendrite_phase", new_best=True),
        evaluation("dendrite", None),
        evaluation("dendrite", 0.82, "grow"),
        evaluation("neuron", 0.85, new_best=True),  # first after growth 2: +0.03 over 0.82
    ]
    found = growth.first_evaluations_after(history)
    assert found["plain_after_best"] == pytest.approx(-0.02)
    assert found["after_growth"] == pytest.approx(0.01)
    assert growth.first_evaluations_after(history[:2]) == {"after_growth": None, "plain_after_best": None}


def student(name: str, dendrites: str, parameters: int, by_seed: list[float], training: str = "distilled") -> dict:
    return {
        "task": "trec6",
        "name": name,
        "architecture": "summing_network",
        "narrow_init": None,
        "training": training,
        "dendrites": dendrites,
        "width": int(name.split("-e")[1]),
        "parameters": parameters,
        "test_accuracy_mean": sum(by_seed) / len(by_seed),
        "test_accuracy_by_seed": {str(seed): value for seed, value in enumerate(by_seed)},
        "dendrites_kept_mean": 1.0 if dendrites != "none" else 0.0,
    }


def test_the_width_frontier_compares_students_within_ten_percent_of_the_parameters():
    models = [
        student("summing-e32", "none", 1000, [0.80, 0.80, 0.80]),
        student("summing-e32", "pb", 1050, [0.82, 0.81, 0.79]),
        student("summing-e36", "none", 1090, [0.805, 0.805, 0.805]),  # within 10% of the PB student: its best peer
        student("summing-e64", "none", 2000, [0.90, 0.90, 0.90]),  # too large to be a peer
        student("summing-e32", "none", 1000, [0.70, 0.70, 0.70], training="labels"),  # another training: no peer
    ]
    (row,) = compression.frontier(models)
    assert row["best_plain_peer"] == "summing-e36" and row["points_vs_best_plain_peer"] == pytest.approx(
        100 * ((0.82 + 0.81 + 0.79) / 3 - 0.805)
    )
    assert (row["seeds_ahead_of_same_width"], row["seeds_paired"]) == (2, 3)  # ahead of e32 in seeds 0 and 1


def test_a_method_against_itself_has_a_paired_interval_around_zero():
    import random

    generator = random.Random(0)
    correct = [[generator.random() < 0.8 for _ in range(400)] for _ in range(3)]
    same = common.paired_difference([(c, c) for c in correct])
    assert same["difference"] == 0.0 and same["low"] == 0.0 and same["high"] == 0.0
    noisy = [[flag if generator.random() < 0.9 else not flag for flag in c] for c in correct]
    interval = common.paired_difference([(n, c) for n, c in zip(noisy, correct)])
    assert interval["low"] < interval["difference"] < interval["high"]
    assert len(interval["seed_differences"]) == 3 and interval["examples"] == 400


def test_the_paired_interval_comes_from_per_example_outcomes_not_from_accuracies():
    # A fixes 40 examples B gets wrong and breaks none: +10 points, an interval clear of zero ...
    b = [True] * 300 + [False] * 100
    a = [True] * 340 + [False] * 60
    fixed = common.paired_difference([(a, b)])
    assert fixed["difference"] == pytest.approx(0.10) and fixed["low"] > 0.05
    # ... while swapping which 40 examples are right, at the same accuracy, is a difference of 0 whose
    # interval straddles it: the accuracies alone (equal) could not tell the two cases apart
    swapped = [True] * 260 + [False] * 40 + [True] * 40 + [False] * 60
    assert sum(swapped) == sum(b)
    moved = common.paired_difference([(swapped, b)])
    assert moved["difference"] == 0.0 and moved["low"] < 0 < moved["high"]


def test_runs_without_predictions_have_no_correctness():
    assert common.test_correctness({"test": {"accuracy": 0.5}}) is None
    assert common.test_correctness({"test_predictions": [1, 0, 2], "test_labels": [1, 1, 2]}) == [True, False, True]


def test_the_restart_control_restarts_where_the_reference_run_of_the_same_seed_restructured():
    flags = growth.variant_flags("trec6", "baseline_restarts_pai", 0)
    assert flags[:4] == ["--dendrites", "none", "--early_stopping_patience", "1000"]
    epochs = [int(value) for value in flags[flags.index("--restart_at_epochs") + 1 :]]
    log = growth.json.loads((growth.RUNS / "trec6" / "perforatedai" / "seed0.json").read_text())["epoch_log"]
    assert epochs and epochs == [entry["epoch"] for entry in log if entry["restructured"]]


def write_pb_run(path, evaluations, history):
    """A PB run file with only what the restart controls read: its evaluations and growth history."""
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"evaluations": evaluations, "dendrite_history": history}))


def test_the_pb_restart_control_restarts_where_the_same_seeds_pb_run_resumed_its_neuron_phase(tmp_path, monkeypatch):
    history = [
        {"step": 10, "action": "continue"},
        {"step": 20, "action": "start_dendrite_phase"},
        {"step": 30, "action": "grow"},  # epoch 3: best model + dendrite, fresh optimizer
        {"step": 40, "action": "start_dendrite_phase"},  # a revert: no neuron training until the next growth
        {"step": 50, "action": "grow"},
    ]
    evaluations = [{"step": 10 * k, "epoch": float(k)} for k in range(1, 6)]
    write_pb_run(tmp_path / "trec6" / "pb" / "seed0.json", evaluations, history)
    monkeypatch.setattr(growth, "RUNS", tmp_path)
    flags = growth.variant_flags("trec6", "baseline_restarts_pb", 0)
    assert flags == ["--dendrites", "none", "--early_stopping_patience", "1000", "--restart_at_epochs", "3", "5"]
    assert growth.CONTROLS["baseline_restarts_pb"] == "baseline_full"
    # the streaming learner's PB runs have their own restart control, at their own growth epochs
    write_pb_run(tmp_path / "trec6" / "pb_streaming" / "seed0.json", evaluations, history[:3])
    streaming = growth.variant_flags("trec6", "baseline_restarts_pb_streaming", 0)
    assert streaming == ["--dendrites", "none", "--early_stopping_patience", "1000", "--restart_at_epochs", "3"]


def test_the_all_train_restart_control_trains_on_every_sentence_and_restarts_where_pb_all_train_grew(
    tmp_path, monkeypatch
):
    history = [{"step": 20, "action": "start_dendrite_phase"}, {"step": 30, "action": "grow"}]
    evaluations = [{"step": 10 * k, "epoch": float(k)} for k in range(1, 4)]
    write_pb_run(tmp_path / "movie_reviews" / "pb_all_train" / "seed1.json", evaluations, history)
    monkeypatch.setattr(growth, "GROWTH_RUNS", tmp_path)
    flags = growth.variant_flags("movie_reviews", "baseline_all_train_restarts_pb", 1)
    assert flags == [
        *["--dendrites", "none", "--max_train_samples", "1000000"],
        *["--early_stopping_patience", "1000", "--restart_at_epochs", "3"],
    ]
    assert growth.CONTROLS["baseline_all_train_restarts_pb"] == "baseline_all_train"


def test_a_rerun_adds_predictions_only_when_it_reproduces_the_committed_run(tmp_path):
    path = tmp_path / "seed0.json"
    earlier = {"test": {"accuracy": 0.75}, "seconds": 100.0, "benchmark": {"machine": {"cpu": "A"}}}
    path.write_text(json.dumps(earlier))

    def rerun(accuracy: float) -> dict:
        benchmark = {"command": "c", "machine": {"cpu": "B"}, "finished": "now"}
        return {"test": {"accuracy": accuracy}, "seconds": 50.0, "test_predictions": [1, 0], "test_labels": [1, 1],
                "benchmark": benchmark}  # fmt: skip

    written = benchmark.add_predictions(path, json.loads(path.read_text()), rerun(0.70))
    assert written.name == "rerun_seed0.json" and json.loads(path.read_text()) == earlier  # committed run untouched
    written = benchmark.add_predictions(path, json.loads(path.read_text()), rerun(0.75))
    kept = json.loads(path.read_text())
    assert written == path and kept["test_predictions"] == [1, 0] and kept["test_labels"] == [1, 1]
    assert kept["seconds"] == 100.0 and kept["benchmark"]["machine"] == {"cpu": "A"}  # its timings and machine stay
    assert kept["benchmark"]["predictions_from_rerun"]["machine"] == {"cpu": "B"}


def test_the_task_table_pairs_each_method_with_its_control_once_every_seed_kept_predictions():
    right, wrong = [True, True, False, True], [False, True, False, False]
    methods = {name: {} for name in ("baseline", "pb", "gd", "lora", "lora_pb")}
    correct = {
        "baseline": {0: wrong, 1: wrong},
        "pb": {0: right, 1: right},
        "gd": {0: right, 1: None},  # one seed kept no predictions: no interval yet
        "lora": {0: right, 1: right},
        "lora_pb": {0: right, 1: right},
    }
    benchmark.add_paired_differences(methods, correct)
    assert methods["pb"]["paired_with"] == "baseline"
    assert methods["pb"]["paired_difference"]["difference"] == pytest.approx(0.5)
    assert methods["gd"]["paired_difference"] is None
    assert methods["lora_pb"]["paired_with"] == "lora"  # dendrites on an adapter against the adapter alone
    assert methods["lora_pb"]["paired_difference"]["difference"] == 0.0
    assert "paired_difference" not in methods["baseline"]
    row = update_readme._paired(methods["pb"]["paired_difference"])
    assert row.startswith("+50.00 [")


def test_a_dendrite_method_is_paired_with_its_controls_over_the_seeds_both_finished():
    right, wrong = [True, True, False, True], [False, True, False, False]
    methods = {name: {} for name in ("baseline", "restarts", "pb", "pb_streaming", "gd")}
    correct = {
        "baseline": {0: wrong, 1: wrong, 2: wrong},
        "restarts": {0: wrong, 1: right, 2: wrong},
        "pb": {0: right, 1: right},  # seed 2 still running: paired over seeds 0 and 1
        "pb_streaming": {0: right, 1: right, 2: right},
        "gd": {0: right, 1: None, 2: right},  # one shared seed kept no predictions: no interval yet
    }
    benchmark.add_paired_differences(methods, correct)
    pb = methods["pb"]["minus_controls"]
    assert pb["restarts"]["seeds"] == [0, 1]
    assert pb["restarts"]["difference"] == pytest.approx(0.25)  # (0.5 + 0.0) / 2
    assert pb["pb_streaming"]["difference"] == 0.0
    assert methods["gd"]["minus_controls"] == {"restarts": None}
    assert "minus_controls" not in methods["restarts"] and "minus_controls" not in methods["baseline"]
    lines = update_readme.control_lines(methods)
    assert any(line.startswith("- pb, paired test accuracy: minus restarts +25.00 [") for line in lines)
    assert not any(line.startswith("- gd") for line in lines)


def test_the_growth_table_shows_the_spread_over_seeds_only_when_there_are_several():
    runs = [{"test_accuracy": 0.80}, {"test_accuracy": 0.84}, {"test_accuracy": None}]
    assert growth.spread_of(runs, "test_accuracy") == pytest.approx(0.02 * 2**0.5)
    assert growth.spread_of(runs[:1], "test_accuracy") is None
    assert update_readme._with_spread(0.82, 0.02 * 2**0.5, ".2f") == "82.00 ± 2.83"
    assert update_readme._with_spread(0.004, None, "+.2f") == "+0.40"
    assert update_readme._with_spread(None, None, ".2f") == "–"


def test_the_growth_study_names_the_candidate_learner_each_pb_run_used():
    cached = {"config": {"dendrites": {"mode": "pb"}, "dendrite_training": {"candidate_learner": "cached"}}}
    older = {"config": {"dendrites": {"mode": "pb", "candidate_learner": "cached"}}}  # before the settings split
    streamed = {"config": {"dendrites": {"mode": "pb", "num_candidates": 4}}}  # before the cached learner
    assert growth.candidate_learner(cached) == "cached" and growth.candidate_learner(older) == "cached"
    assert growth.candidate_learner(streamed) == "streaming"
    assert growth.candidate_learner({"config": {"dendrites": {"mode": "gd"}}}) is None
    assert growth.candidate_learner({"config": {"dendrites": None}}) is None


def test_lora_over_the_whole_budget_differs_from_lora_only_by_the_early_stop(tmp_path):
    lora = benchmark.run_command("trec6", "lora", 0, tmp_path, "python")
    full = benchmark.run_command("trec6", "lora_full", 0, tmp_path, "python")
    assert full[: len(lora)] == lora and full[len(lora) :] == ["--early_stopping_patience", "1000"]
    assert benchmark.PAIRED_WITH["lora_full"] == "lora"


def test_the_per_seed_view_lines_up_each_seeds_controls_and_leaves_missing_runs_blank(tmp_path):
    def write(path: str, accuracy: float, without_dendrites: float | None = None) -> None:
        results = {"test": {"accuracy": accuracy}}
        if without_dendrites is not None:
            results["test_without_dendrites"] = {"accuracy": without_dendrites}
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(json.dumps(results))

    write("trec6/baseline/seed0.json", 0.80)
    write("growth/trec6/baseline_full/seed0.json", 0.81)
    write("growth/trec6/baseline_restarts_pb/seed0.json", 0.83)
    write("trec6/restarts/seed0.json", 0.845)
    write("trec6/pb/seed0.json", 0.84, without_dendrites=0.82)
    write("trec6/pb/seed1.json", 0.79)  # a seed whose controls have not run
    rows = growth_sources.per_seed(tmp_path)["trec6"]
    assert [row["seed"] for row in rows] == [0, 1]
    assert rows[0]["difference"]["restarts where PB grew"] == pytest.approx(0.02)
    assert rows[0]["difference"]["PB over its restarts"] == pytest.approx(0.01)
    assert rows[0]["difference"]["PB over plateau restarts"] == pytest.approx(-0.005)
    assert rows[0]["difference"]["trained over untrained candidates"] is None
    assert all(value is None for value in rows[1]["difference"].values())
    table = growth_sources.sources_table({"per_seed": {"trec6": rows}})
    assert (
        "| trec6 | 0 | 80.00 | 81.00 | 84.50 | – | – | – | – | 83.00 | 84.00 (off: 82.00) | – "
        "| – | – | – | – | +2.00 | +1.00 | -0.50 | – |" in table
    )
    assert "| trec6 | 1 | – | – | – | – | – | – | – | – | 79.00 | – |" + " – |" * 8 in table
    # the mean row averages each column over the seeds that ran it, and says how many
    assert "81.50 ± 3.54 (n=2)" in table and "+2.00 (n=1)" in table


def test_the_per_seed_view_gives_each_difference_an_interval_once_both_columns_kept_predictions(tmp_path):
    def write(path: str, correct: list[bool] | None) -> None:
        write_run(tmp_path / path, correct)

    restarted = [True, False, True, False] * 25
    pb = [True, True, True, False] * 25  # right wherever the restarts were, and on 25 more examples
    for seed in (0, 1):
        write(f"growth/trec6/baseline_restarts_pb/seed{seed}.json", restarted)
        write(f"trec6/pb/seed{seed}.json", pb)
        write(f"trec6/restarts/seed{seed}.json", None if seed == 1 else restarted)
    found = growth_sources.difference_intervals(tmp_path)["trec6"]
    over_restarts = found["PB over its restarts"]
    assert over_restarts["difference"] == pytest.approx(0.25)
    assert over_restarts["seed_differences"] == pytest.approx([0.25, 0.25])
    assert 0 < over_restarts["low"] < 0.25 < over_restarts["high"]
    assert found["PB over plateau restarts"] is None  # seed 1's plateau restarts kept no predictions
    assert found["restarts where PB grew"] is None  # no seed ran both columns
    assert found["streaming PB over its restarts"] is None  # the streaming learner's runs are apart

    rows = growth_sources.per_seed(tmp_path)["trec6"]
    table = growth_sources.sources_table({"per_seed": {"trec6": rows}, "difference_intervals": {"trec6": found}})
    interval_row = next(line for line in table.splitlines() if "95% interval" in line and line.startswith("| trec6"))
    cells = [cell.strip() for cell in interval_row.strip("|").split("|")]
    assert cells[-3] == common.interval_text(over_restarts) and cells[-2:] == ["–", "–"]
    assert set(cells[2:-4]) == {"–"}  # accuracy columns carry no interval


def test_two_policies_are_paired_seed_by_seed_on_validation_and_on_test(tmp_path):
    def write(path: str, validation: float, correct: list[bool] | None) -> None:
        write_run(tmp_path / path, correct, validation)

    reset = [True, False, True, False] * 25
    kept = [True, True, True, False] * 25  # right wherever the reset was, and on 25 more examples
    for seed in (0, 1):
        write(f"trec6/pb_streaming/seed{seed}.json", 0.80, reset)
        write(f"growth/trec6/pb_keep_optimizer/seed{seed}.json", 0.80 + 0.01 * seed, kept)
    write("growth/trec6/pb_keep_optimizer/seed2.json", 0.90, kept)  # its reset run has not finished
    write("trec6/gd/seed0.json", 0.80, None)  # no predictions: no interval
    write("growth/trec6/gd_keep_optimizer/seed0.json", 0.79, reset)
    rows = {row["comparison"]: row for row in growth_pairs.head_to_head(tmp_path)["trec6"]}
    assert set(rows) == {
        "streaming PB: Adam's state kept over growth vs reset",
        "GD: Adam's state kept over growth vs reset",
    }
    pb = rows["streaming PB: Adam's state kept over growth vs reset"]
    assert pb["seeds"] == [0, 1]  # only the seeds both sides ran
    assert pb["validation"]["differences"] == pytest.approx([0.0, 0.01])
    assert pb["validation"]["a_mean"] == pytest.approx(0.805) and pb["validation"]["b_mean"] == pytest.approx(0.80)
    assert pb["test"]["differences"] == pytest.approx([0.25, 0.25])
    assert 0 < pb["test"]["interval"]["low"] < 0.25 < pb["test"]["interval"]["high"]
    gd = rows["GD: Adam's state kept over growth vs reset"]
    assert gd["test"]["interval"] is None and gd["validation"]["differences"] == pytest.approx([-0.01])

    table = growth_pairs.pairs_table({"head_to_head": growth_pairs.head_to_head(tmp_path)})
    pb_line = next(line for line in table.splitlines() if "PB: Adam" in line)
    cells = [cell.strip() for cell in pb_line.strip("|").split("|")]
    assert cells[4:] == [
        "0, 1",
        "80.50 vs 80.00",
        "+0.00, +1.00",
        "75.00 vs 50.00",
        "+25.00, +25.00",
        common.interval_text(pb["test"]["interval"]),
    ]
    assert next(line for line in table.splitlines() if "GD: Adam" in line).endswith("| – |")


def test_a_summary_lists_the_code_commits_its_runs_span(tmp_path):
    from benchmarks.common import commits_of_runs

    records = [
        {"benchmark": {"commit": "bbb"}},
        {"benchmark": {"commit": "aaa+dirty"}},
        {"benchmark": {"commit": "bbb"}},
        {},
    ]
    files = []
    for index, record in enumerate(records):
        files.append(tmp_path / f"seed{index}.json")
        files[-1].write_text(json.dumps(record))
    assert commits_of_runs(files) == ["aaa+dirty", "bbb", "unknown"]


def test_a_compression_setting_names_its_training_dendrites_learner_and_budget():
    assert compression.setting_kind("pb") == ("labels", "pb", "tracker")
    assert compression.setting_kind("distilled-pb-streaming") == ("distilled", "pb (streaming)", "tracker")
    assert compression.setting_kind("distilled-none-full") == ("distilled", "none", "full")
    assert compression.setting_kind("none") == ("labels", "none", "early stopping")
    streaming = compression.setting_flags("trec6", "narrowed", "pb-streaming")
    assert streaming[: len(compression.setting_flags("trec6", "narrowed", "pb"))] == compression.setting_flags(
        "trec6", "narrowed", "pb"
    )
    assert streaming[-4:] == ["--candidate_learner", "streaming", "--candidate_learning_rate", "1e-3"]
    with pytest.raises(ValueError, match="unknown part"):
        compression.setting_kind("pb-fast")
    # every setting has a line style in the width-frontier plot, and every family a colour per style
    kinds = {compression.setting_kind(setting)[1:] for setting in compression.SETTINGS}
    assert kinds <= set(compression.DENDRITE_STYLES)
    assert all(len(colours) == len(compression.DENDRITE_STYLES) for colours in compression.COLORS.values())


def test_the_learner_budget_study_puts_each_phase_in_fine_tuning_epochs(tmp_path):
    import benchmarks.learner as learner

    def layers(score: float, seconds: float) -> dict:
        layer = {"score": score, "chance": 0.02, "train_score": 2 * score, "seconds": seconds}
        return {"bert.encoder.layer.0.attention.self.query": layer, "classifier": dict(layer, score=3 * score)}

    for seed, epoch_seconds in ((0, 20.0), (1, 40.0)):
        record = {"seed": seed, "commit": "abc", "fine_tune_epoch_seconds": epoch_seconds, "cache_seconds": 10.0}
        record["variants"] = {name: layers(0.05, 5.0) for name in learner.BUDGETS}
        record["variants"]["default"] = layers(0.1, 45.0)  # 90 s of fit over both layers
        learner.run_path("budget", seed, tmp_path).write_text(json.dumps(record))
    summary = learner.summarise(tmp_path)
    default = summary["budgets"]["default"]
    assert default["seeds"] == [0, 1] and default["score_mean"] == pytest.approx(0.2)  # mean over the 2 layers
    # (10 s cache + 90 s fit) over a 20 s and a 40 s epoch: 5 and 2.5 epochs
    assert default["phase_over_epoch_mean"] == pytest.approx(3.75)
    assert summary["budgets"]["untrained"]["phase_over_epoch_mean"] == pytest.approx((20 / 20 + 20 / 40) / 2)
    assert summary["variants"] == {}  # no early-stopping runs in this folder
    table = update_readme.learner_budget_table(summary)
    assert "| default | – | – | 0.2000 (0.0200) | 0.2000 | 90 | 3.75 |" in table
    assert "| 2048 rows, 10 epochs | 10 | 2,048 |" in table


def test_benchmark_runs_pin_the_candidate_phase_they_were_made_with_and_a_method_overrides_it(tmp_path):
    import benchmarks.tasks as tasks
    from hf_dendrites import DendriteTrainingArguments

    defaults = DendriteTrainingArguments()
    pinned = dict(zip(common.BENCHMARK_CANDIDATE_PHASE[::2], common.BENCHMARK_CANDIDATE_PHASE[1::2], strict=True))
    # equal to the library's defaults, so a plain run does not refuse the pin
    assert pinned == {
        "--candidate_epochs": str(defaults.candidate_epochs),
        "--candidate_cache_rows": str(defaults.candidate_cache_rows),
    }
    command = tasks.run_command("trec6", "pb_short_phase", 0, tmp_path, "unused")
    last = {flag: command[i + 1] for i, flag in enumerate(command) if flag.startswith("--candidate_")}
    assert last == {"--candidate_epochs": "10", "--candidate_cache_rows": "2048"}  # the method's flags come last
    plain = tasks.run_command("trec6", "baseline", 0, tmp_path, "unused")
    assert "--candidate_epochs" in plain and plain.index("--candidate_epochs") < plain.index("--dendrites")
