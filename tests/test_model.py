"""add_dendrites / grow / candidates on whole BERT-family models, and bad input."""

from __future__ import annotations

import json

import pytest
import torch
from tiny_models import FAMILIES, tiny_model, token_batch

import hf_dendrites as hd
from hf_dendrites import DendriteConfig, DendriteTrainingArguments
from hf_dendrites.training_args import TRAINING_FIELDS


def logits(model, batch):
    model.eval()
    with torch.no_grad():
        return model(**batch).logits


def train_candidates(model, batch, labels, steps: int = 3) -> None:
    model.train()
    optimizer = torch.optim.Adam(hd.model.candidate_parameters(model), lr=1e-2)
    for _ in range(steps):
        model(**batch, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


EXPECTED_TARGETS = {
    "bert": {
        "query",
        "key",
        "value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
        "pooler.dense",
        "classifier",
    },
    "roberta": {
        "query",
        "key",
        "value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
        "classifier.dense",
        "classifier.out_proj",
    },
    "electra": {
        "query",
        "key",
        "value",
        "attention.output.dense",
        "intermediate.dense",
        "output.dense",
        "classifier.dense",
        "classifier.out_proj",
    },
    "distilbert": {"q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2", "pre_classifier", "classifier"},
}


@pytest.mark.parametrize("family", FAMILIES)
def test_default_targets_and_bit_identical_outputs(family):
    model = tiny_model(family)
    batch = token_batch()
    before = logits(model, batch)
    returned = hd.add_dendrites(model, DendriteConfig())
    assert returned is model
    layers = hd.dendrite_layers(model)
    assert len(layers) == 14  # 6 per encoder layer x 2, plus two head layers
    assert all(any(name == t or name.endswith("." + t) for t in EXPECTED_TARGETS[family]) for name in layers)
    assert all(layer.num_dendrites == 0 for layer in layers.values())
    assert torch.equal(logits(model, batch), before)
    assert model.dendrite_config.mode == "pb"
    names = {name for name, _ in model.named_parameters()}
    assert any(name.endswith("base_layer.weight") for name in names)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", ["pb", "gd"])
def test_growth_never_changes_outputs(family, mode):
    model = tiny_model(family)
    batch, labels = token_batch(), torch.tensor([0, 1, 2, 1])
    hd.add_dendrites(model, DendriteConfig(mode=mode, cascade=True))
    before = logits(model, batch)
    for expected in (1, 2):
        if mode == "pb":
            hd.model.start_candidates(model, num_candidates=2)
            train_candidates(model, batch, labels)
        assert hd.grow(model) == expected
        assert torch.equal(logits(model, batch), before)


def test_dendrite_phase_freezes_everything_but_candidates_and_grow_gives_it_back():
    model = tiny_model()
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)  # a user's own choice
    hd.add_dendrites(model, DendriteConfig())
    batch, labels = token_batch(), torch.tensor([0, 1, 2, 1])
    hd.model.start_candidates(model)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".candidate_" in name for name in trainable)
    before = logits(model, batch)
    train_candidates(model, batch, labels)
    assert torch.equal(logits(model, batch), before), "candidate training changed predictions"
    assert hd.model.mean_candidate_score(model) > 0
    hd.grow(model)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert "bert.embeddings.word_embeddings.weight" not in trainable
    assert "classifier.base_layer.weight" in trainable
    assert "classifier.dendrite_scale" in trainable
    assert "classifier.dendrite_weight" not in trainable  # PB: input weights frozen after growth
    assert not any(".candidate_" in name for name in dict(model.named_parameters()))


def test_target_regex_and_exclusions():
    model = tiny_model()
    hd.add_dendrites(
        model, DendriteConfig(target_modules=r".*\.(query|value)", exclude_modules=["layer.1.attention.self.value"])
    )
    assert sorted(hd.dendrite_layers(model)) == [
        "bert.encoder.layer.0.attention.self.query",
        "bert.encoder.layer.0.attention.self.value",
        "bert.encoder.layer.1.attention.self.query",
    ]


