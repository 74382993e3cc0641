"""Dendrites in a PEFT (LoRA) model: what trains, growth, saving, loading, merging."""

from __future__ import annotations

import json

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from test_trainer import TRAIN, VALIDATION, dendrite_setup, training_args
from tiny_models import tiny_model, token_batch

import hf_dendrites as hd
from experiments.metrics import build_compute_metrics
from hf_dendrites.layer import DendriteLinear


def lora_model(seed: int = 0) -> torch.nn.Module:
    return get_peft_model(
        tiny_model(num_labels=2, seed=seed),
        LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], task_type="SEQ_CLS"),
    )


def grown_lora_model(mode: str = "gd", rank: int | None = None) -> torch.nn.Module:
    """LoRA on query/value, dendrites on the default layers, one grown, every new weight non-zero."""
    model = lora_model()
    hd.add_dendrites(model, hd.DendriteConfig(mode=mode, dendrite_rank=rank))
    if mode == "pb":
        hd.model.start_candidates(model, num_candidates=2)
        model.train()
        model(**token_batch(), labels=torch.tensor([0, 1, 0, 1])).loss.backward()
    hd.grow(model)
    with torch.no_grad():
        for layer in hd.dendrite_layers(model).values():
            layer.dendrite_scale.uniform_(-0.5, 0.5)
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)
    return model.eval()


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**token_batch()).logits


def test_dendrites_go_on_the_linear_inside_each_lora_layer_and_on_plain_targets():
    model = lora_model()
    hd.add_dendrites(model, hd.DendriteConfig())
    names = set(hd.dendrite_layers(model))
    prefix = "base_model.model.bert.encoder.layer.0."
    assert f"{prefix}attention.self.query.base_layer" in names  # LoRA layer: the Linear it wraps
    assert f"{prefix}attention.self.key" in names  # plain Linear
    assert not any("lora_" in name for name in names)


def test_only_lora_the_head_and_the_dendrites_change_in_a_training_step():
    model = grown_lora_model()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    model(**token_batch(), labels=torch.tensor([0, 1, 0, 1])).loss.backward()
    optimizer.step()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed and all("lora_" in name or ".dendrite_" in name or "modules_to_save" in name for name in changed), (
        sorted(changed)
    )
    assert any(".dendrite_" in name for name in changed) and any("lora_" in name for name in changed)


def test_growth_inside_a_peft_model(tmp_path):
    model = lora_model()
    trainer = hd.DendriteTrainer(
        model,
        training_args(tmp_path, learning_rate=5e-3),
        train_dataset=TRAIN,
        eval_dataset=VALIDATION,
        compute_metrics=build_compute_metrics(["accuracy"]),
        **dendrite_setup(),
    )
    trainer.train()
    assert "grow" in [record["action"] for record in trainer.tracker.history]
    assert hd.num_dendrites(trainer.model) == trainer.tracker.state.best_num_dendrites
    assert all(not p.requires_grad for n, p in trainer.model.named_parameters() if n.endswith("base_layer.weight"))
    # a checkpoint of the PEFT model resumes to the same weights
    checkpoint = sorted(tmp_path.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[2]
    assert (checkpoint / "dendrites.safetensors").is_file() and (checkpoint / "adapter_model.safetensors").is_file()
    resumed = hd.DendriteTrainer(
        lora_model(),
        training_args(tmp_path / "resumed", learning_rate=5e-3),
        train_dataset=TRAIN,
        eval_dataset=VALIDATION,
        compute_metrics=build_compute_metrics(["accuracy"]),
        **dendrite_setup(),
    )
    resumed.train(resume_from_checkpoint=str(checkpoint))
    expected, actual = trainer.model.state_dict(), resumed.model.state_dict()
    assert actual.keys() == expected.keys() and all(torch.equal(actual[k], expected[k]) for k in expected)


@pytest.mark.parametrize(("mode", "rank"), [("gd", None), ("pb", None), ("pb", 4)])
def test_save_and_load_onto_the_base_model_gives_identical_logits(tmp_path, mode, rank):
    model = grown_lora_model(mode, rank)
    model.save_pretrained(tmp_path)
    assert {"adapter_config.json", "adapter_model.safetensors", "dendrites.safetensors", "dendrite_config.json"} <= {
        p.name for p in tmp_path.iterdir()
    }
    record = json.loads((tmp_path / "dendrite_config.json").read_text())["dendrites"]
    assert record["config"]["mode"] == mode and record["config"]["dendrite_rank"] == rank
    loaded = hd.from_pretrained(tmp_path, base_model=tiny_model(num_labels=2))
    assert isinstance(loaded, PeftModel) and hd.num_dendrites(loaded) == 1
    assert torch.equal(logits(loaded), logits(model))


def test_plain_peft_loading_refuses_instead_of_dropping_the_dendrites(tmp_path):
    grown_lora_model().save_pretrained(tmp_path)
    with pytest.raises(RuntimeError, match="size mismatch"):
        PeftModel.from_pretrained(tiny_model(num_labels=2), tmp_path)


def test_a_missing_dendrite_tensor_is_named_and_nothing_is_loaded(tmp_path):
    from safetensors.torch import load_file, save_file

    grown_lora_model().save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "dendrites.safetensors")
    dropped = sorted(tensors)[0]
    del tensors[dropped]
    save_file(tensors, tmp_path / "dendrites.safetensors")
    with pytest.raises(ValueError, match=f"missing \\['{dropped}'"):
        hd.from_pretrained(tmp_path, base_model=tiny_model(num_labels=2))


