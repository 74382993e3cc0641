"""The unlabelled distillation pool: sources, deduplication, and no validation or test text ever."""

from __future__ import annotations

import datasets
import pytest

from experiments.data import load_task
from experiments.unlabeled import (
    POOL_SOURCES,
    UNLABELED,
    builtin_unlabeled_texts,
    distillation_pool,
    read_unlabeled_file,
    text_key,
)


def task(train, validation, test) -> datasets.DatasetDict:
    def split(rows):
        return datasets.Dataset.from_dict(
            {"id": [str(i) for i in range(len(rows))], "text": rows, "label": [1] * len(rows)}
        )

    return datasets.DatasetDict({"train": split(train), "validation": split(validation), "test": split(test)})


def test_pool_keeps_labels_dedupes_and_drops_held_out_texts_by_hash():
    data = task(["a good film indeed", "a bad film indeed"], ["held out one here"], ["held out two here"])
    unlabeled = {
        "dialog": ["Held  OUT one here", "a brand new line", "A brand new line ", "held out two here", "tiny"],
        "more": ["a good film indeed", "another fresh line"],
    }
    pool, record = distillation_pool(data, unlabeled, labeled_train=data["train"].select([0]))
    assert pool["text"] == ["a good film indeed", "a bad film indeed", "a brand new line", "another fresh line"]
    assert pool["label"] == [1, UNLABELED, UNLABELED, UNLABELED]
    assert pool["source"] == ["labeled", "task_train", "dialog", "more"]
    assert record["sources"]["dialog"] == {"read": 5, "kept": 1, "duplicate": 1, "held_out": 2, "short": 1}
    assert record["size"] == 4 and record["labeled"] == 1 and record["unlabeled"] == 3


def test_pool_cap_is_a_fixed_choice_of_unlabelled_rows():
    data = task(["a labelled sentence"], ["valid sentence"], ["test sentence"])
    unlabeled = {"lines": [f"unlabelled line number {i}" for i in range(50)]}
    pool, record = distillation_pool(data, unlabeled, max_unlabeled=10, seed=3)
    again, _ = distillation_pool(data, unlabeled, max_unlabeled=10, seed=3)
    other, _ = distillation_pool(data, unlabeled, max_unlabeled=10, seed=4)
    assert len(pool) == 11 and pool["text"][0] == "a labelled sentence" and pool["text"] == again["text"]
    assert pool["text"] != other["text"]
    assert record["sources"]["lines"]["kept"] == 10 - (record["sources"]["task_train"]["kept"])
    with pytest.raises(ValueError, match="max_unlabeled"):
        distillation_pool(data, unlabeled, max_unlabeled=-1)


@pytest.fixture(scope="module")
def builtin_texts():
    return builtin_unlabeled_texts()


@pytest.mark.parametrize("name", ["movie_reviews", "trec6"])
def test_builtin_pool_is_large_and_never_holds_a_validation_or_test_text(name, builtin_texts):
    data = load_task(name)
    assert set(builtin_texts) == set(POOL_SOURCES)
    pool, record = distillation_pool(data, builtin_texts, labeled_train=data["train"].select(range(3000)))
    assert record["unlabeled"] >= 50_000
    held_out = {text_key(text) for split in ("validation", "test") for text in data[split]["text"]}
    keys = [text_key(text) for text in pool["text"]]
    assert not held_out & set(keys), "a validation or test text leaked into the pool"
    assert len(set(keys)) == len(keys), "the pool has duplicates"
    if name == "movie_reviews":  # the validation and test sentences are in the same file as the pool's
        assert record["sources"]["task_train"]["kept"] > 5000


def test_user_file_is_read_and_an_empty_one_is_refused(tmp_path):
    lines = tmp_path / "pool.txt"
    lines.write_text("first line of text\n\nsecond line of text\n")
    assert read_unlabeled_file(lines) == ["first line of text", "second line of text"]
    table = tmp_path / "pool.csv"
    table.write_text("sentence\nfrom a csv file\n")
    assert read_unlabeled_file(table, text_column="sentence") == ["from a csv file"]
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    with pytest.raises(ValueError, match="empty.txt holds no text"):
        read_unlabeled_file(empty)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_unlabeled_file(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="'text'"):
        read_unlabeled_file(table)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("latin1.txt", "caf\xe9 au lait\n".encode("latin-1"), "is not UTF-8 text"),
        ("latin1.csv", "text\ncaf\xe9\n".encode("latin-1"), "is not UTF-8 text"),
        ("broken.jsonl", b'{"text": "a"}\n{"text": "b"\n', "cannot be read"),
    ],
)
def test_an_unreadable_unlabelled_file_is_refused_naming_it(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=rf"the unlabelled text file .*{name} {message}"):
        read_unlabeled_file(path)