def test_remove_dendrites_restores_linear_layers():
    model = tiny_model()
    batch = token_batch()
    before = logits(model, batch)
    hd.add_dendrites(model, DendriteConfig(mode="gd"))
    hd.grow(model)
    hd.remove_dendrites(model)
    assert not hd.dendrite_layers(model)
    assert not hasattr(model, "dendrite_config")
    assert not model._forward_pre_hooks  # the token-position hook of add_dendrites is gone too
    assert torch.equal(logits(model, batch), before)


def candidate_step_rows_and_gradients(model, batch, labels):
    """One candidate step: rows each layer computed candidates for, statistics and gradients."""
    rows = {}
    for name, layer in hd.dendrite_layers(model).items():
        original = layer.candidate_outputs

        def counting(x, dendrites, name=name, original=original):
            rows[name] = x.shape[0]
            return original(x, dendrites)

        layer.candidate_outputs = counting
    model.train()
    model(**batch, labels=labels).loss.backward()
    layers = hd.dendrite_layers(model)
    stats = {name: [t.clone() for t in layer.candidate_stats.tensors()] for name, layer in layers.items()}
    grads = {name: layer.candidate_weight.grad.clone() for name, layer in layers.items()}
    for layer in layers.values():
        del layer.candidate_outputs
    return rows, stats, grads


@pytest.mark.parametrize("family", FAMILIES)
def test_candidates_skip_padding_and_learn_exactly_what_they_would_from_every_position(family):
    batch = token_batch(batch=4, length=9)
    batch["attention_mask"][:2, -4:] = 0  # 8 of 36 positions are padding
    labels = torch.tensor([0, 1, 2, 1])
    results = []
    for skip_padding in (True, False):
        model = hd.add_dendrites(tiny_model(family), DendriteConfig())
        hd.model.start_candidates(model, 2, generator=torch.Generator().manual_seed(0))
        if not skip_padding:  # the same model computing candidates for every position
            model._forward_pre_hooks.clear()
            model._forward_pre_hooks_with_kwargs.clear()
        results.append(candidate_step_rows_and_gradients(model, batch, labels))
    (rows, stats, grads), (all_rows, all_stats, all_grads) = results
    per_token = [name for name, count in all_rows.items() if count == 36]
    assert per_token, "some layers compute candidates per token"
    for name in per_token:
        assert rows[name] == 28  # the real tokens only
    assert all(rows[name] == count for name, count in all_rows.items() if name not in per_token)
    for name in stats:
        for mine, theirs in zip(stats[name], all_stats[name], strict=True):
            torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-9)
        torch.testing.assert_close(grads[name], all_grads[name], rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mode", "hebbian"),
        ("activation", "swish"),
        ("num_candidates", -1),
        ("num_candidates", 0),
        ("max_dendrites", -2),
        ("patience", 0),
        ("max_tries", -1),
        ("candidate_learning_rate", 0.0),
        ("improvement_threshold", float("nan")),
        ("target_modules", []),
        ("grow_from", "middle"),
    ],
)
def test_bad_config_values_name_the_field(field, value):
    owner = DendriteTrainingArguments if field in TRAINING_FIELDS else DendriteConfig
    with pytest.raises(ValueError, match=rf"{owner.__name__}\.{field}"):
        owner(**{field: value})


def test_config_json_round_trip_and_unknown_keys(tmp_path):
    config = DendriteConfig(target_modules=["query"], mode="gd", cascade=True, dendrite_rank=2)
    path = tmp_path / "dendrites.json"
    config.to_json_file(path)
    assert DendriteConfig.from_json_file(path) == config
    assert DendriteConfig.from_dict(json.loads(config.to_json_string())) == config
    with pytest.raises(ValueError, match="num_candidatez"):
        DendriteConfig.from_dict({"num_candidatez": 3})


def assert_untouched(model, state):
    assert not hd.dendrite_layers(model)
    assert not hasattr(model, "dendrite_config")
    after = model.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[k], state[k]) for k in state)


