"""Knowledge distillation: train a student against a teacher's logits, with or without dendrites.

A small student trained on a few thousand labelled sentences fits them within a few epochs, after
which its remaining errors are mostly memorised noise, which is not what a dendrite can learn. A
teacher that labels abundant unlabelled text gives the student a function to match everywhere, so
what the student still gets wrong is a shortfall of capacity: systematic, and learnable.

    loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
           + (1 - alpha) * cross-entropy(student, label)      (mean over the examples that have a label)

The teacher's logits are a `teacher_logits` column of the training set, computed once
(`experiments.teacher.add_teacher_logits` in this repository, cached on disk; any function that adds
the column will do), so no training step runs the teacher.
Rows without a label carry `labels = -100`. Evaluation sets need no teacher column: without it the
loss is the model's own (cross-entropy on the labels), and metrics are computed as usual.

`DistillationTrainer` is a `Trainer` with this loss. It composes with any other `Trainer`
subclass by inheritance, `DistillationTrainer` first: `DistilledDendriteTrainer` (trainer.py) is
`(DistillationTrainer, DendriteTrainer)` and grows dendrites on the same loss (their candidates then
learn from the distillation loss's error); `class Mine(DistillationTrainer, MyTrainer)` does the same
for a trainer of your own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback

TEACHER_LOGITS = "teacher_logits"
IGNORE_INDEX = -100


@dataclass
class DistillationConfig:
    """How much of the loss comes from the teacher, and how soft its targets are."""

    alpha: float = field(
        default=0.9,
        metadata={
            "help": "Weight of the teacher term (0: labels only, 1: teacher only). 0.9 because most rows of a "
            "distillation pool have no label and the teacher, fitted to the same labels, already carries them; "
            "the label term corrects the teacher where it is wrong on the labelled rows."
        },
    )
    temperature: float = field(
        default=2.0,
        metadata={
            "help": "Softmax temperature T of both teacher and student in the teacher term (scaled by T^2 so its "
            "gradients keep their size). 2, as DistilBERT: softer than 1, so the teacher's second choices "
            "carry information, without flattening a 2-class task's targets."
        },
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"DistillationConfig.alpha must be a number in [0, 1], got {self.alpha!r}")
        if (
            isinstance(self.temperature, bool)
            or not isinstance(self.temperature, (int, float))
            or not math.isfinite(self.temperature)
            or self.temperature <= 0
        ):
            raise ValueError(f"DistillationConfig.temperature must be a positive number, got {self.temperature!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    alpha: float = 0.9,
    temperature: float = 2.0,
) -> torch.Tensor:
    """The distillation loss of one batch (see the module docstring).

    The teacher term is the mean KL over every row; the label term the mean cross-entropy over the
    rows whose label is not -100 (zero when none has a label). `alpha` and `temperature` are checked
    as `DistillationConfig` checks them, and a teacher logit that is not finite is refused: one NaN
    would make every weight NaN.
    """
    DistillationConfig(alpha=alpha, temperature=temperature)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ "
            "in shape: the teacher was made for another label set"
        )
    finite = torch.isfinite(teacher_logits).all(dim=-1)
    if not bool(finite.all()):
        rows = (~finite).nonzero().flatten().tolist()
        raise ValueError(
            f"teacher logits hold NaN or inf in row(s) {rows[:10]} of this batch: recompute the teacher's logits "
            "(experiments.teacher.add_teacher_logits) or drop those rows"
        )
    teacher_logits = teacher_logits.to(student_logits.dtype)
    loss = student_logits.sum() * 0.0  # zero, but part of the graph: a batch with no term still backpropagates
    if alpha > 0:
        student = F.log_softmax(student_logits / temperature, dim=-1)
        teacher = F.log_softmax(teacher_logits / temperature, dim=-1)
        loss = loss + alpha * temperature**2 * F.kl_div(student, teacher, log_target=True, reduction="batchmean")
    if alpha < 1 and labels is not None:
        labelled = labels != IGNORE_INDEX
        if labelled.any():
            loss = loss + (1 - alpha) * F.cross_entropy(student_logits[labelled], labels[labelled])
    return loss


class DistillationTrainer(Trainer):
    """A `Trainer` that distils: `DistillationTrainer(model, args, distillation=DistillationConfig(), ...)`.

    The training set needs a `teacher_logits` column (`experiments.teacher.add_teacher_logits`).
    Batches without the column (evaluation) get the model's own loss. Cooperative: put it first in
    the bases of a class that also derives from another `Trainer` subclass to add distillation to it.
    """

    def __init__(self, *args: Any, distillation: DistillationConfig | None = None, **kwargs: Any) -> None:
        distillation = DistillationConfig() if distillation is None else distillation
        if not isinstance(distillation, DistillationConfig):
            raise TypeError(f"distillation must be a DistillationConfig or None, got {type(distillation).__name__}")
        self.distillation = distillation
        super().__init__(*args, **kwargs)
        # a per-batch mean: the Trainer divides it by the gradient accumulation steps itself
        self.loss_is_scaled_for_ga = False
        self.model_accepts_loss_kwargs = False

    def train(self, *args: Any, **kwargs: Any):
        columns = getattr(self.train_dataset, "column_names", None)
        if columns is not None and TEACHER_LOGITS not in columns:
            raise ValueError(
                f"distillation needs a {TEACHER_LOGITS!r} column in train_dataset (it has {sorted(columns)}): "
                "add it with experiments.teacher.add_teacher_logits"
            )
        if columns is not None:
            self._check_teacher_logit_sizes()
        return super().train(*args, **kwargs)

    def _check_teacher_logit_sizes(self) -> None:
        """Every row's teacher logits must have one value per class of the student: ragged or other-sized
        logits would otherwise fail deep in the collator, or later in the loss, with a shape error."""
        sizes = sorted({len(row) for row in self.train_dataset[TEACHER_LOGITS]})
        classes = getattr(getattr(self.model, "config", None), "num_labels", None)
        if len(sizes) > 1:
            raise ValueError(
                f"the {TEACHER_LOGITS!r} column of train_dataset has rows of {sizes} values: every row needs one logit "
                "per class (recompute them with experiments.teacher.add_teacher_logits)"
            )
        if classes is not None and sizes and sizes[0] != classes:
            raise ValueError(
                f"the {TEACHER_LOGITS!r} column of train_dataset has {sizes[0]} values a row but the model has "
                f"{classes} labels: the teacher must classify into the same labels as the student"
            )

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if TEACHER_LOGITS not in self._signature_columns:
            self._signature_columns.append(TEACHER_LOGITS)

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ):
        if TEACHER_LOGITS not in inputs:
            inputs = {key: value for key, value in inputs.items() if key != TEACHER_LOGITS}
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs = dict(inputs)
        teacher_logits = inputs.pop(TEACHER_LOGITS)
        labels = inputs.pop("labels", None)
        outputs = model(**inputs)
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        loss = distillation_loss(
            logits,
            teacher_logits,
            labels,
            alpha=self.distillation.alpha,
            temperature=self.distillation.temperature,
        )
        return (loss, outputs) if return_outputs else loss


class TeacherAgreementCallback(TrainerCallback):
    """Logs at every evaluation how often the student picks the teacher's class on fixed samples.

    With a sample of the training pool and the validation set, it tells the two regimes apart:
    agreement as high on validation as on training rows means the student is short of capacity
    (its errors are systematic, what a dendrite can learn); much higher on training rows means
    it memorises. Logged as `teacher_agreement/<sample name>`.

    Args:
        trainer: the trainer whose model is evaluated (its `log` records the values).
        samples: name -> tokenized dataset with a `teacher_logits` column (a few hundred rows).
        collator: batches those rows (e.g. `DataCollatorWithPadding`).
    """

    def __init__(
        self,
        trainer: Trainer,
        samples: Mapping[str, Any],
        collator: Callable[[list[dict[str, Any]]], dict[str, Any]],
        batch_size: int = 256,
    ) -> None:
        for name, sample in samples.items():
            if TEACHER_LOGITS not in sample.column_names:
                raise ValueError(f"sample {name!r} has no {TEACHER_LOGITS!r} column")
        self.trainer = trainer
        self.samples = dict(samples)
        self.collator = collator
        self.batch_size = batch_size

    @torch.no_grad()
    def agreement(self, model: torch.nn.Module, sample: Any) -> float:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        agree = 0
        try:
            for start in range(0, len(sample), self.batch_size):
                rows = [sample[i] for i in range(start, min(start + self.batch_size, len(sample)))]
                batch = self.collator(rows)
                teacher = batch.pop(TEACHER_LOGITS)
                batch.pop("labels", None)
                logits = model(**{key: value.to(device) for key, value in batch.items()})["logits"]
                agree += int((logits.argmax(-1).cpu() == teacher.argmax(-1)).sum())
        finally:
            model.train(was_training)
        return agree / len(sample)

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        model = self.trainer.accelerator.unwrap_model(model if model is not None else self.trainer.model)
        with torch.random.fork_rng(devices=[]):  # leave the run's random stream as it was
            values = {f"teacher_agreement/{name}": self.agreement(model, s) for name, s in self.samples.items()}
        self.trainer.log(values)
