"""Client programs for the Hub tests, run in subprocesses pointed at the local Hub server.

`huggingface_hub` reads `HF_ENDPOINT` once, at import, so each client is a fresh process:
`python -c "import hub_clients; hub_clients.<name>(...)"` with the tests folder as working
directory. Each prints one `RESULT_JSON:` line that the test reads.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

MARKER = "RESULT_JSON:"
ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:  # the studies' helpers (experiments/) live beside the tests, at the repository root
    sys.path.append(ROOT)
TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(95)]


def report(**values) -> None:
    print(MARKER + json.dumps(values), flush=True)


def tiny_tokenizer(folder: Path):
    from transformers import BertTokenizerFast

    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(TOKENS) + "\n", encoding="utf-8")
    return BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)


def sentences() -> list[str]:
    return [" ".join(f"w{(7 * i + 3 * j) % 95}" for j in range(4 + i % 5)) for i in range(12)]


def logits_of(model, tokenizer) -> list[list[float]]:
    import torch

    batch = tokenizer(sentences(), padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits.tolist()


def push_tiny(repo_id: str, workdir: str, dendrites: int = 1, seed: int = 0, family: str = "bert") -> None:
    """Build a tiny augmented classifier, evaluate it, push it with results; then load it back."""
    import numpy as np
    import torch
    from tiny_models import tiny_model

    import hf_dendrites as hd
    from experiments.data import TASK_DESCRIPTIONS
    from experiments.metrics import build_compute_metrics

    folder = Path(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    model = tiny_model(family, num_labels=3, seed=seed)
    hd.add_dendrites(model, hd.DendriteConfig(mode="gd"))
    for _ in range(dendrites):
        hd.grow(model)
    torch.manual_seed(seed)
    with torch.no_grad():  # non-zero dendrite output weights, so dendrites change the logits
        for name, parameter in model.named_parameters():
            if name.endswith("dendrite_scale"):
                parameter.normal_()
    model.eval()
    tokenizer = tiny_tokenizer(folder)
    logits = logits_of(model, tokenizer)
    labels = np.arange(len(logits)) % 3
    metrics = build_compute_metrics(["accuracy", "macro_f1"])((np.array(logits), labels))
    report_ = hd.parameter_report(model)
    results = {
        "validation": metrics,
        "test": metrics,
        "parameters": {key: report_[key] for key in ("base", "dendrites", "total")},
        "dendrites_per_layer": report_["dendrites_per_layer"],
        "dataset": dict(TASK_DESCRIPTIONS["trec6"]),
        "config": {"model": {"model_name_or_path": "google-bert/bert-base-uncased"}, "data": {"task": "trec6"}},
    }
    if family in ("summing_network", "narrowed_bert"):  # compressed: compared with the tiny BERT it came from
        full = hd.parameter_report(tiny_model("bert", num_labels=3, seed=seed))["total"]
        architecture = "summing_network" if family == "summing_network" else "narrowed"
        results["compression"] = {"architecture": architecture, "reference": {"name": "tiny BERT", "parameters": full}}
    commit = model.push_to_hub(repo_id, tokenizer=tokenizer, results=results, commit_message=f"push {dendrites}")
    loaded = hd.from_pretrained(repo_id)
    from transformers import AutoTokenizer

    loaded_tokenizer = AutoTokenizer.from_pretrained(repo_id, config=loaded.config)
    (folder / "logits.json").write_text(json.dumps(logits))
    report(
        commit=commit.oid,
        logits=logits,
        loaded_logits=logits_of(loaded, loaded_tokenizer),
        dendrites=hd.num_dendrites(loaded),
        results=results,
    )


def load_with_library(repo_id: str, workdir: str, revision: str | None = None) -> None:
    """Load with hf_dendrites; report the logits, or the error message of a failed load."""
    from transformers import AutoTokenizer

    import hf_dendrites as hd

    try:
        model = hd.from_pretrained(repo_id, revision=revision)
    except (ValueError, OSError) as error:
        report(error=f"{type(error).__name__}: {error}")
        return
    tokenizer = AutoTokenizer.from_pretrained(repo_id, revision=revision, config=model.config)
    report(logits=logits_of(model, tokenizer), dendrites=hd.num_dendrites(model))


def load_without_library(repo_id: str) -> None:
    """Load with transformers' remote code in a process that cannot import hf_dendrites."""
    import importlib.util

    # the editable install puts a finder on sys.meta_path; the repo root may be on sys.path
    sys.meta_path[:] = [finder for finder in sys.meta_path if "hf_dendrites" not in repr(finder)]
    root = str(Path(__file__).resolve().parents[1])
    sys.path[:] = [entry for entry in sys.path if entry not in ("", root)]
    assert importlib.util.find_spec("hf_dendrites") is None, "hf_dendrites is still importable"
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(repo_id, trust_remote_code=True)
    tokenizer = AutoTokenizer.from_pretrained(repo_id, trust_remote_code=True)
    report(
        logits=logits_of(model, tokenizer),
        model_class=type(model).__name__,
        hf_dendrites_imported=any(name.startswith("hf_dendrites") for name in sys.modules),
    )