def test_targets_matching_nothing_list_the_linear_layers_and_leave_the_model_alone():
    model = tiny_model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"matched no nn.Linear.*bert.encoder.layer.0.attention.self.query"):
        hd.add_dendrites(model, DendriteConfig(target_modules=["q_proj", "v_proj"]))
    assert_untouched(model, state)


def test_non_linear_target_is_an_error():
    model = tiny_model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(
        ValueError, match=r"'bert.embeddings.LayerNorm' is a LayerNorm, neither an nn.Linear nor a LoRA layer"
    ):
        hd.add_dendrites(model, DendriteConfig(target_modules=["query", "embeddings.LayerNorm"]))
    assert_untouched(model, state)


def test_bad_regex_is_an_error():
    model = tiny_model()
    with pytest.raises(ValueError, match="does not compile"):
        hd.add_dendrites(model, DendriteConfig(target_modules="(query"))
    assert not hd.dendrite_layers(model)


def test_add_dendrites_twice_raises():
    model = tiny_model()
    hd.add_dendrites(model, DendriteConfig())
    layers_before = list(hd.dendrite_layers(model))
    with pytest.raises(ValueError, match="already"):
        hd.add_dendrites(model, DendriteConfig(mode="gd"))
    assert list(hd.dendrite_layers(model)) == layers_before and model.dendrite_config.mode == "pb"


def test_grow_in_pb_mode_without_candidates_raises_before_touching_any_layer():
    model = tiny_model()
    hd.add_dendrites(model, DendriteConfig())
    with pytest.raises(RuntimeError, match="trained candidates"):
        hd.grow(model)
    hd.model.start_candidates(model, num_candidates=2)
    with pytest.raises(RuntimeError, match="never trained"):
        hd.grow(model)
    assert hd.num_dendrites(model) == 0
    assert all(layer.num_candidates == 2 for layer in hd.dendrite_layers(model).values())


def test_start_candidates_twice_raises():
    model = tiny_model()
    hd.add_dendrites(model, DendriteConfig())
    hd.model.start_candidates(model)
    with pytest.raises(RuntimeError, match="already"):
        hd.model.start_candidates(model)
    hd.model.stop_candidates(model)
    assert all(p.requires_grad for p in model.parameters())


def test_remove_dendrites_inside_a_dendrite_phase_gives_every_weight_back():
    model = tiny_model()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    hd.add_dendrites(model, DendriteConfig())
    hd.model.start_candidates(model, num_candidates=2)
    hd.remove_dendrites(model)
    assert {name for name, p in model.named_parameters() if p.requires_grad} == trainable


@pytest.mark.parametrize("count", [2.5, "2", True, 0])
def test_start_candidates_needs_a_whole_number(count):
    model = tiny_model()
    hd.add_dendrites(model, DendriteConfig())
    with pytest.raises(ValueError, match="num_candidates must be an int >= 1"):
        hd.model.start_candidates(model, num_candidates=count)
    assert hd.model.paused_parameters(model) is None and all(p.requires_grad for p in model.parameters())


def test_a_linear_tied_to_the_embeddings_is_refused_before_anything_changes():
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37
    )
    model = BertForMaskedLM(config)
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"'cls.predictions.decoder' shares its parameters with .*word_embeddings"):
        hd.add_dendrites(model, DendriteConfig(target_modules=["query", "decoder"]))
    assert_untouched(model, state)
    hd.add_dendrites(model, DendriteConfig(target_modules=["query", "decoder"], exclude_modules=["decoder"]))
    assert list(hd.dendrite_layers(model)) == ["bert.encoder.layer.0.attention.self.query"]


