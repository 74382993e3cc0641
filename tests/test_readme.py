"""The README's "In code" snippet runs as written, on a tiny model and a tiny task."""

from __future__ import annotations

import re
from pathlib import Path

from test_trainer import TRAIN, VALIDATION
from tiny_models import tiny_model

import hf_dendrites as hd

README = Path(__file__).resolve().parents[1] / "README.md"


def in_code_snippet(name: str = "in-code") -> str:
    text = README.read_text(encoding="utf-8")
    block = re.search(rf"<!-- {name}:start -->\s*```python\n(.*?)```\s*<!-- {name}:end -->", text, re.S)
    assert block, f"README has no {name} snippet between the markers"
    return block.group(1)


def test_readme_snippet_trains_grows_saves_and_loads(tmp_path, monkeypatch):
    model_path = tmp_path / "tiny"
    tiny_model(num_labels=2).save_pretrained(model_path)
    monkeypatch.chdir(tmp_path)
    namespace = {"model_path": str(model_path), "train": TRAIN, "validation": VALIDATION}
    exec(compile(in_code_snippet(), "README.md", "exec"), namespace)
    trainer, model = namespace["trainer"], namespace["model"]
    assert any(record["action"] == "grow" for record in trainer.tracker.history)
    assert (tmp_path / "out" / "dendrite_history.png").exists()
    assert hd.num_dendrites(model) == hd.num_dendrites(trainer.model)
    assert trainer.evaluate()["eval_accuracy"] == trainer.tracker.best_score


def test_readme_tables_match_the_committed_results():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "benchmarks.update_readme", "--check"], cwd=README.parent)
    assert result.returncode == 0, "benchmarks/README.md tables are stale: run python -m benchmarks.update_readme"


def test_the_readme_serves_users_first():
    """Install to a DendriteTrainer in code within the first 100 lines; the studies live in benchmarks/README.md."""
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 350
    first = "\n".join(lines[:100])
    assert "bash scripts/setup.sh" in first and "DendriteTrainer(" in first
    assert "<!-- " not in "".join(line for line in lines if ":start -->" in line and "-code:" not in line)
    links = {"benchmarks/README.md", "docs/guide.md"}
    assert all(f"]({link})" in "\n".join(lines) for link in links)
    assert all((README.parent / link).is_file() for link in links)


def test_the_example_model_card_matches_the_template_and_the_committed_run():
    import subprocess
    import sys

    result = subprocess.run([sys.executable, "-m", "benchmarks.example_card", "--check"], cwd=README.parent)
    assert result.returncode == 0, (
        "model_cards/example_movie_reviews_pb.md is stale: run python -m benchmarks.example_card"
    )


def test_readme_compression_snippet_builds_both_compressed_models():
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    shape = {"hidden_size": 384, "num_attention_heads": 12, "intermediate_size": 1536, "num_hidden_layers": 2}
    model = BertForSequenceClassification(BertConfig(vocab_size=500, num_labels=2, **shape))  # MiniLM-L2's shape
    namespace = {"model": model}
    exec(compile(in_code_snippet("compression-code"), "README.md", "exec"), namespace)
    small, summing = namespace["small"], namespace["summing"]
    assert (small.config.hidden_size, small.config.num_attention_heads, small.config.intermediate_size) == (64, 2, 256)
    assert set(hd.dendrite_layers(summing)) == {"hidden.0.dense", "classifier"}
    input_ids = torch.randint(5, 500, (3, 7))
    assert small(input_ids=input_ids).logits.shape == summing(input_ids=input_ids).logits.shape == (3, 2)


def test_readme_distillation_snippet_distils_with_dendrites(tmp_path, monkeypatch):
    import datasets
    from test_distillation import small_vocabulary_teacher
    from test_trainer import dendrite_setup, training_args
    from transformers import AutoTokenizer

    import experiments.unlabeled
    from experiments.metrics import build_compute_metrics
    from experiments.pretrained import resolve_model

    texts = [f"sentence number {i} about a film" for i in range(40)]
    task_data = datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict({"text": rows, "label": [i % 2 for i in range(len(rows))]})
            for split, rows in (("train", texts[:16]), ("validation", texts[16:24]), ("test", texts[24:32]))
        }
    )
    unlabeled = {"lines": texts[16:] + [f"an unlabelled line, number {i}" for i in range(48)]}
    monkeypatch.setattr(experiments.unlabeled, "builtin_unlabeled_texts", lambda: unlabeled)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("minilm-l2")[0])
    student = small_vocabulary_teacher(seed=1).inner
    validation = task_data["validation"].map(lambda rows: tokenizer(rows["text"]), batched=True)
    namespace = {
        "task_data": task_data,
        "teacher": small_vocabulary_teacher(seed=2).inner,
        "tokenizer": tokenizer,
        "student": student,
        "args": training_args(tmp_path / "out", max_steps=24),
        "validation": validation.remove_columns("text").rename_column("label", "labels"),
        "compute_metrics": build_compute_metrics(["accuracy"]),
    }
    monkeypatch.chdir(tmp_path)
    snippet = in_code_snippet("distillation-code").replace(
        "dendrite_config=hd.DendriteConfig(),", "**dendrite_setup(improvement_threshold_abs=10.0),"
    )
    assert "dendrite_setup" in snippet
    scope = {**namespace, "dendrite_setup": dendrite_setup}
    exec(compile(snippet, "README.md", "exec"), scope)
    record, trainer = scope["record"], scope["trainer"]
    held_out = set(texts[16:32])
    assert record["labeled"] == 16 and not held_out & set(scope["pool"]["text"])
    assert len(scope["train"][0]["teacher_logits"]) == 2
    assert any(entry["action"] == "grow" for entry in trainer.tracker.history)
    assert list((tmp_path / "runs" / "teacher_logits").iterdir()), "the teacher logits were not cached"


def test_readme_lora_snippet_trains_saves_restores_and_merges(tmp_path, monkeypatch):
    import torch
    from tiny_models import token_batch
    from transformers import TrainingArguments

    from experiments.metrics import build_compute_metrics

    monkeypatch.chdir(tmp_path)
    args = TrainingArguments(
        output_dir="out/run", max_steps=40, per_device_train_batch_size=16, learning_rate=5e-3,
        eval_strategy="steps", eval_steps=4, save_strategy="no", metric_for_best_model="accuracy",
        report_to=[], use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    namespace = {
        "hd": hd, "base": tiny_model(num_labels=2), "fresh_base": tiny_model(num_labels=2), "args": args,
        "train": TRAIN, "validation": VALIDATION, "metrics": build_compute_metrics(["accuracy"]),
    }  # fmt: skip
    snippet = in_code_snippet("lora-code")
    before_merge = snippet.split("merged = ")[0]
    exec(compile(before_merge, "README.md", "exec"), namespace)
    lora, restored = namespace["lora"], namespace["restored"]
    assert any(record["action"] == "grow" for record in namespace["trainer"].tracker.history)
    batch = token_batch()
    with torch.no_grad():
        expected = lora.eval()(**batch).logits
        assert torch.equal(restored(**batch).logits, expected)
    exec(compile("merged = " + snippet.split("merged = ")[1], "README.md", "exec"), namespace)
    merged = namespace["merged"]
    assert hd.num_dendrites(merged) == hd.num_dendrites(lora)
    with torch.no_grad():
        assert torch.allclose(merged.eval()(**batch).logits, expected, atol=1e-5)
