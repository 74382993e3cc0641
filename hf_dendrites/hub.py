"""Publishing: push a model with dendrites to the Hub with a model card; load it back.

A pushed repo is the saved folder (`config.json` with the dendrite structure, safetensors weights,
the self-contained remote code of `remote_code.py`), the tokenizer, `results.json` and the history
plot when there are any, and a `README.md` rendered from `model_cards/model_card.md.j2` through
`huggingface_hub.ModelCard`: YAML metadata (library, base model, datasets, metrics, `model-index`
with the evaluation results, tags) and a description of the model, its training and its results.

Loading is `hf_dendrites.from_pretrained(repo_id, revision=..., token=...)`, or transformers with
`trust_remote_code=True` where hf_dendrites is not installed.

The card reads these entries of `results` (what `scripts/train.py` writes to `results.json`; all
optional): `validation` / `test` ({metric: value}), `dataset` ({"name": readable name, "type": short
identifier, "hub_id": Hub dataset id or null}), `base_model` (the base model's Hub id, or null for a local
folder; without it `config.model.model_name_or_path` when that looks like a Hub id), `compression`
({"architecture": "narrowed" | "summing_network", "reference": {"name", "parameters"}}),
`distillation`, `dendrite_history` and `completed_reason` (the tracker's), and `config` (the recipe).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from huggingface_hub import CommitInfo, EvalResult, HfApi, ModelCard, ModelCardData
from torch import nn

from .adapters import adapter_summary, save_adapter_with_dendrites
from .model import is_peft_model, parameter_report
from .plotting import HISTORY_PLOT
from .remote_code import auto_class_for
from .serialization import save_pretrained
from .tracker import Action
from .training_args import TRAINING_FIELDS

__all__ = ["model_card", "push_to_hub"]

CARD_TEMPLATE = "model_card.md.j2"
RESULTS_FILE = "results.json"
TAGS = ["dendrites", "perforated-backpropagation"]
# The Hub's pipeline (and model-index task) of an architecture, by its class-name suffix.
PIPELINES = {
    "ForMaskedLM": ("fill-mask", "Fill Mask"),
    "ForTokenClassification": ("token-classification", "Token Classification"),
    "ForQuestionAnswering": ("question-answering", "Question Answering"),
}
CLASSIFICATION = ("text-classification", "Text Classification")
COMPRESSION_NAMES = {"narrowed": "a narrowed copy", "summing_network": "a summing network built from it"}
MODE_NAMES = {"pb": "perforated backpropagation", "gd": "gradient-descent dendrites"}
# Names the Hub's metric metadata uses for ours.
METRIC_IDS = {
    "accuracy": "accuracy",
    "macro_f1": "f1",
    "matthews_correlation": "matthews_correlation",
    "perplexity": "perplexity",
}
# What the card's results table shows, in this order, when `results` holds them.
SCORED = ("accuracy", "macro_f1", "matthews_correlation", "loss", "perplexity")
HUB_ID = re.compile(r"[\w.-]+/[\w.-]+|[\w.-]+")
# Weights that must never leave or enter a repo: anything but safetensors could run code on load.
STALE_WEIGHTS = ["*.safetensors", "*.safetensors.index.json"]


def _read_results(results: dict[str, Any] | str | os.PathLike | None) -> dict[str, Any] | None:
    if results is None or isinstance(results, dict):
        return results
    path = Path(results)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error


def _hub_id(name_or_path: str | None) -> str | None:
    """`name_or_path` when it can be a Hub id (not a local folder or file), else None."""
    if not name_or_path or Path(name_or_path).exists() or not HUB_ID.fullmatch(name_or_path):
        return None
    return name_or_path


def _base_model(model: nn.Module, results: dict[str, Any] | None, recipe: dict[str, Any]) -> str | None:
    """The base model's Hub id: the `base_model` entry of `results` (null: a local folder), else the
    recipe's `model_name_or_path` when it looks like a Hub id; failing both, a PEFT model's base."""
    if results is not None and "base_model" in results:
        base_model = results["base_model"]
    else:
        base_model = _hub_id((recipe.get("model") or {}).get("model_name_or_path"))
    if base_model is None and is_peft_model(model):
        base_model = _hub_id(adapter_summary(model)["base_model"])
    return base_model


def _format_count(count: int) -> str:
    return f"{count:,}"


def _training_settings(results: dict[str, Any] | None) -> dict[str, Any] | None:
    """The run's `DendriteTrainingArguments` from the recipe in `results.json` (`config.dendrite_training`;
    results written before the settings split hold them in `config.dendrites`, beside the model's fields)."""
    recipe = (results or {}).get("config") or {}
    if recipe.get("dendrite_training"):
        return dict(recipe["dendrite_training"])
    legacy = {name: value for name, value in (recipe.get("dendrites") or {}).items() if name in TRAINING_FIELDS}
    return legacy or None


