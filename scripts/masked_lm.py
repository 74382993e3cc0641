#!/usr/bin/env python
"""Pretrain a small BERT with masked-LM from scratch, with dendrites, from a recipe and/or flags.

    python scripts/train.py configs/mlm_from_scratch.yaml
    python scripts/masked_lm.py configs/mlm_from_scratch.yaml --hidden_size 32 --dendrites none

A `BertForMaskedLM` of the recipe's shape (`hidden_size`, `num_hidden_layers`,
`num_attention_heads`, `intermediate_size`) trains on 64-token blocks of the offline English corpus
(or `--train_file` / `--validation_file`, one text a line, or a Hub `--dataset_name` when online)
with a WordPiece vocabulary trained on the training split. 15% of the tokens are masked
(`DataCollatorForLanguageModeling`); the validation and test blocks are masked once, from
`--mask_seed`, so every evaluation scores the same positions. Dendrites grow when the validation
loss stalls. Writes `results.json` (loss and perplexity, total and non-embedding parameters), the
model and its tokenizer to `output_dir`.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import transformers
from transformers import EarlyStoppingCallback, HfArgumentParser, TrainingArguments

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the studies' package, beside this script

from benchmarks import masked_lm  # noqa: E402
from hf_dendrites import DendriteTrainer, RestartOnPlateauCallback, parameter_report  # noqa: E402
from hf_dendrites.version import versions  # noqa: E402

logger = logging.getLogger("masked_lm")
TASK = "masked_lm"


@dataclass
class MaskedLMArguments:
    task: str = field(default=TASK, metadata={"help": "Must be 'masked_lm' (scripts/train.py dispatches on it)."})
    hidden_size: int = field(default=64, metadata={"help": "Hidden size of the BERT built from scratch."})
    num_hidden_layers: int = field(default=2, metadata={"help": "Transformer layers."})
    num_attention_heads: int = field(default=2, metadata={"help": "Attention heads (must divide hidden_size)."})
    intermediate_size: int | None = field(default=None, metadata={"help": "Feed-forward size (default 4x hidden)."})
    vocab_size: int = field(default=8000, metadata={"help": "WordPiece vocabulary trained on the training split."})
    max_seq_length: int = field(default=64, metadata={"help": "Tokens per block (texts are packed into blocks)."})
    mlm_probability: float = field(default=0.15, metadata={"help": "Share of tokens masked."})
    mask_seed: int = field(default=0, metadata={"help": "Seed of the fixed validation and test masks."})
    train_file: str | None = field(
        default=None, metadata={"help": "Your training texts (.txt one per line, .csv/.jsonl with 'text')."}
    )
    validation_file: str | None = field(
        default=None, metadata={"help": "Your validation texts (default: a hash-chosen 5% of the training file)."}
    )
    test_file: str | None = field(default=None, metadata={"help": "Your test texts (optional)."})
    dataset_name: str | None = field(default=None, metadata={"help": "A Hub text dataset (needs the network)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "The Hub dataset's configuration."})
    text_column: str = field(default="text", metadata={"help": "Column holding the text, for a Hub dataset."})
    max_train_blocks: int | None = field(default=None, metadata={"help": "Keep the first N training blocks."})
    max_eval_blocks: int | None = field(default=None, metadata={"help": "Keep the first N validation/test blocks."})
    tokenizer_cache: str = field(
        default="runs/tokenizers", metadata={"help": "Folder of trained vocabularies, keyed by texts and size."}
    )

    def __post_init__(self) -> None:
        if self.task != TASK:
            raise ValueError(f"scripts/masked_lm.py trains task '{TASK}', got --task {self.task!r}")
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be positive, got {getattr(self, name)}")
        if not 0 < self.mlm_probability < 1:
            raise ValueError(f"--mlm_probability must be in (0, 1), got {self.mlm_probability}")
        for name in ("max_train_blocks", "max_eval_blocks"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(
                    f"--{name} must be a positive number of blocks (or left unset), got {getattr(self, name)}"
                )


def argument_parser() -> HfArgumentParser:
    import train  # the shared flags: DendriteConfig as flags, recipes

    return HfArgumentParser((MaskedLMArguments, TrainingArguments, train.DendriteArguments), allow_abbrev=False)


def parse_arguments(argv: list[str]) -> tuple[Any, ...]:
    import train

    parser = argument_parser()
    flags = train.expand_arguments(argv, parser)
    parsed = parser.parse_args_into_dataclasses(args=flags)
    train.progress_bars_for_terminals(flags, parsed[1])
    return parsed


def load_texts(args: MaskedLMArguments) -> datasets.DatasetDict:
    if args.dataset_name is None:
        return masked_lm.corpus(args.train_file, args.validation_file, args.test_file)
    loaded = datasets.load_dataset(args.dataset_name, args.dataset_config_name)
    texts = {name: [t for t in split[args.text_column] if t and t.strip()] for name, split in loaded.items()}
    if "validation" not in texts:
        return masked_lm._split_by_hash(texts["train"], masked_lm.HELD_OUT_SHARE)
    return datasets.DatasetDict({name: datasets.Dataset.from_dict({"text": rows}) for name, rows in texts.items()})


def prepare(args: MaskedLMArguments, seed: int):
    """(tokenizer, training blocks, fixed-mask evaluation blocks per split, corpus summary)."""
    texts = load_texts(args)
    tokenizer = masked_lm.train_tokenizer(texts["train"]["text"], args.vocab_size, args.tokenizer_cache)
    tokenized = {name: masked_lm.blocks(split, tokenizer, args.max_seq_length) for name, split in texts.items()}
    limits = {"train": args.max_train_blocks, "validation": args.max_eval_blocks, "test": args.max_eval_blocks}
    for name, limit in limits.items():
        if name in tokenized and limit is not None:
            tokenized[name] = tokenized[name].select(range(min(limit, len(tokenized[name]))))
    for name, split in tokenized.items():
        if len(split) == 0:
            raise ValueError(
                f"the {name} split holds fewer than {args.max_seq_length} tokens: no block to train or score"
            )
    evaluation = {
        name: masked_lm.fix_masks(tokenized[name], tokenizer, args.mlm_probability, args.mask_seed + offset)
        for offset, name in enumerate(("validation", "test"))
        if name in tokenized
    }
    summary = masked_lm.corpus_summary(texts, tokenized, args.max_seq_length)
    return tokenizer, tokenized["train"], evaluation, summary


def check_arguments(training_args: TrainingArguments, dendrite_args: Any, dendrite_config: Any) -> None:
    """Refuse what masked-LM runs do not offer, and score every run on validation loss."""
    if dendrite_args.restart_at_epochs or dendrite_args.error_alignment_steps:
        raise ValueError("--restart_at_epochs and --error_alignment_steps are not offered for masked-LM runs")
    if dendrite_config is not None and dendrite_args.restart_on_plateau:
        raise ValueError("--restart_on_plateau is for plain runs (--dendrites none)")
    if training_args.metric_for_best_model not in (None, "loss", "eval_loss"):
        raise ValueError(
            f"masked-LM runs grow and keep the best model on validation loss, not {training_args.metric_for_best_model!r}"
        )
    training_args.metric_for_best_model, training_args.greater_is_better = "loss", False
    training_args.prediction_loss_only = True  # no vocabulary-sized logits gathered at each evaluation


def build_trainer(common: dict[str, Any], dendrite_args: Any, dendrite_config: Any, train: Any) -> tuple[Any, Any]:
    """(trainer, restart callback or None): with dendrites, the masked-LM DendriteTrainer; else a plain one with
    early stopping or the restart control."""
    if dendrite_config is not None:
        trainer = masked_lm.MaskedLMDendriteTrainer(
            **common, dendrite_config=dendrite_config, dendrite_args=train.training_arguments_from(dendrite_args)
        )
        return trainer, None
    common["args"].load_best_model_at_end = True
    trainer = masked_lm.MaskedLMTrainer(**common)
    if not dendrite_args.restart_on_plateau:
        trainer.add_callback(
            EarlyStoppingCallback(early_stopping_patience=train.early_stopping_patience(dendrite_args))
        )
        return trainer, None
    restarts = RestartOnPlateauCallback(trainer, train.training_arguments_from(dendrite_args))
    trainer.add_callback(restarts)
    return trainer, restarts


def final_scores(trainer: Any, evaluation: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Masked-LM loss and perplexity of the final model on each held-out split."""
    scores = {}
    for name, split in evaluation.items():
        loss = trainer.evaluate(split, metric_key_prefix=name)[f"{name}_loss"]
        scores[name] = {"loss": loss, "perplexity": masked_lm.perplexity(loss)}
    return scores


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import train

    args, training_args, dendrite_args = parse_arguments(sys.argv[1:] if argv is None else argv)
    dendrite_config = train.dendrite_config_from(dendrite_args)
    check_arguments(training_args, dendrite_args, dendrite_config)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity_warning()

    tokenizer, train_blocks, evaluation, corpus = prepare(args, training_args.seed)
    model = masked_lm.masked_lm_model(
        len(tokenizer),
        args.hidden_size,
        args.num_hidden_layers,
        args.num_attention_heads,
        args.intermediate_size,
        args.max_seq_length,
        seed=training_args.seed,
    )
    base = {"total": parameter_report(model)["total"], "non_embedding": masked_lm.non_embedding_parameters(model)}
    common = dict(
        model=model,
        args=training_args,
        train_dataset=train_blocks,
        eval_dataset=evaluation["validation"],
        processing_class=tokenizer,
        data_collator=masked_lm.MaskedLMCollator(tokenizer, args.mlm_probability, seed=training_args.seed),
    )
    trainer, restarts = build_trainer(common, dendrite_args, dendrite_config, train)

    start = time.time()
    trainer.train(resume_from_checkpoint=train.resume_target(training_args.resume_from_checkpoint))
    seconds = time.time() - start
    history = [
        {"epoch": e["epoch"], "step": e["step"], "loss": e["eval_loss"]}
        for e in trainer.state.log_history
        if "eval_loss" in e
    ]
    if not training_args.push_to_hub:
        trainer.save_model()
    scores = final_scores(trainer, evaluation)
    report = parameter_report(trainer.model)
    results = {
        "task": TASK,
        **scores,
        "parameters": {
            "base": base["total"],
            "dendrites": report["dendrites"],
            "total": report["total"],
            "non_embedding": base["non_embedding"] + report["dendrites"],
            "base_non_embedding": base["non_embedding"],
        },
        "dendrites_per_layer": report["dendrites_per_layer"],
        "epochs": trainer.state.epoch,
        "seconds": seconds,
        "evaluations": history,
        "corpus": corpus,
        "dataset": {"name": "offline English corpus (film dialogue and rated snippets)"}
        if args.train_file is None and args.dataset_name is None
        else {"name": args.dataset_name or args.train_file, "hub_id": args.dataset_name},
        "config": {
            "model": {"architecture": "BertForMaskedLM, from scratch", **dataclasses.asdict(args)},
            "dendrites": None if dendrite_config is None else dendrite_config.to_dict(),
            "dendrite_training": train.training_arguments_from(dendrite_args).to_dict(),
            "training": training_args.to_dict(),
        },
        "versions": versions(),
    }
    if isinstance(trainer, DendriteTrainer):
        results["dendrite_history"] = trainer.tracker.history
        results["completed_reason"] = trainer.tracker.completed_reason
        results["candidate_scores_per_layer"] = trainer.dendrite_callback.candidate_scores_per_layer
    if restarts is not None:
        results["restarts"] = restarts.restarts
        results["completed_reason"] = restarts.tracker.completed_reason or "training budget used up"
    print_table(results, train.save_results(trainer, training_args, results))
    return results


def print_table(results: dict[str, Any], output_dir: Path) -> None:
    lines = ["split       loss    perplexity"]
    for split in ("validation", "test"):
        if split in results:
            lines.append(f"{split:<10}  {results[split]['loss']:.4f}  {results[split]['perplexity']:.2f}")
    parameters = results["parameters"]
    dendrites = max(results["dendrites_per_layer"].values(), default=0)
    lines.append(
        f"parameters: {parameters['total']:,} total, {parameters['non_embedding']:,} outside the embeddings "
        f"({parameters['dendrites']:,} in dendrites; {dendrites} dendrite(s) per neuron on "
        f"{len(results['dendrites_per_layer'])} layers)"
    )
    lines.append(f"epochs: {results['epochs']:.2f}   training time: {results['seconds']:.0f} s")
    lines.append(f"model, tokenizer and results.json: {output_dir}")
    print("\n".join(lines))


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError, ImportError) as error:
        sys.exit(f"masked_lm.py: error: {error}")