class TwoNames(torch.nn.Module):
    """One Linear registered as both `a` and `b`."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = torch.nn.Linear(4, 3)
        self.b = self.a

    def forward(self, x):
        return self.a(x) + self.b(x)


@pytest.mark.parametrize("targets", [["a", "b"], ["b"]])
def test_a_linear_under_two_names_is_wrapped_once_and_both_names_see_it(targets):
    model = TwoNames()
    hd.add_dendrites(model, DendriteConfig(mode="gd", target_modules=targets))
    assert isinstance(model.a, hd.layer.DendriteLinear) and model.b is model.a
    assert len(hd.dendrite_layers(model)) == 1
    hd.grow(model)
    with torch.no_grad():
        model.a.dendrite_scale.fill_(1.0)
    x = torch.randn(2, 4)
    assert torch.allclose(model(x), 2 * model.a(x))  # both paths carry the dendrite
    hd.remove_dendrites(model)
    assert type(model.a) is torch.nn.Linear and model.b is model.a


def test_a_non_finite_batch_is_skipped_by_the_candidates_and_counted():
    model = tiny_model()
    hd.add_dendrites(model, DendriteConfig())
    hd.model.start_candidates(model, num_candidates=2)
    batch, labels = token_batch(), torch.tensor([0, 1, 2, 1])
    train_candidates(model, batch, labels, steps=1)
    model.train()
    embeddings = model.bert.embeddings.word_embeddings(batch["input_ids"]).detach()
    embeddings[0, 0, 0] = float("nan")
    model(inputs_embeds=embeddings, attention_mask=batch["attention_mask"], labels=labels).loss.backward()
    layers = hd.dendrite_layers(model)
    assert all(layer.skipped_candidate_batches == 1 for layer in layers.values())
    assert all(torch.isfinite(p.grad).all() for p in hd.model.candidate_parameters(model))
    assert all(torch.isfinite(torch.tensor(score)) for score in hd.model.candidate_scores(model).values())
    hd.grow(model)  # the statistics stayed finite, so growth goes ahead
    assert hd.num_dendrites(model) == 1


def test_grow_refuses_non_finite_candidate_scores_and_names_the_layer():
    model = tiny_model()
    hd.add_dendrites(model, DendriteConfig())
    hd.model.start_candidates(model, num_candidates=2)
    train_candidates(model, token_batch(), torch.tensor([0, 1, 2, 1]), steps=1)
    hd.dendrite_layers(model)["classifier"].candidate_stats.sum_ve.fill_(float("nan"))
    with pytest.raises(RuntimeError, match=r"\['classifier'\] are not finite"):
        hd.grow(model)
    assert hd.num_dendrites(model) == 0 and hd.model.paused_parameters(model) is not None


def grown_with_output_weights(family: str = "bert"):
    """A model with one GD dendrite per neuron whose output weights are not zero, so it counts."""
    model = tiny_model(family)
    hd.add_dendrites(model, DendriteConfig(mode="gd"))
    hd.grow(model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer in hd.dendrite_layers(model).values():
            layer.dendrite_scale.copy_(torch.randn(layer.dendrite_scale.shape, generator=generator))
    return model


def test_disable_dendrites_computes_the_model_without_them_and_gives_every_weight_back():
    model = tiny_model()
    batch = token_batch()
    plain = logits(model, batch)
    model = grown_with_output_weights()
    with_dendrites = logits(model, batch)
    weights = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    assert not torch.allclose(with_dendrites, plain)
    with hd.disable_dendrites(model) as inside:
        assert inside is model
        assert torch.equal(logits(model, batch), plain)  # W x + b alone, on every wrapped layer
    assert torch.equal(logits(model, batch), with_dendrites)
    assert all(torch.equal(model.state_dict()[name], weights[name]) for name in weights)


def test_disable_dendrites_gives_the_weights_back_when_the_block_raises():
    model = grown_with_output_weights()
    weights = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    with pytest.raises(RuntimeError, match="inside"), hd.disable_dendrites(model):
        raise RuntimeError("inside")
    assert all(torch.equal(model.state_dict()[name], weights[name]) for name in weights)


def test_disable_dendrites_on_a_loaded_model_and_on_one_without_dendrite_layers(tmp_path):
    model = grown_with_output_weights()
    batch = token_batch()
    model.save_pretrained(tmp_path)
    loaded = hd.from_pretrained(tmp_path)
    with hd.disable_dendrites(model), hd.disable_dendrites(loaded):
        assert torch.equal(logits(loaded, batch), logits(model, batch))
    assert torch.equal(logits(loaded, batch), logits(model, batch))
    with pytest.raises(ValueError, match="no dendrite layers"), hd.disable_dendrites(tiny_model()):
        pass
