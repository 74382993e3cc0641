"""Narrowed BERT-family models, the summing network, and parameter accounting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_serialization import grown_model, logits
from tiny_models import FAMILIES, VOCAB, tiny_model, token_batch

import hf_dendrites as hd
from hf_dendrites.compression import narrow_config, narrow_model, summing_network
from hf_dendrites.model import parameter_report
from hf_dendrites.modeling_summing import SummingNetworkConfig, SummingNetworkForSequenceClassification


def sizes(config) -> tuple[int, int, int]:
    return config.hidden_size, config.num_attention_heads, config.num_hidden_layers


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("width", [0.5, 0.7, 1.0])
def test_narrowed_configs_are_valid_for_every_family(family, width):
    original = tiny_model(family).config
    config = narrow_config(original, width=width, depth=1)
    hidden, heads, layers = sizes(config)
    assert hidden % heads == 0 and hidden // heads == original.hidden_size // original.num_attention_heads
    assert layers == 1 and config.vocab_size == original.vocab_size
    assert hidden == (32 if width > 0.75 else 16)  # rounded to whole heads of 16
    assert sizes(original) == (32, 2, 2), "the input config is not changed"
    model = type(tiny_model(family))(config)
    assert model(**token_batch()).logits.shape == (4, 3)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("init", ["first", "importance", "scratch"])
def test_narrow_model_initialises_from_the_pretrained_one(family, init):
    model = tiny_model(family)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    narrowed = narrow_model(model, width=0.5, depth=1, init=init)
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items()), "source changed"
    assert sizes(narrowed.config)[0] == 16 and narrowed(**token_batch()).logits.shape == (4, 3)
    word_embeddings = narrowed.get_input_embeddings().weight
    original = model.get_input_embeddings().weight
    copied = any(torch.equal(word_embeddings[:, 0], original[:, j]) for j in range(original.shape[1]))
    assert copied == (init != "scratch")
    if init == "first":
        assert torch.equal(word_embeddings, original[:, : word_embeddings.shape[1]])


def test_importance_keeps_the_units_with_the_most_weight_and_whole_heads():
    model = tiny_model("bert")
    with torch.no_grad():  # make hidden units 20..31 and head 1 of layer 0 stand out
        for name, parameter in model.named_parameters():
            if parameter.dim() == 2 and parameter.shape[1] == 32 and "query" not in name and "key" not in name:
                parameter[:, 20:] *= 10
        model.bert.encoder.layer[0].attention.self.value.weight[16:] *= 10
    narrowed = narrow_model(model, width=0.5, depth=1, init="importance")
    original = model.bert.embeddings.word_embeddings.weight
    table = narrowed.bert.embeddings.word_embeddings.weight
    kept = {j for c in range(16) for j in range(32) if torch.equal(table[:, c], original[:, j])}
    assert len(kept) == 16 and set(range(20, 32)) <= kept  # every heavy unit is kept
    value = narrowed.bert.encoder.layer[0].attention.self.value.weight  # [16 (head 1), 16 kept hidden units]
    assert value.abs().mean() > 5 * model.bert.encoder.layer[0].attention.self.value.weight[:16].abs().mean()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"width": 0}, "width must be a number in \\(0, 1\\]"),
        ({"width": -0.5}, "width must be a number in \\(0, 1\\]"),
        ({"width": 1.5}, "width must be a number in \\(0, 1\\]"),
        ({"width": 0.2}, "too small for one attention head"),
        ({"width": 0.5, "depth": 0}, "depth must be an integer >= 1"),
    ],
)
def test_bad_widths_and_depths_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        narrow_config(tiny_model("bert").config, **kwargs)


def test_narrow_model_refuses_depth_beyond_the_source_and_models_with_dendrites():
    model = tiny_model("bert")
    with pytest.raises(ValueError, match="exceeds the 2 layers"):
        narrow_model(model, width=0.5, depth=3)
    assert narrow_model(model, width=0.5, depth=3, init="scratch").config.num_hidden_layers == 3
    with pytest.raises(ValueError, match="init must be one of"):
        narrow_model(model, width=0.5, init="middle")
    hd.add_dendrites(model, hd.DendriteConfig())
    with pytest.raises(ValueError, match="before add_dendrites"):
        narrow_model(model, width=0.5)


def test_summing_network_config_checks_its_values():
    for kwargs, message in [
        ({"embedding_size": 0}, "embedding_size must be >= 1"),
        ({"hidden_sizes": [8, 0]}, "hidden_sizes must all be >= 1"),
        ({"pooling": "max"}, "pooling must be one of"),
        ({"hidden_act": "swishy"}, "not a transformers activation"),
    ]:
        with pytest.raises(ValueError, match=message):
            SummingNetworkConfig(**kwargs)


@pytest.mark.parametrize("pooling", ["mean", "sum"])
def test_summing_network_ignores_padding_and_trains(pooling):
    torch.manual_seed(0)
    config = SummingNetworkConfig(vocab_size=VOCAB, embedding_size=16, hidden_sizes=[8], pooling=pooling, dropout=0.0)
    config.num_labels = 2
    model = SummingNetworkForSequenceClassification(config)
    batch = token_batch()
    model.eval()
    padded = model(**batch).logits
    trimmed = model(input_ids=batch["input_ids"][:2, :-2]).logits
    assert torch.allclose(padded[:2], trimmed, atol=1e-6), "padded positions must not count"
    # a token-presence task the network can learn: label = whether token 5 occurs
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(6, VOCAB, (64, 8), generator=generator)
    labels = torch.arange(64) % 2
    input_ids[labels == 1, 3] = 5
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    first = None
    for _ in range(60):
        loss = model(input_ids=input_ids, labels=labels).loss
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.2 * first
    accuracy = (model(input_ids=input_ids).logits.argmax(-1) == labels).float().mean()
    assert accuracy == 1.0


@pytest.mark.parametrize("family", ["summing_network", "narrowed_bert"])
@pytest.mark.parametrize("mode", ["pb", "gd"])
def test_compressed_models_with_dendrites_save_and_load_to_identical_logits(family, mode, tmp_path):
    model = grown_model(family, mode=mode)
    layers = set(hd.dendrite_layers(model))
    if family == "summing_network":
        assert layers == {"hidden.0.dense", "classifier"}  # the default targets of the summing network
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["dendrites"]["base_model_type"] == ("summing_network" if family == "summing_network" else "bert")
    loaded = hd.from_pretrained(tmp_path)
    assert type(loaded) is type(model) and hd.num_dendrites(loaded) == 2
    assert torch.equal(logits(loaded, token_batch()), logits(model, token_batch()))


def test_a_summing_network_without_dendrites_saves_and_loads_like_any_model(tmp_path):
    model = summing_network(SummingNetworkConfig(vocab_size=VOCAB, embedding_size=8, hidden_sizes=[], dropout=0.0))
    model.save_pretrained(tmp_path)
    assert (tmp_path / "modeling_summing.py").is_file()  # remote code for AutoModel* with trust_remote_code
    loaded = SummingNetworkForSequenceClassification.from_pretrained(tmp_path)
    assert torch.equal(logits(loaded, token_batch()), logits(model, token_batch()))


def test_the_summing_network_registers_itself_with_the_auto_classes(tmp_path):
    """Registered, it loads like a transformers model: the loaders never name it (test_structure checks that)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    model = summing_network(SummingNetworkConfig(vocab_size=VOCAB, embedding_size=8, hidden_sizes=[4], dropout=0.0))
    model.save_pretrained(tmp_path)
    assert type(AutoConfig.for_model("summing_network")) is SummingNetworkConfig
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path)  # no trust_remote_code needed
    assert type(loaded) is SummingNetworkForSequenceClassification
    assert torch.equal(logits(loaded, token_batch()), logits(model, token_batch()))
    serialization = (Path(hd.__file__).parent / "serialization.py").read_text()
    assert "summing" not in serialization.lower() and "Summing" not in serialization


