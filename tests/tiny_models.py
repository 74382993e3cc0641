"""Small random BERT-family classifiers, so tests run in seconds on a CPU."""

from __future__ import annotations

import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    ElectraConfig,
    ElectraForSequenceClassification,
    RobertaConfig,
    RobertaForSequenceClassification,
)

VOCAB = 100
FAMILIES = ("bert", "roberta", "distilbert", "electra")


def tiny_model(family: str = "bert", num_labels: int = 3, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised classifier of the given family with hidden size 32 and no dropout."""
    torch.manual_seed(seed)
    common = {"vocab_size": VOCAB, "num_labels": num_labels}
    if family == "bert":
        config = BertConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=37,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            **common,
        )
        model = BertForSequenceClassification(config)
    elif family == "roberta":
        config = RobertaConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=37,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            max_position_embeddings=64,
            pad_token_id=1,
            **common,
        )
        model = RobertaForSequenceClassification(config)
    elif family == "distilbert":
        config = DistilBertConfig(
            dim=32,
            n_layers=2,
            n_heads=2,
            hidden_dim=37,
            dropout=0.0,
            attention_dropout=0.0,
            seq_classif_dropout=0.0,
            **common,
        )
        model = DistilBertForSequenceClassification(config)
    elif family == "electra":
        config = ElectraConfig(
            embedding_size=16,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=37,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            **common,
        )
        model = ElectraForSequenceClassification(config)
    elif family == "summing_network":
        return tiny_summing_network(num_labels=num_labels, seed=seed)
    elif family == "narrowed_bert":
        return tiny_narrowed_bert(num_labels=num_labels, seed=seed)
    else:
        raise ValueError(f"unknown family {family!r}")
    return model


def token_batch(batch: int = 4, length: int = 9, seed: int = 1) -> dict[str, torch.Tensor]:
    """Random token ids (avoiding special ids 0-2) with the last two positions of half the rows padded."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, VOCAB, (batch, length), generator=generator)
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    attention_mask[: batch // 2, -2:] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def tiny_summing_network(num_labels: int = 3, seed: int = 0, hidden_sizes: tuple[int, ...] = (16,)) -> torch.nn.Module:
    """A random summing network over the tiny vocabulary (embedding 24, no dropout)."""
    from hf_dendrites.modeling_summing import SummingNetworkConfig, SummingNetworkForSequenceClassification

    torch.manual_seed(seed)
    config = SummingNetworkConfig(
        vocab_size=VOCAB, embedding_size=24, hidden_sizes=hidden_sizes, dropout=0.0, num_labels=num_labels
    )
    return SummingNetworkForSequenceClassification(config)


def tiny_narrowed_bert(num_labels: int = 3, seed: int = 0) -> torch.nn.Module:
    """The tiny BERT at half width (one head of 16) and one layer, initialised from it."""
    from hf_dendrites.compression import narrow_model

    return narrow_model(tiny_model("bert", num_labels=num_labels, seed=seed), width=0.5, depth=1)
