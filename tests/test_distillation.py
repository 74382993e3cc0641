"""Distillation: the loss, trainers that distil (plain and with dendrites), and the teacher-logits cache."""

from __future__ import annotations

import math

import datasets
import pytest
import torch
from test_trainer import TRAIN, VALIDATION, dendrite_setup, training_args
from tiny_models import tiny_model
from transformers import Trainer

import hf_dendrites as hd
from experiments.metrics import build_compute_metrics
from experiments.teacher import add_teacher_logits, teacher_logits
from hf_dendrites import DistillationConfig, DistillationTrainer
from hf_dendrites.distillation import distillation_loss

# ---------------------------------------------------------------------- the loss


def softmax(values: list[float], temperature: float) -> list[float]:
    exps = [math.exp(v / temperature) for v in values]
    return [e / sum(exps) for e in exps]


def by_hand(student, teacher, labels, alpha, temperature) -> float:
    """The issue's formula, written out with Python floats."""
    kl = 0.0
    for s_row, t_row in zip(student, teacher):
        p, q = softmax(t_row, temperature), softmax(s_row, temperature)
        kl += sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))
    kl /= len(student)
    labelled = [(row, label) for row, label in zip(student, labels) if label != -100]
    ce = sum(-math.log(softmax(row, 1.0)[label]) for row, label in labelled) / len(labelled)
    return alpha * temperature**2 * kl + (1 - alpha) * ce


STUDENT = [[0.3, -1.2, 2.0], [1.5, 0.1, -0.4], [-0.7, 0.9, 0.2], [0.0, 0.0, 1.0]]
TEACHER = [[1.0, -2.0, 3.0], [2.5, -0.5, 0.0], [0.1, 0.2, -1.3], [-1.0, 2.0, 0.5]]
LABELS = [2, -100, 1, -100]


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_distillation_loss_is_the_formula(alpha, temperature):
    loss = distillation_loss(
        torch.tensor(STUDENT, dtype=torch.float64),
        torch.tensor(TEACHER, dtype=torch.float64),
        torch.tensor(LABELS),
        alpha=alpha,
        temperature=temperature,
    )
    assert loss.item() == pytest.approx(by_hand(STUDENT, TEACHER, LABELS, alpha, temperature), rel=1e-10)


def test_distillation_loss_without_labels_is_the_teacher_term_and_zero_at_the_teacher():
    student = torch.tensor(STUDENT)
    unlabelled = torch.full((4,), -100)
    alone = distillation_loss(student, torch.tensor(TEACHER), unlabelled, alpha=0.5, temperature=2.0)
    assert alone.item() == pytest.approx(
        0.5 * distillation_loss(student, torch.tensor(TEACHER), None, alpha=1.0, temperature=2.0).item()
    )
    assert distillation_loss(student, student.clone(), unlabelled, alpha=1.0).item() == pytest.approx(0.0, abs=1e-6)


def test_distillation_loss_names_a_label_mismatch():
    with pytest.raises(ValueError, match="teacher logits .* another label set"):
        distillation_loss(torch.zeros(2, 3), torch.zeros(2, 2))


@pytest.mark.parametrize(
    ("field", "value"), [("alpha", -0.1), ("alpha", 1.5), ("alpha", "0.5"), ("temperature", 0), ("temperature", -1.0)]
)
def test_bad_distillation_settings_are_named(field, value):
    with pytest.raises(ValueError, match=field):
        DistillationConfig(**{field: value})


# ---------------------------------------------------------------------- trainers


def with_teacher_logits(dataset: datasets.Dataset, teacher: torch.nn.Module) -> datasets.Dataset:
    with torch.no_grad():
        ids = torch.tensor(dataset["input_ids"])
        logits = teacher(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    # half the rows keep their label, the others are unlabelled pool rows
    labels = [label if row % 2 == 0 else -100 for row, label in enumerate(dataset["labels"])]
    return dataset.remove_columns("labels").add_column("labels", labels).add_column("teacher_logits", logits.tolist())


@pytest.fixture(scope="module")
def distilled_train():
    return with_teacher_logits(TRAIN, tiny_model(num_labels=2, seed=7))


def test_distillation_trainer_trains_on_the_distillation_loss(tmp_path, distilled_train):
    config = DistillationConfig(alpha=0.7, temperature=3.0)
    trainer = DistillationTrainer(
        tiny_model(num_labels=2),
        training_args(tmp_path, max_steps=2, save_strategy="no", eval_strategy="no"),
        train_dataset=distilled_train,
        distillation=config,
    )
    batch = trainer.data_collator([distilled_train[i] for i in range(8)])
    assert "teacher_logits" in batch
    model = trainer.model
    expected = distillation_loss(
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
        batch["teacher_logits"],
        batch["labels"],
        alpha=0.7,
        temperature=3.0,
    )
    assert trainer.compute_loss(model, dict(batch)).item() == pytest.approx(expected.item(), rel=1e-6)
    before = [p.detach().clone() for p in model.parameters()]
    trainer.train()  # the teacher_logits column survives the Trainer's unused-column removal
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_evaluation_without_teacher_logits_uses_the_labels(tmp_path, distilled_train):
    trainer = DistillationTrainer(
        tiny_model(num_labels=2),
        training_args(tmp_path, save_strategy="no"),
        train_dataset=distilled_train,
        eval_dataset=VALIDATION,
        compute_metrics=build_compute_metrics(["accuracy"]),
    )
    plain = Trainer(tiny_model(num_labels=2), training_args(tmp_path / "plain", save_strategy="no", eval_strategy="no"))
    ids = torch.tensor(VALIDATION["input_ids"][:8])
    inputs = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": torch.tensor(VALIDATION["labels"][:8]),
    }
    assert trainer.compute_loss(trainer.model, dict(inputs)).item() == pytest.approx(
        plain.compute_loss(plain.model, dict(inputs)).item()
    )
    assert 0.0 <= trainer.evaluate()["eval_accuracy"] <= 1.0


