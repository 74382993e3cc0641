"""The error signals of a dendrite phase: backprop, linear backprop, feedback alignment, forward-forward."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch
from test_trainer import TRAIN, VALIDATION, dendrite_setup, training_args
from tiny_models import FAMILIES, tiny_model, tiny_summing_network, token_batch

import hf_dendrites as hd
from experiments.metrics import build_compute_metrics
from hf_dendrites import DendriteConfig, DendriteTrainer, DendriteTrainingArguments
from hf_dendrites.candidate_cache import collect_candidate_rows
from hf_dendrites.error_signals import FORWARD_ONLY_SIGNALS, feedback_matrix, linear_activation_gradients

SIGNALS = ("backprop", "linear_backprop", "feedback_alignment", "forward_forward")


def test_a_bad_error_signal_names_the_allowed_values():
    with pytest.raises(ValueError, match="error_signal must be one of .*feedback_alignment"):
        DendriteTrainingArguments(error_signal="hebbian")


def candidate_gradients(
    model: torch.nn.Module, signal: str, labels: torch.Tensor, positions: str = "all"
) -> dict[str, torch.Tensor]:
    """One dendrite-phase training step of `signal` on a fixed batch: each layer's candidate weight gradient."""
    arguments = DendriteTrainingArguments(error_signal=signal, candidate_positions=positions)
    trainer = DendriteTrainer(
        model,
        training_args("unused", save_strategy="no"),
        eval_dataset=VALIDATION,
        train_dataset=TRAIN,
        dendrite_config=None if hd.dendrite_layers(model) else DendriteConfig(),
        dendrite_args=arguments,
    )
    hd.model.start_candidates(trainer.model, 2, generator=torch.Generator().manual_seed(0), arguments=arguments)
    batch = {**token_batch(batch=6, length=7), "labels": labels}
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop, which is not running here
    torch.manual_seed(0)  # the same dropout masks for every signal
    trainer.training_step(trainer.model, batch)
    return {name: layer.candidate_weight.grad.clone() for name, layer in hd.dendrite_layers(trainer.model).items()}


def without_activation_functions(model: torch.nn.Module) -> torch.nn.Module:
    for layer in model.bert.encoder.layer:
        layer.intermediate.intermediate_act_fn = torch.nn.Identity()
    model.bert.pooler.activation = torch.nn.Identity()
    return model


def test_linear_backprop_is_exact_backprop_without_activation_functions_and_differs_with_gelu():
    labels = torch.tensor([0, 1, 2, 0, 1, 2])

    def gradients(signal: str, linear: bool) -> dict[str, torch.Tensor]:
        model = tiny_model(num_labels=3)
        if linear:
            model = without_activation_functions(model)
        return candidate_gradients(model, signal, labels)

    exact, linearised = gradients("backprop", True), gradients("linear_backprop", True)
    assert all(torch.allclose(exact[name], linearised[name], atol=1e-6) for name in exact)
    exact, linearised = gradients("backprop", False), gradients("linear_backprop", False)
    first_layer = "bert.encoder.layer.0.attention.self.query"  # its error passes through GELU and tanh
    assert not torch.allclose(exact[first_layer], linearised[first_layer], atol=1e-6)
    assert torch.allclose(exact["classifier"], linearised["classifier"])  # nothing non-linear above it


def test_linear_activation_gradients_keep_values_and_hooks_only_inside_the_block():
    model = tiny_model(num_labels=3).train()
    batch = token_batch()
    with torch.no_grad():
        before = model(**batch).logits
    with linear_activation_gradients(model) as found, torch.no_grad():
        inside = model(**batch).logits
    assert found == len(model.bert.encoder.layer) + 1  # the GELUs and the pooler's tanh
    assert torch.allclose(before, inside, atol=1e-6)  # x + (act(x) - x): act(x) up to rounding
    assert all(not module._forward_hooks for module in model.modules())


def test_feedback_matrices_are_fixed_per_layer():
    first = feedback_matrix("bert.encoder.layer.0.output.dense", 3, 8, torch.device("cpu"))
    again = feedback_matrix("bert.encoder.layer.0.output.dense", 3, 8, torch.device("cpu"))
    other = feedback_matrix("bert.encoder.layer.1.output.dense", 3, 8, torch.device("cpu"))
    assert torch.equal(first, again) and not torch.equal(first, other) and first.shape == (3, 8)


