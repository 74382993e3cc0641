"""save_pretrained / from_pretrained of augmented models, and broken folders."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_models import FAMILIES, tiny_model, token_batch
from transformers import AutoModelForSequenceClassification, BertForSequenceClassification, BertModel

import hf_dendrites as hd
from hf_dendrites import DendriteConfig
from hf_dendrites.dendrite_modeling import FOLDER_NOTE_KEY


def logits(model, batch):
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def grown_model(family: str = "bert", mode: str = "pb", cascade: bool = False, dendrites: int = 2):
    """A model with `dendrites` trained-candidate (PB) or random (GD) dendrites and non-zero output weights."""
    model = tiny_model(family)
    hd.add_dendrites(model, DendriteConfig(mode=mode, cascade=cascade))
    batch, labels = token_batch(), torch.tensor([0, 1, 2, 1])
    for _ in range(dendrites):
        if mode == "pb":
            hd.model.start_candidates(model, num_candidates=2)
            model.train()
            model(**batch, labels=labels).loss.backward()
        hd.grow(model)
    with torch.no_grad():
        for layer in hd.dendrite_layers(model).values():
            layer.dendrite_scale.uniform_(-0.5, 0.5)
    return model


@pytest.mark.parametrize("family", FAMILIES)
def test_round_trip_gives_identical_logits(family, tmp_path):
    model = grown_model(family, cascade=family == "bert")
    batch = token_batch()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "hf_dendrites"
    assert config["dendrites"]["base_model_type"] == family
    assert set(config["dendrites"]["layers"]) == set(hd.dendrite_layers(model))
    assert (tmp_path / "model.safetensors").exists() and not list(tmp_path.glob("*.bin"))
    loaded = hd.from_pretrained(tmp_path)
    assert type(loaded) is type(model)
    assert hd.num_dendrites(loaded) == 2
    assert loaded.dendrite_config == model.dendrite_config
    assert torch.equal(logits(loaded, batch), logits(model, batch))
    # the loaded model saves again in the same format
    loaded.save_pretrained(tmp_path / "again")
    assert torch.equal(logits(hd.from_pretrained(tmp_path / "again"), batch), logits(model, batch))


def test_gd_round_trip_and_trainable_flags(tmp_path):
    model = grown_model(mode="gd", dendrites=1)
    model.save_pretrained(tmp_path)
    loaded = hd.from_pretrained(tmp_path)
    assert torch.equal(logits(loaded, token_batch()), logits(model, token_batch()))
    layer = hd.dendrite_layers(loaded)["classifier"]
    assert layer.dendrite_weight.requires_grad  # GD dendrites keep training


def test_checkpoint_inside_a_dendrite_phase_keeps_candidates_and_frozen_weights(tmp_path):
    model = grown_model(dendrites=1)
    hd.model.start_candidates(model, num_candidates=3)
    model.save_pretrained(tmp_path)
    loaded = hd.from_pretrained(tmp_path)
    for name, layer in hd.dendrite_layers(loaded).items():
        original = hd.dendrite_layers(model)[name]
        assert layer.num_candidates == 3
        assert torch.equal(layer.candidate_weight, original.candidate_weight)
    trainable = {name for name, p in loaded.named_parameters() if p.requires_grad}
    assert trainable and all(".candidate_" in name for name in trainable)
    hd.model.stop_candidates(loaded)
    assert all(
        p.requires_grad
        for name, p in loaded.named_parameters()
        if not name.endswith(("dendrite_weight", "dendrite_bias"))
    )


def test_plain_transformers_refuses_instead_of_dropping_dendrites(tmp_path, monkeypatch):
    grown_model().save_pretrained(tmp_path)
    # no terminal to answer transformers' remote-code question: it must refuse, not load a plain BERT
    monkeypatch.setattr("builtins.input", lambda *args: (_ for _ in ()).throw(EOFError()))
    with pytest.raises(ValueError, match="trust_remote_code"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="trust_remote_code"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path, trust_remote_code=False)


def test_plain_transformers_folder_is_not_a_dendrite_model(tmp_path):
    tiny_model().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="does not describe a model with dendrites"):
        hd.from_pretrained(tmp_path)


def test_weights_that_do_not_match_the_recorded_structure(tmp_path):
    grown_model().save_pretrained(tmp_path)
    config_path = tmp_path / "config.json"
    config = json.loads(config_path.read_text())
    config["dendrites"]["layers"]["classifier"]["dendrites"] = 3
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"shape mismatches.*classifier.dendrite_weight"):
        hd.from_pretrained(tmp_path)


def test_missing_tensor_is_named(tmp_path):
    grown_model().save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["classifier.dendrite_scale"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"missing tensors \['classifier.dendrite_scale'\]"):
        hd.from_pretrained(tmp_path)


def test_truncated_safetensors_file(tmp_path):
    grown_model().save_pretrained(tmp_path)
    path = tmp_path / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="model.safetensors"):
        hd.from_pretrained(tmp_path)
    assert path.stat().st_size == len(data) // 2  # the file is left as it was


def test_corrupted_config_json(tmp_path):
    grown_model().save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{ not json")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        hd.from_pretrained(tmp_path)


@pytest.mark.parametrize("path", ["missing/folder", "./missing/folder/deeper"])
def test_loading_a_folder_that_does_not_exist_says_so(tmp_path, monkeypatch, path):
    import huggingface_hub.constants

    monkeypatch.chdir(tmp_path)
    # the Hub library reads HF_HUB_OFFLINE once, at import: without its constant set, a repo-id-looking path waits
    # for network retries (47 s measured)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(FileNotFoundError, match="is not a local folder \\(it does not exist\\)") as caught:
        hd.from_pretrained(path)
    assert path in str(caught.value)


def test_a_concrete_transformers_class_refuses_instead_of_loading_random_layers(tmp_path, capfd, caplog):
    grown_model().save_pretrained(tmp_path)
    capfd.readouterr()
    # each wrapped layer's `weight` key holds its settings record: a size mismatch for a plain BERT
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        BertForSequenceClassification.from_pretrained(tmp_path)
    # and transformers' load report, which its refusal points to, says what the folder is and how to load it
    captured = capfd.readouterr()
    report = captured.out + captured.err + caplog.text  # wherever transformers' logging is sent
    assert "THIS_IS_A_DENDRITE_MODEL.load_it_with_hf_dendrites_from_pretrained_or_trust_remote_code_True" in report
    with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
        BertModel.from_pretrained(tmp_path)  # the base model alone (prefix stripped) too


def test_remote_code_loads_every_tensor_and_ignores_the_settings_records(tmp_path, caplog):
    model = grown_model()
    model.save_pretrained(tmp_path)
    with caplog.at_level("WARNING"):
        loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path, trust_remote_code=True)
    assert "LOAD REPORT" not in caplog.text  # nothing missing, unexpected or mismatched
    batch = token_batch()
    assert torch.equal(logits(loaded, batch), logits(model, batch))


@pytest.mark.parametrize(("setting", "edited"), [("activation", "tanh"), ("cascade", True)])
def test_settings_edited_in_config_json_are_refused(tmp_path, setting, edited):
    grown_model().save_pretrained(tmp_path)
    config_path = tmp_path / "config.json"
    config = json.loads(config_path.read_text())
    config["dendrites"]["config"][setting] = edited
    config_path.write_text(json.dumps(config))
    with pytest.raises(
        ValueError,
        match=rf"{setting}: config.json says {edited!r}, the weights were saved with .*\(all 14 of 14 layers",
    ):
        hd.from_pretrained(tmp_path)


def test_a_folder_in_format_1_without_settings_records_still_loads(tmp_path):
    model = grown_model()
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    records = {key for key in weights if weights[key].dtype == torch.uint8}
    assert records == {f"{name}.weight" for name in hd.dendrite_layers(model)} | {FOLDER_NOTE_KEY}
    save_file({k: v for k, v in weights.items() if k not in records}, tmp_path / "model.safetensors")
    config_path = tmp_path / "config.json"
    config = json.loads(config_path.read_text())
    config["dendrites"]["format_version"] = 1
    config_path.write_text(json.dumps(config))
    batch = token_batch()
    assert torch.equal(logits(hd.from_pretrained(tmp_path), batch), logits(model, batch))
    config["dendrites"]["format_version"] = 2  # format 2 requires the records
    config_path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="no settings record for dendrite layers"):
        hd.from_pretrained(tmp_path)


@pytest.mark.parametrize(("content", "message"), [("[1, 2]", "holds a JSON list"), ('"text"', "holds a JSON str")])
def test_config_json_that_is_not_an_object(tmp_path, content, message):
    grown_model().save_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(content)
    with pytest.raises(ValueError, match=message):
        hd.from_pretrained(tmp_path)


def _edit_config(folder, change) -> None:
    config_path = folder / "config.json"
    config = json.loads(config_path.read_text())
    change(config)
    config_path.write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("setting", "edited", "named"),
    [
        ("activation", "tanh", "activation"),
        ("mode", "gd", "mode"),
        ("cascade", True, "cascade"),
        ("dendrite_rank", 4, "rank"),
    ],
)
def test_remote_code_refuses_settings_edited_in_config_json_as_the_library_does(tmp_path, setting, edited, named):
    grown_model().save_pretrained(tmp_path)
    _edit_config(tmp_path, lambda config: config["dendrites"]["config"].update({setting: edited}))
    message = rf"{named}: config.json says {edited!r}, the weights were saved with .*\(all 14 of 14 layers"
    with pytest.raises(ValueError, match=message):
        AutoModelForSequenceClassification.from_pretrained(tmp_path, trust_remote_code=True)
    with pytest.raises(ValueError, match=message):
        hd.from_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["dendrites"]["config"][setting] == edited  # untouched


@pytest.mark.parametrize("edit_count", [False, True], ids=["as-saved", "count-edited"])
def test_remote_code_refuses_ignore_mismatched_sizes_and_says_how_to_load(tmp_path, edit_count):
    grown_model().save_pretrained(tmp_path)
    if edit_count:  # the size mismatch transformers reports, and whose fix it suggests is this flag
        _edit_config(tmp_path, lambda config: config["dendrites"]["layers"]["classifier"].update({"dendrites": 3}))
        with pytest.raises(RuntimeError, match="ignore_mismatched_sizes"):
            AutoModelForSequenceClassification.from_pretrained(tmp_path, trust_remote_code=True)
    with pytest.raises(ValueError, match=r"holds a model with dendrites.*hf_dendrites\.from_pretrained\(") as caught:
        AutoModelForSequenceClassification.from_pretrained(
            tmp_path, trust_remote_code=True, ignore_mismatched_sizes=True
        )
    assert "trust_remote_code=True" in str(caught.value) and str(tmp_path) in str(caught.value)


def test_a_model_saved_again_by_the_remote_code_keeps_its_settings_records_and_loads_both_ways(tmp_path):
    model = grown_model()
    model.save_pretrained(tmp_path / "saved")
    remote = AutoModelForSequenceClassification.from_pretrained(tmp_path / "saved", trust_remote_code=True)
    remote.save_pretrained(tmp_path / "again")
    weights = load_file(tmp_path / "again" / "model.safetensors")
    assert {key for key in weights if weights[key].dtype == torch.uint8} == {
        f"{name}.weight" for name in hd.dendrite_layers(model)
    } | {FOLDER_NOTE_KEY}
    batch = token_batch()
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "again", trust_remote_code=True)
    assert torch.equal(logits(again, batch), logits(model, batch))
    assert torch.equal(logits(hd.from_pretrained(tmp_path / "again"), batch), logits(model, batch))
    # and an edit there is refused too
    _edit_config(tmp_path / "again", lambda config: config["dendrites"]["config"].update({"activation": "relu"}))
    with pytest.raises(ValueError, match="activation: config.json says 'relu'"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path / "again", trust_remote_code=True)
