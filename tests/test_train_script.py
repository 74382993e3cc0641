"""scripts/train.py end to end on tiny slices of the offline datasets, and its input checks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from script_modules import load_script

import hf_dendrites as hd
from experiments import pretrained

ROOT = Path(__file__).resolve().parents[1]


train = load_script("train")

# a tiny plain run: few rows, short sequences, two epochs, one evaluation per phase
TINY_PLAIN = [
    "--max_train_samples",
    "96",
    "--max_eval_samples",
    "64",
    "--max_test_samples",
    "64",
    "--max_seq_length",
    "32",
    "--num_train_epochs",
    "2",
    "--per_device_train_batch_size",
    "16",
    "--learning_rate",
    "1e-4",
    "--patience",
    "1",
    "--min_evals_per_phase",
    "1",
    "--max_dendrites",
    "1",
    "--save_strategy",
    "no",
]
# the same with dendrites: a few candidate epochs on a small cache, since the cached learner's full-batch
# fit of MiniLM's 14 layers at the defaults (50 epochs, 8,192 rows) would take most of each test's time
SMALL_CANDIDATE_PHASE = ["--candidate_epochs", "3", "--candidate_cache_rows", "512"]
TINY = [*TINY_PLAIN, *SMALL_CANDIDATE_PHASE]


@pytest.mark.parametrize(
    ("recipe", "task", "labels"),
    [("movie_reviews.yaml", "movie_reviews", 2), ("trec6.yaml", "trec6", 6), ("sms_spam.yaml", "sms_spam", 2)],
)
def test_recipe_runs_end_to_end_and_writes_complete_results(tmp_path, recipe, task, labels, capsys, caplog):
    caplog.set_level("INFO", logger="train")
    results = train.main([str(ROOT / "configs" / recipe), *TINY, "--output_dir", str(tmp_path)])
    # the shipped MiniLM truncated to 2 layers is one line, not transformers' table of unused keys
    printed = capsys.readouterr()
    assert "LOAD REPORT" not in printed.err
    assert f"minilm-l2: MiniLM-L6 -> first 2 layers, 15.6M parameters; new classifier head ({labels} labels)" in (
        caplog.text
    )
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["config"]["data"]["task"] == task
    for key in ("validation", "test", "parameters", "dendrites_per_layer", "epochs", "seconds", "config", "versions"):
        assert key in written, key
    for split in ("validation", "test"):
        assert set(written[split]) == {"accuracy", "macro_f1", "matthews_correlation"}
        # accuracy over exactly the 64 examples --max_eval_samples/--max_test_samples keep: k correct of 64
        correct_of_64 = written[split]["accuracy"] * 64
        assert 0 <= round(correct_of_64) <= 64 and correct_of_64 == pytest.approx(round(correct_of_64), abs=1e-9)
    parameters = written["parameters"]
    assert parameters["total"] == parameters["base"] + parameters["dendrites"]
    assert written["dendrites_per_layer"] and set(written["dendrites_per_layer"].values()) <= {0, 1}
    assert written["epochs"] > 0 and written["seconds"] > 0
    assert results["test"] == written["test"]
    # per-example test outcomes, for paired comparisons between runs
    assert len(written["test_predictions"]) == len(written["test_labels"]) == 64
    correct = sum(p == y for p, y in zip(written["test_predictions"], written["test_labels"]))
    assert correct / 64 == pytest.approx(written["test"]["accuracy"])
    assert (tmp_path / "dendrite_history.png").exists()
    model = hd.from_pretrained(tmp_path)
    assert model.config.num_labels == labels and model.config.num_hidden_layers == 2
    table = printed.out
    assert "validation" in table and "parameters:" in table
    assert "dendrites: grown" in table and f"growth plot: {tmp_path / 'dendrite_history.png'}" in table


def test_baseline_has_no_dendrites(tmp_path):
    results = train.main(
        [str(ROOT / "configs" / "movie_reviews_baseline.yaml"), *TINY_PLAIN, "--output_dir", str(tmp_path)]
    )
    assert results["parameters"]["dendrites"] == 0 and results["config"]["dendrites"] is None
    assert results["parameters"]["total"] == results["parameters"]["base"]
    assert [round(entry["epoch"]) for entry in results["evaluations"]] == [1, 2]  # one per epoch, with metrics
    # each epoch's accuracy is k correct of the 64 validation examples kept
    for entry in results["evaluations"]:
        correct_of_64 = entry["accuracy"] * 64
        assert 0 <= round(correct_of_64) <= 64 and correct_of_64 == pytest.approx(round(correct_of_64), abs=1e-9)


def test_unknown_yaml_key_is_named(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("task: trec6\nnum_candidate: 3\n")
    with pytest.raises(ValueError, match="num_candidate"):
        train.parse_arguments([str(recipe)])


def test_bad_yaml_value_is_named(tmp_path, capsys):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("task: trec6\nnum_candidates: many\n")
    with pytest.raises(SystemExit):
        train.parse_arguments([str(recipe)])
    assert "--num_candidates" in capsys.readouterr().err


def test_patience_is_the_growth_stall_and_early_stopping_has_its_own_flag(tmp_path):
    recipe = str(ROOT / "configs" / "trec6.yaml")  # patience: 2, a PB recipe

    def checked(*flags: str) -> Any:
        model_args, _, _, dendrite_args, distill_args = train.parse_arguments([recipe, *flags])
        config = train.dendrite_config_from(dendrite_args)
        train.check_run_arguments(model_args, dendrite_args, distill_args, config, train.recipe_keys([recipe]))
        return dendrite_args

    assert train.early_stopping_patience(checked("--dendrites", "none")) == 2  # the recipe's plain run waits as long
    assert train.early_stopping_patience(checked("--dendrites", "none", "--early_stopping_patience", "7")) == 7
    assert train.training_arguments_from(checked("--dendrites", "pb")).patience == 2
    assert train.early_stopping_patience(checked("--dendrites", "none", "--restart_on_plateau", "true")) == 2
    with pytest.raises(ValueError, match="--early_stopping_patience is the plain run's early stopping"):
        checked("--dendrites", "pb", "--early_stopping_patience", "7")
    with pytest.raises(ValueError, match="--early_stopping_patience must be >= 1"):
        checked("--dendrites", "none", "--early_stopping_patience", "0")


def test_invalid_dendrite_value_is_named(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("task: trec6\nactivation: swish\n")
    arguments = train.parse_arguments([str(recipe)])
    with pytest.raises(ValueError, match="activation"):
        train.dendrite_config_from(arguments[3])


def test_flags_override_the_recipe_and_targets_take_a_regex():
    arguments = train.parse_arguments(
        [
            str(ROOT / "configs" / "movie_reviews.yaml"),
            "--num_train_epochs",
            "1",
            "--target_modules",
            r".*\.(query|value)",
        ]
    )
    model_args, data_args, training_args, dendrite_args, _ = arguments
    assert training_args.num_train_epochs == 1 and model_args.model_name_or_path == "minilm-l2"
    assert train.dendrite_config_from(dendrite_args).target_modules == r".*\.(query|value)"
    listed = train.parse_arguments(["--target_modules", "query", "value"])[3]
    assert train.dendrite_config_from(listed).target_modules == ["query", "value"]


@pytest.mark.parametrize(
    ("recipe", "architecture", "hidden"),
    [("movie_reviews_summing.yaml", "summing_network", None), ("trec6_narrowed.yaml", "narrowed", 64)],
)
def test_compressed_recipes_run_end_to_end(tmp_path, recipe, architecture, hidden):
    results = train.main([str(ROOT / "configs" / recipe), *TINY, "--output_dir", str(tmp_path)])
    compression = json.loads((tmp_path / "results.json").read_text())["compression"]
    assert compression["architecture"] == architecture
    reference = compression["reference"]
    assert reference["name"] == "minilm-l2" and reference["parameters"] > 15_000_000
    assert results["parameters"]["total"] < 0.25 * reference["parameters"]
    model = hd.from_pretrained(tmp_path)
    if hidden is None:
        assert type(model).__name__ == "SummingNetworkForSequenceClassification"
        assert set(hd.dendrite_layers(model)) == {"hidden.0.dense", "classifier"}
    else:
        assert model.config.hidden_size == hidden and model.config.num_attention_heads == 2


@pytest.mark.parametrize(
    ("flag", "value"), [("architecture", "pyramid"), ("narrow_init", "middle"), ("pooling", "max")]
)
def test_bad_compression_choice_is_named(tmp_path, flag, value):
    arguments = train.parse_arguments([str(ROOT / "configs" / "movie_reviews_summing.yaml"), f"--{flag}", value])
    with pytest.raises(ValueError, match=f"--{flag} must be one of"):
        train.check_model_arguments(arguments[0])


@pytest.mark.parametrize(
    ("recipe_text", "message"),
    [
        ("num_train_epochs: [1, 2]\n", r"bad.yaml: num_train_epochs takes one value, got the list \[1, 2\]"),
        ("eval_strategy: no\n", r"eval_strategy: YAML reads an unquoted false/no/off as the boolean False; quote"),
        ("num_candidate: 3\n", r"unknown key 'num_candidate' \(did you mean num_candidates"),
    ],
)
def test_recipe_mistakes_are_named_as_such(tmp_path, recipe_text, message):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("task: trec6\n" + recipe_text)
    with pytest.raises(ValueError, match=message):
        train.parse_arguments([str(recipe)])


def test_quoted_no_and_yaml_booleans_for_boolean_flags_are_accepted(tmp_path):
    recipe = tmp_path / "good.yaml"
    recipe.write_text('eval_strategy: "no"\ndataloader_pin_memory: false\nhidden_sizes: [32, 16]\n')
    model_args, _, training_args, *_ = train.parse_arguments([str(recipe)])
    assert training_args.eval_strategy == "no" and training_args.dataloader_pin_memory is False
    assert model_args.hidden_sizes == [32, 16]


def test_a_json_recipe_works_and_a_missing_one_is_named(tmp_path):
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"task": "trec6", "num_train_epochs": 2}))
    assert train.parse_arguments([str(recipe)])[2].num_train_epochs == 2
    with pytest.raises(FileNotFoundError, match="recipe '.*missing.json' not found"):
        train.parse_arguments([str(tmp_path / "missing.json")])
    with pytest.raises(ValueError, match=r"expected a \.yaml/\.yml/\.json file"):
        train.parse_arguments([str(tmp_path / "recipe.txt")])


@pytest.mark.parametrize("flag", ["max_train_samples", "max_eval_samples", "max_test_samples"])
def test_zero_examples_is_refused_by_name(flag):
    with pytest.raises(ValueError, match=f"--{flag} must be a positive number of examples"):
        train.parse_arguments([f"--{flag}", "0"])


@pytest.mark.parametrize("path", ["runs/no-such-model", "./no-such-model", "/tmp/no/such/model"])
def test_a_missing_model_folder_is_named(tmp_path, monkeypatch, path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(FileNotFoundError, match=f"model '{path}' is not a local folder"):
        pretrained.resolve_model(path)


def test_the_script_prints_a_recipe_mistake_as_one_line(tmp_path):
    import subprocess
    import sys

    recipe = tmp_path / "bad.yaml"
    recipe.write_text("eval_strategy: no\n")
    completed = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train.py"), str(recipe)], capture_output=True, text=True, timeout=300
    )
    assert completed.returncode != 0
    assert completed.stderr.strip().splitlines()[-1].startswith("train.py: error: ")
    assert "Traceback" not in completed.stderr


@pytest.mark.parametrize("flags", [["--restart_at_epochs", "2"], ["--restart_on_plateau", "true"]])
def test_restarts_are_for_plain_runs_only(flags):
    with pytest.raises(ValueError, match="--restart_at_epochs and --restart_on_plateau are for plain runs"):
        train.main(["--dendrites", "pb", *flags, "--output_dir", "unused"])
    with pytest.raises(ValueError, match="not both"):
        train.main(
            ["--dendrites", "none", "--restart_at_epochs", "2", "--restart_on_plateau", "true", "--output_dir", "x"]
        )


def test_plain_restarts_on_plateau_follow_the_growth_settings(tmp_path):
    recipe = str(ROOT / "configs" / "movie_reviews_baseline.yaml")
    flags = ["--restart_on_plateau", "true", "--max_tries", "0", "--num_train_epochs", "6"]
    results = train.main([recipe, *TINY_PLAIN, *flags, "--output_dir", str(tmp_path)])  # patience 1, max_dendrites 1
    assert results["completed_reason"] and results["parameters"]["dendrites"] == 0
    assert len(results["restarts"]) <= 1  # one restart, and no retry of one that did not help


def test_the_plain_holdout_control_trains_on_what_the_neuron_phases_see(tmp_path):
    recipe = str(ROOT / "configs" / "movie_reviews_baseline.yaml")
    results = train.main([recipe, *TINY_PLAIN, "--candidate_holdout_fraction", "0.25", "--output_dir", str(tmp_path)])
    assert results["holdout"] == {"fraction": 0.25, "train": 72, "held_out": 24}


def test_progress_bars_follow_the_terminal_unless_a_flag_decides(monkeypatch):
    recipe = str(ROOT / "configs" / "movie_reviews.yaml")
    monkeypatch.setattr(train.sys.stderr, "isatty", lambda: True)
    assert train.parse_arguments([recipe])[2].disable_tqdm is False
    monkeypatch.setattr(train.sys.stderr, "isatty", lambda: False)
    assert train.parse_arguments([recipe])[2].disable_tqdm is True
    assert train.parse_arguments([recipe, "--disable_tqdm", "false"])[2].disable_tqdm is False


def test_the_lora_recipe_trains_lora_and_dendrites_and_saves_both(tmp_path):
    from transformers import AutoModelForSequenceClassification

    recipe = str(ROOT / "configs" / "movie_reviews_lora.yaml")
    results = train.main([recipe, *TINY, "--lora_r", "4", "--output_dir", str(tmp_path)])
    parameters = results["parameters"]
    assert 0 < parameters["trainable"] < parameters["base"] / 10  # LoRA, the head and the dendrites only
    assert results["config"]["model"]["lora_r"] == 4
    assert (tmp_path / "adapter_model.safetensors").is_file() and (tmp_path / "dendrites.safetensors").is_file()
    path, overrides = pretrained.resolve_model("minilm-l2")
    base = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, **overrides)
    model = hd.from_pretrained(tmp_path, base_model=base)
    assert hd.num_dendrites(model) == max(results["dendrites_per_layer"].values())


def test_the_knock_out_scores_the_trained_model_with_its_dendrites_off(tmp_path):
    from test_model import grown_with_output_weights
    from test_trainer import VALIDATION
    from transformers import Trainer, TrainingArguments

    from experiments.metrics import build_compute_metrics

    model = grown_with_output_weights()
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, compute_metrics=build_compute_metrics(["accuracy"]))
    with_dendrites = trainer.predict(VALIDATION).predictions.argmax(-1)
    knocked_out = train.metrics_without_dendrites(trainer, VALIDATION)
    with hd.disable_dendrites(model):
        without = trainer.predict(VALIDATION).predictions.argmax(-1)
    assert (with_dendrites != without).any()  # the dendrites carry part of these predictions
    labels = VALIDATION["labels"]
    assert knocked_out == {"accuracy": pytest.approx(sum(p == y for p, y in zip(without, labels)) / len(labels))}
    assert (trainer.predict(VALIDATION).predictions.argmax(-1) == with_dendrites).all()  # dendrites back on


def test_every_benchmark_method_and_growth_variant_is_a_valid_training_command():
    import benchmarks.growth as growth
    import benchmarks.tasks as tasks

    commands = {**tasks.METHOD_FLAGS, **growth.VARIANTS, "restarts": [*growth.RESTARTS, "3", "7"]}
    configs, growth_settings = {}, {}
    for name, flags in commands.items():
        arguments = train.parse_arguments([str(ROOT / "configs" / "trec6.yaml"), *flags])
        configs[name] = train.dendrite_config_from(arguments[3])
        growth_settings[name] = train.training_arguments_from(arguments[3])
    assert configs["pb"].mode == "pb" and configs["baseline"] is None
    # the kept-state variants say so whichever the option's default is
    assert growth_settings["pb_keep_optimizer"].reset_optimizer_on_growth is False
    assert growth_settings["gd_keep_optimizer"].reset_optimizer_on_growth is False
    assert growth_settings["pb_holdout0.2"].candidate_holdout_fraction == 0.2


@pytest.mark.parametrize("length", ["0", "-4"])
def test_a_max_seq_length_below_two_tokens_is_refused_by_name(length):
    with pytest.raises(ValueError, match=f"--max_seq_length must be at least 2 tokens, got {length}"):
        train.parse_arguments(["--max_seq_length", length])


def test_a_recipe_key_given_twice_is_refused_naming_it_and_its_line(tmp_path):
    recipe = tmp_path / "twice.yaml"
    recipe.write_text("task: trec6\nlearning_rate: 1e-4\nseed: 1\nlearning_rate: 5e-5\n")
    with pytest.raises(ValueError, match=r"the key 'learning_rate' is given twice \(line 4\)"):
        train.parse_arguments([str(recipe)])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--dendrites", "none", "--error_signal", "feedback_alignment"],
            "--error_signal has no effect with --dendrites none",
        ),
        (["--dendrites", "none", "--dendrite_rank", "4"], "--dendrite_rank has no effect with --dendrites none"),
        (
            ["--dendrites", "gd", "--error_signal", "forward_forward"],
            "--error_signal forward_forward has no effect with --dendrites gd",
        ),
        (["--distill_alpha", "0.5"], "--distill_alpha has no effect without --teacher"),
    ],
)
def test_a_flag_the_run_would_ignore_is_refused_by_name(flags, message):
    with pytest.raises(ValueError, match=message):
        train.main([*flags, "--output_dir", "unused"])


def test_a_recipes_own_candidate_settings_do_not_stop_its_plain_run(tmp_path):
    recipe = tmp_path / "phase.yaml"
    recipe.write_text("task: trec6\ndendrites: pb\ncandidate_epochs: 10\ncandidate_cache_rows: 2048\n")

    def check(*flags: str) -> None:
        model_args, _, _, dendrite_args, distill_args = train.parse_arguments([str(recipe), *flags])
        config = train.dendrite_config_from(dendrite_args)
        train.check_run_arguments(model_args, dendrite_args, distill_args, config, train.recipe_keys([str(recipe)]))

    check("--dendrites", "none")  # the recipe's phase is for its dendrite runs
    with pytest.raises(ValueError, match="--candidate_epochs has no effect with --dendrites none"):
        check("--dendrites", "none", "--candidate_epochs", "5")  # asked for on the command line


def test_resume_from_checkpoint_true_means_the_newest_checkpoint_not_a_folder_named_true(tmp_path):
    assert train.resume_target("true") is True and train.resume_target("True") is True
    assert train.resume_target(None) is None and train.resume_target("false") is None
    assert train.resume_target(str(tmp_path)) == str(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"--resume_from_checkpoint 'no/such/checkpoint' is not a folder"):
        train.main(["--resume_from_checkpoint", "no/such/checkpoint", "--output_dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
