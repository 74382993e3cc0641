"""Low-rank dendrites (`DendriteConfig.dendrite_rank`): the formula, its cost, saving, training and resuming."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from test_trainer import dendrite_setup, make_trainer, steps_taken
from tiny_models import tiny_model, token_batch
from torch import nn
from transformers import AutoModelForSequenceClassification

import hf_dendrites as hd
from hf_dendrites.dendrite_modeling import FOLDER_NOTE_KEY, settings_from_tensor
from hf_dendrites.hub import model_card
from hf_dendrites.layer import DendriteLinear, candidate_activations

LABELS = torch.tensor([0, 1, 2, 1])


def logits(model, batch):
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def grown_low_rank(rank: int = 4, mode: str = "pb", cascade: bool = False, dendrites: int = 2) -> nn.Module:
    """A tiny BERT with `dendrites` low-rank dendrite sets (PB: grown by the cached phase) and non-zero output weights."""
    model = tiny_model()
    hd.add_dendrites(model, hd.DendriteConfig(mode=mode, cascade=cascade, dendrite_rank=rank))
    batch = dict(token_batch(), labels=LABELS)
    arguments = hd.DendriteTrainingArguments(candidate_epochs=3)
    for _ in range(dendrites):
        if mode == "pb":
            hd.run_dendrite_phase(model, [batch] * 3, lambda b: model(**b).loss, arguments=arguments)
        hd.grow(model)
    with torch.no_grad():
        for layer in hd.dendrite_layers(model).values():
            layer.dendrite_scale.uniform_(-0.5, 0.5)
    return model


def test_a_low_rank_dendrite_computes_base_plus_scale_times_act_of_u_v_x():
    torch.manual_seed(0)
    layer = DendriteLinear(nn.Linear(5, 3), rank=2)
    layer.allocate(2)
    with torch.no_grad():
        for parameter in (layer.dendrite_basis, layer.dendrite_weight, layer.dendrite_bias, layer.dendrite_scale):
            parameter.normal_()
    x = torch.randn(7, 5)
    expected = layer.base_layer(x)
    for k in range(2):
        v, u, c, a = (
            layer.dendrite_basis[k],
            layer.dendrite_weight[k],
            layer.dendrite_bias[k],
            layer.dendrite_scale[k],
        )
        expected = expected + a * torch.sigmoid(x @ v.T @ u.T + c)
    assert layer.dendrite_basis.shape == (2, 2, 5) and layer.dendrite_weight.shape == (2, 3, 2)
    assert torch.allclose(layer(x), expected, atol=1e-6)


def test_rank_equal_to_the_inputs_with_the_identity_basis_is_the_full_dendrite():
    torch.manual_seed(0)
    x, weight, bias = torch.randn(6, 4), torch.randn(3, 2, 4), torch.randn(3, 2)
    full = candidate_activations(x, weight, bias, None, None, activation="tanh")
    low = candidate_activations(x, weight, bias, None, None, activation="tanh", basis=torch.eye(4))
    assert torch.allclose(low, full, atol=1e-6)

    base = nn.Linear(4, 2)
    full_layer, low_layer = DendriteLinear(base), DendriteLinear(base, rank=4)
    full_layer.allocate(1)
    low_layer.allocate(1)
    with torch.no_grad():
        full_layer.dendrite_weight.copy_(weight[:1])
        low_layer.dendrite_weight.copy_(weight[:1])
        low_layer.dendrite_basis.copy_(torch.eye(4).unsqueeze(0))
        for layer in (full_layer, low_layer):
            layer.dendrite_bias.copy_(bias[:1])
            layer.dendrite_scale.fill_(0.7)
    assert torch.allclose(low_layer(x), full_layer(x), atol=1e-6)


def test_a_low_rank_set_costs_r_times_in_plus_out_plus_its_biases_and_output_weights():
    model = grown_low_rank(rank=4, dendrites=2)
    layers = hd.dendrite_layers(model)
    expected = sum(
        2 * (4 * (layer.in_features + layer.out_features) + 2 * layer.out_features) for layer in layers.values()
    )
    report = hd.parameter_report(model)
    assert report["dendrites"] == expected and report["candidates"] == 0
    full = tiny_model()
    hd.add_dendrites(full, hd.DendriteConfig(mode="gd"))
    hd.grow(full)
    hd.grow(full)
    assert hd.parameter_report(full)["dendrites"] > 3 * expected  # what the rank saves on a 32-wide BERT


@pytest.mark.parametrize(("mode", "cascade"), [("pb", False), ("gd", False), ("pb", True)])
def test_a_low_rank_model_saves_and_loads_with_and_without_the_library(tmp_path, mode, cascade):
    model = grown_low_rank(mode=mode, cascade=cascade)
    batch = token_batch()
    before = logits(model, batch)
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["dendrites"]["config"]["dendrite_rank"] == 4
    assert torch.equal(logits(hd.from_pretrained(tmp_path), batch), before)
    remote = AutoModelForSequenceClassification.from_pretrained(tmp_path, trust_remote_code=True)
    assert torch.equal(logits(remote, batch), before)
    assert "rank=4" in repr(hd.dendrite_layers(hd.from_pretrained(tmp_path))["classifier"])


def test_an_edited_rank_in_config_json_is_refused_naming_it(tmp_path):
    grown_low_rank().save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    config["dendrites"]["config"]["dendrite_rank"] = 3
    path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="rank"):
        hd.from_pretrained(tmp_path)


def test_a_folder_saved_before_ranks_existed_still_loads(tmp_path):
    """Settings records and configs written without a rank mean full-rank dendrites."""
    model = tiny_model()
    hd.add_dendrites(model, hd.DendriteConfig(mode="gd"))
    hd.grow(model)
    with torch.no_grad():
        for layer in hd.dendrite_layers(model).values():
            layer.dendrite_scale.uniform_(-0.5, 0.5)
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights[FOLDER_NOTE_KEY]  # written only since
    for key, tensor in list(weights.items()):
        if tensor.dtype == torch.uint8:
            old = {k: v for k, v in settings_from_tensor(tensor).items() if k != "rank"}
            weights[key] = torch.tensor(list(json.dumps(old, sort_keys=True).encode()), dtype=torch.uint8)
    save_file(weights, tmp_path / "model.safetensors")
    path = tmp_path / "config.json"
    config = json.loads(path.read_text())
    del config["dendrites"]["config"]["dendrite_rank"]
    path.write_text(json.dumps(config))
    batch = token_batch()
    assert torch.equal(logits(hd.from_pretrained(tmp_path), batch), logits(model, batch))


@pytest.mark.parametrize("rank", [0, -2, 2.5, True])
def test_a_rank_below_one_or_not_an_integer_is_refused_naming_it(rank):
    with pytest.raises(ValueError, match="dendrite_rank"):
        hd.DendriteConfig(dendrite_rank=rank)


def test_a_rank_wider_than_a_target_layer_is_refused_and_the_model_is_unchanged():
    model = tiny_model()  # hidden 32, intermediate 37
    with pytest.raises(ValueError, match=r"dendrite_rank=33 .* 32 inputs of target layer"):
        hd.add_dendrites(model, hd.DendriteConfig(dendrite_rank=33))
    assert not any(isinstance(module, DendriteLinear) for module in model.modules())
    assert not hasattr(model, "dendrite_config")


def test_the_streaming_learner_and_gd_mode_train_the_basis():
    model = tiny_model()
    hd.add_dendrites(model, hd.DendriteConfig(dendrite_rank=4))
    hd.model.start_candidates(model, num_candidates=2)
    layer = hd.dendrite_layers(model)["classifier"]
    assert layer.candidate_basis.shape == (4, 32) and layer.candidate_weight.shape == (2, 3, 4)
    before = layer.candidate_basis.detach().clone()
    optimizer = torch.optim.Adam(hd.model.candidate_parameters(model), lr=1e-2)
    model.train()
    model(**token_batch(), labels=LABELS).loss.backward()
    optimizer.step()
    assert not torch.equal(layer.candidate_basis, before)
    assert layer.candidate_stats.count > 0
    hd.grow(model)
    assert torch.equal(layer.dendrite_basis[0], layer.dendrite_basis[0])  # installed
    assert layer.dendrite_basis.shape == (1, 4, 32) and not layer.dendrite_basis.requires_grad

    gd = grown_low_rank(mode="gd", dendrites=1)
    gd.train()
    gd(**token_batch(), labels=LABELS).loss.backward()
    classifier = hd.dendrite_layers(gd)["classifier"]
    assert classifier.dendrite_basis.requires_grad and classifier.dendrite_basis.grad.abs().sum() > 0


@pytest.mark.parametrize("learner", ["cached", "streaming"])
def test_resume_inside_a_low_rank_run_makes_the_same_decisions(tmp_path, learner):
    config = dendrite_setup(dendrite_rank=4, candidate_learner=learner)
    trainer = make_trainer(tmp_path / "full", config)
    trainer.train()
    assert "grow" in [r["action"] for r in trainer.tracker.history]
    checkpoints = sorted((tmp_path / "full").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    states = {path: json.loads((path / "dendrite_state.json").read_text()) for path in checkpoints}
    if learner == "streaming":  # a checkpoint taken inside a dendrite phase
        chosen = next(path for path, state in states.items() if state["tracker"]["phase"] == "dendrite")
    else:  # the last checkpoint before the first phase (the cached phase happens at one evaluation)
        chosen = [path for path, state in states.items() if state["phases_started"] == 0][-1]
    resumed = make_trainer(tmp_path / "resumed", config)
    resumed.train(resume_from_checkpoint=str(chosen))
    expected, actual = trainer.model.state_dict(), resumed.model.state_dict()
    assert actual.keys() == expected.keys()
    assert all(torch.equal(actual[key], expected[key]) for key in expected)
    assert [r["action"] for r in resumed.tracker.history] == [r["action"] for r in trainer.tracker.history]
    assert steps_taken(resumed) == steps_taken(trainer)


def test_the_model_card_carries_the_rank():
    model = grown_low_rank(rank=4, dendrites=1)
    text = str(model_card(model, "user/tiny-low-rank"))
    assert "low-rank dendrite sets (rank 4" in text and '"dendrite_rank": 4' in text
    full = tiny_model()
    hd.add_dendrites(full, hd.DendriteConfig(mode="gd"))
    assert "low-rank" not in str(model_card(full, "user/tiny"))