def test_merge_and_unload_keeps_the_dendrites(tmp_path):
    model = grown_lora_model()
    expected = logits(model)
    merged = model.merge_and_unload()
    assert type(merged).__name__ == "BertForSequenceClassification"
    assert hd.num_dendrites(merged) == 1 and merged.dendrite_config.mode == "gd"
    assert not any("lora_" in name for name, _ in merged.named_parameters())
    assert torch.allclose(logits(merged), expected, atol=1e-5)
    merged.save_pretrained(tmp_path)  # a plain model with dendrites now: the full format
    assert torch.allclose(logits(hd.from_pretrained(tmp_path)), expected, atol=1e-5)


def test_unload_without_merging_drops_lora_and_keeps_the_dendrites():
    model = grown_lora_model()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.zero_()  # LoRA contributes nothing: unloading must not change the outputs
    expected = logits(model)
    unloaded = model.unload()
    assert hd.num_dendrites(unloaded) == 1
    assert torch.allclose(logits(unloaded), expected, atol=1e-6)


def test_targets_inside_lora_or_neither_linear_nor_lora_are_refused():
    with pytest.raises(ValueError, match="part of a LoRA adapter"):
        hd.add_dendrites(lora_model(), hd.DendriteConfig(target_modules=["lora_A.default"]))
    with pytest.raises(ValueError, match="neither an nn.Linear nor a LoRA layer"):
        hd.add_dendrites(lora_model(), hd.DendriteConfig(target_modules=["LayerNorm"]))


def tiny_bert(seed: int = 0, **changes) -> torch.nn.Module:
    """The tiny BERT classifier of `tiny_model(num_labels=2)`, with config fields changed."""
    from transformers import BertForSequenceClassification

    config = tiny_model(num_labels=2).config
    for key, value in changes.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    return BertForSequenceClassification(config)


def base_state(model: torch.nn.Module) -> dict:
    """What a failed load must leave as it was: modules, weights, trainable flags, attributes."""
    return {
        "modules": [(name, type(module).__name__) for name, module in model.named_modules()],
        "weights": {name: tensor.clone() for name, tensor in model.state_dict().items()},
        "flags": {name: p.requires_grad for name, p in model.named_parameters()},
        "attributes": sorted(vars(model)),
        "config": model.config.to_dict(),
    }


def assert_left_as_it_was(model: torch.nn.Module, before: dict) -> None:
    after = base_state(model)
    assert after["modules"] == before["modules"]
    assert not any("lora" in type(m).__name__.lower() or isinstance(m, DendriteLinear) for m in model.modules())
    assert after["weights"].keys() == before["weights"].keys()
    assert all(torch.equal(after["weights"][k], before["weights"][k]) for k in before["weights"])
    assert after["flags"] == before["flags"] and all(after["flags"].values())
    assert after["attributes"] == before["attributes"] and not hasattr(model, "peft_config")
    assert after["config"] == before["config"]


