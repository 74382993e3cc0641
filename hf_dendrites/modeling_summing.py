"""The summing network: token embeddings pooled over the sequence, then a small classifier.

No attention, no transformer layers: every parameter but the embedding table sits in a few
Linear layers, which is where dendrites add their computing power. It is the compressed
architecture of the compression benchmark, written the Hugging Face way (a config class and a
`PreTrainedModel`) so it trains with the Trainer, saves, loads and pushes like any other model.

Self-contained: this file imports only torch and transformers, because it is copied next to saved
weights as remote code (`trust_remote_code=True` loads it where hf_dendrites is not installed).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import SequenceClassifierOutput

SELF_CONTAINED = True
POOLINGS = ("mean", "sum")


class SummingNetworkConfig(PretrainedConfig):
    """Sizes of a summing network.

    Args:
        vocab_size: rows of the embedding table (the tokenizer's vocabulary).
        embedding_size: width of every token embedding.
        hidden_sizes: widths of the hidden Linear layers between the pooled embedding and the
            classifier (`[]`: the classifier reads the pooled embedding directly).
        pooling: `"mean"` (masked average over the tokens) or `"sum"` (masked sum; a LayerNorm
            follows either way, so both give vectors of comparable size).
        hidden_act: activation after each hidden layer.
        dropout: dropout on the pooled embedding and after each hidden layer.
    """

    model_type = "summing_network"

    def __init__(
        self,
        vocab_size: int = 30522,
        embedding_size: int = 64,
        hidden_sizes: list[int] | tuple[int, ...] = (64,),
        pooling: str = "mean",
        hidden_act: str = "gelu",
        dropout: float = 0.1,
        layer_norm_eps: float = 1e-12,
        initializer_range: float = 0.02,
        pad_token_id: int = 0,
        **kwargs,
    ) -> None:
        if vocab_size < 1 or embedding_size < 1:
            raise ValueError(f"vocab_size and embedding_size must be >= 1, got {vocab_size} and {embedding_size}")
        if any(int(size) < 1 for size in hidden_sizes):
            raise ValueError(f"hidden_sizes must all be >= 1, got {list(hidden_sizes)}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        if hidden_act not in ACT2FN:
            raise ValueError(f"hidden_act {hidden_act!r} is not a transformers activation")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.vocab_size = vocab_size
        self.embedding_size = embedding_size
        self.hidden_sizes = [int(size) for size in hidden_sizes]
        self.pooling = pooling
        self.hidden_act = hidden_act
        self.dropout = dropout
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        super().__init__(pad_token_id=pad_token_id, **kwargs)


class SummingNetworkLayer(nn.Module):
    """One hidden layer: Linear (`dense`, a dendrite target), activation, dropout."""

    def __init__(self, in_features: int, out_features: int, config: SummingNetworkConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(in_features, out_features)
        self.activation = ACT2FN[config.hidden_act]
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.activation(self.dense(hidden)))


class SummingNetworkPreTrainedModel(PreTrainedModel):
    config_class = SummingNetworkConfig
    base_model_prefix = "summing_network"

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            module.weight.normal_(0.0, std)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.normal_(0.0, std)
            if module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.fill_(1.0)
            module.bias.zero_()


class SummingNetworkForSequenceClassification(SummingNetworkPreTrainedModel):
    """embeddings -> masked mean/sum over tokens -> LayerNorm -> hidden layers -> classifier."""

    def __init__(self, config: SummingNetworkConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_size, padding_idx=config.pad_token_id)
        self.norm = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.dropout)
        widths = [config.embedding_size, *config.hidden_sizes]
        self.hidden = nn.ModuleList(SummingNetworkLayer(a, b, config) for a, b in zip(widths, widths[1:]))
        self.classifier = nn.Linear(widths[-1], config.num_labels)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings = value

    def pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        embedded = self.embeddings(input_ids)
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        mask = mask.unsqueeze(-1).to(embedded.dtype)
        pooled = (embedded * mask).sum(dim=1)
        if self.config.pooling == "mean":
            pooled = pooled / mask.sum(dim=1).clamp(min=1.0)
        return self.norm(pooled)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput | tuple:
        if input_ids is None:
            raise ValueError("the summing network needs input_ids")
        hidden = self.dropout(self.pool(input_ids, attention_mask))
        for layer in self.hidden:
            hidden = layer(hidden)
        logits = self.classifier(hidden)
        loss = None
        if labels is not None:
            if self.num_labels == 1:
                loss = nn.functional.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
            else:
                loss = nn.functional.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        return_dict = return_dict if return_dict is not None else self.config.use_return_dict
        if not return_dict:
            return (logits,) if loss is None else (loss, logits)
        return SequenceClassifierOutput(loss=loss, logits=logits)


SummingNetworkConfig.register_for_auto_class()
SummingNetworkForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