def test_distillation_without_teacher_logits_is_refused(tmp_path):
    trainer = DistillationTrainer(
        tiny_model(num_labels=2), training_args(tmp_path, eval_strategy="no", save_strategy="no"), train_dataset=TRAIN
    )
    with pytest.raises(ValueError, match="teacher_logits"):
        trainer.train()


def test_dendrite_trainer_distils_and_grows(tmp_path, distilled_train):
    trainer = hd.DistilledDendriteTrainer(
        tiny_model(num_labels=2),
        training_args(tmp_path),
        train_dataset=distilled_train,
        eval_dataset=VALIDATION,
        compute_metrics=build_compute_metrics(["accuracy"]),
        **dendrite_setup(improvement_threshold_abs=10.0, max_dendrites=1),
        distillation=DistillationConfig(alpha=1.0),
    )
    seen = []
    original = trainer.compute_loss

    def spy(model, inputs, *args, **kwargs):
        seen.append("teacher_logits" in inputs and model.training)
        return original(model, inputs, *args, **kwargs)

    trainer.compute_loss = spy
    trainer.train()
    actions = [record["action"] for record in trainer.tracker.history]
    assert "grow" in actions
    grown = [r for r in trainer.tracker.history if r["action"] == "grow"]
    assert all(r["candidate_score"] > 0 for r in grown)
    assert sum(seen) == trainer.state.global_step  # every training step, both phases, distilled


def test_distillation_is_its_own_trainer_and_composes_with_dendrites():
    from transformers import Trainer

    assert hd.DendriteTrainer.__bases__ == (Trainer,)  # no distillation inside the dendrite trainer
    assert hd.DistilledDendriteTrainer.__mro__[1:3] == (DistillationTrainer, hd.DendriteTrainer)


def test_the_deprecated_distillation_keyword_builds_the_composed_trainer(tmp_path, distilled_train):
    with pytest.warns(FutureWarning, match=r"DistilledDendriteTrainer\(\.\.\., distillation=\.\.\.\)"):
        trainer = hd.DendriteTrainer(
            tiny_model(num_labels=2),
            training_args(tmp_path, save_strategy="no"),
            train_dataset=distilled_train,
            eval_dataset=VALIDATION,
            **dendrite_setup(),
            distillation=DistillationConfig(alpha=0.5),
        )
    assert isinstance(trainer, DistillationTrainer) and isinstance(trainer, hd.DendriteTrainer)
    assert trainer.distillation.alpha == 0.5 and trainer.dendrite_args.patience == 1
    plain = hd.DendriteTrainer(
        tiny_model(num_labels=2),
        training_args(tmp_path, save_strategy="no"),
        train_dataset=TRAIN,
        eval_dataset=VALIDATION,
        **dendrite_setup(),
    )
    assert not isinstance(plain, DistillationTrainer)


# ---------------------------------------------------------------------- the teacher-logits cache


class CountingTeacher(torch.nn.Module):
    """A tiny BERT that counts its forward calls."""

    def __init__(self, seed: int = 0):
        super().__init__()
        self.inner = tiny_model(num_labels=2, seed=seed)
        self.config = self.inner.config
        self.calls = 0

    def forward(self, **batch):
        self.calls += 1
        return self.inner(**batch)


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from experiments.pretrained import resolve_model

    path, _ = resolve_model("minilm-l2")
    return AutoTokenizer.from_pretrained(path)


TEXTS = ["a fine film", "dull and long", "what a ride", "not for me", "the cast shines", "twenty words"]


