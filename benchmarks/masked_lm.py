"""Masked-LM pretraining from scratch on an offline corpus: the corpus, a small WordPiece
vocabulary, packed 64-token blocks with fixed evaluation masks, and a small `BertForMaskedLM`.

The published dendrite gains we can trace come from BERTs too small for their task, pretrained
from scratch with masked-LM; these are the pieces to reproduce that regime offline:

- `corpus`: the English texts the project ships (film dialogue lines and the rated snippets,
  ~140K texts after deduplication), or a user's text files, split by the hash of each text into
  train / validation / test, so a text never moves between splits when the corpus grows;
- `train_tokenizer`: a WordPiece vocabulary (8K by default) trained on the training split with the
  `tokenizers` library and cached by its inputs, so the embedding does not swamp a small model;
- `blocks`: texts tokenized, concatenated and cut into blocks of `max_seq_length` tokens;
- `fix_masks`: validation and test blocks masked once (15%, seeded), so every evaluation of every
  run scores the same masked positions; `MaskedLMCollator` masks training blocks afresh and
  passes pre-masked blocks through;
- `masked_lm_model`: a `BertForMaskedLM` built from a config, and `non_embedding_parameters`;
- `MaskedLMTrainer` / `MaskedLMDendriteTrainer`: the trainers with a loss that decodes only the
  masked positions (`MaskedPositionsLoss`).
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import datasets
import torch
from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast, DataCollatorForLanguageModeling, Trainer

from experiments.unlabeled import builtin_unlabeled_texts, read_unlabeled_file, text_key
from hf_dendrites import DendriteTrainer

SPLITS = ("train", "validation", "test")
#: share of the corpus, by text hash, in validation and in test
HELD_OUT_SHARE = 0.05
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
DEFAULT_CACHE = Path(os.environ.get("HF_DENDRITES_CACHE", Path.home() / ".cache" / "hf_dendrites"))


def split_of(text: str, held_out_share: float = HELD_OUT_SHARE) -> str:
    """The split a text belongs to, from the hash of its normalised form (stable as the corpus grows)."""
    position = int(text_key(text)[:8], 16) / 16**8
    if position < held_out_share:
        return "validation"
    if position < 2 * held_out_share:
        return "test"
    return "train"


def corpus(
    train_file: str | None = None,
    validation_file: str | None = None,
    test_file: str | None = None,
    held_out_share: float = HELD_OUT_SHARE,
) -> datasets.DatasetDict:
    """`text` splits: the built-in pool split by text hash, or the user's files (one text a line, or
    .csv / .jsonl with a `text` column; without a validation file the training file is split by hash).

    Duplicates (same text up to case and spacing) are kept once, in the split of their hash.
    """
    if not 0 < held_out_share < 0.5:
        raise ValueError(f"held_out_share must be in (0, 0.5), got {held_out_share}")
    if train_file is None and (validation_file or test_file):
        raise ValueError("--validation_file / --test_file need a --train_file")
    if train_file is None:
        texts = [text for source in builtin_unlabeled_texts().values() for text in source]
        return _split_by_hash(texts, held_out_share)
    texts = read_unlabeled_file(train_file)
    if validation_file is None:
        return _split_by_hash(texts, held_out_share)
    splits = {"train": _unique(texts), "validation": _unique(read_unlabeled_file(validation_file))}
    if test_file is not None:
        splits["test"] = _unique(read_unlabeled_file(test_file))
    return datasets.DatasetDict({name: datasets.Dataset.from_dict({"text": rows}) for name, rows in splits.items()})


def _unique(texts: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    kept = []
    for text in texts:
        text = " ".join(text.split())
        key = text_key(text)
        if text and key not in seen:
            seen.add(key)
            kept.append(text)
    return kept


def _split_by_hash(texts: Iterable[str], held_out_share: float) -> datasets.DatasetDict:
    rows: dict[str, list[str]] = {name: [] for name in SPLITS}
    for text in _unique(texts):
        rows[split_of(text, held_out_share)].append(text)
    return datasets.DatasetDict({name: datasets.Dataset.from_dict({"text": rows[name]}) for name in SPLITS})


def _fingerprint(texts: Sequence[str], vocab_size: int) -> str:
    digest = hashlib.sha256(f"wordpiece-v1 {vocab_size} {len(texts)}".encode())
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\n")
    return digest.hexdigest()[:16]


def train_tokenizer(
    texts: Sequence[str], vocab_size: int = 8000, cache_dir: str | os.PathLike | None = None
) -> BertTokenizerFast:
    """A lower-casing WordPiece tokenizer trained on `texts`, cached under `cache_dir` by the texts
    and the size (a second call with the same inputs loads it)."""
    if vocab_size < len(SPECIAL_TOKENS) + 26:
        raise ValueError(f"vocab_size {vocab_size} is too small for a WordPiece vocabulary (at least 31)")
    if not texts:
        raise ValueError("train_tokenizer needs at least one text")
    folder = (
        Path(cache_dir or DEFAULT_CACHE / "tokenizers") / f"wordpiece-{vocab_size}-{_fingerprint(texts, vocab_size)}"
    )
    if (folder / "tokenizer.json").is_file():
        tokenizer = BertTokenizerFast.from_pretrained(folder)
    else:
        from tokenizers import BertWordPieceTokenizer

        trained = BertWordPieceTokenizer(lowercase=True)
        trained.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL_TOKENS)
        tokenizer = BertTokenizerFast(tokenizer_object=trained._tokenizer, **_special_token_names())
        partial = folder.with_name(folder.name + f".partial-{os.getpid()}")  # never a half-written cache
        tokenizer.save_pretrained(partial)
        if folder.exists():  # another process finished first: same inputs, same vocabulary
            shutil.rmtree(partial)
        else:
            partial.rename(folder)
    if len(tokenizer) > vocab_size or len(tokenizer) < len(SPECIAL_TOKENS) + 26:
        raise ValueError(f"the tokenizer under {folder} has {len(tokenizer)} tokens, not up to {vocab_size}: delete it")
    return tokenizer


def _special_token_names() -> dict[str, str]:
    return {
        "unk_token": "[UNK]",
        "sep_token": "[SEP]",
        "pad_token": "[PAD]",
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
    }


def blocks(texts: datasets.Dataset, tokenizer: BertTokenizerFast, max_seq_length: int = 64) -> datasets.Dataset:
    """Texts tokenized (each `[CLS] ... [SEP]`), concatenated and cut into blocks of exactly
    `max_seq_length` tokens (the tail shorter than a block is dropped)."""
    if max_seq_length < 8:
        raise ValueError(f"max_seq_length must be at least 8, got {max_seq_length}")

    def tokenize_and_cut(batch: dict[str, list]) -> dict[str, list]:
        ids = [token for row in tokenizer(batch["text"])["input_ids"] for token in row]
        count = len(ids) // max_seq_length
        cut = [ids[i * max_seq_length : (i + 1) * max_seq_length] for i in range(count)]
        return {"input_ids": cut}

    return texts.map(tokenize_and_cut, batched=True, batch_size=2000, remove_columns=texts.column_names)


def fix_masks(
    dataset: datasets.Dataset, tokenizer: BertTokenizerFast, probability: float, seed: int
) -> datasets.Dataset:
    """Mask `dataset` once, reproducibly (`input_ids` masked, `labels` -100 where not scored)."""
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=probability, seed=seed)
    masked = collator([{"input_ids": row} for row in dataset["input_ids"]])
    return datasets.Dataset.from_dict(
        {"input_ids": masked["input_ids"].tolist(), "labels": masked["labels"].tolist()}
    ).with_format("torch")


class MaskedLMCollator:
    """Masks training blocks afresh each time (`DataCollatorForLanguageModeling`, seeded); blocks
    that already carry `labels` (the fixed evaluation masks) are stacked as they are."""

    def __init__(self, tokenizer: BertTokenizerFast, probability: float = 0.15, seed: int | None = None) -> None:
        if not 0 < probability < 1:
            raise ValueError(f"mlm_probability must be in (0, 1), got {probability}")
        self.masking = DataCollatorForLanguageModeling(tokenizer, mlm_probability=probability, seed=seed)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if "labels" in features[0]:
            return {key: torch.stack([torch.as_tensor(f[key]) for f in features]) for key in ("input_ids", "labels")}
        return self.masking([{"input_ids": f["input_ids"]} for f in features])


class MaskedPositionsLoss:
    """A Trainer mixin whose loss decodes only the masked positions.

    `BertForMaskedLM` runs its vocabulary-sized decoder at every position although the loss reads
    15% of them; on a small BERT with an 8K vocabulary that decoder is most of a step. This loss
    runs the encoder, then the prediction head on the scored positions only (the same value as the
    model's own loss, several times cheaper). The dendrite phase's error pass uses it too, since it
    calls the trainer's `compute_loss`. One process: the encoder and head are called on the
    unwrapped model.
    """

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.args.world_size > 1:
            raise ValueError("MaskedPositionsLoss runs in one process (it calls the unwrapped model's parts)")
        labels = inputs["labels"]
        network = self.accelerator.unwrap_model(model)
        hidden = network.bert(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"))[0]
        scored = labels != -100
        logits = network.cls(hidden[scored])
        loss = torch.nn.functional.cross_entropy(logits, labels[scored])
        return (loss, {"logits": logits}) if return_outputs else loss


class MaskedLMTrainer(MaskedPositionsLoss, Trainer):
    """`Trainer` with the masked-positions loss."""


class MaskedLMDendriteTrainer(MaskedPositionsLoss, DendriteTrainer):
    """`DendriteTrainer` with the masked-positions loss."""


def masked_lm_model(
    vocab_size: int,
    hidden_size: int = 64,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 2,
    intermediate_size: int | None = None,
    max_seq_length: int = 64,
    seed: int = 0,
) -> BertForMaskedLM:
    """A freshly initialised `BertForMaskedLM` of this shape (intermediate size 4x hidden by default)."""
    if hidden_size % num_attention_heads:
        raise ValueError(f"hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}")
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size or 4 * hidden_size,
        max_position_embeddings=max_seq_length,
        type_vocab_size=1,
    )
    return BertForMaskedLM(config)


def non_embedding_parameters(model: torch.nn.Module) -> int:
    """Parameters outside the embedding tables (word, position, type) and the vocabulary-sized output
    decoder (its weight tied to the word embeddings, and its bias): what grows with the model's width
    and depth rather than with its vocabulary."""
    embeddings = {
        id(p)
        for name, p in model.named_parameters(remove_duplicate=False)
        if (".embeddings." in f".{name}" and "LayerNorm" not in name)
        or ".decoder." in f".{name}"
        or name.endswith("predictions.bias")
    }
    unique = {id(p): p for p in model.parameters()}
    return sum(p.numel() for key, p in unique.items() if key not in embeddings)


def perplexity(loss: float) -> float:
    """exp(loss), or inf where that overflows."""
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


def corpus_summary(data: datasets.DatasetDict, tokenized: dict[str, datasets.Dataset], max_seq_length: int) -> dict:
    return {
        split: {
            "texts": len(data[split]),
            "blocks": len(tokenized[split]),
            "tokens": len(tokenized[split]) * max_seq_length,
        }
        for split in tokenized
    }


__all__ = [
    "MaskedLMCollator",
    "MaskedLMDendriteTrainer",
    "MaskedLMTrainer",
    "MaskedPositionsLoss",
    "blocks",
    "corpus",
    "corpus_summary",
    "fix_masks",
    "masked_lm_model",
    "non_embedding_parameters",
    "perplexity",
    "split_of",
    "train_tokenizer",
]