@pytest.mark.parametrize("signal", FORWARD_ONLY_SIGNALS)
def test_forward_only_signals_run_no_backward_pass_through_the_network(signal):
    def network_backward_calls(signal: str) -> tuple[int, dict[str, torch.Tensor]]:
        model = tiny_model(num_labels=3)
        calls = []
        model.bert.encoder.layer[0].intermediate.intermediate_act_fn.register_full_backward_hook(
            lambda *args: calls.append(1)
        )
        gradients = candidate_gradients(model, signal, torch.tensor([0, 1, 2, 0, 1, 2]))
        return len(calls), gradients

    calls, gradients = network_backward_calls("backprop")
    assert calls > 0  # the probe sees the backward pass when there is one
    calls, gradients = network_backward_calls(signal)
    assert calls == 0
    assert all(float(g.abs().sum()) > 0 for g in gradients.values())  # yet every layer's candidates learn


@pytest.mark.parametrize("family", [*FAMILIES, "summing_network"])
@pytest.mark.parametrize("signal", FORWARD_ONLY_SIGNALS)
def test_forward_only_signals_train_the_candidates_of_every_family(family, signal):
    model = tiny_summing_network(num_labels=3) if family == "summing_network" else tiny_model(family, num_labels=3)
    hd.add_dendrites(model, DendriteConfig())
    gradients = candidate_gradients(model, signal, torch.tensor([0, 1, 2, 0, 1, 2]))
    assert gradients and all(torch.isfinite(g).all() and float(g.abs().sum()) > 0 for g in gradients.values())


def test_bad_candidate_positions_name_the_allowed_values():
    with pytest.raises(ValueError, match="candidate_positions must be one of .*'first'"):
        DendriteTrainingArguments(candidate_positions="cls")


@pytest.mark.parametrize("signal", SIGNALS)
def test_first_position_candidates_train_on_one_row_per_example(signal):
    """batch 6 x 7 positions (3 rows with 2 padded): 36 real tokens per token-level layer, or 6 first ones."""
    counts = {}
    for positions in ("all", "first"):
        model = hd.add_dendrites(tiny_model(num_labels=3), DendriteConfig())
        candidate_gradients(model, signal, torch.tensor([0, 1, 2, 0, 1, 2]), positions)
        layers = hd.dendrite_layers(model)
        assert all(float(layer.candidate_weight.grad.abs().sum()) > 0 for layer in layers.values())
        counts[positions] = {name: int(layer.candidate_stats.count) for name, layer in layers.items()}
    first_layer = "bert.encoder.layer.0.intermediate.dense"
    assert counts["all"][first_layer] == 36 and counts["first"][first_layer] == 6
    assert set(counts["first"].values()) == {6}  # pooler and classifier have one row per example anyway


def test_forward_forward_leaves_out_unlabelled_rows_in_both_learners():
    """A row labelled -100 (a distillation pool's) is neither right nor wrong: no candidate row comes from it."""
    labels = torch.tensor([0, 1, -100, -100, 1, 2])
    labelled = torch.tensor([0, 1, 4, 5])
    model = hd.add_dendrites(tiny_model(num_labels=3), DendriteConfig())
    candidate_gradients(model, "forward_forward", labels, "first")
    assert {int(layer.candidate_stats.count) for layer in hd.dendrite_layers(model).values()} == {4}

    cached_model = hd.add_dendrites(tiny_model(num_labels=3), DendriteConfig())
    cached = collect_candidate_rows(
        cached_model,
        [{**token_batch(batch=6, length=7), "labels": labels}],
        lambda b: cached_model(**b).loss,
        max_rows=1_000,
        generator=torch.Generator().manual_seed(0),
        error_signal="forward_forward",
        positions="first",
    )
    assert cached and all(torch.equal(rows.examples.sort().values, labelled) for rows in cached.values())
    assert all(rows.errors.abs().eq(1).all() for rows in cached.values())  # every kept row is right or wrong