@pytest.mark.parametrize(
    ("base", "message"),
    [
        (lambda: tiny_model(num_labels=2, seed=1), r"has the architecture but not the weights .* 13 of 13 adapted"),
        (lambda: tiny_bert(num_hidden_layers=3), r"is not the base model .*extra parameters \['bert.encoder.layer.2"),
        (
            lambda: tiny_model(num_labels=3),
            r"is not the base model .*other shapes \['classifier.bias \[3\] \(saved \[2\]",
        ),
        (lambda: tiny_model("distilbert", num_labels=2), r"is not the base model .*missing parameters \['bert."),
    ],
    ids=["other-weights", "extra-layer", "other-labels", "other-family"],
)
def test_a_base_other_than_the_one_saved_is_refused_by_its_fingerprint(tmp_path, base, message):
    grown_lora_model().save_pretrained(tmp_path)
    wrong = base()
    before = base_state(wrong)
    with pytest.raises(ValueError, match=message):
        hd.from_pretrained(tmp_path, base_model=wrong)
    assert_left_as_it_was(wrong, before)
    fingerprint = json.loads((tmp_path / "dendrite_config.json").read_text())["base_model"]
    assert fingerprint["parameters"]["classifier.weight"] == [2, 32]
    assert "bert.encoder.layer.0.attention.self.query" in fingerprint["adapted_layers"]


def test_the_same_base_in_half_precision_or_on_purpose_another_checkpoint_loads(tmp_path):
    from hf_dendrites.adapters import load_adapter_with_dendrites

    model = grown_lora_model()
    model.save_pretrained(tmp_path)
    half = hd.from_pretrained(tmp_path, base_model=tiny_model(num_labels=2).to(torch.bfloat16))
    assert (
        hd.num_dendrites(half) == 1
        and half.get_base_model().bert.pooler.dense.base_layer.weight.dtype == torch.bfloat16
    )
    other = load_adapter_with_dendrites(tmp_path, tiny_model(num_labels=2, seed=1), verify_base_weights=False)
    assert hd.num_dendrites(other) == 1 and not torch.equal(logits(other), logits(model))


def test_an_adapter_saved_without_a_fingerprint_still_loads(tmp_path):
    model = grown_lora_model()
    model.save_pretrained(tmp_path)
    record_path = tmp_path / "dendrite_config.json"
    record = json.loads(record_path.read_text())
    del record["base_model"]  # as written before fingerprints
    record_path.write_text(json.dumps(record))
    assert torch.equal(logits(hd.from_pretrained(tmp_path, base_model=tiny_model(num_labels=2))), logits(model))


def test_a_failed_load_leaves_the_base_as_it_was_and_a_retry_succeeds(tmp_path):
    model = grown_lora_model()
    model.save_pretrained(tmp_path)
    dendrites = tmp_path / "dendrites.safetensors"
    data = dendrites.read_bytes()
    dendrites.write_bytes(data[: len(data) // 2])  # fails after PEFT and the dendrites have wrapped the base
    base = tiny_model(num_labels=2)
    before = base_state(base)
    with pytest.raises(ValueError, match="dendrites.safetensors"):
        hd.from_pretrained(tmp_path, base_model=base)
    assert_left_as_it_was(base, before)
    dendrites.write_bytes(data)
    loaded = hd.from_pretrained(tmp_path, base_model=base)  # the same base object, once the file is whole
    assert hd.num_dendrites(loaded) == 1 and torch.equal(logits(loaded), logits(model))


@pytest.mark.parametrize(
    ("base", "message"),
    [
        (
            lambda: tiny_model(num_labels=3),
            r"(?s)adapter_model.safetensors does not fit this base model .*size mismatch",
        ),
        (
            lambda: tiny_model("distilbert", num_labels=2),
            r"PEFT cannot apply the adapter in .* \(DistilBertForSequenceClassification\): No modules were targeted",
        ),
    ],
    ids=["other-labels", "other-family"],
)
def test_a_wrong_base_for_an_adapter_without_fingerprint_is_named_and_left_as_it_was(tmp_path, base, message):
    model = grown_lora_model()
    model.save_pretrained(tmp_path)
    record = json.loads((tmp_path / "dendrite_config.json").read_text())
    del record["base_model"]
    (tmp_path / "dendrite_config.json").write_text(json.dumps(record))
    wrong = base()
    before = base_state(wrong)
    with pytest.raises(ValueError, match=message):
        hd.from_pretrained(tmp_path, base_model=wrong)
    assert_left_as_it_was(wrong, before)
    assert torch.equal(logits(hd.from_pretrained(tmp_path, base_model=tiny_model(num_labels=2))), logits(model))


def test_a_base_that_already_has_an_adapter_or_dendrites_is_refused_untouched(tmp_path):
    grown_lora_model().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="base_model already has a PEFT adapter"):
        hd.from_pretrained(tmp_path, base_model=lora_model())
    augmented = hd.add_dendrites(tiny_model(num_labels=2), hd.DendriteConfig())
    with pytest.raises(ValueError, match="base_model already has dendrites"):
        hd.from_pretrained(tmp_path, base_model=augmented)
    assert not hasattr(augmented, "peft_config")
