"""The frontier benchmark's summary: points per arm, pairing with restarts and with the width line."""

from __future__ import annotations

import json
import math

import pytest

import benchmarks.frontier as frontier

REGIME = frontier.REGIMES["mnist1d"]
LABELS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] * 10


def write(root, arm, width, seed, correct, parameters, arm_width=None, **extra):
    """A run file whose test predictions are right exactly where `correct` says."""
    predictions = "".join(str(label if ok else (label + 1) % 10) for label, ok in zip(LABELS, correct))
    run = {
        "arm": arm,
        "width": width,
        "seed": seed,
        "parameters": parameters,
        "non_embedding_parameters": parameters,
        "validation": sum(correct) / len(correct),
        "test": sum(correct) / len(correct),
        "epochs_trained": 10.0,
        "test_predictions": predictions,
        **({"arm_width": arm_width} if arm_width is not None else {}),
        **extra,
    }
    path = frontier.run_file(REGIME.name, arm, arm_width or width, seed, root)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run))


def first(count):
    return [i < count for i in range(100)]


@pytest.fixture
def runs(tmp_path):
    for seed in frontier.SEEDS:
        write(tmp_path, "plain", 8, seed, first(50), 100)
        write(tmp_path, "plain", 16, seed, first(70), 400)
        write(tmp_path, "plain", 32, seed, first(90), 1600)
        write(tmp_path, "restarts", 8, seed, first(52), 100, arm_width=8)
        write(tmp_path, "pb", 8, seed, first(60), 200, arm_width=8, dendrites_per_layer={"a": 2, "b": 1})
    return tmp_path


def test_points_average_the_seeds_of_each_arm_and_width(runs):
    summary = frontier.summarise_regime(REGIME, LABELS, runs)
    points = {(p["arm"], p["width"]): p for p in summary["points"]}
    assert points[("plain", 16)]["metric_mean"] == pytest.approx(0.70)
    assert points[("pb", 8)]["parameters"] == 200 and points[("pb", 8)]["seeds"] == [0, 1, 2]
    assert points[("pb", 8)]["dendrites_per_neuron_mean"] == pytest.approx(1.5)
    assert points[("plain", 16)]["metric_std"] == 0.0


def test_a_dendrite_arm_is_paired_with_restarts_and_with_the_width_line_at_its_parameters(runs):
    summary = frontier.summarise_regime(REGIME, LABELS, runs)
    pb = next(c for c in summary["comparisons"] if c["arm"] == "pb" and c["width"] == 8)
    assert pb["vs_restarts"]["difference"] == pytest.approx(0.60 - 0.52)
    # 200 parameters lie halfway between 100 and 400 in log scale: the line there is 0.5 * 0.50 + 0.5 * 0.70
    line = pb["vs_width_line"]
    assert line["between_widths"] == [8, 16] and line["weight_of_upper"] == pytest.approx(0.5)
    assert line["difference"] == pytest.approx(0.60 - 0.60, abs=1e-12)
    assert line["low"] <= line["difference"] <= line["high"]


def test_a_model_larger_than_the_whole_line_has_no_interpolated_comparison(runs):
    for seed in frontier.SEEDS:
        write(runs, "gd", 8, seed, first(60), 5000, arm_width=8)
    summary = frontier.summarise_regime(REGIME, LABELS, runs)
    gd = next(c for c in summary["comparisons"] if c["arm"] == "gd")
    assert gd["vs_width_line"] is None and "vs_restarts" in gd


def test_interpolation_is_linear_in_log_parameters():
    points = [(100.0, 8), (1000.0, 16)]
    low, high, weight = frontier.interpolation(points, math.sqrt(100 * 1000))
    assert (low, high) == (8, 16) and weight == pytest.approx(0.5)
    assert frontier.interpolation(points, 50.0) is None


def test_the_wider_arm_waits_for_every_pb_seed_then_matches_their_mean_parameters(runs):
    assert frontier.wider_width(REGIME, 16, runs) is None
    width = frontier.wider_width(REGIME, 8, runs)  # pb at width 8 holds 200 parameters in this fixture
    task = frontier.task_of(REGIME)
    assert abs(task.parameters(width)[0] - 200) <= min(abs(task.parameters(w)[0] - 200) for w in range(8, 128))


def test_masked_lm_outcomes_are_the_blocks_losses():
    run = {"test_outcomes": [2.5, 3.0]}
    assert frontier.task_of(frontier.REGIMES["masked_lm"]).outcomes(run, None).tolist() == [2.5, 3.0]
    total, non_embedding = frontier.task_of(frontier.REGIMES["masked_lm"]).parameters(32)
    assert 0 < non_embedding < total


def test_a_scheduled_first_growth_reaches_the_dendrite_config_and_the_restarts_arm():
    regime = frontier.REGIMES["masked_lm"]
    assert regime.first_growth_epoch is not None
    for arm in frontier.DENDRITE_ARMS:
        assert frontier.growth_arguments(regime, arm).first_growth_epoch == regime.first_growth_epoch
    assert frontier.growth_arguments(REGIME, "pb").first_growth_epoch is None  # mnist1d grows on a stall


def test_the_width_line_parameters_at_a_score_are_interpolated_in_log_parameters():
    line = [(100.0, 0.50), (400.0, 0.70), (1600.0, 0.90)]
    assert frontier.width_line_parameters_at(line, 0.60, greater_is_better=True) == pytest.approx(200.0)
    assert frontier.width_line_parameters_at(line, 0.80, greater_is_better=True) == pytest.approx(800.0)
    assert frontier.width_line_parameters_at(line, 0.45, greater_is_better=True) is None  # the smallest does as well
    assert frontier.width_line_parameters_at(line, 0.95, greater_is_better=True) is None  # no plain width does
    losses = [(100.0, 5.4), (400.0, 5.2)]
    assert frontier.width_line_parameters_at(losses, 5.3, greater_is_better=False) == pytest.approx(200.0)
    assert frontier.width_line_parameters_at(losses, 5.5, greater_is_better=False) is None


def test_each_arm_gets_its_share_of_the_width_lines_parameters_and_its_same_run_step_cost(runs):
    step_time = {"neuron": {"0": {"seconds": 10.0, "steps": 100}, "1": {"seconds": 6.0, "steps": 50}}, "dendrite": {}}
    for seed in frontier.SEEDS:
        write(runs, "gd", 8, seed, first(60), 100, arm_width=8, step_time=step_time)
    summary = frontier.summarise_regime(REGIME, LABELS, runs)
    points = {(p["arm"], p["width"]): p for p in summary["points"]}
    gd, pb = points[("gd", 8)], points[("pb", 8)]
    # 60% is reached by the line at 200 parameters (halfway from 100 to 400 in log scale)
    assert gd["width_line_parameters_at_equal_metric"] == pytest.approx(200.0)
    assert gd["parameters_over_width_line"] == pytest.approx(0.5)
    assert pb["parameters_over_width_line"] == pytest.approx(1.0)
    assert gd["neuron_step_cost_of_one_set"] == pytest.approx(1.2) and gd["neuron_step_cost_runs"] == 3
    assert gd["neuron_step_cost_range"] == pytest.approx([1.2, 1.2])
    assert "neuron_step_cost_of_one_set" not in pb  # its runs recorded no step times
    assert "parameters_over_width_line" not in points[("plain", 8)]