def assert_saves_and_reloads(trainer, tmp_path, signal: str) -> None:
    """The grown model saves, reloads and gives the same logits; the error signal was the run's setting, and the
    saved model holds only what it computes with."""
    assert trainer.dendrite_args.error_signal == signal
    trainer.save_model(tmp_path / "saved")
    loaded = hd.from_pretrained(tmp_path / "saved")
    assert loaded.dendrite_config == trainer.model.dendrite_config
    assert "error_signal" not in json.loads((tmp_path / "saved" / "config.json").read_text())["dendrites"]["config"]
    batch = token_batch()
    trainer.model.eval()
    with torch.no_grad():
        assert torch.allclose(trainer.model(**batch).logits, loaded(**batch).logits, atol=1e-6)


@pytest.mark.parametrize("signal", SIGNALS)
def test_each_signal_trains_cached_candidates_grows_and_saves(tmp_path, signal):
    trainer = DendriteTrainer(
        tiny_model(num_labels=2),
        training_args(tmp_path / "out", max_steps=32, save_strategy="no"),
        train_dataset=TRAIN,
        eval_dataset=VALIDATION,
        compute_metrics=build_compute_metrics(["accuracy"]),
        **dendrite_setup(error_signal=signal, max_dendrites=1),
    )
    trainer.train()
    grown = [r for r in trainer.tracker.history if r["action"] == "grow"]
    assert grown and all(0 < r["candidate_score"] <= 1 for r in grown)
    phases = trainer.dendrite_callback.candidate_scores_per_layer
    assert phases and set(phases[0]["scores"]) == set(hd.dendrite_layers(trainer.model))
    assert_saves_and_reloads(trainer, tmp_path, signal)


def test_error_alignment_diagnostics_need_the_streaming_learner(tmp_path):
    with pytest.raises(ValueError, match="candidate_learner='streaming'"):
        DendriteTrainer(
            tiny_model(num_labels=2),
            training_args(tmp_path / "out", max_steps=32, save_strategy="no"),
            train_dataset=TRAIN,
            eval_dataset=VALIDATION,
            **dendrite_setup(error_signal="feedback_alignment"),
            error_alignment_steps=4,
        )


@pytest.mark.parametrize("signal", SIGNALS)
def test_each_signal_trains_streaming_candidates_grows_and_saves(tmp_path, signal):
    trainer = DendriteTrainer(
        tiny_model(num_labels=2),
        training_args(tmp_path / "out", max_steps=32, save_strategy="no"),
        train_dataset=TRAIN,
        eval_dataset=VALIDATION,
        compute_metrics=build_compute_metrics(["accuracy"]),
        **dendrite_setup(
            error_signal=signal,
            max_dendrites=1,
            candidate_patience=3,
            max_candidate_epochs=2.0,
            candidate_learner="streaming",
        ),
        error_alignment_steps=4,
    )
    trainer.train()
    history = trainer.tracker.history
    phase = [r for r in history if r["phase"] == "dendrite" and r["candidate_score"] is not None]
    assert phase and any(record["action"] == "grow" for record in history)
    scores = [record["candidate_score"] for record in phase]
    assert max(scores[1:]) > scores[0]  # the candidates learn during the phase
    task_scores = {record["score"] for record in phase}
    assert len(task_scores) == 1  # predictions do not change while candidates train
    alignment = trainer.dendrite_callback.diagnostics.error_alignment
    if signal == "backprop":
        assert alignment == []
    else:  # the first steps of the phase compared the signal's error with backprop's, layer by layer
        per_phase = Counter(entry["dendrite_phase"] for entry in alignment)
        assert set(per_phase.values()) == {4} and all(-1 <= entry["mean"] <= 1 for entry in alignment)
        assert set(alignment[0]["layers"]) == set(hd.dendrite_layers(trainer.model))
    # at every dendrite-phase evaluation, the candidates' correlation with the exact error (backprop too)
    exact = trainer.dendrite_callback.diagnostics.candidate_exact_correlation
    assert len(exact) == len(phase) and all(0 <= entry["mean"] <= 1 for entry in exact)
    assert all(0 <= entry["chance_mean"] <= 1 and entry["batches"] == 4 for entry in exact)
    assert set(exact[0]["layers"]) == set(hd.dendrite_layers(trainer.model))
    assert_saves_and_reloads(trainer, tmp_path, signal)