def _phases(history: list[dict[str, Any]] | None, completed_reason: str | None) -> dict[str, Any] | None:
    """Counts of what happened during training, from the tracker's history."""
    if not history:
        return None
    return {
        "evaluations": len(history),
        "dendrite_phases": sum(1 for r in history if r.get("action") == Action.START_DENDRITE_PHASE),
        "growths": sum(1 for r in history if r.get("action") == Action.GROW),
        "reverts": sum(1 for r in history if r.get("restore_best")),
        "completed_reason": completed_reason,
    }


def _dataset(results: dict[str, Any] | None) -> tuple[str | None, str, str]:
    """(Hub dataset id or None, dataset type for model-index, readable dataset name) from `results["dataset"]`."""
    dataset = (results or {}).get("dataset") or {}
    hub_id = dataset.get("hub_id")
    return hub_id, dataset.get("type") or hub_id or "custom", dataset.get("name") or "custom data"


def architecture_of(model: nn.Module) -> str:
    """The transformers class a saved model is rebuilt as (a PEFT model: its base model's)."""
    base = model.get_base_model() if is_peft_model(model) else model
    return type(base).__name__


def pipeline_of(architecture: str) -> tuple[str, str]:
    """(pipeline tag, task name) of an architecture; text classification unless it says otherwise."""
    return next((task for suffix, task in PIPELINES.items() if architecture.endswith(suffix)), CLASSIFICATION)


def _auto_class(architecture: str) -> str:
    try:
        return auto_class_for(architecture)
    except ValueError:  # a model class of the user's own: the base Auto class loads its config
        return "AutoModel"


def _eval_results(
    results: dict[str, Any] | None, dataset: tuple[str | None, str, str], task: tuple[str, str]
) -> list[EvalResult]:
    _, dataset_type, dataset_name = dataset
    entries = []
    for split in ("test", "validation"):
        for metric, value in ((results or {}).get(split) or {}).items():
            if metric not in METRIC_IDS or value is None:
                continue
            entries.append(
                EvalResult(
                    task_type=task[0],
                    task_name=task[1],
                    dataset_type=dataset_type,
                    dataset_name=dataset_name,
                    dataset_split=split,
                    metric_type=METRIC_IDS[metric],
                    metric_name=f"{metric} ({split})",
                    metric_value=float(value),
                )
            )
    return entries


def model_card(
    model: nn.Module,
    repo_id: str,
    *,
    results: dict[str, Any] | str | os.PathLike | None = None,
    base_model: str | None = None,
    reference: dict[str, Any] | None = None,
    history_plot: str | None = None,
    license: str | None = None,
) -> ModelCard:
    """The model card of an augmented model, from the package's Jinja2 template.

    Args:
        results: a `results.json` of `scripts/train.py` (dict or path), for the results table,
            the `model-index` metadata, the recipe and the phase summary.
        base_model: Hub id of the pretrained model it started from; when omitted, the `base_model`
            entry of `results` (`scripts/train.py` writes it), else the recipe's `model_name_or_path`
            (or a PEFT model's base) when it looks like a Hub id.
        reference: `{"name", "parameters"}` of the full model a compressed one is compared with
            (read from the `compression` entry of `results` when omitted).
        history_plot: file name of the history plot in the repo, to embed.
    """
    if getattr(model, "dendrite_config", None) is None:
        raise ValueError("model_card needs a model prepared with add_dendrites(model, config)")
    results = _read_results(results)
    compression = (results or {}).get("compression") or {}
    reference = reference or compression.get("reference")
    report = parameter_report(model)
    config = model.config
    recipe = (results or {}).get("config") or {}
    base_model = base_model or _base_model(model, results, recipe)
    dataset = _dataset(results)
    dendrite_config = model.dendrite_config.to_dict()
    training = _training_settings(results)
    metric_names = [m for m in SCORED if any(m in ((results or {}).get(s) or {}) for s in ("validation", "test"))]
    architecture = architecture_of(model)
    pipeline = pipeline_of(architecture)
    card_data = _card_data(model, repo_id, base_model, dataset, metric_names, pipeline, results, license)
    compressed = reference is not None
    adapter = adapter_summary(model) if is_peft_model(model) else None
    template = resources.files("hf_dendrites").joinpath("model_cards", CARD_TEMPLATE).read_text(encoding="utf-8")
    return ModelCard.from_template(
        card_data,
        template_str=template,
        model_name=repo_id.split("/")[-1],
        repo_id=repo_id,
        base_model=base_model,
        base_model_type=getattr(config, "model_type", "transformer"),
        auto_class=_auto_class(architecture),
        compressed=compressed,
        compression=COMPRESSION_NAMES.get(compression.get("architecture"), "compressed"),
        mode_name=MODE_NAMES.get(dendrite_config["mode"], dendrite_config["mode"]),
        layer_count=len(report["dendrites_per_layer"]),
        num_dendrites=max(report["dendrites_per_layer"].values(), default=0),
        task=dataset[2] if results else None,
        num_labels=getattr(config, "num_labels", None) if pipeline == CLASSIFICATION else None,
        parameters={key: _format_count(report[key]) for key in ("base", "dendrites", "total")},
        reference=None
        if reference is None
        else {
            "name": reference["name"],
            "parameters": _format_count(int(reference["parameters"])),
            "share": f"{100 * report['total'] / int(reference['parameters']):.1f}%",
        },
        dendrites_per_layer=report["dendrites_per_layer"],
        results={split: results[split] for split in ("validation", "test") if (results or {}).get(split)}
        if results
        else None,
        metric_names=metric_names,
        dendrite_config=dendrite_config,
        training=training,
        phases=_phases((results or {}).get("dendrite_history"), (results or {}).get("completed_reason")),
        recipe=_recipe_summary(recipe),
        history_plot=history_plot,
        distillation=_distillation_summary((results or {}).get("distillation")),
        adapter=adapter,
    )


