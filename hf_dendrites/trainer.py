"""`DendriteTrainer`: a `Trainer` that grows dendrites whenever the evaluation metric stalls.

Neuron phases train as usual. When `metric_for_best_model` stalls, a dendrite phase freezes the
model and trains candidate dendrites on the correlation objective with their own optimizer (the
metric stays flat), then the best candidates are grown and training goes on. When growth stops
helping, training ends and `trainer.model` is the best model seen. The budget is the usual one:
`num_train_epochs` / `max_steps` bound all phases together; the run may end sooner.

Beyond the callback, this class makes checkpoints resumable across growth (the checkpoint's
structure is rebuilt before its weights load, strictly), never lets `load_best_model_at_end`
mix a pre-growth checkpoint into a grown model, and scales the loss correctly under gradient
accumulation. `train()` holds a lock on `output_dir` (`run_lock.py`), so a second run writing
it is refused, and resuming a run that had finished trains no further.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, IntervalStrategy, rotate_checkpoints

from .adapters import load_adapter_state, read_adapter_record
from .augment import add_dendrites
from .callbacks import DendriteCallback, metric_key
from .checkpoints import STATE_FILE, last_complete_checkpoint, remove_incomplete_checkpoints
from .config import DendriteConfig
from .diagnostics import SignalDiagnostics
from .distillation import DistillationConfig, DistillationTrainer
from .error_signals import (
    FORWARD_ONLY_SIGNALS,
    forward_only_capture,
    linear_activation_gradients,
    per_example_signal,
    update_candidates,
)
from .holdout import PhaseSampler, examples_at, holdout_split
from .hub import RESULTS_FILE
from .hub import push_to_hub as push_model
from .model import dendrite_layers, has_dendrites, is_peft_model, unchanged_on_error
from .optimization import constant_schedule, in_dendrite_phase, phase_optimizer
from .plotting import HISTORY_PLOT
from .run_lock import RunLock
from .serialization import CONFIG_NAME, apply_structure, load_weights, read_dendrite_config_file, resolve_weight_files
from .trainer_internals import checkpoint_folder, unregistered_evaluation
from .training_args import DendriteTrainingArguments

logger = logging.getLogger(__name__)

# Fields that change what a saved dendrite computes; a checkpoint must agree on them to resume.
STRUCTURAL_FIELDS = ("mode", "activation", "cascade")


class DendriteTrainer(Trainer):
    """`transformers.Trainer` with dendrite growth driven by the evaluation metric.

    Args:
        model: a transformers model; either give `dendrite_config` or a model already prepared
            with `add_dendrites` (not both).
        args: `TrainingArguments`; evaluation must be enabled, and `metric_for_best_model` /
            `greater_is_better` choose the score (evaluation loss if unset).
        dendrite_config: the `DendriteConfig` to add dendrites with.
        dendrite_args: `DendriteTrainingArguments`, how dendrites grow and candidates train (default:
            `DendriteTrainingArguments()`, or the training fields given to the `DendriteConfig` the
            deprecated way).
        plot_history: draw `dendrite_history.png` in `output_dir` as training goes.
        distillation: deprecated; use `DistilledDendriteTrainer(..., distillation=...)`, which this
            then builds (with a `FutureWarning`).
        error_alignment_steps: research diagnostics (`hf_dendrites.diagnostics`): with an `error_signal`
            other than backprop, compare its error with the exact backprop error on this many steps at
            the start of each dendrite phase, and at every dendrite-phase evaluation measure the
            candidates' correlation with the exact error (an extra forward and backward pass each);
            recorded per layer in `dendrite_callback.diagnostics`. 0: off.
        **kwargs: everything `Trainer` accepts.
    """

    def __new__(cls, *args: Any, distillation: DistillationConfig | None = None, **kwargs: Any) -> DendriteTrainer:
        """`DendriteTrainer(..., distillation=...)`, the spelling from before distillation was its own trainer,
        builds the composed trainer (`DistillationTrainer` first) and warns with the new spelling."""
        if distillation is not None and not issubclass(cls, DistillationTrainer):
            warnings.warn(
                f"{cls.__name__}(..., distillation=...) is deprecated: distillation is its own trainer; use "
                f"DistilledDendriteTrainer(..., distillation=...) (or compose DistillationTrainer with {cls.__name__}). "
                "The old spelling works until version 1.0.",
                FutureWarning,
                stacklevel=2,
            )
            cls = type(f"Distilled{cls.__name__}", (DistillationTrainer, cls), {"__module__": cls.__module__})
        return super().__new__(cls)

    def __init__(
        self,
        model: torch.nn.Module | None = None,
        args: TrainingArguments | None = None,
        *,
        dendrite_config: DendriteConfig | None = None,
        dendrite_args: DendriteTrainingArguments | None = None,
        plot_history: bool = True,
        distillation: None = None,
        error_alignment_steps: int = 0,
        **kwargs: Any,
    ) -> None:
        if model is None:
            raise ValueError("DendriteTrainer needs a model (model_init is not supported)")
        if dendrite_config is not None and has_dendrites(model):
            raise ValueError(
                "dendrite_config was given but the model already has dendrites (add_dendrites was called): "
                "pass one or the other"
            )
        if dendrite_config is None and not has_dendrites(model):
            raise ValueError("give dendrite_config, or a model prepared with add_dendrites(model, config)")
        if args is not None and args.eval_strategy == IntervalStrategy.NO:
            raise ValueError("DendriteTrainer grows from evaluation scores: set eval_strategy to 'epoch' or 'steps'")
        if args is not None and args.ddp_find_unused_parameters is False:
            raise ValueError(
                "DendriteTrainer needs ddp_find_unused_parameters=True (or unset): dendrite phases freeze weights "
                "the distributed wrapper was built with"
            )
        if args is not None and "loss" in (args.metric_for_best_model or "") and args.greater_is_better:
            logger.warning(
                "metric_for_best_model=%r with greater_is_better=True: growth will keep the model with the "
                "highest loss; set greater_is_better=False unless that is what you want",
                args.metric_for_best_model,
            )
        diagnostics = SignalDiagnostics(error_alignment_steps)  # checks the value before anything changes
        config = dendrite_config if dendrite_config is not None else model.dendrite_config
        dendrite_args = _training_arguments(config, dendrite_args)
        if error_alignment_steps and dendrite_args.candidate_learner != "streaming":
            raise ValueError(
                "error_alignment_steps measures the steps of a streaming dendrite phase; a cached phase takes none "
                "(set candidate_learner='streaming' to use it)"
            )
        if dendrite_config is not None:
            add_dendrites(model, dendrite_config)
        super().__init__(model=model, args=args, **kwargs)
        self.args.ddp_find_unused_parameters = True
        if self.args.eval_strategy == IntervalStrategy.NO:
            raise ValueError("DendriteTrainer grows from evaluation scores: set eval_strategy to 'epoch' or 'steps'")
        # BERT's forward takes **kwargs, so Trainer would assume the loss is already scaled for
        # gradient accumulation; it is not.
        self.model_accepts_loss_kwargs = False
        self.dendrite_args = dendrite_args
        self.dendrite_callback = DendriteCallback(self, plot=plot_history, dendrite_args=dendrite_args)
        self.dendrite_callback.save_in_on_save = False  # written inside _save_checkpoint instead
        self.dendrite_callback.dendrite_training_step = True  # see training_step
        self.dendrite_callback.diagnostics = diagnostics
        self.add_callback(self.dendrite_callback)
        # Set when train() resumes from a checkpoint of a run that had finished (see _run_epoch).
        self._resumed_a_finished_run = False

    @property
    def tracker(self):
        return self.dendrite_callback.tracker

    # ------------------------------------------------------------------ checks before training

    def train(self, resume_from_checkpoint: str | bool | None = None, **kwargs: Any):
        """`Trainer.train`; `resume_from_checkpoint=True` takes the newest *complete* checkpoint.

        The process that saves (`args.should_save`) holds `output_dir`'s run lock throughout: a
        second run writing the same folder would mix its checkpoints with this one's, so it is
        refused (`OutputDirLockedError`) before anything there is read or written. Other processes
        of a distributed run write nothing there and take no lock.
        """
        with RunLock(self.args.output_dir) if self.args.should_save else contextlib.nullcontext():
            self._resumed_a_finished_run = False
            self.check_datasets()
            self.check_metric_name()
            if resume_from_checkpoint is True:
                latest = last_complete_checkpoint(self.args.output_dir)
                if latest is None:
                    raise ValueError(
                        f"resume_from_checkpoint=True, but {self.args.output_dir} holds no complete dendrite "
                        f"checkpoint (a {PREFIX_CHECKPOINT_DIR}-<step> folder with {STATE_FILE})"
                    )
                resume_from_checkpoint = str(latest)
            return super().train(resume_from_checkpoint=resume_from_checkpoint, **kwargs)

    def check_datasets(self) -> None:
        """Refuse what would fail late or quietly: an empty training or evaluation set, and class labels
        the model has no output for (torch's message names neither the dataset nor the label)."""
        for name, dataset in (("train_dataset", self.train_dataset), ("eval_dataset", self.eval_dataset)):
            if dataset is not None and hasattr(dataset, "__len__") and len(dataset) == 0:
                raise ValueError(f"{name} holds no examples: DendriteTrainer needs examples to train and evaluate on")
        classes = getattr(getattr(self.model, "config", None), "num_labels", None)
        if classes is None or getattr(self.model.config, "problem_type", None) not in (
            None,
            "single_label_classification",
        ):
            return
        for name, dataset in (("train_dataset", self.train_dataset), ("eval_dataset", self.eval_dataset)):
            if "labels" not in (getattr(dataset, "column_names", None) or ()):
                continue
            column = dataset["labels"]
            if not column or not isinstance(column[0], int):  # token-level or regression labels: not class ids
                continue
            wrong = sorted({label for label in column if label >= classes or (label < 0 and label != -100)})
            if wrong:
                raise ValueError(
                    f"{name} has labels {wrong[:5]} outside the model's {classes} classes (0..{classes - 1}; -100 "
                    "marks an unlabelled row): build the model with num_labels covering every label"
                )

    def check_metric_name(self) -> None:
        """Evaluate a few examples and make sure the growth metric is among the results.

        A typo in `metric_for_best_model` would otherwise surface only at the first evaluation,
        after a whole phase of training.
        """
        if self.eval_dataset is None:
            raise ValueError("DendriteTrainer needs an eval_dataset: growth is driven by evaluation scores")
        if isinstance(self.eval_dataset, dict):
            raise ValueError("DendriteTrainer takes one eval_dataset, not a dict of them")
        size = min(len(self.eval_dataset), 2 * self.args.per_device_eval_batch_size)
        probe = examples_at(self.eval_dataset, range(size))
        # Iterating a DataLoader draws from the global RNG; without the fork the probe would shift
        # every dropout mask of the run, and a dendrite run would no longer match the plain Trainer
        # run of the same seed step for step until its first growth.
        with unregistered_evaluation(self), torch.random.fork_rng(devices=[]):
            output = self.evaluation_loop(self.get_eval_dataloader(probe), description="Metric check")
        key = metric_key(self.args)
        if key not in output.metrics:
            names = sorted(name.removeprefix("eval_") for name in output.metrics)
            raise ValueError(
                f"metric_for_best_model={self.args.metric_for_best_model!r} is not computed; the evaluation "
                f"gives {names} (add it to compute_metrics or pick one of these)"
            )

    # ------------------------------------------------------------------ candidates on held-aside data

    def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler | None:
        """With `candidate_holdout_fraction`, neuron phases and dendrite phases draw from disjoint parts."""
        fraction = self.dendrite_args.candidate_holdout_fraction
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if not fraction:
            return super()._get_train_sampler(train_dataset)
        if self.accelerator.num_processes > 1:
            raise ValueError("candidate_holdout_fraction runs in one process (its sampler is not sharded)")
        neuron, holdout = holdout_split(len(dataset), fraction, self.args.seed)
        model = self.accelerator.unwrap_model(self.model)
        return PhaseSampler(neuron, holdout, lambda: in_dendrite_phase(model), seed=self.args.seed)

    # ------------------------------------------------------------------ several processes

    def training_step(self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any = None):
        unwrapped = self.accelerator.unwrap_model(model)
        dendrite_phase = in_dendrite_phase(unwrapped)
        signal = self.dendrite_args.error_signal if dendrite_phase else "backprop"
        if dendrite_phase and self.dendrite_callback.diagnostics.steps:
            prepared = self._prepare_inputs(inputs)
            growth = self.dendrite_callback.growth
            growth.diagnostics.observe_step(
                unwrapped,
                signal,
                growth.phases_started,
                self.state.global_step,
                lambda: self.compute_loss(model, prepared),
                prepared.get("labels"),
            )
        if signal in FORWARD_ONLY_SIGNALS:
            return self._forward_only_candidate_step(model, inputs, num_items_in_batch, signal)
        if signal == "linear_backprop":
            with linear_activation_gradients(unwrapped):
                loss = super().training_step(model, inputs, num_items_in_batch)
        else:
            loss = super().training_step(model, inputs, num_items_in_batch)
        if self.accelerator.num_processes > 1:
            self._average_gradients_unknown_to_ddp(model)
        return loss

    def _forward_only_candidate_step(
        self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any, signal: str
    ) -> torch.Tensor:
        """A dendrite-phase step without a backward pass through the network (see `error_signals.py`)."""
        if self.accelerator.num_processes > 1:
            raise ValueError(f"error_signal={signal!r} runs in one process")
        unwrapped = self.accelerator.unwrap_model(model)
        model.train()
        inputs = self._prepare_inputs(inputs)
        with forward_only_capture(unwrapped) as captured, self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs, num_items_in_batch=num_items_in_batch)
        signal_of_layer = per_example_signal(signal, loss, captured["logits"], inputs.get("labels"))
        update_candidates(captured["pending"], dendrite_layers(unwrapped), signal_of_layer)
        return loss.detach() / self.current_gradient_accumulation_steps

    def _average_gradients_unknown_to_ddp(self, wrapper: torch.nn.Module) -> None:
        """Average across processes the gradients the distributed wrapper does not reduce.

        DDP reduces the parameters that were trainable when it wrapped the model at the start of
        `train()`. Dendrites and candidates created later are new parameters it never sees, so
        their gradients are averaged here, after every backward pass (averaging partial sums
        under gradient accumulation gives the same result), before clipping and the step.
        """
        if getattr(self, "_ddp_wrapper_id", None) != id(wrapper):
            self._ddp_wrapper_id = id(wrapper)
            self._ddp_known = {id(p) for p in wrapper.parameters() if p.requires_grad}
        for parameter in self.accelerator.unwrap_model(wrapper).parameters():
            if parameter.grad is not None and id(parameter) not in self._ddp_known:
                torch.distributed.all_reduce(parameter.grad, op=torch.distributed.ReduceOp.SUM)
                parameter.grad.div_(self.accelerator.num_processes)

    # ------------------------------------------------------------------ optimizers of the two phases

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            unwrapped = self.accelerator.unwrap_model(model if model is not None else self.model)
            self.optimizer = phase_optimizer(
                unwrapped, lambda: super(DendriteTrainer, self).create_optimizer(model), self.dendrite_args
            )
        return self.optimizer

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None):
        if self.lr_scheduler is None and in_dendrite_phase(self.accelerator.unwrap_model(self.model)):
            self.lr_scheduler = constant_schedule(optimizer if optimizer is not None else self.optimizer)
            self._created_lr_scheduler = True
            return self.lr_scheduler
        return super().create_scheduler(num_training_steps, optimizer)

    # ------------------------------------------------------------------ checkpoints

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        """The Trainer's checkpoint with the dendrite state inside, complete before any rotation.

        Transformers deletes old checkpoints at the end of its own save, before callbacks run; a
        process killed then would leave only a checkpoint without its dendrite state. Here the
        state goes in first (its file last, by rename), and only then are old checkpoints rotated.
        """
        folder = checkpoint_folder(self, trial)
        if self.args.should_save:
            (folder / STATE_FILE).unlink(missing_ok=True)  # a folder being rewritten is incomplete until done
        limit = self.args.save_total_limit
        self.args.save_total_limit = None  # rotation waits until the checkpoint is complete
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self.args.save_total_limit = limit
        if not self.args.should_save:
            return
        self.dendrite_callback.save_state(folder)
        remove_incomplete_checkpoints(folder.parent)
        rotate_checkpoints(
            output_dir=str(folder.parent),
            save_total_limit=limit,
            best_model_checkpoint=self.state.best_model_checkpoint,
        )

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: torch.nn.Module | None = None) -> None:
        """Rebuild the checkpoint's dendrite structure, then load its weights strictly.

        Everything is read and checked first; if loading still fails, the model is left as it was.
        """
        model = self.accelerator.unwrap_model(model if model is not None else self.model)
        folder = Path(resume_from_checkpoint)
        adapter = is_peft_model(model)
        record = read_adapter_record(folder) if adapter else read_dendrite_config_file(folder / CONFIG_NAME)[1]
        self._check_compatible(folder, record, model)
        weight_files = [] if adapter else resolve_weight_files(str(folder))
        state, best = self.dendrite_callback.read_state(folder)
        with unchanged_on_error(model):
            apply_structure(model, record)
            if adapter:
                load_adapter_state(model, folder, record)
            else:
                load_weights(model, weight_files, format_version=record["format_version"])
        self.dendrite_callback.apply_state(state, best)
        self._resumed_a_finished_run = self.tracker.is_complete
        if self._resumed_a_finished_run:
            logger.warning(
                "dendrites: %s is a checkpoint of a run that had finished (%s): nothing is left to train, and the "
                "model is that run's final model. To train further, start a new run from it",
                folder,
                self.tracker.completed_reason,
            )

    def _run_epoch(self, *args: Any, **kwargs: Any) -> None:
        """No epoch runs once a resumed run turns out to have finished.

        Its tracker ended training before `max_steps`; the Trainer would otherwise train on to
        `max_steps` with growth over, and then restore the best model anyway. Callbacks still see
        `on_train_begin` and `on_train_end` (which restores the best model, as the run did).
        """
        if self._resumed_a_finished_run:
            self.control.should_training_stop = True
            return
        super()._run_epoch(*args, **kwargs)

    @staticmethod
    def _check_compatible(folder: os.PathLike, record: dict[str, Any], model: torch.nn.Module) -> None:
        saved = DendriteConfig.from_saved(record["config"])
        current = model.dendrite_config
        different = [
            f"{name}: checkpoint {getattr(saved, name)!r}, model {getattr(current, name)!r}"
            for name in STRUCTURAL_FIELDS
            if getattr(saved, name) != getattr(current, name)
        ]
        if set(record["layers"]) != set(dendrite_layers(model)):
            different.append("the checkpoint has dendrites on other layers")
        if different:
            raise ValueError(f"cannot resume from {folder}: its dendrite structure differs ({'; '.join(different)})")

    def _load_best_model(self) -> None:
        """The best model is restored by the dendrite callback from its own snapshot.

        Transformers would load the best checkpoint with `strict=False`, silently mixing a
        checkpoint saved before growth into the grown model.
        """
        logger.info("dendrites: the best model is restored from the dendrite snapshot, not from a checkpoint")

    # ------------------------------------------------------------------ publishing

    def _push_from_checkpoint(self, checkpoint_folder: str) -> None:
        """No intermediate pushes: a checkpoint inside a dendrite phase holds candidates, not a
        model anyone should download. The repo gets one complete push from `push_to_hub()`."""

    def push_to_hub(
        self,
        commit_message: str | None = "End of training",
        blocking: bool = True,
        token: str | None = None,
        revision: str | None = None,
        private: bool | None = None,
        **kwargs: Any,
    ):
        """Push the trained model with its tokenizer, `results.json` and history plot (when in
        `output_dir`) and a model card to `args.hub_model_id` (default: the output folder's name).

        `kwargs` go to `hub.push_to_hub` (`base_model`, `reference`, `license`, `create_pr`).
        The upload always completes before this returns (`blocking` is accepted for compatibility).
        """
        output_dir = Path(self.args.output_dir)
        self.save_model(_internal_call=True)
        if not self.is_world_process_zero():
            return None
        repo_id = self.hub_model_id or self.args.hub_model_id or output_dir.absolute().name
        return push_model(
            self.accelerator.unwrap_model(self.model),
            repo_id,
            tokenizer=self.processing_class,
            results=output_dir / RESULTS_FILE,
            history_plot=output_dir / HISTORY_PLOT,
            commit_message=commit_message,
            private=self.args.hub_private_repo if private is None else private,
            token=token if token is not None else self.args.hub_token,
            revision=revision if revision is not None else self.args.hub_revision,
            **kwargs,
        )


def _training_arguments(
    config: DendriteConfig, dendrite_args: DendriteTrainingArguments | None
) -> DendriteTrainingArguments:
    """The run's settings: `dendrite_args`, else the training fields given to `config` the deprecated way."""
    if dendrite_args is None:
        return config.legacy_training_arguments()
    if not isinstance(dendrite_args, DendriteTrainingArguments):
        raise TypeError(f"dendrite_args must be a DendriteTrainingArguments, got {type(dendrite_args).__name__}")
    if config.deprecated_training_arguments:
        raise ValueError(
            f"training settings given twice: dendrite_args, and {sorted(config.deprecated_training_arguments)} in the "
            "DendriteConfig (the deprecated spelling); give them in dendrite_args only"
        )
    return dendrite_args


class DistilledDendriteTrainer(DistillationTrainer, DendriteTrainer):
    """`DendriteTrainer` on the distillation loss: the training set has a `teacher_logits` column and
    `distillation=DistillationConfig(...)` weighs it (see `hf_dendrites.distillation`); candidates then
    learn from the distillation loss's error. The composition is the whole class."""
