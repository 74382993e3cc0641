"""scripts/train.py distilling a student: the teacher fine-tuned once and reused, results, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from script_modules import load_script
from test_train_script import SMALL_CANDIDATE_PHASE, TINY_PLAIN

train = load_script("train")
ROOT = Path(__file__).resolve().parents[1]
DISTILLED = str(ROOT / "configs" / "movie_reviews_distilled.yaml")
# the tiny runs evaluate once per epoch and save nothing, like the other script tests
STUDENT_PLAIN = [
    *TINY_PLAIN,
    "--num_train_epochs",
    "4",
    "--eval_strategy",
    "epoch",
    "--logging_strategy",
    "epoch",
    "--per_device_train_batch_size",
    "32",
    "--max_unlabeled_samples",
    "200",
]
STUDENT = [*STUDENT_PLAIN, *SMALL_CANDIDATE_PHASE]


@pytest.fixture(scope="module")
def teacher_recipe(tmp_path_factory) -> Path:
    """A tiny teacher recipe: MiniLM-L2 fine-tuned for one epoch on 96 movie-review sentences."""
    folder = tmp_path_factory.mktemp("teacher")
    recipe = folder / "teacher.yaml"
    recipe.write_text(
        "model_name_or_path: minilm-l2\ntask: movie_reviews\nmax_train_samples: 96\nmax_eval_samples: 64\n"
        "max_test_samples: 64\nmax_seq_length: 32\nnum_train_epochs: 1\nlearning_rate: 1.0e-4\n"
        "eval_strategy: epoch\nsave_strategy: 'no'\nreport_to: none\ndisable_tqdm: true\ndendrites: none\n"
        f"output_dir: {folder / 'model'}\n"
    )
    return recipe


@pytest.fixture(scope="module")
def distilled_run(teacher_recipe, tmp_path_factory):
    """A distilled summing network with PB dendrites; an impassable threshold makes it grow."""
    output = tmp_path_factory.mktemp("student")
    cache = output.parent / "teacher_logits"
    arguments = [
        DISTILLED,
        *STUDENT_PLAIN,
        "--teacher_recipe",
        str(teacher_recipe),
        "--teacher_logits_cache",
        str(cache),
    ]
    grown = [*arguments, *SMALL_CANDIDATE_PHASE, "--improvement_threshold_abs", "10"]
    results = train.main([*grown, "--output_dir", str(output)])
    return results, output, arguments  # the arguments of a plain student with the same teacher and cache


def test_a_distilled_run_fine_tunes_the_teacher_grows_and_records_everything(distilled_run, teacher_recipe):
    results, output, _ = distilled_run
    written = json.loads((output / "results.json").read_text())
    distillation = written["distillation"]
    assert distillation["teacher"] == str(teacher_recipe.parent / "model")
    assert distillation["teacher_recipe"] == str(teacher_recipe)
    teacher_results = json.loads((teacher_recipe.parent / "model" / "results.json").read_text())
    assert distillation["teacher_accuracy"]["test"] == pytest.approx(teacher_results["test"]["accuracy"])
    assert distillation["pool"]["labeled"] == 96 and distillation["pool"]["unlabeled"] == 200
    assert distillation["alpha"] == 0.9 and distillation["temperature"] == 2.0
    assert written["config"]["distillation"]["max_unlabeled_samples"] == 200
    assert "grow" in [record["action"] for record in written["dendrite_history"]]
    agreement = [(e["teacher_agreement/train"], e["teacher_agreement/validation"]) for e in written["evaluations"]]
    assert len(agreement) == 4 and all(0.0 <= value <= 1.0 for pair in agreement for value in pair)
    for key in ("validation", "test", "parameters", "dendrites_per_layer", "epochs", "compression", "versions"):
        assert key in written, key
    assert results["test"] == written["test"]


def test_the_teacher_and_its_logits_are_reused(distilled_run, teacher_recipe, tmp_path, caplog):
    _, _, arguments = distilled_run
    teacher_file = teacher_recipe.parent / "model" / "results.json"
    before = teacher_file.stat().st_mtime_ns
    caplog.set_level("INFO")
    results = train.main([*arguments, "--dendrites", "none", "--output_dir", str(tmp_path)])
    assert teacher_file.stat().st_mtime_ns == before, "the teacher was fine-tuned again"
    assert "teacher logits: computing" not in caplog.text and "teacher logits: reusing" in caplog.text
    assert results["config"]["dendrites"] is None and results["distillation"]["pool"]["size"] == 296


def test_a_missing_teacher_folder_is_named(tmp_path):
    missing = tmp_path / "no_teacher"
    with pytest.raises(FileNotFoundError, match="no_teacher"):
        train.main([DISTILLED, *STUDENT, "--teacher", str(missing), "--output_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_a_teacher_for_another_label_set_is_named(distilled_run, teacher_recipe, tmp_path):
    teacher = str(teacher_recipe.parent / "model")
    arguments = [DISTILLED, *STUDENT, "--task", "trec6", "--teacher", teacher, "--output_dir", str(tmp_path / "out")]
    with pytest.raises(ValueError, match="predicts 2 labels but the task has 6"):
        train.main(arguments)
    assert not (tmp_path / "out").exists()


def test_an_empty_unlabelled_file_is_named(distilled_run, teacher_recipe, tmp_path):
    empty = tmp_path / "empty_pool.txt"
    empty.write_text("\n")
    teacher = str(teacher_recipe.parent / "model")
    with pytest.raises(ValueError, match="empty_pool.txt holds no text"):
        train.main(
            [DISTILLED, *STUDENT, "--teacher", teacher, "--unlabeled_file", str(empty), "--output_dir", str(tmp_path)]
        )


def test_a_user_pool_file_replaces_the_builtin_one(distilled_run, teacher_recipe, tmp_path):
    pool = tmp_path / "pool.txt"
    pool.write_text("".join(f"my own unlabelled sentence {i}\n" for i in range(40)))
    teacher = str(teacher_recipe.parent / "model")
    arguments = [DISTILLED, *STUDENT_PLAIN, "--teacher", teacher, "--unlabeled_file", str(pool), "--dendrites", "none"]
    arguments += ["--num_train_epochs", "1"]
    results = train.main(
        [*arguments, "--teacher_logits_cache", str(tmp_path / "cache"), "--output_dir", str(tmp_path / "o")]
    )
    sources = results["distillation"]["pool"]["sources"]
    assert sources["unlabeled_file"]["read"] == 40 and sources["unlabeled_file"]["duplicate"] == 0
    assert "movie_dialog" not in sources and "task_train" in sources  # the task's own texts stay in
    assert results["distillation"]["teacher_recipe"] is None


def test_the_model_card_of_a_distilled_student_names_its_teacher(distilled_run, teacher_recipe):
    import hf_dendrites as hd
    from hf_dendrites.hub import model_card

    _, output, _ = distilled_run
    card = str(model_card(hd.from_pretrained(output), "user/distilled-student", results=output / "results.json"))
    teacher = teacher_recipe.parent / "model"
    assert f"Distilled from the teacher `{teacher}`" in card
    assert "α = 0.9, T = 2.0, on a pool of 296 texts (96 labelled)" in card


def test_a_teacher_folder_without_its_tokenizer_is_named(distilled_run, teacher_recipe, tmp_path):
    import shutil

    teacher = tmp_path / "teacher_without_tokenizer"
    shutil.copytree(teacher_recipe.parent / "model", teacher)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (teacher / name).unlink(missing_ok=True)
    arguments = [DISTILLED, *STUDENT, "--teacher", str(teacher), "--output_dir", str(tmp_path / "out")]
    with pytest.raises(ValueError, match="teacher_without_tokenizer has no tokenizer files"):
        train.main(arguments)
    assert not (tmp_path / "out").exists()