def small_vocabulary_teacher(seed: int = 0) -> CountingTeacher:
    teacher = CountingTeacher(seed)
    teacher.inner.resize_token_embeddings(31000)  # the MiniLM tokenizer's ids
    return teacher


def test_teacher_logits_are_cached_and_reused(tmp_path, tokenizer):
    teacher = small_vocabulary_teacher()
    first = teacher_logits(teacher, tokenizer, TEXTS, max_length=16, cache_dir=tmp_path, batch_size=4)
    calls = teacher.calls
    assert calls == 2 and first.shape == (6, 2)
    again = teacher_logits(teacher, tokenizer, TEXTS, max_length=16, cache_dir=tmp_path, batch_size=4)
    assert teacher.calls == calls, "the cached logits must be read, not recomputed"
    assert (again == first).all()
    direct = teacher.inner(**tokenizer(TEXTS[:1], return_tensors="pt")).logits.detach().numpy()
    assert abs(first[0] - direct[0]).max() < 1e-5


def test_teacher_logits_cache_is_invalidated_by_what_they_depend_on(tmp_path, tokenizer):
    teacher = small_vocabulary_teacher()
    teacher_logits(teacher, tokenizer, TEXTS, max_length=16, cache_dir=tmp_path)
    calls = teacher.calls
    teacher_logits(teacher, tokenizer, TEXTS, max_length=8, cache_dir=tmp_path)  # tokenizer settings
    assert teacher.calls == calls + 1
    with torch.no_grad():
        teacher.inner.classifier.weight.add_(0.1)  # another teacher
    teacher_logits(teacher, tokenizer, TEXTS, max_length=16, cache_dir=tmp_path)
    assert teacher.calls == calls + 2
    teacher_logits(teacher, tokenizer, TEXTS[:-1], max_length=16, cache_dir=tmp_path)  # another pool
    assert teacher.calls == calls + 3
    lowercase = type(tokenizer).from_pretrained(tokenizer.name_or_path, do_lower_case=False)
    teacher_logits(teacher, lowercase, TEXTS, max_length=16, cache_dir=tmp_path)  # another tokenizer
    assert teacher.calls == calls + 4
    assert len(list(tmp_path.iterdir())) == 5 and not list(tmp_path.glob(".*"))


def test_add_teacher_logits_adds_a_column(tmp_path, tokenizer):
    dataset = datasets.Dataset.from_dict({"text": TEXTS, "label": [0, 1, -100, -100, 1, 0]})
    with_logits = add_teacher_logits(dataset, small_vocabulary_teacher(), tokenizer, max_length=16, cache_dir=tmp_path)
    assert with_logits.column_names == ["text", "label", "teacher_logits"]
    assert len(with_logits[0]["teacher_logits"]) == 2
    with pytest.raises(ValueError, match="'sentence'"):
        add_teacher_logits(dataset, small_vocabulary_teacher(), tokenizer, max_length=16, text_column="sentence")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"temperature": 0.0}, "temperature must be a positive number"),
        ({"alpha": 1.5}, r"alpha must be a number in \[0, 1\]"),
    ],
)
def test_distillation_loss_refuses_settings_the_config_refuses(settings, message):
    student, teacher = torch.randn(3, 2), torch.randn(3, 2)
    with pytest.raises(ValueError, match=message):
        distillation_loss(student, teacher, torch.tensor([0, 1, 0]), **settings)


def test_a_teacher_logit_that_is_not_finite_is_refused_naming_its_row():
    student, teacher = torch.randn(3, 2), torch.randn(3, 2)
    teacher[2, 1] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or inf in row\(s\) \[2\]"):
        distillation_loss(student, teacher, torch.tensor([0, 1, 0]))


def test_a_labels_only_loss_on_an_unlabelled_batch_is_zero_and_backpropagates():
    student = torch.randn(3, 2, requires_grad=True)
    loss = distillation_loss(student, torch.randn(3, 2), torch.full((3,), -100), alpha=0.0)
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(student.grad, torch.zeros(3, 2))


@pytest.mark.parametrize(
    ("sizes", "message"),
    [((2, 3), r"rows of \[2, 3\] values"), ((3, 3), "has 3 values a row but the model has 2 labels")],
)
def test_ragged_or_other_sized_teacher_logits_are_refused_before_training(tmp_path, sizes, message):
    logits = [[0.5] * sizes[row % 2] for row in range(len(TRAIN))]
    train = TRAIN.add_column("teacher_logits", logits)
    trainer = DistillationTrainer(
        tiny_model(num_labels=2),
        training_args(tmp_path, eval_strategy="no", save_strategy="no"),
        train_dataset=train,
        distillation=DistillationConfig(),
    )
    with pytest.raises(ValueError, match=message):
        trainer.train()
    assert trainer.state.global_step == 0