def push_masked_lm(repo_id: str, workdir: str) -> None:
    """Push a tiny masked-LM BERT with one GD dendrite and masked-LM results; load it back, fill a mask."""
    import math

    import torch
    from transformers import pipeline

    import hf_dendrites as hd
    from benchmarks.masked_lm import masked_lm_model

    folder = Path(workdir)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer(folder)
    model = masked_lm_model(len(TOKENS), hidden_size=32, num_attention_heads=2, max_seq_length=32, seed=0)
    hd.add_dendrites(model, hd.DendriteConfig(mode="gd"))
    hd.grow(model)
    torch.manual_seed(0)
    with torch.no_grad():  # non-zero dendrite output weights, so dendrites change the logits
        for name, parameter in model.named_parameters():
            if name.endswith("dendrite_scale"):
                parameter.normal_()
    model.eval()
    report_ = hd.parameter_report(model)
    results = {
        "task": "masked_lm",
        "validation": {"loss": 4.5, "perplexity": math.exp(4.5)},
        "test": {"loss": 4.6, "perplexity": math.exp(4.6)},
        "parameters": {key: report_[key] for key in ("base", "dendrites", "total")},
        "dendrites_per_layer": report_["dendrites_per_layer"],
        "dataset": {"name": "offline English corpus (film dialogue and rated snippets)"},
        "config": {"model": {"architecture": "BertForMaskedLM, from scratch"}},
    }
    model.push_to_hub(repo_id, tokenizer=tokenizer, results=results)
    loaded = hd.from_pretrained(repo_id)
    batch = tokenizer(sentences(), padding=True, return_tensors="pt")
    with torch.no_grad():
        logits, loaded_logits = model(**batch).logits, loaded(**batch).logits
    filler = pipeline("fill-mask", model=loaded, tokenizer=tokenizer)
    filled = filler(f"w1 w2 {tokenizer.mask_token} w4")
    report(
        same_logits=bool(torch.equal(logits, loaded_logits)),
        model_class=type(loaded).__name__,
        dendrites=hd.num_dendrites(loaded),
        filled=[candidate["token_str"] for candidate in filled],
        scores=[candidate["score"] for candidate in filled],
        logits=logits.tolist(),
    )


def load_masked_lm_without_library(repo_id: str) -> None:
    """Load the pushed masked-LM model with transformers' remote code, without hf_dendrites."""
    import importlib.util

    sys.meta_path[:] = [finder for finder in sys.meta_path if "hf_dendrites" not in repr(finder)]
    sys.path[:] = [entry for entry in sys.path if entry not in ("", ROOT)]
    assert importlib.util.find_spec("hf_dendrites") is None, "hf_dendrites is still importable"
    import torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    model = AutoModelForMaskedLM.from_pretrained(repo_id, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(repo_id, trust_remote_code=True)
    batch = tokenizer(sentences(), padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
    report(model_class=type(model).__name__, logits=logits.tolist())


def push_lora(repo_id: str) -> None:
    """Push a tiny LoRA model with dendrites (adapter + dendrites only), load it back onto its base."""
    import torch
    from test_adapters import grown_lora_model
    from tiny_models import tiny_model, token_batch

    import hf_dendrites as hd

    model = grown_lora_model()
    with torch.no_grad():
        logits = model(**token_batch()).logits
    commit = model.push_to_hub(repo_id, commit_message="adapter with dendrites")
    loaded = hd.from_pretrained(repo_id, base_model=tiny_model(num_labels=2))
    with torch.no_grad():
        loaded_logits = loaded(**token_batch()).logits
    report(
        commit=commit.oid,
        logits=logits.tolist(),
        loaded_logits=loaded_logits.tolist(),
        loaded_class=type(loaded).__name__,
        dendrites=hd.num_dendrites(loaded),
    )
