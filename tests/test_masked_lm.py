"""Masked-LM pretraining from scratch: corpus splits, vocabulary, blocks, fixed masks, the job."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
from script_modules import load_script

import hf_dendrites
from benchmarks import masked_lm
from hf_dendrites.hub import model_card

WORDS = (
    "the a cat dog bird sees chases likes big small red blue quickly slowly runs sleeps eats fish "
    "tree house over under near happy sad old young green"
).split()


def sentences(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 10))) + f" {index}" for index in range(count)]


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mlm_texts")
    train, validation = folder / "train.txt", folder / "validation.txt"
    train.write_text("\n".join(sentences(600, 0)) + "\n")
    validation.write_text("\n".join(sentences(120, 1)) + "\n")
    return train, validation


def test_hash_split_is_disjoint_complete_and_stable(texts):
    train_file, _ = texts
    data = masked_lm.corpus(str(train_file))
    splits = {name: set(data[name]["text"]) for name in masked_lm.SPLITS}
    assert not splits["train"] & splits["validation"] and not splits["train"] & splits["test"]
    assert set().union(*splits.values()) == set(sentences(600, 0))
    assert 0 < len(splits["validation"]) < 0.15 * 600 and 0 < len(splits["test"]) < 0.15 * 600
    # a text's split depends on the text alone: a corpus with more texts keeps every old one in place
    assert all(masked_lm.split_of(text) == name for name, rows in splits.items() for text in rows)
    assert masked_lm.split_of("Great  FILM .") == masked_lm.split_of("great film .")


def test_corpus_refuses_a_validation_file_without_a_training_file(texts):
    with pytest.raises(ValueError, match="need a --train_file"):
        masked_lm.corpus(validation_file=str(texts[1]))


def test_tokenizer_has_the_trained_vocabulary_and_is_cached(texts, tmp_path):
    rows = sentences(600, 0)
    tokenizer = masked_lm.train_tokenizer(rows, vocab_size=200, cache_dir=tmp_path)
    assert 31 <= len(tokenizer) <= 200
    assert all(word in tokenizer.get_vocab() for word in ("cat", "chases", "[MASK]"))
    assert tokenizer.tokenize("The CAT chases") == ["the", "cat", "chases"]
    cached = list(tmp_path.iterdir())
    again = masked_lm.train_tokenizer(rows, vocab_size=200, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == cached and again.get_vocab() == tokenizer.get_vocab()
    with pytest.raises(ValueError, match="vocab_size 10 is too small"):
        masked_lm.train_tokenizer(rows, vocab_size=10, cache_dir=tmp_path)


def test_blocks_have_exactly_max_seq_length_tokens(tmp_path):
    data = masked_lm._split_by_hash(sentences(300, 0), masked_lm.HELD_OUT_SHARE)
    tokenizer = masked_lm.train_tokenizer(data["train"]["text"], 100, tmp_path)
    cut = masked_lm.blocks(data["train"], tokenizer, 16)
    total = sum(len(ids) for ids in tokenizer(list(data["train"]["text"]))["input_ids"])
    assert len(cut) == total // 16 and all(len(row) == 16 for row in cut["input_ids"])
    assert cut[0]["input_ids"][0] == tokenizer.cls_token_id


def test_evaluation_masks_are_fixed_and_training_masks_change(tmp_path):
    data = masked_lm._split_by_hash(sentences(400, 0), masked_lm.HELD_OUT_SHARE)
    tokenizer = masked_lm.train_tokenizer(data["train"]["text"], 100, tmp_path)
    cut = masked_lm.blocks(data["train"], tokenizer, 32)
    first = masked_lm.fix_masks(cut, tokenizer, 0.15, seed=3)[:]
    second = masked_lm.fix_masks(cut, tokenizer, 0.15, seed=3)[:]
    assert torch.equal(first["input_ids"], second["input_ids"]) and torch.equal(first["labels"], second["labels"])
    scored = first["labels"] != -100
    assert 0.10 < scored.float().mean() < 0.20
    original = torch.tensor(list(cut["input_ids"]))
    assert torch.equal(first["labels"][scored], original[scored])  # the labels are the original tokens
    collator = masked_lm.MaskedLMCollator(tokenizer, 0.15, seed=0)
    fixed = collator([{"input_ids": first["input_ids"][i], "labels": first["labels"][i]} for i in range(4)])
    assert torch.equal(fixed["labels"], first["labels"][:4])
    fresh = [collator([{"input_ids": row} for row in cut["input_ids"][:8]])["labels"] for _ in range(2)]
    assert not torch.equal(fresh[0], fresh[1])


def test_non_embedding_parameters_count_the_encoder_and_head_transform():
    hidden, layers, intermediate, vocab = 16, 2, 40, 90
    model = masked_lm.masked_lm_model(vocab, hidden, layers, 2, intermediate, max_seq_length=32)
    per_layer = (
        4 * (hidden * hidden + hidden) + 2 * hidden + 2 * hidden * intermediate + intermediate + hidden + 2 * hidden
    )
    head_transform = hidden * hidden + hidden + 2 * hidden
    embedding_norm = 2 * hidden
    assert masked_lm.non_embedding_parameters(model) == layers * per_layer + head_transform + embedding_norm
    assert model.num_parameters() > masked_lm.non_embedding_parameters(model) + vocab * hidden
    with pytest.raises(ValueError, match="not a multiple of num_attention_heads"):
        masked_lm.masked_lm_model(vocab, 15, 1, 2)


def recipe(tmp_path, texts, extra=()):
    train_file, validation_file = texts
    return [
        "--task", "masked_lm",
        "--train_file", str(train_file),
        "--validation_file", str(validation_file),
        "--hidden_size", "16",
        "--num_hidden_layers", "1",
        "--num_attention_heads", "2",
        "--intermediate_size", "32",
        "--vocab_size", "80",
        "--max_seq_length", "16",
        "--tokenizer_cache", str(tmp_path / "tokenizers"),
        "--output_dir", str(tmp_path / "run"),
        "--num_train_epochs", "3",
        "--per_device_train_batch_size", "16",
        "--learning_rate", "3e-3",
        "--eval_strategy", "epoch",
        "--save_strategy", "epoch",
        "--report_to", "none",
        "--seed", "0",
        "--dataloader_pin_memory", "false",
        *extra,
    ]  # fmt: skip


def test_train_script_pretrains_with_dendrites_and_the_model_reloads(tmp_path, texts):
    train = load_script("train")
    extra = ["--first_growth_epoch", "1", "--candidate_epochs", "3", "--candidate_cache_rows", "256", "--patience", "5"]
    results = train.main(recipe(tmp_path, texts, extra))
    assert results["task"] == "masked_lm"
    assert math.isclose(results["validation"]["perplexity"], math.exp(results["validation"]["loss"]))
    assert results["validation"]["loss"] < math.log(80)  # better than a uniform guess over the vocabulary
    assert any(entry["action"] == "grow" for entry in results["dendrite_history"])
    parameters = results["parameters"]
    assert parameters["non_embedding"] == parameters["base_non_embedding"] + parameters["dendrites"]
    assert parameters["non_embedding"] < parameters["total"]
    assert json.loads((tmp_path / "run" / "results.json").read_text())["parameters"] == parameters

    model = hf_dendrites.from_pretrained(tmp_path / "run")
    assert type(model).__name__ == "BertForMaskedLM"
    assert hf_dendrites.parameter_report(model)["total"] == parameters["total"]
    batch = torch.randint(5, 60, (2, 16))
    model.eval()
    again = hf_dendrites.from_pretrained(tmp_path / "run").eval()
    with torch.no_grad():
        assert torch.equal(model(input_ids=batch).logits, again(input_ids=batch).logits)
    card = model_card(model, "someone/tiny-mlm", results=results)
    assert card.data.pipeline_tag == "fill-mask" and "fill-mask" in card.data.tags
    assert "AutoModelForMaskedLM.from_pretrained" in card.content and "perplexity" in card.content


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--hidden_size", "0"], "--hidden_size must be positive"),
        (["--metric_for_best_model", "accuracy"], "validation loss, not 'accuracy'"),
        (["--dendrites", "none", "--restart_at_epochs", "2"], "not offered for masked-LM"),
        (["--max_train_blocks", "0"], "--max_train_blocks must be a positive"),
        (["--vocab_size", "0"], "--vocab_size must be positive"),
        (["--mlm_probability", "0"], r"--mlm_probability must be in \(0, 1\), got 0"),
        (["--mlm_probability", "1.5"], r"--mlm_probability must be in \(0, 1\), got 1.5"),
    ],
)
def test_bad_masked_lm_flags_are_named(tmp_path, texts, flags, message):
    train = load_script("train")
    with pytest.raises(ValueError, match=message):
        train.main(recipe(tmp_path, texts, flags))
    assert not (tmp_path / "run").exists()


def test_an_empty_corpus_file_is_named(tmp_path, texts):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    train = load_script("train")
    arguments = recipe(tmp_path, texts)
    arguments[arguments.index("--train_file") + 1] = str(empty)
    with pytest.raises(ValueError, match=f"{empty} holds no text"):
        train.main(arguments)
    assert not (tmp_path / "run").exists()


def test_the_recipe_parses_as_a_masked_lm_job():
    mlm = load_script("masked_lm")
    args, training, dendrites = mlm.parse_arguments(["configs/mlm_from_scratch.yaml"])
    assert (args.task, args.hidden_size, args.vocab_size, args.max_seq_length) == ("masked_lm", 64, 8000, 64)
    assert dendrites.dendrites == "pb" and training.eval_strategy == "epoch"
    assert load_script("train").requested_task(["configs/mlm_from_scratch.yaml", "--task", "trec6"]) == "trec6"