def _card_data(
    model: nn.Module,
    repo_id: str,
    base_model: str | None,
    dataset: tuple,
    metric_names: list[str],
    pipeline: tuple,
    results: dict[str, Any] | None,
    license: str | None,
) -> ModelCardData:
    """The card's YAML metadata: what the Hub indexes and filters on."""
    return ModelCardData(
        model_name=repo_id.split("/")[-1],
        base_model=base_model,
        datasets=[dataset[0]] if dataset[0] else None,
        library_name="hf_dendrites",
        license=license,
        metrics=[METRIC_IDS[m] for m in metric_names if m in METRIC_IDS] or None,
        pipeline_tag=pipeline[0],
        tags=[
            *TAGS,
            pipeline[0],
            f"dendrites-{model.dendrite_config.mode}",
            model.config.model_type,
            *(["peft", "lora"] if is_peft_model(model) else []),
        ],
        eval_results=_eval_results(results, dataset, pipeline) or None,
    )


def _distillation_summary(distillation: dict[str, Any] | None) -> dict[str, Any] | None:
    """The teacher and pool of a distilled model, for its card."""
    if not distillation:
        return None
    accuracy = distillation.get("teacher_accuracy") or {}
    pool = distillation.get("pool") or {}
    return {
        "teacher": distillation["teacher"],
        "teacher_test_accuracy": None if accuracy.get("test") is None else f"{100 * accuracy['test']:.2f}%",
        "alpha": distillation.get("alpha"),
        "temperature": distillation.get("temperature"),
        "pool_size": f"{pool['size']:,}" if "size" in pool else None,
        "labeled": f"{pool['labeled']:,}" if "labeled" in pool else None,
    }


def _recipe_summary(recipe: dict[str, Any]) -> dict[str, Any] | None:
    """The training settings worth reading in a card (the full set stays in results.json)."""
    if not recipe:
        return None
    training = recipe.get("training") or {}
    keep = (
        "num_train_epochs",
        "per_device_train_batch_size",
        "learning_rate",
        "weight_decay",
        "optim",
        "lr_scheduler_type",
        "seed",
        "metric_for_best_model",
    )
    return {
        "model": recipe.get("model"),
        "data": {k: v for k, v in (recipe.get("data") or {}).items() if v is not None},
        "training": {k: training[k] for k in keep if k in training},
    }


def push_to_hub(
    model: nn.Module,
    repo_id: str,
    *,
    tokenizer: Any = None,
    results: dict[str, Any] | str | os.PathLike | None = None,
    history_plot: str | os.PathLike | None = None,
    base_model: str | None = None,
    reference: dict[str, Any] | None = None,
    commit_message: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
    license: str | None = None,
) -> CommitInfo:
    """Upload an augmented model, its tokenizer, results, history plot and model card as one commit.

    Creates the repo if needed. Pushing again replaces the files (stale weight shards of an
    earlier push are deleted in the same commit). Returns the commit's `CommitInfo`.
    """
    if getattr(model, "dendrite_config", None) is None:
        raise ValueError("push_to_hub needs a model prepared with add_dendrites(model, config)")
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", repo_id):
        raise ValueError(f"{repo_id!r} is not a Hub repo id ('name' or 'namespace/name')")
    results_data = _read_results(results)
    api = HfApi(token=token)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    if revision is not None and not create_pr:
        api.create_branch(repo_id, branch=revision, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hf_dendrites_push_") as folder:
        if is_peft_model(model):  # the adapter, its dendrites and their record; the base stays where it is
            save_adapter_with_dendrites(model, folder)
        else:
            save_pretrained(model, folder)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        if results_data is not None:
            Path(folder, RESULTS_FILE).write_text(json.dumps(results_data, indent=2, default=str) + "\n")
        plot_name = None
        if history_plot is not None and Path(history_plot).is_file():
            plot_name = HISTORY_PLOT
            shutil.copyfile(history_plot, Path(folder, plot_name))
        card = model_card(
            model,
            repo_id,
            results=results_data,
            base_model=base_model,
            reference=reference,
            history_plot=plot_name,
            license=license,
        )
        card.save(Path(folder, "README.md"))
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            commit_message=commit_message or "Upload model with dendrites",
            revision=revision,
            create_pr=create_pr,
            delete_patterns=STALE_WEIGHTS,
        )
