"""Launched by test_distributed.py with `accelerate launch --num_processes 2`: train, grow, report.

Every rank writes what it decided and a digest of its final weights, so the test can check that
the ranks agree.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch
from accelerate import PartialState
from transformers import TrainerCallback

sys.path.insert(0, str(Path(__file__).parent))
sys.path.append(str(Path(__file__).resolve().parents[1]))  # the studies' helpers (experiments/)

from test_trainer import TRAIN, VALIDATION, dendrite_setup, training_args  # noqa: E402
from tiny_models import tiny_model  # noqa: E402

from experiments.metrics import build_compute_metrics  # noqa: E402
from hf_dendrites import DendriteTrainer, num_dendrites  # noqa: E402


def weights_digest(model: torch.nn.Module) -> str:
    state = model.state_dict()
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().to(torch.float64).numpy().tobytes())
    return digest.hexdigest()


class DigestAfterEachEvaluation(TrainerCallback):
    """Runs after DendriteCallback, so it sees the model as each decision left it."""

    def __init__(self) -> None:
        self.digests: list[str] = []

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        self.digests.append(weights_digest(model))


def main(output_dir: str, mode: str) -> None:
    args = training_args(Path(output_dir), save_strategy="no", per_device_train_batch_size=8, max_steps=40)
    trainer = DendriteTrainer(
        tiny_model(num_labels=2),
        args,
        train_dataset=TRAIN,
        eval_dataset=VALIDATION,
        compute_metrics=build_compute_metrics(["accuracy"]),
        **dendrite_setup(mode=mode),
    )
    digests = DigestAfterEachEvaluation()
    trainer.add_callback(digests)
    trainer.train()
    rank = PartialState().process_index
    report = {
        "rank": rank,
        "world_size": PartialState().num_processes,
        "actions": [record["action"] for record in trainer.tracker.history],
        "scores": [record["score"] for record in trainer.tracker.history],
        "dendrites": num_dendrites(trainer.model),
        "dendrites_per_evaluation": [record["num_dendrites"] for record in trainer.tracker.history],
        "weights_sha256_per_evaluation": digests.digests,
        "weights_sha256": weights_digest(trainer.model),
    }
    Path(output_dir, f"rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
