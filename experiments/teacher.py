"""A teacher's logits over a text pool, computed once and cached on disk.

A distilled student sees every pool sentence once per epoch; running the teacher each time would
cost more than training the student. The logits are computed once and stored as an Arrow dataset
(`datasets.Dataset.save_to_disk`) under a key made of everything they depend on: the teacher's
weights and configuration, the tokenizer's vocabulary and settings, the truncation length and the
texts. Change any of them and the key changes, so a stale cache is never read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, PreTrainedModel, PreTrainedTokenizerBase
from transformers.utils import cached_file

from experiments.pretrained import SHIPPED_MODELS
from hf_dendrites.augment import from_pretrained
from hf_dendrites.distillation import TEACHER_LOGITS
from hf_dendrites.serialization import DENDRITE_MODEL_TYPE

logger = logging.getLogger(__name__)

CACHE_FORMAT = 1
META_FILE = "teacher_logits.json"


def model_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 over the model's configuration, tensor names, shapes, dtypes and values."""
    digest = hashlib.sha256()
    config = getattr(model, "config", None)
    if config is not None:
        digest.update(config.to_json_string(use_diff=False).encode())
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """SHA-256 over what decides the token ids: class, vocabulary and normalisation settings."""
    settings = {
        "class": type(tokenizer).__name__,
        "vocab": sorted(tokenizer.get_vocab().items()),
        "do_lower_case": getattr(tokenizer, "do_lower_case", None),
        "truncation_side": tokenizer.truncation_side,
        "special": sorted((str(k), str(v)) for k, v in tokenizer.special_tokens_map.items()),
    }
    if getattr(tokenizer, "is_fast", False):
        backend = json.loads(tokenizer.backend_tokenizer.to_str())
        # the backend records the truncation and padding of its last call, which `max_length` covers
        backend.pop("truncation", None)
        backend.pop("padding", None)
        settings["backend"] = backend
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def texts_fingerprint(texts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for text in texts:
        digest.update(hashlib.sha256(text.encode()).digest())
    return digest.hexdigest()


def cache_key(
    teacher: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int
) -> str:
    parts = {
        "format": CACHE_FORMAT,
        "teacher": model_fingerprint(teacher),
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "max_length": max_length,
        "texts": texts_fingerprint(texts),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


@torch.no_grad()
def compute_teacher_logits(
    teacher: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    max_length: int,
    batch_size: int = 256,
) -> np.ndarray:
    """The teacher's logits for every text, `[len(texts), num_labels]` float32, in eval mode."""
    was_training = teacher.training
    teacher.eval()
    device = next(teacher.parameters()).device
    # sorted by length so a batch pads to similar lengths; written back in the original order
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    logits = np.zeros((len(texts), teacher.config.num_labels), dtype=np.float32)
    try:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = tokenizer(
                [texts[i] for i in rows], truncation=True, max_length=max_length, padding=True, return_tensors="pt"
            ).to(device)
            logits[rows] = teacher(**batch).logits.float().cpu().numpy()
    finally:
        teacher.train(was_training)
    return logits


def teacher_logits(
    teacher: torch.nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    max_length: int,
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 256,
    description: dict[str, Any] | None = None,
) -> np.ndarray:
    """`compute_teacher_logits`, read from `cache_dir` when the same inputs were seen before.

    `description` (e.g. the teacher's name) is stored next to the logits for people; it is not
    part of the key.
    """
    texts = list(texts)
    if cache_dir is None:
        return compute_teacher_logits(teacher, tokenizer, texts, max_length=max_length, batch_size=batch_size)
    key = cache_key(teacher, tokenizer, texts, max_length)
    folder = Path(cache_dir) / key
    if (folder / META_FILE).is_file():
        cached = datasets.load_from_disk(str(folder))
        if len(cached) == len(texts):
            logger.info("teacher logits: reusing %s (%d texts)", folder, len(texts))
            return np.asarray(cached[TEACHER_LOGITS], dtype=np.float32)
        logger.warning(
            "teacher logits cache %s holds %d rows for %d texts; recomputing", folder, len(cached), len(texts)
        )
    logger.info("teacher logits: computing for %d texts (cached in %s)", len(texts), folder)
    logits = compute_teacher_logits(teacher, tokenizer, texts, max_length=max_length, batch_size=batch_size)
    _write_atomically(folder, logits, {"texts": len(texts), "max_length": max_length, **(description or {})})
    return logits


def _write_atomically(folder: Path, logits: np.ndarray, meta: dict[str, Any]) -> None:
    """Write into a temporary sibling folder and rename it: a crash leaves no half-written cache."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        features = datasets.Features({TEACHER_LOGITS: datasets.Sequence(datasets.Value("float32"))})
        datasets.Dataset.from_dict({TEACHER_LOGITS: logits.tolist()}, features=features).save_to_disk(str(staging))
        (staging / META_FILE).write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def add_teacher_logits(
    dataset: datasets.Dataset,
    teacher: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_length: int,
    text_column: str = "text",
    cache_dir: str | os.PathLike | None = None,
    batch_size: int = 256,
    description: dict[str, Any] | None = None,
) -> datasets.Dataset:
    """`dataset` with a `teacher_logits` column (see `teacher_logits`), ready for a distilling trainer."""
    if text_column not in dataset.column_names:
        raise ValueError(f"column {text_column!r} not found; the dataset has {dataset.column_names}")
    logits = teacher_logits(
        teacher,
        tokenizer,
        dataset[text_column],
        max_length=max_length,
        cache_dir=cache_dir,
        batch_size=batch_size,
        description=description,
    )
    if TEACHER_LOGITS in dataset.column_names:
        dataset = dataset.remove_columns(TEACHER_LOGITS)
    return dataset.add_column(TEACHER_LOGITS, logits.tolist())


def check_teacher(teacher: PreTrainedModel, num_labels: int, source: str) -> None:
    """Refuse a teacher made for another label set before anything is computed with it."""
    teacher_labels = getattr(teacher.config, "num_labels", None)
    if teacher_labels != num_labels:
        raise ValueError(
            f"the teacher {source} predicts {teacher_labels} labels but the task has {num_labels}: "
            "use a teacher fine-tuned on this task"
        )


def load_teacher(name_or_path: str | os.PathLike, **hub_kwargs: Any) -> PreTrainedModel:
    """A fine-tuned classifier to distil from: a local folder or a Hub id, with or without dendrites.

    Raises `FileNotFoundError` naming `name_or_path` when it is neither a model folder nor a
    loadable Hub model.
    """
    source = str(name_or_path)
    if source.lower() in SHIPPED_MODELS:
        raise ValueError(
            f"the teacher {source!r} is a pretrained encoder, not a fine-tuned classifier: fine-tune it first"
        )
    try:
        config_file = cached_file(source, "config.json", **hub_kwargs)
    except OSError as error:
        raise FileNotFoundError(
            f"teacher {source!r} is neither a model folder nor a loadable Hub model ({error})"
        ) from None
    model_type = json.loads(Path(config_file).read_text(encoding="utf-8")).get("model_type")
    if model_type == DENDRITE_MODEL_TYPE:
        teacher = from_pretrained(source, **hub_kwargs)
    else:
        teacher = AutoModelForSequenceClassification.from_pretrained(source, **hub_kwargs)
    teacher.eval()
    return teacher
