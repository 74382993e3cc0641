"""The cached candidate learner: its objective, guards, held-out scoring, memory budget, and the control."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
import torch
from tiny_models import tiny_model, token_batch
from torch import nn

import hf_dendrites as hd
from hf_dendrites.candidate_cache import LayerRows, collect_candidate_rows, rows_per_layer
from hf_dendrites.candidate_fit import FitSettings, ascent_loss, fit_layer, split_by_example, statistics
from hf_dendrites.correlation import BatchMoments, CorrelationStats
from hf_dendrites.dendrite_phase import run_dendrite_phase
from hf_dendrites.layer import candidate_activations


def whole_cache_abs_correlation(values: torch.Tensor, errors: torch.Tensor) -> torch.Tensor:
    """sum over candidates and neurons of |corr(v, e)| over every row, straight from the definition."""
    v = values - values.mean(dim=0)
    e = (errors - errors.mean(dim=0)).unsqueeze(1)
    r = (v * e).sum(dim=0) / (v.pow(2).sum(dim=0) * e.pow(2).sum(dim=0)).sqrt()
    return r.abs().sum()


def test_the_cached_objective_and_its_gradient_are_those_of_the_whole_cache():
    generator = torch.Generator().manual_seed(0)
    x, errors = torch.randn(300, 5, generator=generator), torch.randn(300, 3, generator=generator)
    errors[:, 0] += 0.5 * torch.tanh(x[:, 0])  # some signal to correlate with
    weight = torch.randn(2, 3, 5, generator=generator, requires_grad=True)
    bias = torch.randn(2, 3, generator=generator, requires_grad=True)

    def activations(inputs, dendrites):
        return candidate_activations(inputs, weight, bias, None, dendrites, activation="sigmoid")

    standard = (errors - errors.mean(dim=0)) / errors.std(dim=0, unbiased=False)
    stats = statistics(activations, x, standard, None, width=6)
    exact = whole_cache_abs_correlation(activations(x, None), errors)
    assert float(stats.correlation().abs().sum()) == pytest.approx(float(exact), rel=1e-5)  # the score itself

    (expected_w, expected_b) = torch.autograd.grad(-exact, [weight, bias])
    n = stats.count
    mean_v = (stats.sum_v / n).float()
    var_v = (stats.sum_vv / n - (stats.sum_v / n).pow(2)).float()
    r = stats.correlation().float()
    loss = ascent_loss(activations(x, None), standard, r.sign() * var_v.rsqrt(), r.abs() / var_v, mean_v)
    (actual_w, actual_b) = torch.autograd.grad(loss, [weight, bias])
    assert torch.allclose(actual_w, expected_w, atol=1e-5, rtol=1e-3)
    assert torch.allclose(actual_b, expected_b, atol=1e-5, rtol=1e-3)


def test_a_candidate_or_error_that_does_not_vary_scores_zero_not_inf():
    values = torch.full((64, 2, 3), 0.731)
    errors = torch.randn(64, 3) * 1e-7
    batch = BatchMoments.of(values, errors)
    assert torch.equal(batch.correlation(), torch.zeros(2, 3))
    assert torch.equal(batch.candidate_gradient(), torch.zeros_like(values))
    stats = CorrelationStats(2, 3)
    stats.add_moments(BatchMoments.of(values, errors))
    assert torch.equal(stats.correlation(), torch.zeros(2, 3))
    stats.reset()
    stats.add_moments(BatchMoments.of(torch.randn(64, 2, 3), torch.zeros(64, 3)))  # an error that is all zero
    assert torch.equal(stats.correlation(), torch.zeros(2, 3))


def test_a_layer_whose_input_never_varies_is_skipped_with_one_warning_naming_it(caplog):
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1))
    with torch.no_grad():
        model[0].weight.zero_()  # the second layer sees tanh(bias): the same row every time
    hd.add_dendrites(model, hd.DendriteConfig(target_modules=["0", "2"]))
    x = torch.randn(400, 4)
    y = torch.sin(3 * x[:, :1])
    batches = [{"x": x[i : i + 100], "y": y[i : i + 100]} for i in range(0, 400, 100)]
    with caplog.at_level(logging.WARNING, logger="hf_dendrites.dendrite_phase"):
        report = run_dendrite_phase(model, batches, lambda b: nn.functional.mse_loss(model(b["x"]), b["y"]))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "2" in warnings[0] and "same in every row" in warnings[0]
    assert report.skipped == {"2": "its input is the same in every row"} and report.scores["2"] == 0.0
    assert all(0 <= score <= 1 for score in report.scores.values())
    hd.grow(model)  # the structure stays uniform: the skipped layer's dendrite is inert
    assert hd.parameter_report(model)["dendrites_per_layer"] == {"0": 1, "2": 1}


def test_candidates_are_chosen_and_scored_on_examples_they_never_trained_on():
    generator = torch.Generator().manual_seed(0)
    examples = torch.arange(50).repeat_interleave(4)  # 4 rows (tokens) per example
    rows = LayerRows(torch.randn(200, 6), torch.randn(200, 2), None, examples)
    train, score = split_by_example(rows, 0.2, generator)
    assert len(train) + len(score) == len(rows) and len(score) == 40
    assert not set(train.examples.tolist()) & set(score.examples.tolist())
    layer = hd.add_dendrites(nn.Sequential(nn.Linear(6, 2)), hd.DendriteConfig(target_modules=["0"]))[0]
    settings = FitSettings(num_candidates=3, epochs=5, batch_size=64, learning_rate=0.1, score_fraction=0.2)
    fit = fit_layer(layer, rows, settings, torch.Generator().manual_seed(1))
    assert (fit.train_rows, fit.score_rows) == (160, 20)
    assert len(fit.score_examples) == len(fit.selection_examples) == 5
    assert not set(fit.score_examples.tolist()) & set(fit.selection_examples.tolist())

    def held_out(chosen_on: torch.Tensor) -> CorrelationStats:
        held = torch.isin(rows.examples, chosen_on)
        stats = CorrelationStats(3, 2)
        values = candidate_activations(rows.inputs[held], fit.weight, fit.bias, None, None, activation="sigmoid")
        stats.add_moments(BatchMoments.of(values, rows.errors[held]))
        return stats

    best, _ = held_out(fit.selection_examples).best_per_neuron()  # chosen on the selection half
    scores = held_out(fit.score_examples).correlation().abs().gather(0, best.unsqueeze(0)).squeeze(0)
    assert torch.equal(fit.choice.index, best) and torch.allclose(fit.choice.score, scores.float())


@pytest.mark.parametrize(("batch_size", "forwards_per_epoch"), [(10_000, 1), (100, 3)])
def test_a_full_batch_epoch_takes_its_statistics_from_the_step_forward(monkeypatch, batch_size, forwards_per_epoch):
    # 200 rows of which 160 train: one full-batch step per epoch needs one forward over them; with
    # batches of 100 a statistics pass comes first, then two minibatch forwards.
    from hf_dendrites import candidate_fit

    generator = torch.Generator().manual_seed(0)
    rows = LayerRows(
        torch.randn(200, 6, generator=generator),
        torch.randn(200, 2, generator=generator),
        None,
        torch.arange(100).repeat_interleave(2),
    )
    layer = hd.add_dendrites(nn.Sequential(nn.Linear(6, 2)), hd.DendriteConfig(target_modules=["0"]))[0]
    train_sizes = []

    def counted(inputs, *args, **kwargs):
        train_sizes.append(inputs.shape[0])
        return candidate_activations(inputs, *args, **kwargs)

    monkeypatch.setattr(candidate_fit, "candidate_activations", counted)
    settings = FitSettings(num_candidates=2, epochs=7, batch_size=batch_size, learning_rate=0.1, score_fraction=0.2)
    fit = fit_layer(layer, rows, settings, torch.Generator().manual_seed(1))
    assert fit.train_rows == 160
    # what the scoring after training reads: selection and scoring halves (20 rows each) and the training rows once
    training_forwards = [size for size in train_sizes if size != 20][:-1]
    assert len(training_forwards) == 7 * forwards_per_epoch
    assert sum(training_forwards) == 7 * 160 * (1 if forwards_per_epoch == 1 else 2)


def test_with_early_stopping_each_candidate_keeps_the_weights_of_its_best_check_on_the_selection_rows():
    # Errors that are noise: whatever a candidate learns from the training rows does not carry over,
    # so the weights it keeps are never worse on the selection rows than the untrained ones.
    generator = torch.Generator().manual_seed(0)
    examples = torch.arange(100).repeat_interleave(2)
    rows = LayerRows(
        torch.randn(200, 40, generator=generator), torch.randn(200, 3, generator=generator), None, examples
    )
    layer = hd.add_dendrites(nn.Sequential(nn.Linear(40, 3)), hd.DendriteConfig(target_modules=["0"]))[0]
    settings = FitSettings(
        num_candidates=2, epochs=40, batch_size=200, learning_rate=0.1, score_fraction=0.4, early_stopping="candidate"
    )

    def selection_scores(fit, epochs):
        held = torch.isin(rows.examples, fit.selection_examples)
        values = candidate_activations(rows.inputs[held], fit.weight, fit.bias, None, None, activation="sigmoid")
        return BatchMoments.of(values, rows.errors[held]).correlation().abs()

    untrained = fit_layer(layer, rows, replace(settings, epochs=0), torch.Generator().manual_seed(1))
    trained = fit_layer(layer, rows, settings, torch.Generator().manual_seed(1))
    assert torch.equal(untrained.selection_examples, trained.selection_examples)  # same split, same start
    assert bool((selection_scores(trained, 40) >= selection_scores(untrained, 0) - 1e-6).all())
    assert trained.train_score > untrained.train_score + 0.1  # it did fit the training rows
    assert not torch.equal(trained.weight, untrained.weight)
    last = fit_layer(layer, rows, replace(settings, early_stopping="none"), torch.Generator().manual_seed(1))
    assert not bool(
        (selection_scores(last, 40) >= selection_scores(untrained, 0) - 1e-6).all()
    )  # the default keeps the last epoch


def test_the_cache_keeps_within_its_memory_budget_and_samples_uniformly():
    model = hd.add_dendrites(tiny_model(num_labels=3), hd.DendriteConfig())
    layers = hd.dendrite_layers(model)
    budget = 60_000
    cap = rows_per_layer(layers, budget, max_rows=10_000)
    batch = token_batch()
    labels = torch.tensor([0, 1, 2, 0])
    batches = [dict(batch, labels=labels) for _ in range(6)]
    cached = collect_candidate_rows(
        model, batches, lambda b: model(**b).loss, max_rows=cap, generator=torch.Generator().manual_seed(0)
    )
    assert 2 <= cap < max(rows.seen for rows in cached.values())  # the budget bites on token layers
    assert 2 * sum(rows.nbytes() for rows in cached.values()) <= budget  # with its sampling buffer
    assert all(len(rows) == min(cap, rows.seen) for rows in cached.values())
    assert all(not param.grad_fn and param.grad is None for param in model.parameters())  # nothing trained
    with pytest.raises(ValueError, match="candidate_cache_gib"):
        rows_per_layer(layers, 1_000, max_rows=10_000)


def test_a_pass_over_random_order_batches_stops_once_every_layer_is_full():
    model = hd.add_dendrites(tiny_model(num_labels=3), hd.DendriteConfig())
    batch = dict(token_batch(), labels=torch.tensor([0, 1, 2, 0]))  # 4 examples: 4 rows a batch at [CLS]
    losses = []

    def compute_loss(b):
        losses.append(1)
        return model(**b).loss

    def collect(stop_when_full: bool) -> dict[str, LayerRows]:
        losses.clear()
        generator = torch.Generator().manual_seed(0)
        return collect_candidate_rows(
            model, [batch] * 10, compute_loss, max_rows=10, generator=generator, stop_when_full=stop_when_full
        )

    full = collect(stop_when_full=False)
    assert len(losses) == 10
    early = collect(stop_when_full=True)
    # the [CLS]-only layers (classifier, pooler) fill last: 10 rows need 3 batches of 4 examples
    assert len(losses) == 3
    assert all(len(early[name]) == len(rows) == 10 for name, rows in full.items())
    assert min(rows.seen for rows in early.values()) == 12
    assert int(early["classifier"].examples.max()) == 11  # only the examples it read


def test_the_trainer_phase_reads_the_training_set_in_a_seeded_order(tmp_path):
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    from hf_dendrites.phase_data import phase_batches

    data = Dataset.from_dict({"input_ids": [[i + 5, 2] for i in range(12)], "labels": [i % 3 for i in range(12)]})
    trainer = Trainer(
        model=tiny_model(num_labels=3),
        args=TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=4, report_to=[]),
        train_dataset=data,
    )

    def first_tokens(seed: int) -> list[int]:
        return [int(t) for b in phase_batches(trainer, seed=seed) for t in b["input_ids"][:, 0]]

    assert first_tokens(3) == first_tokens(3)  # the same order on every process and on resume
    assert sorted(first_tokens(3)) == list(range(5, 17))  # every example once
    assert first_tokens(3) != first_tokens(4) and first_tokens(3) != list(range(5, 17))


def test_the_cached_phase_leaves_predictions_unchanged_and_growth_keeps_them():
    model = hd.add_dendrites(tiny_model(num_labels=3), hd.DendriteConfig())
    batch = dict(token_batch(), labels=torch.tensor([0, 1, 2, 0]))
    model.eval()
    with torch.no_grad():
        before = model(**batch).logits
    run_dendrite_phase(model, [batch] * 3, lambda b: model(**b).loss)
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, before)
    hd.grow(model)
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, before, atol=1e-6)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("candidate_learner", "minibatch"),
        ("candidate_epochs", -1),
        ("candidate_batch_size", 1),
        ("candidate_cache_rows", 0),
        ("candidate_cache_gib", 0.0),
        ("candidate_score_fraction", 1.0),
        ("candidate_shuffled_errors", "yes"),
    ],
)
def test_a_wrong_candidate_setting_is_refused_by_name(field, value):
    with pytest.raises(ValueError, match=f"DendriteTrainingArguments.{field}"):
        replace(hd.DendriteTrainingArguments(), **{field: value})


def test_the_small_control_learns_what_the_error_holds(tmp_path):
    """The known-positive control, small: trained candidates beat shuffled-error ones and lower the loss."""
    from benchmarks import control

    task = replace(
        control.TASKS["regression"], train_rows=8_000, validation_rows=4_000, plateau_epochs=25, epochs_after=10
    )
    control.run_study({"regression": task}, arms=("no_dendrite", "pb", "shuffled_errors"), seeds=(0,), root=tmp_path)
    summary = control.summarise(("regression",), root=tmp_path)["tasks"]["regression"]["arms"]
    trained = summary["pb"]["exact_error_correlation_per_layer"]
    shuffled = summary["shuffled_errors"]["exact_error_correlation_per_layer"]
    assert trained["0"] >= 5 * shuffled["0"]
    assert summary["pb"]["candidate_correlation_mean"] > summary["pb"]["chance_correlation_mean"]
    assert summary["pb"]["val_loss_mean"] < summary["no_dendrite"]["val_loss_mean"]
