"""Which `nn.Linear` layers of a model get dendrites.

Matching follows PEFT: a list of name suffixes (a name matches when it equals the suffix or ends
with "." + suffix) or one regular expression that must match the whole name, minus
`exclude_modules`. In a PEFT model a matched LoRA layer gets its dendrite on the Linear it wraps
(`<name>.base_layer`): the dendrite sees the layer's input and adds to its output, beside the
LoRA update; LoRA's own matrices never carry dendrites. Defaults are chosen per model family by module names, never by class names, so
any BERT-family model whose modules are named like BERT's, RoBERTa's or DistilBERT's works.
"""

from __future__ import annotations

import re

from torch import nn

# Attention projections, feed-forward, pooler / pre-classifier and classifier of each family.
_BERT_LIKE = ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]
DEFAULT_TARGET_MODULES: dict[str, list[str]] = {
    "bert": _BERT_LIKE + ["pooler.dense", "classifier"],
    "roberta": _BERT_LIKE + ["classifier.dense", "classifier.out_proj"],
    "xlm-roberta": _BERT_LIKE + ["classifier.dense", "classifier.out_proj"],
    "camembert": _BERT_LIKE + ["classifier.dense", "classifier.out_proj"],
    "electra": _BERT_LIKE + ["classifier.dense", "classifier.out_proj"],
    "distilbert": ["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2", "pre_classifier", "classifier"],
    "summing_network": ["dense", "classifier"],
}
# Families not listed above: every name any listed family uses, kept only where it is a Linear.
FALLBACK_TARGET_MODULES: list[str] = sorted({name for names in DEFAULT_TARGET_MODULES.values() for name in names})


def default_target_modules(model_type: str | None) -> list[str]:
    return list(DEFAULT_TARGET_MODULES.get(model_type or "", FALLBACK_TARGET_MODULES))


def name_matches(name: str, patterns: list[str] | str) -> bool:
    if isinstance(patterns, str):
        return re.fullmatch(patterns, name) is not None
    return any(name == suffix or name.endswith("." + suffix) for suffix in patterns)


def linear_module_names(model: nn.Module) -> list[str]:
    return [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]


def tied_weight_names(model: nn.Module, name: str, module: nn.Linear) -> list[str]:
    """Other names of the Linear's weight or bias (tied to an embedding, say), outside the module itself."""
    own = {id(module.weight), id(module.bias)}
    return [
        other
        for other, parameter in model.named_parameters(remove_duplicate=False)
        if id(parameter) in own and not other.startswith(name + ".")
    ]


def resolve_target_modules(
    model: nn.Module,
    target_modules: list[str] | str | None,
    exclude_modules: list[str] | str | None = None,
    model_type: str | None = None,
) -> list[str]:
    """Names of the Linear layers to wrap, validated before anything is changed.

    Explicit targets that hit a non-Linear module are an error (the user asked for something
    that cannot carry dendrites); default targets simply skip non-Linear modules.
    Raises `ValueError` listing the Linear layers that exist when nothing matches.
    """
    explicit = target_modules is not None
    patterns = target_modules if explicit else default_target_modules(model_type)
    if isinstance(patterns, str):
        try:
            re.compile(patterns)
        except re.error as error:
            raise ValueError(f"target_modules regex {patterns!r} does not compile: {error}") from error
    selected: list[str] = []
    for name, module in model.named_modules(remove_duplicate=False):
        if not name or not name_matches(name, patterns):
            continue
        if exclude_modules is not None and name_matches(name, exclude_modules):
            continue
        if any(part.startswith("lora_") for part in name.split(".")):
            if explicit:
                raise ValueError(
                    f"target module {name!r} is part of a LoRA adapter; only the layers LoRA wraps can carry dendrites"
                )
            continue
        wrapped = lora_base_layer(module)
        if wrapped is not None:  # a LoRA layer: the dendrite goes on the Linear it wraps
            name, module = f"{name}.base_layer", wrapped
            if name in selected:
                continue
        if isinstance(module, nn.Linear):
            tied = [other for other in tied_weight_names(model, name, module) if not _is_alias(model, other, module)]
            if tied:
                raise ValueError(
                    f"target module {name!r} shares its parameters with {tied[:3]} (tied weights); a dendrite layer "
                    "would untie them. Leave it out (exclude_modules) or untie the weights first"
                )
            selected.append(name)
        elif explicit:
            inside = [f"{name}.{child}" for child in linear_module_names(module)]
            raise ValueError(
                f"target module {name!r} is a {type(module).__name__}, neither an nn.Linear nor a LoRA layer around "
                f"one; only Linear layers can carry dendrites (Linear layers inside it: {inside or 'none'})"
            )
    if not selected:
        raise ValueError(
            f"target_modules={patterns!r} (exclude_modules={exclude_modules!r}) matched no nn.Linear layer. "
            f"Linear layers in this model: {linear_module_names(model)}"
        )
    return selected


def lora_base_layer(module: nn.Module) -> nn.Linear | None:
    """The Linear a PEFT LoRA layer wraps, or None for anything else."""
    base = getattr(module, "base_layer", None)
    return base if isinstance(base, nn.Linear) and hasattr(module, "lora_A") else None


def _is_alias(model: nn.Module, parameter_name: str, module: nn.Module) -> bool:
    """Whether the parameter name belongs to the same module registered under another name."""
    owner, _, _ = parameter_name.rpartition(".")
    return dict(model.named_modules(remove_duplicate=False)).get(owner) is module
