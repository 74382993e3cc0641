"""Settings split by lifetime: the model's `DendriteConfig` and the run's `DendriteTrainingArguments`,
and the deprecated spelling that still passes training fields to `DendriteConfig`."""

from __future__ import annotations

import dataclasses
import inspect
import json
import warnings

import pytest
import torch
from test_trainer import TRAIN, VALIDATION, dendrite_setup, make_trainer, training_args
from tiny_models import tiny_model, token_batch

import hf_dendrites as hd
from hf_dendrites import DendriteConfig, DendriteTrainer, DendriteTrainingArguments
from hf_dendrites.training_args import TRAINING_FIELDS

MODEL_FIELDS = {"target_modules", "exclude_modules", "mode", "activation", "cascade", "dendrite_rank"}


def test_the_model_config_holds_what_a_saved_model_computes_with_and_nothing_else():
    assert {f.name for f in dataclasses.fields(DendriteConfig)} == MODEL_FIELDS
    assert not MODEL_FIELDS & set(TRAINING_FIELDS)
    defaults = {name: p.default for name, p in inspect.signature(DendriteConfig.__init__).parameters.items()}
    assert all(defaults[f.name] == f.default for f in dataclasses.fields(DendriteConfig))


def test_the_deprecated_spelling_warns_with_the_new_one_and_reaches_the_trainer(tmp_path):
    with pytest.warns(FutureWarning, match=r"dendrite_args=DendriteTrainingArguments\(patience=2, num_candidates=3\)"):
        config = DendriteConfig(mode="gd", patience=2, num_candidates=3)
    assert config.mode == "gd" and config.to_dict().keys() == MODEL_FIELDS  # never saved with the model
    trainer = DendriteTrainer(
        tiny_model(num_labels=2),
        training_args(tmp_path, save_strategy="no"),
        train_dataset=TRAIN,
        eval_dataset=VALIDATION,
        dendrite_config=config,
    )
    assert trainer.dendrite_args == DendriteTrainingArguments(patience=2, num_candidates=3)
    assert trainer.dendrite_callback.dendrite_args is trainer.dendrite_args
    assert trainer.tracker.settings.patience == 2 and trainer.tracker.settings.mode == "gd"
    trainer.save_model(tmp_path / "saved")
    saved = json.loads((tmp_path / "saved" / "config.json").read_text())["dendrites"]["config"]
    assert set(saved) == MODEL_FIELDS


def test_the_new_spelling_stores_no_training_setting_on_the_model(tmp_path):
    arguments = DendriteTrainingArguments(patience=5, candidate_epochs=7)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        trainer = DendriteTrainer(
            tiny_model(num_labels=2),
            training_args(tmp_path, save_strategy="no"),
            train_dataset=TRAIN,
            eval_dataset=VALIDATION,
            dendrite_config=DendriteConfig(),
            dendrite_args=arguments,
        )
    assert trainer.dendrite_args is arguments and trainer.tracker.settings.patience == 5
    stored = {
        name: value for module in trainer.model.modules() for name, value in vars(module).items() if value in (5, 7)
    }
    assert not stored, f"training settings found on the model: {stored}"
    assert trainer.model.dendrite_config.deprecated_training_arguments == {}


def test_training_settings_given_twice_are_refused(tmp_path):
    with pytest.warns(FutureWarning):
        config = DendriteConfig(patience=2)
    with pytest.raises(ValueError, match=r"training settings given twice.*\['patience'\]"):
        DendriteTrainer(
            tiny_model(num_labels=2),
            training_args(tmp_path, save_strategy="no"),
            train_dataset=TRAIN,
            eval_dataset=VALIDATION,
            dendrite_config=config,
            dendrite_args=DendriteTrainingArguments(patience=3),
        )


def test_a_bad_or_unknown_deprecated_field_is_refused():
    with pytest.raises(ValueError, match=r"DendriteTrainingArguments\.patience"):
        DendriteConfig(patience=0)
    with pytest.raises(TypeError, match="patiense"):
        DendriteConfig(patiense=2)
    with pytest.raises(ValueError, match="num_candidatez"):
        DendriteConfig.from_dict({"num_candidatez": 3})
    with pytest.raises(ValueError, match="num_candidatez"):
        DendriteTrainingArguments.from_dict({"num_candidatez": 3})


def test_a_folder_saved_before_the_split_loads_without_a_warning(tmp_path):
    """Earlier versions saved every training field in the record; they say nothing about the model."""
    model = hd.add_dendrites(tiny_model(num_labels=2), DendriteConfig(mode="gd"))
    hd.grow(model)
    model.save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    values = json.loads(config_file.read_text())
    values["dendrites"]["config"].update(DendriteTrainingArguments(patience=9).to_dict())
    config_file.write_text(json.dumps(values))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        loaded = hd.from_pretrained(tmp_path)
    assert loaded.dendrite_config == DendriteConfig(mode="gd")
    assert loaded.dendrite_config.deprecated_training_arguments == {}
    batch = token_batch()
    model.eval()
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, model(**batch).logits)


def test_a_resume_inside_a_streaming_phase_keeps_the_runs_candidate_rows(tmp_path):
    """The rows candidates train on are the run's setting: a resume that rebuilds the candidates uses them too."""
    setup = dendrite_setup(candidate_learner="streaming", candidate_positions="first")
    full = make_trainer(tmp_path / "full", setup)
    full.train()
    inside = next(
        folder
        for folder in sorted((tmp_path / "full").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        if json.loads((folder / "dendrite_state.json").read_text())["tracker"]["phase"] == "dendrite"
    )
    resumed = make_trainer(tmp_path / "resumed", setup)
    resumed.train(resume_from_checkpoint=str(inside))
    assert all(layer.candidate_rows.positions == "first" for layer in hd.dendrite_layers(resumed.model).values())
    expected, actual = full.model.state_dict(), resumed.model.state_dict()
    assert actual.keys() == expected.keys() and all(torch.equal(actual[k], expected[k]) for k in expected)
    assert [r["action"] for r in resumed.tracker.history] == [r["action"] for r in full.tracker.history]