def test_summing_network_embeddings_project_the_pretrained_ones():
    pretrained = tiny_model("bert")
    config = SummingNetworkConfig(vocab_size=VOCAB, embedding_size=4, hidden_sizes=[8])
    model = summing_network(config, pretrained=pretrained)
    table = pretrained.get_input_embeddings().weight.detach()
    centred = table - table.mean(0)
    projected = model.embeddings.weight.detach()
    padding = config.pad_token_id
    rows = [i for i in range(VOCAB) if i != padding]
    # the projection keeps the directions of largest variance: it captures more variance than the
    # same number of random orthonormal directions
    random_basis, _ = torch.linalg.qr(torch.randn(table.shape[1], 4, generator=torch.Generator().manual_seed(0)))
    assert projected[rows].pow(2).sum() > (centred[rows] @ random_basis).pow(2).sum()
    assert torch.allclose(projected[rows], (centred @ torch.linalg.pinv(centred) @ projected)[rows], atol=1e-4)
    with pytest.raises(ValueError, match="vocab_size"):
        summing_network(SummingNetworkConfig(vocab_size=VOCAB + 1, embedding_size=4), pretrained=pretrained)
    with pytest.raises(ValueError, match="can only narrow"):
        summing_network(SummingNetworkConfig(vocab_size=VOCAB, embedding_size=64), pretrained=pretrained)