def test_a_plain_trainer_refuses_an_error_signal_it_cannot_compute(tmp_path):
    from transformers import Trainer

    model = hd.add_dendrites(tiny_model(num_labels=2), DendriteConfig())
    trainer = Trainer(model, training_args(tmp_path, max_steps=2), train_dataset=TRAIN, eval_dataset=VALIDATION)
    trainer.add_callback(
        hd.DendriteCallback(trainer, dendrite_args=DendriteTrainingArguments(error_signal="feedback_alignment"))
    )
    with pytest.raises(ValueError, match="needs DendriteTrainer"):
        trainer.train()


def test_error_alignment_is_one_for_linear_backprop_without_activations_and_below_one_for_the_others():
    from hf_dendrites.error_signals import error_alignment

    batch = {**token_batch(batch=6, length=7), "labels": torch.tensor([0, 1, 2, 0, 1, 2])}

    def alignment(model: torch.nn.Module, signal: str) -> dict[str, float]:
        hd.add_dendrites(model, DendriteConfig())
        return error_alignment(model, signal, lambda: model(**batch).loss, batch["labels"])

    linear = alignment(without_activation_functions(tiny_model(num_labels=3)), "linear_backprop")
    assert all(value == pytest.approx(1.0, abs=1e-5) for value in linear.values())
    with_gelu = alignment(tiny_model(num_labels=3), "linear_backprop")
    assert with_gelu["classifier"] == pytest.approx(1.0, abs=1e-5)  # nothing non-linear above the head
    assert with_gelu["bert.encoder.layer.0.attention.self.query"] < 1 - 1e-6
    for signal in FORWARD_ONLY_SIGNALS:
        cosines = alignment(tiny_model(num_labels=3), signal)
        assert set(cosines) == set(linear) and all(-1 <= value <= 1 for value in cosines.values())
        # a forward-only signal is not backprop: no layer's error lines up with the exact one
        # (measured: at most 0.47, feedback_alignment's classifier; forward_forward at most 0.06)
        assert max(cosines.values()) < 0.9, (signal, cosines)


def test_the_candidates_correlation_with_the_exact_error_matches_a_plain_computation():
    import numpy as np

    from hf_dendrites.error_signals import candidate_exact_correlation, exact_layer_errors

    model = hd.add_dendrites(tiny_model(num_labels=3), DendriteConfig())
    hd.model.start_candidates(model, 3, generator=torch.Generator().manual_seed(0))
    batch = {**token_batch(batch=6, length=7), "labels": torch.tensor([0, 1, 2, 0, 1, 2])}
    scores, chance = candidate_exact_correlation(model, [lambda: model(**batch).loss])
    assert set(scores) == set(chance) == set(hd.dendrite_layers(model)) and model.training  # train mode restored

    name = "bert.encoder.layer.1.intermediate.dense"
    layer = hd.dendrite_layers(model)[name]
    seen = {}
    handle = layer.register_forward_pre_hook(lambda module, args: seen.update(x=args[0].detach()))
    model.eval()
    errors, _ = exact_layer_errors(model, lambda: model(**batch).loss)
    handle.remove()
    error = errors[name].numpy()
    rows = (error != 0).any(axis=1)
    with torch.no_grad():
        values = layer.candidate_outputs(seen["x"].reshape(-1, layer.in_features), None).numpy()[rows]
    best = [
        max(abs(np.corrcoef(values[:, c, o], error[rows, o])[0, 1]) for c in range(3))
        for o in range(layer.out_features)
    ]
    assert scores[name] == pytest.approx(float(np.mean(best)), abs=1e-5)
    # untrained candidates: the statistic is at its chance level (the best of 3 on 36 rows is far from 0)
    assert 0.1 < chance[name] and abs(scores[name] - chance[name]) < 0.1

    # two batches count as their rows together: the same as one batch of both
    double = {key: torch.cat([value, value]) for key, value in batch.items()}
    together, _ = candidate_exact_correlation(model, [lambda: model(**double).loss])
    twice, _ = candidate_exact_correlation(model, [lambda: model(**batch).loss] * 2)
    assert twice[name] == pytest.approx(together[name], abs=1e-5)
