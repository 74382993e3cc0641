"""The model types this package defines, registered with transformers' Auto classes.

The summing network (`modeling_summing.py`) is not a transformers architecture. Registering it
makes `AutoConfig.for_model("summing_network")` and `AutoModelForSequenceClassification` know it,
so the loaders (`serialization.py`) rebuild it like any transformers model, without naming it.
`modeling_summing.py` itself stays free of registration: it is also shipped as remote code, where
it must not touch the loading process's registries.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModelForSequenceClassification

from .modeling_summing import SummingNetworkConfig, SummingNetworkForSequenceClassification


def register_architectures() -> None:
    """Register every model type of this package (again: a no-op)."""
    AutoConfig.register(SummingNetworkConfig.model_type, SummingNetworkConfig, exist_ok=True)
    AutoModelForSequenceClassification.register(
        SummingNetworkConfig, SummingNetworkForSequenceClassification, exist_ok=True
    )


register_architectures()