@pytest.mark.parametrize("family", ["bert", "summing_network", "narrowed_bert"])
def test_parameter_report_counts_match_the_parameters(family):
    model = tiny_model(family)
    plain = parameter_report(model)
    assert plain["total"] == sum(p.numel() for p in model.parameters()) and plain["dendrites"] == 0
    model = grown_model(family, mode="pb", dendrites=1)
    report = parameter_report(model)
    assert report["total"] == sum(p.numel() for p in model.parameters())
    assert report["base"] == plain["total"]
    expected = sum(
        layer.out_features * (layer.in_features + 2) for layer in hd.dendrite_layers(model).values()
    )  # weight [out, in], bias [out], output weight [out] per dendrite
    assert report["dendrites"] == expected
    hd.model.start_candidates(model, num_candidates=2)
    during = parameter_report(model)
    assert during["total"] == report["total"] and during["candidates"] > 0


def test_a_summing_network_grows_in_the_trainer_and_resumes_from_a_checkpoint(tmp_path):
    from test_trainer import TRAIN, VALIDATION, dendrite_setup, training_args
    from tiny_models import tiny_summing_network

    from experiments.metrics import build_compute_metrics

    def run(output_dir, resume=None):
        trainer = hd.DendriteTrainer(
            tiny_summing_network(num_labels=2),
            training_args(output_dir, learning_rate=1e-2),
            train_dataset=TRAIN,
            eval_dataset=VALIDATION,
            compute_metrics=build_compute_metrics(["accuracy"]),
            # streaming: its dendrite phases span checkpoints, the harder resume
            **dendrite_setup(candidate_learner="streaming"),
        )
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    full = run(tmp_path / "full")
    actions = [record["action"] for record in full.tracker.history]
    assert "grow" in actions, actions
    inside = [
        folder
        for folder in sorted((tmp_path / "full").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        if json.loads((folder / "dendrite_state.json").read_text())["tracker"]["phase"] == "dendrite"
    ]
    assert inside, "no checkpoint was taken inside a dendrite phase"
    resumed = run(tmp_path / "resumed", resume=str(inside[0]))
    expected, actual = full.model.state_dict(), resumed.model.state_dict()
    assert actual.keys() == expected.keys() and all(torch.equal(actual[k], expected[k]) for k in expected)
    assert [record["action"] for record in resumed.tracker.history] == actions
