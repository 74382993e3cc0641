"""Your own labelled data: local CSV / JSON / JSONL / Parquet files or a Hub dataset.

Both loaders return the layout of the built-in tasks (`data.py`): a `datasets.DatasetDict` with
columns `id` (str), `text` (str) and `label` (`datasets.ClassLabel`), and the splits the files do
not provide made by `data.hash_split`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import datasets

from experiments.data import (
    DEFAULT_TEST_FRACTION,
    DEFAULT_VALIDATION_FRACTION,
    SPLIT_SEED,
    SPLITS,
    hash_split,
    make_dataset,
    split_dataset_dict,
    task_features,
)

logger = logging.getLogger(__name__)

__all__ = ["load_hub", "load_local"]


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


def _read_file(builder: str, path: str, kwargs: dict[str, Any]) -> datasets.Dataset:
    """One data file as a Dataset; a file that cannot be parsed or holds no rows is an error naming it."""
    try:
        dataset = datasets.load_dataset(builder, data_files=path, split="train", **kwargs)
    except (datasets.exceptions.DatasetGenerationError, ValueError) as error:
        if "corresponds to no data" in str(error):
            raise ValueError(f"{path} holds no examples (only a header, or empty)") from error
        cause = error.__cause__ or error
        raise ValueError(f"{path} cannot be read as {builder}: {type(cause).__name__}: {cause}") from error
    if len(dataset) == 0:
        raise ValueError(f"{path} holds no examples (only a header, or empty)")
    return dataset


def _check_labels_were_trained(
    columns: Mapping[str, tuple[list[str], list[str], list[int]]], names: list[str], source: str
) -> None:
    """A class that appears in validation or test but never in training can never be predicted: say so."""
    trained = set(columns["train"][2]) if "train" in columns else set()
    for split, (_, _, labels) in columns.items():
        unknown = sorted({label for label in labels if label >= 0} - trained)
        if unknown:
            shown = [names[label] if label < len(names) else str(label) for label in unknown]
            raise ValueError(
                f"labels {shown} appear in split {split!r} of {source} but never in the training split: a model cannot "
                "learn a class it never sees; check the label column, or move examples of these classes into training"
            )


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
    splits = data_files if isinstance(data_files, dict) else {"train": data_files}
    raw = datasets.DatasetDict({split: _read_file(builder, path, kwargs) for split, path in splits.items()})
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
        if "train" in columns:
            _check_labels_were_trained(columns, names, source)
        features = task_features(names)
        return datasets.DatasetDict({split: make_dataset(*columns[split], features) for split in data_files})
    ids, texts, labels = columns["train"]
    return split_dataset_dict(
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
    try:
        raw = datasets.load_dataset(name, config_name, **load_dataset_kwargs)
    except ConnectionError as error:
        raise ConnectionError(
            f"the Hub dataset {name!r} cannot be reached ({error}) and is not in the local cache: it needs the network "
            "the first time; offline, give your data as files (train_file / validation_file) or use a built-in task"
        ) from error
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
    features = task_features(names)
    out = {split: make_dataset(*cols, features) for split, cols in columns.items()}
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
            out[split] = make_dataset(
                [ids[r] for r in rows], [texts[r] for r in rows], [labels[r] for r in rows], features
            )
    return datasets.DatasetDict({split: out[split] for split in SPLITS})
